//! # sql: the Pinot SQL dialect on DataFusion
//!
//! The query side of the realtime table: what a Pinot broker did in the original. A query in
//! Pinot's dialect is rewritten to DataFusion SQL ([`dialect`]), planned against the table's
//! current snapshot with rtap's functions ([`functions`]), run under a time limit and a row
//! limit, and answered in Pinot's broker response shape ([`response`]) so Pinot clients work
//! unchanged. Read-only: anything but a query is refused before it is planned. Knows nothing of
//! HTTP or Kafka.

pub mod dialect;
pub mod functions;
pub mod response;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::physical_plan::{collect, ExecutionPlan};
use table::{RealtimeTable, TableScan};

pub use dialect::Grain;
pub use functions::NowMs;

/// Settings of the SQL engine.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// A query running longer than this is cancelled (Pinot error 250).
    pub timeout_ms: u64,
    /// Results are cut at this many rows (`partialResult: true`).
    pub max_rows: usize,
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            timeout_ms: 10_000,
            max_rows: 100_000,
        }
    }
}

impl SqlConfig {
    /// Checks every value; the message names the key and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be at least 1, got 0".into());
        }
        if self.max_rows == 0 {
            return Err("max_rows must be at least 1, got 0".into());
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
    #[error("QueryValidationError: {0}")]
    Invalid(String),
    #[error("QueryExecutionError: {0}")]
    Execution(String),
    #[error("ExecutionTimeoutError: query did not finish within {0} ms")]
    Timeout(u64),
}

impl SqlError {
    /// Pinot's error code for this kind of error.
    pub fn pinot_code(&self) -> i32 {
        match self {
            SqlError::Parse(_) => 150,
            SqlError::Execution(_) => 200,
            SqlError::Timeout(_) => 250,
            SqlError::Refused(_) | SqlError::Invalid(_) => 700,
            SqlError::UnknownColumn(_) => 710,
        }
    }

    fn from_datafusion(e: DataFusionError) -> Self {
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
                    SqlError::Invalid(format!("{m} (the table is `orders`)"))
                } else {
                    SqlError::Invalid(m.clone())
                }
            }
            DataFusionError::NotImplemented(m) => SqlError::Invalid(format!("not supported: {m}")),
            other => SqlError::Execution(other.to_string()),
        }
    }
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
    /// More rows than the row limit: the result was cut.
    pub truncated: bool,
    pub time_used_ms: u64,
    pub grain: Grain,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Plans and runs queries against one realtime table, registered as `orders`.
pub struct SqlEngine {
    ctx: SessionContext,
    table: Arc<RealtimeTable>,
    catalog: dialect::Catalog,
    config: SqlConfig,
    now_ms: NowMs,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The statements a read-only endpoint accepts.
fn first_keyword_allowed(sql: &str) -> Result<(), SqlError> {
    // Skip white space, parentheses and comments before the first word.
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(comment) = trimmed.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = trimmed.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            rest = trimmed;
            break;
        }
    }
    let first = rest
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    const WRITES: &[&str] = &[
        "INSERT",
        "UPDATE",
        "DELETE",
        "DROP",
        "CREATE",
        "ALTER",
        "TRUNCATE",
        "MERGE",
        "COPY",
        "SET",
        "RESET",
        "GRANT",
        "REVOKE",
        "REPLACE",
        "UPSERT",
        "ATTACH",
        "DETACH",
        "VACUUM",
        "CALL",
        "EXECUTE",
        "PREPARE",
        "DEALLOCATE",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "USE",
    ];
    match first.as_str() {
        "" => Err(SqlError::Parse("the query is empty".into())),
        w if WRITES.contains(&w) => Err(SqlError::Refused(format!(
            "{w} statements are refused: /query/sql is read-only and runs SELECT queries only"
        ))),
        // Anything else goes to the parser, which says what is wrong; DataFusion's SQL options
        // refuse any statement that is not a query all the same.
        _ => Ok(()),
    }
}

fn docs_scanned(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let children = plan.children();
    if children.is_empty() {
        return plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0) as u64;
    }
    children.into_iter().map(docs_scanned).sum()
}

impl SqlEngine {
    pub fn new(
        table: Arc<RealtimeTable>,
        config: SqlConfig,
        now_ms: NowMs,
    ) -> Result<Self, SqlError> {
        let session = SessionConfig::new()
            .with_target_partitions(2)
            .with_information_schema(false)
            .set_bool("datafusion.execution.parquet.pushdown_filters", true);
        let ctx = SessionContext::new_with_config(session);
        ctx.register_table("orders", Arc::new(TableScan::new(table.clone())))
            .map_err(SqlError::from_datafusion)?;
        for f in functions::all(now_ms.clone()) {
            ctx.register_udf(f);
        }
        let catalog = dialect::Catalog::new("orders", table.schema());
        Ok(SqlEngine {
            ctx,
            table,
            catalog,
            config,
            now_ms,
        })
    }

    /// "Now" as `ago()` sees it.
    pub fn now_ms(&self) -> i64 {
        self.now_ms.now_ms()
    }

    pub fn table(&self) -> &Arc<RealtimeTable> {
        &self.table
    }

    pub fn config(&self) -> &SqlConfig {
        &self.config
    }

    /// Runs one query of the Pinot dialect; `params` bind `$1`, `$2`, ... as values (never as
    /// SQL text).
    pub async fn run(&self, sql: &str, params: Vec<ScalarValue>) -> Result<QueryOutput, SqlError> {
        let started = Instant::now();
        first_keyword_allowed(sql)?;
        let rewritten = dialect::rewrite(sql, &self.catalog)?;
        tracing::debug!(sql = %rewritten.sql, "rewritten query");
        let total_docs = self.table.snapshot().rows();
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let max_rows = self.config.max_rows;
        let work = async {
            let mut df = self
                .ctx
                .sql_with_options(&rewritten.sql, options)
                .await
                .map_err(SqlError::from_datafusion)?;
            if !params.is_empty() {
                df = df
                    .with_param_values(params)
                    .map_err(SqlError::from_datafusion)?;
            }
            let df = df
                .limit(0, Some(max_rows + 1))
                .map_err(SqlError::from_datafusion)?;
            let plan = df
                .create_physical_plan()
                .await
                .map_err(SqlError::from_datafusion)?;
            let batches = collect(plan.clone(), self.ctx.task_ctx())
                .await
                .map_err(SqlError::from_datafusion)?;
            Ok::<_, SqlError>((plan, batches))
        };
        let (plan, mut batches) =
            tokio::time::timeout(Duration::from_millis(self.config.timeout_ms), work)
                .await
                .map_err(|_| SqlError::Timeout(self.config.timeout_ms))??;
        let schema = plan.schema();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let truncated = rows > max_rows;
        if truncated {
            let mut keep = max_rows;
            batches = batches
                .into_iter()
                .filter_map(|b| {
                    let n = b.num_rows().min(keep);
                    keep -= n;
                    (n > 0).then(|| b.slice(0, n))
                })
                .collect();
        }
        Ok(QueryOutput {
            schema,
            batches,
            docs_scanned: docs_scanned(&plan),
            total_docs,
            truncated,
            time_used_ms: started.elapsed().as_millis() as u64,
            grain: rewritten.grain,
        })
    }

    /// Runs a query and answers in Pinot's broker response shape; errors are in `exceptions`.
    pub async fn query_pinot(&self, sql: &str) -> serde_json::Value {
        let started = Instant::now();
        match self.run(sql, Vec::new()).await {
            Ok(out) => response::broker_response(&out),
            Err(e) => response::broker_error(&e, started.elapsed().as_millis() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_queries_pass_the_guard() {
        assert!(first_keyword_allowed("-- a comment\n/* another */ (SELECT 1)").is_ok());
        assert!(first_keyword_allowed("  with x as (select 1) select * from x").is_ok());
        assert!(matches!(
            first_keyword_allowed("-- hi\nDELETE FROM orders"),
            Err(SqlError::Refused(_))
        ));
        assert!(matches!(
            first_keyword_allowed("-- only a comment"),
            Err(SqlError::Parse(_))
        ));
    }
}
