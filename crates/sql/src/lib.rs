//! # sql: the Pinot SQL dialect on DataFusion
//!
//! The query side of the realtime table: what a Pinot broker did in the original. A query in
//! Pinot's dialect is rewritten to DataFusion SQL ([`dialect`]), planned against the table's
//! current snapshot with rtap's functions ([`functions`]), run under limits, and answered in
//! Pinot's broker response shape ([`response`]) so Pinot clients work unchanged. Read-only:
//! anything but a query is refused before it is planned. Knows nothing of HTTP or Kafka.
//!
//! Every query is bounded, so no query can take rtap down ([`engine`], [`limits`],
//! [`bounded`]): the text's length and nesting, how many run at once and wait, the time
//! (rewrite, planning and execution all inside it, on a runtime of their own so the HTTP
//! runtime never waits behind a query), the memory of each query and of all together
//! (DataFusion's memory pool; sorts and aggregates spill), what the functions that multiply
//! their input may produce, and the rows and bytes of the answer.
//!
//! Layout:
//! - [`engine`]: [`SqlEngine`], its runtime and one query's life.
//! - `plan_cache`: plans of recently run query texts, up to where the moment of the query
//!   matters.
//! - [`limits`]: the concurrency gate and the per-query memory pool.
//! - [`bounded`]: `range`, `repeat`, `lpad` & co. with a bound on what they make.
//! - [`dialect`], [`functions`], [`response`]: Pinot's language in, Pinot's answer out.

pub mod bounded;
mod coerce;
mod concat_op;
pub mod dialect;
pub mod engine;
mod expansion;
pub mod functions;
pub mod json_columns;
mod json_match;
pub mod limits;
pub mod options;
mod pinot_functions;
mod plan_cache;
pub mod response;
pub mod shape;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;

pub use dialect::Grain;
pub use engine::{Lane, SqlEngine};
pub use functions::NowMs;
pub use plan_cache::PlanCacheStats;

/// Settings of the SQL engine; every limit is one of these keys (`[sql]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// A query running longer than this (waiting, rewrite, planning and execution) is cancelled
    /// (Pinot error 250).
    pub timeout_ms: u64,
    /// Results are cut at this many rows (`partialResult: true`).
    pub max_rows: usize,
    /// ... and at about this many bytes of result data.
    pub max_response_bytes: usize,
    /// Longest SQL text accepted.
    pub max_sql_bytes: usize,
    /// Deepest nesting of parentheses accepted.
    pub max_nesting_depth: usize,
    /// Most operators (`+`, `=`, `AND`, ...) in one query: a long chain of them is an
    /// expression tree as deep as it is long.
    pub max_operators: usize,
    /// Most table reads of a query once its CTEs are expanded, and most nodes of its plan
    /// (each reference to a CTE is a copy of it: a few lines of CTEs that each read the one
    /// before twice expand to millions, built while planning, where the time limit cannot
    /// stop it).
    pub max_plan_nodes: usize,
    /// Memory all running queries may hold together (sorts, aggregates, joins; they spill to
    /// disk where DataFusion can), in bytes.
    pub memory_limit_bytes: usize,
    /// Memory one query may hold.
    pub query_memory_bytes: usize,
    /// Queries from `/query/sql` running at once ...
    pub max_concurrent: usize,
    /// ... and waiting for a turn; past that a query is refused at once as "server busy"
    /// (Pinot error 211).
    pub max_queued: usize,
    /// Most a query's functions that multiply their input (`range`, `generate_series`,
    /// `repeat`, `lpad`, `rpad`, `array_repeat`, `array_resize`, `replace`, `regexp_replace`,
    /// `concat`, `concat_ws`, `overlay`, `array_to_string`) may make, all calls together: bytes
    /// of text, or elements of lists.
    pub max_function_output: usize,
    /// Largest single value one of those functions may make (bytes of text, or elements of a
    /// list): a join can copy one value into every row of a batch.
    pub max_value_size: usize,
    /// Most row pairs a join without an equality key (a cross join, a join on `<`) may
    /// compare, from the sizes of its two sides: such a join can work for hours on one batch
    /// without a moment where it could be stopped.
    pub max_join_pairs: u64,
    /// Threads of the runtime queries run on (0: one per core).
    pub threads: usize,
    /// Parquet footers and page indexes of sealed segments kept in memory (a byte-bounded LRU),
    /// so queries do not parse them again; 0 keeps none.
    pub metadata_cache_bytes: usize,
    /// Decoded columns of sealed segments kept in memory (least recently used out), so the
    /// newest minutes of a live table (small young files asked about every second) are not
    /// decompressed and decoded on every query; 0 keeps none.
    pub column_cache_bytes: usize,
    /// Rows a `/query/sql` selection or group-by without LIMIT answers (Pinot's default LIMIT
    /// 10); 0 answers every row (up to `max_rows`).
    pub default_limit: usize,
    /// Plans of this many recently run query texts kept (the dashboard and clients repeat the
    /// same queries), so a repeated query skips the rewrite, parsing and analysis, and the
    /// optimizer where nothing in it depends on the moment (no `ago()`, `now()`, parameters or
    /// bounded functions, which are volatile); 0 keeps none.
    pub plan_cache_entries: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            timeout_ms: 10_000,
            max_rows: 100_000,
            max_response_bytes: 32 * 1024 * 1024,
            max_sql_bytes: 256 * 1024,
            max_nesting_depth: 64,
            max_operators: 1_000,
            max_plan_nodes: 10_000,
            memory_limit_bytes: 512 * 1024 * 1024,
            query_memory_bytes: 256 * 1024 * 1024,
            max_concurrent: 2,
            max_queued: 8,
            max_function_output: 4_000_000,
            max_value_size: 65_536,
            max_join_pairs: 100_000_000,
            threads: 0,
            metadata_cache_bytes: 32 * 1024 * 1024,
            column_cache_bytes: 16 * 1024 * 1024,
            default_limit: 10,
            plan_cache_entries: 128,
        }
    }
}

impl SqlConfig {
    /// Checks every value; the message names the key and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        let at_least = |name: &str, value: usize, min: usize| {
            if value < min {
                Err(format!("{name} must be at least {min}, got {value}"))
            } else {
                Ok(())
            }
        };
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be at least 1, got 0".into());
        }
        at_least("max_rows", self.max_rows, 1)?;
        at_least("max_response_bytes", self.max_response_bytes, 1024)?;
        at_least("max_sql_bytes", self.max_sql_bytes, 64)?;
        at_least("max_nesting_depth", self.max_nesting_depth, 4)?;
        at_least("max_operators", self.max_operators, 16)?;
        at_least("max_plan_nodes", self.max_plan_nodes, 16)?;
        at_least("memory_limit_bytes", self.memory_limit_bytes, 1024 * 1024)?;
        at_least("query_memory_bytes", self.query_memory_bytes, 1024 * 1024)?;
        if self.query_memory_bytes > self.memory_limit_bytes {
            return Err(format!(
                "query_memory_bytes ({}) must not be over memory_limit_bytes ({})",
                self.query_memory_bytes, self.memory_limit_bytes
            ));
        }
        at_least("max_concurrent", self.max_concurrent, 1)?;
        at_least("max_function_output", self.max_function_output, 1)?;
        at_least("max_value_size", self.max_value_size, 64)?;
        if self.max_join_pairs == 0 {
            return Err("max_join_pairs must be at least 1, got 0".into());
        }
        if self.plan_cache_entries > 4_096 {
            return Err(format!(
                "plan_cache_entries must be from 0 (none) to 4096, got {}",
                self.plan_cache_entries
            ));
        }
        if self.threads > 256 {
            return Err(format!(
                "threads must be from 0 (one per core) to 256, got {}",
                self.threads
            ));
        }
        Ok(())
    }
}

/// Why a query gave no result. Each kind maps to a Pinot error code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SqlError {
    #[error("SQLParsingError: {0}")]
    Parse(String),
    #[error("QueryValidationError: {0}")]
    Refused(String),
    #[error("UnknownColumnError: {0}")]
    UnknownColumn(String),
    #[error("TableDoesNotExistError: {0}")]
    UnknownTable(String),
    #[error("QueryValidationError: {0}")]
    Invalid(String),
    #[error("QueryExecutionError: {0}")]
    Execution(String),
    #[error("ExecutionTimeoutError: query did not finish within {0} ms")]
    Timeout(u64),
    /// Too many queries running and waiting.
    #[error("ServerOutOfCapacityError: {0}")]
    Busy(String),
    /// The query (or all queries together) needed more memory than allowed.
    #[error("ServerResourceLimitExceededError: {0}")]
    ResourceLimit(String),
}

impl SqlError {
    /// Pinot's error code for this kind of error.
    pub fn pinot_code(&self) -> i32 {
        match self {
            SqlError::Parse(_) => 150,
            SqlError::UnknownTable(_) => 190,
            SqlError::Execution(_) => 200,
            SqlError::Busy(_) => 211,
            SqlError::ResourceLimit(_) => 245,
            SqlError::Timeout(_) => 250,
            SqlError::Refused(_) | SqlError::Invalid(_) => 700,
            SqlError::UnknownColumn(_) => 710,
        }
    }

    fn from_datafusion(e: DataFusionError) -> Self {
        let text = e.to_string();
        if text.contains("spilling process has exceeded") {
            return SqlError::ResourceLimit(
                "the query's spill files reached their limit (four times sql.memory_limit_bytes, \
                 all queries together)"
                    .into(),
            );
        }
        match e.find_root() {
            DataFusionError::SQL(p, _) => SqlError::Parse(p.to_string()),
            DataFusionError::SchemaError(s, _) => {
                let msg = s.to_string();
                if msg.contains("No field named") || msg.contains("not found") {
                    SqlError::UnknownColumn(msg)
                } else {
                    SqlError::Invalid(msg)
                }
            }
            DataFusionError::Plan(m) => {
                if m.contains("table") && m.contains("not found") {
                    SqlError::UnknownTable(format!("{m} (the table is `orders`)"))
                } else {
                    SqlError::Invalid(m.clone())
                }
            }
            DataFusionError::ResourcesExhausted(m) => {
                SqlError::ResourceLimit(limits::memory_message(m))
            }
            DataFusionError::NotImplemented(m) => SqlError::Invalid(format!("not supported: {m}")),
            DataFusionError::Execution(m)
                if m.contains(bounded::OVER_LIMIT) || m.contains(bounded::OVER_VALUE) =>
            {
                SqlError::ResourceLimit(m.clone())
            }
            other => SqlError::Execution(other.to_string()),
        }
    }
}

/// Segments a query touched, as Pinot's broker response counts them (the rows still in
/// memory are one consuming segment).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentCounts {
    /// Segments of the table when the query ran.
    pub queried: u64,
    /// Segments the query read (the others were skipped by their time range).
    pub processed: u64,
    pub consuming_queried: u64,
    pub consuming_processed: u64,
}

/// The result of a query, with what the Pinot response reports about it.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Rows read from the table (after segment and row-group pruning).
    pub docs_scanned: u64,
    /// Rows in the table at the time of the query.
    pub total_docs: u64,
    pub segments: SegmentCounts,
    /// More rows (or bytes) than the limits: the result was cut.
    pub truncated: bool,
    /// Why it was cut, naming the limit.
    pub truncated_reason: Option<String>,
    pub time_used_ms: u64,
    pub grain: Grain,
    /// The answer's JSON is cut at this many bytes (`sql.max_response_bytes`, or less when the
    /// query's options ask for less).
    pub max_response_bytes: usize,
    /// The query's `SET` / `OPTION(...)` options.
    pub options: options::QueryOptions,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}
