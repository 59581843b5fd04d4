//! The Kafka source (the library, driven by a stand-in for the ingest loop) against a real
//! Kafka-protocol broker (tansu, see `common::Broker`): what it does when ingest is behind (its
//! partitions paused) and the group rebalances.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Broker;
use ingest::{ByteBudget, SourceEvent};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sources::kafka::consumer::SourceStatus;
use sources::kafka::{self, KafkaConfig};
use sources::Source;
use tokio::sync::mpsc;

/// The source's state on its status report ("running", "paused", "waiting").
fn state(source: &kafka::consumer::KafkaSource) -> &'static str {
    source.report().map_or("none", |r| r.state)
}

/// The test's stand-in for the ingest loop: answers what the source asks (checkpoints:
/// nothing to commit; releases) and records the (partition, offset) of every message handed
/// over, holding the batches (their budget shares) while `hold` is set.
struct FakeIngest {
    rx: mpsc::Receiver<SourceEvent>,
    seen: BTreeSet<(i32, i64)>,
    held: Vec<ingest::Batch>,
    hold: bool,
    /// Checkpoints asked for: one per revocation.
    revocations: usize,
    status: Arc<SourceStatus>,
    /// The source's pause count when the last revocation was answered (no pause can come
    /// between that answer and the end of the revocation).
    pauses_at_revocation: u64,
}

impl FakeIngest {
    fn serve(&mut self) {
        while let Ok(event) = self.rx.try_recv() {
            match event {
                SourceEvent::Batch(b) => {
                    self.seen.extend(
                        b.messages
                            .iter()
                            .map(|m| (m.position.partition, m.position.offset)),
                    );
                    if self.hold {
                        self.held.push(b);
                    }
                }
                SourceEvent::Checkpoint(reply) => {
                    self.revocations += 1;
                    let _ = reply.send(Some(ingest::Offsets::new()));
                    self.pauses_at_revocation = self.status.pauses.load(Ordering::Acquire);
                }
                SourceEvent::Release(_) => {}
            }
        }
    }

    /// Waits until at least `at_least` revocations were answered and the source has paused
    /// since the last one (ingest behind: the one held batch keeps the budget).
    fn wait_paused(&mut self, at_least: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.serve();
            let paused = self.status.paused.load(Ordering::Acquire);
            let pauses = self.status.pauses.load(Ordering::Acquire);
            if self.revocations >= at_least && paused && pauses > self.pauses_at_revocation {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} revocations, paused {paused}, {pauses} pauses ({} at the last \
                 revocation)",
                self.revocations,
                self.pauses_at_revocation
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            self.held.len(),
            1,
            "{what}: the held batch keeps the budget"
        );
    }
}

/// Sends `count` messages of 1,000 bytes from `first` on, alternately to partitions 0 and 1.
fn produce(producer: &BaseProducer, topic: &str, first: i64, count: i64) {
    let payload = vec![b'x'; 1_000];
    for i in first..first + count {
        let key = format!("k{i}");
        let mut record = BaseRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .partition(i32::from(i % 2 == 1));
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

#[test]
fn a_rebalance_while_ingest_is_behind_does_not_leave_the_partitions_paused() {
    let broker = Broker::start_with("memory://tansu/");
    let config = KafkaConfig {
        brokers: broker.addr(),
        topic: "paused".into(),
        partitions: 2,
        group: "pause-test".into(),
        ..KafkaConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime
        .block_on(kafka::admin::ensure_topic(&config, Duration::from_secs(20)))
        .expect("topic");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()
        .expect("producer");
    let (first, n) = (20i64, 5_000i64);
    produce(&producer, &config.topic, 0, first);

    // A budget smaller than one batch: while the first batch is held, nothing more is handed
    // over and the source pauses its partitions on the next batch.
    let (tx, rx) = mpsc::channel(4);
    let source = kafka::consumer::start(
        &config,
        tx,
        ByteBudget::new(1_000),
        &sources::metrics::SourceMetrics::default(),
    )
    .expect("source");
    let mut ingest = FakeIngest {
        rx,
        seen: BTreeSet::new(),
        held: Vec::new(),
        hold: true,
        revocations: 0,
        status: source.status.clone(),
        pauses_at_revocation: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ingest.held.is_empty() {
        assert!(Instant::now() < deadline, "nothing handed over");
        ingest.serve();
        std::thread::sleep(Duration::from_millis(20));
    }
    produce(&producer, &config.topic, first, n - first);
    // Each partition holds n / 2 messages, at offsets from 0 (tansu's high watermark is not
    // used: it can lag its last batch).
    let all: BTreeSet<(i32, i64)> = (0..2i32)
        .flat_map(|p| (0..n / 2).map(move |o| (p, o)))
        .collect();
    ingest.wait_paused(0, "ingest behind");

    // A second member joins: the partitions are revoked while paused, and this member reads
    // what it is given again (and pauses again, as ingest is still behind).
    let other: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .expect("second consumer");
    other
        .subscribe(&[config.topic.as_str()])
        .expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    while other.assignment().map_or(0, |a| a.count()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the second member got no partition"
        );
        let _ = other.poll(Duration::from_millis(50));
        ingest.serve();
    }
    ingest.wait_paused(1, "after the join");
    // It leaves: another revocation while paused, then the whole topic comes back here.
    other.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(60);
    while other.assignment().map_or(0, |a| a.count()) > 0 {
        assert!(
            Instant::now() < deadline,
            "the second member kept its partitions"
        );
        let _ = other.poll(Duration::from_millis(50));
        ingest.serve();
    }
    // Closing waits for the broker's answer to leaving, which may wait for the group: on its
    // own thread, while the source's revocation is answered here.
    let closing = std::thread::spawn(move || drop(other));
    ingest.wait_paused(2, "after the leave");

    // Ingest catches up: everything arrives (read again from the start, as nothing was
    // committed), however the partitions were paused when the group moved them.
    ingest.hold = false;
    ingest.held.clear();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ingest.seen.is_superset(&all) {
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages handed over; source state {}",
            ingest.seen.intersection(&all).count(),
            state(&source)
        );
        ingest.serve();
        std::thread::sleep(Duration::from_millis(20));
    }
    let extra: Vec<_> = ingest.seen.difference(&all).collect();
    assert!(
        extra.is_empty(),
        "handed over but never produced: {extra:?}"
    );
    assert_eq!(source.failure(), None);
    closing.join().expect("the second member closed");
    source.stop();
    drop(ingest);
    source.join();
}
