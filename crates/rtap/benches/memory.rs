//! Memory and disk of the real binary over time (issue 12).
//!
//! 1. Fill: `rtap up --rate 0 --max-orders N` on a fresh directory. RSS and stored orders are
//!    sampled every 0.5 s; printed at each tenth of N, with the peak (VmHWM) and the end-to-end
//!    rate; then RSS after 30 s idle, and the bytes on disk of each part per order.
//! 2. Restart on the same directory: RSS once all N rows answer SQL, and after 30 s idle.
//! 3. History: `rtap backfill --orders N --days D` on a fresh directory (event times spread over
//!    D days, as a shop's history is: the dedup horizon then holds a day of ids, not all N), then
//!    `rtap up` on it: RSS once all N rows answer SQL and after 30 s idle.
//! 4. Soak: `rtap up --rate R` for S seconds on a fresh directory with a short retention (table
//!    and order store), so retention runs many times: every minute RSS, disk of the table, the
//!    order store, the dedup log and the dead letters, open files and segments. Once the
//!    retention is reached, memory and disk must stay flat.
//!
//! `cargo bench --workspace --bench memory`; RTAP_BENCH_ORDERS (default 1,000,000),
//! RTAP_SOAK_SECS (default 1800), RTAP_SOAK_RATE (orders/s, default 5000),
//! RTAP_SOAK_RETENTION_S (default 300), RTAP_BENCH_HISTORY_DAYS (default 29; below 30, the retention; 0 skips the
//! history). RTAP_SOAK_SECS=0 skips the soak.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

/// A `/proc/PID/status` field in MB (VmRSS, VmHWM).
fn status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Bytes under `path` (a file or a directory tree).
fn bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|d| d.flatten().map(|e| bytes(&e.path())).sum())
        .unwrap_or(0)
}

/// A gauge from `/metrics`.
fn metric(http: &str, name: &str) -> Option<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let text = rt.block_on(async {
        reqwest::get(format!("{http}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })?;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn start(data: &Path, args: &[&str]) -> (common::Running, String) {
    let mut cmd = common::up_on_free_ports();
    cmd.arg("--data-dir")
        .arg(data)
        .args(args)
        .env("RTAP_LOG", "warn")
        .stderr(Stdio::inherit());
    let s = common::start(cmd);
    (s.child, s.http.expect("analytics URL"))
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn disk_line(data: &Path, rows: u64) -> String {
    let per = |b: u64| {
        if rows > 0 {
            b as f64 / rows as f64
        } else {
            0.0
        }
    };
    let store = bytes(&data.join("orders.redb"));
    let table = bytes(&data.join("segments"));
    let dedup = bytes(&data.join("dedup"));
    let dead = bytes(&data.join("deadletter"));
    format!(
        "order store {:.1} MB ({:.0} B/order), table {:.1} MB ({:.0} B/order), dedup log {:.1} MB, dead letters {:.1} MB",
        mb(store),
        per(store),
        mb(table),
        per(table),
        mb(dedup),
        mb(dead)
    )
}

fn fill(n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let started = Instant::now();
    let (mut child, http) = start(
        &data,
        &["--rate", "0", "--seed", "1", "--max-orders", &n.to_string()],
    );
    let pid = child.id();
    println!("== fill: rtap up --rate 0 --max-orders {n}");
    let mut next_mark = n / 10;
    let mut peak_rss: f64 = 0.0;
    loop {
        let rows = common::count(&http).unwrap_or(0);
        let rss = status_mb(pid, "VmRSS:");
        peak_rss = peak_rss.max(rss);
        while rows >= next_mark && next_mark <= n && next_mark > 0 {
            println!(
                "  {:>10} orders  {:6.1} s  RSS {:7.1} MB",
                next_mark,
                started.elapsed().as_secs_f64(),
                rss
            );
            next_mark += n / 10;
        }
        if rows >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(7200),
            "fill took over 2 h"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "  {n} orders generated, stored and ingested in {took:.1} s: {:.0} orders/s end to end; peak RSS (VmHWM) {:.1} MB",
        n as f64 / took,
        status_mb(pid, "VmHWM:")
    );
    std::thread::sleep(Duration::from_secs(30));
    println!(
        "  idle 30 s later: RSS {:.1} MB; {}",
        status_mb(pid, "VmRSS:"),
        disk_line(&data, n)
    );
    stop(&mut child);

    println!("== restart on the same {n} orders");
    serve_idle(&data, n, "1");
}

/// `rtap up` on a directory holding `n` orders, generating none: RSS once all of them answer
/// SQL, and after 30 s idle.
fn serve_idle(data: &Path, n: u64, seed: &str) {
    let started = Instant::now();
    let (mut child, http) = start(data, &["--rate", "0", "--seed", seed, "--max-orders", "0"]);
    let pid = child.id();
    while common::count(&http) != Some(n) {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "start took over 10 min"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "  all rows answer SQL after {:.2} s, RSS {:.1} MB",
        started.elapsed().as_secs_f64(),
        status_mb(pid, "VmRSS:")
    );
    std::thread::sleep(Duration::from_secs(30));
    println!(
        "  idle 30 s later: RSS {:.1} MB, ids in the dedup horizon {:.0}",
        status_mb(pid, "VmRSS:"),
        metric(&http, "rtap_dedup_ids").unwrap_or(f64::NAN)
    );
    stop(&mut child);
}

fn history(n: u64, days: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    println!("== history: rtap backfill --orders {n} --days {days}, then rtap up on it");
    let took = common::backfill(&data, n, days, 3);
    println!(
        "  backfilled in {took:.1} s ({:.0} orders/s); {}",
        n as f64 / took,
        disk_line(&data, n)
    );
    serve_idle(&data, n, "3");
}

fn soak(secs: u64, rate: u64, retention_s: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("soak.toml");
    let retention_ms = retention_s * 1000;
    std::fs::write(
        &config,
        format!(
            "[table]\nretention_ms = {retention_ms}\n[ingest]\nmax_age_ms = {retention_ms}\ndedup_horizon_ms = {retention_ms}\n"
        ),
    )
    .expect("config");
    println!(
        "== soak: rtap up --rate {rate} for {secs} s, retention {retention_s} s (table, order store, dedup horizon)"
    );
    let (mut child, http) = start(
        &data,
        &[
            "--rate",
            &rate.to_string(),
            "--seed",
            "2",
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
    );
    let pid = child.id();
    let started = Instant::now();
    println!("  min   RSS MB  rows held  segments  files  disk");
    let mut minute = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(60).min(Duration::from_secs(secs)));
        minute += 1;
        let rows = metric(&http, "rtap_table_rows").unwrap_or(0.0) as u64;
        println!(
            "  {minute:>3}  {:7.1}  {rows:>9}  {:>8}  {:>5}  {}",
            status_mb(pid, "VmRSS:"),
            metric(&http, "rtap_table_segments").unwrap_or(0.0),
            open_files(pid),
            disk_line(&data, rows)
        );
    }
    println!("  peak RSS (VmHWM) {:.1} MB", status_mb(pid, "VmHWM:"));
    stop(&mut child);
}

fn main() {
    let n = common::env_u64("RTAP_BENCH_ORDERS", 1_000_000);
    if n > 0 {
        fill(n);
        let days = common::env_u64("RTAP_BENCH_HISTORY_DAYS", 29);
        if days > 0 {
            history(n, days);
        }
    }
    let secs = common::env_u64("RTAP_SOAK_SECS", 1800);
    if secs > 0 {
        soak(
            secs,
            common::env_u64("RTAP_SOAK_RATE", 5000),
            common::env_u64("RTAP_SOAK_RETENTION_S", 300),
        );
    }
}
