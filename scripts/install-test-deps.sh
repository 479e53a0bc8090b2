#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with Rust, and nothing that is
# already there. Safe to run again. Needs root (or sudo) for the Debian packages. Debian
# packages given as arguments are installed too (scripts/bench.sh adds the peers it measures).
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
  uwsgi-plugin-python3 # uWSGI serving a Python WSGI app: a reference server of the conformance suite
  python3-pip # pip, for the PyPI packages below
  haproxy     # HAProxy relaying TCP with the PROXY protocol (examples/tests/guide.rs)
  systemd     # systemd-analyze verify and systemd-socket-activate: the guide's unit files (examples/tests/guide.rs)
)

PACKAGES+=("$@")

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

# PyPI packages of the Python reference servers the conformance suite is run against
# (examples/tests/conformance_reference.rs, docs/conformance.md), for the `python3` on PATH.
# Pinned, so the recorded results stay true; installed when missing or of another version.
PIP_PACKAGES=('flup==1.0.3' 'gunicorn==27.0.1')
PINNED_CHECK='
import importlib.metadata as m, sys
sys.exit(any(m.version(n) != v for n, v in (a.split("==") for a in sys.argv[1:])))'
if ! python3 -c "$PINNED_CHECK" "${PIP_PACKAGES[@]}" 2>/dev/null; then
  echo "install-test-deps: installing ${PIP_PACKAGES[*]} with pip" >&2
  # Debian's own python3 refuses a system-wide pip install (PEP 668) without this flag.
  python3 -m pip install --quiet --break-system-packages "${PIP_PACKAGES[@]}" 2>/dev/null \
    || python3 -m pip install --quiet "${PIP_PACKAGES[@]}"
fi
