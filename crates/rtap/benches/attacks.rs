//! rtap under attack and load, the real binary (release): what each SQL bomb costs in memory,
//! `/orders/overview` latency alone and while 8 heavy queries and a 1 MB query run, the CPU of
//! one dashboard viewer against 500, and normal requests while 2,000 half-open connections are
//! held. Loopback only, bounded in time.
//!
//! `cargo bench --workspace --bench attacks` (`RTAP_BENCH_ORDERS`, default 200,000 orders)

use std::io::Write;
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the command: state is 0, utime 11, stime 12; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn overview_latencies(client: &reqwest::Client, http: &str, n: usize) -> (Vec<f64>, usize) {
    let mut lat = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        let t = Instant::now();
        match client.get(format!("{http}/orders/overview")).send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (lat, failed)
}

async fn sql(client: &reqwest::Client, http: &str, q: &str) -> serde_json::Value {
    match client
        .post(format!("{http}/query/sql"))
        .json(&serde_json::json!({ "sql": q }))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

fn main() {
    let orders: u64 = std::env::var("RTAP_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = common::up_on_free_ports();
    cmd.args([
        "--rate",
        "0",
        "--max-orders",
        &orders.to_string(),
        "--seed",
        "1",
    ])
    .arg("--data-dir")
    .arg(dir.path().join("data"))
    .stderr(Stdio::null());
    let started = common::start(cmd);
    let mut child = started.child;
    let pid = child.id();
    let http = started.http.expect("http");
    let api = started.api.expect("orders API");
    let dash = started.dashboard.expect("dashboard");
    common::wait_count(&http, orders, Duration::from_secs(1_800));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::new();
    println!(
        "rtap attacks bench: {orders} orders, RSS after load {:.0} MB",
        rss_mb(pid)
    );

    // 1. /orders/overview alone, then under 8 heavy queries and a 1 MB query.
    rt.block_on(async {
        let _ = overview_latencies(&client, &http, 100).await;
        let (mut alone, _) = overview_latencies(&client, &http, 1_000).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for i in 0..8 {
            let (client, http, stop) = (client.clone(), http.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                let q = if i % 2 == 0 {
                    "SELECT customer_city, customer_state, COUNT(*), SUM(order_total) FROM orders GROUP BY 1, 2 ORDER BY 3 DESC"
                } else {
                    "SELECT itemCategories, COUNT(*) FROM orders WHERE time_ms > 0 GROUP BY 1 ORDER BY 2 DESC LIMIT 10"
                };
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = sql(&client, &http, q).await;
                    n += 1;
                }
                n
            }));
        }
        {
            let (client, http, stop) = (client.clone(), http.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                let big = format!("SELECT 1 FROM orders WHERE order_id IN ({})", "'x',".repeat(250_000));
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _ = sql(&client, &http, &big).await;
                    n += 1;
                }
                n
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (mut loaded, failed) = overview_latencies(&client, &http, 2_000).await;
        stop.store(true, Ordering::Relaxed);
        let mut queries = 0;
        for l in load {
            queries += l.await.unwrap_or(0);
        }
        println!(
            "| /orders/overview | alone | p50 {:.2} ms, p99 {:.2} ms |",
            pct(&mut alone, 0.5),
            pct(&mut alone, 0.99)
        );
        println!(
            "| /orders/overview | 8 heavy queries + a 1 MB query ({queries} answered) | p50 {:.2} ms, p99 {:.2} ms, {failed} failed |",
            pct(&mut loaded, 0.5),
            pct(&mut loaded, 0.99)
        );
    });

    // 2. Peak RSS under each SQL bomb (sampled every 20 ms while it runs).
    let bombs = [
        "SELECT range(0, 100000) FROM orders",
        "SELECT repeat(customer_name, 100000000) FROM orders",
        "SELECT array_agg(a.order_id) FROM orders a CROSS JOIN orders b",
        "SELECT a.order_id, b.order_id, COUNT(*) FROM orders a CROSS JOIN orders b GROUP BY 1, 2",
        "SELECT COUNT(*) FROM orders a CROSS JOIN orders b WHERE a.order_total > b.order_total",
        "SELECT * FROM orders",
    ];
    for bomb in bombs {
        let before = rss_mb(pid);
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut peak: f64 = 0.0;
                while !done.load(Ordering::Relaxed) {
                    peak = peak.max(rss_mb(pid));
                    std::thread::sleep(Duration::from_millis(20));
                }
                peak
            })
        };
        let t = Instant::now();
        let answer = rt.block_on(sql(&client, &http, bomb));
        done.store(true, Ordering::Relaxed);
        let peak = sampler.join().unwrap_or(0.0);
        let outcome = match answer["exceptions"][0]["errorCode"].as_i64() {
            Some(code) => format!("refused {code}"),
            None if answer["partialResult"] == true => "cut (partialResult)".to_string(),
            None => "answered".to_string(),
        };
        println!(
            "| `{bomb}` | {outcome} in {:.1} s | RSS {before:.0} -> peak {peak:.0} MB |",
            t.elapsed().as_secs_f64()
        );
    }

    // 3. CPU of 1 dashboard viewer against 500.
    let addr = dash.trim_start_matches("http://").to_string();
    let viewers = |n: usize| -> f64 {
        let streams: Vec<TcpStream> = (0..n)
            .filter_map(|_| {
                let mut s = TcpStream::connect(&addr).ok()?;
                s.write_all(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    .ok()?;
                Some(s)
            })
            .collect();
        // Drain them so the server never blocks on a full socket.
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = streams
            .into_iter()
            .map(|mut s| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    use std::io::Read;
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        let _ = s.read(&mut buf);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        let a = cpu_seconds(pid);
        std::thread::sleep(Duration::from_secs(10));
        let used = cpu_seconds(pid) - a;
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            let _ = r.join();
        }
        used
    };
    let one = viewers(1);
    let many = viewers(500);
    println!(
        "| dashboard CPU over 10 s | 1 viewer {one:.2} s | 500 viewers {many:.2} s | ratio {:.2} |",
        many / one.max(0.01)
    );

    // 4. 2,000 half-open connections held for 10 s: normal requests and checkpoints go on.
    let http_addr = http.trim_start_matches("http://").to_string();
    let held: Vec<TcpStream> = (0..2_000)
        .filter_map(|_| {
            let mut s = TcpStream::connect(&http_addr).ok()?;
            s.write_all(b"GET /orders/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .ok()?;
            Some(s)
        })
        .collect();
    let checkpoints = || -> u64 {
        common::get_json(&format!("{http}/api/status"))
            .and_then(|(_, s)| {
                s["stages"]
                    .as_array()?
                    .iter()
                    .find(|st| st["name"] == "ingest")?["detail"]["checkpoints"]
                    .as_u64()
            })
            .unwrap_or(0)
    };
    // New orders keep arriving through the orders API meanwhile, so ingest has something to
    // seal and checkpoint.
    let rows = || common::count(&http).unwrap_or(0);
    let (before, rows_before, held_n) = (checkpoints(), rows(), held.len());
    let (lat, failed, created) = rt.block_on(async {
        let client = reqwest::Client::new();
        let t = Instant::now();
        let mut all = (Vec::new(), 0, 0u64);
        while t.elapsed() < Duration::from_secs(10) {
            let (l, f) = overview_latencies(&client, &http, 20).await;
            all.0.extend(l);
            all.1 += f;
            let posted = client.post(format!("{api}/orders")).send().await;
            if posted.is_ok_and(|r| r.status().is_success()) {
                all.2 += 1;
            }
        }
        all
    });
    // The last of them reach the table within a checkpoint interval.
    std::thread::sleep(Duration::from_secs(6));
    let mut lat = lat;
    println!(
        "| {held_n} half-open connections held 10 s | {} requests ok, {failed} failed, p99 {:.2} ms | {created} orders posted, table {rows_before} -> {} rows | checkpoints {before} -> {} |",
        lat.len(),
        pct(&mut lat, 0.99),
        rows(),
        checkpoints()
    );
    drop(held);
    common::terminate(&mut child);
}
