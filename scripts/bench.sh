#!/usr/bin/env bash
# Runs rtap's benchmarks (release builds) and prints their figures; see BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/start-postgres.sh >/dev/null
cargo bench --locked -p orders --bench generator
cargo bench --locked -p server --bench orders_api
