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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{new_null_array, Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use xxhash_rust::xxh3::Xxh3;

use crate::lookup::{self, LookupIndex, LookupSpec};
use crate::manifest::{LookupEntry, SegmentEntry};
use crate::{StorageError, TableError};

/// Files of retired segments, deleted once they have been unused for the grace period.
///
/// When the table is checkpointed (see `RealtimeTable::hold_retired_files`), a retired file is
/// also kept until a checkpoint taken after its retirement is durable: until then the last
/// checkpoint may still list it, and a restart from that checkpoint needs it.
#[derive(Debug, Default)]
pub struct Trash {
    files: Mutex<Vec<(Instant, PathBuf)>>,
    hold: AtomicBool,
    /// Files put in the trash before this instant are no longer in any checkpoint.
    released_before: Mutex<Option<Instant>>,
}

impl Trash {
    fn put(&self, path: PathBuf) {
        if let Ok(mut files) = self.files.lock() {
            files.push((Instant::now(), path));
        }
    }

    pub(crate) fn hold_until_checkpoint(&self) {
        self.hold.store(true, Ordering::Release);
    }

    /// A checkpoint whose manifest was read at `at` is durable.
    pub(crate) fn release_before(&self, at: Instant) {
        if let Ok(mut r) = self.released_before.lock() {
            *r = Some(r.map_or(at, |old| old.max(at)));
        }
    }

    /// Deletes files that have waited at least `grace` (and, when held, are in no checkpoint);
    /// returns how many.
    pub fn purge(&self, grace: Duration) -> usize {
        let released = if self.hold.load(Ordering::Acquire) {
            self.released_before.lock().ok().and_then(|r| *r)
        } else {
            Some(Instant::now())
        };
        let Some(released) = released else {
            return 0;
        };
        let Ok(mut files) = self.files.lock() else {
            return 0;
        };
        let before = files.len();
        files.retain(|(since, path)| {
            if since.elapsed() < grace || *since >= released {
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
    /// The lookup indexes of `entry.lookups`, opened on first use (`None`: unreadable).
    lookups: Vec<OnceLock<Option<Arc<LookupIndex>>>>,
    /// Per lookup index: set once it failed a check (it is not used again).
    lookup_disabled: Vec<AtomicBool>,
    obsolete: AtomicBool,
    trash: Arc<Trash>,
}

impl Segment {
    pub fn new(entry: SegmentEntry, dir: &Path, trash: Arc<Trash>) -> Self {
        let path = dir.join(&entry.file);
        Segment {
            lookups: entry.lookups.iter().map(|_| OnceLock::new()).collect(),
            lookup_disabled: entry
                .lookups
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
            entry,
            path,
            obsolete: AtomicBool::new(false),
            trash,
        }
    }

    fn lookup_path(&self, file: &str) -> PathBuf {
        self.path
            .parent()
            .map_or_else(|| PathBuf::from(file), |dir| dir.join(file))
    }

    /// The segment's lookup index on `column`, if it has a readable one. A file that cannot
    /// be opened for now (an I/O error other than a missing file) is tried again next time; a
    /// missing or malformed one never.
    pub fn lookup(&self, column: &str) -> Option<Arc<LookupIndex>> {
        let i = self.entry.lookups.iter().position(|l| l.column == column)?;
        if self.lookup_disabled[i].load(Ordering::Acquire) {
            return None;
        }
        if let Some(known) = self.lookups[i].get() {
            return known.clone();
        }
        let entry = &self.entry.lookups[i];
        let opened = match LookupIndex::open(&self.lookup_path(&entry.file), entry) {
            Ok(index) => Some(Arc::new(index)),
            Err(TableError::Storage(StorageError::Io { path, source }))
                if source.kind() != std::io::ErrorKind::NotFound =>
            {
                tracing::warn!(%path, error = %source, "a lookup index cannot be opened now: its segment is scanned");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "a lookup index is unreadable: its segment is scanned instead");
                None
            }
        };
        self.lookups[i].get_or_init(|| opened).clone()
    }

    /// Stops using the lookup index on `column` for good (its file failed a check, before or
    /// after it was opened): lookups and merges treat the segment as having no index.
    pub fn disable_lookup(&self, column: &str) {
        if let Some(i) = self.entry.lookups.iter().position(|l| l.column == column) {
            self.lookup_disabled[i].store(true, Ordering::Release);
        }
    }

    /// Paths of the segment's lookup index files.
    pub fn lookup_paths(&self) -> Vec<PathBuf> {
        self.entry
            .lookups
            .iter()
            .map(|l| self.lookup_path(&l.file))
            .collect()
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
            for path in self.lookup_paths() {
                self.trash.put(path);
            }
            self.trash.put(std::mem::take(&mut self.path));
        }
    }
}

/// Settings of the Parquet files.
#[derive(Debug, Clone)]
pub struct FileLayout {
    pub row_group_rows: usize,
    /// Largest data page before compression (see [`crate::TableConfig::page_bytes`]).
    pub page_bytes: usize,
    pub zstd_level: i32,
    /// Columns that get a bloom filter (point lookups: order id, customer id).
    pub bloom_columns: Vec<String>,
    /// Leaf columns written without a dictionary (`name`, or `name.list.item` for a list's
    /// values): values (nearly) unique per row, where a dictionary only costs time to build
    /// and is abandoned at its size limit anyway.
    pub plain_columns: Vec<String>,
    /// Lookup indexes written beside each segment (see [`crate::lookup`]).
    pub lookups: Vec<LookupSpec>,
}

fn writer_properties(layout: &FileLayout) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(layout.zstd_level).unwrap_or_default(),
        ))
        .set_max_row_group_row_count(Some(layout.row_group_rows))
        .set_data_page_size_limit(layout.page_bytes)
        .set_statistics_enabled(EnabledStatistics::Page);
    for column in &layout.bloom_columns {
        props = props
            .set_column_bloom_filter_enabled(ColumnPath::from(column.as_str()), true)
            .set_column_bloom_filter_fpp(ColumnPath::from(column.as_str()), 0.01);
    }
    for column in &layout.plain_columns {
        // A list column's values are its leaf `name.list.item`.
        let path = ColumnPath::new(column.split('.').map(str::to_string).collect());
        props = props.set_column_dictionary_enabled(path, false);
    }
    props.build()
}

/// What writing a segment file produced.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub rows: u64,
    pub bytes: u64,
    /// xxh3-64 of the whole file, checked when the table opens.
    pub checksum: u64,
}

/// Sorts `batches` by the time column and writes them as one Parquet file at `path`, fsynced,
/// with the layout's lookup indexes beside it. Returns what was written, the (min, max) time
/// and the lookup indexes.
pub fn write_sorted(
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    time_column: usize,
    layout: &FileLayout,
) -> Result<(Written, i64, i64, Vec<LookupEntry>), TableError> {
    // Sorted by (time, arrival) without concatenating the batches: only the time column is
    // read for the order, then rows are gathered from the batches in small slices.
    let mut order: Vec<(i64, u32, u32)> =
        Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for (b, batch) in batches.iter().enumerate() {
        let times = batch
            .column(time_column)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| TableError::Schema("the time column is not Int64".into()))?;
        for (r, t) in times.iter().enumerate() {
            order.push((t.unwrap_or(i64::MIN), b as u32, r as u32));
        }
    }
    order.sort_unstable();
    let (min, max) = match (order.first(), order.last()) {
        (Some(first), Some(last)) => (first.0, last.0),
        _ => (0, 0),
    };
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    // Gathered 4,096 rows at a time: the writer encodes each into the open row group (closed
    // at `row_group_rows`), so a seal holds the segment plus a few MB, not a second copy.
    let step = layout.row_group_rows.clamp(1, 4_096);
    let groups = order.chunks(step).map(|chunk| {
        let indices: Vec<(usize, usize)> = chunk
            .iter()
            .map(|&(_, b, r)| (b as usize, r as usize))
            .collect();
        interleave_record_batch(&refs, &indices).map_err(TableError::arrow)
    });
    let written = write_batches(path, schema, groups, layout)?;
    let lookups = write_lookups(path, &layout.lookups, |index_path, spec| {
        lookup::write_from_batches(index_path, spec, schema, batches, &order)
    });
    Ok((written, min, max, lookups))
}

/// Writes one lookup index per spec beside the segment at `path`. An index that cannot be
/// written is left out (its segment is scanned instead) rather than failing the segment.
pub fn write_lookups(
    path: &Path,
    specs: &[LookupSpec],
    mut write: impl FnMut(&Path, &LookupSpec) -> Result<LookupEntry, TableError>,
) -> Vec<LookupEntry> {
    let segment_file = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let index_path = dir.join(lookup::file_name(&segment_file, &spec.column));
        let written =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(&index_path, spec)))
                .unwrap_or_else(|_| Err(TableError::Schema("writing the index panicked".into())));
        match written {
            Ok(entry) => out.push(entry),
            Err(e) => {
                tracing::warn!(file = %index_path.display(), error = %e, "could not write a lookup index: the segment will be scanned instead");
                let _ = std::fs::remove_file(&index_path);
            }
        }
    }
    out
}

/// A file being written, with the xxh3-64 and the count of the bytes written so far.
pub(crate) struct HashingWriter {
    pub(crate) file: std::fs::File,
    pub(crate) hasher: Xxh3,
    pub(crate) bytes: u64,
}

impl HashingWriter {
    pub(crate) fn new(file: std::fs::File) -> Self {
        HashingWriter {
            file,
            hasher: Xxh3::new(),
            bytes: 0,
        }
    }
}

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Streams batches into one Parquet file at `path`, fsynced.
pub fn write_batches(
    path: &Path,
    schema: &SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch, TableError>>,
    layout: &FileLayout,
) -> Result<Written, TableError> {
    let file = std::fs::File::create(path).map_err(|e| TableError::io(path, e))?;
    let sink = HashingWriter::new(file);
    let mut writer = ArrowWriter::try_new(sink, schema.clone(), Some(writer_properties(layout)))
        .map_err(TableError::parquet)?;
    let mut rows = 0;
    for batch in batches {
        let batch = conform(batch?, schema)?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(TableError::parquet)?;
    }
    let sink = writer.into_inner().map_err(TableError::parquet)?;
    sink.file.sync_all().map_err(|e| TableError::io(path, e))?;
    Ok(Written {
        rows,
        bytes: sink.bytes,
        checksum: sink.hasher.digest(),
    })
}

/// `batch` with the columns of `schema`, taken by name: a segment written before a column was
/// added to the table has none, and gets NULLs when a merge rewrites it.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, TableError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => Err(TableError::Schema(format!(
                "column {:?} is {} in a segment and {} in the table",
                f.name(),
                c.data_type(),
                f.data_type()
            ))),
            None if f.is_nullable() => Ok(new_null_array(f.data_type(), batch.num_rows())),
            None => Err(TableError::Schema(format!(
                "column {:?} is missing from a segment and cannot be NULL",
                f.name()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(TableError::arrow)
}

/// xxh3-64 of a whole file (to check a segment against its manifest entry).
pub fn file_checksum(path: &Path) -> Result<u64, TableError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| TableError::io(path, e))?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| TableError::io(path, e))?;
        if n == 0 {
            return Ok(hasher.digest());
        }
        hasher.update(&buf[..n]);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ListBuilder, StringArray, StringBuilder};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::basic::Encoding;
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn plain_columns_are_written_without_a_dictionary() {
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("tag", DataType::Utf8, false),
            Field::new("ids", DataType::List(item), true),
        ]));
        let ids: Vec<String> = (0..1_000).map(|i| format!("order-{i}")).collect();
        let tags: Vec<&str> = (0..1_000).map(|i| ["a", "b"][i % 2]).collect();
        let mut lists = ListBuilder::new(StringBuilder::new());
        for id in &ids {
            lists.values().append_value(id);
            lists.append(true);
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids.clone())),
                Arc::new(StringArray::from(tags)),
                Arc::new(lists.finish()),
            ],
        )
        .expect("batch");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.parquet");
        let layout = FileLayout {
            row_group_rows: 32_768,
            page_bytes: 1024 * 1024,
            zstd_level: 1,
            bloom_columns: vec![],
            plain_columns: vec!["id".into(), "ids.list.item".into()],
            lookups: vec![],
        };
        write_batches(&path, &schema, std::iter::once(Ok(batch)), &layout).expect("write");
        let reader =
            SerializedFileReader::new(std::fs::File::open(&path).expect("open")).expect("read");
        let group = reader.metadata().row_group(0);
        let dictionary = |name: &str| {
            let column = group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap_or_else(|| panic!("no column {name}"));
            column.dictionary_page_offset().is_some()
                || column.encodings().any(|e| e == Encoding::RLE_DICTIONARY)
        };
        assert!(!dictionary("id"));
        assert!(!dictionary("ids.list.item"));
        assert!(dictionary("tag"), "the other columns keep theirs");
        let rows: usize = read_batches(&path)
            .expect("read back")
            .map(|b| b.expect("batch").num_rows())
            .sum();
        assert_eq!(rows, 1_000);
    }

    /// The writer closes a page once it reaches `page_bytes` (a text page somewhat past it: 19,380
    /// bytes for 16 KiB here), so what a seal or merge holds uncompressed per column is bounded
    /// by it, not by the row group.
    #[test]
    fn data_pages_close_at_page_bytes() {
        use datafusion::parquet::column::page::Page;

        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
            // Nullable without NULLs, as the order columns are: written 20,000 levels at a time.
            Field::new("m", DataType::Utf8, true),
        ]));
        let rows = 20_000;
        let text = |i: i64| format!("street {i:>40}");
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i * 7_919))),
                Arc::new(StringArray::from_iter_values((0..rows).map(text))),
                Arc::new(StringArray::from_iter((0..rows).map(|i| Some(text(i))))),
            ],
        )
        .expect("batch");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.parquet");
        let page_bytes = 16 * 1024;
        let layout = FileLayout {
            row_group_rows: 32_768,
            page_bytes,
            zstd_level: 1,
            bloom_columns: vec![],
            plain_columns: vec!["n".into(), "s".into(), "m".into()],
            lookups: vec![],
        };
        write_batches(&path, &schema, std::iter::once(Ok(batch)), &layout).expect("write");
        let reader =
            SerializedFileReader::new(std::fs::File::open(&path).expect("open")).expect("read");
        let group = reader.get_row_group(0).expect("row group");
        for column in 0..3 {
            let mut pages = 0;
            let mut values = 0;
            for page in group.get_column_page_reader(column).expect("pages") {
                let page = page.expect("page");
                if let Page::DataPage { num_values, .. } | Page::DataPageV2 { num_values, .. } =
                    &page
                {
                    pages += 1;
                    values += *num_values as i64;
                    // Text is split into chunks checked against the limit: at most twice it.
                    assert!(
                        page.buffer().len() <= 2 * page_bytes + 1_024,
                        "column {column}: a page of {} bytes",
                        page.buffer().len()
                    );
                }
            }
            assert_eq!(values, rows, "column {column}");
            // 160 KB and twice 1 MB of values: one page each at the default 1 MiB limit.
            assert!(pages >= 8, "column {column}: {pages} pages");
        }
    }
}
