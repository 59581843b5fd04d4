//! What ingest counts, for `/metrics` (Prometheus, through `prometheus-client`) and
//! `/api/status`. The ingest loop updates these as it goes; readers never take a lock.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The ingest loop's counters.
#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    /// Orders appended to the table and windows (`rtap_ingest_rows_total`).
    pub rows: Counter,
    /// Messages dead-lettered (`rtap_ingest_dead_letters_total`).
    pub dead_letters: Counter,
    /// Re-delivered orders dropped (`rtap_ingest_duplicates_total`).
    pub duplicates: Counter,
    /// Orders later than the windows' grace: in the table, not in the windows
    /// (`rtap_windows_late_total`).
    pub late: Counter,
    /// Orders per second over the last few seconds (`rtap_ingest_rate`).
    pub rate: Gauge<f64, AtomicU64>,
    /// Order ids dedup remembers (`rtap_dedup_ids`; about 10 bytes each).
    pub dedup_ids: Gauge,
}

impl IngestMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rtap_ingest_rows",
            "Orders ingested into the table and windows by this process",
            self.rows.clone(),
        );
        registry.register(
            "rtap_ingest_dead_letters",
            "Messages sent to the dead-letter store by this process",
            self.dead_letters.clone(),
        );
        registry.register(
            "rtap_ingest_duplicates",
            "Re-delivered orders dropped by dedup",
            self.duplicates.clone(),
        );
        registry.register(
            "rtap_windows_late",
            "Orders later than the windows' grace (in the table, not in windows)",
            self.late.clone(),
        );
        registry.register(
            "rtap_ingest_rate",
            "Orders ingested per second, over the last seconds",
            self.rate.clone(),
        );
        registry.register(
            "rtap_dedup_ids",
            "Order ids remembered by dedup (the last ingest.dedup_horizon_ms of event time and up to an eighth more; about 10 bytes each)",
            self.dedup_ids.clone(),
        );
    }
}
