//! The ingest loop: source batches -> decode and dedup -> dead letters, then the realtime table,
//! then the rolling windows. Both sinks get exactly the same deduplicated orders, and the
//! windows only once the table took them, so a failed append leaves neither counting them.
//!
//! It runs on a thread of its own (decoding is CPU work that must not stall the HTTP runtime)
//! and is the table's single writer. It does the table's housekeeping (sealing, merging,
//! retention) at least once a second and drives the checkpoint protocol
//! ([`checkpoint::protocol`]): a capture when a seal starts, a checkpoint when it is durable,
//! and one at once when the source moved on with no new rows (all duplicates or dead letters).
//!
//! Nothing it is handed is lost when the disk fails it: a batch whose dead letters cannot be
//! written is not ingested and its position does not move (it is retried with backoff), and
//! while too many rows wait to be sealed (`table.max_unsealed_rows`) it stops taking batches,
//! so the sources wait and memory stays bounded. On stop it drains what the source already
//! handed over, seals everything and writes a last checkpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checkpoint::{Capture, CheckpointProtocol, DedupDelta, SourcePosition};
use clock::SharedClock;
use ingest::{Batch, DeadLetterStore, IngestMetrics, Ingestor, Message, Offsets, SourceEvent};
use rolling::{Metrics, Windows};
use server::recent::RecentAnswers;
use sources::CheckpointHook;
use table::RealtimeTable;
use tokio::sync::mpsc;

/// Most messages decoded as one batch.
const MAX_BATCH_MESSAGES: usize = 16_384;
/// Housekeeping (seals, merges, retention, checkpoints) happens at least this often.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// The ingest rate gauge is recomputed over at least this long.
const RATE_EVERY: Duration = Duration::from_secs(2);
/// First and last wait before a batch whose dead letters could not be written is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// What the ingest stage shows in `/api/status` beyond its counters.
#[derive(Debug, Default)]
pub struct IngestHealth {
    /// Set when the loop stopped on an error it cannot go past (or panicked).
    pub failed: Mutex<Option<String>>,
    /// Why the loop is not taking new batches right now, if it is not.
    pub paused: Mutex<Option<String>>,
    /// Where the source resumes after what has been ingested (for lag).
    pub position: Mutex<Offsets>,
    /// Dead letters in the store, including earlier runs (kept exact across rotations).
    pub dead_letters_stored: std::sync::atomic::AtomicU64,
}

impl IngestHealth {
    fn set_paused(&self, why: Option<String>) {
        if let Ok(mut p) = self.paused.lock() {
            *p = why;
        }
    }
}

/// The sinks and state the ingest loop writes.
pub struct Sinks {
    pub table: Arc<RealtimeTable>,
    pub windows: Arc<Mutex<Windows>>,
    /// The fixed endpoints' answers, fed the same rows as the windows.
    pub recent: Arc<RecentAnswers>,
    pub deadletters: DeadLetterStore,
    pub protocol: CheckpointProtocol,
}

/// What the loop is handed besides its sinks.
pub struct LoopParts {
    pub ingestor: Ingestor,
    pub source: SourcePosition,
    pub metrics: IngestMetrics,
    pub health: Arc<IngestHealth>,
    pub stop: Arc<AtomicBool>,
    pub clock: SharedClock,
    pub on_checkpoint: CheckpointHook,
    /// Payload bytes decoded as one batch at most (`ingest.max_batch_bytes`).
    pub max_batch_bytes: usize,
    /// Seconds between checkpoints, for checkpoints with no new rows.
    pub checkpoint_every: Duration,
    /// A test hook: panic once this many rows have been ingested (see `fault_at_rows`).
    pub panic_at_rows: Option<u64>,
}

pub struct IngestLoop {
    ingestor: Ingestor,
    table: Arc<RealtimeTable>,
    windows: Arc<Mutex<Windows>>,
    recent: Arc<RecentAnswers>,
    deadletters: DeadLetterStore,
    protocol: CheckpointProtocol,
    metrics: IngestMetrics,
    health: Arc<IngestHealth>,
    stop: Arc<AtomicBool>,
    clock: SharedClock,
    /// Where the source resumes after what has been ingested.
    source: SourcePosition,
    /// The position of the last checkpoint written.
    checkpointed: Offsets,
    last_checkpoint: Instant,
    checkpoint_every: Duration,
    /// Told the positions of every durable checkpoint (Kafka commits them).
    on_checkpoint: CheckpointHook,
    max_batch_bytes: usize,
    /// Batches that could not be ingested (their dead letters could not be written), to try
    /// again, and when.
    retry: Vec<Batch>,
    retry_at: Instant,
    retry_wait: Duration,
    rate_sample: (Instant, u64),
    panic_at_rows: Option<u64>,
}

fn lock<T>(state: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match state.lock() {
        Ok(w) => w,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The test hook `RTAP_FAULT=ingest-panic-at-rows:N`: the ingest thread panics (once per
/// process) when N rows have been ingested, so a black-box test can watch the supervisor
/// restart it from the last checkpoint. Unset in production; any other value is ignored.
pub fn fault_at_rows() -> Option<u64> {
    static FIRED: AtomicBool = AtomicBool::new(false);
    let value = std::env::var("RTAP_FAULT").ok()?;
    let n = value.strip_prefix("ingest-panic-at-rows:")?.parse().ok()?;
    (!FIRED.swap(true, Ordering::AcqRel)).then_some(n)
}

impl IngestLoop {
    /// A loop resuming after `parts.source` (the restored checkpoint's position, or the start).
    pub fn new(sinks: Sinks, parts: LoopParts) -> Self {
        let mut ingestor = parts.ingestor;
        ingestor.dedup_mut().start_journal();
        parts.metrics.dedup_ids.set(ingestor.dedup().len() as i64);
        if let Ok(mut p) = parts.health.position.lock() {
            *p = parts.source.next.clone();
        }
        parts
            .health
            .dead_letters_stored
            .store(sinks.deadletters.count(), Ordering::Relaxed);
        IngestLoop {
            ingestor,
            table: sinks.table,
            windows: sinks.windows,
            recent: sinks.recent,
            deadletters: sinks.deadletters,
            protocol: sinks.protocol,
            metrics: parts.metrics,
            health: parts.health,
            stop: parts.stop,
            clock: parts.clock,
            checkpointed: parts.source.next.clone(),
            source: parts.source,
            last_checkpoint: Instant::now(),
            checkpoint_every: parts.checkpoint_every,
            on_checkpoint: parts.on_checkpoint,
            max_batch_bytes: parts.max_batch_bytes,
            retry: Vec::new(),
            retry_at: Instant::now(),
            retry_wait: RETRY_FIRST,
            rate_sample: (Instant::now(), 0),
            panic_at_rows: parts.panic_at_rows,
        }
    }

    /// Ingests `batches` whole, or (when their dead letters cannot be written) not at all and
    /// keeps them to try again. Err: a failure the loop cannot go past.
    fn ingest(&mut self, batches: Vec<Batch>) -> Result<(), String> {
        if batches.iter().all(|b| b.messages.is_empty()) {
            return Ok(());
        }
        let messages: Vec<Message<'_>> = batches
            .iter()
            .flat_map(|b| b.messages.iter().map(ingest::OwnedMessage::borrow))
            .collect();
        let out = self.ingestor.ingest(&messages, self.clock.now_ms());
        let ids = out
            .batch
            .as_ref()
            .map(ingest::order_id_hashes)
            .unwrap_or_default();
        // Dead letters first: if they cannot be written, nothing of these batches is taken and
        // the position stays, so nothing is lost.
        if !out.rejected.is_empty() {
            let by_position: HashMap<ingest::Position, &[u8]> =
                messages.iter().map(|m| (m.position, m.payload)).collect();
            let rejected: Vec<_> = out
                .rejected
                .iter()
                .map(|r| {
                    (
                        r.clone(),
                        by_position.get(&r.position).copied().unwrap_or_default(),
                    )
                })
                .collect();
            if let Err(e) = self.deadletters.append(&rejected, self.clock.now_ms()) {
                self.ingestor.dedup_mut().forget(ids);
                drop(messages);
                tracing::error!(error = %e, retry_in_ms = self.retry_wait.as_millis() as u64,
                    "could not write dead letters; holding the batch and retrying");
                self.health
                    .set_paused(Some(format!("dead letters cannot be written: {e}")));
                self.retry = batches;
                self.retry_at = Instant::now() + self.retry_wait;
                self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
                return Ok(());
            }
            for (r, _) in &rejected {
                tracing::warn!(position = %r.position, reason = %r.reason, "dead-lettered a message");
            }
            self.metrics.dead_letters.inc_by(rejected.len() as u64);
            self.health
                .dead_letters_stored
                .store(self.deadletters.count(), Ordering::Relaxed);
        }
        if let Some(batch) = out.batch {
            let rows = batch.num_rows() as u64;
            let facts = ingest::order_facts(&batch);
            let rows_view = batch.clone();
            // The table first: only a batch the table took reaches the windows.
            if let Err(e) = self.table.append(batch) {
                self.ingestor.dedup_mut().forget(ids);
                return Err(format!("could not append to the table: {e}"));
            }
            let now = self.clock.now_ms();
            // The recent answers before the windows: a reader that reads the windows first
            // (the dashboard) then finds at least what they counted in the answers too.
            // The lock is taken per row, so a reader never waits for a whole batch. The
            // decoder's own batch has every column with the table's types; were one ever
            // missing, the endpoints go back to SQL rather than answer from a partial count.
            let recent = &self.recent;
            let fed =
                ingest::for_each_recent_row(&rows_view, |row| recent.lock().observe(row, now));
            if let Err(e) = fed {
                self.recent.set_trusted(false);
                tracing::error!(error = %e, "the recent answers could not read a batch; the fixed endpoints answer from SQL");
            }
            let mut windows = lock(&self.windows);
            let late_before = windows.late();
            for f in facts {
                windows.observe_until(
                    f.time_ms,
                    Metrics::order(f.order_total, f.fraud, f.delivered, f.refunded),
                    now,
                );
            }
            self.metrics.late.inc_by(windows.late() - late_before);
            drop(windows);
            self.metrics.rows.inc_by(rows);
        }
        self.metrics.duplicates.inc_by(out.duplicates as u64);
        for m in &messages {
            let next = self.source.next.entry(m.position.partition).or_insert(0);
            *next = (*next).max(m.position.offset + 1);
        }
        if let Ok(mut p) = self.health.position.lock() {
            p.clone_from(&self.source.next);
        }
        self.retry_wait = RETRY_FIRST;
        if let Some(n) = self.panic_at_rows {
            if self.metrics.rows.get() >= n {
                self.panic_at_rows = None;
                panic!("RTAP_FAULT: the ingest thread panics at {n} rows, as the test asked");
            }
        }
        Ok(())
    }

    /// The state that goes with every row ingested so far.
    fn capture(&mut self) -> Result<Capture, String> {
        let deadletters = self
            .deadletters
            .mark()
            .map_err(|e| format!("cannot mark the dead letters: {e}"))?;
        let windows = lock(&self.windows).snapshot();
        let dedup = self.ingestor.dedup_mut();
        let new = dedup.take_journal();
        let dedup = if self.protocol.wants_whole_dedup(dedup.len()) {
            DedupDelta::Whole(dedup.all_records())
        } else {
            DedupDelta::New(new)
        };
        Ok(Capture {
            created_ms: self.clock.now_ms(),
            source: self.source.clone(),
            windows,
            dedup,
            deadletters,
        })
    }

    /// A checkpoint that holds `read_at`'s manifest was written (or not).
    fn written(
        &mut self,
        result: Result<checkpoint::Written, checkpoint::CheckpointError>,
        read_at: Instant,
    ) -> Option<Offsets> {
        match result {
            Ok(w) => {
                tracing::debug!(
                    us = w.duration.as_micros() as u64,
                    bytes = w.bytes,
                    dedup_log_bytes = self.protocol.store().dedup_log_bytes(),
                    position = ?w.position,
                    "checkpoint written"
                );
                self.table.checkpoint_committed(read_at);
                (self.on_checkpoint)(&w.position);
                self.checkpointed.clone_from(&w.position);
                self.last_checkpoint = Instant::now();
                Some(w.position)
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write a checkpoint; will retry with the next seal");
                None
            }
        }
    }

    fn maintain(&mut self) {
        let report = self.table.maintain();
        if let Some(e) = report.error {
            // The seal's rows are back in memory; its capture no longer matches a manifest.
            tracing::warn!(error = %e, "a table seal failed; will retry");
            self.protocol.seal_failed();
        }
        if let Some(e) = report.housekeeping_error {
            // A merge or retention: the segments stay as they were; the checkpoint goes on.
            tracing::warn!(error = %e, "table housekeeping failed; will retry");
        }
        if let Some((manifest, read_at)) = report.sealed {
            if self.protocol.is_pending() {
                match self.deadletters.sync() {
                    Ok(()) => {
                        if let Some(result) = self.protocol.seal_durable(manifest) {
                            self.written(result, read_at);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not sync dead letters; checkpoint skipped");
                        self.protocol.seal_failed();
                    }
                }
            }
        }
        if report.seal_started {
            match self.capture() {
                Ok(capture) => self.protocol.seal_started(capture),
                Err(e) => tracing::error!(error = %e, "checkpoint skipped"),
            }
        }
        // The source moved on with no new rows (duplicates, dead letters): checkpoint the
        // position anyway, so a restart does not read it all again.
        let idle = self.table.snapshot().memory_rows == 0 && !self.protocol.is_pending();
        if idle
            && self.source.next != self.checkpointed
            && self.last_checkpoint.elapsed() >= self.checkpoint_every
        {
            self.checkpoint_now();
        }
    }

    /// Seals everything ingested so far and checkpoints it (a rebalance, shutdown, or a
    /// position that moved with no rows). Returns the positions checkpointed, or None if that
    /// failed (the last checkpoint stands).
    fn checkpoint_now(&mut self) -> Option<Offsets> {
        if let Err(e) = self.table.flush() {
            tracing::error!(error = %e, "could not seal the table; the last checkpoint stands");
            return None;
        }
        // Every ingested row is in a segment now: the state as it stands goes with them.
        let read_at = Instant::now();
        let manifest = self.table.manifest();
        let capture = match self.capture() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "checkpoint skipped");
                return None;
            }
        };
        if let Err(e) = self.deadletters.sync() {
            tracing::error!(error = %e, "could not sync dead letters; checkpoint skipped");
            self.protocol.discard(capture);
            return None;
        }
        let result = self.protocol.checkpoint_now(capture, manifest);
        self.written(result, read_at)
    }

    fn sample_rate(&mut self) {
        let elapsed = self.rate_sample.0.elapsed();
        if elapsed >= RATE_EVERY {
            let rows = self.metrics.rows.get();
            let rate = rows.saturating_sub(self.rate_sample.1) as f64 / elapsed.as_secs_f64();
            self.metrics.rate.set(rate);
            self.rate_sample = (Instant::now(), rows);
            self.metrics
                .dedup_ids
                .set(self.ingestor.dedup().len() as i64);
        }
    }

    fn fail(&self, error: String) {
        tracing::error!(error = %error, "ingest stopped; a restart resumes from the last checkpoint");
        if let Ok(mut f) = self.health.failed.lock() {
            *f = Some(error);
        }
    }

    /// Why the loop should not take new batches now, if it should not.
    fn held_back(&self) -> Option<String> {
        if !self.retry.is_empty() {
            return Some("retrying a batch whose dead letters could not be written".into());
        }
        let snapshot = self.table.snapshot();
        let (unsealed, bytes) = (snapshot.memory_rows, snapshot.memory_bytes);
        let config = self.table.config();
        let (ceiling, byte_ceiling) = (
            config.max_unsealed_rows as u64,
            config.max_unsealed_bytes as u64,
        );
        if unsealed >= ceiling {
            return Some(format!(
                "{unsealed} rows wait to be sealed (table.max_unsealed_rows = {ceiling}); \
                 the source waits until seals succeed"
            ));
        }
        (bytes >= byte_ceiling).then(|| {
            format!(
                "{bytes} bytes of rows wait to be sealed (table.max_unsealed_bytes = \
                 {byte_ceiling}); the source waits until seals succeed"
            )
        })
    }

    /// Runs until `stop` is set (then drains the channel) or the channel closes; then seals
    /// everything and writes a last checkpoint.
    pub fn run(mut self, mut rx: mpsc::Receiver<SourceEvent>, runtime: tokio::runtime::Handle) {
        let mut closed = false;
        while !closed {
            if !self.retry.is_empty() && Instant::now() >= self.retry_at {
                let batches = std::mem::take(&mut self.retry);
                if let Err(e) = self.ingest(batches) {
                    return self.fail(e);
                }
            }
            let held = self.held_back();
            self.health.set_paused(held.clone());
            if held.is_some() && self.stop.load(Ordering::Acquire) {
                // Stopping while the disk fails us: what is held was never checkpointed and its
                // position never moved, so the next start reads it again. Waiting here could
                // wait forever.
                tracing::warn!(reason = ?held, "stopping with ingest held back; the held batches are read again on the next start");
                break;
            }
            let mut events = Vec::new();
            if held.is_some() {
                std::thread::sleep(Duration::from_millis(100));
            } else {
                let first =
                    runtime.block_on(async { tokio::time::timeout(HOUSEKEEPING, rx.recv()).await });
                let (mut n, mut bytes) = (0, 0);
                match first {
                    Ok(Some(e)) => {
                        if let SourceEvent::Batch(b) = &e {
                            n += b.messages.len();
                            bytes += b.bytes();
                        }
                        events.push(e);
                    }
                    Ok(None) => closed = true,
                    Err(_) => {}
                }
                while n < MAX_BATCH_MESSAGES && bytes < self.max_batch_bytes {
                    match rx.try_recv() {
                        Ok(e) => {
                            if let SourceEvent::Batch(b) = &e {
                                n += b.messages.len();
                                bytes += b.bytes();
                            }
                            let is_batch = matches!(e, SourceEvent::Batch(_));
                            events.push(e);
                            if !is_batch {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            let mut batches = Vec::new();
            for e in events {
                match e {
                    SourceEvent::Batch(b) => batches.push(b),
                    SourceEvent::Checkpoint(reply) => {
                        if let Err(e) = self.ingest(std::mem::take(&mut batches)) {
                            let _ = reply.send(None);
                            return self.fail(e);
                        }
                        let position = if self.retry.is_empty() {
                            self.checkpoint_now()
                        } else {
                            None
                        };
                        if position.is_none() {
                            // The partitions go away without their progress committed: this
                            // instance restarts from its last checkpoint, so what it read from
                            // them after it is neither kept here nor lost (the next owner reads
                            // it from the last commit).
                            let _ = reply.send(None);
                            return self.fail(
                                "could not checkpoint before a rebalance took partitions away"
                                    .into(),
                            );
                        }
                        let _ = reply.send(position);
                    }
                    SourceEvent::Release(partitions) => {
                        if let Err(e) = self.ingest(std::mem::take(&mut batches)) {
                            return self.fail(e);
                        }
                        for p in &partitions {
                            self.source.next.remove(p);
                            self.checkpointed.remove(p);
                        }
                        // A held batch's messages of those partitions are the next owner's now.
                        for b in &mut self.retry {
                            b.messages
                                .retain(|m| !partitions.contains(&m.position.partition));
                        }
                        if let Ok(mut pos) = self.health.position.lock() {
                            pos.clone_from(&self.source.next);
                        }
                    }
                }
            }
            if let Err(e) = self.ingest(batches) {
                return self.fail(e);
            }
            self.maintain();
            self.sample_rate();
            if self.stop.load(Ordering::Acquire) && rx.is_empty() && self.retry.is_empty() {
                break;
            }
        }
        if self.checkpoint_now().is_none() {
            tracing::error!("the last checkpoint could not be written; the next start resumes from the one before");
        }
    }
}
