//! The Kafka source against a real Kafka-protocol broker (tansu, started here from
//! `RTAP_TANSU`, which `scripts/test.sh` installs): what it does when ingest is behind (its
//! partitions paused) and the group rebalances.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ingest::{ByteBudget, SourceEvent};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sources::kafka::{self, KafkaConfig};
use sources::Source;
use tokio::sync::mpsc;

/// The broker process, killed when dropped, and its working directory (removed after it).
struct Tansu {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu(port: u16) -> Tansu {
    let bin =
        std::env::var("RTAP_TANSU").unwrap_or_else(|_| "/var/cache/rtap/tansu/bin/tansu".into());
    assert!(
        std::path::Path::new(&bin).exists(),
        "tansu is needed at {bin} (scripts/test.sh installs it; or set RTAP_TANSU)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Tansu { child, _dir: dir }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The source's state on its status report ("running", "paused", "waiting").
fn state(source: &kafka::consumer::KafkaSource) -> &'static str {
    source.report().map_or("none", |r| r.state)
}

/// Answers what the source asks of ingest (checkpoints: nothing to commit; releases) and
/// collects the (partition, offset) of every message it hands over, holding the batches'
/// budget shares only when `hold` is given.
fn serve_events(
    rx: &mut mpsc::Receiver<SourceEvent>,
    seen: &mut BTreeSet<(i32, i64)>,
    mut hold: Option<&mut Vec<ingest::Batch>>,
) {
    while let Ok(event) = rx.try_recv() {
        match event {
            SourceEvent::Batch(b) => {
                seen.extend(
                    b.messages
                        .iter()
                        .map(|m| (m.position.partition, m.position.offset)),
                );
                if let Some(held) = hold.as_deref_mut() {
                    held.push(b);
                }
            }
            SourceEvent::Checkpoint(reply) => {
                let _ = reply.send(Some(ingest::Offsets::new()));
            }
            SourceEvent::Release(_) => {}
        }
    }
}

#[test]
fn a_rebalance_while_ingest_is_behind_does_not_leave_the_partitions_paused() {
    let port = free_port();
    let _broker = tansu(port);
    let config = KafkaConfig {
        brokers: format!("127.0.0.1:{port}"),
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
    let n = 5_000i64;
    let payload = vec![b'x'; 1_000];
    for i in 0..n {
        let key = format!("k{i}");
        let mut record = BaseRecord::to(&config.topic).key(&key).payload(&payload);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(10));
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    // A budget smaller than one batch: while the first batch is held, the source must pause.
    let (tx, mut rx) = mpsc::channel(4);
    let source = kafka::consumer::start(
        &config,
        tx,
        ByteBudget::new(1_000),
        &sources::metrics::SourceMetrics::default(),
    )
    .expect("source");
    let mut seen = BTreeSet::new();
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while held.is_empty() || state(&source) != "paused" {
        assert!(Instant::now() < deadline, "the source never paused");
        serve_events(&mut rx, &mut seen, Some(&mut held));
        std::thread::sleep(Duration::from_millis(20));
    }

    // A second member joins and leaves: two rebalances while the partitions are paused.
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
        serve_events(&mut rx, &mut seen, Some(&mut held));
    }
    other.unsubscribe();
    let _ = other.poll(Duration::from_millis(100));
    drop(other);

    // Ingest catches up: everything must arrive (read again from the start, as nothing was
    // committed), however the partitions were paused when the group moved them.
    held.clear();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < n as usize {
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages handed over; source state {}",
            seen.len(),
            state(&source)
        );
        serve_events(&mut rx, &mut seen, None);
        std::thread::sleep(Duration::from_millis(20));
    }
    let offsets: BTreeSet<i64> = seen.iter().map(|(_, o)| *o).collect();
    assert!(offsets.iter().all(|o| (0..n).contains(o)), "{offsets:?}");
    source.stop();
    drop(rx);
    source.join();
}
