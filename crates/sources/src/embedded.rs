//! The in-process source of `rtap up`: every batch the [`OrderFeed`] stores (its tap) is handed
//! to ingest as source messages, partition 0, offset = the order's sequence number in the store.
//!
//! Resuming is the feed's job: [`OrderFeed::start_job`] first replays the stored orders from the
//! checkpoint's next sequence number, so the tap carries every stored order once and in order.
//! The store keeps every order, so a durable checkpoint releases nothing here.

use std::sync::Arc;

use ingest::{Batch, ByteBudget, OwnedMessage, Position, SourceEvent};
use tokio::sync::{mpsc, watch};

use crate::feed::{OrderFeed, TapBatch};
use crate::{CheckpointHook, Offsets, Source, SourceReport};

pub struct EmbeddedSource {
    feed: Arc<OrderFeed>,
    stop: watch::Sender<bool>,
    done: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl std::fmt::Debug for EmbeddedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSource").finish_non_exhaustive()
    }
}

/// One stored batch as source messages.
pub fn messages(batch: TapBatch) -> Vec<OwnedMessage> {
    batch
        .into_iter()
        .map(|(seq, json)| OwnedMessage {
            position: Position {
                partition: 0,
                offset: i64::try_from(seq).unwrap_or(i64::MAX),
            },
            payload: json.into_bytes(),
            record_time_ms: None,
        })
        .collect()
}

impl EmbeddedSource {
    /// Forwards what the feed stores (received on `tap`) to `ingest`. Must be called inside a
    /// Tokio runtime.
    pub fn start(
        feed: Arc<OrderFeed>,
        mut tap: mpsc::Receiver<TapBatch>,
        ingest: mpsc::Sender<SourceEvent>,
        budget: ByteBudget,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let (done_tx, done) = std::sync::mpsc::channel();
        // Waits for its share of the pending-bytes budget, so the generator waits too (the tap
        // fills) when ingest is behind.
        let hand_over = move |batch: TapBatch| {
            let ingest = ingest.clone();
            let budget = budget.clone();
            async move {
                let messages = messages(batch);
                let bytes = messages.iter().map(|m| m.payload.len()).sum();
                let permit = budget.acquire(bytes).await;
                ingest
                    .send(SourceEvent::Batch(Batch::new(messages, Some(permit))))
                    .await
                    .is_ok()
            }
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    batch = tap.recv() => match batch {
                        Some(b) => {
                            if !hand_over(b).await {
                                break;
                            }
                        }
                        None => break,
                    },
                    _ = async { let _ = stopped.wait_for(|s| *s).await; } => {
                        // Hand over what is already queued, then nothing more.
                        while let Ok(b) = tap.try_recv() {
                            if !hand_over(b).await {
                                break;
                            }
                        }
                        break;
                    }
                }
            }
            let _ = done_tx.send(());
        });
        EmbeddedSource {
            feed,
            stop,
            done: std::sync::Mutex::new(Some(done)),
        }
    }
}

impl Source for EmbeddedSource {
    fn on_checkpoint(&self) -> CheckpointHook {
        // The store keeps every order: nothing to let go of.
        Box::new(|_| {})
    }

    fn stop(&self) {
        let _ = self.stop.send(true);
        let done = self.done.lock().ok().and_then(|mut d| d.take());
        if let Some(done) = done {
            let _ = done.recv_timeout(std::time::Duration::from_secs(30));
        }
    }

    fn join(&self) {}

    fn report(&self) -> Option<SourceReport> {
        // The store and the generator are reported as stages of their own.
        None
    }

    fn lag(&self, ingested: &Offsets) -> Option<u64> {
        let next = ingested.get(&0).copied().unwrap_or(1).max(1) as u64;
        Some(self.feed.stored().saturating_sub(next - 1))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_become_messages_at_their_sequence_numbers() {
        let m = super::messages(vec![(7, "{}".into()), (8, "[]".into())]);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].position.partition, m[0].position.offset), (0, 7));
        assert_eq!(m[1].position.offset, 8);
        assert_eq!(m[1].payload, b"[]");
    }
}
