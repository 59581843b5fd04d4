//! The realtime table as a DataFusion table: each scan takes one snapshot, keeps only the sealed
//! segments whose time range overlaps the query's `time_ms` bounds (the last minute of a month
//! of data touches only the newest files), reads those as Parquet with the query's filters
//! pushed down (row-group statistics, bloom filters), and adds the in-memory batches.
//!
//! A filter `key = 'x'` (or `key IN (...)`) on a column with a lookup index (see
//! [`crate::lookup`]) whose carried columns cover the query's columns is answered from the
//! indexes of the segments that have one: a few KB each instead of a scan; the rest (segments
//! without an index, the in-memory batches) is scanned as usual.
//!
//! With a column cache ([`TableScan::with_column_cache`], see [`crate::column_cache`]), the
//! segments whose needed columns are kept decoded in memory (the newest minutes, asked about
//! every second) are answered from it, cut to the time bounds, and only the others are read.
//!
//! Segments never change once written (a merge writes a new file), so their Parquet footers and
//! page indexes are read once and kept in DataFusion's file metadata cache (a byte-bounded LRU,
//! `sql.metadata_cache_bytes`): a point lookup over every segment then costs the bloom filter
//! checks, not a footer parse per file per query. The cache knows a file by its path and size
//! (`PartitionedFile::new` sets no modification time): that is safe because a table never writes
//! two files under one name within a process (segment ids only grow; a restart that rolls back to
//! a checkpoint builds a new SQL engine, and with it a new cache).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::kernels::cmp::eq;
use datafusion::arrow::compute::{filter_record_batch, SortOptions};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{
    project_schema, Column, ColumnStatistics, DFSchema, DataFusionError, Result, ScalarValue,
    Statistics,
};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::FileSource;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    lit, BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType,
};
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalSortExpr};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::SortOrderPushdownResult;

use crate::column_cache::{CachedRowsExec, ColumnCache, ColumnCacheStats, Want};
use crate::lookup::{Budget, LookupError, LookupIndex, ROW_COLUMN};
use crate::segment::SegmentRef;
use crate::{RealtimeTable, StorageError, TableError};

/// The DataFusion view of a [`RealtimeTable`].
#[derive(Debug, Clone)]
pub struct TableScan {
    table: Arc<RealtimeTable>,
    time_column: String,
    cache: Option<Arc<ColumnCache>>,
}

impl TableScan {
    pub fn new(table: Arc<RealtimeTable>) -> Self {
        let time_column = table.schema().field(table.time_column()).name().clone();
        TableScan {
            table,
            time_column,
            cache: None,
        }
    }

    /// Keeps decoded columns of sealed segments in memory, at most `bytes` of them (see
    /// [`crate::column_cache`]); 0 keeps none.
    pub fn with_column_cache(mut self, bytes: usize) -> Self {
        self.cache = (bytes > 0).then(|| Arc::new(ColumnCache::new(bytes)));
        self
    }

    /// What the column cache holds and did (zeros without one).
    pub fn column_cache_stats(&self) -> ColumnCacheStats {
        self.cache.as_ref().map(|c| c.stats()).unwrap_or_default()
    }

    /// The column cache, if it keeps any.
    pub fn column_cache(&self) -> Option<Arc<ColumnCache>> {
        self.cache.clone()
    }

    /// What DataFusion may know of a segment file without opening it: the exact range of its
    /// time column (nothing else: with no row count, no answer is ever taken from these
    /// statistics alone). Only for a time column without NULLs, whose range is exact.
    fn time_statistics(&self, segment: &SegmentRef) -> Statistics {
        let schema = self.table.schema();
        let mut statistics = Statistics::new_unknown(schema);
        let time = |v: i64| Precision::Exact(ScalarValue::Int64(Some(v)));
        let field = schema.field(self.table.time_column());
        if field.data_type() == &DataType::Int64 && !field.is_nullable() {
            statistics.column_statistics[self.table.time_column()] =
                ColumnStatistics::new_unknown()
                    .with_min_value(time(segment.entry.min_time_ms))
                    .with_max_value(time(segment.entry.max_time_ms));
        }
        statistics
    }

    /// The Parquet source reading newest data first: files by their time range, newest first
    /// (DataFusion's shared queue of files, ordered by [`Self::time_statistics`]), and each
    /// file's row groups (sorted by time) from the last. The rows a scan returns are unordered
    /// either way; but `ORDER BY time DESC LIMIT n` (the newest orders) fills its top n from the
    /// first row groups each partition reads, and the threshold it then pushes into the scan (a
    /// dynamic filter) skips older files by their statistics and older row groups by their own,
    /// instead of reading them all. (With another filter that reads a page index, DataFusion 55
    /// does not skip row groups by the threshold: a few more are read.) A query for the oldest
    /// rows reads in the worst order: correct, not faster than before.
    fn newest_first(&self, source: ParquetSource) -> Result<Arc<dyn FileSource>> {
        let schema = self.table.schema();
        let source: Arc<dyn FileSource> = Arc::new(source);
        let newest = PhysicalSortExpr::new(
            Arc::new(PhysicalColumn::new(
                &self.time_column,
                self.table.time_column(),
            )),
            SortOptions {
                descending: true,
                nulls_first: false,
            },
        );
        let plain = EquivalenceProperties::new(schema.clone());
        Ok(match source.try_pushdown_sort(&[newest], &plain)? {
            SortOrderPushdownResult::Exact { inner }
            | SortOrderPushdownResult::Inexact { inner } => inner,
            SortOrderPushdownResult::Unsupported => source,
        })
    }
}

fn int_literal(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => Some(*v),
        Expr::Literal(ScalarValue::Int32(Some(v)), _) => Some(i64::from(*v)),
        Expr::Literal(ScalarValue::UInt64(Some(v)), _) => i64::try_from(*v).ok(),
        Expr::Cast(c) => int_literal(&c.expr),
        Expr::TryCast(c) => int_literal(&c.expr),
        _ => None,
    }
}

fn is_column(e: &Expr, name: &str) -> bool {
    matches!(e, Expr::Column(c) if c.name == name)
}

/// The inclusive `[lo, hi]` range of the time column that `filters` allow (the whole range when
/// they do not bound it). Only conjunctions of comparisons with constants are understood; any
/// other filter is still applied row by row, just not used to skip segments.
pub fn time_bounds(filters: &[Expr], time_column: &str) -> (i64, i64) {
    let mut lo = i64::MIN;
    let mut hi = i64::MAX;
    for filter in filters {
        for conjunct in split_conjunction(filter) {
            match conjunct {
                Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                    let (op, value) = if is_column(left, time_column) {
                        match int_literal(right) {
                            Some(v) => (*op, v),
                            None => continue,
                        }
                    } else if is_column(right, time_column) {
                        match (int_literal(left), op.swap()) {
                            (Some(v), Some(op)) => (op, v),
                            _ => continue,
                        }
                    } else {
                        continue;
                    };
                    match op {
                        Operator::Gt => lo = lo.max(value.saturating_add(1)),
                        Operator::GtEq => lo = lo.max(value),
                        Operator::Lt => hi = hi.min(value.saturating_sub(1)),
                        Operator::LtEq => hi = hi.min(value),
                        Operator::Eq => {
                            lo = lo.max(value);
                            hi = hi.min(value);
                        }
                        _ => {}
                    }
                }
                Expr::Between(b) if !b.negated && is_column(&b.expr, time_column) => {
                    if let (Some(l), Some(h)) = (int_literal(&b.low), int_literal(&b.high)) {
                        lo = lo.max(l);
                        hi = hi.min(h);
                    }
                }
                _ => {}
            }
        }
    }
    (lo, hi)
}

/// Most keys one query looks up (`key IN (...)`); more are scanned for.
const MAX_LOOKUP_KEYS: usize = 256;
/// Most rows lookups return to one query; a key with more is scanned for.
const MAX_LOOKUP_ROWS: usize = 65_536;
/// Most bytes lookups hold for one query (they are read while planning, outside the query's
/// memory pool); more is scanned for.
const MAX_LOOKUP_BYTES: usize = 16 << 20;
/// Most index blocks lookups read for one query (keys x segments); more is scanned for.
const MAX_LOOKUP_BLOCKS: usize = 4_096;

fn utf8_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(v))
            | ScalarValue::LargeUtf8(Some(v))
            | ScalarValue::Utf8View(Some(v)),
            _,
        ) => Some(v.as_str()),
        _ => None,
    }
}

/// The column and keys of `column = 'literal'`, `column IN ('a', 'b')` or an OR of those on
/// one column (DataFusion rewrites a short IN list into ORs).
fn key_filter(e: &Expr) -> Option<(String, Vec<String>)> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (left.as_ref(), right.as_ref()) {
            (Expr::Column(c), v) | (v, Expr::Column(c)) => {
                utf8_literal(v).map(|v| (c.name.clone(), vec![v.to_string()]))
            }
            _ => None,
        },
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let (column, mut keys) = key_filter(left)?;
            let (other, more) = key_filter(right)?;
            if other != column || keys.len() + more.len() > MAX_LOOKUP_KEYS {
                return None;
            }
            keys.extend(more);
            Some((column, keys))
        }
        Expr::InList(list) if !list.negated => match list.expr.as_ref() {
            Expr::Column(c) if list.list.len() <= MAX_LOOKUP_KEYS => list
                .list
                .iter()
                .map(|v| utf8_literal(v).map(str::to_string))
                .collect::<Option<Vec<String>>>()
                .map(|keys| (c.name.clone(), keys)),
            _ => None,
        },
        _ => None,
    }
}

/// The conjuncts of `filters` that restrict a column to a few keys (see [`key_filter`]): each
/// is a column and the set of keys one of which every answer row has in that column.
pub fn key_filters(filters: &[Expr]) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for filter in filters {
        for conjunct in split_conjunction(filter) {
            if let Some((column, mut keys)) = key_filter(conjunct) {
                keys.sort_unstable();
                keys.dedup();
                out.push((column, keys));
            }
        }
    }
    out
}

/// Whether `index` carries every column of `names`: it can answer a scan of them (the row
/// column is a position in the segment, never answered from an index).
fn covers<'a>(index: &LookupIndex, mut names: impl Iterator<Item = &'a str>) -> bool {
    names.all(|name| name != ROW_COLUMN && index.schema().index_of(name).is_ok())
}

/// Answers what it can of a scan from the segments' lookup indexes: when `filters` restrict a
/// key column to a few values and a segment's index on it carries every column of `projected`,
/// that segment's matching rows come from its index. Returns those rows (as `projected`) and
/// the segments still to scan, or `None` when no index helps or the lookups went over the
/// query's [`Budget`] (then everything is scanned, as without indexes). A segment whose index
/// turns out damaged is scanned, and its index not used again.
fn lookups<'a>(
    segments: &[&'a SegmentRef],
    filters: &[Expr],
    projected: &SchemaRef,
) -> Option<(Vec<RecordBatch>, Vec<&'a SegmentRef>)> {
    let candidates = key_filters(filters);
    if candidates.is_empty() {
        return None;
    }
    let mut found = Vec::new();
    let mut rest = Vec::new();
    let mut budget = Budget {
        rows: MAX_LOOKUP_ROWS,
        bytes: MAX_LOOKUP_BYTES,
        blocks: MAX_LOOKUP_BLOCKS,
    };
    let mut used = false;
    for &segment in segments {
        let index = candidates.iter().find_map(|(column, keys)| {
            let index = segment.lookup(column)?;
            let names = projected.fields().iter().map(|f| f.name().as_str());
            covers(&index, names).then_some((index, column, keys))
        });
        let Some((index, column, keys)) = index else {
            rest.push(segment);
            continue;
        };
        match segment_lookups(&index, keys, &mut budget, projected) {
            Ok(batches) => {
                used = true;
                found.extend(batches);
            }
            Err(LookupError::OverBudget) => {
                tracing::debug!("lookups over the query's budget: scanning instead");
                return None;
            }
            Err(LookupError::Unreadable(e)) => {
                if matches!(e, TableError::Storage(StorageError::Corrupt { .. })) {
                    segment.disable_lookup(column);
                }
                tracing::warn!(error = %e, "a lookup index is unreadable: its segment is scanned instead");
                rest.push(segment);
            }
        }
    }
    used.then_some((found, rest))
}

/// The rows whose `column` equals `key`, with `columns` (by name, in that order): what a scan
/// filtered by `column = 'key'` returns, taken without planning a query, from the lookup index
/// of every sealed segment (see [`lookups`]) and a filter over the rows in memory, all of one
/// snapshot. `None` when that is not possible (a segment without a usable index on `column`
/// that carries `columns`, or lookups over a query's [`Budget`]): the caller asks SQL, which
/// scans what the indexes cannot answer.
pub fn key_rows(
    table: &RealtimeTable,
    column: &str,
    key: &str,
    columns: &[&str],
) -> Result<Option<Vec<RecordBatch>>> {
    let schema = table.schema();
    let indices = columns
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let projected: SchemaRef = Arc::new(schema.project(&indices)?);
    let snapshot = table.snapshot();
    // Every segment must be answerable before any index is read: else SQL would read the same
    // blocks again for the segments that are.
    let covered = |segment: &SegmentRef| {
        segment
            .lookup(column)
            .is_some_and(|index| covers(&index, columns.iter().copied()))
    };
    if !snapshot.segments.iter().all(covered) {
        return Ok(None);
    }
    let mut found = Vec::new();
    if !snapshot.segments.is_empty() {
        let segments: Vec<&SegmentRef> = snapshot.segments.iter().collect();
        let filter = [Expr::Column(Column::new_unqualified(column)).eq(lit(key))];
        match lookups(&segments, &filter, &projected) {
            Some((rows, rest)) if rest.is_empty() => found = rows,
            _ => return Ok(None),
        }
    }
    let at = schema.index_of(column)?;
    let target = ScalarValue::Utf8(Some(key.to_string()))
        .cast_to(schema.field(at).data_type())?
        .to_scalar()?;
    for batch in &snapshot.memory {
        let matches = eq(batch.column(at), &target)?;
        if matches.true_count() > 0 {
            found.push(project(&filter_record_batch(batch, &matches)?, &projected)?);
        }
    }
    Ok(Some(found))
}

/// The rows of one segment's index for `keys`, as `projected`.
fn segment_lookups(
    index: &LookupIndex,
    keys: &[String],
    budget: &mut Budget,
    projected: &SchemaRef,
) -> std::result::Result<Vec<RecordBatch>, LookupError> {
    let mut out = Vec::new();
    for key in keys {
        for batch in index.lookup(key, budget)? {
            out.push(project(&batch, projected).map_err(|e| {
                LookupError::Unreadable(TableError::Schema(format!("lookup: {e}")))
            })?);
        }
    }
    Ok(out)
}

/// `batch` (a lookup index's columns) as the columns of `schema`, by name.
fn project(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            batch
                .column_by_name(f.name())
                .cloned()
                .ok_or_else(|| DataFusionError::Internal(format!("lookup: no {}", f.name())))
        })
        .collect::<Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

#[async_trait]
impl TableProvider for TableScan {
    fn schema(&self) -> SchemaRef {
        self.table.schema().clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used for pruning, re-checked by DataFusion above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let snapshot = self.table.snapshot();
        let (lo, hi) = time_bounds(filters, &self.time_column);
        let partitions = state.config().target_partitions().max(1);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        let mut overlapping: Vec<&SegmentRef> = snapshot
            .segments
            .iter()
            .filter(|s| s.overlaps(lo, hi))
            .collect();
        let projected = project_schema(&schema, projection)?;
        if let Some((found, rest)) = lookups(&overlapping, filters, &projected) {
            overlapping = rest;
            if !found.is_empty() {
                inputs.push(MemorySourceConfig::try_new_exec(
                    &[found],
                    projected.clone(),
                    None,
                )?);
            }
        }
        // Newest segments first, each with its time range as statistics (see `newest_first`).
        overlapping.sort_by_key(|s| std::cmp::Reverse(s.entry.max_time_ms));
        // A scan with a LIMIT (no filter: any rows will do) reads a few row groups as Parquet.
        let cache = (limit.is_none() && !overlapping.is_empty())
            .then_some(self.cache.as_ref())
            .flatten();
        if let Some(cache) = cache {
            let columns: Vec<usize> = match projection {
                Some(p) => p.clone(),
                None => (0..schema.fields().len()).collect(),
            };
            let want = Want {
                schema: &schema,
                projected: &projected,
                projection: &columns,
                time: self.table.time_column(),
                lo,
                hi,
            };
            let served = cache.serve(&snapshot.segments, overlapping, &want);
            overlapping = served.rest;
            if served.segments > 0 {
                inputs.push(Arc::new(CachedRowsExec::new(
                    projected.clone(),
                    served.batches,
                    partitions,
                    served.segments,
                    served.lease,
                )));
            }
        }
        let files: Vec<PartitionedFile> = overlapping
            .iter()
            .map(|s| {
                PartitionedFile::new(s.path.to_string_lossy().to_string(), s.entry.bytes)
                    .with_statistics(Arc::new(self.time_statistics(s)))
            })
            .collect();
        if !files.is_empty() {
            let runtime = state.runtime_env();
            let store = runtime.object_store(ObjectStoreUrl::local_filesystem())?;
            let metadata = runtime.cache_manager.get_file_metadata_cache();
            let mut source = ParquetSource::new(schema.clone())
                .with_bloom_filter_on_read(true)
                .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
                    store, metadata,
                )));
            if let Some(predicate) = conjunction(filters.to_vec()) {
                let df_schema = DFSchema::try_from(schema.clone())?;
                source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
            }
            let source = self.newest_first(source)?;
            let mut groups: Vec<Vec<PartitionedFile>> =
                vec![Vec::new(); partitions.min(files.len())];
            let n = groups.len();
            for (i, f) in files.into_iter().enumerate() {
                groups[i % n].push(f);
            }
            let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
                .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }

        if !snapshot.memory.is_empty() {
            let mut parts: Vec<Vec<_>> = vec![Vec::new(); partitions.min(snapshot.memory.len())];
            let n = parts.len();
            for (i, b) in snapshot.memory.iter().enumerate() {
                parts[i % n].push(b.clone());
            }
            inputs.push(MemorySourceConfig::try_new_exec(
                &parts,
                schema.clone(),
                projection.cloned(),
            )?);
        }

        if inputs.is_empty() {
            return Ok(Arc::new(EmptyExec::new(project_schema(
                &schema, projection,
            )?)));
        }
        UnionExec::try_new(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn bounds_from_comparisons() {
        let f = [col("time_ms")
            .gt(lit(100i64))
            .and(col("time_ms").lt_eq(lit(200i64)))];
        assert_eq!(time_bounds(&f, "time_ms"), (101, 200));
        let f = [lit(50i64).lt(col("time_ms")), col("other").gt(lit(7i64))];
        assert_eq!(time_bounds(&f, "time_ms"), (51, i64::MAX));
        let f = [col("time_ms").between(lit(5i64), lit(9i64))];
        assert_eq!(time_bounds(&f, "time_ms"), (5, 9));
        let f = [col("time_ms")
            .gt(lit(5i64))
            .or(col("time_ms").lt(lit(1i64)))];
        assert_eq!(
            time_bounds(&f, "time_ms"),
            (i64::MIN, i64::MAX),
            "OR is not a bound"
        );
    }
}
