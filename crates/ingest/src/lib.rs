//! # ingest: order events in, rows of table `orders` out
//!
//! The stage between a source (the in-process generator, or Kafka) and the realtime table and
//! rolling windows. It decodes a batch of JSON messages into one Arrow batch with every column of
//! SPEC section 4, sends what cannot be decoded to the dead-letter store with the reason and
//! position, and drops re-delivered orders (dedup on `order_id`). It never stops for one bad
//! message. Knows nothing of HTTP or SQL.
//!
//! Layout:
//! - [`schema`]: the columns of table `orders`, and the item and coupon grains.
//! - [`decode`]: JSON -> Arrow, parallel parsing, reject reasons.
//! - [`dedup`]: the bounded dedup horizon.
//! - [`deadletter`]: where rejected messages go.
//! - [`metrics`]: what ingest counts, for `/metrics`.
//!
//! Also the vocabulary shared with the sources before it and the checkpoint after it:
//! [`SourceEvent`], [`OwnedMessage`], [`SourcePosition`].

pub mod deadletter;
pub mod decode;
pub mod dedup;
pub mod metrics;
pub mod schema;

use std::collections::BTreeMap;

use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

pub use deadletter::DeadLetterStore;
pub use decode::{Message, Position, RejectReason, Rejected};
pub use dedup::{Dedup, DedupRecord};
pub use metrics::IngestMetrics;

/// Next position to read, per partition (the generator's next sequence number is partition
/// 0's).
pub type Offsets = BTreeMap<i32, i64>;

/// Where a source resumes: saved in every checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// "generator" (the embedded orders API) or "kafka".
    pub kind: String,
    /// The generator's seed, so a restart without `--seed` continues the same sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Kafka topic (None for the generator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Next position to read, per partition: the generator's next sequence number is partition
    /// 0's; for Kafka, the next offset of each partition read so far.
    pub next: Offsets,
}

/// A message as a source hands it to the ingest loop (owned, so it can cross threads).
#[derive(Debug, Clone)]
pub struct OwnedMessage {
    pub position: Position,
    pub payload: Vec<u8>,
    /// The record's own timestamp (Kafka), used when the order has no `time_ms`.
    pub record_time_ms: Option<i64>,
}

impl OwnedMessage {
    pub fn borrow(&self) -> Message<'_> {
        Message {
            position: self.position,
            payload: &self.payload,
            record_time_ms: self.record_time_ms,
        }
    }
}

/// What a source sends the ingest loop, in order.
#[derive(Debug)]
pub enum SourceEvent {
    Batch(Vec<OwnedMessage>),
    /// Make everything sent before this durable (seal and checkpoint) now, and answer with the
    /// next position of each partition that checkpoint holds (a Kafka rebalance needs this
    /// before it gives partitions away).
    Checkpoint(std::sync::mpsc::Sender<Offsets>),
}

/// Settings of the ingest stage.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Messages larger than this are dead-lettered unparsed (Kafka's default message limit).
    pub max_message_bytes: usize,
    /// How far back in event time a re-delivered order is still recognised.
    pub dedup_horizon_ms: i64,
    /// Hard cap on remembered ids, whatever the horizon.
    pub dedup_max_entries: usize,
    /// Threads that parse a batch in parallel.
    pub decode_threads: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_message_bytes: 1024 * 1024,
            dedup_horizon_ms: 24 * 3_600_000,
            dedup_max_entries: 20_000_000,
            decode_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl IngestConfig {
    /// Checks every value; the message names the key and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err(format!(
                "max_message_bytes must be from 1 to 67108864 (64 MiB), got {}",
                self.max_message_bytes
            ));
        }
        if self.dedup_horizon_ms <= 0 {
            return Err(format!(
                "dedup_horizon_ms must be positive, got {}",
                self.dedup_horizon_ms
            ));
        }
        if self.dedup_max_entries == 0 {
            return Err("dedup_max_entries must be at least 1, got 0".into());
        }
        if !(1..=256).contains(&self.decode_threads) {
            return Err(format!(
                "decode_threads must be from 1 to 256, got {}",
                self.decode_threads
            ));
        }
        Ok(())
    }
}

/// What one batch became.
#[derive(Debug)]
pub struct Ingested {
    /// The new rows, in message order (None when no message became a row).
    pub batch: Option<RecordBatch>,
    /// Messages that could not become rows, with the reason.
    pub rejected: Vec<Rejected>,
    /// Re-delivered orders dropped by dedup.
    pub duplicates: usize,
    /// The last position of the batch (the source may resume after it).
    pub last_position: Option<Position>,
}

/// What the rolling windows need of one order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderFacts {
    pub time_ms: i64,
    pub order_total: f64,
    pub fraud: bool,
    pub delivered: bool,
    pub refunded: bool,
}

/// The window facts of every row of a decoded batch, in row order (missing values count as
/// zero / false).
pub fn order_facts(batch: &RecordBatch) -> Vec<OrderFacts> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};
    let (Some(time), Some(total), Some(fraud), Some(delivered), Some(refunded)) = (
        batch.column_by_name(schema::TIME_MS),
        batch.column_by_name("order_total"),
        batch.column_by_name("fraud_flag"),
        batch.column_by_name("delivered"),
        batch.column_by_name("refunded"),
    ) else {
        return Vec::new();
    };
    let time = time.as_primitive::<Int64Type>();
    let total = total.as_primitive::<Float64Type>();
    let fraud = fraud.as_boolean();
    let delivered = delivered.as_string::<i32>();
    let refunded = refunded.as_string::<i32>();
    (0..batch.num_rows())
        .map(|i| OrderFacts {
            time_ms: time.value(i),
            order_total: if total.is_null(i) {
                0.0
            } else {
                total.value(i)
            },
            fraud: !fraud.is_null(i) && fraud.value(i),
            delivered: !delivered.is_null(i) && delivered.value(i) == "yes",
            refunded: !refunded.is_null(i) && refunded.value(i) == "yes",
        })
        .collect()
}

/// The dedup key (xxh3-128 of `order_id`) of every row of a decoded batch, in row order.
pub fn order_id_hashes(batch: &RecordBatch) -> Vec<u128> {
    use datafusion::arrow::array::AsArray;
    match batch.column_by_name(schema::ORDER_ID) {
        Some(ids) => ids
            .as_string::<i32>()
            .iter()
            .map(|id| xxhash_rust::xxh3::xxh3_128(id.unwrap_or_default().as_bytes()))
            .collect(),
        None => Vec::new(),
    }
}

/// Decoding and dedup state; one per ingest loop (the single writer).
#[derive(Debug)]
pub struct Ingestor {
    config: IngestConfig,
    dedup: Dedup,
}

impl Ingestor {
    pub fn new(config: IngestConfig) -> Self {
        Ingestor {
            config,
            dedup: Dedup::new(config.dedup_horizon_ms, config.dedup_max_entries),
        }
    }

    pub fn dedup(&self) -> &Dedup {
        &self.dedup
    }

    pub fn dedup_mut(&mut self) -> &mut Dedup {
        &mut self.dedup
    }

    /// Decodes and dedups one batch of messages.
    pub fn ingest(&mut self, messages: &[Message<'_>]) -> Ingested {
        let parsed = decode::parse_all(
            messages,
            self.config.max_message_bytes,
            self.config.decode_threads,
        );
        let mut rejected = Vec::new();
        let mut keep = Vec::with_capacity(parsed.len());
        let mut duplicates = 0;
        for p in parsed {
            match p {
                Ok(p) => {
                    if self.dedup.insert(p.order_id_hash, p.time_ms) {
                        keep.push(p);
                    } else {
                        duplicates += 1;
                    }
                }
                Err(r) => rejected.push(r),
            }
        }
        let batch = (!keep.is_empty()).then(|| decode::to_batch(&keep, keep.len()));
        Ingested {
            batch,
            rejected,
            duplicates,
            last_position: messages.last().map(|m| m.position),
        }
    }
}
