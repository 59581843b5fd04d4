//! The realtime table's budgets (issue 3), measured on this machine:
//!
//! - decode + append throughput (generated JSON -> ingest -> table), orders/s;
//! - p50 / p99 latency of every analytics endpoint over HTTP with 1 M and 10 M stored orders
//!   (event times 32 ms apart, the clock of the endpoints stopped where they end, so "the last
//!   minute" holds ~1,900 orders), the fixed endpoints both from the state kept at ingest (rebuilt
//!   from the table, as at a restart) and from SQL (`?source=sql`);
//! - RSS of the process with the table loaded and after the queries;
//! - freshness: from handing one order to ingest until SQL sees it, at 1,000 orders/s.
//!
//! `cargo bench -p server --bench analytics` (all sizes), or set `RTAP_BENCH_SIZES=1000000` for
//! fewer. The table is written under a temporary directory that is removed at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest::{IngestConfig, Ingestor, Message, Position};
use orders::{Generator, GeneratorConfig};
use sql::{SqlConfig, SqlEngine};
use table::RealtimeTable;

const STEP_MS: i64 = 32;
const CHUNK: usize = 16_384;
const REQUESTS: usize = 200;

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

mod common;

fn open(dir: &std::path::Path) -> Arc<RealtimeTable> {
    Arc::new(common::open_orders_table(dir))
}

/// Generates `n` orders ending now and ingests them; returns (ingest seconds, generate seconds,
/// the last order's time).
fn load(table: &RealtimeTable, windows: &mut rolling::Windows, n: u64) -> (f64, f64, i64) {
    let mut g = Generator::new(GeneratorConfig {
        seed: 77,
        ..GeneratorConfig::default()
    });
    let mut ingestor = Ingestor::new(IngestConfig::default());
    let start = now_ms() - n as i64 * STEP_MS;
    let mut ingest_secs = 0.0;
    let mut gen_secs = 0.0;
    let mut seq = 1u64;
    while seq <= n {
        let t = Instant::now();
        let docs: Vec<Vec<u8>> = (seq..(seq + CHUNK as u64).min(n + 1))
            .map(|s| g.generate(s, start + s as i64 * STEP_MS).to_json())
            .collect();
        gen_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let messages: Vec<Message<'_>> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| Message {
                position: Position {
                    partition: 0,
                    offset: seq as i64 + i as i64,
                },
                payload: d,
                record_time_ms: None,
            })
            .collect();
        let out = ingestor.ingest(&messages, now_ms());
        if let Some(b) = out.batch {
            for f in ingest::order_facts(&b) {
                windows.observe(
                    f.time_ms,
                    rolling::Metrics::order(f.order_total, f.fraud, f.delivered, f.refunded),
                );
            }
            table.append(b).expect("append");
        }
        if let Some(e) = table.maintain().failed() {
            panic!("maintain: {e}");
        }
        ingest_secs += t.elapsed().as_secs_f64();
        seq += docs.len() as u64;
    }
    (ingest_secs, gen_secs, start + n as i64 * STEP_MS)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

async fn endpoints(
    table: Arc<RealtimeTable>,
    windows: Arc<std::sync::Mutex<rolling::Windows>>,
    last_ms: i64,
    label: &str,
) {
    let clock = clock::ManualClock::new(last_ms + 1);
    let engine = Arc::new(
        SqlEngine::new(table.clone(), SqlConfig::default(), clock.clone()).expect("engine"),
    );
    let recent = Arc::new(server::recent::RecentAnswers::default());
    let t = Instant::now();
    server::recent::rebuild(&engine, &recent, last_ms + 1)
        .await
        .expect("rebuild the recent answers");
    println!(
        "{label}: recent answers rebuilt from the table in {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let live = Arc::new(server::overview::Live {
        windows,
        clock,
        recent: Some(recent.clone()),
    });
    let app =
        server::analytics::router(engine, Some(recent), None).merge(server::overview::router(live));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let latest: serde_json::Value = client
        .get(format!("{base}/orders/latestorders"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let customer = latest[0]["customerId"]
        .as_str()
        .unwrap_or("none")
        .to_string();
    let paths = [
        "/orders/overview".to_string(),
        "/orders/overview/series".to_string(),
        "/orders/overview2".to_string(),
        "/orders/ordersperminute".to_string(),
        "/orders/ordersperminute?source=sql".to_string(),
        "/orders/popular".to_string(),
        "/orders/popular?source=sql".to_string(),
        "/orders/latestorders".to_string(),
        "/orders/latestorders?source=sql".to_string(),
        "/orders/couponslastminute".to_string(),
        "/orders/couponslastminute?source=sql".to_string(),
        "/orders/toplocations".to_string(),
        "/orders/toplocations?source=sql".to_string(),
        "/users/".to_string(),
        "/users/?source=sql".to_string(),
        format!("/users/{customer}/orders"),
    ];
    // Both sources must agree before their speeds mean anything.
    for path in paths.iter().filter(|p| p.ends_with("?source=sql")) {
        let get = |url: String| {
            let client = client.clone();
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .expect("get")
                    .json::<serde_json::Value>()
                    .await
                    .expect("json")
            }
        };
        let kept = path.trim_end_matches("?source=sql");
        assert_eq!(
            get(format!("{base}{kept}")).await,
            get(format!("{base}{path}")).await,
            "{kept}: the recent answer differs from SQL's"
        );
    }
    println!("{label}: endpoint latency over HTTP ({REQUESTS} requests each after 10 warm-up)");
    for path in &paths {
        let mut lat = Vec::with_capacity(REQUESTS);
        for i in 0..REQUESTS + 10 {
            let t = Instant::now();
            let resp = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("request");
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            let _ = resp.bytes().await.expect("body");
            if i >= 10 {
                lat.push(t.elapsed());
            }
        }
        lat.sort();
        println!(
            "  {path:<40} p50 {:>7.2} ms   p99 {:>7.2} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }
}

async fn freshness(table: Arc<RealtimeTable>) {
    let engine =
        SqlEngine::new(table.clone(), SqlConfig::default(), clock::system()).expect("engine");
    let mut g = Generator::new(GeneratorConfig {
        seed: 991,
        ..GeneratorConfig::default()
    });
    let mut ingestor = Ingestor::new(IngestConfig::default());
    let mut lat = Vec::new();
    let started = Instant::now();
    for i in 0..2_000u64 {
        // 1,000 orders/s: order i is due at i ms.
        let due = Duration::from_millis(i);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let order = g.generate(i + 1, now_ms());
        let json = order.to_json();
        let t = Instant::now();
        let message = Message {
            position: Position {
                partition: 0,
                offset: i as i64,
            },
            payload: &json,
            record_time_ms: None,
        };
        let out = ingestor.ingest(&[message], now_ms());
        table.append(out.batch.expect("row")).expect("append");
        if i % 100 == 0 {
            let q = format!(
                "SELECT COUNT(*) FROM orders WHERE time_ms > ago('PT5S') AND order_id = '{}'",
                order.order_id
            );
            let r = engine.run(&q, Vec::new()).await.expect("query");
            let n = r.batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .map_or(0, |a| a.value(0));
            assert_eq!(n, 1, "the order is visible");
            lat.push(t.elapsed());
        }
    }
    lat.sort();
    println!(
        "freshness at 1,000 orders/s (ingest one order, then SQL finds it): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} probes)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        lat.len()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<u64> = std::env::var("RTAP_BENCH_SIZES")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for n in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = open(dir.path());
        let mut windows =
            rolling::Windows::new(rolling::WindowConfig::default()).expect("window config");
        let (ingest_secs, gen_secs, last_ms) = load(&table, &mut windows, n);
        let windows = Arc::new(std::sync::Mutex::new(windows));
        println!(
            "{n} orders: decode+append {:.0} orders/s ({ingest_secs:.1} s; generating them took {gen_secs:.1} s more)",
            n as f64 / ingest_secs
        );
        let t = Instant::now();
        for _ in 0..600 {
            if let Some(e) = table.maintain().failed() {
                panic!("maintain: {e}");
            }
            if table.snapshot().memory_rows < 100_000 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let snap = table.snapshot();
        let bytes: u64 = snap.segments.iter().map(|s| s.entry.bytes).sum();
        let memory_bytes: usize = snap.memory.iter().map(|b| b.get_array_memory_size()).sum();
        println!(
            "  in-memory rows hold {:.0} MB of Arrow buffers ({:.0} bytes/row)",
            memory_bytes as f64 / 1e6,
            memory_bytes as f64 / snap.memory_rows.max(1) as f64
        );
        println!(
            "  table: {} rows, {} sealed segments ({:.0} MB on disk, {:.0} bytes/order), {} rows in memory; settled in {:.1} s; RSS {:.0} MB",
            snap.rows(),
            snap.segments.len(),
            bytes as f64 / 1e6,
            bytes as f64 / snap.rows().max(1) as f64,
            snap.memory_rows,
            t.elapsed().as_secs_f64(),
            rss_mb()
        );
        drop(snap);
        endpoints(table.clone(), windows, last_ms, &format!("{n} orders")).await;
        println!("  RSS after queries: {:.0} MB", rss_mb());
        if n == 1_000_000 {
            freshness(table.clone()).await;
        }
    }
}
