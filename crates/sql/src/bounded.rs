//! Functions whose output can be far larger than their input (`range(0, 1e9)`,
//! `repeat(x, 1e9)`, `lpad`, `rpad`, `array_repeat`, `array_resize`, `generate_series`), wrapped
//! so that one call refuses, before allocating anything, to make more than
//! `sql.max_function_output` values for its batch of rows. A memory pool cannot stop these:
//! DataFusion does not charge what a scalar function returns to it.
//!
//! The wrapper keeps the built-in's name, aliases, signature and types and calls it when the
//! arguments are within bounds, so answers are unchanged below the limit.

use std::hash::{Hash, Hasher};

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

/// Marks the error, so it is answered as a resource limit (Pinot 245).
pub const OVER_LIMIT: &str = "sql.max_function_output";

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
    /// `array_repeat(value, n)`: n values (n x length when the value is a list).
    ArrayRepeat,
    /// `array_resize(list, n[, fill])`: n values.
    ArrayResize,
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
];

#[derive(Debug, Clone)]
pub struct Bounded {
    inner: ScalarUDF,
    kind: Kind,
    limit: usize,
    /// The built-in's signature, but volatile: a call with constant arguments must not be
    /// folded into one value at planning (the check would see one row) and then copied into
    /// every row of every batch (which nothing would check).
    signature: Signature,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && self.kind == other.kind && self.limit == other.limit
    }
}
impl Eq for Bounded {}
impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
        self.kind.hash(state);
        self.limit.hash(state);
    }
}

impl Bounded {
    pub fn new(inner: ScalarUDF, kind: Kind, limit: usize) -> Self {
        let signature = Signature::new(
            inner.signature().type_signature.clone(),
            Volatility::Volatile,
        );
        Bounded {
            inner,
            kind,
            limit,
            signature,
        }
    }
}

/// Argument `i` as Int64 values, one per row (None when it is not an integer).
fn ints(args: &[ColumnarValue], i: usize, rows: usize) -> Result<Option<ArrayRef>> {
    let Some(arg) = args.get(i) else {
        return Ok(None);
    };
    let array = arg.to_array(rows)?;
    if !array.data_type().is_integer() {
        return Ok(None);
    }
    Ok(Some(cast(&array, &DataType::Int64)?))
}

fn int_at(a: &ArrayRef, row: usize) -> i128 {
    let a = a.as_primitive::<Int64Type>();
    if a.is_null(row) {
        0
    } else {
        i128::from(a.value(row))
    }
}

/// Values one row of `a` (a list, or text) holds.
fn length_at(a: &ArrayRef, row: usize) -> i128 {
    if a.is_null(row) {
        return 0;
    }
    match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(row).len() as i128,
        DataType::LargeUtf8 => a.as_string::<i64>().value(row).len() as i128,
        DataType::Utf8View => a.as_string_view().value(row).len() as i128,
        DataType::List(_) => a.as_list::<i32>().value(row).len() as i128,
        DataType::LargeList(_) => a.as_list::<i64>().value(row).len() as i128,
        _ => 1,
    }
}

impl Bounded {
    /// What this call would make for its batch, or an error for arguments it cannot bound.
    fn output_size(&self, args: &[ColumnarValue], rows: usize) -> Result<i128> {
        let name = self.inner.name();
        let n = |i: usize| -> Result<ArrayRef> {
            match ints(args, i, rows)? {
                Some(a) => Ok(a),
                None => exec_err!(
                    "{name}(): argument {} must be an integer in /query/sql (so its output can be \
                     bounded, {OVER_LIMIT})",
                    i + 1
                ),
            }
        };
        let mut total: i128 = 0;
        match self.kind {
            Kind::Range | Kind::Series => {
                let (start, stop, step) = match args.len() {
                    1 => (None, n(0)?, None),
                    2 => (Some(n(0)?), n(1)?, None),
                    _ => (Some(n(0)?), n(1)?, Some(n(2)?)),
                };
                for row in 0..rows {
                    let lo = start.as_ref().map_or(0, |a| int_at(a, row));
                    let hi = int_at(&stop, row);
                    let by = step.as_ref().map_or(1, |a| int_at(a, row));
                    let count = if by == 0 { 0 } else { ((hi - lo) / by).max(0) };
                    total += count + i128::from(self.kind == Kind::Series);
                }
            }
            Kind::Repeat | Kind::ArrayRepeat => {
                let value = args.first().map(|v| v.to_array(rows)).transpose()?;
                let times = n(1)?;
                for row in 0..rows {
                    let each = value.as_ref().map_or(1, |v| length_at(v, row).max(1));
                    total += each * int_at(&times, row).max(0);
                }
            }
            Kind::Pad | Kind::ArrayResize => {
                let to = n(1)?;
                for row in 0..rows {
                    // A character may take four bytes.
                    let per = if self.kind == Kind::Pad { 4 } else { 1 };
                    total += per * int_at(&to, row).max(0);
                }
            }
        }
        Ok(total)
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
        let rows = args.number_rows.max(1);
        let size = self.output_size(&args.args, rows)?;
        if size > self.limit as i128 {
            return exec_err!(
                "{}() would make {size} values for {rows} rows, over the limit of {} \
                 ({OVER_LIMIT})",
                self.inner.name(),
                self.limit
            );
        }
        self.inner.invoke_with_args(args)
    }
}
