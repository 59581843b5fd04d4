"""hammer.py URL SECONDS SQL... : sends the queries in turn on one kept-alive connection for
SECONDS and prints p50 / p99 as the client sees them and rtap's own timeUsedMs p50 (see
BENCHMARKS.md, "Where a small query's time goes")."""
import http.client, json, sys, time, urllib.parse, statistics
url, secs, sqls = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
t = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(t.hostname, t.port, timeout=60)
times = {s: [] for s in sqls}
server = {s: [] for s in sqls}
end = time.time() + secs
while time.time() < end:
    for s in sqls:
        a = time.perf_counter()
        conn.request("POST", t.path, json.dumps({"sql": s}).encode(), {"Content-Type": "application/json"})
        r = conn.getresponse(); v = json.loads(r.read())
        times[s].append((time.perf_counter() - a) * 1e3)
        server[s].append(v.get("timeUsedMs", -1))
        if v.get("exceptions"): print(v["exceptions"]); sys.exit(1)
for s in sqls:
    v = sorted(times[s])
    print(f"{statistics.median(v):7.2f} ms p50 {v[int(0.99*(len(v)-1))]:7.2f} p99 n={len(v)} server p50 {statistics.median(server[s])} :: {s[:90]}")
