//! Pinot's comparison semantics, applied to a query's plan before DataFusion's type coercion:
//!
//! - **a literal takes the column's type**: `risk_score = '5'` compares numbers and
//!   `customer_zipcode = 10001` compares text (DataFusion would cast the column instead: text
//!   order for numbers, or a failing cast of every zip code to a number). A literal that is not
//!   a value of the column's type is an error naming both.
//! - **multi-value columns match when any value does**: `coupon = 'SAVE10'` and `coupon IN
//!   ('A', 'B')` are true for an order holding that coupon among others, `coupon != 'SAVE10'`
//!   and `NOT IN` when it holds none of them (Pinot evaluates an exclusive predicate on a
//!   multi-value column as "no value matches"), `itemQtys > 3` when any value is over 3.
//!
//! A [`FunctionRewrite`] sees one expression at a time with its input's schema; the analyzer
//! walks the tree.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::functions_nested::expr_fn::{array_has, array_has_any, array_max, array_min};
use datafusion::functions_nested::make_array::make_array;
use datafusion::logical_expr::expr::{Between, InList};
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator};

#[derive(Debug)]
pub struct PinotComparisons;

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_number(t: &DataType) -> bool {
    t.is_integer() || t.is_floating()
}

fn element(t: &DataType) -> Option<&DataType> {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            Some(f.data_type())
        }
        _ => None,
    }
}

/// `value` as a value of `target` when Pinot would convert it: text to a number column's type,
/// a number to text. None when no conversion applies (DataFusion's own coercion then does).
fn convert(value: &ScalarValue, target: &DataType, side: &Expr) -> Result<Option<ScalarValue>> {
    if value.is_null() {
        return Ok(None);
    }
    let from = value.data_type();
    if is_number(target) && is_text(&from) {
        let text = value.to_string();
        // Pinot reads 'true'/'false' as 1/0, and a timestamp as epoch ms, for a number column.
        let special = match text.trim().to_ascii_lowercase().as_str() {
            "true" => Some(1),
            "false" => Some(0),
            t => timestamp_ms(t),
        };
        if let Some(n) = special {
            return ScalarValue::Int64(Some(n)).cast_to(target).map(Some);
        }
        return match ScalarValue::try_from_string(text.trim().to_string(), target) {
            Ok(v) => Ok(Some(v)),
            // A decimal literal against an integer column: compare as numbers.
            Err(_) => {
                match ScalarValue::try_from_string(text.trim().to_string(), &DataType::Float64) {
                    Ok(v) => Ok(Some(v)),
                    Err(_) => datafusion::common::plan_err!(
                        "cannot compare {side} ({}) with '{text}': not a number",
                        crate::response::pinot_type(target)
                    ),
                }
            }
        };
    }
    if is_text(target) && is_number(&from) {
        return Ok(Some(ScalarValue::Utf8(Some(value.to_string()))));
    }
    Ok(None)
}

/// The literal on one side, converted to the other side's type (or element type).
fn coerce_literal(e: Expr, other_type: &DataType, other: &Expr) -> Result<Expr> {
    let target = element(other_type).unwrap_or(other_type);
    match literal(&e).map(|v| convert(v, target, other)).transpose()? {
        Some(Some(v)) => Ok(Expr::Literal(v, None)),
        _ => Ok(e),
    }
}

/// `yyyy-mm-dd hh:mm:ss[.fff]` (UTC) as epoch ms, as Pinot reads a timestamp literal.
fn timestamp_ms(text: &str) -> Option<i64> {
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc().timestamp_millis())
}

fn mirrored(op: Operator) -> Operator {
    match op {
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        other => other,
    }
}

impl FunctionRewrite for PinotComparisons {
    fn name(&self) -> &str {
        "pinot_comparisons"
    }

    fn rewrite(
        &self,
        expr: Expr,
        schema: &DFSchema,
        _config: &ConfigOptions,
    ) -> Result<Transformed<Expr>> {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if matches!(
                    op,
                    Operator::Eq
                        | Operator::NotEq
                        | Operator::Lt
                        | Operator::LtEq
                        | Operator::Gt
                        | Operator::GtEq
                ) =>
            {
                let (lt, rt) = match (left.get_type(schema), right.get_type(schema)) {
                    (Ok(l), Ok(r)) => (l, r),
                    _ => {
                        return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                            left,
                            op,
                            right,
                        })))
                    }
                };
                // The multi-value side on the left.
                let (mv, mv_type, value, op) = if element(&lt).is_some() && element(&rt).is_none() {
                    (*left, lt, *right, op)
                } else if element(&rt).is_some() && element(&lt).is_none() {
                    (*right, rt, *left, mirrored(op))
                } else {
                    // Two single values (or two lists): only the literal's type changes.
                    let left2 = coerce_literal((*left).clone(), &rt, &right)?;
                    let right2 = coerce_literal((*right).clone(), &lt, &left)?;
                    let changed = left2 != *left || right2 != *right;
                    let e = Expr::BinaryExpr(BinaryExpr {
                        left: Box::new(left2),
                        op,
                        right: Box::new(right2),
                    });
                    return Ok(if changed {
                        Transformed::yes(e)
                    } else {
                        Transformed::no(e)
                    });
                };
                let value = coerce_literal(value, &mv_type, &mv)?;
                let any = match op {
                    Operator::Eq => array_has(mv, value),
                    Operator::NotEq => Expr::Not(Box::new(array_has(mv, value))),
                    Operator::Lt | Operator::LtEq => Expr::BinaryExpr(BinaryExpr {
                        left: Box::new(array_min(mv)),
                        op,
                        right: Box::new(value),
                    }),
                    _ => Expr::BinaryExpr(BinaryExpr {
                        left: Box::new(array_max(mv)),
                        op,
                        right: Box::new(value),
                    }),
                };
                Ok(Transformed::yes(any))
            }
            Expr::InList(InList {
                expr,
                list,
                negated,
            }) => {
                let Ok(t) = expr.get_type(schema) else {
                    return Ok(Transformed::no(Expr::InList(InList {
                        expr,
                        list,
                        negated,
                    })));
                };
                let list: Vec<Expr> = list
                    .into_iter()
                    .map(|v| coerce_literal(v, &t, &expr))
                    .collect::<Result<_>>()?;
                if element(&t).is_none() {
                    return Ok(Transformed::yes(Expr::InList(InList {
                        expr,
                        list,
                        negated,
                    })));
                }
                let any = array_has_any(*expr, make_array(list));
                Ok(Transformed::yes(if negated {
                    Expr::Not(Box::new(any))
                } else {
                    any
                }))
            }
            Expr::Between(Between {
                expr,
                negated,
                low,
                high,
            }) => {
                let Ok(t) = expr.get_type(schema) else {
                    return Ok(Transformed::no(Expr::Between(Between {
                        expr,
                        negated,
                        low,
                        high,
                    })));
                };
                let low = Box::new(coerce_literal(*low, &t, &expr)?);
                let high = Box::new(coerce_literal(*high, &t, &expr)?);
                Ok(Transformed::yes(Expr::Between(Between {
                    expr,
                    negated,
                    low,
                    high,
                })))
            }
            other => Ok(Transformed::no(other)),
        }
    }
}
