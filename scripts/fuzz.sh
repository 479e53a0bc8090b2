#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a short while (FUZZ_SECONDS each, 10 by default).
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain provide them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-10}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
  echo "== fuzz $target (${seconds}s)"
  cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=1024 2>&1 | tail -n 2
done
