//! What rtap does when things go wrong, tried on the real binary (bounded, loopback only):
//! orders with impossible times and values through a real Kafka-protocol broker, 1 MB
//! messages, a topic that changes under a data directory, the ingest thread dying, a full disk
//! under the table and under the dead letters, and a partition moving between two instances
//! and back. After each, the numbers are exact: the table holds each good order once,
//! `/orders/overview` (windows) equals `/orders/overview2` (SQL), nothing is late.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::Value;

mod common;

use common::{
    assert_exactly, count, get_json, kill9, produce, serve, table_ids, terminate, wait_count,
    Broker,
};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Creates `topic` with `partitions` partitions (through `rtap produce`, which creates it).
fn create_topic(broker: &Broker, dir: &Path, topic: &str, partitions: u32) {
    let status = produce(
        &broker.addr(),
        &dir.join(format!("create-{topic}")),
        &[
            "--from",
            "generator",
            "--max-orders",
            "0",
            "--topic",
            topic,
            "--partitions",
            &partitions.to_string(),
        ],
    )
    .status()
    .expect("rtap produce");
    assert!(status.success());
}

/// A broker with topic FakeEcommOrders of `partitions` partitions, a temporary directory, a
/// producer and a generator of `seed`.
fn kafka_setup(
    partitions: u32,
    seed: u64,
) -> (Broker, tempfile::TempDir, BaseProducer, orders::Generator) {
    let broker = Broker::start_with("memory://tansu/");
    let dir = tempfile::tempdir().expect("tempdir");
    create_topic(&broker, dir.path(), "FakeEcommOrders", partitions);
    let p = producer(&broker);
    let g = orders::Generator::new(orders::GeneratorConfig {
        seed,
        ..orders::GeneratorConfig::default()
    });
    (broker, dir, p, g)
}

fn producer(broker: &Broker) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("message.max.bytes", "8000000")
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, topic: &str, key: &str, payload: &[u8]) {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                p.poll(Duration::from_millis(10));
            }
        }
    }
}

/// A generated order's JSON with `edit` applied.
fn order_json(g: &mut orders::Generator, seq: u64, t: i64, edit: impl Fn(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&g.generate(seq, t).to_json()).expect("json");
    edit(&mut v);
    serde_json::to_vec(&v).expect("json")
}

fn order_id(json: &[u8]) -> String {
    let v: Value = serde_json::from_slice(json).expect("json");
    v["order_id"].as_str().expect("id").to_string()
}

/// `/orders/overview` and `/orders/overview2` agree, and the current minute holds `orders`.
fn assert_overviews_agree(http: &str, orders: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = get_json(&format!("{http}/orders/overview"))
            .expect("overview")
            .1;
        let b = get_json(&format!("{http}/orders/overview2"))
            .expect("overview2")
            .1;
        if a == b && a["currentTimePeriod"]["orders"] == orders {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "windows {a} vs SQL {b} (expected {orders} orders)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(http: &str) -> Value {
    get_json(&format!("{http}/api/status")).expect("status").1
}

fn stage(status: &Value, name: &str) -> Value {
    status["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The order ids of the table under `data`, read with `rtap query --local`.
fn local_ids(data: &Path) -> Vec<String> {
    let out = common::rtap()
        .args([
            "query",
            "--local",
            "--json",
            "SELECT order_id FROM orders LIMIT 100000",
        ])
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("rtap query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["resultTable"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r[0].as_str().expect("id").to_string())
        .collect()
}

fn dead_letter_reasons(data: &Path) -> Vec<String> {
    std::fs::read_to_string(data.join("deadletter").join("deadletter.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("a JSON line")["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[test]
fn impossible_times_values_and_sizes_through_kafka_leave_the_numbers_exact() {
    let (broker, dir, p, mut g) = kafka_setup(1, 16);
    let now = now_ms();
    let mut good = HashSet::new();
    let mut seq = 0;
    let mut next = |g: &mut orders::Generator, edit: &dyn Fn(&mut Value)| {
        seq += 1;
        order_json(g, seq, now - 10_000 + seq as i64 * 10, edit)
    };
    for _ in 0..50 {
        let json = next(&mut g, &|_| {});
        good.insert(order_id(&json));
        send(&p, "FakeEcommOrders", "k", &json);
    }
    let bad: Vec<Vec<u8>> = vec![
        next(&mut g, &|v| v["time_ms"] = 9_000_000_000_000_000i64.into()),
        next(&mut g, &|v| v["time_ms"] = 1_000.into()),
        next(&mut g, &|v| v["order_total"] = 1e17.into()),
        next(&mut g, &|v| {
            v["line_items"][0]["quantity"] = 2_147_483_647i64.into()
        }),
        // A 1.5 MB message: over the 1 MiB message limit.
        next(&mut g, &|v| v["pad"] = "x".repeat(1_500_000).into()),
    ];
    for b in &bad {
        send(&p, "FakeEcommOrders", "bad", b);
    }
    // Orders of almost 1 MiB each: decoded in byte-bounded batches.
    for _ in 0..20 {
        let json = next(&mut g, &|v| v["pad"] = "y".repeat(900_000).into());
        good.insert(order_id(&json));
        send(&p, "FakeEcommOrders", "big", &json);
    }
    for _ in 0..50 {
        let json = next(&mut g, &|_| {});
        good.insert(order_id(&json));
        send(&p, "FakeEcommOrders", "k", &json);
    }
    p.flush(Duration::from_secs(60)).expect("flush");

    let data = dir.path().join("data");
    let (mut rtap, http) = serve(&data, &broker.addr(), &[]);
    wait_count(&http, 120, Duration::from_secs(60));
    assert_exactly(&table_ids(&http), &good);
    assert_overviews_agree(&http, 120);
    let s = status(&http);
    assert_eq!(stage(&s, "ingest")["detail"]["late"], 0);
    assert_eq!(stage(&s, "ingest")["detail"]["deadLettered"], 5);
    let reasons = dead_letter_reasons(&data);
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    for (reason, expected) in reasons.iter().zip([
        "ahead of the wall clock",
        "older than ingest.max_age_ms",
        "order_total = 100000000000000000",
        "line_items.quantity = 2147483647",
        "over the limit of 1048576 bytes",
    ]) {
        assert!(reason.contains(expected), "{reason}");
    }
    assert!(terminate(&mut rtap).success());

    // A restart keeps it all: same table, same windows, the dead letters not written twice.
    let (mut rtap, http) = serve(&data, &broker.addr(), &[]);
    wait_count(&http, 120, Duration::from_secs(30));
    assert_overviews_agree(&http, 120);
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(count(&http), Some(120));
    assert_eq!(dead_letter_reasons(&data).len(), 5);
    assert!(terminate(&mut rtap).success());
}

#[test]
fn a_data_directory_refuses_a_different_topic() {
    let broker = Broker::start_with("memory://tansu/");
    let dir = tempfile::tempdir().expect("tempdir");
    create_topic(&broker, dir.path(), "ordersA", 1);
    let p = producer(&broker);
    let mut g = orders::Generator::new(orders::GeneratorConfig::default());
    for seq in 1..=5 {
        send(&p, "ordersA", "k", &g.generate(seq, now_ms()).to_json());
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let data = dir.path().join("data");
    let (mut rtap, http) = serve(&data, &broker.addr(), &["--topic", "ordersA"]);
    wait_count(&http, 5, Duration::from_secs(30));
    assert!(terminate(&mut rtap).success());
    let out = common::rtap()
        .args(["serve", "--http-port", "0", "--dashboard-port", "0"])
        .args([
            "--kafka",
            &broker.addr(),
            "--topic",
            "ordersB",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .expect("rtap serve");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds Kafka topic ordersA, this run reads topic ordersB"),
        "{err}"
    );
    assert!(err.contains("--topic ordersA"), "{err}");
}

#[test]
fn a_dead_ingest_thread_is_reported_and_restarted_from_the_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cmd = common::up_on_free_ports();
    cmd.args(["--rate", "1000", "--max-orders", "3000", "--seed", "9"])
        .args(["--checkpoint-interval", "0.5", "--data-dir"])
        .arg(&data)
        .env("RTAP_FAULT", "ingest-panic-at-rows:500")
        .stderr(Stdio::null());
    let started = common::start(cmd);
    let mut child = started.child;
    let (api, http) = (
        started.api.expect("orders API"),
        started.http.expect("analytics"),
    );
    // The failure shows: the stage failed with the panic, /health 503.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut saw_failed, mut saw_503) = (false, false);
    while !(saw_failed && saw_503) {
        assert!(
            Instant::now() < deadline,
            "failed {saw_failed}, 503 {saw_503}"
        );
        if let Some((_, s)) = get_json(&format!("{http}/api/status")) {
            let ingest = stage(&s, "ingest");
            if ingest["state"] == "failed" {
                saw_failed = true;
                let error = ingest["last_error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                assert!(error.contains("panicked"), "{error}");
            }
        }
        if let Some((code, body)) = get_json(&format!("{http}/health")) {
            if code == 503 {
                saw_503 = true;
                assert_eq!(body["status"], "unhealthy");
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // Restarted from the last checkpoint, on the same ports: every order exactly once.
    wait_count(&http, 3000, Duration::from_secs(60));
    let s = status(&http);
    assert_eq!(stage(&s, "ingest")["detail"]["restarts"], 1);
    assert_eq!(stage(&s, "ingest")["state"], "running");
    assert_eq!(get_json(&format!("{http}/health")).expect("health").0, 200);
    let mut stored = HashSet::new();
    for page in 1..=3 {
        let (_, p) = get_json(&format!("{api}/orders?page={page}&limit=1000")).expect("page");
        for o in p["data"].as_array().expect("data") {
            stored.insert(o["order_id"].as_str().expect("id").to_string());
        }
    }
    assert_exactly(&table_ids(&http), &stored);
    assert!(terminate(&mut child).success());
}

/// A small tmpfs mounted at `at` (rtap's tests run as root in their sandbox); unmounted on
/// drop. A full disk is then a ballast file away.
struct SmallDisk {
    at: PathBuf,
}

impl SmallDisk {
    fn mount(at: &Path, megabytes: u32) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(at)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (the full-disk tests need root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            at: at.to_path_buf(),
        }
    }

    /// Fills the disk to the last byte.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.at.join("ballast")).expect("ballast");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.write_all(&[0u8; 512]);
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.at.join("ballast")).expect("remove the ballast");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}

#[test]
fn a_full_disk_under_the_table_pauses_ingest_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let disk = SmallDisk::mount(&data.join("segments"), 64);
    let config = dir.path().join("rtap.toml");
    std::fs::write(
        &config,
        "[table]\nmax_memory_rows = 1000\nmax_unsealed_rows = 4000\n",
    )
    .expect("config");
    let mut cmd = common::up_on_free_ports();
    cmd.args(["--rate", "2000", "--max-orders", "20000", "--seed", "3"])
        .args(["--checkpoint-interval", "0.5", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .stderr(Stdio::null());
    let started = common::start(cmd);
    let mut child = started.child;
    let (api, http) = (
        started.api.expect("orders API"),
        started.http.expect("analytics"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&http).unwrap_or(0) < 2_000 {
        assert!(Instant::now() < deadline, "ingest did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    disk.fill();
    // Seals fail; ingest stops taking rows at the ceiling instead of growing without bound.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&http);
        let memory = stage(&s, "table")["detail"]["memoryRows"]
            .as_u64()
            .unwrap_or(0);
        assert!(memory <= 4_000 + 2_000, "{memory} rows in memory");
        if stage(&s, "ingest")["state"] == "paused" {
            assert!(stage(&s, "table")["last_error"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "ingest never paused: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..20 {
        let s = status(&http);
        let memory = stage(&s, "table")["detail"]["memoryRows"]
            .as_u64()
            .unwrap_or(0);
        assert!(
            memory <= 4_000 + 2_000,
            "{memory} rows in memory while paused"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    disk.free();
    // Space is back: it goes on by itself, nothing lost, nothing doubled.
    wait_count(&http, 20_000, Duration::from_secs(90));
    let mut stored = HashSet::new();
    for page in 1..=20 {
        let (_, p) = get_json(&format!("{api}/orders?page={page}&limit=1000")).expect("page");
        for o in p["data"].as_array().expect("data") {
            stored.insert(o["order_id"].as_str().expect("id").to_string());
        }
    }
    assert_eq!(stored.len(), 20_000);
    assert_exactly(&table_ids(&http), &stored);
    let deadline = Instant::now() + Duration::from_secs(60);
    while stage(&status(&http), "table")["detail"]["memoryRows"] != 0 {
        assert!(Instant::now() < deadline, "the rows were never sealed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(terminate(&mut child).success());
    drop(disk);
}

#[test]
fn a_full_disk_under_the_dead_letters_holds_the_batch_until_it_can_be_written() {
    let broker = Broker::start_with("memory://tansu/");
    let dir = tempfile::tempdir().expect("tempdir");
    create_topic(&broker, dir.path(), "FakeEcommOrders", 1);
    let data = dir.path().join("data");
    let disk = SmallDisk::mount(&data.join("deadletter"), 1);
    let (mut rtap, http) = serve(&data, &broker.addr(), &[]);
    disk.fill();
    let p = producer(&broker);
    let mut g = orders::Generator::new(orders::GeneratorConfig {
        seed: 21,
        ..orders::GeneratorConfig::default()
    });
    let mut good = HashSet::new();
    for seq in 1..=40u64 {
        let json = g.generate(seq, now_ms()).to_json();
        good.insert(order_id(&json));
        send(&p, "FakeEcommOrders", "k", &json);
        if seq % 10 == 0 {
            send(&p, "FakeEcommOrders", "bad", b"not an order");
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    // The first batch holds a poison message that cannot be written: nothing of it is taken.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&http);
        if stage(&s, "ingest")["state"] == "paused" {
            break;
        }
        assert!(Instant::now() < deadline, "ingest never paused: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(count(&http).unwrap_or(0) < 40);
    disk.free();
    wait_count(&http, 40, Duration::from_secs(60));
    assert_exactly(&table_ids(&http), &good);
    let reasons = dead_letter_reasons(&data);
    assert_eq!(reasons.len(), 4, "each poison message once: {reasons:?}");
    assert_overviews_agree(&http, 40);
    assert!(terminate(&mut rtap).success());
    drop(disk);
}

#[test]
fn a_partition_moving_away_and_back_is_never_committed_stale() {
    let (broker, dir, p, mut g) = kafka_setup(4, 31);
    let mut all = HashSet::new();
    let mut seq = 0u64;
    // `n` orders, keyed by order id (spread over the partitions), or all into `partition`.
    let mut produce_n = |n: u64, partition: Option<i32>| {
        for _ in 0..n {
            seq += 1;
            let order = g.generate(seq, now_ms());
            all.insert(order.order_id.to_string());
            let key = order.order_id.to_string();
            let json = order.to_json();
            let mut record = BaseRecord::to("FakeEcommOrders").key(&key).payload(&json);
            if let Some(part) = partition {
                record = record.partition(part);
            }
            while let Err((_, back)) = p.send(record) {
                record = back;
                p.poll(Duration::from_millis(10));
            }
        }
        p.flush(Duration::from_secs(30)).expect("flush");
    };
    let (a_data, b_data) = (dir.path().join("a"), dir.path().join("b"));
    produce_n(400, None);
    let (mut a, a_http) = serve(&a_data, &broker.addr(), &[]);
    wait_count(&a_http, 400, Duration::from_secs(60));
    // B joins: the partitions are split. (B is a dynamic member: it leaves the group when it
    // stops, so its partitions go back to A at once.)
    let (mut b, b_http) = serve(&b_data, &broker.addr(), &["--instance-id", ""]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let assigned = stage(&status(&b_http), "kafka-source")["detail"]["assignedPartitions"]
            .as_array()
            .map_or(0, Vec::len);
        if assigned > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "B never got partitions");
        std::thread::sleep(Duration::from_millis(100));
    }
    produce_n(400, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&a_http).unwrap_or(0) + count(&b_http).unwrap_or(0) < 800 {
        assert!(
            Instant::now() < deadline,
            "800 orders not ingested by A and B"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // B leaves: its partitions come back to A, which must not commit its old positions there.
    assert!(terminate(&mut b).success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let assigned = stage(&status(&a_http), "kafka-source")["detail"]["assignedPartitions"]
            .as_array()
            .map_or(0, Vec::len);
        if assigned == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "A never got the partitions back");
        std::thread::sleep(Duration::from_millis(100));
    }
    // New orders on partition 0 only: A checkpoints and commits while B's old partitions have
    // nothing new (a stale position there would rewind the group), then A dies.
    let before = count(&a_http).unwrap_or(0);
    produce_n(100, Some(0));
    wait_count(&a_http, before + 100, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    kill9(&mut a);
    // Restarted, A resumes from the group's commits: B's progress on its old partitions stands.
    let (mut a, a_http) = serve(&a_data, &broker.addr(), &[]);
    produce_n(200, None);
    // B's table, read from its data directory (B stopped cleanly: everything is sealed).
    let b_rows = local_ids(&b_data);
    let deadline = Instant::now() + Duration::from_secs(60);
    let a_rows = loop {
        let ids = table_ids(&a_http);
        if ids.len() + b_rows.len() >= 1_100 {
            break ids;
        }
        assert!(
            Instant::now() < deadline,
            "A {} + B {} of 1100 orders",
            ids.len(),
            b_rows.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let a_set: HashSet<&String> = a_rows.iter().collect();
    let overlap = b_rows.iter().filter(|id| a_set.contains(id)).count();
    assert_eq!(overlap, 0, "orders counted by both instances");
    let mut union: Vec<String> = a_rows.clone();
    union.extend(b_rows);
    assert_exactly(&union, &all);
    assert!(terminate(&mut a).success());
}

#[test]
fn progress_is_committed_even_when_every_message_is_a_duplicate() {
    let (broker, dir, p, mut g) = kafka_setup(2, 41);
    let docs: Vec<Vec<u8>> = (1..=300)
        .map(|s| g.generate(s, now_ms()).to_json())
        .collect();
    for d in &docs {
        send(&p, "FakeEcommOrders", &order_id(d), d);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let data = dir.path().join("data");
    let (mut rtap, http) = serve(&data, &broker.addr(), &[]);
    wait_count(&http, 300, Duration::from_secs(60));
    // Everything sealed and checkpointed first, so only the duplicates move the position.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(&http);
        if stage(&s, "table")["detail"]["memoryRows"] == 0
            && stage(&s, "ingest")["detail"]["checkpoints"].as_u64() >= Some(1)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    // The original producer re-sent the whole table forever: every message a duplicate.
    for d in &docs {
        send(&p, "FakeEcommOrders", &order_id(d), d);
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    let deadline = Instant::now() + Duration::from_secs(30);
    while stage(&status(&http), "ingest")["detail"]["duplicates"] != 300 {
        assert!(Instant::now() < deadline, "the duplicates were not read");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A checkpoint (and commit) of the new position, though no row came with it.
    std::thread::sleep(Duration::from_secs(3));
    kill9(&mut rtap);
    let (mut rtap, http) = serve(&data, &broker.addr(), &[]);
    // Once the restarted member holds its partitions and knows their ends, it has read nothing
    // again: the duplicates' position was committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let lag = loop {
        let s = status(&http);
        let assigned = stage(&s, "kafka-source")["detail"]["assignedPartitions"]
            .as_array()
            .map_or(0, Vec::len);
        let lag = stage(&s, "ingest")["detail"]["lag"].clone();
        if assigned == 2 && !lag.is_null() {
            break lag;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted member never caught up: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(lag, 0);
    std::thread::sleep(Duration::from_secs(2));
    let source = stage(&status(&http), "kafka-source");
    assert_eq!(
        source["detail"]["messages"], 0,
        "after kill -9 nothing is read again: {source}"
    );
    assert_eq!(count(&http), Some(300));
    assert!(terminate(&mut rtap).success());
}
