#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test of the workspace
# (unit, integration, doc tests and tests against real web servers on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
# Every part runs, whatever failed before it; the script fails if any did.
failed=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --no-fail-fast || failed=1
else
  # Without nextest, the test binaries that .config/nextest.toml runs alone run with one test
  # at a time (cargo test runs binaries one after another; the rest keep their threads).
  heavy=$(grep -o 'binary_id(examples::[a-z_]*)' .config/nextest.toml | sed 's/.*::\(.*\))/\1/' || true)
  light=()
  for file in examples/tests/*.rs; do
    name=$(basename "$file" .rs)
    grep -qx "$name" <<<"$heavy" || light+=(--test "$name")
  done
  cargo test --workspace --exclude examples --all-features --no-fail-fast --lib --bins --tests --examples || failed=1
  cargo test -p examples --all-features --no-fail-fast --lib --bins "${light[@]}" || failed=1
  if [ -n "$heavy" ]; then
    # shellcheck disable=SC2046 # one --test flag and name per word
    cargo test -p examples --all-features --no-fail-fast $(sed 's/^/--test /' <<<"$heavy") -- --test-threads=1 || failed=1
  fi
fi
cargo test --workspace --all-features --doc || failed=1
exit "$failed"
