//! Text `a || b` as the bounded `concat` of the query ([`crate::bounded`]): the operator is no
//! function, so without this `s || s || s ...` over a few CTE levels, or a long literal `||` a
//! column, would make values of any size unchecked. `NULL || x` stays NULL (`concat` would skip
//! the NULL), so `a || b` becomes `CASE WHEN a IS NULL OR b IS NULL THEN NULL ELSE concat(a, b)
//! END`. User queries only; list `||` is already `array_concat`, which is bounded too.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    BinaryExpr, Case, Expr, ExprSchemable, LogicalPlan, Operator, ScalarUDF,
};
use datafusion::optimizer::AnalyzerRule;

#[derive(Debug)]
pub struct ConcatOperator {
    /// The query's bounded `concat`.
    pub concat: Arc<ScalarUDF>,
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

impl AnalyzerRule for ConcatOperator {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            // Expressions read the node's inputs: their types come from those schemas.
            let mut schema = datafusion::common::DFSchema::empty();
            for input in node.inputs() {
                schema.merge(input.schema());
            }
            // Output columns keep the names the query gave them.
            let names = NamePreserver::new(&node);
            let rewritten = node.map_expressions(|e| {
                // Grouping sets are left as they are (an alias would hide them).
                if matches!(e, Expr::GroupingSet(_)) {
                    return Ok(Transformed::no(e));
                }
                let saved = names.save(&e);
                let rewritten = e.transform_up(|e| match e {
                    Expr::BinaryExpr(BinaryExpr {
                        left,
                        op: Operator::StringConcat,
                        right,
                    }) if left.get_type(&schema).is_ok_and(|t| is_text(&t))
                        && right.get_type(&schema).is_ok_and(|t| is_text(&t)) =>
                    {
                        let call = Expr::ScalarFunction(ScalarFunction::new_udf(
                            self.concat.clone(),
                            vec![(*left).clone(), (*right).clone()],
                        ));
                        // A NULL of the operands' (coerced, shared) type, so the CASE keeps it.
                        let null =
                            Expr::Literal(ScalarValue::try_from(&left.get_type(&schema)?)?, None);
                        let either_null = left.is_null().or(right.is_null());
                        Ok(Transformed::yes(Expr::Case(Case::new(
                            None,
                            vec![(Box::new(either_null), Box::new(null))],
                            Some(Box::new(call)),
                        ))))
                    }
                    other => Ok(Transformed::no(other)),
                })?;
                Ok(if rewritten.transformed {
                    rewritten.update_data(|e| saved.restore(e))
                } else {
                    rewritten
                })
            })?;
            // concat may be nullable where || over NOT NULL columns was not.
            if rewritten.transformed {
                rewritten.map_data(|p| p.recompute_schema())
            } else {
                Ok(rewritten)
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "rtap_bounded_concat_operator"
    }
}
