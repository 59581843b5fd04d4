//! The table's gauges for `/metrics`, read from the current snapshot at scrape time (no lock on
//! the writer): `rtap_table_rows`, `rtap_table_segments`, `rtap_table_memory_rows`,
//! `rtap_table_memory_bytes`, `rtap_table_merging`, `rtap_table_merge_due` and
//! `rtap_table_merges_total`; and the SQL scans' column cache: `rtap_sql_column_cache_bytes`,
//! `rtap_sql_column_cache_hits_total` and `rtap_sql_column_cache_decoded_total`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::column_cache::ColumnCache;
use crate::RealtimeTable;

#[derive(Debug)]
pub struct TableCollector(pub Arc<RealtimeTable>);

impl Collector for TableCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snap = self.0.snapshot();
        for (name, help, value) in [
            ("rtap_table_rows", "Rows in the realtime table", snap.rows()),
            (
                "rtap_table_segments",
                "Sealed segments of the realtime table",
                snap.segments.len() as u64,
            ),
            (
                "rtap_table_memory_rows",
                "Rows of the table not yet in a sealed segment",
                snap.memory_rows,
            ),
            (
                "rtap_table_memory_bytes",
                "Bytes of Arrow buffers of the rows not yet in a sealed segment",
                snap.memory_bytes,
            ),
        ] {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)?;
        }
        let (merging, merges) = self.0.merge_activity();
        for (name, help, value) in [
            (
                "rtap_table_merging",
                "1 while a background merge of segments is running",
                merging,
            ),
            (
                "rtap_table_merge_due",
                "1 while the merge policy has segments to merge (0 once merges have caught up)",
                self.0.merge_due_in(&snap),
            ),
        ] {
            let g = ConstGauge::new(i64::from(value));
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)?;
        }
        let c = ConstCounter::new(merges);
        let m = encoder.encode_descriptor(
            "rtap_table_merges",
            "Merges of segments installed since the table opened",
            None,
            c.metric_type(),
        )?;
        c.encode(m)?;
        Ok(())
    }
}

/// The column cache's size and work (see [`crate::column_cache`]); zeros when it is off.
#[derive(Debug)]
pub struct ColumnCacheCollector(pub Option<Arc<ColumnCache>>);

impl Collector for ColumnCacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.0.as_ref().map(|c| c.stats()).unwrap_or_default();
        let g = ConstGauge::new(i64::try_from(stats.bytes).unwrap_or(i64::MAX));
        let m = encoder.encode_descriptor(
            "rtap_sql_column_cache_bytes",
            "Bytes of decoded segment columns kept for queries (sql.column_cache_bytes)",
            None,
            g.metric_type(),
        )?;
        g.encode(m)?;
        for (name, help, value) in [
            (
                "rtap_sql_column_cache_hits",
                "Segments a query scan took wholly from the column cache",
                stats.hits,
            ),
            (
                "rtap_sql_column_cache_decoded",
                "Row groups decoded into the column cache",
                stats.decoded,
            ),
        ] {
            let c = ConstCounter::new(value);
            let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(m)?;
        }
        Ok(())
    }
}
