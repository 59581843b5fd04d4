//! The ingest loop: source batches -> decode and dedup -> realtime table and rolling windows
//! (and dead letters). Both sinks get exactly the same deduplicated orders.
//!
//! It runs on a thread of its own (decoding is CPU work that must not stall the HTTP runtime)
//! and is the table's single writer. It also does the table's housekeeping (sealing, merging,
//! retention) at least once a second, so a quiet source still gets its rows sealed. On stop it
//! drains what the source already handed over, seals everything, syncs the dead letters and
//! writes a last checkpoint.
//!
//! Checkpoints ride on seals: when a seal starts, every row ingested so far is in it or in an
//! earlier segment, so the loop captures the windows, the new dedup ids, the dead-letter length
//! and the source position right then; when that seal is durable and in the manifest, the
//! capture and that manifest are written as one checkpoint. A seal is due every checkpoint
//! interval (the table's `seal_after_secs`), so that is how often checkpoints happen, without
//! ever stopping ingest to take one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checkpoint::{Capture, Checkpointer, SourcePosition};

use rolling::{Metrics, Windows};

use ingest::{DeadLetterStore, Ingestor, Message, OwnedMessage, SourceEvent};
use table::RealtimeTable;
use tokio::sync::mpsc;

/// Most messages decoded as one batch.
const MAX_BATCH_MESSAGES: usize = 16_384;
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Counters of the ingest loop, read by status pages and logs.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub rows: AtomicU64,
    pub rejected: AtomicU64,
    pub duplicates: AtomicU64,
    /// Orders later than the windows' grace (in the table, not in the windows).
    pub late: AtomicU64,
    /// Sequence number (generator) or offset of the last message ingested.
    pub last_offset: AtomicU64,
    /// Checkpoints written, and how long the last one took (microseconds).
    pub checkpoints: AtomicU64,
    pub last_checkpoint_us: AtomicU64,
}

pub struct IngestLoop {
    ingestor: Ingestor,
    table: Arc<RealtimeTable>,
    windows: Arc<Mutex<Windows>>,
    deadletters: DeadLetterStore,
    stats: Arc<IngestStats>,
    stop: Arc<AtomicBool>,
    checkpoints: Checkpointer,
    /// Where the source resumes after what has been ingested.
    source: SourcePosition,
    /// The state captured when the seal in flight started.
    pending: Option<Capture>,
    /// Dedup ids of a capture that was dropped (its seal failed): the next capture carries them.
    carried_ids: Vec<([u8; 16], u32)>,
    /// Told the positions of every durable checkpoint (Kafka commits them).
    on_checkpoint: Option<CheckpointHook>,
}

/// Told the source positions of every durable checkpoint.
type CheckpointHook = Box<dyn Fn(&BTreeMap<i32, i64>) + Send>;

/// The sinks and state the ingest loop writes.
pub struct Sinks {
    pub table: Arc<RealtimeTable>,
    pub windows: Arc<Mutex<Windows>>,
    pub deadletters: DeadLetterStore,
    pub checkpoints: Checkpointer,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl IngestLoop {
    /// A loop resuming after `source` (the restored checkpoint's position, or the start).
    pub fn new(
        mut ingestor: Ingestor,
        sinks: Sinks,
        source: SourcePosition,
        stats: Arc<IngestStats>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        ingestor.dedup_mut().start_journal();
        IngestLoop {
            ingestor,
            table: sinks.table,
            windows: sinks.windows,
            deadletters: sinks.deadletters,
            stats,
            stop,
            checkpoints: sinks.checkpoints,
            source,
            pending: None,
            carried_ids: Vec::new(),
            on_checkpoint: None,
        }
    }

    /// Calls `f` with the source positions of every checkpoint once it is durable.
    pub fn on_checkpoint(mut self, f: impl Fn(&BTreeMap<i32, i64>) + Send + 'static) -> Self {
        self.on_checkpoint = Some(Box::new(f));
        self
    }

    /// Forgets the pending capture without losing its dedup ids.
    fn drop_pending(&mut self) {
        if let Some(p) = self.pending.take() {
            if !p.dedup_is_whole {
                let mut ids = p.dedup;
                ids.append(&mut self.carried_ids);
                self.carried_ids = ids;
            }
            // A whole capture is simply taken again: the checkpointer still wants one.
        }
    }

    fn ingest(&mut self, batches: Vec<Vec<OwnedMessage>>) {
        let owned: Vec<OwnedMessage> = batches.into_iter().flatten().collect();
        if owned.is_empty() {
            return;
        }
        let messages: Vec<Message<'_>> = owned.iter().map(OwnedMessage::borrow).collect();
        let out = self.ingestor.ingest(&messages);
        if let Some(batch) = out.batch {
            let rows = batch.num_rows() as u64;
            let facts = ingest::order_facts(&batch);
            let mut windows = match self.windows.lock() {
                Ok(w) => w,
                Err(poisoned) => poisoned.into_inner(),
            };
            let late_before = windows.late();
            for f in facts {
                windows.observe(
                    f.time_ms,
                    Metrics::order(f.order_total, f.fraud, f.delivered, f.refunded),
                );
            }
            self.stats
                .late
                .fetch_add(windows.late() - late_before, Ordering::Relaxed);
            drop(windows);
            match self.table.append(batch) {
                Ok(()) => {
                    self.stats.rows.fetch_add(rows, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, "could not append to the table"),
            }
        }
        if !out.rejected.is_empty() {
            let by_position: std::collections::HashMap<ingest::Position, &[u8]> =
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
            for (r, _) in &rejected {
                tracing::warn!(position = %r.position, reason = %r.reason, "dead-lettered a message");
            }
            if let Err(e) = self.deadletters.append(&rejected, now_ms()) {
                tracing::error!(error = %e, "could not write dead letters");
            }
            self.stats
                .rejected
                .fetch_add(rejected.len() as u64, Ordering::Relaxed);
        }
        self.stats
            .duplicates
            .fetch_add(out.duplicates as u64, Ordering::Relaxed);
        for m in &messages {
            let next = self.source.next.entry(m.position.partition).or_insert(0);
            *next = (*next).max(m.position.offset + 1);
        }
        if let Some(p) = out.last_position {
            self.stats
                .last_offset
                .store(p.offset.max(0) as u64, Ordering::Relaxed);
        }
    }

    /// The state that goes with every row ingested so far.
    fn capture(&mut self) -> Capture {
        let windows = match self.windows.lock() {
            Ok(w) => w.snapshot(),
            Err(poisoned) => poisoned.into_inner().snapshot(),
        };
        let dedup = self.ingestor.dedup_mut();
        let whole = self.checkpoints.wants_whole_dedup(dedup.len());
        let mut ids = std::mem::take(&mut self.carried_ids);
        ids.append(&mut dedup.take_journal());
        if whole {
            ids = dedup.all_records();
        }
        let deadletter_bytes = match self.deadletters.bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the dead-letter length");
                0
            }
        };
        Capture {
            created_ms: now_ms(),
            source: self.source.clone(),
            windows,
            dedup: ids,
            dedup_is_whole: whole,
            deadletter_bytes,
        }
    }

    /// Writes `capture` with the manifest that holds its rows.
    /// Returns whether it was written.
    fn checkpoint(
        &mut self,
        capture: Capture,
        manifest: table::Manifest,
        read_at: Instant,
    ) -> bool {
        let started = Instant::now();
        if let Err(e) = self.deadletters.sync() {
            tracing::error!(error = %e, "could not sync dead letters; checkpoint skipped");
            return false;
        }
        let position = capture.source.next.clone();
        match self.checkpoints.write(capture, manifest) {
            Ok(bytes) => {
                let us = started.elapsed().as_micros() as u64;
                tracing::debug!(
                    us,
                    bytes,
                    dedup_log_bytes = self.checkpoints.dedup_log_bytes(),
                    ?position,
                    "checkpoint written"
                );
                self.table.checkpoint_committed(read_at);
                if let Some(f) = &self.on_checkpoint {
                    f(&position);
                }
                self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                self.stats.last_checkpoint_us.store(us, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write a checkpoint; will retry with the next seal");
                false
            }
        }
    }

    fn maintain(&mut self) {
        let report = self.table.maintain(now_ms());
        if let Some(e) = report.error {
            // The seal's rows are back in memory; its capture no longer matches a manifest.
            tracing::warn!(error = %e, "table housekeeping failed; will retry");
            self.drop_pending();
        }
        if let Some((manifest, read_at)) = report.sealed {
            if let Some(capture) = self.pending.take() {
                let carried = (!capture.dedup_is_whole).then(|| capture.dedup.clone());
                if !self.checkpoint(capture, manifest, read_at) {
                    // Not written: its ids must reach the log with the next one.
                    if let Some(mut ids) = carried {
                        ids.append(&mut self.carried_ids);
                        self.carried_ids = ids;
                    }
                }
            }
        }
        if report.seal_started {
            self.pending = Some(self.capture());
        }
    }

    /// Seals everything ingested so far and checkpoints it (a rebalance, or shutdown). Returns
    /// the positions checkpointed, or None if that failed (the last checkpoint stands).
    fn checkpoint_now(&mut self) -> Option<BTreeMap<i32, i64>> {
        match self.table.flush() {
            Ok(()) => {
                // Every ingested row is in a segment now: the state as it stands goes with them.
                self.drop_pending();
                let read_at = Instant::now();
                let manifest = self.table.manifest();
                let capture = self.capture();
                let position = capture.source.next.clone();
                let carried = (!capture.dedup_is_whole).then(|| capture.dedup.clone());
                if self.checkpoint(capture, manifest, read_at) {
                    return Some(position);
                }
                // Not written: its ids must reach the log with the next one.
                if let Some(mut ids) = carried {
                    ids.append(&mut self.carried_ids);
                    self.carried_ids = ids;
                }
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "could not seal the table; the last checkpoint stands");
                None
            }
        }
    }

    /// Runs until `stop` is set (then drains the channel) or the channel closes; then seals
    /// everything and writes a last checkpoint.
    pub fn run(mut self, mut rx: mpsc::Receiver<SourceEvent>, runtime: tokio::runtime::Handle) {
        let mut closed = false;
        while !closed {
            let first =
                runtime.block_on(async { tokio::time::timeout(HOUSEKEEPING, rx.recv()).await });
            let mut events = Vec::new();
            match first {
                Ok(Some(e)) => events.push(e),
                Ok(None) => closed = true,
                Err(_) => {}
            }
            let mut n = 0;
            while n < MAX_BATCH_MESSAGES {
                match rx.try_recv() {
                    Ok(e) => {
                        if let SourceEvent::Batch(b) = &e {
                            n += b.len();
                        }
                        let is_checkpoint = matches!(e, SourceEvent::Checkpoint(_));
                        events.push(e);
                        if is_checkpoint {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let mut batches = Vec::new();
            for e in events {
                match e {
                    SourceEvent::Batch(b) => batches.push(b),
                    SourceEvent::Checkpoint(reply) => {
                        self.ingest(std::mem::take(&mut batches));
                        let position = self.checkpoint_now().unwrap_or_default();
                        let _ = reply.send(position);
                    }
                }
            }
            self.ingest(batches);
            self.maintain();
            if self.stop.load(Ordering::Acquire) && rx.is_empty() {
                break;
            }
        }
        if self.checkpoint_now().is_none() {
            tracing::error!("the last checkpoint could not be written; the next start resumes from the one before");
        }
    }
}
