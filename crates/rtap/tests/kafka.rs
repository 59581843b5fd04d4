//! rtap against a real Kafka-protocol broker (tansu, installed by scripts/install-tansu.sh;
//! `RTAP_TANSU` names the binary): produce, consume into the table, and exact counts through
//! consumer restarts, kill -9, a broker restart, two consumers in one group (each saying which
//! partitions it holds), replicas with identical answers, poison messages, and producing from
//! a Postgres-backed orders API.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{
    assert_exactly, count, generated_ids, get_json, kill9, produce, rtap, serve, table_ids,
    terminate, wait_count, wait_within, Broker,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::json;

/// The tests of this file run one at a time: each starts a broker and several rtap processes,
/// and two of them at once on two cores starve each other's consumers (the exactly-once test's
/// last consumer once got nothing for 150 s beside the replica test).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn produced_orders_reach_the_table_exactly_once_across_restarts_and_kills() {
    let _serial = serial();
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
    .map(common::Running)
    .expect("rtap produce");
    let (mut consumer, _) = serve(&data, &broker.addr(), &[]);
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(terminate(&mut consumer).success(), "clean stop mid-stream");
    let (mut consumer, _) = serve(&data, &broker.addr(), &[]);
    std::thread::sleep(Duration::from_millis(1_500));
    kill9(&mut consumer);
    let (mut consumer, http) = serve(&data, &broker.addr(), &[]);
    let status = wait_within(&mut producer, Duration::from_secs(120), "rtap produce");
    assert!(status.success(), "rtap produce: {status}");
    wait_count(&http, n, Duration::from_secs(150));
    assert_exactly(&table_ids(&http), &generated_ids(3, n));
    assert!(terminate(&mut consumer).success());
}

/// The broker is killed once the consumer has joined and read some orders. (Killed while the
/// consumer was still joining, tansu 0.6 sometimes answered the first heartbeat after the
/// restart's assignment with "unknown member" while naming that same member the group's leader
/// in every JoinGroup after it, and every SyncGroup with "rebalance in progress": the consumer
/// was never assigned partitions again. That was this test's intermittent failure at 4,876
/// orders, a broker bug, so the test waits for the join. `RTAP_KAFKA_DEBUG=cgrp` with
/// `RTAP_LOG=info,librdkafka=debug` and `RTAP_TEST_LOG_DIR` keeps the group's protocol.)
#[test]
fn a_broker_restart_mid_stream_loses_nothing() {
    let _serial = serial();
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 30_000u64;
    let mut producer = produce(
        &broker.addr(),
        &dir.path().join("producer"),
        &["--from", "generator", "--rate", "2000", "--seed", "4"],
    )
    .args(["--max-orders", &n.to_string(), "--partitions", "4"])
    .spawn()
    .map(common::Running)
    .expect("rtap produce");
    let (mut consumer, http) = serve(&dir.path().join("data"), &broker.addr(), &[]);
    // Mid-stream: the consumer has joined its group and read some orders, not all (joining
    // takes tansu a few seconds; producing all takes 15).
    let deadline = Instant::now() + Duration::from_secs(60);
    let read = loop {
        match count(&http) {
            Some(c) if c > 0 => break c,
            _ => assert!(Instant::now() < deadline, "the consumer read nothing"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        read < n,
        "the consumer read every order before the broker stopped: not mid-stream"
    );
    broker.stop();
    std::thread::sleep(Duration::from_millis(1_500));
    broker.spawn();
    let status = wait_within(&mut producer, Duration::from_secs(120), "rtap produce");
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
    let _serial = serial();
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
    .map(common::Running)
    .expect("rtap produce");
    let (mut a, http_a) = serve(&dir.path().join("a"), &broker.addr(), &["--group", "pair"]);
    // B joins while A is reading: A gives up partitions (checkpointing them first).
    std::thread::sleep(Duration::from_millis(1_500));
    let (mut b, http_b) = serve(&dir.path().join("b"), &broker.addr(), &["--group", "pair"]);
    assert!(wait_within(&mut producer, Duration::from_secs(120), "rtap produce").success());
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
    // Each one says it holds only its partitions: in /api/status, in the headers of every
    // answer, and on the dashboard's snapshot.
    let (pa, pb) = (held_partitions(&http_a), held_partitions(&http_b));
    assert!(!pa.is_empty() && !pb.is_empty(), "A {pa:?}, B {pb:?}");
    assert!(pa.iter().all(|p| !pb.contains(p)), "A {pa:?}, B {pb:?}");
    let mut both: Vec<i64> = pa.iter().chain(&pb).copied().collect();
    both.sort_unstable();
    assert_eq!(both, (0..6).collect::<Vec<_>>());
    for (http, held) in [(&http_a, &pa), (&http_b, &pb)] {
        let (_, headers, _) = get_with_headers(&format!("{http}/orders/latestorders"));
        assert_eq!(
            headers.get("x-rtap-coverage").map(String::as_str),
            Some("partial")
        );
        assert_eq!(
            headers.get("x-rtap-partitions").cloned(),
            Some(ranges(held)),
            "{headers:?}"
        );
        assert_eq!(
            headers.get("x-rtap-topic-partitions").map(String::as_str),
            Some("6")
        );
        let (_, headers, _) = get_with_headers(&format!("{http}/api/status"));
        assert_eq!(
            headers.get("x-rtap-coverage").map(String::as_str),
            Some("partial")
        );
    }
    assert!(terminate(&mut a).success());
    assert!(terminate(&mut b).success());
}

/// GET `url`: the status, the headers (lower-case names) and the JSON body (null if none).
fn get_with_headers(url: &str) -> (u16, HashMap<String, String>, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let resp = common::client().get(url).send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let body = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, headers, body)
    })
}

/// The partitions `/api/status` says this instance reads, once the topic's partition count is
/// known; checked against the Kafka source's own stage.
fn held_partitions(http: &str) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = get_json(&format!("{http}/api/status")).map(|(_, v)| v);
        let coverage = status.as_ref().map(|s| s["coverage"].clone());
        if let Some(c) = coverage.filter(|c| c["topicPartitions"].is_u64()) {
            let held: Vec<i64> = c["partitions"]
                .as_array()
                .expect("partitions")
                .iter()
                .map(|p| p.as_i64().expect("a partition"))
                .collect();
            let source = status
                .as_ref()
                .and_then(|s| s["stages"].as_array())
                .and_then(|st| st.iter().find(|x| x["name"] == "kafka-source"))
                .expect("kafka-source stage");
            let mut assigned: Vec<i64> = source["detail"]["assignedPartitions"]
                .as_array()
                .expect("assigned")
                .iter()
                .map(|p| p.as_i64().expect("a partition"))
                .collect();
            assigned.sort_unstable();
            assert_eq!(held, assigned);
            assert_eq!(c["complete"], held.len() as u64 == c["topicPartitions"]);
            assert_eq!(
                c["state"],
                if c["complete"] == true {
                    "complete"
                } else {
                    "partial"
                }
            );
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "no coverage in /api/status: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What `X-Rtap-Partitions` says for `partitions` (ascending ranges).
fn ranges(partitions: &[i64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < partitions.len() {
        let start = partitions[i];
        while i + 1 < partitions.len() && partitions[i + 1] == partitions[i] + 1 {
            i += 1;
        }
        out.push(if partitions[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", partitions[i])
        });
        i += 1;
    }
    out.join(",")
}

/// Every answer a client or the dashboard reads, in an order that lets two instances be
/// compared: the fixed endpoints, one customer's orders, and SQL over the whole table.
fn answers(http: &str, customer: &str) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for path in [
        "/orders/overview",
        "/orders/overview2",
        "/orders/ordersperminute",
        "/orders/popular",
        "/orders/latestorders",
        "/orders/couponslastminute",
        "/orders/toplocations",
        "/users/",
    ] {
        let (code, _, body) = get_with_headers(&format!("{http}{path}"));
        assert_eq!(code, 200, "{path}: {body}");
        out.push((path.to_string(), body));
    }
    let (_, _, body) = get_with_headers(&format!("{http}/users/{customer}/orders"));
    out.push(("/users/{id}/orders".into(), body));
    for sql in [
        // Sums of doubles are rounded: replicas add the same rows in another order, which
        // moves the last binary digits (the endpoints round money to the cent).
        "SELECT COUNT(*), ROUND(SUM(order_total), 2), MIN(time_ms), MAX(time_ms) FROM orders",
        "SELECT shipping_status, COUNT(*), SUM(totalQuantity) FROM orders GROUP BY shipping_status ORDER BY shipping_status",
        "SELECT coupon, COUNT(*) FROM orders GROUP BY coupon ORDER BY coupon",
    ] {
        out.push((sql.to_string(), json!(common::sql_rows(http, sql))));
    }
    out
}

/// Asks A, then B, then A again until A's two answers agree (nothing moved between, e.g. a
/// minute boundary), then B's must equal them. Bounded in attempts.
fn assert_same_answers(a: &str, b: &str) {
    let latest = get_json(&format!("{a}/orders/latestorders"))
        .expect("latest")
        .1;
    let customer = latest[0]["customerId"]
        .as_str()
        .expect("a customer")
        .to_string();
    for attempt in 0..10 {
        let first = answers(a, &customer);
        let other = answers(b, &customer);
        let again = answers(a, &customer);
        if first != again {
            assert!(attempt < 9, "A's answers kept moving");
            continue;
        }
        for ((what, x), (_, y)) in first.iter().zip(&other) {
            assert_eq!(x, y, "{what}: the replicas disagree");
        }
        return;
    }
}

#[test]
fn replicas_on_one_topic_hold_the_same_table_and_catch_up_after_a_kill() {
    let _serial = serial();
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 12_000u64;
    let producer_dir = dir.path().join("producer");
    let run_producer = |more: u64| {
        let status = produce(
            &broker.addr(),
            &producer_dir,
            &["--from", "generator", "--rate", "6000", "--seed", "9"],
        )
        .args(["--max-orders", &more.to_string(), "--partitions", "4"])
        .status()
        .expect("rtap produce");
        assert!(status.success(), "rtap produce: {status}");
    };
    let (mut a, http_a) = serve(&dir.path().join("a"), &broker.addr(), &["--replica"]);
    let (mut b, http_b) = serve(&dir.path().join("b"), &broker.addr(), &["--replica"]);
    run_producer(n);
    wait_count(&http_a, n, Duration::from_secs(120));
    wait_count(&http_b, n, Duration::from_secs(120));
    assert_exactly(&table_ids(&http_a), &generated_ids(9, n));
    assert_exactly(&table_ids(&http_b), &generated_ids(9, n));
    // Each reads every partition, in a group of its own.
    assert_eq!(held_partitions(&http_a), vec![0, 1, 2, 3]);
    assert_eq!(held_partitions(&http_b), vec![0, 1, 2, 3]);
    let group = |http: &str| {
        get_json(&format!("{http}/api/status")).expect("status").1["stages"]
            .as_array()
            .and_then(|st| st.iter().find(|x| x["name"] == "kafka-source").cloned())
            .expect("kafka-source")["detail"]["group"]
            .as_str()
            .expect("group")
            .to_string()
    };
    let (ga, gb) = (group(&http_a), group(&http_b));
    assert!(
        ga.starts_with("rtap-replica-") && gb.starts_with("rtap-replica-"),
        "{ga} {gb}"
    );
    assert_ne!(ga, gb);
    let (_, headers, _) = get_with_headers(&format!("{http_a}/orders/popular"));
    assert_eq!(
        headers.get("x-rtap-coverage").map(String::as_str),
        Some("complete")
    );
    assert_eq!(
        headers.get("x-rtap-partitions").map(String::as_str),
        Some("0-3")
    );
    assert_same_answers(&http_a, &http_b);
    // B dies; more orders arrive; B comes back on its directory and catches up.
    kill9(&mut b);
    run_producer(3_000); // 3,000 more: it resumes after the last order confirmed
    wait_count(&http_a, n + 3_000, Duration::from_secs(120));
    let (mut b, http_b) = serve(&dir.path().join("b"), &broker.addr(), &["--replica"]);
    wait_count(&http_b, n + 3_000, Duration::from_secs(120));
    assert_exactly(&table_ids(&http_b), &generated_ids(9, n + 3_000));
    assert_eq!(group(&http_b), gb, "the same group across a restart");
    // Caught up: the load balancer's check passes with no lag allowed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = get_json(&format!("{http_b}/health?maxLag=0")).expect("health");
        if code == 200 {
            assert_eq!(body["lag"], 0);
            break;
        }
        assert_eq!(body["status"], "behind");
        assert!(
            Instant::now() < deadline,
            "B never caught up: {body}; status: {}",
            get_json(&format!("{http_b}/api/status")).map_or(serde_json::Value::Null, |r| r.1)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_same_answers(&http_a, &http_b);
    assert!(terminate(&mut a).success());
    assert!(terminate(&mut b).success());
}

#[test]
fn poison_messages_go_to_dead_letters_and_the_partition_goes_on() {
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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
    let _serial = serial();
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

/// Java's `Utils.murmur2` (what Kafka's Java producer and Pinot's "Murmur" partition function
/// hash a key with), and `toPositive`.
fn java_murmur2(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Java's default partitioner picks for `key`.
fn java_murmur2_partition(key: &[u8], partitions: u32) -> u32 {
    (java_murmur2(key) & 0x7fff_ffff) % partitions
}

#[test]
fn produced_orders_land_where_a_java_producer_puts_them() {
    let _serial = serial();
    // `rtap pinot-config --partitions` tells Pinot the topic is partitioned by Murmur on
    // order_id: true only if rtap's producer picks partitions as Java clients do.
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 2_000u64;
    let status = produce(
        &broker.addr(),
        &dir.path().join("producer"),
        &["--from", "generator", "--rate", "0", "--seed", "10"],
    )
    .args(["--max-orders", &n.to_string(), "--partitions", "5"])
    .status()
    .expect("rtap produce");
    assert!(status.success());
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("group.id", "murmur-check")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["FakeEcommOrders"]).expect("subscribe");
    let (mut seen, mut per_partition) = (0u64, [0u64; 5]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < n {
        assert!(Instant::now() < deadline, "read {seen} of {n}");
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        use rdkafka::Message;
        let key = m.key().expect("keyed by order_id");
        assert_eq!(
            m.partition() as u32,
            java_murmur2_partition(key, 5),
            "order {}",
            String::from_utf8_lossy(key)
        );
        per_partition[m.partition() as usize] += 1;
        seen += 1;
    }
    assert!(per_partition.iter().all(|c| *c > 200), "{per_partition:?}");
}

#[test]
fn the_murmur2_here_is_javas() {
    let _serial = serial();
    // Values of org.apache.kafka.common.utils.Utils.murmur2 (Kafka's own UtilsTest):
    // murmur2("21".getBytes()) == -973932308, murmur2("foobar") == -790332482,
    // murmur2("a-little-bit-long-string") == -985981536, murmur2("a-little-bit-longer-string")
    // == -1486304829, murmur2("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971,
    // murmur2({'a','b','c'}) == 479470107.
    for (key, java) in [
        ("21", -973_932_308i32),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        ("abc", 479_470_107),
    ] {
        assert_eq!(java_murmur2(key.as_bytes()), java as u32, "{key}");
    }
}

/// `rtap serve --kafka` on a given analytics port (so it can come back on the same one).
fn serve_on(
    data: &std::path::Path,
    broker: &str,
    port: u16,
    extra: &[&str],
) -> (common::Running, String) {
    let mut cmd = rtap();
    cmd.args([
        "serve",
        "--http-port",
        &port.to_string(),
        "--dashboard-port",
        "0",
    ])
    .args([
        "--checkpoint-interval",
        "0.5",
        "--kafka",
        broker,
        "--data-dir",
    ])
    .arg(data)
    .args(extra)
    .stderr(Stdio::null());
    let s = common::start(cmd);
    (s.child, s.http.expect("analytics URL"))
}

#[test]
fn olap_sends_every_endpoint_to_the_pinot_broker_and_says_so_when_it_is_gone() {
    let _serial = serial();
    // A second rtap on the same topic speaks Pinot's broker API: B's answers must equal A's
    // own, come from A, and fail clearly while A is away.
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 5_000u64;
    let port = common::free_port();
    let (mut a, http_a) = serve_on(&dir.path().join("a"), &broker.addr(), port, &["--replica"]);
    let olap = format!("pinot://127.0.0.1:{port}");
    let (mut b, http_b) = serve(
        &dir.path().join("b"),
        &broker.addr(),
        &["--replica", "--olap", &olap],
    );
    let status = produce(
        &broker.addr(),
        &dir.path().join("producer"),
        &["--from", "generator", "--rate", "5000", "--seed", "11"],
    )
    .args(["--max-orders", &n.to_string(), "--partitions", "3"])
    .status()
    .expect("rtap produce");
    assert!(status.success());
    wait_count(&http_a, n, Duration::from_secs(120));
    wait_count(&http_b, n, Duration::from_secs(120));
    // That count of B's came from A (the broker): B's own table and windows, which answer the
    // endpoints the broker does not, catch up on their own. Ingest counts a batch's rows after
    // the table, the recent answers and the windows have it.
    let own_rows = || {
        get_json(&format!("{http_b}/api/status")).and_then(|(_, s)| {
            s["stages"]
                .as_array()?
                .iter()
                .find(|x| x["name"] == "ingest")?["detail"]["rows"]
                .as_u64()
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while own_rows() != Some(n) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(own_rows(), Some(n), "B's own ingest");
    assert_same_answers(&http_a, &http_b);
    let stage = |http: &str, name: &str| {
        get_json(&format!("{http}/api/status")).expect("status").1["stages"]
            .as_array()
            .and_then(|st| st.iter().find(|x| x["name"] == name).cloned())
    };
    let olap_stage = stage(&http_b, "olap").expect("an olap stage");
    assert_eq!(olap_stage["state"], "running", "{olap_stage}");
    assert_eq!(
        olap_stage["detail"]["broker"],
        format!("http://127.0.0.1:{port}")
    );
    assert!(
        stage(&http_a, "olap").is_none(),
        "A answers from its own table"
    );
    // B's broker answers are not described by B's partitions; its own ones are.
    let coverage = |http: &str, path: &str| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let resp = common::client()
                    .get(format!("{http}{path}"))
                    .send()
                    .await
                    .expect("get");
                resp.headers()
                    .get("x-rtap-coverage")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
    };
    assert_eq!(
        coverage(&http_b, "/orders/latestorders").as_deref(),
        Some("olap")
    );
    // B's count above came from A (the broker): B's own consumer may still be catching up, and
    // its own answers say "partial" until it has. Either instance says "unknown" until its
    // client's statistics (every second) have listed the topic's partitions, which can be after
    // it has read every order.
    let complete = |http: &str, path: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while coverage(http, path).as_deref() != Some("complete")
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            coverage(http, path).as_deref(),
            Some("complete"),
            "{path} of {http}; status: {}",
            get_json(&format!("{http}/api/status"))
                .map(|(_, s)| s.to_string())
                .unwrap_or_default()
        );
    };
    complete(&http_b, "/orders/popular");
    complete(&http_a, "/orders/latestorders");

    // A goes away: B's SQL answers fail with a clear error, its windows still answer, and its
    // status says what is wrong.
    kill9(&mut a);
    let (code, body) = get_json(&format!("{http_b}/orders/latestorders")).expect("answer");
    assert_eq!(code, 503, "{body}");
    let error = body["error"].as_str().expect("error").to_string();
    assert!(
        error.contains("Pinot broker at http://127.0.0.1:") && error.contains("unreachable"),
        "{error}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (code, body) = rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{http_b}/query/sql"))
            .json(&json!({"sql": "SELECT COUNT(*) FROM orders"}))
            .send()
            .await
            .expect("post");
        (
            resp.status().as_u16(),
            resp.json::<serde_json::Value>().await.expect("json"),
        )
    });
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["exceptions"][0]["errorCode"], 427, "{body}");
    // Every endpoint sent to the broker says so; the item and coupon grains stay local.
    for path in [
        "/orders/overview2",
        "/orders/ordersperminute",
        "/orders/toplocations",
        "/users/",
        "/orders/latestorders",
    ] {
        let (code, body) = get_json(&format!("{http_b}{path}")).expect("answer");
        assert_eq!(code, 503, "{path}: {body}");
    }
    for path in ["/orders/popular", "/orders/couponslastminute"] {
        let (code, body) = get_json(&format!("{http_b}{path}")).expect("answer");
        assert_eq!(code, 200, "{path}: {body}");
    }
    let (code, overview) = get_json(&format!("{http_b}/orders/overview")).expect("overview");
    assert_eq!(code, 200, "the windows stay in rtap: {overview}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = stage(&http_b, "olap").expect("olap stage");
        if s["state"] == "waiting" {
            assert!(
                s["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("unreachable")),
                "{s}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the olap stage still says {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _) = get_json(&format!("{http_b}/health")).expect("health");
    assert_eq!(code, 200, "ingest and windows still run");

    // A comes back on its port: B answers again, equal to A.
    let (mut a, http_a) = serve_on(&dir.path().join("a"), &broker.addr(), port, &["--replica"]);
    wait_count(&http_a, n, Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&format!("{http_b}/orders/latestorders")).map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "B did not answer again");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_same_answers(&http_a, &http_b);
    assert!(terminate(&mut a).success());
    assert!(terminate(&mut b).success());
}
