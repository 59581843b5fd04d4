//! How many queries run at once, and how much memory each may hold.
//!
//! - [`Gate`]: a query takes one of `max_concurrent` turns; up to `max_queued` more wait for
//!   one (within their time limit); any further query is refused at once as "server busy",
//!   rather than piling up without bound.
//! - [`QueryPool`]: DataFusion's memory pool for one query, charging the shared pool of all
//!   queries as well, so one query cannot hold more than `query_memory_bytes` and all together
//!   not more than `memory_limit_bytes`. Operators that can spill (sorts, aggregations) spill to
//!   disk when refused; the others fail the query with Pinot's resource-limit error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::SqlError;

/// Turns for running queries, with a bounded queue.
#[derive(Debug)]
pub struct Gate {
    turns: Arc<Semaphore>,
    max_concurrent: usize,
    max_queued: usize,
    waiting: AtomicUsize,
}

/// What a query holds while it runs.
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    pub fn new(max_concurrent: usize, max_queued: usize) -> Self {
        Gate {
            turns: Arc::new(Semaphore::new(max_concurrent.max(1))),
            max_concurrent: max_concurrent.max(1),
            max_queued,
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits for a turn until `deadline`; refuses at once when the queue is full.
    pub async fn enter(&self, deadline: Instant, timeout_ms: u64) -> Result<Turn, SqlError> {
        if let Ok(permit) = self.turns.clone().try_acquire_owned() {
            return Ok(Turn { _permit: permit });
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        if queued >= self.max_queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(SqlError::Busy(format!(
                "server busy: {} queries running and {queued} waiting (limits sql.max_concurrent = \
                 {}, sql.max_queued = {}); retry shortly",
                self.max_concurrent, self.max_concurrent, self.max_queued
            )));
        }
        let wait =
            tokio::time::timeout_at(deadline.into(), self.turns.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match wait {
            Ok(Ok(permit)) => Ok(Turn { _permit: permit }),
            Ok(Err(_)) => Err(SqlError::Busy("the SQL engine is shutting down".into())),
            Err(_) => Err(SqlError::Timeout(timeout_ms)),
        }
    }

    /// Queries running now.
    pub fn running(&self) -> usize {
        self.max_concurrent - self.turns.available_permits()
    }

    /// Queries waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// Marks the errors of [`QueryPool`] so they can be told from other resource errors.
const QUERY_LIMIT: &str = "query exceeded its memory limit of";

/// A failed allocation's message for the user, naming the limit that refused it.
pub fn memory_message(detail: &str) -> String {
    match detail.find(QUERY_LIMIT) {
        Some(at) => detail[at..].to_string(),
        None => format!(
            "the queries running together exceeded their memory limit (sql.memory_limit_bytes): {detail}"
        ),
    }
}

/// One query's memory pool: its own limit, inside the pool of all queries.
#[derive(Debug)]
pub struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
    /// An allocation was refused: whatever error the query then ends with (operators that
    /// try to spill report their own), its cause is memory.
    refused: std::sync::atomic::AtomicBool,
}

impl QueryPool {
    pub fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> Self {
        QueryPool {
            shared,
            limit,
            used: AtomicUsize::new(0),
            refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether an allocation of this query was refused.
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Acquire)
    }

    /// The error of a query whose allocation was refused.
    pub fn limit_error(&self) -> SqlError {
        SqlError::ResourceLimit(format!(
            "{QUERY_LIMIT} {} MB (sql.query_memory_bytes), or all queries together theirs \
             (sql.memory_limit_bytes)",
            self.limit / (1024 * 1024)
        ))
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query(used: {}, limit: {}, shared: {})",
            self.used.load(Ordering::Relaxed),
            self.limit,
            self.shared
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "rtap-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::AcqRel);
        self.shared.grow(reservation, additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::AcqRel);
        self.shared.shrink(reservation, shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let used = self.used.load(Ordering::Acquire);
        if used.saturating_add(additional) > self.limit {
            self.refused.store(true, Ordering::Release);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{QUERY_LIMIT} {} MB (sql.query_memory_bytes); it held {} MB and asked for {} MB more",
                self.limit / (1024 * 1024),
                used / (1024 * 1024),
                additional.div_ceil(1024 * 1024)
            )));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.refused.store(true, Ordering::Release);
            return Err(e);
        }
        self.used.fetch_add(additional, Ordering::AcqRel);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// Refuses a query text over the length, nesting or operator limits before anything parses it.
/// Operators count because a long chain of them (`a + b + c + ...`, `NOT NOT NOT ...`,
/// `x::INT::INT...`) is a deep expression tree, which the planner walks recursively: 5,000
/// terms would overflow a thread's stack. The text is read by the same tokenizer the query is
/// parsed with (one linear pass), so quotes, escapes and comments are seen exactly as the
/// parser sees them.
pub fn check_text(
    sql: &str,
    max_bytes: usize,
    max_depth: usize,
    max_operators: usize,
) -> Result<(), SqlError> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

    if sql.len() > max_bytes {
        return Err(SqlError::Refused(format!(
            "the query is {} bytes, over the limit of {max_bytes} bytes (sql.max_sql_bytes)",
            sql.len()
        )));
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| SqlError::Parse(e.to_string()))?;
    // Parentheses and CASE ... END nest apart: an END without a CASE closes nothing.
    let (mut depth, mut cases, mut deepest, mut operators) = (0usize, 0usize, 0usize, 0usize);
    for t in &tokens {
        match t {
            Token::LParen | Token::LBracket => {
                depth += 1;
                deepest = deepest.max(depth + cases);
            }
            Token::RParen | Token::RBracket => depth = depth.saturating_sub(1),
            Token::Word(w) => match w.keyword {
                // CASE ... END nests like parentheses.
                Keyword::CASE => {
                    operators += 1;
                    cases += 1;
                    deepest = deepest.max(depth + cases);
                }
                Keyword::END => cases = cases.saturating_sub(1),
                Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::IN
                | Keyword::BETWEEN
                | Keyword::SIMILAR
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::ESCAPE => operators += 1,
                _ => {}
            },
            Token::Whitespace(_)
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Comma
            | Token::Period
            | Token::SemiColon
            | Token::Placeholder(_)
            | Token::EOF => {}
            // Every other token is an operator of some kind (`+`, `=`, `||`, `::`, `->`, ...).
            _ => operators += 1,
        }
    }
    if operators > max_operators {
        return Err(SqlError::Refused(format!(
            "the query has {operators} operators, over the limit of {max_operators} \
             (sql.max_operators)"
        )));
    }
    if deepest > max_depth {
        return Err(SqlError::Refused(format!(
            "the query nests {deepest} levels deep, over the limit of {max_depth} \
             (sql.max_nesting_depth)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;

    #[test]
    fn an_end_without_case_opens_no_room_for_parentheses() {
        let sql = format!("SELECT {}1{} FROM t", "f(END ".repeat(10), ")".repeat(10));
        assert!(
            check_text(&sql, 10_000, 4, 100).is_err(),
            "10 levels of parentheses"
        );
        assert!(check_text("SELECT CASE WHEN (1) THEN 2 END FROM t", 1000, 4, 10).is_ok());
    }

    #[test]
    fn text_limits_name_the_limit() {
        assert!(check_text("SELECT 1", 100, 4, 10).is_ok());
        let err = check_text(&"x".repeat(101), 100, 4, 10).expect_err("long");
        assert_eq!(
            err.to_string(),
            "QueryValidationError: the query is 101 bytes, over the limit of 100 bytes (sql.max_sql_bytes)"
        );
        let err = check_text("SELECT ((((((1)))))) FROM t", 1000, 4, 10).expect_err("deep");
        assert!(
            err.to_string()
                .contains("nests 6 levels deep, over the limit of 4"),
            "{err}"
        );
        assert!(
            check_text("SELECT '((((((' FROM t", 1000, 4, 10).is_ok(),
            "inside a string"
        );
        let many = format!(
            "SELECT {} FROM t WHERE a = 1 AND b = 2",
            ["x"; 9].join(" + ")
        );
        let err = check_text(&many, 1000, 4, 10).expect_err("operators");
        assert!(
            err.to_string()
                .contains("has 11 operators, over the limit of 10"),
            "{err}"
        );
        assert!(check_text("SELECT 'a+b+c+d+e+f+g+h+i+j+k' FROM brand", 1000, 4, 10).is_ok());
        // Word operators, casts and CASE count too; comments and quotes hide nothing.
        for chain in [
            format!("SELECT {} 1", "NOT ".repeat(11)),
            format!("SELECT 1{}", "::INT".repeat(11)),
            format!("SELECT x {}", "IS NOT NULL = TRUE ".repeat(4)),
            format!("SELECT -- '\n{}", ["x"; 12].join(" + ")),
            format!("SELECT /* ' */ {}", ["x"; 12].join(" || ")),
        ] {
            let err = check_text(&chain, 1000, 64, 10).expect_err(&chain);
            assert!(
                err.to_string().contains("sql.max_operators"),
                "{chain}: {err}"
            );
        }
        let nested = format!(
            "SELECT {} 1 {}",
            "CASE WHEN a THEN ".repeat(6),
            " END".repeat(6)
        );
        let err = check_text(&nested, 1000, 4, 100).expect_err("nested CASE");
        assert!(err.to_string().contains("sql.max_nesting_depth"), "{err}");
        assert!(matches!(
            check_text("SELECT 'unterminated", 1000, 4, 10),
            Err(SqlError::Parse(_))
        ));
    }

    #[test]
    fn a_query_pool_enforces_its_own_and_the_shared_limit() {
        let shared: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let a: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(shared.clone(), 600));
        let b: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(shared.clone(), 600));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(500).expect("within both");
        let err = ra.try_grow(200).expect_err("over the query's limit");
        assert!(
            memory_message(&err.to_string()).starts_with("query exceeded its memory limit of 0 MB")
        );
        rb.try_grow(400).expect("shared has 500 left");
        let err = rb.try_grow(150).expect_err("over the shared limit");
        assert!(
            memory_message(&err.to_string()).contains("sql.memory_limit_bytes"),
            "{err}"
        );
        drop(ra);
        rb.try_grow(150).expect("the other query freed its share");
    }

    #[tokio::test]
    async fn the_gate_refuses_past_its_queue() {
        let gate = Arc::new(Gate::new(1, 1));
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let first = gate.enter(deadline, 5000).await.expect("a turn");
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.enter(deadline, 5000).await.map(|_| ()) })
        };
        while gate.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let refused = gate.enter(deadline, 5000).await.expect_err("queue full");
        assert_eq!(refused.pinot_code(), 211);
        assert!(
            refused.to_string().contains("sql.max_queued = 1"),
            "{refused}"
        );
        drop(first);
        waiter
            .await
            .expect("join")
            .expect("the waiter got its turn");
        assert_eq!(gate.running(), 0);
    }
}
