//! What the sources count, for `/metrics` (Prometheus, through `prometheus-client`).
//!
//! - `rtap_kafka_messages_total`: messages the Kafka source read (only with Kafka).
//! - `rtap_orders_stored`: orders in the order store (with the orders API).
//! - `rtap_producer_confirmed_total`, `rtap_producer_failed_total`: the `up --kafka` hand-off.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::feed::OrderFeed;
use crate::kafka::producer::OrderProducer;

/// Counters the sources update as they go.
#[derive(Debug, Clone, Default)]
pub struct SourceMetrics {
    pub kafka_messages: Counter,
}

impl SourceMetrics {
    /// Registers the Kafka source's counters.
    pub fn register_kafka(&self, registry: &mut Registry) {
        registry.register(
            "rtap_kafka_messages",
            "Messages read from Kafka by this process",
            self.kafka_messages.clone(),
        );
    }
}

/// Reads the order store's size at scrape time.
#[derive(Debug)]
pub struct FeedCollector(pub Arc<OrderFeed>);

impl Collector for FeedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stored = ConstGauge::new(self.0.stored() as i64);
        let m = encoder.encode_descriptor(
            "rtap_orders_stored",
            "Orders in the order store",
            None,
            stored.metric_type(),
        )?;
        stored.encode(m)
    }
}

/// Reads the producer's delivery counters at scrape time.
#[derive(Debug)]
pub struct ProducerCollector(pub Arc<OrderProducer>);

impl Collector for ProducerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let p = self.0.progress();
        for (name, help, value) in [
            (
                "rtap_producer_confirmed",
                "Orders the broker confirmed",
                p.confirmed,
            ),
            (
                "rtap_producer_failed",
                "Orders the broker did not take (sent again on restart)",
                p.failed,
            ),
        ] {
            let c = ConstCounter::new(value);
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        Ok(())
    }
}
