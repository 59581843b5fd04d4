//! What `/api/status` and `/metrics` report, and the one-line live summary: read from the
//! stages' own counters at the moment of the request.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rolling::Windows;
use serde_json::json;
use server::status::{Metric, MetricKind, Report, StageStatus};
use server::OrderFeed;
use table::RealtimeTable;

use crate::pipeline::IngestStats;

/// Handles on every stage a status report reads.
pub struct Parts {
    pub stats: Arc<IngestStats>,
    pub table: Arc<RealtimeTable>,
    pub windows: Arc<Mutex<Windows>>,
    pub feed: Option<Arc<OrderFeed>>,
    pub store: Option<String>,
    pub kafka: Option<(kafka::KafkaConfig, Arc<kafka::source::SourceStatus>)>,
    pub producer: Option<Arc<kafka::producer::OrderProducer>>,
    pub generator_running: Arc<std::sync::atomic::AtomicBool>,
    /// Times the generator job failed and was restarted.
    pub generator_restarts: Arc<std::sync::atomic::AtomicU64>,
    /// (when, rows ingested) at the last rate sample.
    pub rate_sample: Mutex<(Instant, u64, f64)>,
}

impl Parts {
    /// Rows ingested per second over the last few seconds.
    fn ingest_rate(&self, rows: u64) -> f64 {
        let Ok(mut s) = self.rate_sample.lock() else {
            return 0.0;
        };
        let elapsed = s.0.elapsed().as_secs_f64();
        if elapsed >= 2.0 {
            s.2 = (rows.saturating_sub(s.1)) as f64 / elapsed;
            *s = (Instant::now(), rows, s.2);
        }
        s.2
    }

    pub fn report(&self) -> Report {
        let rows = self.stats.rows.load(Ordering::Relaxed);
        let rejected = self.stats.rejected.load(Ordering::Relaxed);
        let duplicates = self.stats.duplicates.load(Ordering::Relaxed);
        let late = self.stats.late.load(Ordering::Relaxed);
        let checkpoints = self.stats.checkpoints.load(Ordering::Relaxed);
        let checkpoint_us = self.stats.last_checkpoint_us.load(Ordering::Relaxed);
        let last_offset = self.stats.last_offset.load(Ordering::Relaxed);
        let rate = self.ingest_rate(rows);
        let snap = self.table.snapshot();
        let table_rows = snap.rows();
        let stored = self.feed.as_ref().map(|f| f.stored());
        // Orders stored but not yet ingested (the generator path; Kafka lag is the broker's).
        let lag = match (&self.feed, &self.kafka) {
            (Some(_), None) => stored.map(|s| s.saturating_sub(last_offset)),
            _ => None,
        };
        let mut stages = Vec::new();
        if let Some(store) = &self.store {
            stages.push(StageStatus {
                name: "store",
                state: "running".into(),
                detail: json!({"where": store, "orders": stored}),
                last_error: None,
            });
        }
        if let Some(feed) = &self.feed {
            let running = self.generator_running.load(Ordering::Relaxed);
            stages.push(StageStatus {
                name: "generator",
                state: if running { "running" } else { "stopped" }.into(),
                detail: json!({
                    "seed": feed.seed(),
                    "ordersStored": feed.stored(),
                    "restarts": self.generator_restarts.load(Ordering::Relaxed),
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
        if let Some((config, status)) = &self.kafka {
            let waiting = status.waiting_for_topic.load(Ordering::Relaxed);
            let assigned = status
                .assigned
                .lock()
                .map(|a| a.clone())
                .unwrap_or_default();
            stages.push(StageStatus {
                name: "kafka-source",
                state: if waiting { "waiting" } else { "running" }.into(),
                detail: json!({
                    "brokers": config.brokers, "topic": config.topic, "group": config.group,
                    "assignedPartitions": assigned,
                    "messages": status.messages.load(Ordering::Relaxed),
                    "waitingForTopic": waiting,
                }),
                last_error: status.last_error.lock().ok().and_then(|e| e.clone()),
            });
        }
        stages.push(StageStatus {
            name: "ingest",
            state: "running".into(),
            detail: json!({
                "rows": rows, "ratePerSecond": (rate * 10.0).round() / 10.0, "lag": lag,
                "deadLettered": rejected, "duplicates": duplicates, "late": late,
                "checkpoints": checkpoints, "lastCheckpointMs": checkpoint_us as f64 / 1000.0,
            }),
            last_error: None,
        });
        stages.push(StageStatus {
            name: "table",
            state: "running".into(),
            detail: json!({"rows": table_rows, "segments": snap.segments.len(), "memoryRows": snap.memory_rows}),
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
        let metric = |name, help, kind, value: f64| Metric {
            name,
            help,
            kind,
            value,
        };
        let mut metrics = vec![
            metric(
                "rtap_ingest_rows_total",
                "Orders ingested into the table and windows by this process.",
                MetricKind::Counter,
                rows as f64,
            ),
            metric(
                "rtap_ingest_dead_letters_total",
                "Messages sent to the dead-letter store by this process.",
                MetricKind::Counter,
                rejected as f64,
            ),
            metric(
                "rtap_ingest_duplicates_total",
                "Re-delivered orders dropped by dedup.",
                MetricKind::Counter,
                duplicates as f64,
            ),
            metric(
                "rtap_windows_late_total",
                "Orders later than the windows' grace (in the table, not in windows).",
                MetricKind::Counter,
                late as f64,
            ),
            metric(
                "rtap_ingest_rate",
                "Orders ingested per second, over the last seconds.",
                MetricKind::Gauge,
                rate,
            ),
            metric(
                "rtap_table_rows",
                "Rows in the realtime table.",
                MetricKind::Gauge,
                table_rows as f64,
            ),
            metric(
                "rtap_table_segments",
                "Sealed segments of the realtime table.",
                MetricKind::Gauge,
                snap.segments.len() as f64,
            ),
            metric(
                "rtap_table_memory_rows",
                "Rows of the table not yet in a sealed segment.",
                MetricKind::Gauge,
                snap.memory_rows as f64,
            ),
            metric(
                "rtap_checkpoints_total",
                "Checkpoints written by this process.",
                MetricKind::Counter,
                checkpoints as f64,
            ),
            metric(
                "rtap_checkpoint_last_duration_seconds",
                "How long the last checkpoint took.",
                MetricKind::Gauge,
                checkpoint_us as f64 / 1e6,
            ),
        ];
        if let Some(lag) = lag {
            metrics.push(metric(
                "rtap_ingest_lag",
                "Orders stored but not yet ingested.",
                MetricKind::Gauge,
                lag as f64,
            ));
        }
        if let Some(stored) = stored {
            metrics.push(metric(
                "rtap_orders_stored",
                "Orders in the order store.",
                MetricKind::Gauge,
                stored as f64,
            ));
        }
        if let Some((_, status)) = &self.kafka {
            metrics.push(metric(
                "rtap_kafka_messages_total",
                "Messages read from Kafka by this process.",
                MetricKind::Counter,
                status.messages.load(Ordering::Relaxed) as f64,
            ));
        }
        if let Some(p) = &self.producer {
            let pr = p.progress();
            metrics.push(metric(
                "rtap_producer_confirmed_total",
                "Orders the broker confirmed.",
                MetricKind::Counter,
                pr.confirmed as f64,
            ));
            metrics.push(metric(
                "rtap_producer_failed_total",
                "Orders the broker did not take (sent again on restart).",
                MetricKind::Counter,
                pr.failed as f64,
            ));
        }
        Report { stages, metrics }
    }

    /// The one-line live summary.
    pub fn summary(&self) -> String {
        let rows = self.stats.rows.load(Ordering::Relaxed);
        let snap = self.table.snapshot();
        let mut line = format!(
            "ingested {rows} ({:.0}/s) | table {} rows, {} segments | dead letters {} | late {} | checkpoints {}",
            self.ingest_rate(rows),
            snap.rows(),
            snap.segments.len(),
            self.stats.rejected.load(Ordering::Relaxed),
            self.stats.late.load(Ordering::Relaxed),
            self.stats.checkpoints.load(Ordering::Relaxed),
        );
        if let Some(feed) = &self.feed {
            line = format!("stored {} | {line}", feed.stored());
        }
        line
    }
}
