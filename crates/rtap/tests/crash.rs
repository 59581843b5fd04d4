//! Crash safety, as DESIGN.md's correctness contract states it: `rtap up` is killed with
//! SIGKILL at random points while it generates and ingests, restarted, again and again; then
//! every order the source (the order store) holds is in the table exactly once, and the rolling
//! windows equal a recomputation from the table.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{get_json, sql_rows, start_up_with, terminate};

/// A small deterministic generator of "random" kill points (the test must be repeatable).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn wait_for_http(http: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_json(&format!("{http}/orders/overview")).is_none() {
        assert!(Instant::now() < deadline, "analytics API did not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every order id of the store, read through the orders API.
fn stored_ids(api: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for page in 1.. {
        let (status, v) =
            get_json(&format!("{api}/orders?page={page}&limit=1000")).expect("orders page");
        assert_eq!(status, 200);
        let data = v["data"].as_array().expect("data");
        ids.extend(
            data.iter()
                .map(|o| o["order_id"].as_str().expect("order_id").to_string()),
        );
        if page >= v["total_pages"].as_u64().expect("total_pages") {
            break;
        }
    }
    ids
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Pane {
    orders: u64,
    revenue_cents: i64,
    fraud: u64,
    delivered: u64,
    refunded: u64,
}

#[test]
fn kill_9_at_random_points_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut rng = SplitMix(0x5EED_2026);
    let started = Instant::now();
    let kills = 6;
    for round in 0..kills {
        let (mut child, urls) = start_up_with(
            &data,
            &[
                "--rate",
                "3000",
                "--seed",
                "42",
                "--checkpoint-interval",
                "0.5",
            ],
        );
        wait_for_http(&urls[1]);
        let ms = rng.between(200, 2_500);
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        let status = child.wait().expect("wait");
        assert!(
            !status.success(),
            "round {round}: rtap was killed, not stopped"
        );
    }

    // One more start that generates nothing: it resumes from the last checkpoint and replays
    // what the killed runs stored after it.
    let (mut child, urls) = start_up_with(&data, &["--max-orders", "0", "--seed", "42"]);
    let (api, http) = (&urls[0], &urls[1]);
    wait_for_http(http);
    let ids = stored_ids(api);
    assert!(
        ids.len() > 3_000,
        "the killed runs stored {} orders",
        ids.len()
    );
    let expected: HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(expected.len(), ids.len(), "the store holds every id once");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = sql_rows(http, "SELECT COUNT(*) FROM orders").expect("count");
        if rows[0][0].as_u64() == Some(ids.len() as u64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "table holds {} orders, the store {}",
            rows[0][0],
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Exactly once: same count, no id twice, and the very same ids.
    let rows = sql_rows(
        http,
        "SELECT order_id, time_ms, order_total, fraud_flag, delivered, refunded FROM orders LIMIT 100000",
    )
    .expect("rows");
    assert_eq!(rows.len(), ids.len());
    let in_table: HashSet<&str> = rows
        .iter()
        .map(|r| r[0].as_str().expect("order_id"))
        .collect();
    assert_eq!(in_table.len(), rows.len(), "an order is in the table twice");
    assert_eq!(in_table, expected, "the table's ids are not the store's");

    // The windows equal a recomputation from the table, pane by pane (1 s panes).
    let mut recomputed: BTreeMap<i64, Pane> = BTreeMap::new();
    for r in &rows {
        let second = r[1].as_i64().expect("time_ms").div_euclid(1000) * 1000;
        let p = recomputed.entry(second).or_default();
        p.orders += 1;
        p.revenue_cents += (r[2].as_f64().expect("order_total") * 100.0).round() as i64;
        p.fraud += u64::from(r[3] == true);
        p.delivered += u64::from(r[4] == "yes");
        p.refunded += u64::from(r[5] == "yes");
    }
    let (_, series) =
        get_json(&format!("{http}/orders/overview/series?seconds=360")).expect("series");
    assert_eq!(series["late"], 0, "no order was late in this test");
    let points = series["points"].as_array().expect("points");
    let first = points[0]["start"].as_i64().expect("start");
    assert!(
        *recomputed.keys().next().expect("panes") >= first,
        "the test ran longer than the series covers ({:?})",
        started.elapsed()
    );
    let mut windows: BTreeMap<i64, Pane> = BTreeMap::new();
    for p in points {
        let pane = Pane {
            orders: p["orders"].as_u64().expect("orders"),
            revenue_cents: (p["revenue"].as_f64().expect("revenue") * 100.0).round() as i64,
            fraud: p["fraud"].as_u64().expect("fraud"),
            delivered: p["delivered"].as_u64().expect("delivered"),
            refunded: p["refunded"].as_u64().expect("refunded"),
        };
        if pane != Pane::default() {
            windows.insert(p["start"].as_i64().expect("start"), pane);
        }
    }
    assert_eq!(windows, recomputed);

    let status = terminate(&mut child);
    assert!(status.success(), "clean stop after the crashes: {status}");
}

/// Runs `rtap up` expecting it to refuse to start; returns what it said.
fn refused(data: &std::path::Path) -> String {
    let out = common::up_on_free_ports()
        .args(["--max-orders", "0"])
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run rtap");
    assert!(!out.status.success(), "rtap up started on corrupt data");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn corrupt_checkpoints_and_segments_are_refused_with_a_way_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (mut child, urls) = start_up_with(
        &data,
        &["--max-orders", "500", "--seed", "9", "--rate", "0"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while sql_rows(&urls[1], "SELECT COUNT(*) FROM orders").and_then(|r| r[0][0].as_u64())
        != Some(500)
    {
        assert!(
            Instant::now() < deadline,
            "500 orders did not reach the table"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(terminate(&mut child).success());

    // A changed byte in the checkpoint.
    let cp = data.join("checkpoint.json");
    let good = std::fs::read_to_string(&cp).expect("checkpoint");
    let bad = good.replacen("\"deadletter_bytes\":0", "\"deadletter_bytes\":1", 1);
    assert_ne!(bad, good);
    std::fs::write(&cp, bad).expect("write");
    let said = refused(&data);
    assert!(
        said.contains("checksum") && said.contains("To recover"),
        "{said}"
    );

    // A changed byte in a segment file.
    std::fs::write(&cp, &good).expect("restore");
    let segments = data.join("segments").join("orders");
    let file = std::fs::read_dir(&segments)
        .expect("segments")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .expect("a segment");
    let mut bytes = std::fs::read(&file).expect("segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&file, &bytes).expect("write");
    let said = refused(&data);
    assert!(
        said.contains("checksum") && said.contains("segments"),
        "{said}"
    );

    // The way out it names: move the derived state aside; the table is rebuilt from the store.
    let aside = dir.path().join("aside");
    std::fs::create_dir_all(&aside).expect("aside");
    for name in ["checkpoint.json", "dedup", "segments"] {
        std::fs::rename(data.join(name), aside.join(name)).expect("move aside");
    }
    let (mut child, urls) = start_up_with(&data, &["--max-orders", "0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sql_rows(&urls[1], "SELECT COUNT(DISTINCT order_id) FROM orders")
        .and_then(|r| r[0][0].as_u64())
        != Some(500)
    {
        assert!(
            Instant::now() < deadline,
            "the table was not rebuilt from the store"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(terminate(&mut child).success());
}
