//! # table: the realtime table
//!
//! What Apache Pinot's realtime table did in the original, for one machine: the stage after
//! ingest. A single writer appends Arrow batches to a mutable in-memory segment; segments are
//! sealed by size or age into Parquet files (zstd, sorted by the time column, row-group
//! statistics and bloom filters) listed in an atomically replaced manifest, merged in size
//! tiers, and dropped past retention. Readers query immutable snapshots through a DataFusion
//! `TableProvider` that skips segments (and, through Parquet statistics, row groups) outside a
//! query's time bounds. Knows nothing of Kafka or HTTP, nor of what the columns mean beyond the
//! time column.
//!
//! Layout:
//! - [`table`]: [`RealtimeTable`], the writer and snapshots.
//! - [`jobs`]: the background seal and merge, and retention.
//! - [`merge_policy`]: which segments to merge (size tiers).
//! - [`segment`]: Parquet files and the shared segment handles.
//! - [`lookup`]: per-segment lookup indexes (a key column's rows, sorted by key).
//! - [`column_cache`]: decoded columns of sealed segments kept in memory (the newest minutes).
//! - [`manifest`]: the list of segments, replaced atomically.
//! - [`provider`]: the DataFusion table provider with time pruning and lookups.
//! - [`metrics`]: the table's gauges for `/metrics`.

pub mod column_cache;
pub mod jobs;
pub mod lookup;
pub mod manifest;
pub mod merge_policy;
pub mod metrics;
pub mod provider;
pub mod segment;
pub mod table;

use std::path::Path;

pub use column_cache::ColumnCacheStats;
pub use lookup::LookupSpec;
pub use manifest::Manifest;
pub use provider::TableScan;
pub use table::{Maintenance, RealtimeTable, Snapshot};

/// Settings of the realtime table.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableConfig {
    /// Seal the mutable segment once it holds this many rows ...
    pub max_memory_rows: usize,
    /// ... or this many bytes of Arrow buffers (whichever comes first).
    pub max_memory_bytes: usize,
    /// ... or once its oldest row is this old: rtap checkpoints with every seal, so this is also
    /// the checkpoint interval.
    pub seal_after_secs: f64,
    /// Ingest stops taking new rows (the source waits) while this many rows are not sealed yet,
    /// e.g. while seals fail on a full disk: memory stays bounded, nothing is dropped.
    pub max_unsealed_rows: usize,
    /// ... or while rows of this many bytes are not sealed yet.
    pub max_unsealed_bytes: usize,
    /// Rows are dropped once their whole segment is older than this (event time vs wall clock).
    pub retention_ms: i64,
    /// Merged segments hold up to this many rows (see [`merge_policy`]).
    pub merge_target_rows: u64,
    /// Merge once this many segments of one size tier are in a row; also the factor between
    /// tiers (see [`merge_policy`]).
    pub merge_min_segments: usize,
    /// Rows per Parquet row group (the unit of statistics-based pruning).
    pub row_group_rows: usize,
    /// Largest Parquet data page, in bytes before compression. A segment writer holds each
    /// column's open page uncompressed until it closes (at this size, a text page somewhat past
    /// it, or at parquet's 20,000 rows, whichever comes first), so this bounds
    /// that part of a seal's or merge's buffers to about columns x this. The row group's closed
    /// pages (compressed) and each column's dictionary (up to 1 MiB) are held until the row
    /// group is written, whatever this is.
    pub page_bytes: usize,
    pub zstd_level: i32,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            max_memory_rows: 100_000,
            max_memory_bytes: 48 * 1024 * 1024,
            seal_after_secs: 5.0,
            max_unsealed_rows: 200_000,
            max_unsealed_bytes: 128 * 1024 * 1024,
            retention_ms: 30 * 24 * 3_600_000,
            merge_target_rows: 1_000_000,
            merge_min_segments: 8,
            row_group_rows: 32_768,
            page_bytes: 64 * 1024,
            zstd_level: 1,
        }
    }
}

/// Smallest `page_bytes`: below it the pages, their headers and the page index multiply for
/// no memory worth saving.
pub(crate) const MIN_PAGE_BYTES: usize = 4 * 1024;
/// Largest `page_bytes` (pages close at 20,000 rows anyway, so large values change little).
pub(crate) const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;

impl TableConfig {
    pub fn validate(&self) -> Result<(), TableError> {
        let bad = |m: String| Err(TableError::Config(m));
        if self.max_memory_rows == 0 {
            return bad("max_memory_rows must be at least 1".into());
        }
        if self.max_unsealed_rows < self.max_memory_rows {
            return bad(format!(
                "max_unsealed_rows must be at least max_memory_rows ({}), got {}",
                self.max_memory_rows, self.max_unsealed_rows
            ));
        }
        if self.max_memory_bytes < 1024 * 1024 {
            return bad(format!(
                "max_memory_bytes must be at least 1048576 (1 MiB), got {}",
                self.max_memory_bytes
            ));
        }
        if self.max_unsealed_bytes < self.max_memory_bytes.saturating_mul(2) {
            return bad(format!(
                "max_unsealed_bytes must be at least twice max_memory_bytes ({}), got {}",
                self.max_memory_bytes.saturating_mul(2),
                self.max_unsealed_bytes
            ));
        }
        if !(self.seal_after_secs.is_finite() && self.seal_after_secs > 0.0) {
            return bad(format!(
                "seal_after_secs must be a positive number, got {}",
                self.seal_after_secs
            ));
        }
        if self.retention_ms <= 0 {
            return bad(format!(
                "retention_ms must be positive, got {}",
                self.retention_ms
            ));
        }
        if self.row_group_rows == 0 {
            return bad("row_group_rows must be at least 1".into());
        }
        if !(MIN_PAGE_BYTES..=MAX_PAGE_BYTES).contains(&self.page_bytes) {
            return bad(format!(
                "page_bytes must be {MIN_PAGE_BYTES}..={MAX_PAGE_BYTES}, got {}",
                self.page_bytes
            ));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad(format!(
                "zstd_level must be 1..=22, got {}",
                self.zstd_level
            ));
        }
        if self.merge_min_segments < 2 {
            return bad(format!(
                "merge_min_segments must be at least 2, got {}",
                self.merge_min_segments
            ));
        }
        Ok(())
    }
}

/// A file rtap keeps (a segment, the manifest, a checkpoint, a dedup log) cannot be read or
/// written, or does not hold what it should. Shared with the checkpoint crate.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {detail}")]
    Corrupt { path: String, detail: String },
}

impl StorageError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub fn corrupt(path: &Path, detail: impl Into<String>) -> Self {
        StorageError::Corrupt {
            path: path.display().to_string(),
            detail: detail.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("bad table configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Schema(String),
    #[error("arrow: {0}")]
    Arrow(String),
    #[error("parquet: {0}")]
    Parquet(String),
}

impl TableError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StorageError::io(path, source).into()
    }

    pub fn corrupt(path: &Path, detail: impl Into<String>) -> Self {
        StorageError::corrupt(path, detail).into()
    }

    pub fn arrow(e: datafusion::arrow::error::ArrowError) -> Self {
        TableError::Arrow(e.to_string())
    }

    pub fn parquet(e: datafusion::parquet::errors::ParquetError) -> Self {
        TableError::Parquet(e.to_string())
    }
}
