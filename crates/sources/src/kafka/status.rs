//! What the Kafka source is doing ([`SourceStatus`]), shared by its poll thread, its rebalance
//! callback and the status pages.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::Offsets;

/// A partition's high and low watermarks and the consumer's own position in it.
pub type Watermarks = (i64, i64, Option<i64>);

/// The first assignment this process got (with the topic's partition count then, 0 if not
/// known), and whether a later one moved partitions to or from it. Process-wide, not per
/// source: the supervisor restarts the pipeline (and its source) in process after a failed
/// revocation, and the table it keeps still lacks what others read meanwhile.
static FIRST_ASSIGNMENT: Mutex<Option<(Vec<i32>, usize)>> = Mutex::new(None);
static MOVED: AtomicBool = AtomicBool::new(false);

/// Records an assignment (`sorted` partitions; the topic has `topic_partitions`, 0 if not known
/// yet); true when it is the first one that moved partitions since this process started.
/// Partitions the topic did not have at the first assignment (added since) do not count: a
/// reader of them starts at their beginning and misses nothing.
pub(super) fn record_assignment(sorted: &[i32], topic_partitions: usize) -> bool {
    let Ok(mut first) = FIRST_ASSIGNMENT.lock() else {
        return false;
    };
    match first.as_ref() {
        None => {
            *first = Some((sorted.to_vec(), topic_partitions));
            false
        }
        Some((f, known)) => {
            let lost = f.iter().any(|p| !sorted.contains(p));
            let gained_old = sorted.iter().any(|p| {
                !f.contains(p) && (*known == 0 || usize::try_from(*p).is_ok_and(|p| p < *known))
            });
            (lost || gained_old) && !MOVED.swap(true, Ordering::AcqRel)
        }
    }
}

/// Whether partitions moved to or from this process since it started.
pub fn moved() -> bool {
    MOVED.load(Ordering::Acquire)
}

/// Whether this process has had an assignment at all.
pub(super) fn assigned_once() -> bool {
    FIRST_ASSIGNMENT.lock().is_ok_and(|f| f.is_some())
}

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
    /// Times the partitions were paused so.
    pub pauses: AtomicU64,

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
    /// A member the group gave no partitions (more members than partitions) has nothing to be
    /// behind on, once it has been assigned.
    pub fn every_assigned_partition_reported(&self) -> bool {
        let (Ok(assigned), Ok(marks)) = (self.assigned.lock(), self.watermarks.lock()) else {
            return false;
        };
        if assigned.is_empty() {
            return assigned_once();
        }
        assigned.iter().all(|p| marks.contains_key(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_moved_since_the_start_are_remembered_and_new_ones_do_not_count() {
        // The process-wide record: this is the only test that touches it.
        assert!(!assigned_once());
        assert!(!record_assignment(&[0, 1, 2], 3), "the first assignment");
        assert!(assigned_once());
        assert!(
            !record_assignment(&[0, 1, 2], 3),
            "the same again (a rebalance)"
        );
        assert!(
            !record_assignment(&[0, 1, 2, 3, 4], 5),
            "partitions added to the topic"
        );
        assert!(!moved());
        assert!(
            record_assignment(&[0, 1], 3),
            "partition 2 went to another member"
        );
        assert!(moved());
        assert!(!record_assignment(&[0, 1, 2], 3), "said once");
        assert!(moved(), "and remembered");
    }
}
