//! `rtap up --kafka`: a thread that produces every order the feed stores, and the small file
//! that remembers, between runs, the first position the broker has not confirmed (also used by
//! `rtap produce`).
//!
//! The position (a generator sequence number, or an index into the orders API's list) is saved
//! every second and on exit; a restart resumes from it: an order is never skipped, and after a
//! crash at most the orders in flight are sent again (ingest drops those by `order_id`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::producer::OrderProducer;
use super::{KafkaConfig, KafkaError};
use crate::feed::TapBatch;

/// How often the confirmed position is saved.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How long stopping waits for the broker to confirm what is queued.
pub const FLUSH_WAIT: Duration = Duration::from_secs(60);

/// What a producer remembers between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProducerState {
    /// First position not confirmed by the broker (1-based).
    pub next: u64,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub topic: String,
}

/// Reads a position file; None when there is none yet.
pub fn load_state(path: &Path) -> Result<Option<ProducerState>, KafkaError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            KafkaError::Other(format!(
                "{} is not a producer position file: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KafkaError::Other(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Replaces a position file (write a temporary file, rename it over).
pub fn save_state(path: &Path, state: &ProducerState) -> Result<(), KafkaError> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(state).map_err(|e| KafkaError::Other(e.to_string()))?;
    std::fs::write(&tmp, bytes)
        .map_err(|e| KafkaError::Other(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| KafkaError::Other(format!("cannot replace {}: {e}", path.display())))
}

/// The producer thread of `rtap up --kafka`.
pub struct Handoff {
    pub producer: Arc<OrderProducer>,
    thread: std::thread::JoinHandle<()>,
    stop: Arc<AtomicBool>,
    resume_seq: u64,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("resume_seq", &self.resume_seq)
            .finish_non_exhaustive()
    }
}

impl Handoff {
    /// Starts producing what arrives on `tap`, remembering the position in
    /// `<data_dir>/producer.json`. Must be called inside a Tokio runtime.
    pub fn start(
        config: &KafkaConfig,
        data_dir: &Path,
        mut tap: mpsc::Receiver<TapBatch>,
    ) -> Result<Self, KafkaError> {
        let path: PathBuf = data_dir.join("producer.json");
        let state = load_state(&path)?.unwrap_or(ProducerState {
            next: 1,
            seed: None,
            topic: config.topic.clone(),
        });
        let resume_seq = state.next.max(1);
        let producer = Arc::new(OrderProducer::new(config, resume_seq)?);
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Handle::current();
        let topic = config.topic.clone();
        let thread = {
            let stop = stop.clone();
            let producer = producer.clone();
            std::thread::Builder::new()
                .name("rtap-producer".into())
                .spawn(move || {
                    let mut saved = Instant::now();
                    let save = |producer: &OrderProducer| {
                        let state = ProducerState {
                            next: producer.confirmed_position(),
                            seed: None,
                            topic: topic.clone(),
                        };
                        if let Err(e) = save_state(&path, &state) {
                            tracing::error!(error = %e, "cannot save the producer position");
                        }
                    };
                    loop {
                        let next = runtime.block_on(async {
                            tokio::time::timeout(Duration::from_millis(200), tap.recv()).await
                        });
                        match next {
                            Ok(Some(batch)) => {
                                for (seq, json) in batch {
                                    let key = super::order_key(json.as_bytes()).unwrap_or_default();
                                    if let Err(e) = producer.send(seq, &key, json.as_bytes()) {
                                        tracing::error!(error = %e, seq, "could not produce an order; it is sent again on the next start");
                                    }
                                }
                            }
                            Ok(None) => break,
                            Err(_) if stop.load(Ordering::Acquire) => break,
                            Err(_) => {}
                        }
                        if saved.elapsed() >= SAVE_EVERY {
                            save(&producer);
                            saved = Instant::now();
                        }
                    }
                    if let Err(e) = producer.flush(FLUSH_WAIT) {
                        tracing::error!(error = %e, "not every order was confirmed before stopping; they are sent again on the next start");
                    }
                    save(&producer);
                })
                .map_err(|e| KafkaError::Other(format!("cannot start the producer thread: {e}")))?
        };
        Ok(Handoff {
            producer,
            thread,
            stop,
            resume_seq,
        })
    }

    /// The first stored order the broker has not confirmed (replayed to the producer first).
    pub fn resume_seq(&self) -> u64 {
        self.resume_seq
    }

    /// Produces what is queued, waits for the broker's confirmations and saves the position
    /// (blocking).
    pub fn finish(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
    }
}
