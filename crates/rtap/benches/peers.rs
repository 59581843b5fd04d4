//! rtap's SQL against the engines a user would load the same orders into instead (issue 13):
//! `rtap backfill` writes N orders over D days (a shop's history), `rtap up` serves them (no new
//! orders, so every engine sees the same rows), and `peers.py` loads rtap's own Parquet segments
//! into DuckDB and chDB, runs the seed's query shapes on all of them interleaved, checks the
//! answers equal, and prints p50 / p99 and the ratio to the best peer.
//!
//! `cargo bench --workspace --bench peers`; RTAP_BENCH_ORDERS (default 1,000,000),
//! RTAP_BENCH_HISTORY_DAYS (default 29), RTAP_BENCH_ROUNDS (default 50). Needs RTAP_PYTHON (a
//! python with duckdb and chdb: `scripts/install-peers.sh`, which `scripts/bench.sh` runs).

use std::process::Stdio;

#[path = "../tests/common/mod.rs"]
mod common;

fn main() {
    let Some(python) = std::env::var("RTAP_PYTHON").ok().filter(|p| !p.is_empty()) else {
        println!("peers: skipped (set RTAP_PYTHON to scripts/install-peers.sh's python)");
        return;
    };
    let n = common::env_u64("RTAP_BENCH_ORDERS", 1_000_000);
    let days = common::env_u64("RTAP_BENCH_HISTORY_DAYS", 29);
    let rounds = common::env_u64("RTAP_BENCH_ROUNDS", 50);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let took = common::backfill(&data, n, days, 5);
    println!("== peers: {n} orders over {days} days, backfilled in {took:.1} s");
    // The peers read a copy of the segments the table's manifest lists: rtap merges and
    // retires files while it serves, and a peer must not see a file set that moves.
    let segments = data.join("segments").join("orders");
    let peers_dir = dir.path().join("peers");
    std::fs::create_dir_all(&peers_dir).expect("mkdir");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(segments.join("manifest.json")).expect("read the manifest"),
    )
    .expect("manifest JSON");
    let (mut parquet, mut lookups) = (0u64, 0u64);
    for s in manifest["segments"].as_array().expect("segments") {
        let file = s["file"].as_str().expect("file name");
        std::fs::copy(segments.join(file), peers_dir.join(file)).expect("copy a segment");
        parquet += s["bytes"].as_u64().unwrap_or(0);
        for l in s["lookups"].as_array().into_iter().flatten() {
            lookups += l["bytes"].as_u64().unwrap_or(0);
        }
    }
    println!(
        "== peers: on disk {:.1} B/order in Parquet segments, {:.1} B/order in lookup indexes",
        parquet as f64 / n.max(1) as f64,
        lookups as f64 / n.max(1) as f64
    );
    let mut cmd = common::up_on_free_ports();
    // No new orders (`--max-orders` counts per run): every engine sees the same rows.
    cmd.args(["--max-orders", "0", "--seed", "5", "--data-dir"])
        .arg(&data)
        .env("RTAP_LOG", "warn")
        .stderr(Stdio::inherit());
    let mut rtap = common::start(cmd);
    let http = rtap.http.clone().expect("analytics URL");
    common::wait_count(&http, n, std::time::Duration::from_secs(600));
    let status = std::process::Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers.py"))
        .arg(format!("{http}/query/sql"))
        .arg(&peers_dir)
        .arg(rounds.to_string())
        .status()
        .expect("run peers.py");
    common::terminate(&mut rtap.child);
    assert!(status.success(), "peers.py failed: {status}");
}
