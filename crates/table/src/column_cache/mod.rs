//! Decoded columns of sealed segments, kept in memory within a byte budget.
//!
//! While orders arrive, the newest minutes of the table are in young, small segment files (a
//! seal every few seconds, merged in size tiers), and the queries that ask about them (the
//! overview's two minutes, asked every second by every dashboard) decompress and decode the
//! same Parquet pages on every call: at 1,000 orders/s, about 120,000 rows of five columns a
//! call. This cache keeps what a scan decoded, per row group and column; a later scan that
//! needs only kept columns of the row groups overlapping its time bounds takes them from
//! memory, cut to those bounds (a slice where the row group's times ascend, as a seal writes
//! them; row by row in a merged segment, which concatenates its inputs), and opens no file.
//! The rest of the scan reads Parquet as before. Scans that need a nested column (a list of
//! line items, say) bypass the cache: such columns are wide enough that one scan of them would
//! evict the narrow columns the overview asks for every second.
//!
//! Memory is bounded by `budget` twice over:
//! - the kept arrays and the row-group summaries of their files: at most `budget` (least
//!   recently used out);
//! - the rows live plans hold (cut from kept arrays, or kept no longer): a scan is answered
//!   from the cache only while all plans together hold at most `budget` ([`Lease`]), else it
//!   reads Parquet, whose memory the query's pool bounds.
//!
//! What one scan decodes into the cache is at most half the budget, estimated from the Parquet
//! metadata before decoding (a scan over a month reads its files as before instead of decoding
//! them here); segments too large for what is left are passed over without opening them.
//! Decoding happens while the query is planned (on the query runtime, within the query's turn),
//! a few ms at most for the default budget. Entries of segments that left the table (merged,
//! past retention) are dropped at the next scan. A cache belongs to one table instance (one SQL
//! engine): a file is known by its name and checksum, so even a name reused after a rollback to
//! a checkpoint is not mistaken for the old file.
//!
//! Which rows a scan returns does not change: every kept array is the decoded column of its
//! row group, and the cut drops only rows outside the time bounds, which the query's own filter
//! (applied again above the scan) drops too.

mod exec;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, RecordBatchReader,
};
use datafusion::arrow::compute::{concat_batches, filter};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::file::statistics::Statistics as ParquetStatistics;

pub use exec::CachedRowsExec;

use crate::segment::SegmentRef;
use crate::TableError;

/// What the cache holds and did, for `/metrics` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColumnCacheStats {
    /// Bytes held: kept arrays plus the row-group summaries of their files.
    pub bytes: usize,
    /// Kept arrays (one column of one row group each).
    pub arrays: usize,
    /// Bytes of rows that live plans hold (see [`Lease`]).
    pub lent: usize,
    /// Segments a scan took wholly from the cache without decoding anything.
    pub hits: u64,
    /// Row groups decoded into the cache.
    pub decoded: u64,
}

/// Decoded columns of sealed segments (see the module documentation).
pub struct ColumnCache {
    /// Bytes the kept arrays and summaries may take; as many again for rows held by plans.
    budget: usize,
    state: Mutex<State>,
    /// Bytes of rows that live plans hold.
    lent: Arc<AtomicUsize>,
}

impl fmt::Debug for ColumnCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColumnCache")
            .field("budget", &self.budget)
            .field("stats", &self.stats())
            .finish()
    }
}

#[derive(Default)]
struct State {
    /// By segment file name.
    files: HashMap<String, FileState>,
    /// Bytes of every file's summary and kept arrays.
    bytes: usize,
    /// Ticks of use, for least recently used.
    tick: u64,
    hits: u64,
    decoded: u64,
    /// Files whose columns are not what the table's schema says: always read as Parquet (whose
    /// reader reports why). By name and checksum.
    refused: HashSet<(String, Option<u64>)>,
}

struct FileState {
    checksum: Option<u64>,
    groups: Arc<RowGroups>,
    /// By (row group, table column).
    arrays: HashMap<(usize, usize), Kept>,
}

struct Kept {
    array: ArrayRef,
    bytes: usize,
    used: u64,
    /// For the time column: its values ascend (then a scan slices instead of filtering).
    sorted: bool,
}

/// What a segment file's footer says that the cache needs: where each table column is and
/// each row group's time range and estimated decoded size.
struct RowGroups {
    metadata: ArrowReaderMetadata,
    /// Per table column: its root column in the file.
    roots: Vec<Option<usize>>,
    groups: Vec<Group>,
    /// What this summary takes in memory (the Parquet metadata and the lists above).
    bytes: usize,
}

struct Group {
    rows: usize,
    min_time: i64,
    max_time: i64,
    /// Per table column: decoded bytes, estimated (see [`decoded_size`]).
    estimate: Vec<usize>,
}

/// What one scan asks of each segment.
pub(crate) struct Want<'a> {
    /// The table's schema, and the scan's output: the table columns `projection`, in order.
    pub schema: &'a SchemaRef,
    pub projected: &'a SchemaRef,
    pub projection: &'a [usize],
    /// The table's time column.
    pub time: usize,
    /// The scan's time bounds, inclusive (see [`crate::provider::time_bounds`]).
    pub lo: i64,
    pub hi: i64,
}

/// A scan's part answered from the cache.
pub(crate) struct Served<'a> {
    pub batches: Vec<RecordBatch>,
    /// Segments answered from the cache.
    pub segments: usize,
    /// Segments still to read as Parquet.
    pub rest: Vec<&'a SegmentRef>,
    /// The bytes of `batches`, counted against the budget until the plan holding them drops.
    pub lease: Lease,
}

/// Bytes of rows a plan holds, counted in the cache's `lent` until the lease drops.
#[derive(Debug)]
pub(crate) struct Lease {
    lent: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.lent.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl ColumnCache {
    pub fn new(budget: usize) -> Self {
        ColumnCache {
            budget,
            state: Mutex::new(State::default()),
            lent: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn stats(&self) -> ColumnCacheStats {
        let s = self.lock();
        ColumnCacheStats {
            bytes: s.bytes,
            arrays: s.files.values().map(|f| f.arrays.len()).sum(),
            lent: self.lent.load(Ordering::Acquire),
            hits: s.hits,
            decoded: s.decoded,
        }
    }

    /// The bytes held, added up afresh from what is kept (tests check the running count).
    #[doc(hidden)]
    pub fn recount(&self) -> usize {
        self.lock().files.values().map(FileState::bytes).sum()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers what it can of a scan of `segments` (newest first) from kept columns, decoding
    /// into the cache what fits this scan's share. `live` is every segment of the scan's
    /// snapshot: entries of any other are dropped.
    pub(crate) fn serve<'a>(
        &self,
        live: &[SegmentRef],
        segments: Vec<&'a SegmentRef>,
        want: &Want<'_>,
    ) -> Served<'a> {
        self.forget_all_but(live);
        let mut served = Served {
            batches: Vec::new(),
            segments: 0,
            rest: Vec::new(),
            lease: Lease {
                lent: self.lent.clone(),
                bytes: 0,
            },
        };
        // Nested columns (line items, categories) are many values a row: a scan of a minute
        // of them would push the narrow columns of the overview's every-second query out of
        // the budget, so scans that need one read Parquet and keep the cache as it is.
        let nested = want
            .projection
            .iter()
            .any(|&c| want.schema.field(c).data_type().is_nested());
        if nested || want.schema.field(want.time).data_type() != &DataType::Int64 {
            served.rest = segments;
            return served;
        }
        let needed: Vec<usize> = want
            .projection
            .iter()
            .copied()
            .chain(std::iter::once(want.time))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut allowance = self.budget / 2;
        for segment in segments {
            if self.lent.load(Ordering::Acquire) >= self.budget {
                // Plans hold the budget already: nothing more is lent, so nothing is decoded.
                served.rest.push(segment);
                continue;
            }
            match self.segment(segment, want, &needed, &mut allowance) {
                Ok(Some(batches)) if self.lend(&mut served.lease, &batches) => {
                    served.segments += 1;
                    served.batches.extend(batches);
                }
                Ok(_) => served.rest.push(segment),
                Err(e) => {
                    // The Parquet scan reads it and reports what is wrong with the file.
                    tracing::debug!(error = %e, file = %segment.entry.file, "column cache: reading the file instead");
                    served.rest.push(segment);
                }
            }
        }
        served
    }

    /// Counts `batches` in `lease` if all plans together stay within the budget. A slice keeps
    /// its whole array alive (after the cache lets it go too): it counts whole.
    fn lend(&self, lease: &mut Lease, batches: &[RecordBatch]) -> bool {
        let bytes = batches
            .iter()
            .flat_map(|b| b.columns())
            .map(|c| c.get_array_memory_size())
            .fold(0, usize::saturating_add);
        let fits = self
            .lent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |lent| {
                let total = lent.checked_add(bytes)?;
                (total <= self.budget).then_some(total)
            })
            .is_ok();
        if fits {
            lease.bytes += bytes;
        }
        fits
    }

    fn forget_all_but(&self, live: &[SegmentRef]) {
        let live: HashSet<&str> = live.iter().map(|l| l.entry.file.as_str()).collect();
        let mut s = self.lock();
        let mut freed = 0;
        s.files.retain(|name, file| {
            let keep = live.contains(name.as_str());
            if !keep {
                freed += file.bytes();
            }
            keep
        });
        s.bytes -= freed;
        s.refused.retain(|(name, _)| live.contains(name.as_str()));
    }

    /// One segment's rows from the cache, or `None` when it is to be read as Parquet.
    fn segment(
        &self,
        segment: &SegmentRef,
        want: &Want<'_>,
        needed: &[usize],
        allowance: &mut usize,
    ) -> Result<Option<Vec<RecordBatch>>, TableError> {
        let entry = &segment.entry;
        let known = {
            let mut s = self.lock();
            if s.refused.contains(&(entry.file.clone(), entry.checksum)) {
                return Ok(None);
            }
            match s.files.get(&entry.file) {
                Some(f) if f.checksum == entry.checksum => Some(f.groups.clone()),
                Some(_) => {
                    // Another file of the same name (a table rolled back): forget the old one.
                    if let Some(old) = s.files.remove(&entry.file) {
                        s.bytes -= old.bytes();
                    }
                    None
                }
                None => None,
            }
        };
        let fresh = known.is_none();
        let groups = match known {
            Some(groups) => groups,
            None => {
                // Not opened when its rows in the bounds could not fit what is left to decode.
                if *allowance < rough_size(segment, want, needed) {
                    return Ok(None);
                }
                Arc::new(
                    RowGroups::read(&segment.path, want.schema, want.time, entry.rows)
                        .inspect_err(|_| self.refuse(segment))?,
                )
            }
        };
        if needed.iter().any(|&c| groups.roots[c].is_none()) {
            return Ok(None);
        }
        let overlapping: Vec<usize> = (0..groups.groups.len())
            .filter(|&g| {
                let group = &groups.groups[g];
                group.max_time >= want.lo && group.min_time <= want.hi
            })
            .collect();
        // What is kept, and what this scan would have to decode.
        let mut have: HashMap<(usize, usize), (ArrayRef, bool)> = HashMap::new();
        let mut missing: Vec<(usize, Vec<usize>)> = Vec::new();
        {
            let mut s = self.lock();
            s.tick += 1;
            let tick = s.tick;
            let mut arrays = s.files.get_mut(&entry.file).map(|f| &mut f.arrays);
            for &g in &overlapping {
                let mut absent = Vec::new();
                for &c in needed {
                    match arrays.as_mut().and_then(|a| a.get_mut(&(g, c))) {
                        Some(kept) => {
                            kept.used = tick;
                            have.insert((g, c), (kept.array.clone(), kept.sorted));
                        }
                        None => absent.push(c),
                    }
                }
                if !absent.is_empty() {
                    missing.push((g, absent));
                }
            }
            if missing.is_empty() {
                s.hits += 1;
            }
        }
        let cost = missing
            .iter()
            .flat_map(|(g, columns)| columns.iter().map(|&c| groups.groups[*g].estimate[c]))
            .fold(0, usize::saturating_add);
        if cost > *allowance {
            if fresh {
                // A footer read for nothing is charged, so a scan reads few of them.
                *allowance = allowance.saturating_sub(groups.bytes);
            }
            return Ok(None);
        }
        *allowance -= cost;
        for (g, columns) in missing {
            let decoded = decode(&segment.path, want.schema, &groups, g, &columns)
                .inspect_err(|_| self.refuse(segment))?;
            self.lock().decoded += 1;
            // Checked before any is kept: a file that does not match is never used.
            let rows = groups.groups[g].rows;
            for (&c, array) in columns.iter().zip(&decoded) {
                let field = want.schema.field(c);
                let wrong = if array.data_type() != field.data_type() {
                    Some(format!("is {} in the file", array.data_type()))
                } else if array.len() != rows {
                    Some(format!(
                        "has {} rows of {rows} in row group {g}",
                        array.len()
                    ))
                } else {
                    None
                };
                if let Some(wrong) = wrong {
                    self.refuse(segment);
                    return Err(TableError::Schema(format!(
                        "{}: column {} ({} in the table) {wrong}",
                        entry.file,
                        field.name(),
                        field.data_type()
                    )));
                }
            }
            for (&c, array) in columns.iter().zip(decoded) {
                let sorted = c == want.time && ascending(&array);
                have.insert((g, c), (array.clone(), sorted));
                self.keep(segment, &groups, (g, c), array, sorted);
            }
        }
        let mut batches = Vec::new();
        for &g in &overlapping {
            let column = |c: usize| {
                have.get(&(g, c)).ok_or_else(|| {
                    TableError::Schema(format!(
                        "{}: column {} of row group {g} not decoded",
                        entry.file,
                        want.schema.field(c).name()
                    ))
                })
            };
            let (time, sorted) = column(want.time)?;
            let cut = Cut::of(time, *sorted, want.lo, want.hi);
            if cut.rows() == 0 {
                continue;
            }
            let columns = want
                .projection
                .iter()
                .map(|&c| cut.apply(&column(c)?.0))
                .collect::<Result<Vec<_>, TableError>>()?;
            let options = RecordBatchOptions::new().with_row_count(Some(cut.rows()));
            batches.push(
                RecordBatch::try_new_with_options(want.projected.clone(), columns, &options)
                    .map_err(TableError::arrow)?,
            );
        }
        Ok(Some(batches))
    }

    /// Reads `segment` as Parquet from now on (whose reader reports what is wrong with it).
    fn refuse(&self, segment: &SegmentRef) {
        let entry = &segment.entry;
        self.lock()
            .refused
            .insert((entry.file.clone(), entry.checksum));
    }

    /// Keeps one decoded array (and its file's summary, the first time).
    fn keep(
        &self,
        segment: &SegmentRef,
        groups: &Arc<RowGroups>,
        key: (usize, usize),
        array: ArrayRef,
        sorted: bool,
    ) {
        let bytes = array.get_array_memory_size();
        if bytes > self.budget / 2 {
            return;
        }
        let mut s = self.lock();
        s.tick += 1;
        let used = s.tick;
        let State {
            files, bytes: held, ..
        } = &mut *s;
        let file = files.entry(segment.entry.file.clone()).or_insert_with(|| {
            *held += groups.bytes;
            FileState {
                checksum: segment.entry.checksum,
                groups: groups.clone(),
                arrays: HashMap::new(),
            }
        });
        let kept = Kept {
            array,
            bytes,
            used,
            sorted,
        };
        let before = file.arrays.insert(key, kept).map_or(0, |k| k.bytes);
        *held = *held + bytes - before;
        self.evict(&mut s);
    }

    /// Drops the least recently used arrays until the cache is an eighth below its budget (so
    /// that the next inserts do not each search for the oldest), then the summaries of files
    /// left with no array.
    fn evict(&self, s: &mut State) {
        if s.bytes <= self.budget {
            return;
        }
        let target = self.budget - self.budget / 8;
        let mut ages: Vec<(u64, String, (usize, usize))> = s
            .files
            .iter()
            .flat_map(|(name, f)| {
                f.arrays
                    .iter()
                    .map(move |(key, kept)| (kept.used, name.clone(), *key))
            })
            .collect();
        ages.sort_unstable();
        for (_, name, key) in ages {
            if s.bytes <= target {
                break;
            }
            if let Some(kept) = s.files.get_mut(&name).and_then(|f| f.arrays.remove(&key)) {
                s.bytes -= kept.bytes;
            }
        }
        let mut freed = 0;
        s.files.retain(|_, f| {
            let keep = !f.arrays.is_empty();
            if !keep {
                freed += f.groups.bytes;
            }
            keep
        });
        s.bytes -= freed;
    }
}

impl FileState {
    fn bytes(&self) -> usize {
        self.groups.bytes + self.arrays.values().map(|k| k.bytes).sum::<usize>()
    }
}

impl RowGroups {
    /// The summary of the file at `path`, which the manifest says holds `rows` rows.
    fn read(path: &Path, schema: &SchemaRef, time: usize, rows: u64) -> Result<Self, TableError> {
        let file = File::open(path).map_err(|e| TableError::io(path, e))?;
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(TableError::parquet)?;
        let parquet = metadata.parquet_schema();
        // A file's top-level Arrow fields are its root columns, in order.
        let roots: Vec<Option<usize>> = schema
            .fields()
            .iter()
            .map(|f| metadata.schema().index_of(f.name()).ok())
            .collect();
        let no_time = || TableError::Schema(format!("{}: no time column", path.display()));
        let time_root = roots[time].ok_or_else(no_time)?;
        let time_leaf = (0..parquet.num_columns())
            .find(|&leaf| parquet.get_column_root_idx(leaf) == time_root)
            .ok_or_else(no_time)?;
        let stored: i64 = metadata
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| rg.num_rows().max(0))
            .fold(0, i64::saturating_add);
        if u64::try_from(stored).ok() != Some(rows) {
            return Err(TableError::Schema(format!(
                "{}: {stored} rows in the footer, {rows} in the manifest",
                path.display()
            )));
        }
        let groups = metadata
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| {
                let rows = usize::try_from(rg.num_rows()).unwrap_or(0);
                let mut by_root = vec![0usize; parquet.root_schema().get_fields().len()];
                for leaf in 0..rg.num_columns() {
                    let size = usize::try_from(rg.column(leaf).uncompressed_size()).unwrap_or(0);
                    if let Some(b) = by_root.get_mut(parquet.get_column_root_idx(leaf)) {
                        *b = b.saturating_add(size);
                    }
                }
                let estimate = roots
                    .iter()
                    .zip(schema.fields())
                    .map(|(r, field)| {
                        let stored = r.and_then(|r| by_root.get(r).copied()).unwrap_or(0);
                        decoded_size(field.data_type(), rows, stored)
                    })
                    .collect();
                // Without statistics, the row group may hold any time.
                let (min_time, max_time) = match rg.column(time_leaf).statistics() {
                    Some(ParquetStatistics::Int64(s)) => (
                        s.min_opt().copied().unwrap_or(i64::MIN),
                        s.max_opt().copied().unwrap_or(i64::MAX),
                    ),
                    _ => (i64::MIN, i64::MAX),
                };
                Group {
                    rows,
                    min_time,
                    max_time,
                    estimate,
                }
            })
            .collect::<Vec<_>>();
        let bytes = metadata.metadata().memory_size()
            + groups.len() * (roots.len() * 8 + 32)
            + roots.len() * 16;
        Ok(RowGroups {
            metadata,
            roots,
            groups,
            bytes,
        })
    }
}

/// What the rows of `segment` within the scan's bounds would take decoded, guessed from its
/// row count and time range alone (rows spread evenly over it), before opening the file.
fn rough_size(segment: &SegmentRef, want: &Want<'_>, needed: &[usize]) -> usize {
    let entry = &segment.entry;
    let span = (entry.max_time_ms as i128 - entry.min_time_ms as i128).max(0) + 1;
    let from = want.lo.max(entry.min_time_ms) as i128;
    let to = want.hi.min(entry.max_time_ms) as i128;
    let inside = (to - from + 1).clamp(0, span);
    let rows: usize = (i128::from(entry.rows).saturating_mul(inside) / span)
        .try_into()
        .unwrap_or(usize::MAX);
    needed
        .iter()
        .map(|&c| decoded_size(want.schema.field(c).data_type(), rows, 0))
        .fold(0, usize::saturating_add)
}

/// The decoded size of a column of `rows` rows stored in `stored` uncompressed bytes, estimated:
/// exact for fixed-width types; for the others their stored bytes, at least 4 a row (the
/// offsets; a dictionary-encoded text column decodes to more than it stores).
fn decoded_size(data_type: &DataType, rows: usize, stored: usize) -> usize {
    let nulls = rows.div_ceil(8);
    let values = match data_type {
        DataType::Boolean => rows.div_ceil(8),
        t => match t.primitive_width() {
            Some(width) => rows.saturating_mul(width),
            None => stored.max(rows.saturating_mul(4)),
        },
    };
    values.saturating_add(nulls)
}

/// Decodes table columns `columns` of row group `g`, in that order.
fn decode(
    path: &Path,
    schema: &SchemaRef,
    groups: &RowGroups,
    g: usize,
    columns: &[usize],
) -> Result<Vec<ArrayRef>, TableError> {
    let file = File::open(path).map_err(|e| TableError::io(path, e))?;
    let roots: Vec<usize> = columns.iter().filter_map(|&c| groups.roots[c]).collect();
    let read = || -> Result<RecordBatch, TableError> {
        let builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(file, groups.metadata.clone());
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
        let reader = builder
            .with_row_groups(vec![g])
            .with_projection(mask)
            .with_batch_size(groups.groups[g].rows.clamp(1, 65_536))
            .build()
            .map_err(TableError::parquet)?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(TableError::arrow)?;
        concat_batches(&schema, &batches).map_err(TableError::arrow)
    };
    // A damaged file is an error, never a panic of the query.
    let batch = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .map_err(|_| TableError::Parquet(format!("{}: the reader panicked", path.display())))??;
    columns
        .iter()
        .map(|&c| {
            let name = schema.field(c).name();
            batch.column_by_name(name).cloned().ok_or_else(|| {
                TableError::Schema(format!("{}: {name} not decoded", path.display()))
            })
        })
        .collect()
}

fn ascending(array: &ArrayRef) -> bool {
    let Some(values) = array.as_primitive_opt::<Int64Type>() else {
        return false;
    };
    values.null_count() == 0 && values.values().windows(2).all(|w| w[0] <= w[1])
}

/// The rows of a row group within the time bounds: a range of sorted rows, or a mask (a row
/// without a time is kept: the query's filter decides).
enum Cut {
    Range(usize, usize),
    Mask(BooleanArray),
}

impl Cut {
    fn of(time: &ArrayRef, sorted: bool, lo: i64, hi: i64) -> Self {
        let values = time.as_primitive::<Int64Type>();
        if sorted {
            let v = values.values();
            let start = v.partition_point(|&t| t < lo);
            let end = v.partition_point(|&t| t <= hi);
            return Cut::Range(start, end.max(start));
        }
        Cut::Mask(
            values
                .iter()
                .map(|t| Some(t.is_none_or(|t| t >= lo && t <= hi)))
                .collect(),
        )
    }

    fn rows(&self) -> usize {
        match self {
            Cut::Range(start, end) => end - start,
            Cut::Mask(mask) => mask.true_count(),
        }
    }

    fn apply(&self, array: &ArrayRef) -> Result<ArrayRef, TableError> {
        match self {
            Cut::Range(start, end) => Ok(array.slice(*start, end - start)),
            Cut::Mask(mask) => filter(array, mask).map_err(TableError::arrow),
        }
    }
}
