#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with Rust, and nothing that is
# already there. Safe to run again. Needs root (or sudo) for the Debian packages.
set -euo pipefail

# Debian packages the tests start for real (web servers in front of our adapters, and the
# tools the tests drive them with). One package a line; add new ones here.
PACKAGES=(
  curl
  apache2
  lighttpd
  nginx
  uwsgi-core  # uWSGI: its HTTP router (plugins corerouter and http) and --ping (plugin ping)
  libfcgi-bin # cgi-fcgi: one CGI-style request into a FastCGI server
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-test-deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # Do not let the packages' own services start on their default ports: the tests start their
  # own instances on 127.0.0.1 and stop them by PID.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  $SUDO rm -f /usr/sbin/policy-rc.d
fi
