//! Kafka at the edges of the pipeline: what the original's Python producer and Kafka consumers
//! did. All on [rdkafka](https://crates.io/crates/rdkafka) with its bundled librdkafka:
//! - [`admin`]: create the orders topic (24 partitions by default) if it is missing.
//! - [`producer`]: [`producer::OrderProducer`], keyed by `order_id`, acks=all, idempotent,
//!   compressed and batched, with delivery tracking: the position it reports as confirmed only
//!   ever covers orders the broker acknowledged, so a restart resumes without a gap.
//! - [`handoff`]: `rtap up --kafka`: produces every order the feed stores, and remembers the
//!   first one the broker has not confirmed (also the position file of `rtap produce`).
//! - [`consumer`]: the consumer-group [`crate::Source`] for ingest. It hands batches to the
//!   ingest loop and commits offsets only after a checkpoint that holds them is durable; on a
//!   rebalance it first has the ingest loop checkpoint what it read from the partitions it is
//!   losing, then commits, so the next owner starts exactly after it.

pub mod admin;
pub mod consumer;
pub mod handoff;
pub mod producer;
mod status;

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
    /// See [`persistent_instance_id`] for the default.
    pub instance_id: Option<String>,
    /// librdkafka's debug contexts for rtap's clients (`cgrp`, `fetch`, `all`, ...): what they
    /// and the broker say to each other, logged at debug level under `librdkafka`.
    pub debug: Option<String>,
}

/// A librdkafka client configuration for the brokers, with the debug contexts if asked for.
pub(crate) fn client_config(config: &KafkaConfig) -> rdkafka::config::ClientConfig {
    let mut client = rdkafka::config::ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    if let Some(debug) = config.debug.as_deref().filter(|d| !d.trim().is_empty()) {
        client.set("debug", debug);
    }
    client
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
            debug: None,
        }
    }
}

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

/// The consumer instance id of the rtap whose data directory is `data_dir`, kept in
/// `<data_dir>/instance-id`: made once (see [`instance_id`]) and read back on every start, so
/// one data directory is one member of the group across restarts, even in a container whose
/// host name changes every time, while two containers that both use `/data` (on different
/// volumes) get different ids.
pub fn persistent_instance_id(data_dir: &std::path::Path) -> Result<String, KafkaError> {
    let path = data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(KafkaError::Other(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    }
    let id = instance_id(data_dir, &host_name());
    std::fs::write(&path, format!("{id}\n"))
        .map_err(|e| KafkaError::Other(format!("cannot write {}: {e}", path.display())))?;
    Ok(id)
}

/// A consumer instance id for the data directory `data_dir` on host `host`: xxh3 (stable
/// across Rust releases, unlike the standard library's hasher) of both.
pub fn instance_id(data_dir: &std::path::Path, host: &str) -> String {
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let mut key = host.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(dir.to_string_lossy().as_bytes());
    format!("rtap-{:016x}", xxhash_rust::xxh3::xxh3_64(&key))
}

/// This machine's host name (the kernel's, then `HOSTNAME`), or "localhost".
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
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
    fn the_instance_id_is_stable_and_tells_hosts_and_directories_apart() {
        let a = super::instance_id(std::path::Path::new("/data"), "host-a");
        assert_eq!(
            a,
            super::instance_id(std::path::Path::new("/data"), "host-a")
        );
        // Pinned: the same directory and host give the same id in every build.
        assert_eq!(
            a,
            "rtap-".to_string() + &format!("{:016x}", xxhash_rust::xxh3::xxh3_64(b"host-a\0/data"))
        );
        assert_ne!(
            a,
            super::instance_id(std::path::Path::new("/data"), "host-b")
        );
        assert_ne!(
            a,
            super::instance_id(std::path::Path::new("/data2"), "host-a")
        );
    }

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
