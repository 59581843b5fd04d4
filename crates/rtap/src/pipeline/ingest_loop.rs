//! The ingest loop: source batches -> decode and dedup -> realtime table and rolling windows
//! (and dead letters). Both sinks get exactly the same deduplicated orders: the table first,
//! and the windows only once the table took the batch, so a failed append leaves neither
//! counting it.
//!
//! It runs on a thread of its own (decoding is CPU work that must not stall the HTTP runtime)
//! and is the table's single writer. It also does the table's housekeeping (sealing, merging,
//! retention) at least once a second, so a quiet source still gets its rows sealed, and drives
//! the checkpoint protocol ([`checkpoint::protocol`]): a capture when a seal starts, a
//! checkpoint when it is durable. On stop it drains what the source already handed over, seals
//! everything, syncs the dead letters and writes a last checkpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checkpoint::{Capture, CheckpointProtocol, DedupDelta, SourcePosition};
use clock::SharedClock;
use ingest::{
    DeadLetterStore, IngestMetrics, Ingestor, Message, Offsets, OwnedMessage, SourceEvent,
};
use rolling::{Metrics, Windows};
use sources::CheckpointHook;
use table::RealtimeTable;
use tokio::sync::mpsc;

/// Most messages decoded as one batch.
const MAX_BATCH_MESSAGES: usize = 16_384;
/// Housekeeping (seals, merges, retention, checkpoints) happens at least this often.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// The ingest rate gauge is recomputed over at least this long.
const RATE_EVERY: Duration = Duration::from_secs(2);

/// What the ingest stage shows in `/api/status` beyond its counters.
#[derive(Debug, Default)]
pub struct IngestHealth {
    /// Set when the loop stopped on an error it cannot go past.
    pub failed: Mutex<Option<String>>,
    /// Where the source resumes after what has been ingested (for lag).
    pub position: Mutex<Offsets>,
}

/// The sinks and state the ingest loop writes.
pub struct Sinks {
    pub table: Arc<RealtimeTable>,
    pub windows: Arc<Mutex<Windows>>,
    pub deadletters: DeadLetterStore,
    pub protocol: CheckpointProtocol,
}

pub struct IngestLoop {
    ingestor: Ingestor,
    table: Arc<RealtimeTable>,
    windows: Arc<Mutex<Windows>>,
    deadletters: DeadLetterStore,
    protocol: CheckpointProtocol,
    metrics: IngestMetrics,
    health: Arc<IngestHealth>,
    stop: Arc<AtomicBool>,
    clock: SharedClock,
    /// Where the source resumes after what has been ingested.
    source: SourcePosition,
    /// Told the positions of every durable checkpoint (Kafka commits them).
    on_checkpoint: CheckpointHook,
    rate_sample: (Instant, u64),
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
}

fn lock(windows: &Mutex<Windows>) -> std::sync::MutexGuard<'_, Windows> {
    match windows.lock() {
        Ok(w) => w,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl IngestLoop {
    /// A loop resuming after `parts.source` (the restored checkpoint's position, or the start).
    pub fn new(sinks: Sinks, parts: LoopParts) -> Self {
        let mut ingestor = parts.ingestor;
        ingestor.dedup_mut().start_journal();
        if let Ok(mut p) = parts.health.position.lock() {
            *p = parts.source.next.clone();
        }
        IngestLoop {
            ingestor,
            table: sinks.table,
            windows: sinks.windows,
            deadletters: sinks.deadletters,
            protocol: sinks.protocol,
            metrics: parts.metrics,
            health: parts.health,
            stop: parts.stop,
            clock: parts.clock,
            source: parts.source,
            on_checkpoint: parts.on_checkpoint,
            rate_sample: (Instant::now(), 0),
        }
    }

    fn ingest(&mut self, batches: Vec<Vec<OwnedMessage>>) -> Result<(), String> {
        let owned: Vec<OwnedMessage> = batches.into_iter().flatten().collect();
        if owned.is_empty() {
            return Ok(());
        }
        let messages: Vec<Message<'_>> = owned.iter().map(OwnedMessage::borrow).collect();
        let out = self.ingestor.ingest(&messages);
        if let Some(batch) = out.batch {
            let rows = batch.num_rows() as u64;
            let facts = ingest::order_facts(&batch);
            let ids = ingest::order_id_hashes(&batch);
            // The table first: only a batch the table took reaches the windows.
            if let Err(e) = self.table.append(batch) {
                // Neither sink has it, and dedup must not remember it either: the position does
                // not move past it, so the next start reads it again.
                self.ingestor.dedup_mut().forget(ids);
                return Err(format!("could not append to the table: {e}"));
            }
            let mut windows = lock(&self.windows);
            let late_before = windows.late();
            for f in facts {
                windows.observe(
                    f.time_ms,
                    Metrics::order(f.order_total, f.fraud, f.delivered, f.refunded),
                );
            }
            self.metrics.late.inc_by(windows.late() - late_before);
            drop(windows);
            self.metrics.rows.inc_by(rows);
        }
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
            for (r, _) in &rejected {
                tracing::warn!(position = %r.position, reason = %r.reason, "dead-lettered a message");
            }
            if let Err(e) = self.deadletters.append(&rejected, self.clock.now_ms()) {
                tracing::error!(error = %e, "could not write dead letters");
            }
            self.metrics.dead_letters.inc_by(rejected.len() as u64);
        }
        self.metrics.duplicates.inc_by(out.duplicates as u64);
        for m in &messages {
            let next = self.source.next.entry(m.position.partition).or_insert(0);
            *next = (*next).max(m.position.offset + 1);
        }
        if let Ok(mut p) = self.health.position.lock() {
            p.clone_from(&self.source.next);
        }
        Ok(())
    }

    /// The state that goes with every row ingested so far.
    fn capture(&mut self) -> Capture {
        let windows = lock(&self.windows).snapshot();
        let dedup = self.ingestor.dedup_mut();
        let new = dedup.take_journal();
        let dedup = if self.protocol.wants_whole_dedup(dedup.len()) {
            DedupDelta::Whole(dedup.all_records())
        } else {
            DedupDelta::New(new)
        };
        let deadletter_bytes = match self.deadletters.bytes() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the dead-letter length");
                0
            }
        };
        Capture {
            created_ms: self.clock.now_ms(),
            source: self.source.clone(),
            windows,
            dedup,
            deadletter_bytes,
        }
    }

    /// A checkpoint that holds `read_at`'s manifest was written (or not).
    fn written(
        &mut self,
        result: Result<checkpoint::Written, checkpoint::CheckpointError>,
        read_at: Instant,
    ) -> bool {
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
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write a checkpoint; will retry with the next seal");
                false
            }
        }
    }

    fn maintain(&mut self) {
        let report = self.table.maintain();
        if let Some(e) = report.error {
            // The seal's rows are back in memory; its capture no longer matches a manifest.
            tracing::warn!(error = %e, "table housekeeping failed; will retry");
            self.protocol.seal_failed();
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
            let capture = self.capture();
            self.protocol.seal_started(capture);
        }
    }

    /// Seals everything ingested so far and checkpoints it (a rebalance, or shutdown). Returns
    /// the positions checkpointed, or None if that failed (the last checkpoint stands).
    fn checkpoint_now(&mut self) -> Option<Offsets> {
        if let Err(e) = self.table.flush() {
            tracing::error!(error = %e, "could not seal the table; the last checkpoint stands");
            return None;
        }
        // Every ingested row is in a segment now: the state as it stands goes with them.
        let read_at = Instant::now();
        let manifest = self.table.manifest();
        let capture = self.capture();
        let position = capture.source.next.clone();
        if let Err(e) = self.deadletters.sync() {
            tracing::error!(error = %e, "could not sync dead letters; checkpoint skipped");
            self.protocol.discard(capture);
            return None;
        }
        let result = self.protocol.checkpoint_now(capture, manifest);
        self.written(result, read_at).then_some(position)
    }

    fn sample_rate(&mut self) {
        let elapsed = self.rate_sample.0.elapsed();
        if elapsed >= RATE_EVERY {
            let rows = self.metrics.rows.get();
            let rate = rows.saturating_sub(self.rate_sample.1) as f64 / elapsed.as_secs_f64();
            self.metrics.rate.set(rate);
            self.rate_sample = (Instant::now(), rows);
        }
    }

    fn fail(&self, error: String) {
        tracing::error!(error = %error, "ingest stopped; the last checkpoint stands and a restart resumes from it");
        if let Ok(mut f) = self.health.failed.lock() {
            *f = Some(error);
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
                        if let Err(e) = self.ingest(std::mem::take(&mut batches)) {
                            self.fail(e);
                            return;
                        }
                        let position = self.checkpoint_now().unwrap_or_default();
                        let _ = reply.send(position);
                    }
                }
            }
            if let Err(e) = self.ingest(batches) {
                self.fail(e);
                return;
            }
            self.maintain();
            self.sample_rate();
            if self.stop.load(Ordering::Acquire) && rx.is_empty() {
                break;
            }
        }
        if self.checkpoint_now().is_none() {
            tracing::error!("the last checkpoint could not be written; the next start resumes from the one before");
        }
    }
}
