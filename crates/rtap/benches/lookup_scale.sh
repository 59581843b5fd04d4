#!/usr/bin/env bash
# lookup_scale.sh RTAP_BINARY ORDERS [CONFIG_FILE] : `rtap backfill --orders ORDERS --days 29`
# into a fresh directory (timed), then `rtap up --max-orders 0` serving it: waits until the merge
# policy is done (`rtap_table_merge_due` and `rtap_table_merging` 0, at most an hour),
# prints the segments the manifest lists (count, rows, MB), then sends `/users/{customer}/orders`
# (300 random customers in turn; from the lookup indexes, then `?source=sql` through SQL) and
# `/orders/overview2` for 15 s each on one kept-alive
# connection (get_hammer.py) and prints p50 / p99, and the server's peak RSS while answering.
# CONFIG_FILE (optional) is passed to both commands with --config (A/B of table settings). See
# BENCHMARKS.md, "Merges in size tiers". The directory is removed at the end unless KEEP=1.
# REUSE=DIR (a directory kept by an earlier run with KEEP=1) skips the backfill and serves DIR
# (ORDERS is then ignored), so two binaries are measured on the same files (retention or a
# binary's merges may still change them: see binary_ab.sh); DIR is kept, its up log rewritten.
set -euo pipefail
if [ $# -lt 2 ] || ! [[ $2 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: [KEEP=1] [REUSE=DIR] $0 RTAP_BINARY ORDERS [CONFIG_FILE]  (ORDERS a positive integer)" >&2; exit 2
fi
rtap=$(realpath "$1"); orders=$2; config=${3:-}
here=$(cd "$(dirname "$0")" && pwd)
port=18471
extra=()
if [ -n "$config" ]; then extra=(--config "$(realpath "$config")"); fi
# Only what is given here: no RTAP_* settings of the caller's shell.
for v in $(env | grep -o '^RTAP_[A-Z_]*' || true); do unset "$v"; done
if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
    echo "something already answers on port $port" >&2; exit 1
fi
if [ -n "${REUSE:-}" ]; then
    if ! [ -f "$REUSE/segments/orders/manifest.json" ]; then
        echo "REUSE=$REUSE: no table there (segments/orders/manifest.json)" >&2; exit 2
    fi
    dir=$(realpath "$REUSE"); KEEP=1
else
    dir=$(mktemp -d "${TMPDIR:-/tmp}/rtap-lookup-scale.XXXXXX")
fi
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "kept: $dir (logs $dir.*.log)"; else rm -rf "$dir" "$dir".*.log; fi
}
trap cleanup EXIT
if [ -z "${REUSE:-}" ]; then
    start=$(date +%s.%N)
    if ! "$rtap" backfill --orders "$orders" --days 29 --seed 5 --data-dir "$dir" "${extra[@]}" > "$dir.backfill.log" 2>&1; then
        echo "backfill failed:" >&2; tail -20 "$dir.backfill.log" >&2; exit 1
    fi
    end=$(date +%s.%N)
    python3 -c "print(f'backfill: {$orders / ($end - $start):,.0f} orders/s ({$end - $start:.1f} s)')"
    grep -E 'stored [0-9]+ orders in|done:' "$dir.backfill.log" || true
fi
"$rtap" up --api-port 0 --http-port $port --dashboard-port 0 --max-orders 0 --seed 5 \
    --data-dir "$dir" "${extra[@]}" > "$dir.up.log" 2>&1 &
pid=$!
metric() { { curl -s -m 5 "http://127.0.0.1:$port/metrics" || true; } | awk -v m="$1" '$1 == m {print $2}'; }
alive() {
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "rtap up exited:" >&2; tail -20 "$dir.up.log" >&2; exit 1
    fi
}
for _ in $(seq 600); do alive; [ -n "$(metric rtap_table_segments)" ] && break; sleep 0.5; done
if [ -z "$(metric rtap_table_segments)" ]; then
    echo "rtap up did not serve /metrics:" >&2; tail -20 "$dir.up.log" >&2; exit 1
fi
wait_start=$SECONDS
until [ "$(metric rtap_table_merge_due) $(metric rtap_table_merging)" = "0 0" ]; do
    alive
    if [ $((SECONDS - wait_start)) -ge 3600 ]; then
        echo "WARNING: merges not caught up after an hour (measuring anyway)" >&2; break
    fi
    sleep 1
done
waited=$((SECONDS - wait_start))
echo "merges installed by the server: $(metric rtap_table_merges_total) (waited ${waited} s)"
python3 - "$dir/segments/orders/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
s = m["segments"]
print(f"segments: {len(s)}, {sum(x['bytes'] for x in s) / 1e6:.0f} MB, rows "
      + ", ".join(f"{x['rows']:,}" for x in s))
PY
# The peak RSS while answering each way: get_hammer.py resets VmHWM once it has read the
# customers, and prints it at its end.
python3 "$here/get_hammer.py" --pid "$pid" "http://127.0.0.1:$port" 15 '/users/{customer}/orders'
python3 "$here/get_hammer.py" --pid "$pid" "http://127.0.0.1:$port" 15 '/users/{customer}/orders?source=sql'
python3 "$here/get_hammer.py" "http://127.0.0.1:$port" 15 /orders/overview2
echo "server at the end (VmHWM since the last reset): $(awk '/VmHWM/{print "VmHWM", $2, $3} /VmRSS/{print "VmRSS", $2, $3}' /proc/$pid/status | paste -sd' ')"
