#!/usr/bin/env bash
# plan_cache_ab.sh [ORDERS] [ROUNDS] [SECONDS]: the plan cache's effect on small queries, A/B on
# one release binary and one data directory. Backfills ORDERS (default 300000) over 29 days, then
# serves them ROUNDS times (default 2) with `sql.plan_cache_entries` 128 and 0 in turn, each
# time hammering `/query/sql` for SECONDS (default 12) with hammer.py on one kept-alive
# connection. Loopback only. See BENCHMARKS.md, "The plan cache". The backfilled orders end when
# the backfill does: `ago()` windows hold few orders and grow emptier as the runs go on.
set -euo pipefail
cd "$(dirname "$0")/../../.."
orders=${1:-300000}
rounds=${2:-2}
secs=${3:-12}
rtap=${CARGO_TARGET_DIR:-/var/cache/rtap/target}/release/rtap
[[ -x $rtap ]] || {
    echo "build it first: CARGO_TARGET_DIR=${rtap%/release/rtap} cargo build --release --locked -p rtap" >&2
    exit 1
}
work=$(mktemp -d)
pid=
trap 'set +e; if [[ -n $pid ]]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi; rm -rf "$work"' EXIT
"$rtap" backfill --orders "$orders" --days 29 --seed 5 --data-dir "$work/data" >"$work/backfill.log" 2>&1
printf '[sql]\nplan_cache_entries = 128\n' >"$work/on.toml"
printf '[sql]\nplan_cache_entries = 0\n' >"$work/off.toml"

# Each run serves a fresh copy of the backfilled directory (a run's checkpoint and merges do not
# carry into the next one).
serve() {
    if curl -sf --max-time 2 http://127.0.0.1:18461/health >/dev/null; then
        echo "something already answers on port 18461" >&2
        exit 1
    fi
    rm -rf "$work/run" && cp -a "$work/data" "$work/run"
    "$rtap" up --api-port 0 --http-port 18461 --dashboard-port 0 --max-orders 0 --seed 5 \
        --data-dir "$work/run" --config "$work/$1.toml" >"$work/$1.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        curl -sf --max-time 2 http://127.0.0.1:18461/health >/dev/null && return 0
        sleep 0.1
    done
    echo "rtap did not start: $(tail -5 "$work/$1.log")" >&2
    exit 1
}

stop() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

sql() {
    curl -sf --max-time 30 http://127.0.0.1:18461/query/sql -H 'Content-Type: application/json' \
        -d "{\"sql\": \"$1\"}" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["resultTable"]["rows"][0][0]))'
}

serve on
end=$(sql "SELECT MAX(time_ms) + 1 FROM orders")
stop
m1=$((end - 60000))
m2=$((end - 120000))
h1=$((end - 3600000))
queries=(
    "SELECT 1"
    "SELECT COUNT(*) FILTER (WHERE time_ms > $m1) AS now_n, COALESCE(SUM(order_total) FILTER (WHERE time_ms > $m1), 0) AS now_rev, COUNT(*) FILTER (WHERE time_ms <= $m1) AS before_n, COALESCE(SUM(order_total) FILTER (WHERE time_ms <= $m1), 0) AS before_rev FROM orders WHERE time_ms > $m2"
    "SELECT COUNT(*) FILTER (WHERE time_ms > ago('PT1M')) AS now_n, COALESCE(SUM(order_total) FILTER (WHERE time_ms > ago('PT1M')), 0) AS now_rev, COUNT(*) FILTER (WHERE time_ms <= ago('PT1M')) AS before_n, COALESCE(SUM(order_total) FILTER (WHERE time_ms <= ago('PT1M')), 0) AS before_rev FROM orders WHERE time_ms > ago('PT2M')"
    "SELECT DATETRUNC('MINUTE', time_ms, 'MILLISECONDS') AS m, COUNT(*) AS n, SUM(order_total) AS rev FROM orders WHERE time_ms > $h1 GROUP BY DATETRUNC('MINUTE', time_ms, 'MILLISECONDS') ORDER BY m DESC LIMIT 60"
    "SELECT order_id, time_ms, order_total, customer_id FROM orders ORDER BY time_ms DESC, order_id LIMIT 10"
)
for round in $(seq 1 "$rounds"); do
    # Alternating which goes first.
    order="on off"
    ((round % 2 == 0)) && order="off on"
    for mode in $order; do
        echo "== round $round, plan cache $mode"
        serve "$mode"
        python3 crates/rtap/benches/hammer.py http://127.0.0.1:18461/query/sql "$secs" "${queries[@]}"
        stop
    done
done
