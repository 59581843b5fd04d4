//! What a Pinot client sees of a result: the names of unaliased columns, the result types of
//! aggregations, and their values over no rows.
//!
//! Pinot names an unaliased expression by its own canonical form (`sum(order_total)`,
//! `count(*)`, `datetrunc('MINUTE',time_ms)`, `times(order_total,'2')`), where DataFusion writes
//! `sum(orders.order_total)`; it answers SUM, MIN, MAX and AVG as DOUBLE, COUNT as LONG and
//! DISTINCTCOUNT as INT whatever the column's type; and with null handling off (its default)
//! an aggregation over no rows answers a default value (SUM 0, MIN +Infinity, MAX and AVG
//! -Infinity, ...) rather than null. The shape is read from the query's select list (parsed
//! once more, a few microseconds) and applied to the finished result: only the top-level
//! select items are touched, positionally, and only when there is no wildcard.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::is_null;
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CastKind, DuplicateTreatment, Expr, FunctionArg, FunctionArgExpr,
    FunctionArguments, SelectItem, SetExpr, Statement, UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::dialect::Catalog;

/// Pinot's result type of an aggregation, and its value over no rows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Double(f64),
    Long(i64),
    Int(i32),
    /// Arithmetic (`plus`, `times`, ...): DOUBLE in Pinot, nothing to fill.
    Arithmetic,
}

/// The aggregation a top-level call is, by Pinot's function name (lowercase, no underscores).
fn kind_of(function: &str, distinct: bool) -> Option<Kind> {
    Some(match function {
        "count" if distinct => Kind::Int(0),
        "count" | "countmv" => Kind::Long(0),
        "sum" | "summv" => Kind::Double(0.0),
        "min" | "minmv" => Kind::Double(f64::INFINITY),
        "max" | "maxmv" | "avg" | "avgmv" | "mode" | "minmaxrange" | "minmaxrangemv" => {
            Kind::Double(f64::NEG_INFINITY)
        }
        f if f.starts_with("percentiletdigest") || f.starts_with("percentilerawtdigest") => {
            Kind::Double(f64::NAN)
        }
        f if f.starts_with("percentileest") => Kind::Long(i64::MIN),
        f if f.starts_with("percentile") => Kind::Double(f64::NEG_INFINITY),
        "distinctcount" | "distinctcountmv" | "distinctcountbitmap" | "distinctcountbitmapmv" => {
            Kind::Int(0)
        }
        "distinctcounthll" | "distinctcounthllmv" => Kind::Long(0),
        _ => return None,
    })
}

/// Pinot's spelling of a function name: lower case without underscores.
fn canonical_function(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// One top-level select item as Pinot answers it.
#[derive(Debug, Clone, PartialEq)]
struct Column {
    /// Pinot's name for an unaliased item (None: keep the engine's name).
    name: Option<String>,
    kind: Option<Kind>,
}

/// The Pinot shape of a query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    columns: Vec<Column>,
    /// `SELECT *`: Pinot answers the columns in alphabetical order.
    sorted: bool,
}

fn literal(v: &Value) -> Option<String> {
    Some(match v {
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => format!("'{s}'"),
        Value::Number(n, _) => format!("'{n}'"),
        Value::Boolean(b) => format!("'{b}'"),
        Value::Null => "'null'".to_string(),
        _ => return None,
    })
}

fn operator(op: &BinaryOperator) -> Option<&'static str> {
    Some(match op {
        BinaryOperator::Plus => "plus",
        BinaryOperator::Minus => "minus",
        BinaryOperator::Multiply => "times",
        BinaryOperator::Divide => "divide",
        BinaryOperator::Modulo => "mod",
        BinaryOperator::Eq => "equals",
        BinaryOperator::NotEq => "not_equals",
        BinaryOperator::Gt => "greater_than",
        BinaryOperator::GtEq => "greater_than_or_equal",
        BinaryOperator::Lt => "less_than",
        BinaryOperator::LtEq => "less_than_or_equal",
        BinaryOperator::And => "and",
        BinaryOperator::Or => "or",
        _ => return None,
    })
}

/// Pinot's name of an expression, or None for a form it is not known to name.
fn name(e: &Expr, catalog: &Catalog) -> Option<String> {
    Some(match e {
        Expr::Identifier(i) => catalog.canonical(&i.value),
        Expr::CompoundIdentifier(parts) => {
            let joined: Vec<&str> = parts.iter().map(|p| p.value.as_str()).collect();
            catalog.canonical(&joined.join("."))
        }
        Expr::Value(v) => literal(&v.value)?,
        Expr::Nested(inner) => name(inner, catalog)?,
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => format!("'-{n}'"),
                _ => return None,
            },
            other => format!("minus('0',{})", name(other, catalog)?),
        },
        Expr::BinaryOp { left, op, right } => format!(
            "{}({},{})",
            operator(op)?,
            name(left, catalog)?,
            name(right, catalog)?
        ),
        Expr::Cast {
            kind: CastKind::Cast,
            expr,
            data_type,
            ..
        } => format!(
            "cast({},'{}')",
            name(expr, catalog)?,
            data_type.to_string().to_uppercase()
        ),
        // SUBSTR(s, begin, end): its own syntax in the parser.
        Expr::Substring {
            expr,
            substring_from,
            substring_for,
            ..
        } => {
            let mut args = vec![name(expr, catalog)?];
            for a in [substring_from, substring_for].into_iter().flatten() {
                args.push(name(a, catalog)?);
            }
            format!("substr({})", args.join(","))
        }
        Expr::Function(f) => {
            if f.filter.is_some() || f.over.is_some() {
                return None;
            }
            let mut function = canonical_function(&f.name.to_string());
            let FunctionArguments::List(list) = &f.args else {
                return None;
            };
            if list.duplicate_treatment == Some(DuplicateTreatment::Distinct) {
                // Pinot rewrites COUNT/SUM/AVG(DISTINCT x) to its own functions.
                function = match function.as_str() {
                    "count" => "distinctcount".into(),
                    "sum" => "distinctsum".into(),
                    "avg" => "distinctavg".into(),
                    _ => return None,
                };
            }
            let mut args = Vec::with_capacity(list.args.len());
            for a in &list.args {
                args.push(match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => name(e, catalog)?,
                    FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => "*".into(),
                    _ => return None,
                });
            }
            let is_aggregate = kind_of(&function, false).is_some()
                || function == "distinctcount"
                || function == "distinctsum"
                || function == "distinctavg"
                || function == "sumprecision";
            if function == "lastwithtime" || function == "firstwithtime" {
                // The type argument in upper case.
                if let Some(t) = args.last_mut() {
                    *t = t.to_uppercase();
                }
                format!("{function}({})", args.join(","))
            } else if is_aggregate && function.starts_with("percentile") && args.len() == 2 {
                // PERCENTILE(x, 90) is `percentile(x, 90.0)`: the percentile as a Java double.
                let p: f64 = args[1].trim_matches('\'').parse().ok()?;
                format!("{function}({}, {p:?})", args[0])
            } else if is_aggregate {
                // Aggregations print their first argument only (`mode(x)` for MODE(x, 'MAX')).
                format!("{function}({})", args.first().map_or("", String::as_str))
            } else {
                format!("{function}({})", args.join(","))
            }
        }
        _ => return None,
    })
}

/// The aggregation a top-level select item is.
fn kind(e: &Expr) -> Option<Kind> {
    match e {
        Expr::Nested(inner) => kind(inner),
        Expr::BinaryOp {
            op:
                BinaryOperator::Plus
                | BinaryOperator::Minus
                | BinaryOperator::Multiply
                | BinaryOperator::Divide
                | BinaryOperator::Modulo,
            ..
        } => Some(Kind::Arithmetic),
        Expr::Function(f) if f.over.is_none() => {
            let distinct = matches!(&f.args, FunctionArguments::List(l) if l.duplicate_treatment == Some(DuplicateTreatment::Distinct));
            kind_of(&canonical_function(&f.name.to_string()), distinct)
        }
        _ => None,
    }
}

impl Shape {
    /// The shape of `sql` (a query of the Pinot dialect), or None when it is not one plain
    /// SELECT without wildcards.
    pub fn of(sql: &str, catalog: &Catalog) -> Option<Shape> {
        let statements = Parser::parse_sql(&GenericDialect {}, sql).ok()?;
        let [Statement::Query(query)] = statements.as_slice() else {
            return None;
        };
        let SetExpr::Select(select) = query.body.as_ref() else {
            return None;
        };
        if let [SelectItem::Wildcard(options)] = select.projection.as_slice() {
            if options.opt_exclude.is_none()
                && options.opt_except.is_none()
                && options.opt_replace.is_none()
                && options.opt_rename.is_none()
            {
                return Some(Shape {
                    columns: Vec::new(),
                    sorted: true,
                });
            }
        }
        let mut columns = Vec::with_capacity(select.projection.len());
        for item in &select.projection {
            columns.push(match item {
                SelectItem::UnnamedExpr(e) => Column {
                    name: name(e, catalog),
                    kind: kind(e),
                },
                SelectItem::ExprWithAlias { expr, .. } => Column {
                    name: None,
                    kind: kind(expr),
                },
                _ => return None,
            });
        }
        Some(Shape {
            columns,
            sorted: false,
        })
    }

    /// `SELECT *`'s columns in alphabetical order (a byte-wise sort, as Java's String order
    /// for these names).
    fn sort_columns(schema: SchemaRef, batches: Vec<RecordBatch>) -> (SchemaRef, Vec<RecordBatch>) {
        let mut order: Vec<usize> = (0..schema.fields().len()).collect();
        order.sort_by(|&a, &b| schema.field(a).name().cmp(schema.field(b).name()));
        let Ok(sorted) = schema.project(&order) else {
            return (schema, batches);
        };
        let mut out = Vec::with_capacity(batches.len());
        for b in &batches {
            match b.project(&order) {
                Ok(p) => out.push(p),
                Err(_) => return (schema, batches),
            }
        }
        (Arc::new(sorted), out)
    }

    /// The result with Pinot's names, types and values over no rows (`null_handling`: nulls
    /// stay null, as with Pinot's `enableNullHandling`).
    pub fn apply(
        &self,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        null_handling: bool,
    ) -> (SchemaRef, Vec<RecordBatch>) {
        if self.sorted {
            return Self::sort_columns(schema, batches);
        }
        if self.columns.len() != schema.fields().len() {
            return (unqualified(&schema), batches);
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(f, c)| {
                let name = c.name.clone().unwrap_or_else(|| f.name().clone());
                let data_type = match c.kind {
                    Some(Kind::Double(_) | Kind::Arithmetic) => DataType::Float64,
                    Some(Kind::Long(_)) => DataType::Int64,
                    Some(Kind::Int(_)) => DataType::Int32,
                    // A column as it is keeps what its field says (a JSON column's Pinot type).
                    None => return f.as_ref().clone().with_name(name).with_nullable(true),
                };
                Field::new(name, data_type, true)
            })
            .collect();
        let target = Arc::new(Schema::new(fields));
        let mut out = Vec::with_capacity(batches.len());
        for batch in &batches {
            let mut columns = Vec::with_capacity(batch.num_columns());
            for (column, c) in batch.columns().iter().zip(&self.columns) {
                match convert(column, c.kind, null_handling) {
                    Some(converted) => columns.push(converted),
                    // Not a value of Pinot's type (MIN of text): the result as the engine made it.
                    None => return (unqualified(&schema), batches),
                }
            }
            match RecordBatch::try_new(target.clone(), columns) {
                Ok(b) => out.push(b),
                Err(_) => return (unqualified(&schema), batches),
            }
        }
        (target, out)
    }
}

/// One column in Pinot's type, nulls replaced by the aggregation's value over no rows.
fn convert(column: &ArrayRef, kind: Option<Kind>, null_handling: bool) -> Option<ArrayRef> {
    let Some(kind) = kind else {
        return Some(column.clone());
    };
    let fill = !null_handling && column.null_count() > 0;
    let strict = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let (target, empty) = match kind {
        Kind::Arithmetic => (DataType::Float64, None),
        Kind::Double(e) => (DataType::Float64, Some(ScalarValue::Float64(Some(e)))),
        Kind::Long(e) => (DataType::Int64, Some(ScalarValue::Int64(Some(e)))),
        Kind::Int(e) => (DataType::Int32, Some(ScalarValue::Int32(Some(e)))),
    };
    let c = cast_with_options(column, &target, &strict).ok()?;
    match empty {
        Some(empty) if fill => {
            let nulls = is_null(&c).ok()?;
            zip(&nulls, &empty.to_scalar().ok()?, &c).ok()
        }
        _ => Some(c),
    }
}

/// The schema with DataFusion's table qualifier taken out of column names
/// (`sum(orders.order_total)` -> `sum(order_total)`).
pub fn unqualified(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| f.name().contains("orders.")) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_name(f.name().replace("orders.", ""))
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}
