#!/usr/bin/env bash
# Runs the whole rtap test suite: installs and starts what the tests need, then checks
# formatting, lints and every test of every crate. This is the README's test command and what
# CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "test: cargo is needed (https://rustup.rs)" >&2
  exit 1
fi

scripts/start-postgres.sh
# The Kafka tests start their own brokers from this binary (built once, then cached).
RTAP_TANSU="$(scripts/install-tansu.sh)"
export RTAP_TANSU
# The dashboard test drives a real headless Chromium.
scripts/install-browser.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
