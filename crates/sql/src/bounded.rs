//! Functions whose output can be far larger than their input (`range(0, 1e9)`,
//! `repeat(x, 1e9)`, `replace(s, 'a', long)`, ...), wrapped so that a call refuses, before
//! allocating anything, to make more than the query has left of `sql.max_function_output`, or
//! any single value over `sql.max_value_size`. A memory pool cannot stop these: DataFusion does
//! not charge what a scalar function returns to it.
//!
//! Sizes are in units: bytes of text, or elements (counted down to the innermost list) of a
//! list. The budget is the query's: every call of every wrapped function in one query draws on
//! the same [`Budget`], so a query cannot stay under the limit by calling the function once per
//! batch or many times. The per-value cap is what keeps a join that copies one big value into
//! many rows (`WITH a AS (SELECT repeat('x', n) s) SELECT s FROM a, orders`) bounded: no value
//! can be big enough to matter when copied a batch's worth of times.
//!
//! The wrapper keeps the built-in's name, aliases, signature and types and calls it when the
//! arguments are within bounds, so answers are unchanged below the limits.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

/// Marks the error, so it is answered as a resource limit (Pinot 245).
pub const OVER_LIMIT: &str = "sql.max_function_output";
/// Marks the error for a single value over its cap.
pub const OVER_VALUE: &str = "sql.max_value_size";

/// Characters a number may take when written as text (`array_to_string`).
const NUMBER_TEXT: i128 = 24;

/// The functions wrapped, with what their output size depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `range(stop)`, `range(start, stop[, step])`: (stop - start) / step values.
    Range,
    /// `generate_series`: the same, one more (the end is included).
    Series,
    /// `repeat(text, n)`: length(text) x n bytes.
    Repeat,
    /// `lpad`/`rpad(text, n[, fill])`: n characters.
    Pad,
    /// `array_repeat(value, n)`: n values (n x its elements when the value is a list).
    ArrayRepeat,
    /// `array_resize(list, n[, fill])`: n values, each as large as the fill.
    ArrayResize,
    /// `array_replace[_n|_all](list, from, to[, n])`: every element may become `to`.
    ArrayReplace,
    /// `replace(text, from, to)`: each `from` may become `to`.
    Replace,
    /// `regexp_replace(text, pattern, replacement[, flags])`: an empty match at every position.
    RegexpReplace,
    /// `concat(a, b, ...)`, `overlay(text placing t ...)`, `make_array(a, b, ...)`,
    /// `array_concat`, `array_append`, `array_prepend`: the sum of the arguments.
    Concat,
    /// `concat_ws(sep, a, b, ...)`: the sum, and a separator between each two.
    ConcatWs,
    /// `array_to_string(list, delimiter[, null_text])`: every element as text.
    ArrayToString,
}

/// The functions to wrap, by their primary names (registering a wrapper under a primary name
/// also registers it under the built-in's aliases, e.g. `list_repeat`).
pub const WRAPPED: &[(&str, Kind)] = &[
    ("range", Kind::Range),
    ("generate_series", Kind::Series),
    ("repeat", Kind::Repeat),
    ("lpad", Kind::Pad),
    ("rpad", Kind::Pad),
    ("array_repeat", Kind::ArrayRepeat),
    ("array_resize", Kind::ArrayResize),
    ("array_replace", Kind::ArrayReplace),
    ("array_replace_n", Kind::ArrayReplace),
    ("array_replace_all", Kind::ArrayReplace),
    ("make_array", Kind::Concat),
    ("array_concat", Kind::Concat),
    ("array_append", Kind::Concat),
    ("array_prepend", Kind::Concat),
    ("replace", Kind::Replace),
    ("regexp_replace", Kind::RegexpReplace),
    ("concat", Kind::Concat),
    ("overlay", Kind::Concat),
    ("concat_ws", Kind::ConcatWs),
    ("array_to_string", Kind::ArrayToString),
];

/// What one query's functions may still make, shared by every wrapped call in the query.
#[derive(Debug)]
pub struct Budget {
    left: AtomicI64,
    limit: usize,
    max_value: usize,
}

impl Budget {
    pub fn new(limit: usize, max_value: usize) -> Arc<Self> {
        Arc::new(Budget {
            left: AtomicI64::new(i64::try_from(limit).unwrap_or(i64::MAX)),
            limit,
            max_value,
        })
    }

    /// Takes `units` from what is left, or says the query has made too much.
    fn take(&self, name: &str, units: i128) -> Result<()> {
        let units = i64::try_from(units).unwrap_or(i64::MAX);
        // Saturating: once spent, what is left stays below zero however many calls follow.
        let before = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(units).max(-1))
            })
            .unwrap_or(-1);
        if before < units {
            // Leave it spent: every later call fails too.
            return exec_err!(
                "{name}(): the functions of this query would make more than {} values or bytes \
                 of text, its limit ({OVER_LIMIT})",
                self.limit
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Bounded {
    inner: ScalarUDF,
    kind: Kind,
    budget: Arc<Budget>,
    /// The built-in's signature, but volatile: a call with constant arguments must not be
    /// folded into one value at planning (the check would see one row) and then copied into
    /// every row of every batch (which nothing would check).
    signature: Signature,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
            && self.kind == other.kind
            && Arc::ptr_eq(&self.budget, &other.budget)
    }
}
impl Eq for Bounded {}
impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.kind.hash(state);
        Arc::as_ptr(&self.budget).hash(state);
    }
}

impl Bounded {
    pub fn new(inner: ScalarUDF, kind: Kind, budget: Arc<Budget>) -> Self {
        let signature = Signature::new(
            inner.signature().type_signature.clone(),
            Volatility::Volatile,
        );
        Bounded {
            inner,
            kind,
            budget,
            signature,
        }
    }
}

/// One argument, read row by row without expanding a constant into a column (a constant of
/// 4 MB would otherwise be copied once per row just to be measured).
enum Arg<'a> {
    /// A constant and its units, measured once.
    Scalar(&'a ScalarValue, i128),
    Array(&'a ArrayRef),
    Missing,
}

impl<'a> Arg<'a> {
    fn of(args: &'a [ColumnarValue], i: usize) -> Self {
        match args.get(i) {
            Some(ColumnarValue::Scalar(s)) => Arg::Scalar(s, scalar_units(s)),
            Some(ColumnarValue::Array(a)) => Arg::Array(a),
            None => Arg::Missing,
        }
    }

    fn is_integer(&self) -> bool {
        match self {
            Arg::Scalar(s, _) => s.data_type().is_integer(),
            Arg::Array(a) => a.data_type().is_integer(),
            Arg::Missing => true,
        }
    }

    /// The integer at `row` (0 for NULL or missing).
    fn int_at(&self, row: usize) -> i128 {
        let scalar = match self {
            Arg::Scalar(s, _) => return int_of(s),
            Arg::Array(a) => ScalarValue::try_from_array(a, row).unwrap_or(ScalarValue::Null),
            Arg::Missing => return 0,
        };
        int_of(&scalar)
    }

    /// Units the value at `row` holds: bytes of text, innermost elements of a list, 1 for a
    /// number, the bytes it takes for anything else (binary, structs, maps).
    fn units_at(&self, row: usize) -> i128 {
        match self {
            Arg::Scalar(_, units) => *units,
            Arg::Array(a) => units(a, row),
            Arg::Missing => 0,
        }
    }

    /// Units of the value at `row` when written as text (`array_to_string`): text as it is,
    /// every other element as a number's worth of characters, each with `per_element` more.
    fn text_units_at(&self, row: usize, per_element: i128) -> i128 {
        match self {
            Arg::Scalar(s, _) => match scalar_list(s) {
                Some(list) => text_units(&list, 0, per_element),
                None => match scalar_text(s) {
                    Some(text) => text.len() as i128 + per_element,
                    None => NUMBER_TEXT + per_element,
                },
            },
            Arg::Array(a) => text_units(a, row, per_element),
            Arg::Missing => 0,
        }
    }
}

fn int_of(s: &ScalarValue) -> i128 {
    match s.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(v))) => i128::from(v),
        _ => 0,
    }
}

/// Units of a constant (see [`Arg::units_at`]).
fn scalar_units(s: &ScalarValue) -> i128 {
    if s.is_null() {
        return 0;
    }
    if let Some(list) = scalar_list(s) {
        return units(&list, 0);
    }
    if let Some(text) = scalar_text(s) {
        return text.len() as i128;
    }
    match s.to_array() {
        Ok(a) => units(&a, 0),
        // Cannot be measured: as large as anything may be.
        Err(_) => i128::from(i64::MAX),
    }
}

/// A constant list as the one-row array it holds (shared, not copied).
fn scalar_list(s: &ScalarValue) -> Option<ArrayRef> {
    match s {
        ScalarValue::List(a) => Some(a.clone() as ArrayRef),
        ScalarValue::LargeList(a) => Some(a.clone() as ArrayRef),
        ScalarValue::FixedSizeList(a) => Some(a.clone() as ArrayRef),
        _ => None,
    }
}

fn scalar_text(s: &ScalarValue) -> Option<&str> {
    match s {
        ScalarValue::Utf8(Some(t))
        | ScalarValue::LargeUtf8(Some(t))
        | ScalarValue::Utf8View(Some(t)) => Some(t),
        _ => None,
    }
}

/// Units one row of `a` holds, counting nested lists down to their elements.
fn units(a: &ArrayRef, row: usize) -> i128 {
    if a.is_null(row) {
        return 0;
    }
    match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(row).len() as i128,
        DataType::LargeUtf8 => a.as_string::<i64>().value(row).len() as i128,
        DataType::Utf8View => a.as_string_view().value(row).len() as i128,
        DataType::List(_) => all_units(&a.as_list::<i32>().value(row)),
        DataType::LargeList(_) => all_units(&a.as_list::<i64>().value(row)),
        DataType::FixedSizeList(_, _) => all_units(&a.as_fixed_size_list().value(row)),
        t if t.is_primitive() || matches!(t, DataType::Boolean | DataType::Null) => 1,
        // Binary, structs, maps, dictionaries, ...: the bytes this one row takes.
        _ => a
            .slice(row, 1)
            .to_data()
            .get_slice_memory_size()
            .map_or(i128::from(i64::MAX), |b| b as i128)
            .max(1),
    }
}

fn all_units(a: &ArrayRef) -> i128 {
    (0..a.len()).map(|row| units(a, row).max(1)).sum()
}

fn text_units(a: &ArrayRef, row: usize, per_element: i128) -> i128 {
    if a.is_null(row) {
        return per_element;
    }
    let inner = match a.data_type() {
        DataType::List(_) => a.as_list::<i32>().value(row),
        DataType::LargeList(_) => a.as_list::<i64>().value(row),
        DataType::FixedSizeList(_, _) => a.as_fixed_size_list().value(row),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            return units(a, row) + per_element
        }
        _ => return NUMBER_TEXT + per_element,
    };
    (0..inner.len())
        .map(|r| text_units(&inner, r, per_element))
        .sum()
}

impl Bounded {
    /// The units this call would make for each row (before anything is made), or an error for
    /// arguments it cannot bound.
    fn row_sizes(&self, args: &[ColumnarValue], rows: usize) -> Result<Vec<i128>> {
        let name = self.inner.name();
        let int = |i: usize| -> Result<Arg<'_>> {
            let a = Arg::of(args, i);
            if !a.is_integer() {
                return exec_err!(
                    "{name}(): argument {} must be an integer in /query/sql (so its output can be \
                     bounded, {OVER_LIMIT})",
                    i + 1
                );
            }
            Ok(a)
        };
        let arg = |i: usize| Arg::of(args, i);
        let mut sizes = Vec::with_capacity(rows);
        match self.kind {
            Kind::Range | Kind::Series => {
                let (start, stop, step) = match args.len() {
                    1 => (Arg::Missing, int(0)?, Arg::Missing),
                    2 => (int(0)?, int(1)?, Arg::Missing),
                    _ => (int(0)?, int(1)?, int(2)?),
                };
                let stepped = args.len() > 2;
                for row in 0..rows {
                    let (lo, hi) = (start.int_at(row), stop.int_at(row));
                    let by = if stepped { step.int_at(row) } else { 1 };
                    let count = if by == 0 {
                        0
                    } else {
                        // Round up: range(0, 10, 3) makes 0, 3, 6, 9.
                        let span = hi - lo;
                        if (span > 0) == (by > 0) && span != 0 {
                            (span.abs() + by.abs() - 1) / by.abs()
                        } else {
                            0
                        }
                    };
                    sizes.push(count + i128::from(self.kind == Kind::Series));
                }
            }
            Kind::Repeat | Kind::ArrayRepeat => {
                let (value, times) = (arg(0), int(1)?);
                for row in 0..rows {
                    sizes.push(value.units_at(row).max(1) * times.int_at(row).max(0));
                }
            }
            Kind::Pad => {
                let to = int(1)?;
                // A character may take four bytes.
                for row in 0..rows {
                    sizes.push(4 * to.int_at(row).max(0));
                }
            }
            Kind::ArrayResize => {
                let (list, to, fill) = (arg(0), int(1)?, arg(2));
                for row in 0..rows {
                    let each = fill.units_at(row).max(1);
                    sizes.push(list.units_at(row) + each * to.int_at(row).max(0));
                }
            }
            Kind::ArrayReplace => {
                let (list, to) = (arg(0), arg(2));
                for row in 0..rows {
                    sizes.push(list.units_at(row) * to.units_at(row).max(1));
                }
            }
            Kind::Replace => {
                let (text, from, to) = (arg(0), arg(1), arg(2));
                for row in 0..rows {
                    let (s, f) = (text.units_at(row), from.units_at(row));
                    let matches = if f == 0 { 0 } else { s / f };
                    sizes.push(s + matches * to.units_at(row));
                }
            }
            Kind::RegexpReplace => {
                let (text, with) = (arg(0), arg(2));
                for row in 0..rows {
                    let s = text.units_at(row);
                    // A pattern may match empty text before every character; each reference to
                    // a group copies at most the whole text over all matches.
                    let references = match &with {
                        Arg::Scalar(ScalarValue::Utf8(Some(w)), _) => {
                            w.matches(['\\', '$']).count() as i128
                        }
                        _ => with.units_at(row),
                    };
                    sizes.push(s + (s + 1) * with.units_at(row) + references * s);
                }
            }
            Kind::Concat => {
                let parts: Vec<Arg<'_>> = (0..args.len()).map(arg).collect();
                for row in 0..rows {
                    sizes.push(parts.iter().map(|p| p.units_at(row).max(1)).sum());
                }
            }
            Kind::ConcatWs => {
                let sep = arg(0);
                let parts: Vec<Arg<'_>> = (1..args.len()).map(arg).collect();
                for row in 0..rows {
                    let sum: i128 = parts.iter().map(|p| p.units_at(row)).sum();
                    sizes.push(sum + args.len() as i128 * sep.units_at(row));
                }
            }
            Kind::ArrayToString => {
                let (list, delimiter, null_text) = (arg(0), arg(1), arg(2));
                for row in 0..rows {
                    let per = delimiter.units_at(row) + null_text.units_at(row);
                    sizes.push(list.text_units_at(row, per));
                }
            }
        }
        Ok(sizes)
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.inner.name();
        let rows = args.number_rows.max(1);
        let sizes = self.row_sizes(&args.args, rows)?;
        let largest = sizes.iter().copied().max().unwrap_or(0);
        if largest > self.budget.max_value as i128 {
            return exec_err!(
                "{name}() would make a value of {largest} values or bytes, over the limit of {} \
                 for one value ({OVER_VALUE})",
                self.budget.max_value
            );
        }
        self.budget.take(name, sizes.iter().sum())?;
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, ListArray, StringArray};
    use datafusion::arrow::datatypes::Int64Type;

    #[test]
    fn units_count_nested_lists_down_to_their_elements() {
        let inner = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2), Some(3)]),
            Some(vec![Some(4)]),
        ]);
        let outer: ArrayRef = Arc::new(ListArray::new(
            Arc::new(datafusion::arrow::datatypes::Field::new_list_field(
                inner.data_type().clone(),
                true,
            )),
            datafusion::arrow::buffer::OffsetBuffer::from_lengths([2]),
            Arc::new(inner),
            None,
        ));
        assert_eq!(units(&outer, 0), 4);
        let text: ArrayRef = Arc::new(StringArray::from(vec!["abc", "de"]));
        assert_eq!(units(&text, 1), 2);
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![7]));
        assert_eq!(units(&ints, 0), 1);
    }

    #[test]
    fn the_budget_is_spent_across_calls() {
        let b = Budget::new(10, 10);
        assert!(b.take("f", 6).is_ok());
        assert!(b.take("f", 4).is_ok());
        let e = b.take("f", 1).expect_err("over");
        assert!(e.to_string().contains(OVER_LIMIT), "{e}");
        // Spent stays spent.
        assert!(b.take("f", 0).is_err());
        // However many over-limit calls follow, what is left never wraps back to positive.
        for _ in 0..3 {
            assert!(b.take("f", i128::from(i64::MAX)).is_err());
        }
        assert!(b.take("f", 0).is_err());
    }
}
