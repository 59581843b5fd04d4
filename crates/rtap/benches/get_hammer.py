"""get_hammer.py BASE_URL SECONDS PATH... : GETs the paths in turn on one kept-alive connection
for SECONDS and prints p50 / p99 in ms as the client sees them, with the answer's rows. A path
with `{customer}` gets a different customer each time, from 300 customers of the table (read
once through /query/sql). Example (see BENCHMARKS.md, "One customer's orders at 10 M"):
    python3 get_hammer.py http://127.0.0.1:8080 10 /users/{customer}/orders /orders/overview2
"""
import http.client, json, random, statistics, sys, time, urllib.parse

base, secs, paths = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
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


customers = []
if any("{customer}" in p for p in paths):
    sql = "SELECT customer_id FROM orders GROUP BY customer_id ORDER BY customer_id LIMIT 300"
    answer = get("/query/sql", "POST", json.dumps({"sql": sql}).encode())
    customers = [row[0] for row in answer["resultTable"]["rows"]]
    if not customers:
        sys.exit("no customers in the table")
    random.Random(7).shuffle(customers)

times = {p: [] for p in paths}
rows = {p: [] for p in paths}
end = time.time() + secs
i = 0
while time.time() < end:
    for p in paths:
        path = p.replace("{customer}", urllib.parse.quote(customers[i % len(customers)])) if customers else p
        a = time.perf_counter()
        v = get(path)
        times[p].append((time.perf_counter() - a) * 1e3)
        rows[p].append(len(v) if isinstance(v, list) else 1)
    i += 1
for p in paths:
    v = sorted(times[p])
    print(f"{statistics.median(v):7.2f} ms p50 {v[int(0.99 * (len(v) - 1))]:7.2f} p99 n={len(v)} "
          f"rows p50 {statistics.median(rows[p])} :: {p}")
