#!/usr/bin/env bash
# lookup_scale.sh RTAP_BINARY ORDERS [CONFIG_FILE] : `rtap backfill --orders ORDERS --days 29`
# into a fresh directory (timed), then `rtap up --max-orders 0` serving it: waits until no merge
# is running (the segment count holds still for 15 s), prints the segment files, then sends
# `/users/{customer}/orders` (300 customers in turn) and `/orders/overview2` for 15 s each on
# one kept-alive connection (get_hammer.py) and prints p50 / p99. CONFIG_FILE (optional) is
# passed to both commands with --config (A/B of table settings). See BENCHMARKS.md, "Merges in
# size tiers". The directory is removed at the end unless KEEP=1.
set -euo pipefail
rtap=$(realpath "$1"); orders=$2; config=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/rtap-lookup-scale.XXXXXX")
port=18471
extra=()
if [ -n "$config" ]; then extra=(--config "$(realpath "$config")"); fi
# Only what is given here: no RTAP_* settings of the caller's shell.
for v in $(env | grep -o '^RTAP_[A-Z_]*' || true); do unset "$v"; done
if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
    echo "something already answers on port $port" >&2; exit 1
fi
start=$(date +%s.%N)
"$rtap" backfill --orders "$orders" --days 29 --seed 5 --data-dir "$dir" "${extra[@]}" > "$dir.backfill.log" 2>&1
end=$(date +%s.%N)
python3 -c "print(f'backfill: {$orders / ($end - $start):,.0f} orders/s ({$end - $start:.1f} s)')"
"$rtap" up --api-port 0 --http-port $port --dashboard-port 0 --max-orders 0 --seed 5 \
    --data-dir "$dir" "${extra[@]}" > "$dir.up.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; [ "${KEEP:-0}" = 1 ] || rm -rf "$dir" "$dir".*.log' EXIT
segments() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^rtap_table_segments /{print $2}'; }
for _ in $(seq 600); do [ -n "$(segments 2>/dev/null)" ] && break; sleep 0.5; done
last=""; still=0
for _ in $(seq 600); do
    now=$(segments)
    if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; last=$now; fi
    [ $still -ge 15 ] && break
    sleep 1
done
echo "segments: $last"
(cd "$dir/segments/orders"; ls -l seg-*.parquet | awk '{n++; b+=$5} END {printf "parquet files: %d, %.0f MB\n", n, b/1e6}')
python3 "$here/get_hammer.py" "http://127.0.0.1:$port" 15 '/users/{customer}/orders'
python3 "$here/get_hammer.py" "http://127.0.0.1:$port" 15 /orders/overview2
echo "VmHWM of the server: $(awk '/VmHWM/{print $2, $3}' /proc/$pid/status)"
