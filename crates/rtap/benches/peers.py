"""The seed's query shapes on rtap and on the engines a user would pick instead.

Run by `cargo bench --workspace --bench peers` (see peers.rs), which backfills rtap, copies the
Parquet segments its manifest lists and starts rtap on the data; this script gets rtap's SQL URL
and that copy and, on the same orders:

- loads them into DuckDB (a native table) and chDB (embedded ClickHouse, a MergeTree table
  ordered by time_ms), timing each load;
- runs every query on rtap's `/query/sql` (HTTP + JSON included), on DuckDB and chDB over rtap's
  own Parquet files, and on their native tables: interleaved (round robin, so a noisy moment
  hits every engine alike), the same fixed time bounds for all;
- checks that every engine's answer equals rtap's, then prints p50 / p99 per engine and the
  ratio of rtap's p50 to the best peer's.

usage: peers.py RTAP_SQL_URL PARQUET_DIR ROUNDS
"""

import glob
import json
import os
import shutil
import statistics
import sys
import tempfile
import http.client
import time
import urllib.parse

import chdb.session
import duckdb

url, parquet_dir, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
files = sorted(glob.glob(os.path.join(parquet_dir, "*.parquet")))
if not files:
    sys.exit(f"no Parquet segments under {parquet_dir}")
pq_list = "[" + ", ".join(f"'{f}'" for f in files) + "]"
ch_glob = os.path.join(parquet_dir, "*.parquet")

duck = duckdb.connect()
t = time.perf_counter()
duck.execute(f"CREATE TABLE orders AS SELECT * FROM read_parquet({pq_list})")
duck_load = time.perf_counter() - t
duck.execute(f"CREATE VIEW orders_pq AS SELECT * FROM read_parquet({pq_list})")
n, t_end = duck.execute("SELECT COUNT(*), MAX(time_ms) + 1 FROM orders").fetchone()
(customer,) = duck.execute(
    "SELECT customer_id FROM orders GROUP BY customer_id ORDER BY COUNT(*) DESC, customer_id LIMIT 1"
).fetchone()

ch_dir = tempfile.mkdtemp(prefix="rtap-chdb-")
ch = chdb.session.Session(ch_dir)
t = time.perf_counter()
ch.query(
    "CREATE TABLE orders ENGINE = MergeTree ORDER BY time_ms SETTINGS allow_nullable_key = 1 AS "
    f"SELECT * FROM file('{ch_glob}', Parquet)"
)
ch_load = time.perf_counter() - t
ch_pq = f"file('{ch_glob}', Parquet)"

minute, hour, day = 60_000, 3_600_000, 86_400_000
customer_sql = customer.replace("'", "''")

# (name, rtap (Pinot dialect), DuckDB (table placeholder {t}), ClickHouse ({t})).
QUERIES = [
    (
        "overview (last 1 and 2 minutes)",
        f"SELECT COUNT(*) FILTER (WHERE time_ms > {t_end - minute}) AS now_n, "
        f"COALESCE(SUM(order_total) FILTER (WHERE time_ms > {t_end - minute}), 0) AS now_rev, "
        f"COUNT(*) FILTER (WHERE time_ms <= {t_end - minute}) AS before_n, "
        f"COALESCE(SUM(order_total) FILTER (WHERE time_ms <= {t_end - minute}), 0) AS before_rev "
        f"FROM orders WHERE time_ms > {t_end - 2 * minute}",
        f"SELECT COUNT(*) FILTER (WHERE time_ms > {t_end - minute}), "
        f"COALESCE(SUM(order_total) FILTER (WHERE time_ms > {t_end - minute}), 0), "
        f"COUNT(*) FILTER (WHERE time_ms <= {t_end - minute}), "
        f"COALESCE(SUM(order_total) FILTER (WHERE time_ms <= {t_end - minute}), 0) "
        f"FROM {{t}} WHERE time_ms > {t_end - 2 * minute}",
        f"SELECT countIf(time_ms > {t_end - minute}), "
        f"coalesce(sumIf(order_total, time_ms > {t_end - minute}), 0), "
        f"countIf(time_ms <= {t_end - minute}), "
        f"coalesce(sumIf(order_total, time_ms <= {t_end - minute}), 0) "
        f"FROM {{t}} WHERE time_ms > {t_end - 2 * minute}",
    ),
    (
        "top 5 items, last hour",
        f"SELECT line_items.product.name AS item, COUNT(DISTINCT order_id) AS orders, "
        f"SUM(line_items.quantity) AS quantity FROM orders WHERE time_ms > {t_end - hour} "
        f"GROUP BY line_items.product.name ORDER BY quantity DESC, item LIMIT 5",
        f"SELECT item, COUNT(DISTINCT order_id), SUM(q) AS quantity FROM "
        f"(SELECT order_id, unnest(itemNames) AS item, unnest(itemQtys) AS q FROM {{t}} "
        f"WHERE time_ms > {t_end - hour}) GROUP BY item ORDER BY quantity DESC, item LIMIT 5",
        f"SELECT item, uniqExact(order_id), sum(q) AS quantity FROM "
        f"(SELECT order_id, arrayJoin(arrayZip(itemNames, itemQtys)) AS p, p.1 AS item, p.2 AS q "
        f"FROM {{t}} WHERE time_ms > {t_end - hour}) GROUP BY item ORDER BY quantity DESC, item LIMIT 5",
    ),
    (
        "orders per minute, last hour",
        f"SELECT DATETRUNC('MINUTE', time_ms, 'MILLISECONDS') AS m, COUNT(*) AS n, "
        f"SUM(order_total) AS rev FROM orders WHERE time_ms > {t_end - hour} "
        f"GROUP BY DATETRUNC('MINUTE', time_ms, 'MILLISECONDS') ORDER BY m DESC LIMIT 60",
        f"SELECT time_ms // 60000 * 60000 AS m, COUNT(*), SUM(order_total) FROM {{t}} "
        f"WHERE time_ms > {t_end - hour} GROUP BY m ORDER BY m DESC LIMIT 60",
        f"SELECT intDiv(time_ms, 60000) * 60000 AS m, count(), sum(order_total) FROM {{t}} "
        f"WHERE time_ms > {t_end - hour} GROUP BY m ORDER BY m DESC LIMIT 60",
    ),
    (
        "latest 10 orders",
        "SELECT order_id, time_ms, order_total, customer_id FROM orders "
        "ORDER BY time_ms DESC, order_id LIMIT 10",
        "SELECT order_id, time_ms, order_total, customer_id FROM {t} "
        "ORDER BY time_ms DESC, order_id LIMIT 10",
        "SELECT order_id, time_ms, order_total, customer_id FROM {t} "
        "ORDER BY time_ms DESC, order_id LIMIT 10",
    ),
    (
        "one customer's orders",
        f"SELECT order_id, order_total, time_ms FROM orders WHERE customer_id = '{customer_sql}' "
        f"ORDER BY time_ms DESC, order_id LIMIT 1000",
        f"SELECT order_id, order_total, time_ms FROM {{t}} WHERE customer_id = '{customer_sql}' "
        f"ORDER BY time_ms DESC, order_id LIMIT 1000",
        f"SELECT order_id, order_total, time_ms FROM {{t}} WHERE customer_id = '{customer_sql}' "
        f"ORDER BY time_ms DESC, order_id LIMIT 1000",
    ),
    (
        "top 5 cities, last day",
        f"SELECT customer_city AS city, COUNT(*) AS n FROM orders WHERE time_ms > {t_end - day} "
        f"GROUP BY customer_city ORDER BY n DESC, city LIMIT 5",
        f"SELECT customer_city AS city, COUNT(*) AS n FROM {{t}} WHERE time_ms > {t_end - day} "
        f"GROUP BY city ORDER BY n DESC, city LIMIT 5",
        f"SELECT customer_city AS city, count() AS n FROM {{t}} WHERE time_ms > {t_end - day} "
        f"GROUP BY city ORDER BY n DESC, city LIMIT 5",
    ),
    (
        "revenue per day, everything",
        "SELECT DATETRUNC('DAY', time_ms, 'MILLISECONDS') AS d, COUNT(*) AS n, SUM(order_total) AS rev "
        "FROM orders GROUP BY DATETRUNC('DAY', time_ms, 'MILLISECONDS') ORDER BY d LIMIT 100",
        "SELECT time_ms // 86400000 * 86400000 AS d, COUNT(*), SUM(order_total) FROM {t} "
        "GROUP BY d ORDER BY d LIMIT 100",
        "SELECT intDiv(time_ms, 86400000) * 86400000 AS d, count(), sum(order_total) FROM {t} "
        "GROUP BY d ORDER BY d LIMIT 100",
    ),
]


def norm(rows):
    """Rows as comparable tuples: numbers to the cent, everything else as text."""
    out = []
    for r in rows:
        cells = []
        for v in r:
            if isinstance(v, bool) or v is None:
                cells.append(str(v))
            elif isinstance(v, (int, float)):
                cells.append(f"{float(v):.2f}")
            else:
                try:
                    cells.append(f"{float(v):.2f}")
                except ValueError:
                    cells.append(str(v))
        out.append(tuple(cells))
    return out


# One kept-alive connection, as a client of a query service keeps (a new TCP connection and
# urllib's request machinery cost about a millisecond of Python per query on their own).
target = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
# rtap's own time per query in the timed rounds (the answer's timeUsedMs, whole ms: planning
# and execution, no HTTP, no JSON).
server_ms = {}
timing = False


def post(sql):
    """One POST on the kept connection; reconnects once if rtap closed it while idle (its
    header_read_timeout also closes idle keep-alive connections)."""
    global conn
    body = json.dumps({"sql": sql}).encode()
    for attempt in (0, 1):
        try:
            conn.request("POST", target.path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (http.client.HTTPException, ConnectionError):
            conn.close()
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            if attempt:
                raise


def run_rtap(sql):
    status, text = post(sql)
    if status != 200:
        raise RuntimeError(f"rtap answered {status}: {text[:300]!r}")
    v = json.loads(text)
    if v.get("exceptions"):
        raise RuntimeError(f"rtap: {v['exceptions']}")
    if timing:
        server_ms.setdefault(sql, []).append(v["timeUsedMs"])
    return v["resultTable"]["rows"]


def run_duck(sql):
    return duck.execute(sql).fetchall()


def run_ch(sql):
    text = ch.query(sql, "JSONCompact").bytes()
    return json.loads(text)["data"] if text else []


engines = [
    ("rtap /query/sql", lambda q: run_rtap(q[1])),
    ("DuckDB on rtap's Parquet", lambda q: run_duck(q[2].format(t="orders_pq"))),
    ("DuckDB native", lambda q: run_duck(q[2].format(t="orders"))),
    ("chDB on rtap's Parquet", lambda q: run_ch(q[3].format(t=ch_pq))),
    ("chDB native", lambda q: run_ch(q[3].format(t="orders"))),
]

print(f"{n} orders in {len(files)} Parquet segments; bounds end at time_ms {t_end}")
print(f"loads: DuckDB native table {duck_load:.1f} s, chDB MergeTree {ch_load:.1f} s")
failed = False
for q in QUERIES:
    want = norm(engines[0][1](q))
    for name, run in engines[1:]:
        got = norm(run(q))
        if got != want:
            failed = True
            print(f"MISMATCH {q[0]} on {name}:\n  rtap {want[:3]}\n  {name} {got[:3]}")
if failed:
    sys.exit("answers differ")
print(f"every answer equal across engines; {rounds} interleaved rounds, p50 / p99 in ms")
times = {(q[0], e[0]): [] for q in QUERIES for e in engines}
timing = True
for _ in range(rounds):
    for q in QUERIES:
        for name, run in engines:
            t = time.perf_counter()
            run(q)
            times[(q[0], name)].append((time.perf_counter() - t) * 1e3)
header = "| query | " + " | ".join(e[0] for e in engines) + " | rtap / best peer (p50) |"
print(header)
print("|" + "---|" * (len(engines) + 2))
for q in QUERIES:
    cells, p50s = [], []
    for name, _ in engines:
        v = sorted(times[(q[0], name)])
        p50 = statistics.median(v)
        p99 = v[min(len(v) - 1, round(0.99 * (len(v) - 1)))]
        p50s.append(p50)
        cells.append(f"{p50:.2f} / {p99:.2f}")
    ratio = p50s[0] / min(p50s[1:])
    print(f"| {q[0]} | " + " | ".join(cells) + f" | {ratio:.2f} |")
print("rtap's own time (timeUsedMs, whole ms: planning and execution, without HTTP and JSON), p50 / p99:")
for q in QUERIES:
    v = sorted(server_ms.get(q[1], [0]))
    print(f"  {q[0]}: {statistics.median(v):.0f} / {v[min(len(v) - 1, round(0.99 * (len(v) - 1)))]} ms")
ch.close()
shutil.rmtree(ch_dir, ignore_errors=True)
