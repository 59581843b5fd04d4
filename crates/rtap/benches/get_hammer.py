"""get_hammer.py [--pid PID] BASE_URL SECONDS PATH... : GETs the paths in turn on one kept-alive connection
for SECONDS (after one untimed second of the same requests) and prints p50 / p99 in ms as the
client sees them, with the answer's rows. A path with `{customer}` gets a different customer each
time, from 300 customers drawn at random (seed 7) from the table's customers (read once through
/query/sql), cycled, so the OS has the pages of most answers cached (a warm-cache figure). With
--pid, the server's peak RSS (VmHWM) is reset after that read, so the peak it prints at the end
is the answering's (Linux clear_refs). Example (see BENCHMARKS.md, "Merges in size tiers"):
    python3 get_hammer.py http://127.0.0.1:8080 10 /users/{customer}/orders /orders/overview2
"""
import http.client, json, random, statistics, sys, time, urllib.parse

args = sys.argv[1:]
pid = None
if args[:1] == ["--pid"]:
    if len(args) < 2:
        sys.exit(__doc__)
    pid, args = args[1], args[2:]
if len(args) < 3:
    sys.exit(__doc__)
base, secs, paths = args[0], float(args[1]), args[2:]
t = urllib.parse.urlsplit(base)
conn = http.client.HTTPConnection(t.hostname, t.port, timeout=120)


def get(path, method="GET", body=None):
    headers = {"Content-Type": "application/json"} if body else {}
    conn.request(method, path, body, headers)
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit(f"{path}: HTTP {r.status}: {data[:300]!r}")
    return json.loads(data)


def status_mb(field):
    """A size from the server's /proc/PID/status, in MB ("?" when not there)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = next((l.split()[1] for l in f if l.startswith(field + ":")), None)
    except OSError:
        kb = None
    return int(kb) // 1024 if kb else "?"


customers = []
if any("{customer}" in p for p in paths):
    sql = "SELECT customer_id FROM orders GROUP BY customer_id ORDER BY customer_id LIMIT 100000"
    answer = get("/query/sql", "POST", json.dumps({"sql": sql}).encode())
    customers = [row[0] for row in answer["resultTable"]["rows"]]
    if not customers:
        sys.exit("no customers in the table")
    customers = random.Random(7).sample(customers, min(300, len(customers)))
if pid:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        # The peak reported at the end is at least this: what the server held when answering began.
        print(f"server RSS when the timed requests start: {status_mb('VmRSS')} MB")
    except OSError as e:
        print(f"(VmHWM not reset, whole-life peak: {e})")

times = {p: [] for p in paths}
rows = {p: [] for p in paths}
i = 0
for timed, span in ((False, 1.0), (True, secs)):
    end = time.time() + span
    while time.time() < end:
        for p in paths:
            path = p.replace("{customer}", urllib.parse.quote(customers[i % len(customers)])) if customers else p
            a = time.perf_counter()
            v = get(path)
            if timed:
                times[p].append((time.perf_counter() - a) * 1e3)
                rows[p].append(len(v) if isinstance(v, list) else 1)
        i += 1
for p in paths:
    v = sorted(times[p])
    if not v:
        sys.exit(f"{p}: no answer within {secs} s")
    print(f"{statistics.median(v):7.2f} ms p50 {v[int(0.99 * (len(v) - 1))]:7.2f} p99 n={len(v)} "
          f"rows p50 {statistics.median(rows[p])} :: {p}")
if pid:
    print(f"server peak RSS during these requests: {status_mb('VmHWM')} MB (VmHWM since the reset)")
