//! Exact answers: a known set of generated orders is ingested into a realtime table, and every
//! analytics endpoint and every seed query of the original README is checked against answers
//! computed independently, in plain Rust with integer cents, from the same orders. Then the same
//! data delivered twice, and the table reopened from disk, must give the same answers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::TimeZone;
use ingest::{schema, IngestConfig, Ingestor, Message, Position};
use orders::{Generator, GeneratorConfig, Order};
use rolling::{Metrics, Recent, WindowConfig, Windows};
use serde_json::{json, Value};
use sql::{SqlConfig, SqlEngine};
use table::{RealtimeTable, TableConfig};

/// 2026-11-25T15:00:00Z: "now" for every query of this test.
const NOW: i64 = 1_795_618_800_000;
const MINUTE: i64 = 60_000;
const N: u64 = 6_000;
/// Orders every 700 ms over the 70 minutes before NOW.
const STEP: i64 = 700;

fn generate() -> Vec<Order> {
    let mut g = Generator::new(GeneratorConfig {
        seed: 2024,
        customers: 400,
    });
    (1..=N)
        .map(|seq| g.generate(seq, NOW - 70 * MINUTE + seq as i64 * STEP - 1))
        .collect()
}

fn cents(x: f64) -> i64 {
    (x * 100.0).round() as i64
}

fn dollars(c: i64) -> Value {
    json!(c as f64 / 100.0)
}

fn ny(ms: i64) -> String {
    chrono_tz::America::New_York
        .timestamp_millis_opt(ms)
        .single()
        .expect("valid")
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn table_config() -> TableConfig {
    // Small segments so the test covers sealed Parquet files, a merge, and memory together.
    TableConfig {
        max_memory_rows: 700,
        merge_min_segments: 3,
        merge_target_rows: 4_000,
        ..TableConfig::default()
    }
}

fn open_table(dir: &std::path::Path) -> Arc<RealtimeTable> {
    Arc::new(
        RealtimeTable::open(
            dir,
            schema::order_schema(),
            schema::TIME_MS,
            &[schema::ORDER_ID, "customer_id"],
            table_config(),
            clock::ManualClock::new(NOW),
        )
        .and_then(|t| {
            // As rtap opens it: one customer's orders come from the lookup indexes.
            t.with_lookups(table::LookupSpec::list(&schema::LOOKUPS))
        })
        .expect("open table"),
    )
}

/// Ingests the JSON of `orders` (each `copies` times, interleaved) in batches of 500, into the
/// table, the rolling windows and two recent answer states: the default one, and one whose
/// panes hold a single key per list (so its top lists overflow and must be asked of SQL).
fn ingest(table: &RealtimeTable, orders: &[Order], copies: usize) -> (Windows, Recent, Recent) {
    let mut windows = Windows::new(WindowConfig::default()).expect("windows");
    let mut recent = Recent::default();
    let mut tiny = Recent::new(1);
    let docs: Vec<Vec<u8>> = orders.iter().map(|o| o.to_json()).collect();
    let mut ingestor = Ingestor::new(IngestConfig::default());
    let mut messages = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        for c in 0..copies {
            messages.push(Message {
                position: Position {
                    partition: c as i32,
                    offset: i as i64,
                },
                payload: d.as_slice(),
                record_time_ms: None,
            });
        }
    }
    // The newest 300 orders (and their copies) stay in memory; the rest is sealed and merged.
    let (sealed, fresh) = messages.split_at(messages.len() - 300 * copies);
    // The newest arrive newest first: every one of them late, within the grace period.
    let fresh: Vec<Message<'_>> = fresh.iter().rev().cloned().collect();
    let mut append = |chunk: &[Message<'_>]| {
        let out = ingestor.ingest(chunk, NOW);
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        if let Some(b) = out.batch {
            for f in ingest::order_facts(&b) {
                windows.observe(
                    f.time_ms,
                    Metrics::order(f.order_total, f.fraud, f.delivered, f.refunded),
                );
            }
            ingest::for_each_recent_row(&b, |row| {
                recent.observe(row, NOW);
                tiny.observe(row, NOW);
            })
            .expect("recent");
            table.append(b).expect("append");
        }
    };
    for chunk in sealed.chunks(500) {
        append(chunk);
        if let Some(e) = table.maintain().failed() {
            panic!("maintain: {e}");
        }
    }
    table.flush().expect("seal");
    for _ in 0..200 {
        if let Some(e) = table.maintain().failed() {
            panic!("maintain: {e}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    append(&fresh);
    assert_eq!(windows.late(), 0);
    (windows, recent, tiny)
}

/// Where the fixed endpoints answer from.
enum Answers {
    /// SQL only.
    Sql,
    /// State kept while ingesting.
    Kept(Box<Recent>),
    /// State rebuilt from the table, as at a restart.
    Rebuilt,
}

async fn serve(table: Arc<RealtimeTable>, windows: Windows, answers: Answers) -> String {
    serve_engine(table, windows, answers).await.0
}

/// [`serve`], and the engine behind it (to see whether an endpoint planned SQL).
async fn serve_engine(
    table: Arc<RealtimeTable>,
    windows: Windows,
    answers: Answers,
) -> (String, Arc<SqlEngine>) {
    let engine = Arc::new(
        SqlEngine::new(table, SqlConfig::default(), clock::ManualClock::new(NOW)).expect("engine"),
    );
    let recent = match answers {
        Answers::Sql => None,
        Answers::Kept(r) => {
            let a = server::recent::RecentAnswers::new(*r);
            a.set_trusted(true);
            Some(Arc::new(a))
        }
        Answers::Rebuilt => {
            let a = server::recent::RecentAnswers::default();
            server::recent::rebuild(&engine, &a, NOW)
                .await
                .expect("rebuild");
            assert!(a.trusted());
            Some(Arc::new(a))
        }
    };
    let live = Arc::new(server::overview::Live {
        windows: Arc::new(Mutex::new(windows)),
        clock: clock::ManualClock::new(NOW),
        recent: recent.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = server::analytics::router(engine.clone(), recent, None)
        .merge(server::overview::router(live));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, engine)
}

async fn get(url: &str) -> Value {
    let resp = reqwest::get(url).await.expect("request");
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    resp.json().await.expect("json")
}

async fn sql(base: &str, query: &str) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/query/sql"))
        .json(&json!({ "sql": query }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["exceptions"], json!([]), "{query}");
    v
}

fn rows(v: &Value) -> Vec<Vec<Value>> {
    v["resultTable"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_array().expect("row").clone())
        .collect()
}

/// Metrics of the orders with `lo <= time_ms < hi` (the windows' half-open bounds).
fn period(orders: &[Order], lo: i64, hi: i64) -> Value {
    let sel: Vec<&Order> = orders
        .iter()
        .filter(|o| o.time_ms >= lo && o.time_ms < hi)
        .collect();
    let revenue: i64 = sel.iter().map(|o| cents(o.order_total)).sum();
    let n = sel.len() as i64;
    let avg = if n > 0 {
        ((revenue as f64 / n as f64).round()) as i64
    } else {
        0
    };
    json!({
        "orders": n,
        "totalRevenue": dollars(revenue),
        "avgOrderValue": dollars(avg),
        "fraudCount": sel.iter().filter(|o| o.fraud_flag).count(),
        "deliveredCount": sel.iter().filter(|o| o.delivered == "yes").count(),
        "refundedCount": sel.iter().filter(|o| o.refunded == "yes").count(),
    })
}

/// Every endpoint's expected answer, from plain Rust over the orders.
fn expected_endpoints(orders: &[Order]) -> BTreeMap<&'static str, Value> {
    let mut out = BTreeMap::new();
    out.insert(
        "/orders/overview2",
        json!({
            // NOW is a whole second: the current window is [NOW + 1 s - 60 s, NOW + 1 s).
            "currentTimePeriod": period(orders, NOW + 1000 - MINUTE, NOW + 1000),
            "previousTimePeriod": period(orders, NOW + 1000 - 2 * MINUTE, NOW + 1000 - MINUTE),
        }),
    );

    // The current minute and the 59 before it (NOW is a whole minute).
    let mut minutes: BTreeMap<i64, Vec<&Order>> = BTreeMap::new();
    for o in orders
        .iter()
        .filter(|o| o.time_ms >= NOW - 59 * MINUTE && o.time_ms < NOW + MINUTE)
    {
        minutes
            .entry(o.time_ms.div_euclid(MINUTE) * MINUTE)
            .or_default()
            .push(o);
    }
    let per_minute: Vec<Value> = minutes
        .iter()
        .rev()
        .take(60)
        .map(|(m, os)| {
            json!({
                "timestamp": ny(*m),
                "orders": os.len(),
                "revenue": dollars(os.iter().map(|o| cents(o.order_total)).sum()),
                "fraud": os.iter().filter(|o| o.fraud_flag).count(),
                "delivered": os.iter().filter(|o| o.delivered == "yes").count(),
                "refunded": os.iter().filter(|o| o.refunded == "yes").count(),
            })
        })
        .collect();
    out.insert("/orders/ordersperminute", Value::Array(per_minute));

    // [end - 60 s, end), end the end of the current second (as /orders/overview).
    let last_minute: Vec<&Order> = orders
        .iter()
        .filter(|o| o.time_ms >= NOW + 1000 - MINUTE && o.time_ms < NOW + 1000)
        .collect();
    let top = |key: &dyn Fn(&orders::model::LineItem) -> String, label: &str| -> Vec<Value> {
        let mut by: HashMap<String, (HashSet<uuid_like::Id>, i64)> = HashMap::new();
        for o in &last_minute {
            for li in &o.line_items {
                let e = by.entry(key(li)).or_default();
                e.0.insert(uuid_like::Id(o.order_id.to_string()));
                e.1 += i64::from(li.quantity);
            }
        }
        let mut v: Vec<(String, usize, i64)> = by
            .into_iter()
            .map(|(k, (ids, q))| (k, ids.len(), q))
            .collect();
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        v.into_iter()
            .take(5)
            .map(|(k, n, q)| json!({ label: k, "orders": n, "quantity": q }))
            .collect()
    };
    out.insert(
        "/orders/popular",
        json!({
            "itemNames": top(&|li| li.product.name.to_string(), "itemName"),
            "categories": top(&|li| li.product.category.to_string(), "category"),
        }),
    );

    let mut newest: Vec<&Order> = orders.iter().collect();
    newest.sort_by(|a, b| {
        b.time_ms
            .cmp(&a.time_ms)
            .then(a.order_id.to_string().cmp(&b.order_id.to_string()))
    });
    out.insert(
        "/orders/latestorders",
        Value::Array(
            newest
                .iter()
                .take(10)
                .map(|o| {
                    json!({
                        "orderId": o.order_id.to_string(),
                        "timestamp": ny(o.time_ms),
                        "orderTotal": dollars(cents(o.order_total)),
                        "customerId": o.customer.customer_id.to_string(),
                        "productsOrdered": o.line_items.len(),
                        "totalQuantity": o.line_items.iter().map(|l| l.quantity).sum::<u32>(),
                    })
                })
                .collect(),
        ),
    );

    let mut coupons: HashMap<String, usize> = HashMap::new();
    for o in &last_minute {
        for c in &o.coupon_codes {
            *coupons.entry(c.name.to_string()).or_default() += 1;
        }
    }
    let mut coupons: Vec<(String, usize)> = coupons.into_iter().collect();
    coupons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out.insert(
        "/orders/couponslastminute",
        Value::Array(
            coupons
                .into_iter()
                .map(|(c, n)| json!({"coupon_code": c, "times_used": n}))
                .collect(),
        ),
    );

    let top_by = |key: &dyn Fn(&Order) -> String, label: &str| -> Vec<Value> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for o in &last_minute {
            *counts.entry(key(o)).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.into_iter()
            .take(5)
            .map(|(k, n)| json!({ label: k, "totalOrders": n }))
            .collect()
    };
    out.insert(
        "/orders/toplocations",
        json!({
            "cities": top_by(&|o| o.customer.city.to_string(), "city"),
            "states": top_by(&|o| o.customer.state.to_string(), "state"),
        }),
    );

    let mut last_seen: HashMap<String, i64> = HashMap::new();
    for o in orders {
        let e = last_seen
            .entry(o.customer.customer_id.to_string())
            .or_insert(i64::MIN);
        *e = (*e).max(o.time_ms);
    }
    let mut users: Vec<(String, i64)> = last_seen.into_iter().collect();
    users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out.insert(
        "/users/",
        Value::Array(
            users
                .into_iter()
                .take(50)
                .map(|(id, t)| json!({"customer_id": id, "timestamp": ny(t)}))
                .collect(),
        ),
    );
    out
}

/// A tiny newtype so the oracle's sets are explicit about holding order ids.
mod uuid_like {
    #[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
    pub struct Id(pub String);
}

async fn check_endpoints(base: &str, orders: &[Order]) -> BTreeMap<&'static str, Value> {
    let expected = expected_endpoints(orders);
    let mut got = BTreeMap::new();
    for (path, want) in &expected {
        let v = get(&format!("{base}{path}")).await;
        assert_eq!(&v, want, "{path}");
        // SQL asked explicitly gives the same answer as the state kept at ingest.
        let sql = get(&format!("{base}{path}?source=sql")).await;
        assert_eq!(&sql, want, "{path}?source=sql");
        got.insert(*path, v);
    }
    // The streaming path agrees with SQL to the cent (the original's two paths did not).
    let streaming = get(&format!("{base}/orders/overview")).await;
    assert_eq!(streaming, expected["/orders/overview2"], "/orders/overview");
    assert!(
        streaming["currentTimePeriod"]["orders"]
            .as_u64()
            .unwrap_or(0)
            > 50
    );
    // A repeat customer's orders, newest first.
    let mut per_customer: HashMap<String, Vec<&Order>> = HashMap::new();
    for o in orders {
        per_customer
            .entry(o.customer.customer_id.to_string())
            .or_default()
            .push(o);
    }
    let (customer, mut theirs) = per_customer
        .into_iter()
        .max_by_key(|(id, v)| (v.len(), id.clone()))
        .expect("customers");
    assert!(theirs.len() > 20);
    theirs.sort_by(|a, b| {
        b.time_ms
            .cmp(&a.time_ms)
            .then(a.order_id.to_string().cmp(&b.order_id.to_string()))
    });
    let want: Vec<Value> = theirs
        .iter()
        .map(|o| json!({"order_id": o.order_id.to_string(), "order_total": dollars(cents(o.order_total)), "timestamp": ny(o.time_ms)}))
        .collect();
    assert_eq!(
        get(&format!("{base}/users/{customer}/orders")).await,
        Value::Array(want)
    );
    got
}

/// The README's seed queries, verbatim, against the standard-SQL answer over per-grain rows.
async fn check_seed_queries(base: &str, orders: &[Order]) {
    let readme = include_str!("fixtures/README.original.md");
    let queries = seed_queries(readme);
    assert_eq!(
        queries.len(),
        5,
        "the README holds five queries: {queries:?}"
    );

    // overview2's query: COUNT(DISTINCT order_id) and SUM(DISTINCT order_total) per period.
    let v = sql(base, &queries[0]).await;
    let names: Vec<&str> = v["resultTable"]["dataSchema"]["columnNames"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert_eq!(names[0], "events1Min");
    let row = &rows(&v)[0];
    let sel = |lo: i64, hi: i64, f: &dyn Fn(&Order) -> bool| -> Vec<&Order> {
        orders
            .iter()
            .filter(|o| o.time_ms > lo && o.time_ms <= hi && f(o))
            .collect()
    };
    let distinct_sum = |os: &[&Order]| -> i64 {
        let set: HashSet<i64> = os.iter().map(|o| cents(o.order_total)).collect();
        set.into_iter().sum()
    };
    let all = |_: &Order| true;
    let (m1, m2) = (NOW - MINUTE, NOW - 2 * MINUTE);
    assert_eq!(row[0], json!(sel(m1, NOW, &all).len()));
    assert_eq!(row[1], json!(sel(m2, m1, &all).len()));
    assert_eq!(
        cents(row[2].as_f64().expect("total1Min")),
        distinct_sum(&sel(m1, NOW, &all))
    );
    assert_eq!(
        cents(row[3].as_f64().expect("total1Min2Min")),
        distinct_sum(&sel(m2, m1, &all))
    );
    assert_eq!(row[4], json!(sel(m1, NOW, &|o| o.refunded == "yes").len()));
    assert_eq!(row[5], json!(sel(m1, NOW, &|o| o.delivered == "yes").len()));
    assert_eq!(row[6], json!(sel(m1, NOW, &|o| o.fraud_flag).len()));
    assert_eq!(row[7], json!(sel(m2, m1, &|o| o.refunded == "yes").len()));
    assert_eq!(row[8], json!(sel(m2, m1, &|o| o.delivered == "yes").len()));
    assert_eq!(row[9], json!(sel(m2, m1, &|o| o.fraud_flag).len()));

    // popular: items and categories (item grain), ORDER BY quantity DESC LIMIT 5. Ties at the
    // fifth place make the choice of rows ambiguous, so check each row and the quantities.
    for (q, key) in [(&queries[1], "name"), (&queries[2], "category")] {
        let mut by: HashMap<String, (HashSet<String>, i64)> = HashMap::new();
        for o in sel(m1, NOW, &all) {
            for li in &o.line_items {
                let k = if key == "name" {
                    li.product.name.to_string()
                } else {
                    li.product.category.to_string()
                };
                let e = by.entry(k).or_default();
                e.0.insert(o.order_id.to_string());
                e.1 += i64::from(li.quantity);
            }
        }
        let v = sql(base, q).await;
        let got = rows(&v);
        assert_eq!(got.len(), 5);
        let mut quantities: Vec<i64> = by.values().map(|(_, q)| *q).collect();
        quantities.sort_unstable_by(|a, b| b.cmp(a));
        let got_q: Vec<i64> = got
            .iter()
            .map(|r| r[2].as_f64().expect("quantity") as i64)
            .collect();
        assert_eq!(got_q, quantities[..5].to_vec(), "{key}");
        for r in &got {
            let (ids, quantity) = &by[r[0].as_str().expect("name")];
            assert_eq!(r[1], json!(ids.len()));
            assert_eq!(r[2].as_f64(), Some(*quantity as f64));
        }
    }

    // ordersperminute: oldest first, at most 60 minutes, SUM(DISTINCT order_total).
    let v = sql(base, &queries[3]).await;
    let mut minutes: BTreeMap<i64, Vec<&Order>> = BTreeMap::new();
    for o in sel(NOW - 60 * MINUTE, NOW, &all) {
        minutes
            .entry(o.time_ms.div_euclid(MINUTE) * MINUTE)
            .or_default()
            .push(o);
    }
    let want: Vec<Vec<Value>> = minutes
        .iter()
        .take(60)
        .map(|(m, os)| {
            vec![
                json!(ny(*m)),
                json!(os.len()),
                json!(distinct_sum(os)),
                json!(os.iter().filter(|o| o.fraud_flag).count()),
                json!(os.iter().filter(|o| o.delivered == "yes").count()),
                json!(os.iter().filter(|o| o.refunded == "yes").count()),
            ]
        })
        .collect();
    let got: Vec<Vec<Value>> = rows(&v)
        .into_iter()
        .map(|mut r| {
            r[2] = json!(cents(r[2].as_f64().expect("totalRev")));
            r
        })
        .collect();
    assert_eq!(got, want);

    // latestorders: GROUP BY order_id, customer_id, ORDER BY a per-second string: ties within a
    // second are in any order, so check the rows and the multiset of times.
    let v = sql(base, &queries[4]).await;
    let got = rows(&v);
    assert_eq!(got.len(), 10);
    let by_id: HashMap<String, &Order> =
        orders.iter().map(|o| (o.order_id.to_string(), o)).collect();
    let mut times: Vec<String> = orders.iter().map(|o| ny(o.time_ms)).collect();
    times.sort_unstable_by(|a, b| b.cmp(a));
    let mut got_times: Vec<String> = got
        .iter()
        .map(|r| r[1].as_str().expect("time").to_string())
        .collect();
    got_times.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(got_times, times[..10].to_vec());
    for r in &got {
        let o = by_id[r[0].as_str().expect("order_id")];
        assert_eq!(r[1], json!(ny(o.time_ms)));
        assert_eq!(cents(r[2].as_f64().expect("total")), cents(o.order_total));
        assert_eq!(r[3], json!(o.customer.customer_id.to_string()));
        // MAX answers DOUBLE, as in Pinot.
        assert_eq!(r[4].as_f64(), Some(o.line_items.len() as f64));
        assert_eq!(
            r[5].as_f64(),
            Some(f64::from(
                o.line_items.iter().map(|l| l.quantity).sum::<u32>()
            ))
        );
    }
}

/// The SQL blocks of the README (the overview2 block, both popular queries, ordersperminute,
/// latestorders), comments stripped.
fn seed_queries(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            current.clear();
            continue;
        }
        if !in_block {
            continue;
        }
        let code = line.split("--").next().unwrap_or_default();
        if code.trim().is_empty() {
            continue;
        }
        current.push_str(code);
        current.push('\n');
        if code.trim_end().ends_with(';') {
            if current.to_uppercase().contains("FROM ORDERS") {
                out.push(std::mem::take(&mut current));
            } else {
                current.clear();
            }
        }
    }
    out.retain(|q| q.trim_start().to_uppercase().starts_with("SELECT"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_seed_query_is_exact_and_stable() {
    let orders = generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let table = open_table(&dir.path().join("once"));
    let (windows, recent, mut tiny) = ingest(&table, &orders, 1);
    let snap = table.snapshot();
    assert_eq!(snap.rows(), N);
    assert!(
        snap.segments.len() >= 2,
        "sealed segments: {}",
        snap.segments.len()
    );
    assert!(snap.memory_rows > 0, "some rows still in memory");
    let base = serve(
        table.clone(),
        windows.clone(),
        Answers::Kept(Box::new(recent)),
    )
    .await;
    let first = check_endpoints(&base, &orders).await;
    check_seed_queries(&base, &orders).await;
    let sql_only = serve(table.clone(), windows.clone(), Answers::Sql).await;
    assert_eq!(check_endpoints(&sql_only, &orders).await, first);
    // A state whose panes ran out of keys sends its top lists to SQL: still exact.
    assert_eq!(
        tiny.top_items(rolling::recent::ItemList::Items, NOW, 5),
        None
    );
    let overflowed = serve(
        table.clone(),
        windows.clone(),
        Answers::Kept(Box::new(tiny)),
    )
    .await;
    assert_eq!(check_endpoints(&overflowed, &orders).await, first);

    // Every order delivered twice: the same answers.
    let twice = open_table(&dir.path().join("twice"));
    let (windows_twice, recent_twice, _) = ingest(&twice, &orders, 2);
    assert_eq!(twice.snapshot().rows(), N);
    let base2 = serve(twice, windows_twice, Answers::Kept(Box::new(recent_twice))).await;
    assert_eq!(check_endpoints(&base2, &orders).await, first);

    // Restart: seal, reopen the directory, same answers.
    table.flush().expect("flush");
    drop(table);
    let reopened = open_table(&dir.path().join("once"));
    assert_eq!(reopened.snapshot().rows(), N);
    assert_eq!(reopened.snapshot().memory_rows, 0);
    let base3 = serve(reopened, windows, Answers::Rebuilt).await;
    assert_eq!(check_endpoints(&base3, &orders).await, first);
    check_seed_queries(&base3, &orders).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sql_dml_and_injection_get_clear_errors_and_change_nothing() {
    let orders: Vec<Order> = generate().into_iter().take(500).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let table = open_table(dir.path());
    let (windows, _, _) = ingest(&table, &orders, 1);
    let base = serve(table.clone(), windows, Answers::Sql).await;
    let client = reqwest::Client::new();
    let count = || async { rows(&sql(&base, "SELECT COUNT(*) FROM orders").await)[0][0].clone() };
    assert_eq!(count().await, json!(500));

    for (query, code, fragment) in [
        ("SELEC * FROM orders", 150, "SQLParsingError"),
        ("SELECT * FROM orders WHERE", 150, "SQLParsingError"),
        ("", 150, "empty"),
        ("SELECT no_such_column FROM orders", 710, "no_such_column"),
        ("SELECT * FROM customers", 190, "customers"),
        (
            "INSERT INTO orders (order_id) VALUES ('x')",
            700,
            "read-only",
        ),
        ("DELETE FROM orders", 700, "read-only"),
        ("DROP TABLE orders", 700, "read-only"),
        ("CREATE TABLE t AS SELECT * FROM orders", 700, "read-only"),
        ("UPDATE orders SET order_total = 0", 700, "read-only"),
        ("SELECT 1; DROP TABLE orders", 700, "one statement"),
        ("SELECT ago('yesterday') FROM orders", 700, "ISO-8601"),
    ] {
        let resp = client
            .post(format!("{base}/query/sql"))
            .json(&json!({ "sql": query }))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 200, "{query}");
        let v: Value = resp.json().await.expect("json");
        let e = &v["exceptions"][0];
        assert_eq!(e["errorCode"], json!(code), "{query}: {v}");
        assert!(
            e["message"].as_str().expect("message").contains(fragment),
            "{query}: {v}"
        );
        assert!(v.get("resultTable").is_none());
    }
    // Bad request bodies are 400s with a JSON error, never 500.
    for body in ["not json", "{\"query\": \"SELECT 1\"}", "{\"sql\": 5}"] {
        let resp = client
            .post(format!("{base}/query/sql"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let v: Value = resp.json().await.expect("json");
        assert!(v["error"].is_string());
    }
    let v: Value = client
        .get(format!(
            "{base}/query/sql?sql=SELECT%20COUNT(*)%20FROM%20orders"
        ))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(rows(&v)[0][0], json!(500));

    // Injection attempts on /users/{id}/orders are just ids that match nobody.
    for attempt in [
        "x' OR '1'='1",
        "'; DROP TABLE orders; --",
        "1 OR 1=1",
        "\" OR \"\"=\"",
    ] {
        let url = reqwest::Url::parse(&format!("{base}/users/"))
            .expect("url")
            .join(&urlencode(attempt))
            .expect("join");
        let url = format!("{url}/orders");
        let resp = client.get(&url).send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 200, "{attempt}");
        assert_eq!(
            resp.json::<Value>().await.expect("json"),
            json!([]),
            "{attempt}"
        );
    }
    let long = "a".repeat(500);
    let resp = client
        .get(format!("{base}/users/{long}/orders"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(count().await, json!(500), "nothing changed");
    assert_eq!(table.snapshot().rows(), 500);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A small deterministic generator (xorshift) for the hostile data below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Valid but awkward orders: NULL item names, categories, quantities (an item whose every
/// quantity is NULL: SQL's SUM is NULL and sorts first), NULL cities, states, customers and
/// coupon codes, an item repeated in one order, orders up to 4 minutes ahead of the clock and up
/// to 2 hours late, all arriving shuffled. The kept answers equal SQL's on every endpoint, kept
/// while ingesting and rebuilt from the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_answers_equal_sql_on_nulls_repeats_late_and_future_orders() {
    let mut g = Generator::new(GeneratorConfig {
        seed: 99,
        customers: 60,
    });
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut docs: Vec<Vec<u8>> = Vec::new();
    for seq in 1..=3_000u64 {
        let t = match rng.below(10) {
            0 => NOW - rng.below(2 * 3_600_000) as i64,
            1 => NOW + rng.below(4 * 60_000) as i64,
            _ => NOW - rng.below(90_000) as i64,
        };
        let mut v: Value = serde_json::from_slice(&g.generate(seq, t).to_json()).expect("json");
        let bits = rng.next();
        let bit = |b: u32| bits >> (b * 3) & 7 == 0;
        if bit(0) {
            v["line_items"][0]["product"]["name"] = Value::Null;
        }
        if bit(1) {
            v["line_items"][0]["product"]["category"] = Value::Null;
        }
        if bit(2) {
            v["line_items"][0]["product"]["name"] = json!("ghost item");
            v["line_items"][0]["quantity"] = Value::Null;
        }
        if bit(3) {
            v["customer"]["city"] = Value::Null;
        }
        if bit(4) {
            v["customer"]["state"] = Value::Null;
        }
        if bit(5) {
            v["customer"]["customer_id"] = Value::Null;
        }
        if bit(6) && v["coupon_codes"][0].is_object() {
            v["coupon_codes"][0]["name"] = Value::Null;
        }
        if bit(7) {
            let first = v["line_items"][0].clone();
            if let Some(items) = v["line_items"].as_array_mut() {
                items.push(first);
            }
        }
        docs.push(serde_json::to_vec(&v).expect("json"));
    }
    for i in (1..docs.len()).rev() {
        docs.swap(i, rng.below(i as u64 + 1) as usize);
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let table = open_table(dir.path());
    let mut recent = Recent::default();
    let mut ingestor = Ingestor::new(IngestConfig::default());
    let messages = Message::numbered(&docs);
    for chunk in messages.chunks(250) {
        let out = ingestor.ingest(chunk, NOW);
        assert!(out.rejected.is_empty(), "{:?}", out.rejected.first());
        let b = out.batch.expect("rows");
        ingest::for_each_recent_row(&b, |row| recent.observe(row, NOW)).expect("recent");
        table.append(b).expect("append");
        if let Some(e) = table.maintain().failed() {
            panic!("maintain: {e}");
        }
    }
    assert_eq!(table.snapshot().rows(), 3_000);
    let windows = Windows::new(WindowConfig::default()).expect("windows");
    let paths = [
        "/orders/ordersperminute",
        "/orders/popular",
        "/orders/latestorders",
        "/orders/couponslastminute",
        "/orders/toplocations",
        "/users/",
    ];
    let kept = serve(
        table.clone(),
        windows.clone(),
        Answers::Kept(Box::new(recent)),
    )
    .await;
    let rebuilt = serve(table.clone(), windows, Answers::Rebuilt).await;
    for base in [&kept, &rebuilt] {
        for path in paths {
            let sql = get(&format!("{base}{path}?source=sql")).await;
            assert_eq!(get(&format!("{base}{path}")).await, sql, "{path}");
        }
    }
    // The awkward cases are in the answers, not merely in the data.
    let popular = get(&format!("{kept}/orders/popular")).await;
    assert_eq!(
        popular["itemNames"][0]["itemName"], "ghost item",
        "{popular}"
    );
    assert_eq!(
        popular["itemNames"][0]["quantity"],
        Value::Null,
        "{popular}"
    );
    assert!(
        popular["itemNames"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["itemName"].is_null())),
        "{popular}"
    );
    let locations = get(&format!("{kept}/orders/toplocations")).await;
    assert!(
        locations["cities"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["city"].is_null())),
        "{locations}"
    );
    let latest = get(&format!("{kept}/orders/latestorders")).await;
    assert!(
        latest[0]["timestamp"].as_str() > Some(ny(NOW).as_str()),
        "orders ahead of the clock lead: {latest}"
    );
}

/// SQL statements the engine has planned or taken from its plan cache.
fn statements(engine: &SqlEngine) -> u64 {
    let stats = engine.plan_cache_stats();
    stats.hits + stats.misses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_orders_from_the_indexes_equal_sql_on_ties_the_limit_and_memory() {
    // Two customers with about 1,300 orders each (over the endpoint's 1,000), in groups of four
    // at the same millisecond (ties broken by order id), arriving shuffled.
    let mut g = Generator::new(GeneratorConfig {
        seed: 7,
        customers: 2,
    });
    let mut orders: Vec<Order> = (1..=2_600u64)
        .map(|seq| g.generate(seq, NOW - (seq as i64 / 4) * 1_000))
        .collect();
    let mut rng = Rng(0x0ddb_a11c_afe0_0001);
    for i in (1..orders.len()).rev() {
        orders.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let docs: Vec<Vec<u8>> = orders.iter().map(|o| o.to_json()).collect();
    let messages = Message::numbered(&docs);
    let dir = tempfile::tempdir().expect("tempdir");
    let indexed = open_table(&dir.path().join("indexed"));
    let fill = |table: &RealtimeTable, ingestor: &mut Ingestor, messages: &[Message<'_>]| {
        for chunk in messages.chunks(250) {
            let out = ingestor.ingest(chunk, NOW);
            assert!(out.rejected.is_empty(), "{:?}", out.rejected.first());
            table.append(out.batch.expect("rows")).expect("append");
            if let Some(e) = table.maintain().failed() {
                panic!("maintain: {e}");
            }
        }
    };
    let settle = |table: &RealtimeTable| {
        table.flush().expect("seal");
        for _ in 0..100 {
            if let Some(e) = table.maintain().failed() {
                panic!("maintain: {e}");
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    // Indexed: 2,200 orders sealed (and merged, maybe into one file), the last 400 in memory.
    let mut ingestor = Ingestor::new(IngestConfig::default());
    fill(&indexed, &mut ingestor, &messages[..2_200]);
    settle(&indexed);
    fill(&indexed, &mut ingestor, &messages[2_200..]);
    // Mixed: the first 2,200 sealed before the table had indexes, 200 sealed with them, 200 in
    // memory (SQL answers: some files have no index).
    let mixed_dir = dir.path().join("mixed");
    let mut ingestor = Ingestor::new(IngestConfig::default());
    {
        let plain = RealtimeTable::open(
            &mixed_dir,
            schema::order_schema(),
            schema::TIME_MS,
            &[schema::ORDER_ID, "customer_id"],
            table_config(),
            clock::ManualClock::new(NOW),
        )
        .expect("open table");
        fill(&plain, &mut ingestor, &messages[..2_200]);
        settle(&plain);
    }
    let mixed = open_table(&mixed_dir);
    fill(&mixed, &mut ingestor, &messages[2_200..2_400]);
    settle(&mixed);
    fill(&mixed, &mut ingestor, &messages[2_400..]);
    for table in [&indexed, &mixed] {
        let snap = table.snapshot();
        assert_eq!(snap.rows(), 2_600);
        assert!(!snap.segments.is_empty(), "sealed segments");
        assert!(snap.memory_rows > 0, "some rows still in memory");
    }
    let indexes: Vec<bool> = mixed
        .snapshot()
        .segments
        .iter()
        .map(|s| s.lookup("customer_id").is_some())
        .collect();
    assert!(
        indexes.contains(&true) && indexes.contains(&false),
        "files with and without indexes: {indexes:?}"
    );
    let windows = Windows::new(WindowConfig::default()).expect("windows");
    let (base, engine) = serve_engine(indexed, windows.clone(), Answers::Sql).await;
    let (mixed_base, mixed_engine) = serve_engine(mixed, windows, Answers::Sql).await;

    let mut customers: Vec<String> = orders
        .iter()
        .map(|o| o.customer.customer_id.to_string())
        .collect();
    customers.sort();
    customers.dedup();
    assert_eq!(customers.len(), 2);
    customers.push("nobody-has-this-id".into());
    for customer in &customers {
        let mut theirs: Vec<&Order> = orders
            .iter()
            .filter(|o| &o.customer.customer_id.to_string() == customer)
            .collect();
        theirs.sort_by(|a, b| {
            b.time_ms
                .cmp(&a.time_ms)
                .then(a.order_id.to_string().cmp(&b.order_id.to_string()))
        });
        theirs.truncate(1_000);
        let want = Value::Array(
            theirs
                .iter()
                .map(|o| json!({"order_id": o.order_id.to_string(), "order_total": dollars(cents(o.order_total)), "timestamp": ny(o.time_ms)}))
                .collect(),
        );
        let path = format!("/users/{customer}/orders");
        // From the indexes and memory: no SQL planned.
        let before = statements(&engine);
        let direct = get(&format!("{base}{path}")).await;
        assert_eq!(statements(&engine), before, "{path} planned SQL");
        assert_eq!(direct, want, "{path}");
        // SQL asked explicitly, and a table with files without indexes (SQL scans those), agree.
        assert_eq!(get(&format!("{base}{path}?source=sql")).await, want);
        assert!(statements(&engine) > before, "?source=sql asks SQL");
        let before = statements(&mixed_engine);
        assert_eq!(get(&format!("{mixed_base}{path}")).await, want, "{path}");
        assert!(
            statements(&mixed_engine) > before,
            "files without indexes: SQL"
        );
    }
    // The limit and the ties are in the answers, not merely in the data.
    let first = get(&format!("{base}/users/{}/orders", customers[0])).await;
    let rows = first.as_array().expect("rows");
    assert_eq!(rows.len(), 1_000);
    assert!(
        rows.windows(2)
            .any(|w| w[0]["timestamp"] == w[1]["timestamp"]),
        "orders at the same time"
    );
}
