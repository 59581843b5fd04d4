//! # checkpoint: the pipeline's durable state, saved as one
//!
//! What Kafka Streams' changelogs and committed offsets did in the original. A checkpoint is
//! everything needed to resume without losing or doubling an order: the table manifest (which
//! sealed segments hold the rows), the rolling-window state, the dedup state and the source
//! position (the next generator sequence number, or the next Kafka offset of each partition),
//! all as of the same moment: every order before the position is in those segments, windows and
//! dedup, and none after it.
//!
//! Layout:
//! - [`protocol`]: *when* a checkpoint is taken and written: a synchronous state machine driven
//!   by the ingest loop (seal started, seal durable, seal failed, checkpoint now). Checkpoints
//!   ride on the table's seals, so taking one never stops ingest.
//! - [`store`]: *how* it is written: `checkpoint.json` replaced by one atomic rename, and the
//!   dedup ids appended to a log, both checksummed.
//!
//! Durability boundary: the source may let go of a position (Kafka commits its offsets) only
//! once a checkpoint holding it has been written, never before.

pub mod protocol;
pub mod store;

use rolling::WindowsSnapshot;
use serde::{Deserialize, Serialize};
use table::Manifest;

pub use ingest::{DeadLetterMark, DedupRecord, Offsets, SourcePosition};
pub use protocol::{CheckpointMetrics, CheckpointProtocol, Written};
pub use store::{Checkpointer, FILE_NAME};
/// A checkpoint file that cannot be read or written, or does not hold what it should.
pub use table::StorageError as CheckpointError;

/// The dedup log as of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupLog {
    pub file: String,
    pub bytes: u64,
    /// xxh3-64 of the first `bytes` bytes.
    pub checksum: u64,
}

/// One checkpoint, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub created_ms: i64,
    pub source: SourcePosition,
    pub manifest: Manifest,
    pub windows: WindowsSnapshot,
    pub dedup: DedupLog,
    /// Length of the dead-letter file: lines after it belong to orders after the position.
    pub deadletter_bytes: u64,
    /// The dead-letter store's generation, length and count (absent in checkpoints written
    /// before the store rotated: then generation 0, `deadletter_bytes`, and a count from the
    /// file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadletters: Option<DeadLetterMark>,
}

/// The dedup ids a capture carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupDelta {
    /// Ids remembered since the previous capture: appended to the log.
    New(Vec<DedupRecord>),
    /// Every live id: starts a fresh log (the old one is mostly expired ids).
    Whole(Vec<DedupRecord>),
}

impl DedupDelta {
    pub fn records(&self) -> &[DedupRecord] {
        match self {
            DedupDelta::New(r) | DedupDelta::Whole(r) => r,
        }
    }
}

/// The state of the pipeline at one moment, taken by the ingest loop; written once the table
/// segments holding the same rows are durable.
#[derive(Debug, Clone)]
pub struct Capture {
    pub created_ms: i64,
    pub source: SourcePosition,
    pub windows: WindowsSnapshot,
    pub dedup: DedupDelta,
    pub deadletters: DeadLetterMark,
}

/// A checkpoint read back, with the dedup ids its log holds.
#[derive(Debug)]
pub struct Restored {
    pub checkpoint: Checkpoint,
    pub dedup: Vec<DedupRecord>,
}
