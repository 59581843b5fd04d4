#!/usr/bin/env bash
# binary_ab.sh BINARY_A BINARY_B DIR ROUNDS : two rtap builds serving the same kept table in turn
# (`rtap up --max-orders 0` on DIR, e.g. a directory `KEEP=1 lookup_scale.sh` left), the order
# alternating by round (A B, B A, ...); each time get_hammer.py sends `/users/{customer}/orders`
# and `/orders/overview2` in turn on one kept-alive connection for 15 s and prints p50 / p99.
# The machine's speed drifts between runs: overview2 (the same in most A/Bs; over a kept
# directory its window holds no orders) is printed beside as the yardstick. The table's manifest
# must not change during the rounds (a merge or retention would change what is measured): the
# script stops if it does. See BENCHMARKS.md, "Where a customer's orders spend their time at 10 M".
set -euo pipefail
if [ $# -ne 4 ] || ! [[ $4 =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 BINARY_A BINARY_B DIR ROUNDS" >&2; exit 2
fi
a=$(realpath "$1"); b=$(realpath "$2"); dir=$(realpath "$3"); rounds=$4
here=$(cd "$(dirname "$0")" && pwd)
port=18471
manifest="$dir/segments/orders/manifest.json"
if ! [ -f "$manifest" ]; then
    echo "$dir: no table there (segments/orders/manifest.json)" >&2; exit 2
fi
for v in $(env | grep -o '^RTAP_[A-Z_]*' || true); do unset "$v"; done
if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
    echo "something already answers on port $port" >&2; exit 1
fi
echo "A: $a"; echo "B: $b"
echo "table: $(python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['segments']; print(len(s), 'segments,', sum(x['rows'] for x in s), 'rows')" "$manifest")"
before=$(sha256sum "$manifest")
pid=""
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi' EXIT
for r in $(seq "$rounds"); do
    order="A B"; [ $((r % 2)) = 0 ] && order="B A"
    for tag in $order; do
        bin=$a; [ "$tag" = B ] && bin=$b
        "$bin" up --api-port 0 --http-port $port --dashboard-port 0 --max-orders 0 --seed 5 \
            --data-dir "$dir" > "$dir.ab.$tag.log" 2>&1 &
        pid=$!
        served=0
        for _ in $(seq 600); do
            if curl -s -o /dev/null "http://127.0.0.1:$port/metrics"; then served=1; break; fi
            if ! kill -0 "$pid" 2>/dev/null; then break; fi
            sleep 0.5
        done
        if [ $served = 0 ]; then
            echo "$tag did not serve /metrics:" >&2; tail -20 "$dir.ab.$tag.log" >&2; exit 1
        fi
        echo "round $r $tag:"
        python3 "$here/get_hammer.py" "http://127.0.0.1:$port" 15 '/users/{customer}/orders' /orders/overview2
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$tag exited while answering:" >&2; tail -20 "$dir.ab.$tag.log" >&2; exit 1
        fi
        kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
        if [ "$(sha256sum "$manifest")" != "$before" ]; then
            echo "the table changed during round $r ($tag): a merge or retention ran; the A/B stops" >&2
            exit 1
        fi
    done
done
