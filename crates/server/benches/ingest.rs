//! Ingest at the machine's limit (issue 12), beside DuckDB loading the same orders.
//!
//! `RTAP_BENCH_ORDERS` orders (default 1,000,000, event times 32 ms apart ending now) are
//! generated once and written as JSON lines to a temporary file. Then, in one run:
//!
//! - **rtap**: the file is read in chunks of 16,384 lines and each chunk goes through the real
//!   ingest path (parse and Arrow building on every core, dedup, the rolling windows, the
//!   table's append with its background seals and merges) until everything is flushed to
//!   Parquet; the time is split into reading the file, decode + dedup + Arrow, windows, the
//!   recent answers (`rolling::Recent`), and append + housekeeping + the final flush.
//! - **DuckDB** (when `RTAP_PYTHON` names a python with duckdb, as `scripts/install-peers.sh`
//!   prints; `scripts/bench.sh` sets it): `CREATE TABLE orders AS SELECT * FROM
//!   read_json('orders.jsonl')` into a database file, then `CHECKPOINT`.
//!
//! Before those, dedup alone: `RTAP_BENCH_DEDUP_IDS` (default 10,000,000) random ids over 24 h
//! of event time inserted and looked up again, with the memory they hold (0 skips it).
//!
//! Both report orders/s and bytes on disk, and rtap's rate is given as a ratio to DuckDB's. The
//! work is not the same: DuckDB parses, types and stores every field of the JSON (shipments
//! included); rtap keeps the table's columns (flattened, derived) and skips the rest (which
//! `rtap up` keeps in its order store, not measured here). Event times are 32 ms apart, so more
//! than about 80 M orders would reach past the default retention.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use ingest::{IngestConfig, Ingestor, Message, Position};
use orders::{Generator, GeneratorConfig};

mod common;

/// The allocator the rtap binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STEP_MS: i64 = 32;
const CHUNK: usize = 16_384;

/// Reads up to `CHUNK` lines.
fn read_chunk(lines: &mut impl BufRead) -> Vec<Vec<u8>> {
    let mut docs: Vec<Vec<u8>> = Vec::with_capacity(CHUNK);
    for _ in 0..CHUNK {
        let mut line = Vec::with_capacity(4096);
        if lines.read_until(b'\n', &mut line).expect("read") == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        docs.push(line);
    }
    docs
}

fn messages(docs: &[Vec<u8>], first_offset: i64) -> Vec<Message<'_>> {
    docs.iter()
        .enumerate()
        .map(|(i, d)| Message {
            position: Position {
                partition: 0,
                offset: first_offset + i as i64,
            },
            payload: d,
            record_time_ms: None,
        })
        .collect()
}

/// Decode + dedup + Arrow alone (nothing appended, no seals beside it) over the file's first
/// `limit` orders, read into memory first: orders/s.
fn decode_only(src: &Path, limit: usize) -> (usize, f64) {
    let mut lines = BufReader::with_capacity(1 << 20, std::fs::File::open(src).expect("open"));
    let mut chunks = Vec::new();
    let mut n = 0;
    while n < limit {
        let docs = read_chunk(&mut lines);
        if docs.is_empty() {
            break;
        }
        n += docs.len();
        chunks.push(docs);
    }
    let mut ingestor = Ingestor::new(IngestConfig::default());
    let started = Instant::now();
    let mut offset = 0;
    for docs in &chunks {
        let out = ingestor.ingest(&messages(docs, offset), now_ms());
        assert!(out.rejected.is_empty());
        offset += docs.len() as i64;
        std::hint::black_box(out.batch);
    }
    (n, n as f64 / started.elapsed().as_secs_f64())
}

/// DuckDB's side of the comparison: loads the JSON lines into a native table and prints
/// `rows seconds bytes`.
const DUCKDB_LOAD: &str = r#"
import os, sys, time, duckdb
src, db = sys.argv[1], sys.argv[2]
t = time.perf_counter()
con = duckdb.connect(db)
con.execute("SET enable_progress_bar = false")
con.execute("CREATE TABLE orders AS SELECT * FROM read_json(?, format = 'newline_delimited')", [src])
con.execute("CHECKPOINT")
secs = time.perf_counter() - t
rows = con.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
con.close()
size = sum(os.path.getsize(os.path.join(os.path.dirname(db), f)) for f in os.listdir(os.path.dirname(db)))
print(rows, secs, size)
"#;

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Writes `n` generated orders as JSON lines; returns the file's bytes.
fn write_orders(path: &Path, n: u64) -> u64 {
    let mut g = Generator::new(GeneratorConfig {
        seed: 77,
        ..GeneratorConfig::default()
    });
    let start = now_ms() - n as i64 * STEP_MS;
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create"));
    for seq in 1..=n {
        out.write_all(&g.generate(seq, start + seq as i64 * STEP_MS).to_json())
            .expect("write");
        out.write_all(b"\n").expect("write");
    }
    out.flush().expect("flush");
    std::fs::metadata(path).expect("stat").len()
}

struct RtapRun {
    rows: u64,
    secs: f64,
    read_secs: f64,
    decode_secs: f64,
    windows_secs: f64,
    recent_secs: f64,
    append_secs: f64,
    table_bytes: u64,
    dir_bytes: u64,
}

fn rtap_load(src: &Path, dir: &Path) -> RtapRun {
    let table = common::open_orders_table(dir);
    let mut windows = rolling::Windows::new(rolling::WindowConfig::default()).expect("windows");
    let mut recent = rolling::Recent::default();
    let mut ingestor = Ingestor::new(IngestConfig::default());
    let mut lines = BufReader::with_capacity(1 << 20, std::fs::File::open(src).expect("open"));
    let (mut read_secs, mut decode_secs, mut windows_secs, mut append_secs) = (0.0, 0.0, 0.0, 0.0);
    let mut recent_secs = 0.0;
    let mut offset = 0i64;
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let docs = read_chunk(&mut lines);
        read_secs += t.elapsed().as_secs_f64();
        if docs.is_empty() {
            break;
        }
        let t = Instant::now();
        let messages = messages(&docs, offset);
        offset += docs.len() as i64;
        let out = ingestor.ingest(&messages, now_ms());
        assert!(
            out.rejected.is_empty(),
            "rejected: {:?}",
            out.rejected.first()
        );
        decode_secs += t.elapsed().as_secs_f64();
        let Some(batch) = out.batch else { continue };
        let t = Instant::now();
        for f in ingest::order_facts(&batch) {
            windows.observe(
                f.time_ms,
                rolling::Metrics::order(f.order_total, f.fraud, f.delivered, f.refunded),
            );
        }
        windows_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let now = now_ms();
        ingest::for_each_recent_row(&batch, |row| recent.observe(row, now)).expect("recent");
        recent_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        table.append(batch).expect("append");
        if let Some(e) = table.maintain().failed() {
            panic!("maintain: {e}");
        }
        append_secs += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    table.flush().expect("flush");
    append_secs += t.elapsed().as_secs_f64();
    let secs = started.elapsed().as_secs_f64();
    let snap = table.snapshot();
    let rows = snap.rows();
    // The live segments (files a merge replaced wait out a grace period before deletion).
    let table_bytes = snap.segments.iter().map(|s| s.entry.bytes).sum();
    RtapRun {
        rows,
        secs,
        read_secs,
        decode_secs,
        windows_secs,
        recent_secs,
        append_secs,
        table_bytes,
        dir_bytes: dir_bytes(dir),
    }
}

/// DuckDB loading the same file: (rows, seconds, bytes on disk), or why it did not run.
fn duckdb_load(python: &str, src: &Path, dir: &Path) -> Result<(u64, f64, u64), String> {
    let db = dir.join("orders.duckdb");
    let out = Command::new(python)
        .arg("-c")
        .arg(DUCKDB_LOAD)
        .arg(src)
        .arg(&db)
        .output()
        .map_err(|e| format!("{python}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The last line is the answer (DuckDB may print progress before it).
    let text = stdout.lines().last().unwrap_or_default().to_string();
    let mut fields = text.split_whitespace();
    let mut next = || {
        fields
            .next()
            .ok_or_else(|| format!("unexpected output: {text}"))
    };
    let rows = next()?.parse().map_err(|e| format!("rows: {e}"))?;
    let secs = next()?.parse().map_err(|e| format!("seconds: {e}"))?;
    let bytes = next()?.parse().map_err(|e| format!("bytes: {e}"))?;
    Ok((rows, secs, bytes))
}

/// This process's resident memory in bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Dedup alone: `ids` random ids with event times spread evenly over the default 24 h horizon
/// (so every generation is in use), inserted, then all looked up again as re-deliveries.
fn dedup_only(ids: u64) {
    if ids == 0 {
        return;
    }
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let config = IngestConfig::default();
    let start_ms = now_ms() - config.dedup_horizon_ms;
    let step = config.dedup_horizon_ms as f64 / ids as f64;
    let keys: Vec<(u128, i64)> = (0..ids)
        .map(|i| {
            let id = (u128::from(next()) << 64) | u128::from(next());
            (id, start_ms + (i as f64 * step) as i64)
        })
        .collect();
    let before = rss_bytes();
    // A cap above the ids, so every one is still there for the re-delivery pass.
    let cap = config.dedup_max_entries.max(ids as usize);
    let mut dedup = ingest::Dedup::new(config.dedup_horizon_ms, cap);
    let t = Instant::now();
    for &(id, time_ms) in &keys {
        assert!(dedup.insert(id, time_ms));
    }
    let insert_secs = t.elapsed().as_secs_f64();
    let held = rss_bytes().saturating_sub(before);
    let t = Instant::now();
    for &(id, time_ms) in &keys {
        assert!(!dedup.insert(id, time_ms), "a re-delivery is a duplicate");
    }
    let lookup_secs = t.elapsed().as_secs_f64();
    println!(
        "dedup alone, {ids} ids over 24 h of event time: insert {:.0} ns/id, re-delivery {:.0} ns/id, {} ids held in {:.1} MB of RSS ({:.1} B/id)",
        insert_secs * 1e9 / ids as f64,
        lookup_secs * 1e9 / ids as f64,
        dedup.len(),
        held as f64 / 1e6,
        held as f64 / ids as f64
    );
    // What a start does with the checkpoint's records.
    let records = dedup.all_records();
    drop(dedup);
    let t = Instant::now();
    let mut restored = ingest::Dedup::new(config.dedup_horizon_ms, cap);
    restored.restore(&records, i64::MAX);
    let restore_secs = t.elapsed().as_secs_f64();
    drop(records);
    println!(
        "dedup restored from {} checkpoint records in {:.2} s; RSS of the process then {:.1} MB",
        restored.len(),
        restore_secs,
        rss_bytes() as f64 / 1e6
    );
}

fn main() {
    let n: u64 = std::env::var("RTAP_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
        .max(1);
    // First, while the process is small, so its RSS growth is dedup's.
    dedup_only(
        std::env::var("RTAP_BENCH_DEDUP_IDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000_000),
    );
    let work = tempfile::tempdir().expect("tempdir");
    let src = work.path().join("orders.jsonl");
    let t = Instant::now();
    let json_bytes = write_orders(&src, n);
    println!(
        "{n} orders as JSON lines: {:.0} MB ({:.0} B/order), written in {:.1} s",
        json_bytes as f64 / 1e6,
        json_bytes as f64 / n as f64,
        t.elapsed().as_secs_f64()
    );

    for run in 1..=3 {
        let (orders, rate) = decode_only(&src, 200_000);
        println!(
            "rtap decode + dedup + Arrow alone (first {orders} orders, in memory), run {run}: {rate:.0} orders/s"
        );
    }

    let rtap_dir = work.path().join("rtap");
    std::fs::create_dir_all(&rtap_dir).expect("mkdir");
    let r = rtap_load(&src, &rtap_dir);
    assert_eq!(r.rows, n, "every order in the table");
    let rtap_rate = n as f64 / r.secs;
    println!(
        "rtap: {rtap_rate:.0} orders/s ({:.1} s: read file {:.1} s, decode + dedup + Arrow {:.1} s ({:.0} orders/s), windows {:.2} s, recent answers {:.2} s ({:.0} ns/order), append + seals + flush {:.1} s); table {:.0} MB ({:.0} B/order; the directory with merged files waiting out their grace period {:.0} MB)",
        r.secs,
        r.read_secs,
        r.decode_secs,
        n as f64 / r.decode_secs,
        r.windows_secs,
        r.recent_secs,
        r.recent_secs * 1e9 / n as f64,
        r.append_secs,
        r.table_bytes as f64 / 1e6,
        r.table_bytes as f64 / n as f64,
        r.dir_bytes as f64 / 1e6
    );
    std::fs::remove_dir_all(&rtap_dir).ok();

    let Some(python) = std::env::var("RTAP_PYTHON").ok().filter(|p| !p.is_empty()) else {
        println!("duckdb: skipped (set RTAP_PYTHON to scripts/install-peers.sh's python)");
        return;
    };
    let duck_dir = work.path().join("duckdb");
    std::fs::create_dir_all(&duck_dir).expect("mkdir");
    match duckdb_load(&python, &src, &duck_dir) {
        Ok((rows, _, _)) if rows != n => {
            println!("duckdb: failed: {rows} rows loaded, not {n}");
        }
        Ok((_, secs, bytes)) => {
            let rate = n as f64 / secs;
            println!(
                "duckdb read_json: {rate:.0} orders/s ({secs:.1} s); database {:.0} MB ({:.0} B/order)",
                bytes as f64 / 1e6,
                bytes as f64 / n as f64
            );
            println!(
                "ratio rtap / duckdb: {:.2}x the rate, {:.2}x the bytes on disk (DuckDB keeps every field, rtap the table's columns)",
                rtap_rate / rate,
                r.table_bytes as f64 / bytes as f64
            );
        }
        Err(e) => println!("duckdb: failed: {e}"),
    }
}
