//! Creating the orders topic when it is missing.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::{KafkaConfig, KafkaError};

/// Creates the topic with `config.partitions` partitions unless it exists; returns whether it
/// created it. Retries while the broker cannot be reached, up to `wait`.
pub async fn ensure_topic(config: &KafkaConfig, wait: Duration) -> Result<bool, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(config)
        .create()
        .map_err(KafkaError::client("admin client"))?;
    let topic = NewTopic::new(
        &config.topic,
        config.partitions,
        TopicReplication::Fixed(config.replication),
    );
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let started = std::time::Instant::now();
    loop {
        let result = admin.create_topics([&topic], &opts).await;
        match result {
            Ok(results) => {
                return match results.into_iter().next() {
                    Some(Ok(_)) => {
                        tracing::info!(topic = %config.topic, partitions = config.partitions, "created the topic");
                        Ok(true)
                    }
                    Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
                    Some(Err((_, code))) => Err(KafkaError::Other(format!(
                        "cannot create topic {} on {}: {code}",
                        config.topic, config.brokers
                    ))),
                    None => Ok(false),
                };
            }
            Err(e) if started.elapsed() < wait => {
                tracing::warn!(error = %e, brokers = %config.brokers, "cannot reach Kafka to create the topic; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(KafkaError::Client {
                    what: format!("creating topic {} on {}", config.topic, config.brokers),
                    source: e,
                })
            }
        }
    }
}
