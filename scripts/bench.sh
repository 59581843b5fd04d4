#!/usr/bin/env bash
# Runs rtap's benchmarks (release builds) and prints their figures; see BENCHMARKS.md.
# Every bench is selected from the whole workspace (`--workspace --bench NAME`) so they share
# one build (selecting a package with -p would resolve features differently and rebuild).
# RTAP_BENCH_SIZES (analytics), RTAP_BENCH_ORDERS (restart, kafka, memory) scale them up;
# DuckDB and chDB, which the ingest and peers benches compare with, come from
# scripts/install-peers.sh.
# RTAP_SOAK_SECS (default 1800) sets the length of the memory bench's soak.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/start-postgres.sh >/dev/null
RTAP_TANSU="$(scripts/install-tansu.sh)"
export RTAP_TANSU
# Without DuckDB (no PyPI), the benches that compare with it say so and run rtap alone.
RTAP_PYTHON="$(scripts/install-peers.sh)" || RTAP_PYTHON=""
export RTAP_PYTHON
for bench in generator orders_api windows ingest analytics peers restart kafka attacks memory; do
  echo "== $bench"
  cargo bench --locked --workspace --bench "$bench"
done
