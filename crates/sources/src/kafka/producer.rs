//! The order producer: key `order_id`, acks=all, idempotence, lz4 compression, batching, and
//! delivery tracking by source position.
//!
//! Every order is sent with its source position (a generator sequence number or an index into
//! the orders API). The broker's acknowledgements arrive out of order across partitions; the
//! producer keeps the positions still in flight, so [`OrderProducer::confirmed_position`] is the
//! first position not yet acknowledged: everything before it is on the broker. A caller that
//! saves that position and resumes from it after a crash never skips an order (it may send a
//! few again; ingest drops re-deliveries by `order_id`). librdkafka retries failed sends by
//! itself (idempotence keeps retries from duplicating); a send that finally fails is logged with
//! its order id and counted, and the confirmed position stops before it, so it is sent again
//! next time rather than dropped.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::{KafkaConfig, KafkaError};

/// How long librdkafka keeps retrying one message (a broker outage shorter than this loses
/// nothing and needs no help).
const MESSAGE_TIMEOUT_MS: &str = "600000";

#[derive(Debug, Default)]
struct Track {
    in_flight: BTreeSet<u64>,
    failed: BTreeSet<u64>,
    /// One past the largest position sent.
    next: u64,
    sent: u64,
    confirmed: u64,
    failures: u64,
    last_error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Tracker {
    track: Mutex<Track>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Track> {
        match self.track.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl ClientContext for Tracker {}

impl ProducerContext for Tracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, position: usize) {
        let position = position as u64;
        let mut t = self.lock();
        t.in_flight.remove(&position);
        match result {
            Ok(_) => t.confirmed += 1,
            Err((e, message)) => {
                let key = message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).to_string())
                    .unwrap_or_default();
                tracing::error!(error = %e, order_id = %key, position,
                    "the broker did not take an order; it will be sent again on the next start");
                t.failed.insert(position);
                t.failures += 1;
                t.last_error = Some(e.to_string());
            }
        }
    }
}

/// Counters of a producer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub sent: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub in_flight: u64,
}

pub struct OrderProducer {
    producer: ThreadedProducer<Tracker>,
    topic: String,
}

impl std::fmt::Debug for OrderProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl OrderProducer {
    /// A producer whose first send will be at `first_position` or later.
    pub fn new(config: &KafkaConfig, first_position: u64) -> Result<Self, KafkaError> {
        let producer: ThreadedProducer<Tracker> = super::client_config(config)
            .set("acks", "all")
            // Java clients' partitioner (murmur2 of the key): an order lands in the partition a
            // Java producer would pick, which Pinot's "Murmur" partition function assumes
            // (`rtap pinot-config --partitions`). librdkafka's own default is CRC32.
            .set("partitioner", "murmur2_random")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "500000")
            .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
            .create_with_context(Tracker::default())
            .map_err(KafkaError::client("producer"))?;
        producer.context().lock().next = first_position;
        Ok(OrderProducer {
            producer,
            topic: config.topic.clone(),
        })
    }

    /// Queues one order (waits while librdkafka's queue is full).
    pub fn send(&self, position: u64, key: &str, payload: &[u8]) -> Result<(), KafkaError> {
        {
            let mut t = self.producer.context().lock();
            t.in_flight.insert(position);
            t.next = t.next.max(position + 1);
            t.sent += 1;
        }
        let mut record = BaseRecord::with_opaque_to(&self.topic, position as usize)
            .key(key)
            .payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => {
                    let mut t = self.producer.context().lock();
                    t.in_flight.remove(&position);
                    t.failed.insert(position);
                    t.failures += 1;
                    t.last_error = Some(e.to_string());
                    return Err(KafkaError::Client {
                        what: format!("sending order {key}"),
                        source: e,
                    });
                }
            }
        }
    }

    /// The first position not acknowledged by the broker (everything before it is stored).
    pub fn confirmed_position(&self) -> u64 {
        let t = self.producer.context().lock();
        let first_open = t.in_flight.iter().next().copied();
        let first_failed = t.failed.iter().next().copied();
        match (first_open, first_failed) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => t.next,
        }
    }

    pub fn progress(&self) -> Progress {
        let t = self.producer.context().lock();
        Progress {
            sent: t.sent,
            confirmed: t.confirmed,
            failed: t.failures,
            in_flight: t.in_flight.len() as u64,
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.producer.context().lock().last_error.clone()
    }

    /// Waits until everything queued is acknowledged (or failed), up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer
            .flush(timeout)
            .map_err(KafkaError::client("flushing the producer"))
    }
}
