//! Pinot's scalar functions that DataFusion lacks or defines differently, with Pinot's
//! semantics (Pinot's `DateTimeFunctions`, `StringFunctions`, `JsonFunctions`):
//!
//! - `toEpochSeconds|Minutes|Hours|Days(ms)`, their `...Rounded(ms, n)` and `...Bucket(ms, n)`
//!   forms, `fromEpochSeconds|Minutes|Hours|Days(v)` and `fromEpoch...Bucket(v, n)`: Java's
//!   integer arithmetic (division truncates toward zero);
//! - `timeConvert(v, 'FROM_UNIT', 'TO_UNIT')`, `fromDateTime(text, 'pattern' [, 'zone'])`,
//!   `DATETIMECONVERT(v, inputFormat, outputFormat, 'size:UNIT')` (both format spellings,
//!   `1:MILLISECONDS:EPOCH` and `EPOCH|MILLISECONDS|1`, and `SIMPLE_DATE_FORMAT`);
//! - `now()`: LONG epoch ms, from rtap's clock, a constant within one query;
//! - `SUBSTR(s, begin [, end])`: 0-based, end exclusive, negative counts from the end, end -1
//!   to the end (DataFusion's is 1-based with a length); indexes count characters;
//! - `REGEXP_EXTRACT(s, regex [, group [, default]])`;
//! - `JSON_EXTRACT_SCALAR(json, '$.path', 'TYPE' [, default])` (alias `jsonExtractScalar`);
//! - helpers the dialect calls for Pinot's aggregations: `pinot_percentile(values, p)` (Pinot's
//!   exact PERCENTILE: the value at index floor(n * p / 100) of the sorted values),
//!   `pinot_mode(values, 'MIN'|'MAX'|'AVG')` and `pinot_decimal_text(decimal)` (SUMPRECISION).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BooleanBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Array, Int64Builder, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, Int64Type};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use serde_json::Value;

use crate::functions::{java_pattern_to_chrono, scalar_string, NowMs};

/// Longest date pattern accepted: a value formatted with it stays small (a pattern of
/// thousands of `E`s would make kilobytes per row).
pub(crate) const MAX_PATTERN_BYTES: usize = 256;

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    ToEpoch(i64),
    ToEpochRounded(i64),
    ToEpochBucket(i64),
    FromEpoch(i64),
    FromEpochBucket(i64),
    TimeConvert,
    FromDateTime,
    DateTimeConvert,
    Substr,
    RegexpExtract,
    JsonExtractScalar,
    Percentile,
    Mode,
    DecimalText,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PinotFn {
    op: Op,
    name: String,
    aliases: Vec<String>,
    signature: Signature,
}

fn arity(counts: &[usize]) -> Signature {
    Signature::one_of(
        counts.iter().map(|&n| TypeSignature::Any(n)).collect(),
        Volatility::Immutable,
    )
}

fn int64(v: &ColumnarValue, rows: usize) -> Result<Int64Array> {
    let a = v.to_array(rows)?;
    Ok(cast(&a, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

fn text(v: &ColumnarValue, rows: usize) -> Result<ArrayRef> {
    cast(&v.to_array(rows)?, &DataType::Utf8).map_err(Into::into)
}

/// A Java `TimeUnit` name in nanoseconds.
fn time_unit_ns(unit: &str) -> Option<i128> {
    Some(match unit.trim().to_ascii_uppercase().as_str() {
        "NANOSECONDS" => 1,
        "MICROSECONDS" => 1_000,
        "MILLISECONDS" => 1_000_000,
        "SECONDS" => 1_000_000_000,
        "MINUTES" => 60_000_000_000,
        "HOURS" => 3_600_000_000_000,
        "DAYS" => 86_400_000_000_000,
        _ => return None,
    })
}

/// Java's `toUnit.convert(value, fromUnit)`: truncating toward coarser units, saturating
/// toward finer ones.
fn convert_unit(value: i64, from_ns: i128, to_ns: i128) -> i64 {
    let v = i128::from(value) * from_ns / to_ns;
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn time_unit_ms(unit: &str) -> Option<i64> {
    time_unit_ns(unit).map(|ns| (ns / 1_000_000).max(1) as i64)
}

/// A DATETIMECONVERT format.
#[derive(Debug, Clone)]
enum Format {
    /// Epoch values of `size` units of `unit_ns`.
    Epoch { unit_ns: i128, size: i64 },
    /// Text in a Java date pattern (as a chrono format), in a time zone.
    Text { pattern: String, tz: chrono_tz::Tz },
}

fn parse_tz(name: &str) -> Result<chrono_tz::Tz> {
    name.trim()
        .parse()
        .or_else(|_| plan_err!("unknown time zone {name:?}"))
}

/// `1:MILLISECONDS:EPOCH`, `1:DAYS:SIMPLE_DATE_FORMAT:yyyy-MM-dd [tz(Zone)]`, `EPOCH`,
/// `EPOCH|SECONDS[|5]`, `TIMESTAMP`, `SIMPLE_DATE_FORMAT|yyyy-MM-dd[|Zone]`.
fn parse_format(s: &str) -> Result<Format> {
    if s.len() > MAX_PATTERN_BYTES {
        return plan_err!(
            "DATETIMECONVERT: a time format is at most {MAX_PATTERN_BYTES} bytes, got {}",
            s.len()
        );
    }
    let bad = || {
        plan_err!("DATETIMECONVERT: unknown time format {s:?} (e.g. '1:MILLISECONDS:EPOCH', 'EPOCH|SECONDS', 'SIMPLE_DATE_FORMAT|yyyy-MM-dd')")
    };
    let text_format = |pattern: &str, zone: Option<&str>| -> Result<Format> {
        // The old spelling puts the zone in the pattern: `yyyy-MM-dd tz(Asia/Kolkata)`.
        let (pattern, zone) = match pattern.find(" tz(") {
            Some(at) => (
                &pattern[..at],
                Some(pattern[at + 4..].trim_end_matches(')')),
            ),
            None => (pattern, zone),
        };
        Ok(Format::Text {
            pattern: java_pattern_to_chrono(pattern),
            tz: match zone {
                Some(z) => parse_tz(z)?,
                None => chrono_tz::UTC,
            },
        })
    };
    if s.contains('|') || !s.contains(':') {
        let parts: Vec<&str> = s.split('|').collect();
        return match parts[0].trim().to_ascii_uppercase().as_str() {
            "EPOCH" => {
                let unit_ns = match parts.get(1) {
                    Some(u) => match time_unit_ns(u) {
                        Some(ns) => ns,
                        None => return bad(),
                    },
                    None => 1_000_000,
                };
                let size = match parts.get(2) {
                    Some(n) => n.trim().parse().ok().filter(|n| *n > 0),
                    None => Some(1),
                };
                match size {
                    Some(size) => Ok(Format::Epoch { unit_ns, size }),
                    None => bad(),
                }
            }
            "TIMESTAMP" => Ok(Format::Epoch {
                unit_ns: 1_000_000,
                size: 1,
            }),
            "SIMPLE_DATE_FORMAT" => match parts.get(1) {
                Some(p) => text_format(p, parts.get(2).copied()),
                None => bad(),
            },
            _ => bad(),
        };
    }
    let parts: Vec<&str> = s.splitn(4, ':').collect();
    let (Some(size), Some(unit), Some(kind)) = (
        parts
            .first()
            .and_then(|n| n.trim().parse::<i64>().ok())
            .filter(|n| *n > 0),
        parts.get(1).and_then(|u| time_unit_ns(u)),
        parts.get(2),
    ) else {
        return bad();
    };
    match kind.trim().to_ascii_uppercase().as_str() {
        "EPOCH" => Ok(Format::Epoch {
            unit_ns: unit,
            size,
        }),
        "SIMPLE_DATE_FORMAT" => match parts.get(3) {
            Some(p) => text_format(p, None),
            None => bad(),
        },
        _ => bad(),
    }
}

/// `size:UNIT` in ms.
fn parse_granularity(s: &str) -> Result<i64> {
    let parts: Vec<&str> = s.split(':').collect();
    if let [size, unit] = parts.as_slice() {
        if let (Ok(n), Some(ms)) = (size.trim().parse::<i64>(), time_unit_ms(unit)) {
            if n > 0 {
                return Ok(n.saturating_mul(ms));
            }
        }
    }
    plan_err!(
        "DATETIMECONVERT: granularity {s:?} is not 'size:UNIT' such as '1:DAYS' or '15:MINUTES'"
    )
}

/// Text in a chrono format, in `tz`, to epoch ms; a pattern without a time reads midnight.
fn parse_datetime(value: &str, format: &str, tz: &chrono_tz::Tz) -> Option<i64> {
    let naive = NaiveDateTime::parse_from_str(value, format)
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(value, format)
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.timestamp_millis())
}

/// Apache commons `StringUtils.substring(s, start, end)` over characters.
fn substring(s: &str, start: i64, end: Option<i64>) -> String {
    let chars: Vec<char> = s.chars().collect();
    let len = chars.len() as i64;
    let at = |i: i64| if i < 0 { (len + i).max(0) } else { i.min(len) };
    let (start, end) = (at(start), end.map_or(len, at));
    if start >= end {
        return String::new();
    }
    chars[start as usize..end as usize].iter().collect()
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
    /// `[*]`: every element (Jayway's indefinite path: the matches as a list).
    Any,
}

/// `$.a.b[0]['c d']`: keys and indexes only (no wildcards or filters).
pub(crate) fn parse_json_path(path: &str) -> Result<Vec<Step>> {
    let unsupported = || {
        plan_err!("JSON_EXTRACT_SCALAR: the path {path:?} is not supported: use $ followed by .key, ['key'], [index] and [*]")
    };
    let Some(mut rest) = path.trim().strip_prefix('$') else {
        return unsupported();
    };
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 || r[..end].contains('*') {
                return unsupported();
            }
            steps.push(Step::Key(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(close) = r.find(']') else {
                return unsupported();
            };
            let inner = r[..close].trim();
            if inner == "*" {
                steps.push(Step::Any);
            } else if let Ok(i) = inner.parse::<usize>() {
                steps.push(Step::Index(i));
            } else if inner.len() >= 2
                && ((inner.starts_with('\'') && inner.ends_with('\''))
                    || (inner.starts_with('"') && inner.ends_with('"')))
            {
                steps.push(Step::Key(inner[1..inner.len() - 1].to_string()));
            } else {
                return unsupported();
            }
            rest = &r[close + 1..];
        } else {
            return unsupported();
        }
    }
    Ok(steps)
}

/// The value at a path: for a path with `[*]`, the list of every match (empty when none), as
/// Jayway's JsonPath answers an indefinite path.
fn walk(v: &Value, steps: &[Step]) -> Option<Value> {
    fn all<'a>(v: &'a Value, steps: &[Step], out: &mut Vec<&'a Value>) {
        let Some((first, rest)) = steps.split_first() else {
            out.push(v);
            return;
        };
        match first {
            Step::Key(k) => {
                if let Some(c) = v.get(k) {
                    all(c, rest, out);
                }
            }
            Step::Index(i) => {
                if let Some(c) = v.get(*i) {
                    all(c, rest, out);
                }
            }
            Step::Any => match v {
                Value::Array(items) => items.iter().for_each(|c| all(c, rest, out)),
                Value::Object(map) => map.values().for_each(|c| all(c, rest, out)),
                _ => {}
            },
        }
    }
    let mut found = Vec::new();
    all(v, steps, &mut found);
    if steps.contains(&Step::Any) {
        Some(Value::Array(found.into_iter().cloned().collect()))
    } else {
        found.pop().cloned()
    }
}

/// JSON_EXTRACT_SCALAR's result type name as an Arrow type.
fn json_result_type(name: &str) -> Result<DataType> {
    Ok(match name.trim().to_ascii_uppercase().as_str() {
        "INT" => DataType::Int32,
        "LONG" | "TIMESTAMP" => DataType::Int64,
        "FLOAT" => DataType::Float32,
        "DOUBLE" => DataType::Float64,
        "BOOLEAN" => DataType::Boolean,
        "STRING" | "JSON" | "BIG_DECIMAL" => DataType::Utf8,
        array if array.ends_with("_ARRAY") => {
            let item = match array.trim_end_matches("_ARRAY") {
                "INT" => DataType::Int32,
                "LONG" | "TIMESTAMP" => DataType::Int64,
                "FLOAT" => DataType::Float32,
                "DOUBLE" => DataType::Float64,
                "STRING" | "BIG_DECIMAL" => DataType::Utf8,
                "BOOLEAN" => DataType::Boolean,
                _ => return plan_err!("JSON_EXTRACT_SCALAR: result type {array:?} is not supported"),
            };
            DataType::new_list(item, true)
        }
        other => {
            return plan_err!(
                "JSON_EXTRACT_SCALAR: result type {other:?} is not supported (INT, LONG, FLOAT, DOUBLE, BOOLEAN, TIMESTAMP, BIG_DECIMAL, STRING, JSON and their _ARRAY forms)"
            )
        }
    })
}

/// JSON_EXTRACT_SCALAR with an `_ARRAY` result type: the values at the path as a multi-value
/// result (a single value is a list of one; nothing there, an empty list). A null among the
/// values takes the default, or is an error without one (Pinot's rule).
fn json_extract_array(
    docs: &datafusion::arrow::array::StringArray,
    path: &[Step],
    item: &FieldRef,
    default: Option<&str>,
) -> Result<ColumnarValue> {
    let mut texts = StringBuilder::new();
    let mut offsets = vec![0i32];
    for doc in docs.iter() {
        let found = doc
            .and_then(|d| serde_json::from_str::<Value>(d).ok())
            .and_then(|d| walk(&d, path));
        let values = match found {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(one) => vec![one],
        };
        for v in &values {
            match (json_text(v), default) {
                (Some(t), _) => texts.append_value(t),
                (None, Some(d)) => texts.append_value(d),
                (None, None) => {
                    return exec_err!(
                        "At least one of the resolved JSON arrays include nulls, which is not supported in Pinot. Consider setting a default value as the forth argument of json_extract_scalar."
                    )
                }
            }
        }
        let end = i32::try_from(texts.len())
            .map_err(|_| datafusion::error::DataFusionError::Execution("too many values".into()))?;
        offsets.push(end);
    }
    let texts = texts.finish();
    let number = |v: &str| -> Result<f64> {
        match v.trim().parse::<f64>() {
            Ok(f) => Ok(f),
            Err(_) => exec_err!(
                "JSON_EXTRACT_SCALAR: {v:?} is not a value of type {}",
                item.data_type()
            ),
        }
    };
    // The same conversions as the single-value types.
    let values: ArrayRef = match item.data_type() {
        DataType::Boolean => Arc::new(
            texts
                .iter()
                .map(|v| v.map(|v| v.eq_ignore_ascii_case("true")))
                .collect::<datafusion::arrow::array::BooleanArray>(),
        ),
        DataType::Int32 => Arc::new(
            texts
                .iter()
                .map(|v| v.map(|v| number(v).map(|f| f as i32)).transpose())
                .collect::<Result<datafusion::arrow::array::Int32Array>>()?,
        ),
        DataType::Int64 => Arc::new(
            texts
                .iter()
                .map(|v| {
                    v.map(|v| match v.trim().parse::<i64>() {
                        Ok(n) => Ok(n),
                        Err(_) => number(v).map(|f| f as i64),
                    })
                    .transpose()
                })
                .collect::<Result<Int64Array>>()?,
        ),
        DataType::Float32 => Arc::new(
            texts
                .iter()
                .map(|v| v.map(|v| number(v).map(|f| f as f32)).transpose())
                .collect::<Result<datafusion::arrow::array::Float32Array>>()?,
        ),
        DataType::Float64 => Arc::new(
            texts
                .iter()
                .map(|v| v.map(number).transpose())
                .collect::<Result<datafusion::arrow::array::Float64Array>>()?,
        ),
        _ => Arc::new(texts),
    };
    let list = datafusion::arrow::array::ListArray::try_new(
        item.clone(),
        datafusion::arrow::buffer::OffsetBuffer::new(offsets.into()),
        values,
        None,
    )?;
    Ok(ColumnarValue::Array(Arc::new(list)))
}

/// A JSON value as text (strings without their quotes), or None for null.
fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn percentile(mut values: Vec<f64>, p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let index = if p >= 100.0 {
        n - 1
    } else {
        ((n as f64 * p / 100.0) as usize).min(n - 1)
    };
    Some(values[index])
}

fn mode(values: &[f64], reducer: &str) -> Option<f64> {
    let mut counts: HashMap<u64, (f64, usize)> = HashMap::new();
    for v in values {
        // 0.0 and -0.0 are one value, as in Java's map of doubles after boxing... close enough.
        let key = if *v == 0.0 {
            0f64.to_bits()
        } else {
            v.to_bits()
        };
        counts.entry(key).or_insert((*v, 0)).1 += 1;
    }
    let top = counts.values().map(|(_, c)| *c).max()?;
    let tied: Vec<f64> = counts
        .values()
        .filter(|(_, c)| *c == top)
        .map(|(v, _)| *v)
        .collect();
    Some(match reducer {
        "MAX" => tied.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "AVG" => tied.iter().sum::<f64>() / tied.len() as f64,
        _ => tied.iter().copied().fold(f64::INFINITY, f64::min),
    })
}

/// Each row's list of numbers (None for a null list), as f64 without nulls.
fn lists_of_numbers(v: &ColumnarValue, rows: usize) -> Result<Vec<Option<Vec<f64>>>> {
    let a = v.to_array(rows)?;
    let list = match a.data_type() {
        DataType::List(_) => a.as_list::<i32>().clone(),
        other => return exec_err!("expected a list of values, got {other}"),
    };
    let mut out = Vec::with_capacity(list.len());
    for item in list.iter() {
        out.push(match item {
            Some(values) => {
                if !values.data_type().is_numeric() {
                    return exec_err!(
                        "PERCENTILE and MODE take numbers, got {}",
                        values.data_type()
                    );
                }
                let values = cast(&values, &DataType::Float64)?;
                Some(
                    values
                        .as_primitive::<Float64Type>()
                        .iter()
                        .flatten()
                        .collect(),
                )
            }
            None => None,
        });
    }
    Ok(out)
}

fn scalar_f64(v: &ColumnarValue, what: &str) -> Result<f64> {
    match v {
        ColumnarValue::Scalar(s) if !s.is_null() => match s.cast_to(&DataType::Float64)? {
            ScalarValue::Float64(Some(f)) => Ok(f),
            _ => plan_err!("{what} must be a constant number"),
        },
        _ => plan_err!("{what} must be a constant number"),
    }
}

impl PinotFn {
    fn epoch(&self, args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let v = int64(&args.args[0], rows)?;
        let n = match args.args.get(1) {
            Some(n) => Some(int64(n, rows)?),
            None => None,
        };
        let mut out = Int64Builder::with_capacity(v.len());
        for i in 0..v.len() {
            let x = v.is_valid(i).then(|| v.value(i));
            let k = n.as_ref().and_then(|n| n.is_valid(i).then(|| n.value(i)));
            out.append_option(x.and_then(|x| match self.op {
                Op::ToEpoch(u) => Some(x / u),
                Op::ToEpochRounded(u) => k.filter(|k| *k > 0).map(|k| x / u / k * k),
                Op::ToEpochBucket(u) => k.filter(|k| *k > 0).map(|k| x / u / k),
                Op::FromEpoch(u) => x.checked_mul(u),
                Op::FromEpochBucket(u) => k.and_then(|k| x.checked_mul(k)?.checked_mul(u)),
                _ => None,
            }));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }

    fn time_convert(&self, args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
        let from = scalar_string(&args.args[1], "timeConvert's input unit")?;
        let to = scalar_string(&args.args[2], "timeConvert's output unit")?;
        let (Some(from_ns), Some(to_ns)) = (time_unit_ns(&from), time_unit_ns(&to)) else {
            return plan_err!("timeConvert: units are NANOSECONDS, MICROSECONDS, MILLISECONDS, SECONDS, MINUTES, HOURS or DAYS, got {from:?}, {to:?}");
        };
        let v = int64(&args.args[0], args.number_rows)?;
        let out: Int64Array = v
            .iter()
            .map(|x| x.map(|x| convert_unit(x, from_ns, to_ns)))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }

    fn parse_datetime_text(&self, args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
        let pattern =
            java_pattern_to_chrono(&scalar_string(&args.args[1], "fromDateTime's pattern")?);
        let tz = match args.args.get(2) {
            Some(z) => parse_tz(&scalar_string(z, "fromDateTime's time zone")?)?,
            None => chrono_tz::UTC,
        };
        let v = text(&args.args[0], args.number_rows)?;
        let mut out = Int64Builder::with_capacity(v.len());
        for s in v.as_string::<i32>().iter() {
            match s {
                Some(s) => match parse_datetime(s, &pattern, &tz) {
                    Some(ms) => out.append_value(ms),
                    None => return exec_err!("fromDateTime: {s:?} does not match the pattern"),
                },
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }

    fn datetime_convert(&self, args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
        let input = parse_format(&scalar_string(
            &args.args[1],
            "DATETIMECONVERT's input format",
        )?)?;
        let output = parse_format(&scalar_string(
            &args.args[2],
            "DATETIMECONVERT's output format",
        )?)?;
        let granularity = parse_granularity(&scalar_string(
            &args.args[3],
            "DATETIMECONVERT's granularity",
        )?)?;
        let rows = args.number_rows;
        let millis: Vec<Option<i64>> = match &input {
            Format::Epoch { unit_ns, size } => int64(&args.args[0], rows)?
                .iter()
                .map(|v| v.map(|v| convert_unit(v.saturating_mul(*size), *unit_ns, 1_000_000)))
                .collect(),
            Format::Text { pattern, tz } => {
                let t = text(&args.args[0], rows)?;
                let mut out = Vec::with_capacity(t.len());
                for s in t.as_string::<i32>().iter() {
                    out.push(match s {
                        Some(s) => match parse_datetime(s, pattern, tz) {
                            Some(ms) => Some(ms),
                            None => {
                                return exec_err!(
                                    "DATETIMECONVERT: {s:?} does not match the input format"
                                )
                            }
                        },
                        None => None,
                    });
                }
                out
            }
        };
        let bucketed = millis
            .into_iter()
            .map(|m| m.map(|m| m / granularity * granularity));
        Ok(ColumnarValue::Array(match &output {
            Format::Epoch { unit_ns, size } => Arc::new(
                bucketed
                    .map(|m| m.map(|m| convert_unit(m, 1_000_000, *unit_ns) / size))
                    .collect::<Int64Array>(),
            ),
            Format::Text { pattern, tz } => {
                let items = chrono::format::StrftimeItems::new(pattern)
                    .parse()
                    .or_else(|e| plan_err!("DATETIMECONVERT: bad pattern: {e}"))?;
                let mut out = StringBuilder::new();
                for m in bucketed {
                    out.append_option(
                        m.and_then(|m| tz.timestamp_millis_opt(m).single())
                            .map(|t| t.format_with_items(items.iter()).to_string()),
                    );
                }
                Arc::new(out.finish())
            }
        }))
    }

    fn substr(&self, args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let s = text(&args.args[0], rows)?;
        let begin = int64(&args.args[1], rows)?;
        let end = match args.args.get(2) {
            Some(e) => Some(int64(e, rows)?),
            None => None,
        };
        let mut out = StringBuilder::new();
        for (i, v) in s.as_string::<i32>().iter().enumerate() {
            let b = begin.is_valid(i).then(|| begin.value(i));
            let e = end.as_ref().map(|e| e.is_valid(i).then(|| e.value(i)));
            match (v, b, e) {
                (Some(v), Some(b), None) => out.append_value(substring(v, b, None)),
                (Some(v), Some(b), Some(Some(-1))) => out.append_value(substring(v, b, None)),
                (Some(v), Some(b), Some(Some(e))) => out.append_value(substring(v, b, Some(e))),
                _ => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }

    fn regexp_extract(&self, args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
        let pattern = scalar_string(&args.args[1], "REGEXP_EXTRACT's pattern")?;
        let re = regex::RegexBuilder::new(&pattern)
            .size_limit(1 << 20)
            .build()
            .or_else(|e| plan_err!("REGEXP_EXTRACT: bad pattern {pattern:?}: {e}"))?;
        let group = match args.args.get(2) {
            Some(g) => scalar_f64(g, "REGEXP_EXTRACT's group")? as usize,
            None => 0,
        };
        let default = match args.args.get(3) {
            Some(d) => scalar_string(d, "REGEXP_EXTRACT's default")?,
            None => String::new(),
        };
        let s = text(&args.args[0], args.number_rows)?;
        let mut out = StringBuilder::new();
        for v in s.as_string::<i32>().iter() {
            match v {
                Some(v) => out.append_value(
                    re.captures(v)
                        .and_then(|c| c.get(group))
                        .map_or(default.as_str(), |m| m.as_str()),
                ),
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }

    fn json_extract_scalar(&self, args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
        let path = parse_json_path(&scalar_string(&args.args[1], "JSON_EXTRACT_SCALAR's path")?)?;
        let ty = json_result_type(&scalar_string(
            &args.args[2],
            "JSON_EXTRACT_SCALAR's result type",
        )?)?;
        let default = match args.args.get(3) {
            Some(ColumnarValue::Scalar(d)) if !d.is_null() => Some(d.to_string()),
            Some(_) => return plan_err!("JSON_EXTRACT_SCALAR's default must be a constant"),
            None => None,
        };
        let s = text(&args.args[0], args.number_rows)?;
        if let DataType::List(item) = &ty {
            return json_extract_array(s.as_string::<i32>(), &path, item, default.as_deref());
        }
        let mut values: Vec<Option<String>> = Vec::with_capacity(s.len());
        for v in s.as_string::<i32>().iter() {
            let found = v
                .and_then(|v| serde_json::from_str::<Value>(v).ok())
                .and_then(|doc| walk(&doc, &path).as_ref().and_then(json_text));
            match (found, &default) {
                (Some(f), _) => values.push(Some(f)),
                (None, Some(d)) => values.push(Some(d.clone())),
                (None, None) => {
                    return exec_err!(
                    "Cannot resolve JSON path on some records. Consider setting a default value."
                )
                }
            }
        }
        let number = |v: &str| -> Result<f64> {
            match v.trim().parse::<f64>() {
                Ok(f) => Ok(f),
                Err(_) => exec_err!("JSON_EXTRACT_SCALAR: {v:?} is not a value of type {ty}"),
            }
        };
        let array: ArrayRef = match &ty {
            DataType::Utf8 => Arc::new(
                values
                    .iter()
                    .map(|v| v.as_deref())
                    .collect::<datafusion::arrow::array::StringArray>(),
            ),
            DataType::Boolean => {
                let mut b = BooleanBuilder::new();
                for v in &values {
                    b.append_option(v.as_deref().map(|v| v.eq_ignore_ascii_case("true")));
                }
                Arc::new(b.finish())
            }
            DataType::Int32 => {
                let mut b = Int32Builder::new();
                for v in &values {
                    b.append_option(v.as_deref().map(number).transpose()?.map(|f| f as i32));
                }
                Arc::new(b.finish())
            }
            DataType::Int64 => {
                let mut b = Int64Builder::new();
                for v in &values {
                    b.append_option(match v.as_deref() {
                        Some(v) => Some(match v.trim().parse::<i64>() {
                            Ok(n) => n,
                            Err(_) => number(v)? as i64,
                        }),
                        None => None,
                    });
                }
                Arc::new(b.finish())
            }
            DataType::Float32 => {
                let mut b = Float32Builder::new();
                for v in &values {
                    b.append_option(v.as_deref().map(number).transpose()?.map(|f| f as f32));
                }
                Arc::new(b.finish())
            }
            _ => {
                let mut b = Float64Builder::new();
                for v in &values {
                    b.append_option(v.as_deref().map(number).transpose()?);
                }
                Arc::new(b.finish())
            }
        };
        Ok(ColumnarValue::Array(array))
    }

    fn aggregate_helper(&self, args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut out = Float64Builder::with_capacity(rows);
        match self.op {
            Op::Percentile => {
                let p = scalar_f64(&args.args[1], "PERCENTILE's percentile")?;
                if !(0.0..=100.0).contains(&p) {
                    return plan_err!("PERCENTILE: the percentile must be from 0 to 100, got {p}");
                }
                for l in lists_of_numbers(&args.args[0], rows)? {
                    out.append_option(l.and_then(|l| percentile(l, p)));
                }
            }
            _ => {
                let reducer = match args.args.get(1) {
                    Some(r) => scalar_string(r, "MODE's reducer")?.to_ascii_uppercase(),
                    None => "MIN".into(),
                };
                if !matches!(reducer.as_str(), "MIN" | "MAX" | "AVG") {
                    return plan_err!(
                        "MODE: the reducer is 'MIN', 'MAX' or 'AVG', got {reducer:?}"
                    );
                }
                for l in lists_of_numbers(&args.args[0], rows)? {
                    out.append_option(l.and_then(|l| mode(&l, &reducer)));
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }

    fn decimal_text(&self, args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = args.args[0].to_array(args.number_rows)?;
        let t = cast(&a, &DataType::Utf8)?;
        let mut out = StringBuilder::new();
        for v in t.as_string::<i32>().iter() {
            out.append_option(v.map(|v| {
                if v.contains('.') {
                    v.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    v.to_string()
                }
            }));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

impl ScalarUDFImpl for PinotFn {
    fn name(&self) -> &str {
        &self.name
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        plan_err!("{} has its return type from its arguments", self.name)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let literal = |i: usize| -> Option<String> {
            match args.scalar_arguments.get(i).copied().flatten() {
                Some(
                    ScalarValue::Utf8(Some(s))
                    | ScalarValue::Utf8View(Some(s))
                    | ScalarValue::LargeUtf8(Some(s)),
                ) => Some(s.clone()),
                _ => None,
            }
        };
        let data_type = match self.op {
            Op::Substr | Op::RegexpExtract | Op::DecimalText => DataType::Utf8,
            Op::Percentile | Op::Mode => DataType::Float64,
            Op::DateTimeConvert => match literal(2).map(|f| parse_format(&f)).transpose()? {
                Some(Format::Text { .. }) => DataType::Utf8,
                Some(Format::Epoch { .. }) => DataType::Int64,
                None => {
                    return plan_err!("DATETIMECONVERT's output format must be a constant string")
                }
            },
            Op::JsonExtractScalar => match literal(2) {
                Some(t) => json_result_type(&t)?,
                None => {
                    return plan_err!("JSON_EXTRACT_SCALAR's result type must be a constant string")
                }
            },
            _ => DataType::Int64,
        };
        Ok(Arc::new(Field::new(self.name(), data_type, true)))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match self.op {
            Op::ToEpoch(_)
            | Op::ToEpochRounded(_)
            | Op::ToEpochBucket(_)
            | Op::FromEpoch(_)
            | Op::FromEpochBucket(_) => self.epoch(&args),
            Op::TimeConvert => self.time_convert(&args),
            Op::FromDateTime => self.parse_datetime_text(&args),
            Op::DateTimeConvert => self.datetime_convert(&args),
            Op::Substr => self.substr(&args),
            Op::RegexpExtract => self.regexp_extract(&args),
            Op::JsonExtractScalar => self.json_extract_scalar(&args),
            Op::Percentile | Op::Mode => self.aggregate_helper(&args),
            Op::DecimalText => self.decimal_text(&args),
        }
    }
}

/// `now()`: epoch ms from rtap's clock, folded to a constant when the query is planned.
pub struct Now {
    signature: Signature,
    now_ms: NowMs,
}

impl std::fmt::Debug for Now {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("now")
    }
}
impl PartialEq for Now {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.now_ms), Arc::as_ptr(&other.now_ms))
    }
}
impl Eq for Now {}
impl Hash for Now {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "now".hash(state);
    }
}

impl ScalarUDFImpl for Now {
    fn name(&self) -> &str {
        "now"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn simplify(&self, _args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        Ok(ExprSimplifyResult::Simplified(Expr::Literal(
            ScalarValue::Int64(Some(self.now_ms.now_ms())),
            None,
        )))
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Int64(Some(
            self.now_ms.now_ms(),
        ))))
    }
}

/// Every function of this module, ready to register.
pub fn all(now_ms: NowMs) -> Vec<ScalarUDF> {
    let f = |op: Op, name: &str, aliases: &[&str], counts: &[usize]| {
        ScalarUDF::new_from_impl(PinotFn {
            op,
            name: name.to_string(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            signature: arity(counts),
        })
    };
    let mut out = vec![
        f(Op::TimeConvert, "timeconvert", &[], &[3]),
        f(Op::FromDateTime, "fromdatetime", &[], &[2, 3]),
        f(Op::DateTimeConvert, "datetimeconvert", &[], &[4, 5]),
        f(Op::Substr, "pinot_substr", &[], &[2, 3]),
        f(
            Op::RegexpExtract,
            "regexp_extract",
            &["regexpextract"],
            &[2, 3, 4],
        ),
        f(
            Op::JsonExtractScalar,
            "json_extract_scalar",
            &["jsonextractscalar"],
            &[3, 4],
        ),
        f(Op::Percentile, "pinot_percentile", &[], &[2]),
        f(Op::Mode, "pinot_mode", &[], &[1, 2]),
        f(Op::DecimalText, "pinot_decimal_text", &[], &[1]),
        ScalarUDF::new_from_impl(Now {
            signature: Signature::nullary(Volatility::Stable),
            now_ms,
        }),
    ];
    for (unit, ms) in [
        ("seconds", SECOND),
        ("minutes", MINUTE),
        ("hours", HOUR),
        ("days", DAY),
    ] {
        out.push(f(Op::ToEpoch(ms), &format!("toepoch{unit}"), &[], &[1]));
        out.push(f(
            Op::ToEpochRounded(ms),
            &format!("toepoch{unit}rounded"),
            &[],
            &[2],
        ));
        out.push(f(
            Op::ToEpochBucket(ms),
            &format!("toepoch{unit}bucket"),
            &[],
            &[2],
        ));
        out.push(f(Op::FromEpoch(ms), &format!("fromepoch{unit}"), &[], &[1]));
        out.push(f(
            Op::FromEpochBucket(ms),
            &format!("fromepoch{unit}bucket"),
            &[],
            &[2],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_the_value_at_floor_n_p() {
        assert_eq!(percentile(vec![4.0, 1.0, 3.0, 2.0], 50.0), Some(3.0));
        assert_eq!(percentile(vec![4.0, 1.0, 3.0, 2.0], 100.0), Some(4.0));
        assert_eq!(percentile(vec![4.0, 1.0, 3.0, 2.0], 0.0), Some(1.0));
        assert_eq!(percentile(vec![4.0, 1.0, 3.0, 2.0], 99.0), Some(4.0));
        assert_eq!(percentile(vec![], 50.0), None);
    }

    #[test]
    fn mode_reducers() {
        let v = [1.0, 2.0, 2.0, 3.0, 3.0, 5.0];
        assert_eq!(mode(&v, "MIN"), Some(2.0));
        assert_eq!(mode(&v, "MAX"), Some(3.0));
        assert_eq!(mode(&v, "AVG"), Some(2.5));
    }

    #[test]
    fn substr_like_commons_lang() {
        assert_eq!(substring("abcdef", 1, Some(3)), "bc");
        assert_eq!(substring("abcdef", 2, None), "cdef");
        assert_eq!(substring("abcdef", -2, None), "ef");
        assert_eq!(substring("abcdef", 4, Some(2)), "");
        assert_eq!(substring("abcdef", 3, Some(99)), "def");
    }

    #[test]
    fn formats_and_units() {
        assert!(matches!(
            parse_format("1:MILLISECONDS:EPOCH"),
            Ok(Format::Epoch {
                unit_ns: 1_000_000,
                size: 1
            })
        ));
        assert!(matches!(
            parse_format("EPOCH|SECONDS|5"),
            Ok(Format::Epoch {
                unit_ns: 1_000_000_000,
                size: 5
            })
        ));
        assert!(matches!(
            parse_format("1:DAYS:SIMPLE_DATE_FORMAT:yyyy-MM-dd"),
            Ok(Format::Text { .. })
        ));
        assert!(parse_format("1:WEEKS:EPOCH").is_err());
        assert_eq!(parse_granularity("15:MINUTES").ok(), Some(900_000));
        assert_eq!(
            convert_unit(1_514_804_402_000, 1_000_000, 86_400_000_000_000),
            17_532
        );
        assert_eq!(
            convert_unit(-1_500, 1_000_000, 1_000_000_000),
            -1,
            "truncates toward zero"
        );
        assert_eq!(
            parse_datetime("2018-01-01", "%Y-%m-%d", &chrono_tz::UTC),
            Some(1_514_764_800_000)
        );
    }

    #[test]
    fn json_paths() {
        let doc: Value = serde_json::from_str(r#"{"a": {"b": [10, {"c d": "x"}]}}"#).expect("json");
        let p = parse_json_path("$.a.b[1]['c d']").expect("path");
        assert_eq!(
            walk(&doc, &p).as_ref().and_then(json_text).as_deref(),
            Some("x")
        );
        let p = parse_json_path("$.a.b[0]").expect("path");
        assert_eq!(
            walk(&doc, &p).as_ref().and_then(json_text).as_deref(),
            Some("10")
        );
        let p = parse_json_path("$.a.b[*]").expect("path");
        assert_eq!(
            walk(&doc, &p).as_ref().and_then(json_text).as_deref(),
            Some(r#"[10,{"c d":"x"}]"#),
            "an indefinite path gives the list of its matches"
        );
        let p = parse_json_path("$.a.x[*].y").expect("path");
        assert_eq!(walk(&doc, &p), Some(Value::Array(vec![])));
        assert!(parse_json_path("$.a.*").is_err());
        assert!(parse_json_path("a.b").is_err());
    }
}
