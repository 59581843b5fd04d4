//! When a checkpoint is taken and when it is written: a synchronous state machine that the
//! ingest loop drives and tests drive directly.
//!
//! Checkpoints ride on the table's seals. When a seal starts, every row ingested so far is in
//! it or in an earlier segment, so the state that goes with those rows (windows, new dedup ids,
//! dead-letter length, source position) is the state *now*: the ingest loop captures it
//! ([`CheckpointProtocol::seal_started`]). When that seal is durable and listed in the
//! manifest, the capture and that manifest are written as one checkpoint
//! ([`CheckpointProtocol::seal_durable`]). A seal that fails drops its capture
//! ([`CheckpointProtocol::seal_failed`]): its rows are back in memory and the next seal captures
//! again. Shutdown, a Kafka revoke, or a position that moved with no new rows flush the table
//! and write a capture at once ([`CheckpointProtocol::checkpoint_now`]).
//!
//! The dedup ids a capture takes from the dedup journal exist nowhere else until written, so a
//! capture that is dropped or fails to write *carries* its ids into the next written one: the
//! dedup log never misses an id, whatever fails in between.

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use table::Manifest;

use crate::{Capture, CheckpointError, Checkpointer, DedupDelta, DedupRecord, Offsets};

/// What checkpoints cost, for `/metrics` and `/api/status`.
#[derive(Debug, Clone, Default)]
pub struct CheckpointMetrics {
    /// Checkpoints written by this process (`rtap_checkpoints_total`).
    pub written: Counter,
    /// How long the last one took (`rtap_checkpoint_last_duration_seconds`).
    pub last_duration_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// When the last one was written, Unix seconds of the wall clock, as Prometheus
    /// timestamps are (`rtap_checkpoint_last_written_timestamp_seconds`; 0 before the first).
    pub last_written_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl CheckpointMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rtap_checkpoints",
            "Checkpoints written by this process",
            self.written.clone(),
        );
        registry.register(
            "rtap_checkpoint_last_duration_seconds",
            "How long the last checkpoint took",
            self.last_duration_seconds.clone(),
        );
        registry.register(
            "rtap_checkpoint_last_written_timestamp_seconds",
            "When the last checkpoint was written (Unix time)",
            self.last_written_seconds.clone(),
        );
    }
}

/// A checkpoint that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The source positions it holds: the source may let go of everything before them.
    pub position: Offsets,
    /// Size of `checkpoint.json`.
    pub bytes: u64,
    pub duration: Duration,
}

/// The protocol's state: the capture waiting for its seal, and ids carried from captures that
/// were never written.
pub struct CheckpointProtocol {
    store: Checkpointer,
    pending: Option<Capture>,
    carried: Vec<DedupRecord>,
    /// A whole capture was dropped: the ids it took from the journal are only in the dedup
    /// map, so the next capture must be whole too.
    force_whole: bool,
    metrics: CheckpointMetrics,
}

impl std::fmt::Debug for CheckpointProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointProtocol")
            .field("pending", &self.pending.is_some())
            .field("carried", &self.carried.len())
            .finish_non_exhaustive()
    }
}

impl CheckpointProtocol {
    pub fn new(store: Checkpointer, metrics: CheckpointMetrics) -> Self {
        CheckpointProtocol {
            store,
            pending: None,
            carried: Vec::new(),
            force_whole: false,
            metrics,
        }
    }

    /// Whether the next capture should carry every live id (the log is mostly expired ids).
    pub fn wants_whole_dedup(&self, live_ids: usize) -> bool {
        self.force_whole || self.store.wants_whole_dedup(live_ids)
    }

    /// Whether a capture waits for its seal.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Ids carried from captures that were never written.
    pub fn carried(&self) -> usize {
        self.carried.len()
    }

    pub fn store(&self) -> &Checkpointer {
        &self.store
    }

    /// A seal started: `capture` is the state that goes with the rows in it.
    pub fn seal_started(&mut self, capture: Capture) {
        if let Some(stale) = self.pending.take() {
            // At most one seal is in flight; a capture still pending was never written.
            self.carry(stale);
        }
        self.pending = Some(capture);
    }

    /// The seal in flight failed: its capture no longer matches a manifest.
    pub fn seal_failed(&mut self) {
        if let Some(p) = self.pending.take() {
            self.carry(p);
        }
    }

    /// A capture that will not be written (its dead letters could not be synced): keep its ids.
    pub fn discard(&mut self, capture: Capture) {
        self.carry(capture);
    }

    /// The seal in flight is durable and listed in `manifest`: writes the capture taken when it
    /// started. None when no capture was pending.
    pub fn seal_durable(&mut self, manifest: Manifest) -> Option<Result<Written, CheckpointError>> {
        let capture = self.pending.take()?;
        Some(self.write(capture, manifest))
    }

    /// Everything ingested is sealed and listed in `manifest` (the loop flushed the table):
    /// writes `capture` now. A capture pending for a seal is superseded.
    pub fn checkpoint_now(
        &mut self,
        capture: Capture,
        manifest: Manifest,
    ) -> Result<Written, CheckpointError> {
        self.seal_failed();
        self.write(capture, manifest)
    }

    fn carry(&mut self, capture: Capture) {
        match capture.dedup {
            DedupDelta::New(ids) => self.carried.extend(ids),
            // Its journal ids are in no log yet: the next capture is whole and holds them.
            DedupDelta::Whole(_) => self.force_whole = true,
        }
    }

    fn write(
        &mut self,
        mut capture: Capture,
        manifest: Manifest,
    ) -> Result<Written, CheckpointError> {
        let started = Instant::now();
        match &mut capture.dedup {
            DedupDelta::New(ids) if !self.carried.is_empty() => {
                let mut all = std::mem::take(&mut self.carried);
                all.append(ids);
                *ids = all;
            }
            DedupDelta::New(_) => {}
            DedupDelta::Whole(_) => {
                self.carried.clear();
                self.force_whole = false;
            }
        }
        match self.store.write(&capture, manifest) {
            Ok(bytes) => {
                let duration = started.elapsed();
                self.metrics.written.inc();
                self.metrics
                    .last_duration_seconds
                    .set(duration.as_secs_f64());
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.metrics.last_written_seconds.set(at);
                Ok(Written {
                    position: capture.source.next,
                    bytes,
                    duration,
                })
            }
            Err(e) => {
                self.carry(capture);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Restored, SourcePosition};
    use rolling::{Metrics, WindowConfig, Windows};

    /// A capture at event time `t` (ms) with position `next` and the given new ids.
    fn capture(t: i64, next: i64, ids: &[u128]) -> Capture {
        let mut w = Windows::new(WindowConfig::default()).expect("config");
        w.observe(t, Metrics::order(1.0, false, false, false));
        Capture {
            created_ms: t,
            source: SourcePosition {
                kind: "generator".into(),
                next: Offsets::from([(0, next)]),
                ..SourcePosition::default()
            },
            windows: w.snapshot(),
            dedup: DedupDelta::New(ids.iter().map(|i| DedupRecord::new(*i, t)).collect()),
            deadletters: crate::DeadLetterMark::default(),
        }
    }

    fn protocol(dir: &std::path::Path) -> CheckpointProtocol {
        let (store, _) = Checkpointer::open(dir).expect("open");
        CheckpointProtocol::new(store, CheckpointMetrics::default())
    }

    fn restored(dir: &std::path::Path) -> Restored {
        Checkpointer::open(dir)
            .expect("reopen")
            .1
            .expect("a checkpoint")
    }

    /// The set of ids the restored dedup log holds (a failed write may leave an id twice).
    fn ids(r: &Restored) -> Vec<u128> {
        let mut v: Vec<u128> = r.dedup.iter().map(DedupRecord::id).collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn a_durable_seal_writes_the_capture_taken_when_it_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = protocol(dir.path());
        assert!(
            p.seal_durable(Manifest::default()).is_none(),
            "nothing pending"
        );
        p.seal_started(capture(10_000, 11, &[1, 2]));
        assert!(p.is_pending());
        let w = p
            .seal_durable(Manifest::default())
            .expect("pending")
            .expect("written");
        assert_eq!(w.position, Offsets::from([(0, 11)]));
        assert!(!p.is_pending());
        let r = restored(dir.path());
        assert_eq!(r.checkpoint.created_ms, 10_000);
        assert_eq!(r.checkpoint.source.next[&0], 11);
        assert_eq!(ids(&r), vec![1, 2]);
    }

    #[test]
    fn a_failed_seal_then_a_good_one_loses_no_dedup_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = protocol(dir.path());
        p.seal_started(capture(1_000, 3, &[1, 2]));
        p.seal_failed();
        assert!(!p.is_pending());
        assert_eq!(p.carried(), 2);
        assert!(p.seal_durable(Manifest::default()).is_none());
        // The retried seal captures again: only the ids new since the failed capture.
        p.seal_started(capture(2_000, 5, &[3]));
        p.seal_durable(Manifest::default())
            .expect("pending")
            .expect("written");
        assert_eq!(p.carried(), 0);
        let r = restored(dir.path());
        assert_eq!(r.checkpoint.created_ms, 2_000);
        assert_eq!(r.checkpoint.source.next[&0], 5);
        assert_eq!(ids(&r), vec![1, 2, 3]);
    }

    #[test]
    fn a_failed_write_carries_its_ids_into_the_next_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = protocol(dir.path());
        p.seal_started(capture(1_000, 2, &[1]));
        p.seal_durable(Manifest::default())
            .expect("pending")
            .expect("written");
        // The temporary file cannot be created: the write fails.
        let tmp = dir.path().join(format!("{}.tmp", crate::FILE_NAME));
        std::fs::create_dir(&tmp).expect("block the temporary file");
        p.seal_started(capture(2_000, 3, &[2]));
        let failed = p.seal_durable(Manifest::default()).expect("pending");
        assert!(failed.is_err());
        assert_eq!(p.carried(), 1);
        std::fs::remove_dir(&tmp).expect("unblock");
        let w = p
            .checkpoint_now(capture(3_000, 4, &[3]), Manifest::default())
            .expect("written");
        assert_eq!(w.position[&0], 4);
        let r = restored(dir.path());
        assert_eq!(ids(&r), vec![1, 2, 3]);
    }

    #[test]
    fn checkpoint_now_supersedes_a_pending_capture_and_keeps_its_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = protocol(dir.path());
        p.seal_started(capture(1_000, 2, &[1]));
        p.checkpoint_now(capture(1_500, 3, &[2]), Manifest::default())
            .expect("written");
        assert!(!p.is_pending());
        assert!(p.seal_durable(Manifest::default()).is_none(), "superseded");
        let r = restored(dir.path());
        assert_eq!(r.checkpoint.source.next[&0], 3);
        assert_eq!(ids(&r), vec![1, 2]);
    }

    #[test]
    fn a_dropped_whole_capture_makes_the_next_one_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = protocol(dir.path());
        assert!(!p.wants_whole_dedup(10));
        let mut whole = capture(1_000, 2, &[]);
        whole.dedup = DedupDelta::Whole(vec![DedupRecord::new(1, 1_000)]);
        p.seal_started(whole);
        p.seal_failed();
        assert!(p.wants_whole_dedup(10), "its ids are in no log");
        let mut next = capture(2_000, 3, &[]);
        next.dedup =
            DedupDelta::Whole(vec![DedupRecord::new(1, 1_000), DedupRecord::new(2, 2_000)]);
        p.checkpoint_now(next, Manifest::default())
            .expect("written");
        assert!(!p.wants_whole_dedup(10));
        assert_eq!(ids(&restored(dir.path())), vec![1, 2]);
    }

    #[test]
    fn a_discarded_capture_keeps_its_ids_and_a_whole_capture_replaces_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = protocol(dir.path());
        p.discard(capture(1_000, 2, &[7]));
        assert_eq!(p.carried(), 1);
        let mut whole = capture(2_000, 3, &[]);
        whole.dedup =
            DedupDelta::Whole(vec![DedupRecord::new(7, 1_000), DedupRecord::new(8, 2_000)]);
        let metrics = p.metrics.clone();
        p.checkpoint_now(whole, Manifest::default())
            .expect("written");
        assert_eq!(p.carried(), 0);
        assert_eq!(metrics.written.get(), 1);
        assert_eq!(ids(&restored(dir.path())), vec![7, 8]);
    }
}
