//! Checkpoints and restarts of the real binary: `rtap up` generates and ingests N orders as fast
//! as it can, then is stopped (SIGTERM) and started again. Reports the ingest rate, the
//! checkpoint cost while ingesting (from rtap's debug log), the size of the checkpoint files,
//! the clean-stop time (last seal and checkpoint) and the restart time until the restored table
//! answers SQL with all N rows.
//!
//! `cargo bench --workspace --bench restart` (N = 1,000,000; `RTAP_BENCH_ORDERS=10000000` for 10 M)

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

fn start(data: &Path, max_orders: u64, log: Arc<Mutex<Vec<String>>>) -> (common::Running, String) {
    let mut cmd = common::up_on_free_ports();
    cmd.args(["--rate", "0"])
        .args([
            "--seed",
            "1",
            "--max-orders",
            &max_orders.to_string(),
            "--data-dir",
        ])
        .arg(data)
        .env("RTAP_LOG", "info,rtap::pipeline=debug")
        .stderr(Stdio::piped());
    // Stderr (the log) is read while the banner is: take it before the banner is awaited.
    let started = {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn rtap");
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = log.lock() {
                    l.push(strip_ansi(&line));
                }
            }
        });
        common::read_banner(child)
    };
    (started.child, started.http.expect("analytics URL"))
}

/// The log's colour codes removed (`us=` is written as `ESC[3mus ESC[0m=`...).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn count(rt: &tokio::runtime::Runtime, http: &str) -> Option<u64> {
    rt.block_on(async {
        let v: serde_json::Value = reqwest::Client::new()
            .post(format!("{http}/query/sql"))
            .json(&serde_json::json!({"sql": "SELECT COUNT(*) FROM orders"}))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["resultTable"]["rows"][0][0].as_u64()
    })
}

fn wait_for(rt: &tokio::runtime::Runtime, http: &str, n: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    while count(rt, http) != Some(n) {
        assert!(started.elapsed() < limit, "table did not reach {n} rows");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

fn field(line: &str, name: &str) -> Option<u64> {
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn stop(child: &mut Child) -> Duration {
    let started = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "rtap exited with {status}");
    started.elapsed()
}

fn main() {
    let n: u64 = std::env::var("RTAP_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log = Arc::new(Mutex::new(Vec::new()));

    let (mut child, http) = start(&data, n, log.clone());
    let ingest = wait_for(&rt, &http, n, Duration::from_secs(3600));
    println!(
        "generate+store+ingest {n} orders: {:.1} s ({:.0} orders/s end to end)",
        ingest.as_secs_f64(),
        n as f64 / ingest.as_secs_f64()
    );
    let stop_time = stop(&mut child);
    let lines = log.lock().map(|l| l.clone()).unwrap_or_default();
    let mut us: Vec<u64> = lines
        .iter()
        .filter(|l| l.contains("checkpoint written"))
        .filter_map(|l| field(l, "us"))
        .collect();
    let last_bytes = lines
        .iter()
        .rev()
        .find(|l| l.contains("checkpoint written"))
        .and_then(|l| field(l, "bytes"))
        .unwrap_or(0);
    us.sort_unstable();
    if !us.is_empty() {
        println!(
            "checkpoints while ingesting: {} written, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            us.len(),
            us[us.len() / 2] as f64 / 1e3,
            us[(us.len() - 1) * 99 / 100] as f64 / 1e3,
            us[us.len() - 1] as f64 / 1e3
        );
    }
    let dedup_bytes = dir_bytes(&data.join("dedup"));
    println!(
        "checkpoint files: checkpoint.json {} B, dedup log {:.1} MB ({} ids); table {:.1} MB on disk",
        std::fs::metadata(data.join("checkpoint.json")).map_or(0, |m| m.len()),
        dedup_bytes as f64 / 1e6,
        dedup_bytes / 20,
        dir_bytes(&data.join("segments").join("orders")) as f64 / 1e6
    );
    let _ = last_bytes;
    println!(
        "clean stop (drain, seal, last checkpoint): {:.2} s",
        stop_time.as_secs_f64()
    );

    let started = Instant::now();
    let (mut child, http) = start(&data, 0, log.clone());
    let banner = started.elapsed();
    wait_for(&rt, &http, n, Duration::from_secs(600));
    println!(
        "restart: serving after {:.2} s (checkpoint restored, {} segment checksums verified), all {n} rows answer SQL after {:.2} s",
        banner.as_secs_f64(),
        std::fs::read_dir(data.join("segments").join("orders"))
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".parquet")).count())
            .unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    stop(&mut child);
}
