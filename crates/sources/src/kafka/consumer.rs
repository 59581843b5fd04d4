//! The consumer-group source for ingest ([`KafkaSource`]).
//!
//! One thread polls a [`BaseConsumer`] and hands the ingest loop batches of owned messages
//! ([`ingest::SourceEvent::Batch`]), each holding its share of ingest's pending-bytes budget;
//! when the budget is spent the partitions are paused (and the consumer keeps polling, so it
//! stays in its group). Offsets are never auto-committed: the ingest loop hands the positions of
//! each durable checkpoint to the hook of [`Source::on_checkpoint`], and only those are
//! committed. When the group takes partitions away, the rebalance callback asks the ingest
//! loop to checkpoint everything handed over so far ([`ingest::SourceEvent::Checkpoint`]),
//! commits the answer, and only then lets the partitions go: the next owner starts exactly
//! where this one's durable table ends. After a crash the group's committed offsets are at or
//! before the last checkpoint, and ingest's dedup drops what is read twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ingest::{Batch, ByteBudget, OwnedMessage, Position, SourceEvent};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tokio::sync::mpsc;

pub use super::status::SourceStatus;
use super::{KafkaConfig, KafkaError};
use crate::{CheckpointHook, Offsets, Source, SourceReport};

/// Most messages handed over as one batch.
const MAX_BATCH: usize = 20_000;
/// Most payload bytes handed over as one batch (so it fits the pending-bytes budget easily).
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
/// How often librdkafka reports the partitions' high watermarks and positions (for lag).
const STATISTICS_EVERY_MS: &str = "1000";
/// How long a rebalance waits for the ingest loop's checkpoint.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(20);
/// A revocation's waits (hand over the request, the checkpoint, the release): together under
/// `max.poll.interval.ms` (30 s), or the group would count this member gone mid-revocation.
const REVOKE_SEND_WAIT: Duration = Duration::from_secs(5);
const REVOKE_CHECKPOINT_WAIT: Duration = Duration::from_secs(15);
const REVOKE_RELEASE_WAIT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the consumer's last commit and group leave.
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// Sends `event` to the ingest loop within `wait`; false when it could not (full or closed).
fn send_within(tx: &mpsc::Sender<SourceEvent>, mut event: SourceEvent, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        match tx.try_send(event) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(back)) => {
                if Instant::now() >= deadline {
                    return false;
                }
                event = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

struct SourceContext {
    tx: mpsc::Sender<SourceEvent>,
    topic: String,
    status: Arc<SourceStatus>,
}

impl ClientContext for SourceContext {
    /// librdkafka's statistics (every second), read as plain JSON (only the fields needed, so a
    /// broker that leaves others out does not matter): the high watermark and the position of
    /// every partition this member is assigned, for lag.
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(statistics) else {
            return;
        };
        let Some(partitions) = v["topics"][&self.topic]["partitions"].as_object() else {
            return;
        };
        // Every partition the topic's metadata lists is in the statistics (assigned here or
        // not), plus librdkafka's internal "-1".
        let known = partitions
            .values()
            .filter(|p| p["partition"].as_i64().is_some_and(|n| n >= 0))
            .count();
        if known > 0 {
            self.status.topic_partitions.store(known, Ordering::Release);
        }
        let marks = partitions
            .values()
            .filter_map(|p| {
                let partition = i32::try_from(p["partition"].as_i64()?).ok()?;
                let high = p["hi_offset"].as_i64()?;
                let assigned = p["desired"].as_bool().unwrap_or(false);
                (partition >= 0 && assigned && high >= 0).then(|| {
                    let position = ["app_offset", "committed_offset"]
                        .iter()
                        .filter_map(|k| p[*k].as_i64())
                        .find(|o| *o >= 0);
                    let low = p["lo_offset"].as_i64().unwrap_or(0).clamp(0, high);
                    (partition, (high, low, position))
                })
            })
            .collect();
        if let Ok(mut m) = self.status.watermarks.lock() {
            *m = marks;
        }
    }

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
        let answer = if send_within(
            &self.tx,
            SourceEvent::Checkpoint(reply_tx),
            REVOKE_SEND_WAIT,
        ) {
            reply_rx.recv_timeout(REVOKE_CHECKPOINT_WAIT).ok().flatten()
        } else {
            None
        };
        match answer {
            Some(offsets) => {
                let mine: Offsets = offsets
                    .into_iter()
                    .filter(|(p, _)| losing.contains(p))
                    .collect();
                if !commit(consumer, &self.topic, &mine, CommitMode::Sync, &self.status) {
                    // The next owner would start from an older commit: rows again, which dedup
                    // drops only within its horizon. Start over from the checkpoint instead.
                    self.status.restart(format!(
                        "the offsets of revoked partitions {losing:?} could not be committed"
                    ));
                }
            }
            None => self.status.restart(format!(
                "partitions {losing:?} were revoked without a checkpoint of what was read from them"
            )),
        }
        // Ingest forgets their positions: a later checkpoint must not commit a stale one.
        if !send_within(
            &self.tx,
            SourceEvent::Release(losing.clone()),
            REVOKE_RELEASE_WAIT,
        ) {
            self.status.restart(format!(
                "could not tell ingest that partitions {losing:?} went away"
            ));
        }
        if let Ok(mut marks) = self.status.watermarks.lock() {
            marks.retain(|p, _| !losing.contains(p));
        }
        if let Ok(mut assigned) = self.status.assigned.lock() {
            assigned.retain(|p| !losing.contains(p));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(topic = %self.topic, partitions = ?partitions, "partitions assigned");
            // librdkafka keeps a partition's pause across a revocation and its re-assignment
            // (whether they come in one poll or two), and `hand_over` forgets what it paused
            // once a rebalance ran: a fresh assignment starts resumed (`hand_over` pauses it
            // again while ingest is still behind), or a rebalance during a pause (a broker
            // restart, a member joining) would stop reading for good. (The partitions were
            // just assigned, so librdkafka has them: the resume cannot fail.)
            if tpl.count() > 0 {
                let _ = consumer.resume(tpl);
            }
            let mut sorted = partitions.clone();
            sorted.sort_unstable();
            let known = self.status.topic_partitions.load(Ordering::Acquire);
            if super::status::record_assignment(&sorted, known) {
                tracing::warn!(
                    "the consumer group moved partitions to or from this instance: its table \
                     lacks what other instances read from them meanwhile"
                );
            }
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
) -> bool {
    if offsets.is_empty() {
        return true;
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
    if tpl.count() == 0 {
        return true;
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        tracing::warn!(error = %e, "could not commit offsets (the next checkpoint commits again)");
        status.error(format!("commit: {e}"));
        return false;
    }
    true
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
        let paused = status.paused.load(Ordering::Relaxed);
        Some(SourceReport {
            name: "kafka-source",
            state: if waiting {
                "waiting"
            } else if paused {
                "paused"
            } else {
                "running"
            },
            detail: serde_json::json!({
                "brokers": self.config.brokers, "topic": self.config.topic,
                "group": self.config.group,
                "assignedPartitions": assigned,
                "topicPartitions": match status.topic_partitions.load(Ordering::Relaxed) {
                    0 => None,
                    n => Some(n),
                },
                "messages": status.messages.get(),
                "waitingForTopic": waiting,
                "paused": paused,
            }),
            last_error: status.last_error.lock().ok().and_then(|e| e.clone()),
        })
    }

    fn lag(&self, ingested: &Offsets) -> Option<u64> {
        // Unknown until every assigned partition has reported its watermarks: a sum over only
        // some of them would call a replica caught up while a partition has not started.
        if !self.status.every_assigned_partition_reported() {
            return None;
        }
        Some(
            self.status
                .partition_lag(ingested)
                .iter()
                .map(|(_, l)| l)
                .sum(),
        )
    }

    fn partition_lag(&self, ingested: &Offsets) -> Vec<(i32, u64)> {
        self.status.partition_lag(ingested)
    }

    fn coverage(&self) -> Option<crate::Coverage> {
        let mut partitions = self
            .status
            .assigned
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        partitions.sort_unstable();
        let known = self.status.topic_partitions.load(Ordering::Acquire);
        Some(crate::Coverage {
            topic: self.config.topic.clone(),
            partitions,
            topic_partitions: (known > 0).then_some(known),
            moved: super::status::moved(),
        })
    }

    fn failure(&self) -> Option<String> {
        self.status
            .needs_restart
            .lock()
            .ok()
            .and_then(|r| r.clone())
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
    budget: ByteBudget,
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
    let mut client = super::client_config(config);
    // An empty id: dynamic membership (the member leaves the group when it stops).
    if let Some(id) = config.instance_id.as_deref().filter(|id| !id.is_empty()) {
        client.set("group.instance.id", id);
    }
    let consumer: BaseConsumer<SourceContext> = client
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
        // Eager rebalancing (librdkafka's default, pinned): a revocation takes the whole
        // assignment, which the revocation handling here relies on (a batch read before it is
        // dropped whole, and `post_rebalance` resumes a whole new assignment). Cooperative
        // rebalancing would keep partitions across a revocation and needs both changed.
        .set("partition.assignment.strategy", "range,roundrobin")
        .set("statistics.interval.ms", STATISTICS_EVERY_MS)
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
                poll_loop(&consumer, &topic, &tx, &budget, &commit_rx, &stop, &status);
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

/// Hands `batch` to ingest once the pending-bytes budget and the channel have room; until then
/// the assigned partitions are paused and the consumer keeps polling, so it stays in its group
/// (librdkafka drops a member that stops polling) and rebalances still run. Returns false when
/// ingest has gone away.
fn hand_over(
    consumer: &BaseConsumer<SourceContext>,
    tx: &mpsc::Sender<SourceEvent>,
    budget: &ByteBudget,
    mut batch: Vec<OwnedMessage>,
    stop: &AtomicBool,
    status: &SourceStatus,
) -> bool {
    let mut paused: Option<TopicPartitionList> = None;
    let mut delivered = true;
    loop {
        if batch.is_empty() {
            break;
        }
        let bytes = batch.iter().map(|m| m.payload.len()).sum();
        if let Some(permit) = budget.try_acquire(bytes) {
            let n = batch.len() as u64;
            match tx.try_send(SourceEvent::Batch(Batch::new(batch, Some(permit)))) {
                Ok(()) => {
                    status.messages.inc_by(n);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    delivered = false;
                    break;
                }
                Err(mpsc::error::TrySendError::Full(SourceEvent::Batch(back))) => {
                    batch = back.messages;
                }
                Err(mpsc::error::TrySendError::Full(_)) => break,
            }
        }
        if stop.load(Ordering::Acquire) {
            // Not handed over, not committed: read again after the restart.
            break;
        }
        if paused.is_none() {
            if let Ok(assignment) = consumer.assignment() {
                if consumer.pause(&assignment).is_ok() {
                    tracing::info!(
                        "ingest is behind (pending bytes or channel full): pausing the partitions"
                    );
                    status.pauses.fetch_add(1, Ordering::AcqRel);
                    status.paused.store(true, Ordering::Release);
                    paused = Some(assignment);
                }
            }
        }
        let revocations = status.revocations.load(Ordering::Acquire);
        let polled = consumer.poll(Duration::from_millis(100));
        if status.revocations.load(Ordering::Acquire) != revocations {
            // A rebalance checkpointed and committed what was handed over: this batch lies
            // past the commits and is read again by the partitions' owner. (Eager protocol:
            // the whole assignment was revoked; the next assignment is resumed by
            // `post_rebalance`.)
            batch.clear();
            paused = None;
        }
        if let Some(Ok(m)) = polled {
            // Fetched before the pause took effect: keep it with the batch.
            batch.push(owned(&m));
        }
    }
    if let Some(assignment) = paused {
        let _ = consumer.resume(&assignment);
        tracing::info!("ingest caught up: resuming the partitions");
    }
    status.paused.store(false, Ordering::Release);
    delivered
}

fn poll_loop(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    tx: &mpsc::Sender<SourceEvent>,
    budget: &ByteBudget,
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
        let mut bytes = 0;
        let mut timeout = Duration::from_millis(100);
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
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
                    let m = owned(&m);
                    bytes += m.payload.len();
                    batch.push(m);
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
        if !hand_over(consumer, tx, budget, batch, stop, status) {
            return;
        }
    }
}
