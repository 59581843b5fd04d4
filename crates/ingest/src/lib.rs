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

pub mod budget;
pub mod deadletter;
pub mod decode;
pub mod dedup;
pub mod metrics;
pub mod recent_rows;
pub mod schema;

use std::collections::BTreeMap;

use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

pub use budget::{BudgetPermit, ByteBudget};
pub use deadletter::{DeadLetterLimits, DeadLetterMark, DeadLetterStore};
pub use decode::{Message, Position, RejectReason, Rejected};
pub use dedup::{Dedup, DedupRecord};
pub use metrics::IngestMetrics;
pub use recent_rows::{for_each_recent_row, RECENT_COLUMNS};

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

/// Messages a source hands over at once, holding their share of the pending-bytes budget
/// until they are ingested (dropped).
#[derive(Debug, Default)]
pub struct Batch {
    pub messages: Vec<OwnedMessage>,
    pub permit: Option<BudgetPermit>,
}

impl Batch {
    pub fn new(messages: Vec<OwnedMessage>, permit: Option<BudgetPermit>) -> Self {
        Batch { messages, permit }
    }

    /// Payload bytes of the batch.
    pub fn bytes(&self) -> usize {
        self.messages.iter().map(|m| m.payload.len()).sum()
    }
}

/// What a source sends the ingest loop, in order.
#[derive(Debug)]
pub enum SourceEvent {
    Batch(Batch),
    /// Make everything sent before this durable (seal and checkpoint) now, and answer with the
    /// next position of each partition that checkpoint holds, or None when it could not be
    /// written (a Kafka rebalance needs this before it gives partitions away).
    Checkpoint(std::sync::mpsc::Sender<Option<Offsets>>),
    /// The source no longer reads these partitions (a rebalance gave them away, after the
    /// checkpoint above): forget their positions, so a later checkpoint never commits a stale
    /// one over the next owner's progress.
    Release(Vec<i32>),
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
    /// Threads that parse a batch in parallel; 0: one per core.
    pub decode_threads: usize,
    /// An order whose event time is further ahead of the wall clock than this is dead-lettered:
    /// one far-future order would otherwise move the windows' stream time and count every real
    /// order after it as late.
    pub max_future_ms: i64,
    /// An order whose event time is older than this is dead-lettered (it would be dropped by
    /// retention anyway, and would widen segment time ranges). None: the table's retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<i64>,
    /// Largest absolute value of any money field, in dollars; `order_total` must also be 0 or
    /// more. Keeps sums exact and far from overflow.
    pub max_amount: f64,
    /// Most line items one order may have.
    pub max_line_items: usize,
    /// Largest quantity (and free quantity) of one line item; negative ones are refused too.
    pub max_item_quantity: i32,
    /// The ingest loop decodes at most this many payload bytes as one batch (no Arrow column
    /// can come near its 2 GiB offset limit).
    pub max_batch_bytes: usize,
    /// Payload bytes handed over by the source and not yet ingested; a source waits (Kafka
    /// pauses its partitions) at this bound.
    pub max_pending_bytes: usize,
    /// The dead-letter file is rotated at this size ...
    pub deadletter_max_file_bytes: u64,
    /// ... and at most this many rotated files are kept (the oldest are deleted; the count of
    /// dead letters stays exact).
    pub deadletter_max_files: u32,
}

/// Retention of the table by default: 30 days.
pub const DEFAULT_MAX_AGE_MS: i64 = 30 * 24 * 3_600_000;

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_message_bytes: 1024 * 1024,
            dedup_horizon_ms: 24 * 3_600_000,
            dedup_max_entries: 20_000_000,
            decode_threads: 0,
            max_future_ms: 5 * 60_000,
            max_age_ms: None,
            max_amount: 1_000_000.0,
            max_line_items: 1_000,
            max_item_quantity: 100_000,
            max_batch_bytes: 32 * 1024 * 1024,
            max_pending_bytes: 64 * 1024 * 1024,
            deadletter_max_file_bytes: 64 * 1024 * 1024,
            deadletter_max_files: 8,
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
        if self.decode_threads > 256 {
            return Err(format!(
                "decode_threads must be from 0 (one per core) to 256, got {}",
                self.decode_threads
            ));
        }
        if self.max_future_ms < 0 {
            return Err(format!(
                "max_future_ms must be 0 or more, got {}",
                self.max_future_ms
            ));
        }
        if let Some(age) = self.max_age_ms {
            if age <= 0 {
                return Err(format!("max_age_ms must be positive, got {age}"));
            }
        }
        if !(self.max_amount.is_finite() && self.max_amount > 0.0 && self.max_amount <= 1e12) {
            return Err(format!(
                "max_amount must be a positive number up to 1e12, got {}",
                self.max_amount
            ));
        }
        if !(1..=100_000).contains(&self.max_line_items) {
            return Err(format!(
                "max_line_items must be from 1 to 100000, got {}",
                self.max_line_items
            ));
        }
        if self.max_item_quantity < 1 {
            return Err(format!(
                "max_item_quantity must be at least 1, got {}",
                self.max_item_quantity
            ));
        }
        // The pending budget holds at least one batch (by default two), and one batch stays far
        // below Arrow's 2 GiB.
        const MAX_BATCH: usize = 512 * 1024 * 1024;
        if !(self.max_message_bytes..=MAX_BATCH).contains(&self.max_batch_bytes) {
            return Err(format!(
                "max_batch_bytes must be from max_message_bytes ({}) to 536870912 (512 MiB), got {}",
                self.max_message_bytes, self.max_batch_bytes
            ));
        }
        if self.max_pending_bytes < self.max_batch_bytes
            || self.max_pending_bytes > u32::MAX as usize
        {
            return Err(format!(
                "max_pending_bytes must be from max_batch_bytes ({}) to 4294967295, got {}",
                self.max_batch_bytes, self.max_pending_bytes
            ));
        }
        if self.deadletter_max_file_bytes < 4096 {
            return Err(format!(
                "deadletter_max_file_bytes must be at least 4096, got {}",
                self.deadletter_max_file_bytes
            ));
        }
        if self.deadletter_max_files == 0 {
            return Err("deadletter_max_files must be at least 1, got 0".into());
        }
        Ok(())
    }

    /// The dead-letter store's size bounds.
    pub fn deadletter_limits(&self) -> DeadLetterLimits {
        DeadLetterLimits {
            max_file_bytes: self.deadletter_max_file_bytes,
            max_files: self.deadletter_max_files,
        }
    }

    /// What decoding checks every message against.
    pub fn limits(&self) -> decode::Limits {
        decode::Limits {
            max_bytes: self.max_message_bytes,
            max_future_ms: self.max_future_ms,
            max_age_ms: self.max_age_ms.unwrap_or(DEFAULT_MAX_AGE_MS),
            max_amount: self.max_amount,
            max_line_items: self.max_line_items,
            max_item_quantity: self.max_item_quantity,
        }
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

    /// Decodes and dedups one batch of messages; `now_ms` (the wall clock) bounds event times.
    pub fn ingest(&mut self, messages: &[Message<'_>], now_ms: i64) -> Ingested {
        let threads = match self.config.decode_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(256)),
            n => n,
        };
        let parsed = decode::parse_all(messages, &self.config.limits(), now_ms, threads);
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
        let batch = (!keep.is_empty()).then(|| decode::to_batch_parallel(&keep, threads));
        Ingested {
            batch,
            rejected,
            duplicates,
            last_position: messages.last().map(|m| m.position),
        }
    }
}
