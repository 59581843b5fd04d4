//! rtap with a real Kafka-protocol broker (tansu, SQLite storage; `RTAP_TANSU` names the binary,
//! scripts/install-tansu.sh builds it): produce rate, consume-to-table rate (against a plain
//! librdkafka consumer reading the same topic, to tell whether rtap or the broker is the
//! limit), and end-to-end freshness at 1,000 orders/s, from produce to visible in SQL and in the
//! rolling windows; the same freshness without Kafka (`rtap up`) for comparison.
//!
//! `cargo bench --workspace --bench kafka` (`RTAP_BENCH_ORDERS`, default 200,000;
//! `RTAP_BENCH_TANSU_STORAGE=memory://tansu/` for tansu's in-memory storage)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use common::rtap;

/// Starts an rtap command and returns it with the analytics URL from its banner.
fn start(mut cmd: Command) -> (common::Running, String) {
    cmd.stderr(Stdio::null());
    let s = common::start(cmd);
    (s.child, s.http.expect("analytics URL"))
}

fn sql(rt: &tokio::runtime::Runtime, http: &str, q: &str) -> Option<serde_json::Value> {
    rt.block_on(async {
        let v: serde_json::Value = reqwest::Client::new()
            .post(format!("{http}/query/sql"))
            .json(&serde_json::json!({ "sql": q }))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(v["resultTable"]["rows"][0][0].clone())
    })
}

fn status_stream_time(rt: &tokio::runtime::Runtime, http: &str) -> Option<i64> {
    rt.block_on(async {
        let v: serde_json::Value = reqwest::get(format!("{http}/api/status"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["stages"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "windows")?["detail"]["streamTimeMs"]
            .as_i64()
    })
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Samples, every 20 ms for `secs`, how old the newest order visible in SQL and in the windows
/// is; prints p50/p99.
fn freshness(rt: &tokio::runtime::Runtime, http: &str, label: &str, secs: u64) {
    let (mut in_sql, mut in_windows) = (Vec::new(), Vec::new());
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if let Some(max) = sql(rt, http, "SELECT MAX(time_ms) FROM orders").and_then(|v| v.as_i64())
        {
            in_sql.push((chrono::Utc::now().timestamp_millis() - max) as f64);
        }
        if let Some(t) = status_stream_time(rt, http) {
            in_windows.push((chrono::Utc::now().timestamp_millis() - t) as f64);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "{label}: age of the newest order at 1,000 orders/s: SQL p50 {:.0} ms p99 {:.0} ms; windows p50 {:.0} ms p99 {:.0} ms ({} samples; includes up to 1 ms between orders)",
        pct(&mut in_sql, 0.5),
        pct(&mut in_sql, 0.99),
        pct(&mut in_windows, 0.5),
        pct(&mut in_windows, 0.99),
        in_sql.len()
    );
}

fn main() {
    let n: u64 = std::env::var("RTAP_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = common::Broker::start_with(
        &std::env::var("RTAP_BENCH_TANSU_STORAGE").unwrap_or_else(|_| "sqlite://tansu.db".into()),
    );
    let addr = broker.addr();

    // Produce rate.
    let started = Instant::now();
    let status = rtap()
        .args([
            "produce",
            "--kafka",
            &addr,
            "--from",
            "generator",
            "--rate",
            "0",
            "--seed",
            "1",
        ])
        .args(["--max-orders", &n.to_string(), "--data-dir"])
        .arg(dir.path().join("producer"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("rtap produce");
    assert!(status.success());
    let secs = started.elapsed().as_secs_f64();
    println!("produce: {n} orders generated, sent and confirmed (acks=all) in {secs:.1} s = {:.0} orders/s", n as f64 / secs);

    // A plain librdkafka consumer reading the whole topic: the broker's delivery rate.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "bench-raw")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["FakeEcommOrders"]).expect("subscribe");
    let started = Instant::now();
    let mut got = 0u64;
    while got < n && started.elapsed() < Duration::from_secs(600) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            got += 1;
        }
    }
    let raw = got as f64 / started.elapsed().as_secs_f64();
    println!("plain consumer (no processing): {got} messages at {raw:.0} messages/s");
    drop(consumer);

    // rtap consuming into the table.
    let started = Instant::now();
    let mut serve_cmd = rtap();
    serve_cmd
        .args([
            "serve",
            "--kafka",
            &addr,
            "--http-port",
            "0",
            "--dashboard-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"));
    let (mut serve, http) = start(serve_cmd);
    while sql(&rt, &http, "SELECT COUNT(*) FROM orders").and_then(|v| v.as_u64()) != Some(n) {
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "not all consumed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rtap serve: {n} orders consumed into the table in {secs:.1} s = {:.0} orders/s ({:.0}% of the plain consumer's rate)",
        n as f64 / secs,
        100.0 * (n as f64 / secs) / raw
    );

    // Freshness through Kafka at 1,000 orders/s.
    let mut producer = rtap()
        .args([
            "produce",
            "--kafka",
            &addr,
            "--from",
            "generator",
            "--rate",
            "1000",
            "--seed",
            "2",
            "--data-dir",
        ])
        .arg(dir.path().join("producer2"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(common::Running)
        .expect("rtap produce");
    std::thread::sleep(Duration::from_secs(3));
    freshness(
        &rt,
        &http,
        "through Kafka (produce -> broker -> rtap serve)",
        20,
    );
    stop(&mut producer);
    stop(&mut serve);
    broker.stop();

    // The same without Kafka.
    let mut up_cmd = common::up_on_free_ports();
    up_cmd
        .args(["--rate", "1000", "--data-dir"])
        .arg(dir.path().join("embedded"));
    let (mut up, http) = start(up_cmd);
    std::thread::sleep(Duration::from_secs(3));
    freshness(&rt, &http, "embedded (rtap up, in process)", 20);
    stop(&mut up);
}
