//! The ingest loop: source batches -> decode and dedup -> realtime table and rolling windows
//! (and dead letters). Both sinks get exactly the same deduplicated orders.
//!
//! It runs on a thread of its own (decoding is CPU work that must not stall the HTTP runtime)
//! and is the table's single writer. It also does the table's housekeeping (sealing, merging,
//! retention) at least once a second, so a quiet source still gets its rows sealed. On stop it
//! drains what the source already handed over, seals everything and syncs the dead letters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rolling::{Metrics, Windows};

use ingest::{DeadLetterStore, Ingestor, Message, Position};
use server::TapBatch;
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
}

pub struct IngestLoop {
    pub ingestor: Ingestor,
    pub table: Arc<RealtimeTable>,
    pub windows: Arc<Mutex<Windows>>,
    pub deadletters: DeadLetterStore,
    pub stats: Arc<IngestStats>,
    pub stop: Arc<AtomicBool>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl IngestLoop {
    fn ingest(&mut self, batches: Vec<TapBatch>) {
        let docs: Vec<(u64, String)> = batches.into_iter().flatten().collect();
        if docs.is_empty() {
            return;
        }
        let messages: Vec<Message<'_>> = docs
            .iter()
            .map(|(seq, json)| Message {
                position: Position {
                    partition: 0,
                    offset: *seq as i64,
                },
                payload: json.as_bytes(),
                record_time_ms: None,
            })
            .collect();
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
            let by_offset: std::collections::HashMap<i64, &[u8]> = messages
                .iter()
                .map(|m| (m.position.offset, m.payload))
                .collect();
            let rejected: Vec<_> = out
                .rejected
                .iter()
                .map(|r| {
                    (
                        r.clone(),
                        by_offset
                            .get(&r.position.offset)
                            .copied()
                            .unwrap_or_default(),
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
        if let Some(p) = out.last_position {
            self.stats
                .last_offset
                .store(p.offset.max(0) as u64, Ordering::Relaxed);
        }
    }

    /// Runs until `stop` is set (then drains the channel) or the channel closes.
    pub fn run(mut self, mut rx: mpsc::Receiver<TapBatch>, runtime: tokio::runtime::Handle) {
        loop {
            let first =
                runtime.block_on(async { tokio::time::timeout(HOUSEKEEPING, rx.recv()).await });
            let mut batches = Vec::new();
            let closed = match first {
                Ok(Some(b)) => {
                    batches.push(b);
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            };
            let mut n: usize = batches.iter().map(Vec::len).sum();
            while n < MAX_BATCH_MESSAGES {
                match rx.try_recv() {
                    Ok(b) => {
                        n += b.len();
                        batches.push(b);
                    }
                    Err(_) => break,
                }
            }
            self.ingest(batches);
            if let Err(e) = self.table.maintain(now_ms()) {
                tracing::warn!(error = %e, "table housekeeping failed; will retry");
            }
            if closed || (self.stop.load(Ordering::Acquire) && rx.is_empty()) {
                break;
            }
        }
        if let Err(e) = self.table.flush() {
            tracing::error!(error = %e, "could not seal the table on shutdown");
        }
        if let Err(e) = self.deadletters.sync() {
            tracing::error!(error = %e, "could not sync dead letters on shutdown");
        }
    }
}
