//! Lookup indexes: `WHERE customer_id = 'c'` without a scan.
//!
//! Segments are sorted by time, so the rows of one key (a customer) are spread over every
//! segment and nearly every row group: Parquet statistics and bloom filters cannot skip them,
//! and a lookup decodes whole pages of every column it reads. A lookup index is a second,
//! small copy of a few columns of one segment, sorted by a key column: the key, the row's
//! position in the segment and the columns a lookup query reads (for the orders table: a
//! customer's orders are `order_id, order_total, time_ms`). It is an Arrow IPC file next to the
//! segment (zstd, blocks of [`BLOCK_ROWS`] rows), written with it and listed with it in the
//! manifest; the first key of each block is kept in memory (at most [`FENCE_BYTES`] of it), so
//! a lookup of a key reads one or two blocks per segment, a few KB, whatever the segment's
//! size (more when the key has over [`BLOCK_ROWS`] rows in the segment or shares its first
//! [`FENCE_BYTES`] bytes with the keys of several blocks; [`Budget`] bounds it).
//!
//! The index is exact: it holds every row of its segment whose key is not NULL, and a lookup
//! returns exactly the rows whose key equals the value (DataFusion applies the filter again on
//! top). It is an optimisation only: a segment without an index (written before indexes
//! existed, merged from such a segment, or whose index cannot be read) is scanned as before.
//!
//! A seal builds the index from the batches it sorts (plus ~24 bytes per row to sort the keys);
//! a merge (which concatenates its inputs) merges the inputs' indexes block by block, shifting
//! row positions, holding a few blocks. A merge with an input without a readable index writes
//! no index (the merged segment is scanned).
//!
//! Reading is defensive: the footer is checked against its checksum in the manifest (so the
//! fences, block list and schema are what was written), every block against its checksum in
//! the footer before Arrow decodes it, and then its keys (sorted, starting at their fence); a
//! panic of Arrow's reader is caught. A damaged file is an error, never a wrong answer or a
//! panic, and its segment is scanned. An opened index keeps its file open: one descriptor per
//! index a query or a merge has opened (a disabled one included), closed when its segment
//! leaves the table's snapshots. What one query may read is bounded ([`Budget`]).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, BooleanArray, RecordBatch, StringArray, UInt32Array,
};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::compute::{filter_record_batch, interleave_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt32Type};
use datafusion::arrow::ipc::reader::{read_footer_length, FileDecoder};
use datafusion::arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use datafusion::arrow::ipc::{Block, CompressionType};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::manifest::LookupEntry;
use crate::segment::HashingWriter;
use crate::TableError;

/// Rows per block of an index file: what one lookup reads per segment (a few KB compressed).
pub const BLOCK_ROWS: usize = 512;
/// Longest prefix of a block's first key kept in memory.
const FENCE_BYTES: usize = 64;
/// The column of an index file that holds the row's position in its segment.
pub const ROW_COLUMN: &str = "__row";
/// Footer metadata key of the xxh3-64 of each block's bytes (a JSON array): a damaged block
/// is refused before Arrow decodes it (a corrupt length can make its reader abort the
/// process on an impossible allocation).
const CHECKSUMS_KEY: &str = "rtap.checksums";
/// Footer metadata key of the blocks' fences: the first [`FENCE_BYTES`] bytes of each block's
/// first key, in hex (a JSON array of strings).
const FENCES_KEY: &str = "rtap.fences";

/// Which lookup index a table writes: its key column (Utf8) and the columns it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupSpec {
    pub column: String,
    pub carry: Vec<String>,
}

impl LookupSpec {
    pub fn new(column: &str, carry: &[&str]) -> Self {
        LookupSpec {
            column: column.to_string(),
            carry: carry.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// Specs from (key column, carried columns) pairs.
    pub fn list(pairs: &[(&str, &[&str])]) -> Vec<LookupSpec> {
        pairs
            .iter()
            .map(|(column, carry)| LookupSpec::new(column, carry))
            .collect()
    }

    /// The index file's schema: key, carried columns (as in the table), row position.
    pub fn schema(&self, table: &Schema) -> Result<SchemaRef, TableError> {
        let field = |name: &str| {
            table
                .field_with_name(name)
                .cloned()
                .map_err(|_| TableError::Schema(format!("lookup index: no column {name:?}")))
        };
        let key = field(&self.column)?;
        if key.data_type() != &DataType::Utf8 {
            return Err(TableError::Schema(format!(
                "lookup index: key column {:?} is {}, not Utf8",
                self.column,
                key.data_type()
            )));
        }
        let mut fields = vec![key];
        for c in &self.carry {
            if c == &self.column || c == ROW_COLUMN {
                return Err(TableError::Schema(format!(
                    "lookup index on {:?}: cannot carry {c:?}",
                    self.column
                )));
            }
            fields.push(field(c)?);
        }
        fields.push(Field::new(ROW_COLUMN, DataType::UInt32, false));
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// The index file of `segment_file` on `column`: `seg-0000000007.customer_id.lookup`.
pub fn file_name(segment_file: &str, column: &str) -> String {
    let stem = segment_file
        .strip_suffix(".parquet")
        .unwrap_or(segment_file);
    format!("{stem}.{column}.lookup")
}

/// The first [`FENCE_BYTES`] bytes of `key`. Cut at a fixed byte length (not at a character
/// boundary, whose position depends on the key), fences keep the order of their keys: for
/// keys `a <= b` (compared as bytes, as `str` compares), `fence(a) <= fence(b)`.
fn fence(key: &str) -> Vec<u8> {
    key.as_bytes()[..key.len().min(FENCE_BYTES)].to_vec()
}

/// Fences as stored in the footer: lower-case hex (a fence may end inside a character).
fn fences_to_hex(fences: &[Vec<u8>]) -> Vec<String> {
    fences
        .iter()
        .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
        .collect()
}

fn fence_from_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || hex.len() > 2 * FENCE_BYTES {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect()
}

/// Hashes what goes through it since the last [`BlockHashing::start`].
struct BlockHashing<W> {
    inner: W,
    hasher: Xxh3,
}

impl<W: std::io::Write> std::io::Write for BlockHashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> BlockHashing<W> {
    fn start(&mut self) {
        self.hasher.reset();
    }
}

/// Writes blocks (sorted by key across the whole file) as one index file, fsynced.
struct IndexWriter {
    path: PathBuf,
    column: String,
    writer: FileWriter<BlockHashing<std::io::BufWriter<HashingWriter>>>,
    fences: Vec<Vec<u8>>,
    checksums: Vec<u64>,
    rows: u64,
}

impl IndexWriter {
    fn create(path: &Path, column: &str, schema: SchemaRef) -> Result<Self, TableError> {
        // Readable too: `finish` reads the footer back for its checksum.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| TableError::io(path, e))?;
        let sink = std::io::BufWriter::with_capacity(1 << 16, HashingWriter::new(file));
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::ZSTD))
            .map_err(TableError::arrow)?;
        let sink = BlockHashing {
            inner: sink,
            hasher: Xxh3::new(),
        };
        let writer =
            FileWriter::try_new_with_options(sink, &schema, options).map_err(TableError::arrow)?;
        Ok(IndexWriter {
            path: path.to_path_buf(),
            column: column.to_string(),
            writer,
            fences: Vec::new(),
            checksums: Vec::new(),
            rows: 0,
        })
    }

    fn write(&mut self, block: &RecordBatch) -> Result<(), TableError> {
        if block.num_rows() == 0 {
            return Ok(());
        }
        let keys = block.column(0).as_string::<i32>();
        self.fences.push(fence(keys.value(0)));
        self.rows += block.num_rows() as u64;
        self.writer.get_mut().start();
        self.writer.write(block).map_err(TableError::arrow)?;
        self.checksums.push(self.writer.get_mut().hasher.digest());
        Ok(())
    }

    fn finish(mut self) -> Result<LookupEntry, TableError> {
        let fences = serde_json::to_string(&fences_to_hex(&self.fences))
            .map_err(|e| TableError::Schema(format!("lookup fences: {e}")))?;
        self.writer.write_metadata(FENCES_KEY, fences);
        let checksums = serde_json::to_string(&self.checksums)
            .map_err(|e| TableError::Schema(format!("lookup checksums: {e}")))?;
        self.writer.write_metadata(CHECKSUMS_KEY, checksums);
        self.writer.finish().map_err(TableError::arrow)?;
        let sink = self
            .writer
            .into_inner()
            .map_err(TableError::arrow)?
            .inner
            .into_inner()
            .map_err(|e| TableError::io(&self.path, e.into_error()))?;
        sink.file
            .sync_all()
            .map_err(|e| TableError::io(&self.path, e))?;
        let (_, footer_checksum) = read_footer(&self.path, &sink.file, sink.bytes)?;
        let file = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        Ok(LookupEntry {
            column: self.column,
            file,
            bytes: sink.bytes,
            checksum: sink.hasher.digest(),
            footer_checksum: Some(footer_checksum),
        })
    }
}

/// Builds the index of a segment being sealed: `batches` are the segment's rows and `order`
/// their order in the file ((time, batch, row) of file row 0, 1, ...).
pub fn write_from_batches(
    path: &Path,
    spec: &LookupSpec,
    table: &Schema,
    batches: &[RecordBatch],
    order: &[(i64, u32, u32)],
) -> Result<LookupEntry, TableError> {
    let schema = spec.schema(table)?;
    let key_index = table
        .index_of(&spec.column)
        .map_err(|e| TableError::Schema(e.to_string()))?;
    let keys: Vec<&StringArray> = batches
        .iter()
        .map(|b| b.column(key_index).as_string::<i32>())
        .collect();
    // (key, file row) of every row with a key, sorted by key then row.
    let mut sorted: Vec<(&str, u32)> = Vec::with_capacity(order.len());
    for (file_row, &(_, b, r)) in order.iter().enumerate() {
        let keys = keys[b as usize];
        if keys.is_valid(r as usize) {
            sorted.push((keys.value(r as usize), file_row as u32));
        }
    }
    sorted.sort_unstable();
    // The carried columns of each batch, projected once, with the file row appended.
    let carried: Vec<usize> = spec
        .carry
        .iter()
        .map(|c| {
            table
                .index_of(c)
                .map_err(|e| TableError::Schema(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let mut writer = IndexWriter::create(path, &spec.column, schema.clone())?;
    let sources: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let mut columns = vec![b.column(key_index).clone()];
            columns.extend(carried.iter().map(|&i| b.column(i).clone()));
            // Placeholder row column, replaced per block below.
            columns.push(Arc::new(UInt32Array::from(vec![0u32; b.num_rows()])));
            RecordBatch::try_new(schema.clone(), columns).map_err(TableError::arrow)
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<&RecordBatch> = sources.iter().collect();
    for chunk in sorted.chunks(BLOCK_ROWS) {
        let indices: Vec<(usize, usize)> = chunk
            .iter()
            .map(|&(_, file_row)| {
                let (_, b, r) = order[file_row as usize];
                (b as usize, r as usize)
            })
            .collect();
        let block = interleave_record_batch(&refs, &indices).map_err(TableError::arrow)?;
        let rows = UInt32Array::from(chunk.iter().map(|&(_, row)| row).collect::<Vec<_>>());
        let block = with_rows(&block, rows)?;
        writer.write(&block)?;
    }
    writer.finish()
}

fn with_rows(block: &RecordBatch, rows: UInt32Array) -> Result<RecordBatch, TableError> {
    let mut columns = block.columns().to_vec();
    let last = columns.len() - 1;
    columns[last] = Arc::new(rows);
    RecordBatch::try_new(block.schema(), columns).map_err(TableError::arrow)
}

/// One input of a merge: its index's blocks, read one at a time, rows shifted by `offset`.
struct Cursor {
    index: Arc<LookupIndex>,
    next: usize,
    offset: u32,
    block: Option<RecordBatch>,
    pos: usize,
}

impl Cursor {
    fn advance_block(&mut self) -> Result<(), TableError> {
        self.pos = 0;
        self.block = None;
        if self.next >= self.index.blocks.len() {
            return Ok(());
        }
        let b = self.index.read_block(self.next)?;
        self.next += 1;
        let rows = b
            .column(b.num_columns() - 1)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| TableError::corrupt(&self.index.path, "row positions are not u32"))?;
        let shifted: UInt32Array = rows
            .iter()
            .map(|r| r.and_then(|r| r.checked_add(self.offset)))
            .collect();
        if shifted.null_count() > 0 {
            return Err(TableError::Schema(
                "lookup index row positions overflow".into(),
            ));
        }
        self.block = Some(with_rows(&b, shifted)?);
        Ok(())
    }

    /// The current row's key (blocks are checked to hold a Utf8 key column and rows).
    fn key(&self) -> Option<&str> {
        self.block
            .as_ref()
            .and_then(|b| b.column(0).as_string_opt::<i32>())
            .map(|k| k.value(self.pos))
    }
}

/// Merges the indexes of segments that a merge concatenates (`inputs`: each one's index and
/// rows, in file order) into the index of the merged segment at `path`. Blocks are read
/// through [`LookupIndex`], with its checks.
pub fn write_merged(
    path: &Path,
    column: &str,
    inputs: &[(Arc<LookupIndex>, u64)],
) -> Result<LookupEntry, TableError> {
    let mut cursors = Vec::with_capacity(inputs.len());
    let mut offset: u64 = 0;
    let Some(schema) = inputs.first().map(|(i, _)| i.schema.clone()) else {
        return Err(TableError::Schema("a merge without inputs".into()));
    };
    for (index, rows) in inputs {
        if index.schema.fields() != schema.fields() || index.column != column {
            return Err(TableError::Schema(
                "lookup index inputs of a merge differ in their columns".into(),
            ));
        }
        let offset32 = u32::try_from(offset)
            .map_err(|_| TableError::Schema("a merged segment holds over 2^32 rows".into()))?;
        let mut cursor = Cursor {
            index: index.clone(),
            next: 0,
            offset: offset32,
            block: None,
            pos: 0,
        };
        cursor.advance_block()?;
        cursors.push(cursor);
        offset += rows;
    }
    let mut writer = IndexWriter::create(path, column, schema.clone())?;
    // Rows of the next block, as (slot in `pool`, row); `pool_of[i]` is cursor i's block's slot.
    let mut pool: Vec<RecordBatch> = Vec::new();
    let mut pool_of: Vec<Option<usize>> = vec![None; cursors.len()];
    let mut pending: Vec<(usize, usize)> = Vec::with_capacity(BLOCK_ROWS);
    loop {
        // The smallest key; on ties the earlier input (its rows come first in the file).
        let mut best: Option<usize> = None;
        for (i, c) in cursors.iter().enumerate() {
            if let Some(k) = c.key() {
                if best.is_none_or(|b| cursors[b].key().is_some_and(|bk| k < bk)) {
                    best = Some(i);
                }
            }
        }
        let Some(i) = best else { break };
        let slot = match pool_of[i] {
            Some(s) => s,
            None => {
                let Some(block) = cursors[i].block.clone() else {
                    break;
                };
                pool.push(block);
                pool_of[i] = Some(pool.len() - 1);
                pool.len() - 1
            }
        };
        pending.push((slot, cursors[i].pos));
        cursors[i].pos += 1;
        let exhausted = cursors[i]
            .block
            .as_ref()
            .is_none_or(|b| cursors[i].pos >= b.num_rows());
        if exhausted {
            cursors[i].advance_block()?;
            pool_of[i] = None;
        }
        if pending.len() == BLOCK_ROWS {
            flush(&mut writer, &mut pool, &mut pool_of, &mut pending, &cursors)?;
        }
    }
    flush(&mut writer, &mut pool, &mut pool_of, &mut pending, &cursors)?;
    writer.finish()
}

/// Writes the pending rows as one block and keeps only the blocks cursors still read.
fn flush(
    writer: &mut IndexWriter,
    pool: &mut Vec<RecordBatch>,
    pool_of: &mut [Option<usize>],
    pending: &mut Vec<(usize, usize)>,
    cursors: &[Cursor],
) -> Result<(), TableError> {
    if !pending.is_empty() {
        let refs: Vec<&RecordBatch> = pool.iter().collect();
        let block = interleave_record_batch(&refs, pending).map_err(TableError::arrow)?;
        writer.write(&block)?;
        pending.clear();
    }
    let mut kept = Vec::new();
    for (i, slot) in pool_of.iter_mut().enumerate() {
        *slot = match (slot.take(), cursors[i].block.as_ref()) {
            (Some(s), Some(_)) => {
                kept.push(pool[s].clone());
                Some(kept.len() - 1)
            }
            _ => None,
        };
    }
    *pool = kept;
    Ok(())
}

/// What lookups may still read for one query; a lookup past it fails (the caller scans).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub rows: usize,
    pub bytes: usize,
    pub blocks: usize,
}

/// An index file opened for lookups: its footer and fences in memory, blocks read on demand
/// from the file it keeps open.
pub struct LookupIndex {
    path: PathBuf,
    /// Kept open: no `open` and `fstat` per lookup; a cut made since `open` shows as a short
    /// read (corrupt).
    file: std::fs::File,
    column: String,
    schema: SchemaRef,
    decoder: FileDecoder,
    blocks: Vec<Block>,
    fences: Vec<Vec<u8>>,
    checksums: Vec<u64>,
}

impl std::fmt::Debug for LookupIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupIndex")
            .field("path", &self.path)
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

/// Largest footer an index file may have (fences are at most 64 bytes per 512 rows).
const MAX_FOOTER_BYTES: usize = 64 << 20;
/// Largest block an index file may have (512 rows of the carried columns).
const MAX_BLOCK_BYTES: i64 = 256 << 20;

/// Runs `f`, turning a panic (Arrow's readers panic on some malformed input) into an error.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, TableError>) -> Result<T, TableError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(TableError::corrupt(
            path,
            "unreadable (the reader panicked)",
        ))
    })
}

/// The footer of the index file `file` (`len` bytes long) and the xxh3-64 of the footer with
/// the file's 10-byte tail (footer length and magic).
fn read_footer(path: &Path, file: &std::fs::File, len: u64) -> Result<(Vec<u8>, u64), TableError> {
    let corrupt = |d: String| TableError::corrupt(path, d);
    if len < 10 {
        return Err(corrupt(format!("{len} bytes")));
    }
    let mut tail = [0u8; 10];
    file.read_exact_at(&mut tail, len - 10)
        .map_err(|e| TableError::io(path, e))?;
    let footer_len = read_footer_length(tail).map_err(|e| corrupt(e.to_string()))?;
    if footer_len > MAX_FOOTER_BYTES || footer_len as u64 + 10 > len {
        return Err(corrupt(format!("footer of {footer_len} bytes")));
    }
    let mut footer = vec![0u8; footer_len + 10];
    file.read_exact_at(&mut footer, len - 10 - footer_len as u64)
        .map_err(|e| TableError::io(path, e))?;
    let checksum = xxh3_64(&footer);
    footer.truncate(footer_len);
    Ok((footer, checksum))
}

/// Why a lookup found no answer.
#[derive(Debug)]
pub enum LookupError {
    /// The query's [`Budget`] is spent: the caller scans instead.
    OverBudget,
    /// The index file could not be read or failed a check: its segment is scanned instead.
    Unreadable(TableError),
}

impl From<TableError> for LookupError {
    fn from(e: TableError) -> Self {
        LookupError::Unreadable(e)
    }
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::OverBudget => f.write_str("over the lookup budget of the query"),
            LookupError::Unreadable(e) => e.fmt(f),
        }
    }
}

impl LookupIndex {
    /// Opens the index described by `entry` at `path`: the file must have the entry's size,
    /// footer checksum and key column. A malformed file is an error, never a panic.
    pub fn open(path: &Path, entry: &LookupEntry) -> Result<Self, TableError> {
        guarded(path, || Self::open_unguarded(path, entry))
    }

    fn open_unguarded(path: &Path, entry: &LookupEntry) -> Result<Self, TableError> {
        let corrupt = |d: String| TableError::corrupt(path, d);
        let (bytes, column) = (entry.bytes, entry.column.as_str());
        let Some(expected) = entry.footer_checksum else {
            return Err(corrupt(
                "no footer checksum in the manifest (an older index)".into(),
            ));
        };
        let file = std::fs::File::open(path).map_err(|e| TableError::io(path, e))?;
        let len = file.metadata().map_err(|e| TableError::io(path, e))?.len();
        if len != bytes {
            return Err(corrupt(format!("{len} bytes, {bytes} in the manifest")));
        }
        let (footer_bytes, checksum) = read_footer(path, &file, len)?;
        if checksum != expected {
            return Err(corrupt("footer checksum mismatch".into()));
        }
        let footer = datafusion::arrow::ipc::root_as_footer(&footer_bytes)
            .map_err(|e| corrupt(format!("footer: {e}")))?;
        let schema = footer
            .schema()
            .map(datafusion::arrow::ipc::convert::fb_to_schema)
            .ok_or_else(|| corrupt("no schema".into()))?;
        let schema = Arc::new(schema);
        let valid = schema.fields().len() >= 2
            && schema.field(0).name() == column
            && schema.field(0).data_type() == &DataType::Utf8
            && schema
                .fields()
                .last()
                .is_some_and(|f| f.name() == ROW_COLUMN && f.data_type() == &DataType::UInt32);
        if !valid {
            return Err(corrupt(format!("not a lookup index on {column:?}")));
        }
        let blocks: Vec<Block> = footer
            .recordBatches()
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default();
        let metadata = |key: &str| {
            footer.custom_metadata().and_then(|kv| {
                kv.iter()
                    .find(|e| e.key() == Some(key))
                    .and_then(|e| e.value())
                    .map(str::to_string)
            })
        };
        let fences: Vec<String> = metadata(FENCES_KEY)
            .map(|v| serde_json::from_str(&v).map_err(|e| corrupt(format!("fences: {e}"))))
            .transpose()?
            .unwrap_or_default();
        let fences: Vec<Vec<u8>> = fences
            .iter()
            .map(|f| fence_from_hex(f))
            .collect::<Option<_>>()
            .ok_or_else(|| corrupt("fences are not hex".into()))?;
        let checksums: Vec<u64> = metadata(CHECKSUMS_KEY)
            .map(|v| serde_json::from_str(&v).map_err(|e| corrupt(format!("checksums: {e}"))))
            .transpose()?
            .unwrap_or_default();
        if fences.len() != blocks.len() || checksums.len() != blocks.len() {
            return Err(corrupt(format!(
                "{} fences and {} checksums for {} blocks",
                fences.len(),
                checksums.len(),
                blocks.len()
            )));
        }
        if fences.windows(2).any(|w| w[0] > w[1]) {
            return Err(corrupt("fences out of order".into()));
        }
        for b in &blocks {
            let sane = b.offset() >= 0
                && b.metaDataLength() >= 8
                && b.bodyLength() >= 0
                && i64::from(b.metaDataLength()) + b.bodyLength() <= MAX_BLOCK_BYTES;
            let end = (b.offset() as u64)
                .checked_add(b.metaDataLength() as u64)
                .and_then(|e| e.checked_add(b.bodyLength() as u64));
            if !sane || end.is_none_or(|e| e > len) {
                return Err(corrupt("a block lies outside the file".into()));
            }
        }
        let decoder = FileDecoder::new(schema.clone(), footer.version());
        Ok(LookupIndex {
            path: path.to_path_buf(),
            file,
            column: column.to_string(),
            schema,
            decoder,
            blocks,
            fences,
            checksums,
        })
    }

    /// The index's columns: key, carried columns, [`ROW_COLUMN`].
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Memory the index keeps (fences and block list).
    pub fn memory_bytes(&self) -> usize {
        self.fences.iter().map(|f| f.len() + 24).sum::<usize>()
            + self.blocks.len() * std::mem::size_of::<Block>()
    }

    /// Block `i`, checked: its bytes against their checksum, then not empty, keys sorted,
    /// starting at its fence.
    fn read_block(&self, i: usize) -> Result<RecordBatch, TableError> {
        let corrupt = |d: &str| TableError::corrupt(&self.path, format!("block {i}: {d}"));
        let block = &self.blocks[i];
        let len = block.metaDataLength() as usize + block.bodyLength() as usize;
        let mut bytes = vec![0u8; len];
        self.file
            .read_exact_at(&mut bytes, block.offset() as u64)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => corrupt(&format!(
                    "bytes {}..{}: the file is shorter than when it was opened",
                    block.offset(),
                    block.offset() as u64 + len as u64
                )),
                _ => TableError::io(&self.path, e),
            })?;
        if xxh3_64(&bytes) != self.checksums[i] {
            return Err(corrupt("checksum mismatch"));
        }
        let buffer = Buffer::from_vec(bytes);
        let batch = guarded(&self.path, || {
            self.decoder
                .read_record_batch(block, &buffer)
                .map_err(|e| corrupt(&e.to_string()))
        })?
        .ok_or_else(|| corrupt("not a record batch"))?;
        if batch.num_rows() == 0 {
            return Err(corrupt("an empty block"));
        }
        let keys = batch
            .column(0)
            .as_string_opt::<i32>()
            .ok_or_else(|| corrupt("keys are not text"))?;
        if keys.null_count() > 0
            || fence(keys.value(0)) != self.fences[i]
            || (1..keys.len()).any(|j| keys.value(j - 1) > keys.value(j))
        {
            return Err(corrupt("keys do not match the fences"));
        }
        Ok(batch)
    }

    /// The rows whose key equals `key` (the index's columns), within `budget` (what they
    /// take is subtracted; past it is an error: the caller scans instead).
    pub fn lookup(&self, key: &str, budget: &mut Budget) -> Result<Vec<RecordBatch>, LookupError> {
        let probe = fence(key);
        // Blocks whose fence is below the key's prefix start with a smaller key; the key's first
        // row is in the last of them or in a later block.
        let first = self
            .fences
            .partition_point(|f| *f < probe)
            .saturating_sub(1);
        let mut out = Vec::new();
        for i in first..self.blocks.len() {
            if self.fences[i] > probe {
                break;
            }
            if budget.blocks == 0 {
                return Err(LookupError::OverBudget);
            }
            budget.blocks -= 1;
            let block = self.read_block(i)?;
            let keys = block.column(0).as_string::<i32>();
            let n = keys.len();
            if keys.value(0) > key {
                break;
            }
            if keys.value(n - 1) < key {
                continue;
            }
            let matches: BooleanArray = keys.iter().map(|k| Some(k == Some(key))).collect();
            let found = filter_record_batch(&block, &matches).map_err(TableError::arrow)?;
            let size = found.get_array_memory_size();
            if found.num_rows() > budget.rows || size > budget.bytes {
                return Err(LookupError::OverBudget);
            }
            budget.rows -= found.num_rows();
            budget.bytes -= size;
            if found.num_rows() > 0 {
                out.push(found);
            }
            if keys.value(n - 1) > key {
                break;
            }
        }
        Ok(out)
    }
}
