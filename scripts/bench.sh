#!/usr/bin/env bash
# The benchmark command: installs the peers it needs (Debian packages, PyPI), builds
# this project and the peers in release mode, runs every comparison on 127.0.0.1 in one run
# (bench/run.py) and writes BENCHMARKS.md and the charts under docs/bench/.
# Not part of the test run. Takes about 35 minutes with the defaults, builds included; set
# BENCH_DURATION (seconds per run, 10), BENCH_REPEATS (3), BENCH_ONLY (sections) and the others
# listed at the top of bench/run.py to change that. Needs root (or sudo) for the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# The peers and tools, from Debian, beyond what the tests install. One package a line.
PACKAGES=(
  wrk                  # the load generator
  nginx                # the front end of the FastCGI and uwsgi comparisons, and the ceiling
  lighttpd             # the front end of the CGI comparison
  golang-go            # Go's net/http and net/http/fcgi
  libfcgi-dev          # the C libfcgi responder pool
  gcc
  php-fpm              # PHP-FPM
  uwsgi-core           # uWSGI with a Python app
  uwsgi-plugin-python3
  python3-pip
  gnuplot-nox          # the charts
  linux-perf           # profiles where a target is missed
)
# The same installer as the tests' (which also brings the Python servers from PyPI, at the
# versions the conformance suite pins), with the peers above added.
scripts/install-test-deps.sh "${PACKAGES[@]}"
export BENCH_PYTHON
BENCH_PYTHON=$(python3 -c 'import sys; print(sys.executable)')

# Build: this project (release), the plain hyper peer (its own workspace, the project's
# Cargo.lock so the same hyper and tokio), the Go peer, the C peers.
echo "bench: building in release mode" >&2
cargo build --release -q -p examples --bin bench-app
# The same program with the C library's malloc instead of mimalloc, for the rows that show what
# the allocator changes.
cargo build --release -q -p examples --bin bench-app --no-default-features \
  --target-dir target/system-alloc
# The CGI build the deployment guide recommends (static, not position-independent: no dynamic
# loading or relocation at each start; and the C library's malloc, quicker to start than
# mimalloc), in its own target directory; `--target` keeps the flags off build scripts and
# proc macros.
HOST=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C relocation-model=static -C target-feature=+crt-static" \
  cargo build --release -q -p examples --bin bench-app --no-default-features --target "$HOST" \
  --target-dir target/cgi-static
cp "target/cgi-static/$HOST/release/bench-app" target/cgi-static/bench-app
cargo bench -q --no-run -p gateway-core --bench driver
cargo bench -q --no-run -p gateway-middleware --bench middleware
cargo bench -q --no-run -p gateway-servers --bench codecs
PEER_BIN="$ROOT/target/bench-peers"
mkdir -p "$PEER_BIN"
cp Cargo.lock bench/peers/hyper/Cargo.lock
cargo build --release -q --manifest-path bench/peers/hyper/Cargo.toml --target-dir "$PEER_BIN"
(cd bench/peers/go && GOCACHE="$PEER_BIN/go-cache" GOFLAGS=-mod=mod GOPROXY=off \
  go build -o "$PEER_BIN/go-peer" .)
gcc -O2 -o "$PEER_BIN/fcgi_pool" bench/peers/fcgi_pool.c -lfcgi
gcc -O2 -o "$PEER_BIN/hello_cgi" bench/peers/hello_cgi.c
gcc -O2 -o "$PEER_BIN/uwsgi_floor" bench/peers/uwsgi_floor.c

# 5,000 idle connections and 50 busy ones need more descriptors than the usual 1,024.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

exec python3 bench/run.py "$@"
