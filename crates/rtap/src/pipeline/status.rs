//! What `/api/status` reports for every stage, and the one-line live summary: read from the
//! stages' own counters and handles at the moment of the request, never from the table
//! writer's lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use checkpoint::CheckpointMetrics;
use ingest::IngestMetrics;
use rolling::Windows;
use serde_json::json;
use server::status::{Report, StageStatus};
use sources::kafka::producer::OrderProducer;
use sources::{OrderFeed, Source};
use table::RealtimeTable;

use super::ingest_loop::IngestHealth;

/// The generator job's flags.
#[derive(Debug, Clone)]
pub struct GeneratorFlags {
    pub running: Arc<AtomicBool>,
    /// It made its `--max-orders`: "finished", not a failure.
    pub finished: Arc<AtomicBool>,
    pub restarts: Arc<AtomicU64>,
}

/// Handles on every stage a status report reads.
pub struct Parts {
    pub metrics: IngestMetrics,
    pub checkpoints: CheckpointMetrics,
    pub health: Arc<IngestHealth>,
    pub table: Arc<RealtimeTable>,
    pub windows: Arc<Mutex<Windows>>,
    pub feed: Option<Arc<OrderFeed>>,
    pub store: Option<String>,
    pub source: Arc<dyn Source>,
    pub producer: Option<Arc<OrderProducer>>,
    pub generator: Option<GeneratorFlags>,
    /// Times the supervisor restarted the pipeline from its last checkpoint.
    pub restarts: u64,
    /// `--olap`: the Pinot broker that answers the endpoints.
    pub olap: Option<Arc<server::olap::PinotBroker>>,
}

impl Parts {
    /// Where ingest stands in the source.
    fn position(&self) -> ingest::Offsets {
        self.health
            .position
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// Messages the source has that ingest has not taken yet, when known.
    pub fn lag(&self) -> Option<u64> {
        self.source.lag(&self.position())
    }

    pub fn report(&self) -> Report {
        let m = &self.metrics;
        let rows = m.rows.get();
        let stored = self.feed.as_ref().map(|f| f.stored());
        let lag = self.lag();
        let mut stages = Vec::new();
        if let Some(store) = &self.store {
            stages.push(StageStatus {
                name: "store",
                state: "running".into(),
                detail: json!({"where": store, "orders": stored}),
                last_error: None,
            });
        }
        if let (Some(feed), Some(g)) = (&self.feed, &self.generator) {
            let state = if g.running.load(Ordering::Relaxed) {
                "running"
            } else if g.finished.load(Ordering::Relaxed) {
                "finished"
            } else {
                "stopped"
            };
            stages.push(StageStatus {
                name: "generator",
                state: state.into(),
                detail: json!({
                    "seed": feed.seed(),
                    "ordersStored": feed.stored(),
                    "restarts": g.restarts.load(Ordering::Relaxed),
                }),
                last_error: None,
            });
        }
        if let Some(p) = &self.producer {
            let pr = p.progress();
            stages.push(StageStatus {
                name: "producer",
                state: "running".into(),
                detail: json!({"sent": pr.sent, "confirmed": pr.confirmed, "inFlight": pr.in_flight, "failed": pr.failed}),
                last_error: p.last_error(),
            });
        }
        if let Some(r) = self.source.report() {
            stages.push(StageStatus {
                name: r.name,
                state: r.state.into(),
                detail: r.detail,
                last_error: r.last_error,
            });
        }
        let failed = self
            .health
            .failed
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .or_else(|| self.source.failure());
        let paused = self.health.paused.lock().ok().and_then(|p| p.clone());
        let rate = m.rate.get();
        let position = self.position();
        let partition_lag: serde_json::Map<String, serde_json::Value> = self
            .source
            .partition_lag(&position)
            .into_iter()
            .map(|(p, l)| (p.to_string(), json!(l)))
            .collect();
        let state = match (&failed, &paused) {
            (Some(_), _) => "failed",
            (None, Some(_)) => "paused",
            (None, None) => "running",
        };
        stages.push(StageStatus {
            name: "ingest",
            state: state.into(),
            detail: json!({
                "rows": rows, "ratePerSecond": (rate * 10.0).round() / 10.0, "lag": lag,
                "partitionLag": partition_lag, "paused": paused, "restarts": self.restarts,
                "deadLettered": m.dead_letters.get(),
                "deadLettersStored": self.health.dead_letters_stored.load(Ordering::Relaxed),
                "duplicates": m.duplicates.get(),
                "late": m.late.get(),
                "checkpoints": self.checkpoints.written.get(),
                "lastCheckpointMs": self.checkpoints.last_duration_seconds.get() * 1000.0,
                "lastCheckpointAtMs": match self.checkpoints.last_written_seconds.get() {
                    t if t > 0.0 => Some((t * 1000.0).round() as i64),
                    _ => None,
                },
            }),
            last_error: failed,
        });
        let snap = self.table.snapshot();
        stages.push(StageStatus {
            name: "table",
            state: "running".into(),
            detail: json!({"rows": snap.rows(), "segments": snap.segments.len(), "memoryRows": snap.memory_rows}),
            last_error: self.table.last_error(),
        });
        let (stream_time, windows_late) = match self.windows.lock() {
            Ok(w) => (w.stream_time_ms(), w.late()),
            Err(_) => (None, 0),
        };
        stages.push(StageStatus {
            name: "windows",
            state: "running".into(),
            detail: json!({"streamTimeMs": stream_time, "late": windows_late}),
            last_error: None,
        });
        if let Some(broker) = &self.olap {
            stages.push(broker.stage());
        }
        Report {
            stages,
            coverage: self.source.coverage(),
        }
    }

    /// The one-line live summary.
    pub fn summary(&self) -> String {
        let m = &self.metrics;
        let snap = self.table.snapshot();
        let mut line = format!(
            "ingested {} ({:.0}/s) | table {} rows, {} segments | dead letters {} | late {} | checkpoints {}",
            m.rows.get(),
            m.rate.get(),
            snap.rows(),
            snap.segments.len(),
            m.dead_letters.get(),
            m.late.get(),
            self.checkpoints.written.get(),
        );
        if let Some(feed) = &self.feed {
            line = format!("stored {} | {line}", feed.stored());
        }
        if let Some(lag) = self.lag() {
            line = format!("{line} | lag {lag}");
        }
        if let Some(Some(p)) = self.health.paused.lock().ok().map(|p| p.clone()) {
            line = format!("PAUSED ({p}) | {line}");
        }
        if let Some(Some(e)) = self.health.failed.lock().ok().map(|f| f.clone()) {
            line = format!("INGEST FAILED ({e}) | {line}");
        }
        if self.restarts > 0 {
            line = format!("{line} | restarts {}", self.restarts);
        }
        line
    }
}

/// `rtap_ingest_lag`: read at scrape time from the source and ingest's position.
#[derive(Debug)]
pub struct LagCollector(pub Arc<Parts>);

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Parts")
    }
}

impl prometheus_client::collector::Collector for LagCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(lag) = self.0.lag() else {
            return Ok(());
        };
        let g = ConstGauge::new(i64::try_from(lag).unwrap_or(i64::MAX));
        let m = encoder.encode_descriptor(
            "rtap_ingest_lag",
            "Orders (or Kafka messages) the source has that ingest has not taken yet",
            None,
            g.metric_type(),
        )?;
        g.encode(m)?;
        let position = self.0.position();
        let lags = self.0.source.partition_lag(&position);
        if lags.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "rtap_kafka_partition_lag",
            "Messages up to the partition's high watermark not ingested yet",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (partition, lag) in lags {
            let labels = [("partition", partition.to_string())];
            let g = ConstGauge::new(i64::try_from(lag).unwrap_or(i64::MAX));
            g.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
