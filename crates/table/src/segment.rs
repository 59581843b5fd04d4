//! Sealed segments: immutable Parquet files (zstd, sorted by the time column, row-group
//! statistics, bloom filters on the key columns) that queries read through DataFusion.
//!
//! A [`Segment`] handle is shared by every snapshot that lists it. When a merge or retention
//! replaces a segment it is marked obsolete; when the last snapshot holding it is dropped the
//! file goes to the [`Trash`], which deletes it a grace period later. A query plan opens its
//! files lazily, after the snapshot that chose them may be gone, so the grace period (longer
//! than any query may run) is what keeps a running query from losing a file under its feet.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use crate::manifest::SegmentEntry;
use crate::TableError;

/// Files of retired segments, deleted once they have been unused for the grace period.
#[derive(Debug, Default)]
pub struct Trash {
    files: Mutex<Vec<(Instant, PathBuf)>>,
}

impl Trash {
    fn put(&self, path: PathBuf) {
        if let Ok(mut files) = self.files.lock() {
            files.push((Instant::now(), path));
        }
    }

    /// Deletes files that have waited at least `grace`; returns how many.
    pub fn purge(&self, grace: Duration) -> usize {
        let Ok(mut files) = self.files.lock() else {
            return 0;
        };
        let before = files.len();
        files.retain(|(since, path)| {
            if since.elapsed() < grace {
                return true;
            }
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a retired segment");
            }
            false
        });
        before - files.len()
    }
}

#[derive(Debug)]
pub struct Segment {
    pub entry: SegmentEntry,
    pub path: PathBuf,
    obsolete: AtomicBool,
    trash: Arc<Trash>,
}

impl Segment {
    pub fn new(entry: SegmentEntry, dir: &Path, trash: Arc<Trash>) -> Self {
        let path = dir.join(&entry.file);
        Segment {
            entry,
            path,
            obsolete: AtomicBool::new(false),
            trash,
        }
    }

    /// Marks the file for deletion once no snapshot uses it any more.
    pub fn retire(&self) {
        self.obsolete.store(true, Ordering::Release);
    }

    pub fn overlaps(&self, lo: i64, hi: i64) -> bool {
        self.entry.max_time_ms >= lo && self.entry.min_time_ms <= hi
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            self.trash.put(std::mem::take(&mut self.path));
        }
    }
}

/// Settings of the Parquet files.
#[derive(Debug, Clone)]
pub struct FileLayout {
    pub row_group_rows: usize,
    pub zstd_level: i32,
    /// Columns that get a bloom filter (point lookups: order id, customer id).
    pub bloom_columns: Vec<String>,
}

fn writer_properties(layout: &FileLayout) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(layout.zstd_level).unwrap_or_default(),
        ))
        .set_max_row_group_row_count(Some(layout.row_group_rows))
        .set_statistics_enabled(EnabledStatistics::Page);
    for column in &layout.bloom_columns {
        props = props
            .set_column_bloom_filter_enabled(ColumnPath::from(column.as_str()), true)
            .set_column_bloom_filter_fpp(ColumnPath::from(column.as_str()), 0.01);
    }
    props.build()
}

/// Sorts `batches` by the time column and writes them as one Parquet file at `path`, fsynced.
/// Returns (rows, min time, max time, bytes).
pub fn write_sorted(
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    time_column: usize,
    layout: &FileLayout,
) -> Result<(u64, i64, i64, u64), TableError> {
    let all = concat_batches(schema, batches).map_err(TableError::arrow)?;
    let order = sort_to_indices(all.column(time_column), None, None).map_err(TableError::arrow)?;
    let sorted = take_record_batch(&all, &order).map_err(TableError::arrow)?;
    drop(all);
    let times = sorted
        .column(time_column)
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| TableError::Schema("the time column is not Int64".into()))?;
    let (min, max) = if times.is_empty() {
        (0, 0)
    } else {
        (times.value(0), times.value(times.len() - 1))
    };
    let rows = times.len() as u64;
    write_batches(path, schema, std::iter::once(Ok(sorted)), layout)?;
    let bytes = std::fs::metadata(path)
        .map_err(|e| TableError::io(path, e))?
        .len();
    Ok((rows, min, max, bytes))
}

/// Streams batches into one Parquet file at `path`, fsynced.
pub fn write_batches(
    path: &Path,
    schema: &SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, TableError>>,
    layout: &FileLayout,
) -> Result<u64, TableError> {
    let file = std::fs::File::create(path).map_err(|e| TableError::io(path, e))?;
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(writer_properties(layout)))
        .map_err(TableError::parquet)?;
    let mut rows = 0;
    for batch in batches {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(TableError::parquet)?;
    }
    let file = writer.into_inner().map_err(TableError::parquet)?;
    file.sync_all().map_err(|e| TableError::io(path, e))?;
    Ok(rows)
}

/// Reads a whole segment file back as batches (for merges).
pub fn read_batches(
    path: &Path,
) -> Result<impl Iterator<Item = Result<RecordBatch, TableError>>, TableError> {
    let file = std::fs::File::open(path).map_err(|e| TableError::io(path, e))?;
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(TableError::parquet)?
            .with_batch_size(8192)
            .build()
            .map_err(TableError::parquet)?;
    Ok(reader.map(|b| b.map_err(TableError::arrow)))
}

pub type SegmentRef = Arc<Segment>;
