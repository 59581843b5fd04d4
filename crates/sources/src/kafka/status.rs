//! What the Kafka source is doing ([`SourceStatus`]), shared by its poll thread, its rebalance
//! callback and the status pages.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Mutex;

use crate::Offsets;

/// A partition's high and low watermarks and the consumer's own position in it.
pub type Watermarks = (i64, i64, Option<i64>);

/// What the source is doing, for status pages and logs.
#[derive(Debug, Default)]
pub struct SourceStatus {
    /// Messages read (the `rtap_kafka_messages_total` counter).
    pub messages: prometheus_client::metrics::counter::Counter,
    pub waiting_for_topic: AtomicBool,
    pub assigned: Mutex<Vec<i32>>,
    pub last_error: Mutex<Option<String>>,
    pub(super) closing: AtomicBool,
    /// Counts revocations, so the poll loop can tell that one happened while it built a batch.
    pub(super) revocations: AtomicU64,
    /// Paused because ingest's pending-bytes budget (or its channel) is full.
    pub paused: AtomicBool,
    /// The first assignment this process got, and whether a later one differed from it.
    pub first_assignment: Mutex<Option<Vec<i32>>>,
    pub moved: AtomicBool,
    /// Partitions the topic has (from the client's metadata, in its statistics); 0 until known.
    pub topic_partitions: AtomicUsize,
    /// Per assigned partition: the high and low watermarks and the consumer's own position, for
    /// lag.
    pub watermarks: Mutex<std::collections::BTreeMap<i32, Watermarks>>,
    /// Set when partitions went away without their progress committed: the pipeline must
    /// restart from its last checkpoint so it neither keeps nor loses what it read from them.
    pub needs_restart: Mutex<Option<String>>,
}

impl SourceStatus {
    pub(super) fn error(&self, e: String) {
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e);
        }
    }

    pub(super) fn restart(&self, why: String) {
        tracing::error!(reason = %why, "the pipeline must restart from its last checkpoint");
        if let Ok(mut r) = self.needs_restart.lock() {
            r.get_or_insert(why);
        }
    }

    /// Lag per partition: messages up to the high watermark not ingested yet (from ingest's
    /// position when it has read the partition, else the consumer's own, else all the partition
    /// holds: from its low watermark).
    pub fn partition_lag(&self, ingested: &Offsets) -> Vec<(i32, u64)> {
        let Ok(marks) = self.watermarks.lock() else {
            return Vec::new();
        };
        marks
            .iter()
            .map(|(p, (high, low, position))| {
                let next = ingested.get(p).copied().or(*position).unwrap_or(*low);
                (*p, high.saturating_sub(next).max(0) as u64)
            })
            .collect()
    }

    /// Whether every assigned partition has watermarks in the statistics (so lag is known).
    pub fn every_assigned_partition_reported(&self) -> bool {
        let (Ok(assigned), Ok(marks)) = (self.assigned.lock(), self.watermarks.lock()) else {
            return false;
        };
        !assigned.is_empty() && assigned.iter().all(|p| marks.contains_key(p))
    }
}
