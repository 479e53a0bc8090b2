#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test of the workspace
# (unit, integration, doc tests and tests against real web servers on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-features --no-fail-fast
else
  cargo test --workspace --all-features --no-fail-fast --lib --bins --tests --examples
fi
cargo test --workspace --all-features --doc
