//! How large a query's plan becomes once its CTEs are expanded, estimated on its text before
//! DataFusion plans it.
//!
//! DataFusion copies a CTE into its plan at every reference, and both its SQL planner and its
//! optimizer work on the copies: a chain of CTEs that each read the one before twice doubles at
//! every step (`WITH a0 AS (...), a1 AS (SELECT * FROM a0 UNION ALL SELECT * FROM a0), ...`),
//! so a few hundred bytes of SQL become millions of plan nodes, built in synchronous planning
//! where the query's time limit cannot stop it (13 steps: 4.6 s and 1.5 GB). The estimate counts
//! the table reads the expanded query makes: each reference to a CTE counts what the CTE's body
//! reads (at least one), everything else one; CTEs nested in subqueries and CTEs that read
//! earlier ones included. The count stops at the limit.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{ObjectName, Query, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Table reads of `sql` with its CTEs expanded, or more than `limit` when it is past it;
/// `None` when the text does not parse (the planner says why).
pub fn expanded_reads(sql: &str, limit: u64) -> Option<u64> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).ok()?;
    let mut total = 0u64;
    for statement in &statements {
        let mut count = Expansion {
            frames: Vec::new(),
            bodies: HashMap::new(),
            total: 0,
            limit,
        };
        let _ = statement.visit(&mut count);
        // Stopped early: the frames hold what was counted so far, past the limit.
        let partial = count.frames.iter().map(|f| f.reads).max().unwrap_or(0);
        total = total.saturating_add(count.total.max(partial));
    }
    Some(total)
}

struct Frame {
    /// The CTEs this query defined so far, with what each reads.
    ctes: HashMap<String, u64>,
    /// Reads counted in this query so far.
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

impl Visitor for Expansion {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let cte = self.bodies.remove(&(query as *const Query));
        if let Some(with) = &query.with {
            for table in &with.cte_tables {
                self.bodies.insert(
                    table.query.as_ref() as *const Query,
                    table.alias.name.value.to_lowercase(),
                );
            }
        }
        self.frames.push(Frame {
            ctes: HashMap::new(),
            reads: 0,
            cte,
        });
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        let Some(done) = self.frames.pop() else {
            return ControlFlow::Continue(());
        };
        match (self.frames.last_mut(), done.cte) {
            // A CTE's body counts where the CTE is referenced, at least once.
            (Some(parent), Some(name)) => {
                parent.ctes.insert(name, done.reads.max(1));
            }
            (Some(parent), None) => parent.reads = parent.reads.saturating_add(done.reads),
            (None, _) => self.total = done.reads,
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let name = relation
            .0
            .last()
            .and_then(|part| part.as_ident())
            .map(|ident| ident.value.to_lowercase());
        // The innermost CTE of that name, else a table.
        let reads = name
            .and_then(|n| {
                self.frames
                    .iter()
                    .rev()
                    .find_map(|f| f.ctes.get(&n).copied())
            })
            .unwrap_or(1);
        let Some(frame) = self.frames.last_mut() else {
            return ControlFlow::Continue(());
        };
        frame.reads = frame.reads.saturating_add(reads);
        if frame.reads > self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
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
        assert_eq!(n("SELECT 1"), 0);
        assert_eq!(n("SELECT * FROM orders a JOIN orders b ON a.x = b.x"), 2);
        assert_eq!(n(&doubling(3)), 8);
        assert_eq!(n(&doubling(20)), 1 << 20);
        // A CTE that reads nothing still counts once per reference.
        assert_eq!(
            n("WITH c AS (SELECT 1 AS x) SELECT * FROM c, c AS d, c AS e"),
            3
        );
        // Subqueries and their own CTEs, and a CTE name shadowed inside.
        assert_eq!(
            n(
                "SELECT * FROM (WITH a AS (SELECT * FROM orders), b AS (SELECT * FROM a, a AS a2) \
               SELECT * FROM b, b AS b2) t WHERE x IN (SELECT y FROM orders)"
            ),
            5
        );
        assert_eq!(
            n(
                "WITH a AS (SELECT * FROM orders, orders o2) SELECT * FROM (WITH a AS (SELECT 1) \
               SELECT * FROM a) t, a"
            ),
            3
        );
        // Past the limit, counting stops.
        assert!(expanded_reads(&doubling(60), 10_000).expect("parses") > 10_000);
        assert_eq!(expanded_reads("SELEC nonsense", 10), None);
    }
}
