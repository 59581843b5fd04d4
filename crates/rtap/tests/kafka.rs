//! rtap against a real Kafka-protocol broker (tansu, installed by scripts/install-tansu.sh;
//! `RTAP_TANSU` names the binary): produce, consume into the table, and exact counts through
//! consumer restarts, kill -9, a broker restart, two consumers in one group, poison messages,
//! and producing from a Postgres-backed orders API.

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    assert_exactly, count, generated_ids, get_json, kill9, produce, rtap, serve, table_ids,
    terminate, wait_count, Broker,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

#[test]
fn produced_orders_reach_the_table_exactly_once_across_restarts_and_kills() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let n = 30_000u64;
    let mut producer = produce(
        &broker.addr(),
        &dir.path().join("producer"),
        &["--from", "generator", "--rate", "6000", "--seed", "3"],
    )
    .args(["--max-orders", &n.to_string(), "--partitions", "8"])
    .spawn()
    .expect("rtap produce");
    let (mut consumer, _) = serve(&data, &broker.addr(), &[]);
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(terminate(&mut consumer).success(), "clean stop mid-stream");
    let (mut consumer, _) = serve(&data, &broker.addr(), &[]);
    std::thread::sleep(Duration::from_millis(1_500));
    kill9(&mut consumer);
    let (mut consumer, http) = serve(&data, &broker.addr(), &[]);
    let status = producer.wait().expect("producer");
    assert!(status.success(), "rtap produce: {status}");
    wait_count(&http, n, Duration::from_secs(150));
    assert_exactly(&table_ids(&http), &generated_ids(3, n));
    assert!(terminate(&mut consumer).success());
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 20_000u64;
    let mut producer = produce(
        &broker.addr(),
        &dir.path().join("producer"),
        &["--from", "generator", "--rate", "5000", "--seed", "4"],
    )
    .args(["--max-orders", &n.to_string(), "--partitions", "4"])
    .spawn()
    .expect("rtap produce");
    let (mut consumer, http) = serve(&dir.path().join("data"), &broker.addr(), &[]);
    std::thread::sleep(Duration::from_millis(1_500));
    broker.stop();
    std::thread::sleep(Duration::from_millis(1_500));
    broker.spawn();
    let status = producer.wait().expect("producer");
    assert!(
        status.success(),
        "rtap produce survives the broker restart: {status}"
    );
    wait_count(&http, n, Duration::from_secs(120));
    assert_exactly(&table_ids(&http), &generated_ids(4, n));
    assert!(terminate(&mut consumer).success());
}

#[test]
fn two_consumers_in_one_group_split_the_partitions() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 20_000u64;
    let mut producer = produce(
        &broker.addr(),
        &dir.path().join("producer"),
        &["--from", "generator", "--rate", "5000", "--seed", "5"],
    )
    .args(["--max-orders", &n.to_string(), "--partitions", "6"])
    .spawn()
    .expect("rtap produce");
    let (mut a, http_a) = serve(&dir.path().join("a"), &broker.addr(), &["--group", "pair"]);
    // B joins while A is reading: A gives up partitions (checkpointing them first).
    std::thread::sleep(Duration::from_millis(1_500));
    let (mut b, http_b) = serve(&dir.path().join("b"), &broker.addr(), &["--group", "pair"]);
    assert!(producer.wait().expect("producer").success());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (ca, cb) = (count(&http_a).unwrap_or(0), count(&http_b).unwrap_or(0));
        if ca + cb >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A has {ca}, B {cb}, expected {n} together"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2)); // nothing more may arrive
    let (ids_a, ids_b) = (table_ids(&http_a), table_ids(&http_b));
    assert!(
        !ids_a.is_empty() && !ids_b.is_empty(),
        "both consumers took partitions"
    );
    let mut all = ids_a.clone();
    all.extend(ids_b);
    assert_exactly(&all, &generated_ids(5, n));
    assert!(terminate(&mut a).success());
    assert!(terminate(&mut b).success());
}

#[test]
fn poison_messages_go_to_dead_letters_and_the_partition_goes_on() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // Create the topic (one partition, so the order of messages is known).
    let status = produce(
        &broker.addr(),
        &dir.path().join("producer"),
        &[
            "--from",
            "generator",
            "--max-orders",
            "0",
            "--partitions",
            "1",
        ],
    )
    .status()
    .expect("rtap produce");
    assert!(status.success());
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .create()
        .expect("producer");
    let mut g = orders::Generator::new(orders::GeneratorConfig {
        seed: 6,
        ..orders::GeneratorConfig::default()
    });
    let now = chrono::Utc::now().timestamp_millis();
    let mut good = HashSet::new();
    let poison: [&[u8]; 3] = [
        b"this is not json",
        br#"{"order_id": 17, "time_ms": "yesterday"}"#,
        br#"{"time_ms": 1}"#,
    ];
    for i in 0..30u64 {
        let order = g.generate(i + 1, now);
        good.insert(order.order_id.to_string());
        let json = order.to_json();
        producer
            .send(BaseRecord::to("FakeEcommOrders").key("k").payload(&json))
            .expect("send");
        if i % 10 == 4 {
            let bad = poison[(i / 10) as usize];
            producer
                .send(BaseRecord::to("FakeEcommOrders").key("bad").payload(bad))
                .expect("send");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let data = dir.path().join("data");
    let (mut consumer, http) = serve(&data, &broker.addr(), &[]);
    wait_count(&http, 30, Duration::from_secs(60));
    assert_exactly(&table_ids(&http), &good);
    assert!(terminate(&mut consumer).success());
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(data.join("deadletter").join("deadletter.jsonl"))
            .expect("dead letters")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    // Poison i sits after the 5th, 15th and 25th order: offsets 5, 16 and 27.
    let offsets: Vec<i64> = lines
        .iter()
        .map(|l| l["offset"].as_i64().expect("offset"))
        .collect();
    assert_eq!(offsets, [5, 16, 27]);
    assert!(lines
        .iter()
        .all(|l| l["partition"] == 0 && l["reason"].as_str().is_some_and(|r| !r.is_empty())));
    assert_eq!(lines[0]["payload"], "this is not json");
}

#[test]
fn produce_from_a_postgres_backed_api_sends_every_order_once() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(store::testing::fresh_postgres_url("produce_api"));
    let mut api_cmd = rtap();
    api_cmd
        .args([
            "api",
            "--api-port",
            "0",
            "--rate",
            "0",
            "--max-orders",
            "3000",
            "--seed",
            "7",
        ])
        .args(["--database-url", &url, "--data-dir"])
        .arg(dir.path().join("api"))
        .stderr(Stdio::null());
    let started = common::start(api_cmd);
    let mut api = started.child;
    let api_url = started.api.expect("orders API URL");
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_json(&format!("{api_url}/orders?page=1&limit=1"))
        .map(|(_, v)| v["total_orders"].as_u64())
        != Some(Some(3000))
    {
        assert!(Instant::now() < deadline, "3000 orders were not stored");
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = dir.path().join("producer");
    for run in 0..2 {
        let status = produce(
            &broker.addr(),
            &state,
            &[
                "--from",
                "api",
                "--api-url",
                &api_url,
                "--until-caught-up",
                "--partitions",
                "3",
            ],
        )
        .status()
        .expect("rtap produce");
        assert!(status.success(), "run {run}: {status}");
    }
    // Read the whole topic back: every stored order exactly once (the second run sent nothing).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "check")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["FakeEcommOrders"]).expect("subscribe");
    let mut keys = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while keys.len() < 3000 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            use rdkafka::Message;
            keys.push(String::from_utf8_lossy(m.key().unwrap_or_default()).to_string());
        }
    }
    // Anything beyond 3000 would arrive within this extra second.
    let extra_deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < extra_deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            keys.push("extra".into());
        }
    }
    assert_eq!(keys.len(), 3000);
    let mut stored = HashSet::new();
    for page in 1..=3 {
        let (_, v) = get_json(&format!("{api_url}/orders?page={page}&limit=1000")).expect("page");
        for o in v["data"].as_array().expect("data") {
            stored.insert(o["order_id"].as_str().expect("id").to_string());
        }
    }
    assert_exactly(&keys, &stored);
    let _ = terminate(&mut api);
}

#[test]
fn up_with_kafka_runs_the_whole_pipeline_through_the_topic() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let args = [
        "--kafka",
        &broker.addr(),
        "--partitions",
        "4",
        "--seed",
        "8",
        "--rate",
        "0",
    ];
    let mut extra: Vec<&str> = args.to_vec();
    extra.extend(["--max-orders", "3000"]);
    let (mut child, urls) = common::start_up_with(&data, &extra);
    wait_count(&urls[1], 3000, Duration::from_secs(60));
    assert!(terminate(&mut child).success());
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("producer.json")).expect("producer position"),
    )
    .expect("json");
    assert_eq!(
        saved["next"], 3001,
        "every stored order confirmed by the broker"
    );
    // A restart neither re-sends nor re-counts anything.
    let mut extra: Vec<&str> = args.to_vec();
    extra.extend(["--max-orders", "0"]);
    let (mut child, urls) = common::start_up_with(&data, &extra);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(&urls[1]), Some(3000));
    assert_exactly(&table_ids(&urls[1]), &generated_ids(8, 3000));
    assert!(terminate(&mut child).success());
}

#[test]
fn a_missing_topic_is_waited_for_and_record_timestamps_fill_in_time_ms() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // The consumer starts before the topic exists: it waits and says so in /api/status.
    let (mut consumer, http) = serve(&dir.path().join("data"), &broker.addr(), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let source = get_json(&format!("{http}/api/status")).and_then(|(_, v)| {
            v["stages"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == "kafka-source")
                .cloned()
        });
        if source.as_ref().is_some_and(|s| s["state"] == "waiting") {
            break;
        }
        assert!(Instant::now() < deadline, "no waiting state: {source:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Now the topic appears, with one order that has no time_ms: the record's timestamp is used.
    let status = produce(
        &broker.addr(),
        &dir.path().join("producer"),
        &[
            "--from",
            "generator",
            "--max-orders",
            "0",
            "--partitions",
            "2",
        ],
    )
    .status()
    .expect("rtap produce");
    assert!(status.success());
    let mut g = orders::Generator::new(orders::GeneratorConfig {
        seed: 12,
        ..orders::GeneratorConfig::default()
    });
    let order = g.generate(1, 1_795_000_000_000);
    let mut doc: serde_json::Value = serde_json::from_slice(&order.to_json()).expect("json");
    doc.as_object_mut().expect("object").remove("time_ms");
    let payload = serde_json::to_vec(&doc).expect("json");
    let record_ms = 1_795_000_123_456i64;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .create()
        .expect("producer");
    producer
        .send(
            BaseRecord::to("FakeEcommOrders")
                .key("k")
                .payload(&payload)
                .timestamp(record_ms),
        )
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
    wait_count(&http, 1, Duration::from_secs(60));
    let rows = common::sql_rows(&http, "SELECT order_id, time_ms FROM orders").expect("rows");
    assert_eq!(rows[0][0], order.order_id.to_string());
    assert_eq!(rows[0][1], record_ms);
    assert!(terminate(&mut consumer).success());
}
