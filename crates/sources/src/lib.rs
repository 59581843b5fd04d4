//! # sources: where ingest reads orders from
//!
//! The first stage of the pipeline proper. Two implementations of one [`Source`] interface, each
//! emitting [`ingest::SourceEvent`]s into the ingest loop's channel and resuming after a
//! [`ingest::SourcePosition`] that a checkpoint saved:
//!
//! - [`embedded::EmbeddedSource`] (`rtap up`): the orders the generator and `POST /orders` store
//!   (the [`feed::OrderFeed`]) are handed to ingest in process, in store order; after a restart
//!   the stored orders past the checkpoint's sequence number are replayed first.
//! - [`kafka::consumer::KafkaSource`] (`rtap serve`, `rtap up --kafka`): a consumer-group member
//!   that commits offsets only when a checkpoint holding them is durable.
//!
//! Also here, because they fill the topic the Kafka source reads: the topic admin, the order
//! producer, and the hand-off that produces every stored order (`rtap up --kafka`).
//!
//! Knows nothing of tables, SQL or HTTP.
//!
//! Layout:
//! - [`feed`]: the generator job and the order store behind the orders API.
//! - [`embedded`]: the in-process source.
//! - [`kafka`]: admin, producer, hand-off, consumer.
//! - [`metrics`]: what the sources count, for `/metrics`.

pub mod embedded;
pub mod feed;
pub mod kafka;
pub mod metrics;

pub use feed::{FeedConfig, OrderFeed, TapBatch};
pub use ingest::{Offsets, SourceEvent, SourcePosition};

/// Told the source positions of every durable checkpoint.
pub type CheckpointHook = Box<dyn Fn(&Offsets) + Send>;

/// The source's stage as `/api/status` shows it.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub name: &'static str,
    /// "running", "waiting", "stopped" or "failed".
    pub state: &'static str,
    pub detail: serde_json::Value,
    pub last_error: Option<String>,
}

/// Which partitions of the topic an instance reads. Instances that share a consumer group split
/// the partitions, and each one's table, windows and answers cover only its own: this says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub topic: String,
    /// The partitions assigned to this instance, ascending (empty between a revocation and the
    /// next assignment).
    pub partitions: Vec<i32>,
    /// How many partitions the topic has, once the client has its metadata.
    pub topic_partitions: Option<usize>,
    /// The group moved partitions to or from this instance since it started: its table lacks
    /// what other instances read from them meanwhile, even if it reads every partition now.
    pub moved: bool,
}

impl Coverage {
    /// Every partition of the topic is read here (false while that is not known).
    pub fn complete(&self) -> bool {
        !self.moved
            && self
                .topic_partitions
                .is_some_and(|n| n > 0 && self.partitions.len() >= n)
    }

    /// "complete", "partial" or "unknown" (the topic's partition count not known yet).
    pub fn state(&self) -> &'static str {
        match self.topic_partitions {
            None => "unknown",
            Some(_) if self.complete() => "complete",
            Some(_) => "partial",
        }
    }
}

/// What ingest reads from. A source emits [`SourceEvent`]s on the channel it was started with,
/// in order, and only lets go of what it emitted (commits) when told a checkpoint holding it is
/// durable.
pub trait Source: Send + Sync {
    /// What to call when a checkpoint holding everything before its positions is durable (the
    /// ingest loop calls it; Kafka commits the offsets to the group).
    fn on_checkpoint(&self) -> CheckpointHook;
    /// Stops emitting; returns once nothing more will be sent (blocking).
    fn stop(&self);
    /// Waits for the source's own work to end; called after ingest's last checkpoint (Kafka
    /// commits it and leaves the group). Blocking.
    fn join(&self);
    /// The source's stage for `/api/status`.
    fn report(&self) -> Option<SourceReport>;
    /// Messages behind the source's end (orders stored but not ingested, or Kafka lag), when
    /// known.
    fn lag(&self, ingested: &Offsets) -> Option<u64>;
    /// Lag per partition, when the source has partitions (Kafka).
    fn partition_lag(&self, _ingested: &Offsets) -> Vec<(i32, u64)> {
        Vec::new()
    }
    /// Set when the source can no longer go on exactly (partitions revoked without a
    /// checkpoint): the pipeline restarts from its last checkpoint.
    fn failure(&self) -> Option<String> {
        None
    }
    /// The partitions this instance reads, when the source has partitions (Kafka); `None`
    /// means it reads everything there is (the embedded source).
    fn coverage(&self) -> Option<Coverage> {
        None
    }
}
