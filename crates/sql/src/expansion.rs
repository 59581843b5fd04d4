//! How large a query's plan becomes once its CTEs are expanded, estimated on its text before
//! DataFusion plans it.
//!
//! DataFusion copies a CTE into its plan at every reference, and both its SQL planner and its
//! optimizer work on the copies: a chain of CTEs that each read the one before twice doubles at
//! every step (`WITH a0 AS (...), a1 AS (SELECT * FROM a0 UNION ALL SELECT * FROM a0), ...`),
//! so a few hundred bytes of SQL become millions of plan nodes, built in synchronous planning
//! where the query's time limit cannot stop it (13 steps: 4.6 s and 1.5 GB). The estimate counts
//! the table reads and query branches the expanded query plans: each CTE counts once where it
//! is defined and again at each reference (what its body counts, at least one), every table
//! read and every SELECT or VALUES branch one; CTEs nested in subqueries and CTEs that read
//! earlier ones included, names resolved as DataFusion resolves them. A chain of CTEs that
//! each read the one before once grows quadratically and is caught too. The count stops at
//! the limit.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::{Ident, ObjectName, Query, SetExpr, Visit, Visitor};

/// Table reads and query branches of `sql` with its CTEs expanded, or more than `limit` when
/// it is past it; `None` when DataFusion's parser does not take it (planning fails the same
/// way). Parsed by DataFusion's own parser, so every form it plans is counted (its EXPLAIN
/// options included).
pub fn expanded_reads(sql: &str, limit: u64) -> Option<u64> {
    let statements = DFParser::parse_sql(sql).ok()?;
    let mut total = 0u64;
    for statement in &statements {
        total = total.saturating_add(statement_reads(statement, limit));
    }
    Some(total)
}

fn statement_reads(statement: &Statement, limit: u64) -> u64 {
    match statement {
        Statement::Statement(statement) => {
            let mut count = Expansion {
                frames: Vec::new(),
                bodies: HashMap::new(),
                total: 0,
                limit,
            };
            let _ = statement.visit(&mut count);
            // Stopped early: the frames hold what was counted so far, past the limit.
            let partial = count.frames.iter().map(|f| f.reads).max().unwrap_or(0);
            count.total.max(partial)
        }
        Statement::Explain(explain) => statement_reads(&explain.statement, limit),
        // Refused before planning (rtap is read-only).
        _ => 0,
    }
}

/// A name as DataFusion resolves it: unquoted parts in lower case, quoted ones as written,
/// joined by dots (a CTE named `"s.a"` is what `FROM s.a` finds).
fn normalized<'a>(parts: impl Iterator<Item = &'a Ident>) -> String {
    parts
        .map(|ident| match ident.quote_style {
            Some(_) => ident.value.clone(),
            None => ident.value.to_lowercase(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Branches of a query's body (each SELECT or VALUES of its UNIONs): each is planned, table
/// or not.
fn branches(body: &SetExpr) -> u64 {
    match body {
        SetExpr::SetOperation { left, right, .. } => branches(left).saturating_add(branches(right)),
        _ => 1,
    }
}

struct Frame {
    /// The CTEs this query defined so far, with what each reads.
    ctes: HashMap<String, u64>,
    /// Reads and branches counted in this query so far.
    reads: u64,
    /// The CTE whose body this query is.
    cte: Option<String>,
}

struct Expansion {
    /// One frame per query being visited, the innermost last.
    frames: Vec<Frame>,
    /// CTE bodies not yet visited, by the address of their query, with the CTE's name.
    bodies: HashMap<*const Query, String>,
    total: u64,
    limit: u64,
}

impl Expansion {
    fn add(&mut self, n: u64) -> ControlFlow<()> {
        let Some(frame) = self.frames.last_mut() else {
            return ControlFlow::Continue(());
        };
        frame.reads = frame.reads.saturating_add(n);
        if frame.reads > self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Visitor for Expansion {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let cte = self.bodies.remove(&(query as *const Query));
        if let Some(with) = &query.with {
            for table in &with.cte_tables {
                self.bodies.insert(
                    table.query.as_ref() as *const Query,
                    normalized(std::iter::once(&table.alias.name)),
                );
            }
        }
        self.frames.push(Frame {
            ctes: HashMap::new(),
            reads: 0,
            cte,
        });
        self.add(branches(&query.body))
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        let Some(done) = self.frames.pop() else {
            return ControlFlow::Continue(());
        };
        let reads = done.reads.max(1);
        match (self.frames.last_mut(), done.cte) {
            // A CTE is planned where it is defined, and copied at each reference.
            (Some(parent), Some(name)) => {
                let kept = parent.ctes.entry(name).or_insert(0);
                *kept = (*kept).max(reads);
            }
            (Some(_), None) => {}
            (None, _) => {
                self.total = done.reads;
                return ControlFlow::Continue(());
            }
        }
        self.add(reads)
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let name = normalized(relation.0.iter().filter_map(|part| part.as_ident()));
        // The largest CTE of that name in scope (a WITH RECURSIVE body that is a UNION loses
        // its own WITH in DataFusion), else a table.
        let reads = self
            .frames
            .iter()
            .filter_map(|f| f.ctes.get(&name).copied())
            .max()
            .unwrap_or(1);
        self.add(reads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of CTEs, each reading the one before twice.
    fn doubling(levels: usize) -> String {
        let mut sql = String::from("WITH a0 AS (SELECT order_id FROM orders)");
        for i in 1..=levels {
            let p = i - 1;
            sql += &format!(", a{i} AS (SELECT * FROM a{p} UNION ALL SELECT * FROM a{p})");
        }
        sql + &format!(" SELECT COUNT(*) FROM a{levels}")
    }

    #[test]
    fn reads_are_counted_with_ctes_expanded() {
        let n = |sql: &str| expanded_reads(sql, u64::MAX).expect(sql);
        assert_eq!(n("SELECT 1"), 1);
        assert_eq!(n("SELECT * FROM orders a JOIN orders b ON a.x = b.x"), 3);
        // Each step doubles.
        assert!(n(&doubling(3)) < 100);
        assert!(n(&doubling(20)) > 1 << 20);
        assert!(n(&doubling(11)) >= 2 * n(&doubling(10)));
        // Branches without a table count: 3 for the CTE's planning, 3 per reference.
        assert_eq!(
            n("WITH c AS (SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3) SELECT * FROM c, c AS d"),
            3 + 1 + 3 + 3
        );
        // A CTE never referenced is still planned.
        assert_eq!(
            n("WITH a AS (SELECT * FROM orders, orders b) SELECT 1"),
            3 + 1
        );
        // Quoted names keep their case; a dotted quoted name is what a qualified name finds.
        assert_eq!(
            n("WITH \"A0\" AS (SELECT x FROM orders), a0 AS (SELECT 1 x) SELECT * FROM \"A0\", \"A0\" AS b"),
            2 + 1 + (1 + 2 + 2)
        );
        assert_eq!(
            n("WITH \"s.a0\" AS (SELECT x FROM orders) SELECT * FROM s.a0, s.a0 AS b"),
            2 + (1 + 2 + 2)
        );
        // Subqueries in FROM and in expressions.
        assert_eq!(
            n("SELECT * FROM (SELECT * FROM orders) t WHERE x IN (SELECT y FROM orders)"),
            1 + 2 + 2
        );
        // DataFusion's EXPLAIN forms (not all of them sqlparser's) are counted too.
        let explained = format!("EXPLAIN FORMAT indent {}", doubling(24));
        assert!(expanded_reads(&explained, 10_000).expect("parses") > 10_000);
        // Past the limit, counting stops.
        assert!(expanded_reads(&doubling(60), 10_000).expect("parses") > 10_000);
        assert_eq!(expanded_reads("SELEC nonsense", 10), None);
    }
}
