//! # kafka: Kafka at the edges of the pipeline
//!
//! What the original's Python producer and Kafka consumers did. Three pieces, all on
//! [rdkafka](https://crates.io/crates/rdkafka) with its bundled librdkafka:
//! - [`admin`]: create the orders topic (24 partitions by default) if it is missing.
//! - [`producer`]: [`producer::OrderProducer`], keyed by `order_id`, acks=all, idempotent,
//!   compressed and batched, with delivery tracking: the position it reports as confirmed only
//!   ever covers orders the broker acknowledged, so a restart resumes without a gap.
//! - [`source`]: the consumer-group source for ingest. It hands batches to the ingest loop and
//!   commits offsets only after a checkpoint that holds them is durable; on a rebalance it first
//!   has the ingest loop checkpoint what it read from the partitions it is losing, then commits,
//!   so the next owner starts exactly after it.
//!
//! Knows nothing of tables or HTTP.

pub mod admin;
pub mod producer;
pub mod source;

use std::collections::BTreeMap;

/// Where the orders topic is.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    /// Partitions of the topic when rtap creates it.
    pub partitions: i32,
    /// Replication factor when rtap creates it.
    pub replication: i32,
    /// Consumer group of the ingest source.
    pub group: String,
    /// Static group membership (`group.instance.id`): a restarted consumer with the same id takes
    /// its old place at once instead of waiting for the group to give up on a member that died.
    pub instance_id: Option<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "FakeEcommOrders".into(),
            partitions: 24,
            replication: 1,
            group: "rtap".into(),
            instance_id: None,
        }
    }
}

/// Next offset to read, per partition.
pub type Offsets = BTreeMap<i32, i64>;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka {what}: {source}")]
    Client {
        what: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("{0}")]
    Other(String),
}

impl KafkaError {
    fn client(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError {
        let what = what.into();
        move |source| KafkaError::Client { what, source }
    }
}

/// The `order_id` of an order document (the message key), without parsing the rest of it.
pub fn order_key(json: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Key {
        order_id: serde_json::Value,
    }
    match serde_json::from_slice::<Key>(json).ok()?.order_id {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_is_the_order_id() {
        assert_eq!(
            super::order_key(br#"{"a":1,"order_id":"x-1","z":[1]}"#).as_deref(),
            Some("x-1")
        );
        assert_eq!(super::order_key(b"not json"), None);
        assert_eq!(super::order_key(br#"{"order_id":null}"#), None);
    }
}
