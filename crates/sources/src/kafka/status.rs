//! What the Kafka source is doing ([`SourceStatus`]), shared by its poll thread, its rebalance
//! callback and the status pages.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Mutex;

use crate::Offsets;

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
    /// Per assigned partition: the high watermark and the consumer's own position, for lag.
    pub watermarks: Mutex<std::collections::BTreeMap<i32, (i64, Option<i64>)>>,
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

    /// Lag per partition: messages up to the high watermark not ingested yet (ingest's position
    /// when it has read the partition, else the consumer's own).
    pub fn partition_lag(&self, ingested: &Offsets) -> Vec<(i32, u64)> {
        let Ok(marks) = self.watermarks.lock() else {
            return Vec::new();
        };
        marks
            .iter()
            .filter_map(|(p, (high, position))| {
                let next = ingested.get(p).copied().or(*position)?;
                Some((*p, high.saturating_sub(next).max(0) as u64))
            })
            .collect()
    }
}
