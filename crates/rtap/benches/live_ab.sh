#!/usr/bin/env bash
# live_ab.sh RTAP_BINARY DIR ROUNDS CONFIG_A CONFIG_B : the seed endpoints while orders arrive,
# two configurations interleaved. DIR is a directory kept by `KEEP=1 lookup_scale.sh` (10 M
# orders of history, say). Each round serves DIR with `rtap up --rate 1000 --seed 5` once per
# configuration (the order alternating by round; CONFIG_* is a file passed with --config, or -
# for none), waits WARMUP seconds (default 70: the last two minutes fill with live orders),
# then GETs every seed endpoint in turn on one kept-alive connection for HAMMER_SECS (default 20,
# get_hammer.py) and prints p50 / p99 and the server's RSS. Each run adds about 90,000 orders to
# DIR. See BENCHMARKS.md, "Decoded columns of the newest files".
set -euo pipefail
if [ $# -ne 5 ] || ! [[ $3 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: [WARMUP=70] [HAMMER_SECS=20] $0 RTAP_BINARY DIR ROUNDS CONFIG_A|- CONFIG_B|-" >&2; exit 2
fi
rtap=$(realpath "$1"); dir=$(realpath "$2"); rounds=$3
configs=("$4" "$5")
warmup=${WARMUP:-70}; secs=${HAMMER_SECS:-20}
here=$(cd "$(dirname "$0")" && pwd)
port=18471
if ! [ -f "$dir/segments/orders/manifest.json" ]; then
    echo "$dir: no table there (segments/orders/manifest.json)" >&2; exit 2
fi
for c in "${configs[@]}"; do
    if [ "$c" != - ] && ! [ -f "$c" ]; then echo "no config file $c" >&2; exit 2; fi
done
# Only what is given here: no RTAP_* settings of the caller's shell.
for v in $(compgen -e | grep '^RTAP_' || true); do unset "$v"; done
if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
    echo "something already answers on port $port" >&2; exit 1
fi
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
paths=(/orders/popular /orders/toplocations /orders/couponslastminute /orders/overview
    /orders/ordersperminute /orders/latestorders /users/ '/users/{customer}/orders'
    /orders/overview2 '/orders/popular?source=sql')
for round in $(seq "$rounds"); do
    order=(0 1); if [ $((round % 2)) = 0 ]; then order=(1 0); fi
    for i in "${order[@]}"; do
        config=${configs[$i]}
        extra=(); if [ "$config" != - ]; then extra=(--config "$(realpath "$config")"); fi
        "$rtap" up --api-port 0 --http-port $port --dashboard-port 0 --rate 1000 --seed 5 \
            --data-dir "$dir" ${extra[@]+"${extra[@]}"} > "$dir.live.log" 2>&1 &
        pid=$!
        up=0
        for _ in $(seq 600); do
            if curl -s -o /dev/null -m 2 "http://127.0.0.1:$port/metrics"; then up=1; break; fi
            if ! kill -0 "$pid" 2>/dev/null; then echo "rtap up exited:" >&2; tail -20 "$dir.live.log" >&2; exit 1; fi
            sleep 0.5
        done
        if [ "$up" != 1 ]; then echo "rtap up did not serve /metrics:" >&2; tail -20 "$dir.live.log" >&2; exit 1; fi
        sleep "$warmup"
        echo "== round $round, config ${config} (pid $pid)"
        python3 "$here/get_hammer.py" --pid "$pid" "http://127.0.0.1:$port" "$secs" "${paths[@]}"
        curl -s -m 5 "http://127.0.0.1:$port/metrics" | grep -E '^rtap_sql_column_cache_(bytes|hits_total|decoded_total) ' || true
        if ! kill "$pid" 2>/dev/null; then echo "rtap up had exited:" >&2; tail -20 "$dir.live.log" >&2; exit 1; fi
        wait "$pid" 2>/dev/null || true; pid=""
    done
done
