//! Plans of recently run query texts (`sql.plan_cache_entries`, least recently used out first),
//! so a repeated query skips rtap's Pinot rewrite, DataFusion's SQL planner and its analyzer,
//! and, where nothing in it depends on the moment it runs, the logical optimizer too.
//!
//! What is kept is logical only: a plan names the table, never its data. The physical plan, which
//! picks the segments and row groups to read, is made again for every query from the table as it
//! is then, so a cached plan never answers from stale rows. (Plans that read a table
//! function, whose arguments are folded at SQL planning, are not kept: see [`keepable`].) Optimizing folds `ago()` and `now()`
//! into constants, so the optimized plan is kept only for queries without such functions; the
//! others are optimized again each time, from the analyzed plan. A query with parameters (rtap's
//! own, `time_ms >= $1`) is kept optimized with its placeholders when their types are known and
//! nothing else in it depends on the moment, and its values are bound to that plan on each run.
//!
//! A user query's functions that multiply their input carry a budget of the query's own
//! ([`crate::bounded`]); a plan taken from the cache gets the new query's functions
//! ([`rebind`]) so no two queries share a budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};

use crate::bounded::Bounded;
use crate::dialect::Grain;
use crate::engine::Lane;
use crate::shape::Shape;

/// Longest query text whose plan is kept: the dashboard's and clients' repeated queries are far
/// shorter (the key holds the text).
pub const MAX_CACHED_SQL_BYTES: usize = 8 * 1024;

/// Most plan nodes, expressions and bytes of literals (subqueries included) a kept plan may
/// have: the repeated queries of dashboards and clients have a few nodes and dozens of
/// expressions; an 8 KiB text can still expand to a large plan (a UNION of `SELECT *`, a CTE
/// inlined at each use), which is planned afresh each time instead. With these an entry holds
/// at most a few hundred KB (nodes carry their output schemas), so the default 128 entries
/// tens of MB at worst and a few MB for real queries.
pub const MAX_CACHED_PLAN_NODES: usize = 64;
pub const MAX_CACHED_PLAN_EXPRS: usize = 2_000;
pub const MAX_CACHED_LITERAL_BYTES: usize = 64 * 1024;

/// What planning made of one query text, up to the point where the moment of the query or its
/// parameters matter.
#[derive(Debug)]
pub struct Planned {
    /// Pinot's answer shape (for Pinot-dialect queries).
    pub shape: Option<Shape>,
    pub grain: Grain,
    /// The query reads the table without a filter.
    pub reads_table: bool,
    pub stage: Stage,
}

/// How far a kept plan got.
#[derive(Debug)]
pub enum Stage {
    /// Planned, checked and limited (LIMITs added), its parameters not yet bound: analysis
    /// depends on their values. Also an EXPLAIN (its query limited), which DataFusion
    /// optimizes only as a whole (never kept).
    Unbound(LogicalPlan),
    /// Analyzed and optimized with its parameters as placeholders of known types, nothing else
    /// in it depending on the moment (rtap's own parameterized queries): bound on each run,
    /// not analyzed or optimized again. `unbound` is the plan as [`Stage::Unbound`] keeps it,
    /// for values that do not fit the placeholders' types (`types`, of `$1`, `$2`, ...).
    Prepared {
        optimized: LogicalPlan,
        types: Vec<DataType>,
        unbound: LogicalPlan,
    },
    /// Analyzed (type coercion, function rewrites): optimizing folds `ago()` or `now()`.
    Analyzed(LogicalPlan),
    /// Optimized: no function in it depends on when it runs (table functions' arguments, folded
    /// at SQL planning, are kept out by [`keepable`]).
    Optimized(LogicalPlan),
}

impl Stage {
    fn plans(&self) -> Vec<&LogicalPlan> {
        match self {
            Stage::Unbound(p) | Stage::Analyzed(p) | Stage::Optimized(p) => vec![p],
            Stage::Prepared {
                optimized, unbound, ..
            } => vec![optimized, unbound],
        }
    }
}

/// Which query a plan is for: the same text plans differently per lane (the user lane's
/// functions are bounded), per dialect answer (Pinot's default LIMIT) and with or without
/// parameters (bound on each run).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    lane: Lane,
    pinot: bool,
    params: bool,
    sql: String,
}

/// The most recently used plans, up to a count.
#[derive(Debug)]
pub struct PlanCache {
    capacity: usize,
    /// Each plan with the tick of its last use.
    entries: Mutex<HashMap<Key, (Arc<Planned>, u64)>>,
    tick: AtomicU64,
    hits: AtomicU64,
    /// Hits on plans kept optimized.
    optimized_hits: AtomicU64,
    misses: AtomicU64,
}

impl PlanCache {
    pub fn new(capacity: usize) -> Self {
        PlanCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
            tick: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            optimized_hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn key(lane: Lane, pinot: bool, params: bool, sql: &str) -> Option<Key> {
        (sql.len() <= MAX_CACHED_SQL_BYTES).then(|| Key {
            lane,
            pinot,
            params,
            sql: sql.to_string(),
        })
    }

    /// The plan of this text, if it is kept.
    pub fn get(&self, lane: Lane, pinot: bool, params: bool, sql: &str) -> Option<Arc<Planned>> {
        if self.capacity == 0 {
            return None;
        }
        let key = Self::key(lane, pinot, params, sql)?;
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        // A panic elsewhere while holding the lock leaves a map that is still whole.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let found = entries.get_mut(&key).map(|(planned, used)| {
            *used = tick;
            planned.clone()
        });
        drop(entries);
        match &found {
            Some(planned) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                if matches!(planned.stage, Stage::Optimized(_) | Stage::Prepared { .. }) {
                    self.optimized_hits.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
            }
        }
        found
    }

    /// Keeps the plan of this text (unless [`keepable`] says no), dropping the least recently
    /// used one when full.
    pub fn insert(&self, lane: Lane, pinot: bool, params: bool, sql: &str, planned: Arc<Planned>) {
        if self.capacity == 0 || !planned.stage.plans().into_iter().all(keepable) {
            return;
        }
        let Some(key) = Self::key(lane, pinot, params, sql) else {
            return;
        };
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            // A scan of at most `capacity` entries, only when a new text arrives at a full cache.
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (planned, tick));
    }

    /// What the cache has done since the start, and holds now.
    pub fn stats(&self) -> PlanCacheStats {
        PlanCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            optimized_hits: self.optimized_hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.lock().unwrap_or_else(|e| e.into_inner()).len(),
        }
    }
}

/// Lookups that found a plan and that did not (texts too long to keep are neither), and the
/// plans kept now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanCacheStats {
    pub hits: u64,
    /// Of the hits, those on plans kept optimized (the optimizer did not run again, unless the
    /// values of a kept plan with parameters were of other types than its placeholders').
    pub optimized_hits: u64,
    pub misses: u64,
    pub entries: usize,
}

/// Whether a plan may be kept: within the size bounds above, not an EXPLAIN (which carries
/// its plan written out as text), and reading no table but the orders table. A table function
/// (`generate_series(ago('PT1H'), ...)` in FROM) has its arguments folded into its table while
/// the SQL is planned, `ago()` included, so its plan holds the moment of its first run.
fn keepable(plan: &LogicalPlan) -> bool {
    use datafusion::logical_expr::TableScan;
    if matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) {
        return false;
    }
    let (mut nodes, mut exprs, mut literal_bytes, mut other_table) =
        (0usize, 0usize, 0usize, false);
    let _ = plan.apply_with_subqueries(|node| {
        nodes += 1;
        if let LogicalPlan::TableScan(TableScan { table_name, .. }) = node {
            other_table |= table_name.table() != "orders";
        }
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                exprs += 1;
                if let Expr::Literal(value, _) = e {
                    literal_bytes += value.size();
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(
            if other_table
                || nodes > MAX_CACHED_PLAN_NODES
                || exprs > MAX_CACHED_PLAN_EXPRS
                || literal_bytes > MAX_CACHED_LITERAL_BYTES
            {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            },
        )
    });
    !other_table
        && nodes <= MAX_CACHED_PLAN_NODES
        && exprs <= MAX_CACHED_PLAN_EXPRS
        && literal_bytes <= MAX_CACHED_LITERAL_BYTES
}

/// Whether the optimized plan would be the same whenever the query runs: no function whose
/// value depends on the moment (`ago()`, `now()`, DataFusion's `current_date`), none that is
/// volatile, no parameter and no session variable. Subqueries included.
pub fn timeless(plan: &LogicalPlan) -> bool {
    fixed(plan, false)
}

/// [`timeless`] but for parameters whose types are known: the optimized plan would be the same
/// whenever the query runs, up to the values bound to its placeholders.
pub fn timeless_but_typed_params(plan: &LogicalPlan) -> bool {
    fixed(plan, true)
}

fn fixed(plan: &LogicalPlan, typed_params: bool) -> bool {
    let mut timeless = true;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                let fixed = match e {
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility == Volatility::Immutable
                    }
                    Expr::Placeholder(p) => typed_params && p.field.is_some(),
                    Expr::ScalarVariable(..) => false,
                    _ => true,
                };
                if fixed {
                    Ok(TreeNodeRecursion::Continue)
                } else {
                    timeless = false;
                    Ok(TreeNodeRecursion::Stop)
                }
            })
        })
    });
    timeless
}

/// `plan` with every bounded function replaced by the one of the same name in `state` (the
/// query's own, with its own budget). Plans of rtap's own queries have none and come back as
/// they are.
pub fn rebind(plan: &LogicalPlan, state: &SessionState) -> Result<LogicalPlan, DataFusionError> {
    plan.clone()
        .transform_up_with_subqueries(|node| {
            node.map_expressions(|expr| {
                expr.transform_up(|e| match e {
                    Expr::ScalarFunction(f)
                        if f.func.inner().downcast_ref::<Bounded>().is_some() =>
                    {
                        let own = state.scalar_functions().get(f.func.name()).ok_or_else(|| {
                            DataFusionError::Internal(format!(
                                "the bounded function {} is not in the query's session",
                                f.func.name()
                            ))
                        })?;
                        Ok(Transformed::yes(Expr::ScalarFunction(
                            ScalarFunction::new_udf(own.clone(), f.args),
                        )))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })
        .map(|t| t.data)
}
