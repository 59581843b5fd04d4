//! [`SqlEngine`]: plans and runs queries against one realtime table, registered as `orders`,
//! each within every limit of [`crate::SqlConfig`].
//!
//! A query's whole life (waiting for a turn, the Pinot rewrite, planning, execution) happens on
//! a runtime of the engine's own, inside the query's time limit: the HTTP runtime only awaits
//! the answer, so `/orders/overview` and the orders API never wait behind SQL, and a query over
//! its time is cancelled (its stream dropped) wherever it is. Results are read batch by batch
//! and cut at the row and byte limits, never collected whole first.
//!
//! Two lanes share the runtime: [`Lane::User`] (`/query/sql`, `rtap query`) and
//! [`Lane::Internal`] (the analytics endpoints' own queries), so the endpoints do not queue
//! behind users' queries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext, TaskContext};
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use futures_util::StreamExt;
use table::{RealtimeTable, TableScan};

use crate::bounded::{Bounded, Budget, Kind, WRAPPED};
use crate::limits::{check_text, Gate, QueryPool};
use crate::options::{self, QueryOptions};
use crate::plan_cache::{self, PlanCache, Planned, Stage};
use crate::{
    coerce, dialect, functions, json_columns, response, shape, NowMs, QueryOutput, SqlConfig,
    SqlError,
};

/// Rows per batch inside queries: smaller batches bound what one batch of a function can make.
const BATCH_ROWS: usize = 4096;

/// Which queue a query waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Queries users send (`/query/sql`): `max_concurrent` at once, `max_queued` waiting.
    User,
    /// rtap's own queries behind the analytics endpoints and the dashboard.
    Internal,
}

struct Inner {
    /// The session with the built-in functions as they are (rtap's own queries).
    ctx: SessionContext,
    /// The built-ins that multiply their input, wrapped afresh for each user query so all its
    /// calls share one budget.
    multiplying: Vec<(ScalarUDF, Kind)>,
    table: Arc<RealtimeTable>,
    catalog: dialect::Catalog,
    config: SqlConfig,
    now_ms: NowMs,
    shared_pool: Arc<dyn MemoryPool>,
    user: Gate,
    internal: Gate,
    plans: PlanCache,
    /// Decoded columns of sealed segments the table's scans keep (`None`: switched off).
    column_cache: Option<Arc<table::column_cache::ColumnCache>>,
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// Plans and runs queries against one realtime table, registered as `orders`.
pub struct SqlEngine {
    inner: Arc<Inner>,
    /// The runtime queries run on (None only while dropping).
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlEngine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Drop for SqlEngine {
    fn drop(&mut self) {
        // Dropped from async code too: never block here.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
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

/// Rows that passed the filter in the table's scans (Pinot's `numDocsScanned`): a scan's own
/// output where the filter is pushed into it, else the output of the filter right above it.
fn docs_scanned(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::datasource::source::{DataSource, DataSourceExec};
    let children = plan.children();
    if let Some(cached) = plan.downcast_ref::<table::column_cache::CachedRowsExec>() {
        // Rows of sealed segments within the time bounds, before the query's other filters.
        return cached.rows() as u64;
    }
    if children.is_empty() {
        // The rows in memory keep no metrics: all of them, or as many as its LIMIT lets through.
        if let Some(memory) = plan
            .downcast_ref::<DataSourceExec>()
            .and_then(|e| e.data_source().downcast_ref::<MemorySourceConfig>())
        {
            let rows: usize = memory
                .partitions()
                .iter()
                .flatten()
                .map(|b| b.num_rows())
                .sum();
            return memory.fetch().map_or(rows, |f| rows.min(f)) as u64;
        }
        return plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0) as u64;
    }
    if plan.name() == "FilterExec" && children.iter().all(|c| is_scan(c)) {
        return plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0) as u64;
    }
    children.into_iter().map(docs_scanned).sum()
}

/// A table scan, possibly behind repartitioning or coalescing, or the union of a table's scans
/// (the segment files, the rows kept decoded, the rows in memory).
fn is_scan(plan: &Arc<dyn ExecutionPlan>) -> bool {
    match plan.children().as_slice() {
        [] => true,
        [only] => {
            matches!(
                plan.name(),
                "RepartitionExec"
                    | "CoalesceBatchesExec"
                    | "CoalescePartitionsExec"
                    | "CooperativeExec"
            ) && is_scan(only)
        }
        several => plan.name() == "UnionExec" && several.iter().all(|c| is_scan(c)),
    }
}

/// Segment files the plan's scans read (after pruning by time), and whether it reads the
/// rows still in memory.
fn segments_read(plan: &Arc<dyn ExecutionPlan>) -> (u64, bool) {
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    if let Some(cached) = plan.downcast_ref::<table::column_cache::CachedRowsExec>() {
        return (cached.segments() as u64, false);
    }
    if let Some(exec) = plan.downcast_ref::<DataSourceExec>() {
        let source = exec.data_source();
        if let Some(files) = source.downcast_ref::<FileScanConfig>() {
            return (
                // A file may be split into byte ranges over several groups: count it once.
                files
                    .file_groups
                    .iter()
                    .flat_map(|g| g.files().iter().map(|f| f.object_meta.location.clone()))
                    .collect::<std::collections::HashSet<_>>()
                    .len() as u64,
                false,
            );
        }
        if source.downcast_ref::<MemorySourceConfig>().is_some() {
            return (0, true);
        }
    }
    plan.children()
        .into_iter()
        .map(segments_read)
        .fold((0, false), |(f, m), (f2, m2)| (f + f2, m || m2))
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
            .with_batch_size(BATCH_ROWS)
            .set_bool("datafusion.execution.parquet.pushdown_filters", true);
        // What spills (sorts, aggregations) may write to temporary files, all queries together:
        // four times their memory.
        let spill = RuntimeEnvBuilder::new()
            .with_max_temp_directory_size(config.memory_limit_bytes as u64 * 4)
            .with_metadata_cache_limit(config.metadata_cache_bytes)
            .build_arc()
            .map_err(SqlError::from_datafusion)?;
        let ctx = SessionContext::new_with_config_rt(session, spill);
        let ctx = {
            let mut state = ctx.state();
            state
                .register_function_rewrite(Arc::new(coerce::PinotComparisons))
                .map_err(SqlError::from_datafusion)?;
            SessionContext::new_with_state(state)
        };
        // The order table as SQL sees it (with Pinot's JSON columns); any other table as stored.
        let scan = TableScan::new(table.clone()).with_column_cache(config.column_cache_bytes);
        let column_cache = scan.column_cache();
        let provider: Arc<dyn TableProvider> = if table.schema() == &ingest::schema::order_schema()
        {
            Arc::new(json_columns::OrdersView::new(scan))
        } else {
            Arc::new(scan)
        };
        let catalog = dialect::Catalog::new("orders", &provider.schema());
        ctx.register_table("orders", provider)
            .map_err(SqlError::from_datafusion)?;
        for f in functions::all(now_ms.clone()) {
            ctx.register_udf(f);
        }
        let multiplying = WRAPPED
            .iter()
            .map(|(name, kind)| Ok(((*ctx.udf(name)?).clone(), *kind)))
            .collect::<Result<Vec<_>, DataFusionError>>()
            .map_err(SqlError::from_datafusion)?;
        let threads = match config.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("rtap-sql")
            // Planning walks expression trees recursively: room for the deepest one allowed.
            .thread_stack_size(64 * 1024 * 1024)
            .enable_all()
            .build()
            .map_err(|e| SqlError::Execution(format!("cannot start the query runtime: {e}")))?;
        Ok(SqlEngine {
            inner: Arc::new(Inner {
                ctx,
                multiplying,
                table,
                catalog,
                shared_pool: Arc::new(GreedyMemoryPool::new(config.memory_limit_bytes)),
                user: Gate::new(config.max_concurrent, config.max_queued),
                internal: Gate::new(config.max_concurrent, usize::MAX),
                plans: PlanCache::new(config.plan_cache_entries),
                column_cache,
                config,
                now_ms,
            }),
            runtime: Some(runtime),
        })
    }

    /// "Now" as `ago()` sees it.
    pub fn now_ms(&self) -> i64 {
        self.inner.now_ms.now_ms()
    }

    pub fn table(&self) -> &Arc<RealtimeTable> {
        &self.inner.table
    }

    pub fn config(&self) -> &SqlConfig {
        &self.inner.config
    }

    /// What the plan cache has done since the start, and holds now.
    pub fn plan_cache_stats(&self) -> crate::PlanCacheStats {
        self.inner.plans.stats()
    }

    /// The column cache of the table's scans, if it keeps any (for `/metrics` and tests).
    pub fn column_cache(&self) -> Option<Arc<table::column_cache::ColumnCache>> {
        self.inner.column_cache.clone()
    }

    /// Users' queries running and waiting now.
    pub fn load(&self) -> (usize, usize) {
        (self.inner.user.running(), self.inner.user.waiting())
    }

    /// Runs one of rtap's own queries (the analytics endpoints); `params` bind `$1`, `$2`, ...
    /// as values (never as SQL text).
    pub async fn run(&self, sql: &str, params: Vec<ScalarValue>) -> Result<QueryOutput, SqlError> {
        self.run_in(Lane::Internal, sql, params).await
    }

    /// Runs one query of the Pinot dialect in `lane`, within every limit.
    pub async fn run_in(
        &self,
        lane: Lane,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryOutput, SqlError> {
        self.run_then(lane, Instant::now(), sql, params, false, |out, _| Ok(out))
            .await
    }

    /// [`Self::run`] within the time limit counted from `started`: for an endpoint that spent
    /// part of its time before it asks SQL (`/users/{id}/orders` when its lookups go over
    /// budget), so the request as a whole stays within `sql.timeout_ms`. The query waits for
    /// its own turn of the internal lane, and that wait counts too: on a busy server such a
    /// request can time out where a fresh limit would have let it finish (the limit is the
    /// request's, as a client sees it).
    pub async fn run_since(
        &self,
        started: Instant,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<QueryOutput, SqlError> {
        self.run_then(Lane::Internal, started, sql, params, false, |out, _| {
            Ok(out)
        })
        .await
    }

    /// The rows of the table whose `column` equals `key`, with `columns`, from the lookup
    /// indexes and the rows in memory, without planning a query (see [`table::provider::key_rows`]),
    /// `finish`ed (sorted, cut, written out) with at most `sql.max_rows`: an endpoint's point
    /// lookup (`/users/{id}/orders`) at the cost of the lookups alone. Run on the query runtime
    /// with a turn of the internal lane, within the query time limit, as the endpoint's SQL
    /// would. `None` when the indexes cannot answer: ask SQL.
    pub async fn key_rows<T: Send + 'static>(
        &self,
        column: &str,
        key: &str,
        columns: &[&str],
        finish: impl FnOnce(Vec<RecordBatch>, usize) -> Result<T, SqlError> + Send + 'static,
    ) -> Result<Option<T>, SqlError> {
        let max_rows = self.inner.config.max_rows;
        let timeout_ms = self.inner.config.timeout_ms;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        let inner = self.inner.clone();
        let column = column.to_string();
        let key = key.to_string();
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let work = async move {
            let _turn = inner.internal.enter(deadline, timeout_ms).await?;
            let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
            match table::provider::key_rows(&inner.table, &column, &key, &columns) {
                Ok(Some(rows)) => finish(rows, max_rows).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(SqlError::from_datafusion(e)),
            }
        };
        self.on_query_runtime(deadline, timeout_ms, "the lookup", work)
            .await
    }

    /// Runs `work` on the query runtime within `deadline` (`timeout_ms`: what a timeout
    /// reports). The deadline is kept inside the task too, and the task is aborted when this
    /// future is dropped (the client went away, a request timeout answered first): nothing
    /// runs on, unwatched, holding its turn. `what` names the work when it fails.
    async fn on_query_runtime<T: Send + 'static>(
        &self,
        deadline: Instant,
        timeout_ms: u64,
        what: &str,
        work: impl std::future::Future<Output = Result<T, SqlError>> + Send + 'static,
    ) -> Result<T, SqlError> {
        let Some(runtime) = &self.runtime else {
            return Err(SqlError::Busy("the SQL engine is shutting down".into()));
        };
        let task = AbortOnDrop(runtime.spawn(async move {
            tokio::time::timeout_at(deadline.into(), work)
                .await
                .unwrap_or(Err(SqlError::Timeout(timeout_ms)))
        }));
        match tokio::time::timeout_at(deadline.into(), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(SqlError::Execution(format!("{what} failed: {e}"))),
            // Dropping the task drops its work (a query's stream): it stops where it is.
            Err(_) => Err(SqlError::Timeout(timeout_ms)),
        }
    }

    /// Runs one query in `lane` and `finish`es its output on the query runtime, inside the
    /// query's time limit counted from `started` (`finish` gets the deadline; the answer's
    /// time used counts from `started` too). `pinot`: answer as a Pinot broker would (default
    /// LIMIT, Pinot's column names, result types and values over no rows).
    async fn run_then<T: Send + 'static>(
        &self,
        lane: Lane,
        started: Instant,
        sql: &str,
        params: Vec<ScalarValue>,
        pinot: bool,
        finish: impl FnOnce(QueryOutput, (Instant, u64)) -> Result<T, SqlError> + Send + 'static,
    ) -> Result<T, SqlError> {
        let mut config = self.inner.config;
        check_text(
            sql,
            config.max_sql_bytes,
            config.max_nesting_depth,
            config.max_operators,
        )?;
        let (sql, options) = options::split(sql)?;
        // A query may ask for less time or a smaller answer than the server allows, never more.
        if let Some(ms) = options.timeout_ms {
            config.timeout_ms = config.timeout_ms.min(ms);
        }
        if let Some(bytes) = options.max_response_bytes {
            config.max_response_bytes = config.max_response_bytes.min(bytes.max(1));
        }
        let deadline = started + Duration::from_millis(config.timeout_ms);
        // A caller that spent its time already (`run_since`) gets no query started at all:
        // `timeout_at` would poll the work once before it looks at the deadline.
        if Instant::now() >= deadline {
            return Err(SqlError::Timeout(config.timeout_ms));
        }
        let inner = self.inner.clone();
        let work = async move {
            let gate = match lane {
                Lane::User => &inner.user,
                Lane::Internal => &inner.internal,
            };
            let _turn = gate.enter(deadline, config.timeout_ms).await?;
            let out = execute(&inner, &config, lane, &sql, params, started, pinot, options).await?;
            finish(out, (deadline, config.timeout_ms))
        };
        self.on_query_runtime(deadline, config.timeout_ms, "the query", work)
            .await
    }

    /// Runs a user's query and answers in Pinot's broker response shape, as JSON text built
    /// on the query runtime within the query's time and cut at `sql.max_response_bytes` of
    /// JSON; errors are in `exceptions`.
    pub async fn query_pinot_json(&self, sql: &str) -> String {
        let started = Instant::now();
        let answer = self
            .run_then(
                Lane::User,
                started,
                sql,
                Vec::new(),
                true,
                move |out, deadline| response::broker_response_json(&out, Some(deadline)),
            )
            .await;
        answer.unwrap_or_else(|e| {
            response::broker_error(&e, started.elapsed().as_millis() as u64).to_string()
        })
    }

    /// [`Self::query_pinot_json`] as a JSON tree.
    pub async fn query_pinot(&self, sql: &str) -> serde_json::Value {
        let json = self.query_pinot_json(sql).await;
        serde_json::from_str(&json).unwrap_or(serde_json::Value::Null)
    }
}

/// Bytes of result data a batch holds (its own slice of the buffers).
fn batch_bytes(batch: &datafusion::arrow::array::RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// The session state a query plans and runs in: one copy of the engine's state per query
/// (DataFusion marks the query's start time in it, which its `current_timestamp()` reads; rtap's
/// `now()` and `ago()` read the engine's clock). A user's query also gets the multiplying
/// functions wrapped with a budget of its own. A copy of a state copies its function registry
/// (a few hundred entries), so a query plans in this one copy (`SessionContext::sql` and
/// `DataFrame` would each make another); its `TaskContext` copies the registry once more.
fn session_for(inner: &Inner, lane: Lane) -> Result<SessionState, SqlError> {
    let mut state = inner.ctx.state();
    if lane == Lane::Internal {
        return Ok(state);
    }
    let budget = Budget::new(
        inner.config.max_function_output,
        inner.config.max_value_size,
    );
    for (builtin, kind) in &inner.multiplying {
        let bounded = Arc::new(ScalarUDF::new_from_impl(Bounded::new(
            builtin.clone(),
            *kind,
            budget.clone(),
        )));
        if bounded.name() == "concat" {
            state.add_analyzer_rule(Arc::new(crate::concat_op::ConcatOperator {
                concat: bounded.clone(),
            }));
        }
        state
            .register_udf(bounded)
            .map_err(SqlError::from_datafusion)?;
    }
    Ok(state)
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    inner: &Inner,
    config: &SqlConfig,
    lane: Lane,
    sql: &str,
    params: Vec<ScalarValue>,
    started: Instant,
    pinot: bool,
    query_options: QueryOptions,
) -> Result<QueryOutput, SqlError> {
    let config = *config;
    let df_err = SqlError::from_datafusion;
    let state = session_for(inner, lane)?;
    let with_params = !params.is_empty();
    let (planned, cached) = match inner.plans.get(lane, pinot, with_params, sql) {
        Some(planned) => (planned, true),
        None => (
            Arc::new(plan(inner, &state, &config, sql, with_params, pinot).await?),
            false,
        ),
    };
    let reads_table = planned.reads_table;
    // Only a user query's functions are bounded, each query's with a budget of its own.
    let own = |plan: &datafusion::logical_expr::LogicalPlan| match lane {
        Lane::User => plan_cache::rebind(plan, &state).map_err(df_err),
        Lane::Internal => Ok(plan.clone()),
    };
    // On from the stage kept: parameters bound to the optimized plan where it was kept with
    // its placeholders, else before analysis; the optimizer run again where the plan depends
    // on the moment (`ago()`).
    let bind_and_optimize = |logical: &datafusion::logical_expr::LogicalPlan,
                             params: Vec<ScalarValue>|
     -> Result<datafusion::logical_expr::LogicalPlan, SqlError> {
        let mut logical = own(logical)?;
        if with_params {
            logical = logical.with_param_values(params).map_err(df_err)?;
            // Grouping by a list may depend on a parameter's type.
            refuse_list_groups(&logical)?;
        }
        state.optimize(&logical).map_err(df_err)
    };
    let logical = match &planned.stage {
        Stage::Optimized(optimized) => own(optimized)?,
        Stage::Prepared {
            optimized,
            types,
            unbound,
        } => {
            // Binding does not check types (nor coerce): values of other types than the
            // placeholders' are planned from the start, as without a kept plan.
            let fits = params.len() == types.len()
                && params.iter().zip(types).all(|(v, t)| &v.data_type() == t);
            if fits {
                // Grouping by a list was checked on the typed plan when it was kept.
                own(optimized)?.with_param_values(params).map_err(df_err)?
            } else {
                bind_and_optimize(unbound, params)?
            }
        }
        Stage::Analyzed(analyzed) => state
            .optimizer()
            .optimize(own(analyzed)?, &state, |_, _| {})
            .map_err(df_err)?,
        Stage::Unbound(logical) => bind_and_optimize(logical, params)?,
    };
    let plan = yielding(
        state
            .query_planner()
            .create_physical_plan(&logical, &state)
            .await
            .map_err(df_err)?,
    )
    .map_err(df_err)?;
    if !cached {
        // Kept once it has planned all the way through.
        inner
            .plans
            .insert(lane, pinot, with_params, sql, planned.clone());
    }
    // The table as of planning (the scan took its snapshot then; rows may arrive since).
    let snapshot = inner.table.snapshot();
    let total_docs = snapshot.rows();
    if lane == Lane::User {
        check_joins(&plan, config.max_join_pairs)?;
    }
    let pool = Arc::new(QueryPool::new(
        inner.shared_pool.clone(),
        config.query_memory_bytes,
    ));
    let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
        .with_memory_pool(pool.clone())
        .build_arc()
        .map_err(df_err)?;
    let task = Arc::new(TaskContext::from(&state).with_runtime(runtime));
    // An error after an allocation was refused is a memory error, whatever it says.
    let df_err = |e: DataFusionError| {
        if pool.refused() {
            pool.limit_error()
        } else {
            SqlError::from_datafusion(e)
        }
    };
    let mut stream = execute_stream(plan.clone(), task).map_err(df_err)?;
    let (mut batches, mut rows, mut bytes) = (Vec::new(), 0usize, 0usize);
    let mut truncated_reason = None;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(df_err)?;
        let n = batch.num_rows();
        if n == 0 {
            continue;
        }
        let size = batch_bytes(&batch);
        if rows + n > config.max_rows {
            let keep = config.max_rows - rows;
            if keep > 0 {
                batches.push(batch.slice(0, keep));
            }
            truncated_reason = Some(format!(
                "the result was cut at {} rows (sql.max_rows)",
                config.max_rows
            ));
            break;
        }
        if bytes + size > config.max_response_bytes {
            let per_row = size.div_ceil(n).max(1);
            let keep = (config.max_response_bytes - bytes) / per_row;
            if keep > 0 {
                batches.push(batch.slice(0, keep.min(n)));
            }
            truncated_reason = Some(format!(
                "the result was cut at about {} bytes (sql.max_response_bytes)",
                config.max_response_bytes
            ));
            break;
        }
        rows += n;
        bytes += size;
        batches.push(batch);
    }
    // Dropping the stream stops whatever is still running.
    drop(stream);
    let consuming = u64::from(snapshot.memory_rows > 0);
    let (mut files_read, mut memory_read) = segments_read(&plan);
    let mut docs_scanned = docs_scanned(&plan);
    // A COUNT(*) over rows that are all in memory is answered from their statistics, without a
    // scan: every row counted, as Pinot reports an answer from segment metadata.
    if files_read == 0 && !memory_read && reads_table && has_node(&plan, "PlaceholderRowExec") {
        (files_read, memory_read, docs_scanned) =
            (snapshot.segments.len() as u64, true, total_docs);
    }
    // A seal or merge between planning and this snapshot may shift a few rows or files.
    let docs_scanned = docs_scanned.min(total_docs);
    let queried = snapshot.segments.len() as u64 + consuming;
    let segments = crate::SegmentCounts {
        queried,
        processed: (files_read + u64::from(memory_read && consuming > 0)).min(queried),
        consuming_queried: consuming,
        consuming_processed: u64::from(memory_read && consuming > 0),
    };
    if matches!(plan.name(), "ExplainExec" | "AnalyzeExec") {
        batches = redact_paths(batches, inner.table.dir())?;
    }
    let mut schema = plan.schema();
    if let Some(shape) = planned.shape.clone() {
        (schema, batches) = shape.apply(schema, batches, query_options.null_handling);
    } else if pinot {
        schema = shape::unqualified(&schema);
    }
    if query_options.drop_results {
        batches.clear();
    }
    Ok(QueryOutput {
        schema,
        batches,
        docs_scanned,
        total_docs,
        segments,
        truncated: truncated_reason.is_some(),
        truncated_reason,
        time_used_ms: started.elapsed().as_millis() as u64,
        grain: planned.grain,
        max_response_bytes: config.max_response_bytes,
        options: query_options,
    })
}

/// Plans a query text as far as its plan does not depend on the moment it runs or on its
/// parameters' values (what the plan cache keeps): rtap's rewrite, DataFusion's SQL planner, the
/// read-only and list-grouping checks, the LIMITs, analysis and, where [`plan_cache::timeless`],
/// optimization.
async fn plan(
    inner: &Inner,
    state: &SessionState,
    config: &SqlConfig,
    sql: &str,
    with_params: bool,
    pinot: bool,
) -> Result<Planned, SqlError> {
    use datafusion::common::display::{PlanType, ToStringifiedPlan};
    use datafusion::logical_expr::{Analyze, Explain, LogicalPlan, LogicalPlanBuilder};
    let df_err = SqlError::from_datafusion;
    first_keyword_allowed(sql)?;
    let shape = if pinot {
        shape::Shape::of(sql, &inner.catalog)
    } else {
        None
    };
    let rewritten = dialect::rewrite(sql, &inner.catalog)?;
    tracing::debug!(sql = %rewritten.sql, "rewritten query");
    // Before DataFusion expands the CTEs (see `expansion`).
    let max_nodes = config.max_plan_nodes;
    if let Some(reads) = crate::expansion::expanded_reads(&rewritten.sql, max_nodes as u64) {
        if reads > max_nodes as u64 {
            return Err(SqlError::Refused(format!(
                "the query plans more than {max_nodes} table reads and SELECTs once its CTEs are \
                 expanded (each reference to a CTE is a copy of it), over the limit \
                 (sql.max_plan_nodes)"
            )));
        }
    }
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let logical = state
        .create_logical_plan(&rewritten.sql)
        .await
        .map_err(df_err)?;
    // Before anything walks the plan as a tree.
    refuse_large_plans(&logical, max_nodes)?;
    options.verify_plan(&logical).map_err(df_err)?;
    // With parameters, checked once they are bound (each run).
    if !with_params {
        refuse_list_groups(&logical)?;
    }
    // Reads the table without a filter (a COUNT(*) answered from statistics counted every row;
    // with a filter such as `WHERE 1 = 0` no row was counted).
    let has = |f: fn(&LogicalPlan) -> bool| logical.exists(|p| Ok(f(p))).unwrap_or(true);
    let reads_table = has(|p| matches!(p, LogicalPlan::TableScan(_)))
        && !has(|p| matches!(p, LogicalPlan::Filter(_)));
    let limit = |plan: LogicalPlan, n: usize| {
        LogicalPlanBuilder::from(plan)
            .limit(0, Some(n))
            .and_then(|b| b.build())
            .map_err(df_err)
    };
    // Pinot answers a selection or group-by without LIMIT with its first rows only; and no
    // answer is longer than max_rows (one more tells that it was cut).
    let limits = |mut plan: LogicalPlan| {
        if pinot && config.default_limit > 0 && !has_limit(&plan) {
            plan = limit(plan, config.default_limit)?;
        }
        limit(plan, config.max_rows + 1)
    };
    // EXPLAIN [ANALYZE] answers, as rows of text, the plan the query would run (with its
    // LIMITs); DataFusion plans it only as the root. For EXPLAIN its optimizer writes the plan
    // out after every rule: bounded by refusing large plans. Optimized per run, never kept.
    let explained = |stage| Planned {
        shape: shape.clone(),
        grain: rewritten.grain,
        reads_table,
        stage: Stage::Unbound(stage),
    };
    let logical = match logical {
        LogicalPlan::Explain(e) => {
            let inner = limits(e.plan.as_ref().clone())?;
            refuse_large_explain(&inner)?;
            return Ok(explained(LogicalPlan::Explain(Explain {
                stringified_plans: vec![inner.to_stringified(PlanType::InitialLogicalPlan)],
                plan: Arc::new(inner),
                ..e
            })));
        }
        LogicalPlan::Analyze(a) => {
            // Planned like the query itself (the plan is written out once, with its metrics).
            let inner = limits(a.input.as_ref().clone())?;
            return Ok(explained(LogicalPlan::Analyze(Analyze {
                input: Arc::new(inner),
                ..a
            })));
        }
        other => limits(other)?,
    };
    let stage = if with_params {
        match prepare(state, &logical) {
            Some((optimized, types)) => Stage::Prepared {
                optimized,
                types,
                unbound: logical,
            },
            None => Stage::Unbound(logical),
        }
    } else {
        let analyzed = state
            .analyzer()
            .execute_and_check(logical, state.config_options(), |_, _| {})
            .map_err(df_err)?;
        if plan_cache::timeless(&analyzed) {
            Stage::Optimized(
                state
                    .optimizer()
                    .optimize(analyzed, state, |_, _| {})
                    .map_err(df_err)?,
            )
        } else {
            Stage::Analyzed(analyzed)
        }
    };
    Ok(Planned {
        shape,
        grain: rewritten.grain,
        reads_table,
        stage,
    })
}

/// `logical` (with parameters) analyzed and optimized before its parameters are bound, and the
/// types of `$1`, `$2`, ..., when that is the plan binding values of those types first would
/// give: every placeholder's type known from where it stands (`time_ms >= $1`: BIGINT, one type
/// per placeholder) and nothing depending on the moment (`ago()` is folded by the optimizer).
/// `None` otherwise, or when analysis or optimization fails without values (the query is then
/// planned with its values each run, as before).
fn prepare(
    state: &SessionState,
    logical: &datafusion::logical_expr::LogicalPlan,
) -> Option<(datafusion::logical_expr::LogicalPlan, Vec<DataType>)> {
    // With the placeholders' types known, the check `execute` makes once values are bound
    // (grouping by a list) can be made now; a plan it refuses is planned with its values and
    // refused then.
    if !plan_cache::timeless_but_typed_params(logical) || refuse_list_groups(logical).is_err() {
        return None;
    }
    let before = logical.get_parameter_types().ok()?;
    let analyzed = state
        .analyzer()
        .execute_and_check(logical.clone(), state.config_options(), |_, _| {})
        .ok()?;
    let optimized = state
        .optimizer()
        .optimize(analyzed, state, |_, _| {})
        .ok()?;
    if !plan_cache::timeless_but_typed_params(&optimized) {
        return None;
    }
    // The same placeholders, of the same types, as planned ($1 to $n, each with a type).
    let after = optimized.get_parameter_types().ok()?;
    if after != before {
        return None;
    }
    let types = (1..=after.len())
        .map(|i| after.get(&format!("${i}")).cloned().flatten())
        .collect::<Option<Vec<DataType>>>()?;
    Some((optimized, types))
}

/// EXPLAIN's text without the server's directories: scans name their segment files by path.
fn redact_paths(
    batches: Vec<datafusion::arrow::array::RecordBatch>,
    dir: &std::path::Path,
) -> Result<Vec<datafusion::arrow::array::RecordBatch>, SqlError> {
    use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
    let full = dir.to_string_lossy().to_string();
    // As the scans print it: an object store path (no leading slash, `.` and `..` and some
    // characters percent-encoded).
    let bare = datafusion::object_store::path::Path::from(full.as_str()).to_string();
    if bare.is_empty() {
        return Ok(batches);
    }
    batches
        .into_iter()
        .map(|batch| {
            let columns = batch
                .columns()
                .iter()
                .map(|c| match c.as_string_opt::<i32>() {
                    Some(text) => Arc::new(
                        text.iter()
                            .map(|v| {
                                v.map(|v| v.replace(&full, "<table>").replace(&bare, "<table>"))
                            })
                            .collect::<StringArray>(),
                    ) as ArrayRef,
                    None => c.clone(),
                })
                .collect();
            RecordBatch::try_new(batch.schema(), columns)
                .map_err(|e| SqlError::Execution(format!("the plan's text: {e}")))
        })
        .collect()
}

/// Refuses a plan of more than `max_nodes` nodes, counted as the tree the analyzer and
/// optimizer will walk and copy (SQL planning shares a CTE between its references, the
/// optimizer copies it at each). The count stops at the limit.
fn refuse_large_plans(
    plan: &datafusion::logical_expr::LogicalPlan,
    max_nodes: usize,
) -> Result<(), SqlError> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut nodes = 0usize;
    let _ = plan.apply_with_subqueries(|_| {
        nodes += 1;
        Ok(if nodes > max_nodes {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    if nodes > max_nodes {
        return Err(SqlError::Refused(format!(
            "the query's plan has more than {max_nodes} nodes (a CTE counts at each \
             reference to it), over the limit (sql.max_plan_nodes)"
        )));
    }
    Ok(())
}

/// Longest text of a plan EXPLAIN writes out: DataFusion writes the whole plan again after each
/// of its ~100 rules, outside the memory pool and the query's time limit.
const MAX_EXPLAIN_TEXT_BYTES: usize = 64 * 1024;

fn refuse_large_explain(plan: &datafusion::logical_expr::LogicalPlan) -> Result<(), SqlError> {
    /// Counts what is written and stops the writing past the limit.
    struct Bounded(usize);
    impl std::fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            if self.0 > MAX_EXPLAIN_TEXT_BYTES {
                Err(std::fmt::Error)
            } else {
                Ok(())
            }
        }
    }
    use std::fmt::Write;
    if write!(Bounded(0), "{}", plan.display_indent()).is_err() {
        return Err(SqlError::ResourceLimit(format!(
            "EXPLAIN of this query would write its plan (over {MAX_EXPLAIN_TEXT_BYTES} bytes of \
             text) out after every optimizer rule; larger plans are not explained"
        )));
    }
    Ok(())
}

/// Whether the plan has a node named `name`.
fn has_node(plan: &Arc<dyn ExecutionPlan>, name: &str) -> bool {
    plan.name() == name || plan.children().into_iter().any(|c| has_node(c, name))
}

/// Pinot groups by each value of a multi-value column; the dialect rewrites the forms it can
/// (`GROUP BY coupon`, its position, `VALUEIN`, in the outermost SELECT). Any other grouping by
/// a whole list would answer different groups than Pinot without a word, so it is refused.
fn refuse_list_groups(plan: &datafusion::logical_expr::LogicalPlan) -> Result<(), SqlError> {
    use datafusion::logical_expr::{Distinct, Expr};
    use datafusion::logical_expr::{ExprSchemable, LogicalPlan};
    let is_list = |t: &DataType| {
        matches!(
            t,
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
        )
    };
    let mut found = None;
    // Subqueries too (`WHERE x IN (SELECT ... GROUP BY coupon)`).
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Aggregate(a) => {
                let keys: Vec<&Expr> = a
                    .group_expr
                    .iter()
                    .flat_map(|e| match e {
                        Expr::GroupingSet(set) => set.distinct_expr(),
                        other => vec![other],
                    })
                    .collect();
                for e in keys {
                    if e.get_type(a.input.schema()).is_ok_and(|t| is_list(&t)) {
                        found = Some(e.schema_name().to_string());
                    }
                }
            }
            // SELECT DISTINCT over a list column.
            LogicalPlan::Distinct(Distinct::All(input)) => {
                if let Some(f) = input
                    .schema()
                    .fields()
                    .iter()
                    .find(|f| is_list(f.data_type()))
                {
                    found = Some(f.name().clone());
                }
            }
            _ => {}
        }
        Ok(if found.is_some() {
            datafusion::common::tree_node::TreeNodeRecursion::Stop
        } else {
            datafusion::common::tree_node::TreeNodeRecursion::Continue
        })
    });
    match found {
        Some(name) => Err(SqlError::Invalid(format!(
            "GROUP BY {name} would group whole multi-value lists; rtap groups by each value (as \
             Pinot does) for `GROUP BY column`, its position or VALUEIN(...) in the outermost \
             SELECT reading the table once, without line_items.* or coupon_codes.name columns"
        ))),
        None => Ok(()),
    }
}

/// Whether the query's own text limits its rows (its plan's root is a LIMIT with a count).
fn has_limit(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    matches!(plan, datafusion::logical_expr::LogicalPlan::Limit(l) if l.fetch.is_some())
}

/// Refuses a join without an equality key (nested loop, cross join) whose two sides, by the
/// planner's row counts, make more than `max_pairs` pairs to compare: one batch of such a join
/// can run for hours without a point where it yields, so its time limit could not stop it. A
/// side of unknown size counts as too large.
fn check_joins(
    plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    max_pairs: u64,
) -> Result<(), SqlError> {
    let name = plan.name();
    if name == "NestedLoopJoinExec" || name == "CrossJoinExec" {
        use datafusion::physical_plan::{StatisticsArgs, StatisticsContext};
        let stats = StatisticsContext::new();
        let rows = |p: &Arc<dyn datafusion::physical_plan::ExecutionPlan>| {
            stats
                .compute(p.as_ref(), &StatisticsArgs::new())
                .ok()
                .and_then(|s| s.num_rows.get_value().copied())
        };
        let sides: Vec<Option<usize>> = plan.children().into_iter().map(rows).collect();
        let pairs = sides
            .iter()
            .try_fold(1u128, |acc, r| r.map(|n| acc.saturating_mul(n as u128)));
        if pairs.is_none_or(|p| p > u128::from(max_pairs)) {
            let size =
                |r: &Option<usize>| r.map_or("an unknown number of".to_string(), |n| n.to_string());
            let described: Vec<String> = sides.iter().map(size).collect();
            return Err(SqlError::ResourceLimit(format!(
                "the query joins {} rows without an equality key, more than {max_pairs} pairs \
                 to compare (sql.max_join_pairs): join on a key, or filter the sides first",
                described.join(" x ")
            )));
        }
    }
    for child in plan.children() {
        check_joins(child, max_pairs)?;
    }
    Ok(())
}

/// Makes joins and unnests give the runtime back now and then. One input batch can become any
/// number of output batches there (a cross join), and none of those polls reaches a point where
/// the task would yield, so a timeout or a dropped request could not stop the query until it
/// ended by itself. Wrapped, each output batch spends a unit of the task's cooperative budget.
fn yielding(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>, DataFusionError> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::physical_plan::coop::CooperativeExec;
    plan.transform_up(|node| {
        let name = node.name();
        if name.contains("Join") || name == "UnnestExec" {
            let wrapped: Arc<dyn datafusion::physical_plan::ExecutionPlan> =
                Arc::new(CooperativeExec::new(node));
            Ok(Transformed::yes(wrapped))
        } else {
            Ok(Transformed::no(node))
        }
    })
    .map(|t| t.data)
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
