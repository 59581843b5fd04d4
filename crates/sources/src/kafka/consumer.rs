//! The consumer-group source for ingest ([`KafkaSource`]).
//!
//! One thread polls a [`BaseConsumer`] and hands the ingest loop batches of owned messages
//! ([`ingest::SourceEvent::Batch`]). Offsets are never auto-committed: the ingest loop sends the
//! positions of each durable checkpoint back through [`SourceHandle::commits`], and only those
//! are committed ([`Source::checkpointed`]). When the group takes partitions away, the rebalance callback asks the ingest
//! loop to checkpoint everything handed over so far ([`ingest::SourceEvent::Checkpoint`]),
//! commits the answer, and only then lets the partitions go: the next owner starts exactly
//! where this one's durable table ends. After a crash the group's committed offsets are at or
//! before the last checkpoint, and ingest's dedup drops what is read twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ingest::{OwnedMessage, Position, SourceEvent};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tokio::sync::mpsc;

use super::{KafkaConfig, KafkaError};
use crate::{CheckpointHook, Offsets, Source, SourceReport};

/// Most messages handed over as one batch.
const MAX_BATCH: usize = 20_000;
/// How long a rebalance waits for the ingest loop's checkpoint.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(20);
/// How long shutdown waits for the consumer's last commit and group leave.
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// What the source is doing, for status pages and logs.
#[derive(Debug, Default)]
pub struct SourceStatus {
    /// Messages read (the `rtap_kafka_messages_total` counter).
    pub messages: prometheus_client::metrics::counter::Counter,
    pub waiting_for_topic: AtomicBool,
    pub assigned: Mutex<Vec<i32>>,
    pub last_error: Mutex<Option<String>>,
    closing: AtomicBool,
    /// Counts revocations, so the poll loop can tell that one happened while it built a batch.
    revocations: AtomicU64,
}

impl SourceStatus {
    fn error(&self, e: String) {
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e);
        }
    }
}

struct SourceContext {
    tx: mpsc::Sender<SourceEvent>,
    topic: String,
    status: Arc<SourceStatus>,
}

impl ClientContext for SourceContext {
    fn error(&self, error: RdError, reason: &str) {
        tracing::warn!(error = %error, reason, "kafka client error (librdkafka retries by itself)");
        self.status.error(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        if tpl.count() == 0 || self.status.closing.load(Ordering::Acquire) {
            return;
        }
        self.status.revocations.fetch_add(1, Ordering::AcqRel);
        let losing: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        tracing::info!(partitions = ?losing, "partitions revoked: checkpointing what was read from them before letting go");
        let (reply_tx, reply_rx) = std_mpsc::channel();
        if self
            .tx
            .blocking_send(SourceEvent::Checkpoint(reply_tx))
            .is_err()
        {
            return;
        }
        match reply_rx.recv_timeout(CHECKPOINT_WAIT) {
            Ok(offsets) => {
                let mine: Offsets = offsets
                    .into_iter()
                    .filter(|(p, _)| losing.contains(p))
                    .collect();
                commit(consumer, &self.topic, &mine, CommitMode::Sync, &self.status);
            }
            Err(_) => tracing::error!(
                "no checkpoint within {CHECKPOINT_WAIT:?} before a rebalance; the next owner may re-read (dedup drops repeats)"
            ),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(topic = %self.topic, partitions = ?partitions, "partitions assigned");
            if let Ok(mut a) = self.status.assigned.lock() {
                *a = partitions;
            }
        }
    }
}

fn commit(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    offsets: &Offsets,
    mode: CommitMode,
    status: &SourceStatus,
) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, next) in offsets {
        if !owned_partition(consumer, topic, *p) {
            // Another member owns it now: its offsets are that member's to commit.
            continue;
        }
        if let Err(e) = tpl.add_partition_offset(topic, *p, Offset::Offset(*next)) {
            tracing::warn!(error = %e, partition = p, "bad offset to commit");
        }
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        tracing::warn!(error = %e, "could not commit offsets (the next checkpoint commits again)");
        status.error(format!("commit: {e}"));
    }
}

/// The running source.
pub struct KafkaSource {
    config: KafkaConfig,
    thread: Mutex<Option<JoinHandle<()>>>,
    stop: Arc<AtomicBool>,
    polling_done: Arc<AtomicBool>,
    /// The positions of each durable checkpoint go here; they are committed to the group.
    commits: std_mpsc::Sender<Offsets>,
    pub status: Arc<SourceStatus>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").finish_non_exhaustive()
    }
}

impl Source for KafkaSource {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn describe(&self) -> String {
        format!(
            "Kafka topic {} on {}",
            self.config.topic, self.config.brokers
        )
    }

    fn on_checkpoint(&self) -> CheckpointHook {
        let commits = self.commits.clone();
        Box::new(move |positions| {
            let _ = commits.send(positions.clone());
        })
    }

    fn stop(&self) {
        self.stop_polling();
    }

    fn join(&self) {
        self.join_thread();
    }

    fn report(&self) -> Option<SourceReport> {
        let status = &self.status;
        let waiting = status.waiting_for_topic.load(Ordering::Relaxed);
        let assigned = status
            .assigned
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        Some(SourceReport {
            name: "kafka-source",
            state: if waiting { "waiting" } else { "running" },
            detail: serde_json::json!({
                "brokers": self.config.brokers, "topic": self.config.topic,
                "group": self.config.group,
                "assignedPartitions": assigned,
                "messages": status.messages.get(),
                "waitingForTopic": waiting,
            }),
            last_error: status.last_error.lock().ok().and_then(|e| e.clone()),
        })
    }

    fn lag(&self, _ingested: &Offsets) -> Option<u64> {
        None
    }
}

impl KafkaSource {
    /// Stops polling (nothing more is handed over after this returns).
    pub fn stop_polling(&self) {
        self.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.polling_done.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the thread: it commits the last checkpoint's offsets and leaves the group. With
    /// the broker gone that can block inside librdkafka; after `JOIN_WAIT` the thread is left to
    /// end with the process (the checkpoint is durable; the next start re-reads from the last
    /// commit and dedup drops the repeats).
    pub fn join_thread(&self) {
        self.stop.store(true, Ordering::Release);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let deadline = Instant::now() + JOIN_WAIT;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("the Kafka consumer did not close within {JOIN_WAIT:?} (broker unreachable?); exiting without its last commit");
            }
        }
    }
}

/// Subscribes to the topic and starts handing batches to `tx`.
pub fn start(
    config: &KafkaConfig,
    tx: mpsc::Sender<SourceEvent>,
    metrics: &crate::metrics::SourceMetrics,
) -> Result<KafkaSource, KafkaError> {
    let status = Arc::new(SourceStatus {
        messages: metrics.kafka_messages.clone(),
        ..SourceStatus::default()
    });
    let context = SourceContext {
        tx: tx.clone(),
        topic: config.topic.clone(),
        status: status.clone(),
    };
    let mut client = ClientConfig::new();
    if let Some(id) = &config.instance_id {
        client.set("group.instance.id", id);
    }
    let consumer: BaseConsumer<SourceContext> = client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false")
        // Notice a topic created after rtap started within a second, not five minutes.
        .set("topic.metadata.refresh.interval.ms", "1000")
        // Answer a fetch as soon as anything is there, not after the default 500 ms wait for a
        // fuller batch: freshness matters more than fetch count at these rates.
        .set("fetch.wait.max.ms", "20")
        .set("session.timeout.ms", "10000")
        // Also the rebalance timeout: how long the group waits for a member that died without
        // leaving (kill -9) before it hands its partitions to the others.
        .set("max.poll.interval.ms", "30000")
        .set("heartbeat.interval.ms", "1000")
        .create_with_context(context)
        .map_err(KafkaError::client("consumer"))?;
    consumer
        .subscribe(&[config.topic.as_str()])
        .map_err(KafkaError::client(format!(
            "subscribing to {}",
            config.topic
        )))?;
    let (commits, commit_rx) = std_mpsc::channel::<Offsets>();
    let stop = Arc::new(AtomicBool::new(false));
    let polling_done = Arc::new(AtomicBool::new(false));
    let topic = config.topic.clone();
    let thread = {
        let stop = stop.clone();
        let polling_done = polling_done.clone();
        let status = status.clone();
        std::thread::Builder::new()
            .name("rtap-kafka-source".into())
            .spawn(move || {
                poll_loop(&consumer, &topic, &tx, &commit_rx, &stop, &status);
                polling_done.store(true, Ordering::Release);
                drop(tx);
                // The ingest loop's last checkpoint comes after it drained what we handed over.
                let mut last = commit_rx.recv_timeout(CHECKPOINT_WAIT).ok();
                while let Ok(o) = commit_rx.try_recv() {
                    last = Some(o);
                }
                if let Some(o) = last {
                    commit(&consumer, &topic, &o, CommitMode::Sync, &status);
                }
                status.closing.store(true, Ordering::Release);
                drop(consumer);
            })
            .map_err(|e| KafkaError::Other(format!("cannot start the Kafka source thread: {e}")))?
    };
    Ok(KafkaSource {
        config: config.clone(),
        thread: Mutex::new(Some(thread)),
        stop,
        polling_done,
        commits,
        status,
    })
}

/// Whether this member is assigned `partition` right now (inside a revoke callback the
/// partitions being revoked still count).
fn owned_partition(consumer: &BaseConsumer<SourceContext>, topic: &str, partition: i32) -> bool {
    consumer
        .assignment()
        .map(|a| a.find_partition(topic, partition).is_some())
        .unwrap_or(false)
}

fn owned(m: &rdkafka::message::BorrowedMessage<'_>) -> OwnedMessage {
    OwnedMessage {
        position: Position {
            partition: m.partition(),
            offset: m.offset(),
        },
        payload: m.payload().unwrap_or_default().to_vec(),
        record_time_ms: m.timestamp().to_millis(),
    }
}

fn poll_loop(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    tx: &mpsc::Sender<SourceEvent>,
    commit_rx: &std_mpsc::Receiver<Offsets>,
    stop: &AtomicBool,
    status: &SourceStatus,
) {
    let mut waiting_said: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        let mut latest = None;
        while let Ok(o) = commit_rx.try_recv() {
            latest = Some(o);
        }
        if let Some(o) = latest {
            commit(consumer, topic, &o, CommitMode::Async, status);
        }
        let mut batch = Vec::new();
        let mut timeout = Duration::from_millis(100);
        while batch.len() < MAX_BATCH {
            let revocations = status.revocations.load(Ordering::Acquire);
            let polled = consumer.poll(timeout);
            if status.revocations.load(Ordering::Acquire) != revocations {
                // Partitions were revoked inside that poll, after a checkpoint of what had been
                // handed over: what this batch holds lies past the committed offsets and will be
                // read again by whoever owns those partitions now (this member included).
                batch.clear();
            }
            match polled {
                None => break,
                Some(Ok(m)) => {
                    batch.push(owned(&m));
                    if status.waiting_for_topic.swap(false, Ordering::AcqRel) {
                        tracing::info!(topic, "the topic is there now; reading");
                    }
                }
                Some(Err(RdError::MessageConsumption(
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
                ))) => {
                    status.waiting_for_topic.store(true, Ordering::Release);
                    if waiting_said.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(
                            topic,
                            "waiting for the topic to exist (create it, or start `rtap produce`)"
                        );
                        waiting_said = Some(Instant::now());
                    }
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consumer error; continuing");
                    status.error(e.to_string());
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        if !batch.is_empty() {
            status.messages.inc_by(batch.len() as u64);
            if tx.blocking_send(SourceEvent::Batch(batch)).is_err() {
                return;
            }
        }
    }
}
