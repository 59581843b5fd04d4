//! Pinot's functions as DataFusion scalar functions:
//!
//! - `ago('PT1M')`: now minus an ISO-8601 duration, in epoch ms. Folded to a constant when the
//!   query is planned, so `time_ms > ago('PT1M')` prunes segments like a literal bound.
//! - `datetrunc('MINUTE', ms [, 'MILLISECONDS'])`: epoch ms truncated to a unit (UTC).
//! - `todatetime(ms, 'yyyy-MM-dd HH:mm:ss' [, 'America/New_York'])`: epoch ms formatted with a
//!   Java date pattern in a time zone.
//! - `mv_sum`, `mv_count`, `mv_min`, `mv_max`: per-row reductions of a multi-value (list) column,
//!   the identity on a single value; the dialect turns `SUMMV(x)` into `sum(mv_sum(x))` and so on.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{Datelike, TimeZone};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Builder, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// "Now" for `ago()`: the composition root's clock (the wall clock live, a manual one in tests).
pub type NowMs = clock::SharedClock;

/// Parses an ISO-8601 duration such as `PT1M`, `PT1H`, `P1D`, `PT0.5S`, `P1DT2H` into ms.
pub fn parse_iso_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let rest = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
    let mut total = 0f64;
    let mut in_time = false;
    let mut number = String::new();
    let mut any = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if number.is_empty() => in_time = true,
            d if d.is_ascii_digit() || d == '.' => number.push(d),
            unit => {
                let n: f64 = number.parse().ok()?;
                number.clear();
                let ms = match (unit, in_time) {
                    ('W', false) => 7.0 * 86_400_000.0,
                    ('D', false) => 86_400_000.0,
                    ('H', true) => 3_600_000.0,
                    ('M', true) => 60_000.0,
                    ('S', true) => 1_000.0,
                    _ => return None,
                };
                total += n * ms;
                any = true;
            }
        }
    }
    if !number.is_empty() || !any {
        return None;
    }
    let ms = total.round() as i64;
    Some(if negative { -ms } else { ms })
}

fn string_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s.as_str()),
        _ => None,
    }
}

pub(crate) fn scalar_string(v: &ColumnarValue, what: &str) -> Result<String> {
    match v {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
        ) => Ok(s.clone()),
        _ => plan_err!("{what} must be a constant string"),
    }
}

// ---------------------------------------------------------------------------------------------

pub struct Ago {
    signature: Signature,
    now_ms: NowMs,
}

impl std::fmt::Debug for Ago {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ago")
    }
}
impl PartialEq for Ago {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.now_ms), Arc::as_ptr(&other.now_ms))
    }
}
impl Eq for Ago {}
impl Hash for Ago {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "ago".hash(state);
    }
}

impl Ago {
    fn bound(&self, duration: &str) -> Result<i64> {
        match parse_iso_duration(duration) {
            Some(ms) => Ok(self.now_ms.now_ms() - ms),
            None => plan_err!(
                "ago(): {duration:?} is not an ISO-8601 duration such as 'PT1M', 'PT1H' or 'P1D'"
            ),
        }
    }
}

impl ScalarUDFImpl for Ago {
    fn name(&self) -> &str {
        "ago"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        match args.as_slice() {
            [arg] => match string_literal(arg) {
                Some(d) => Ok(ExprSimplifyResult::Simplified(Expr::Literal(
                    ScalarValue::Int64(Some(self.bound(d)?)),
                    None,
                ))),
                None => Ok(ExprSimplifyResult::Original(args)),
            },
            _ => Ok(ExprSimplifyResult::Original(args)),
        }
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [duration] = args.args.as_slice() else {
            return exec_err!("ago() takes one argument, a duration such as 'PT1M'");
        };
        let d = scalar_string(duration, "ago()'s duration")?;
        Ok(ColumnarValue::Scalar(ScalarValue::Int64(Some(
            self.bound(&d)?,
        ))))
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateTrunc {
    signature: Signature,
}

fn unit_ms(unit: &str) -> Option<i64> {
    Some(match unit.to_ascii_uppercase().trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => return None,
    })
}

fn trunc_calendar(ms: i64, unit: &str) -> Option<i64> {
    let t = chrono::Utc.timestamp_millis_opt(ms).single()?;
    let date = t.date_naive();
    let first = match unit {
        "WEEK" => date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday())),
        "MONTH" => date.with_day(1)?,
        "QUARTER" => chrono::NaiveDate::from_ymd_opt(date.year(), (date.month0() / 3) * 3 + 1, 1)?,
        "YEAR" => chrono::NaiveDate::from_ymd_opt(date.year(), 1, 1)?,
        _ => return None,
    };
    Some(first.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

impl ScalarUDFImpl for DateTrunc {
    fn name(&self) -> &str {
        "datetrunc"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !(2..=3).contains(&args.args.len()) {
            return exec_err!("DATETRUNC(unit, value [, 'MILLISECONDS'|'SECONDS'])");
        }
        let unit = scalar_string(&args.args[0], "DATETRUNC's unit")?.to_ascii_uppercase();
        let input_ms = match args.args.get(2) {
            Some(v) => match unit_ms(&scalar_string(v, "DATETRUNC's input unit")?) {
                Some(m) => m,
                None => return plan_err!("DATETRUNC: unknown input time unit"),
            },
            None => 1,
        };
        let fixed = unit_ms(&unit);
        if fixed.is_none() && !matches!(unit.as_str(), "WEEK" | "MONTH" | "QUARTER" | "YEAR") {
            return plan_err!("DATETRUNC: unknown unit {unit:?} (SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER, YEAR)");
        }
        let values = args.args[1].to_array(args.number_rows)?;
        let values = cast(&values, &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        let mut out = Int64Builder::with_capacity(values.len());
        for v in values.iter() {
            out.append_option(v.and_then(|v| {
                let ms = v.checked_mul(input_ms)?;
                let t = match fixed {
                    Some(u) => ms.div_euclid(u) * u,
                    None => trunc_calendar(ms, &unit)?,
                };
                Some(t / input_ms)
            }));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToDateTime {
    signature: Signature,
}

/// Java `SimpleDateFormat` / Joda pattern -> chrono format string.
pub fn java_pattern_to_chrono(pattern: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted literal text.
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                // Literal text: a `%` must not start a chrono specifier.
                if chars[i] == '%' {
                    out.push_str("%%");
                } else {
                    out.push(chars[i]);
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        let mut n = 1;
        while i + n < chars.len() && chars[i + n] == c {
            n += 1;
        }
        let spec = match (c, n) {
            ('y', 2) => "%y",
            ('y', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            ('S', _) => "%3f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('Z', _) => "%z",
            ('z', _) => "%Z",
            _ => {
                for _ in 0..n {
                    if c == '%' {
                        out.push_str("%%");
                    } else {
                        out.push(c);
                    }
                }
                i += n;
                continue;
            }
        };
        out.push_str(spec);
        i += n;
    }
    out
}

impl ScalarUDFImpl for ToDateTime {
    fn name(&self) -> &str {
        "todatetime"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if !(2..=3).contains(&args.args.len()) {
            return exec_err!("ToDateTime(millis, 'pattern' [, 'time zone'])");
        }
        let pattern = scalar_string(&args.args[1], "ToDateTime's pattern")?;
        if pattern.len() > crate::pinot_functions::MAX_PATTERN_BYTES {
            return plan_err!(
                "ToDateTime: a pattern is at most {} bytes, got {}",
                crate::pinot_functions::MAX_PATTERN_BYTES,
                pattern.len()
            );
        }
        let format = java_pattern_to_chrono(&pattern);
        let tz: chrono_tz::Tz = match args.args.get(2) {
            Some(v) => {
                let name = scalar_string(v, "ToDateTime's time zone")?;
                match name.parse() {
                    Ok(tz) => tz,
                    Err(_) => return plan_err!("ToDateTime: unknown time zone {name:?}"),
                }
            }
            None => chrono_tz::UTC,
        };
        let values = args.args[0].to_array(args.number_rows)?;
        let values = cast(&values, &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 20);
        let items = chrono::format::StrftimeItems::new(&format)
            .parse()
            .map_err(|e| {
                datafusion::error::DataFusionError::Plan(format!("ToDateTime: bad pattern: {e}"))
            })?;
        for v in values.iter() {
            match v.and_then(|ms| tz.timestamp_millis_opt(ms).single()) {
                Some(t) => out.append_value(t.format_with_items(items.iter()).to_string()),
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MvOp {
    Sum,
    Count,
    Min,
    Max,
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MultiValue {
    op: MvOp,
    signature: Signature,
}

impl MultiValue {
    fn reduce(&self, values: &Float64Array) -> Option<f64> {
        let mut it = values.iter().flatten();
        match self.op {
            MvOp::Sum => Some(it.sum()),
            MvOp::Count => Some(values.len() as f64 - values.null_count() as f64),
            MvOp::Min => it.next().map(|first| it.fold(first, f64::min)),
            MvOp::Max => it.next().map(|first| it.fold(first, f64::max)),
        }
    }
}

impl ScalarUDFImpl for MultiValue {
    fn name(&self) -> &str {
        match self.op {
            MvOp::Sum => "mv_sum",
            MvOp::Count => "mv_count",
            MvOp::Min => "mv_min",
            MvOp::Max => "mv_max",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(if self.op == MvOp::Count {
            DataType::Int64
        } else {
            DataType::Float64
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("{}() takes one argument", self.name());
        };
        let array = arg.to_array(args.number_rows)?;
        let reduced: Vec<Option<f64>> = match array.data_type() {
            DataType::List(_) | DataType::LargeList(_) => {
                let lists = match array.data_type() {
                    DataType::List(_) => array.as_list::<i32>().iter().collect::<Vec<_>>(),
                    _ => array.as_list::<i64>().iter().collect::<Vec<_>>(),
                };
                let mut out = Vec::with_capacity(lists.len());
                for list in lists {
                    out.push(match list {
                        // Values of any type count; only the other reductions need numbers.
                        Some(values) if self.op == MvOp::Count => {
                            Some((values.len() - values.null_count()) as f64)
                        }
                        Some(values) => {
                            let values = cast(&values, &DataType::Float64)?;
                            self.reduce(values.as_primitive::<Float64Type>())
                        }
                        None if self.op == MvOp::Count => Some(0.0),
                        None => None,
                    });
                }
                out
            }
            _ => {
                if self.op == MvOp::Count {
                    (0..array.len())
                        .map(|i| Some(f64::from(u8::from(array.is_valid(i)))))
                        .collect()
                } else {
                    let values = cast(&array, &DataType::Float64)?;
                    values.as_primitive::<Float64Type>().iter().collect()
                }
            }
        };
        let result: ArrayRef = if self.op == MvOp::Count {
            let mut b = Int64Builder::with_capacity(reduced.len());
            for v in reduced {
                b.append_option(v.map(|v| v as i64));
            }
            Arc::new(b.finish())
        } else {
            let mut b = Float64Builder::with_capacity(reduced.len());
            for v in reduced {
                b.append_option(v);
            }
            Arc::new(b.finish())
        };
        Ok(ColumnarValue::Array(result))
    }
}

/// Every function of the dialect, ready to register.
pub fn all(now_ms: NowMs) -> Vec<ScalarUDF> {
    let any = |n| Signature::any(n, Volatility::Immutable);
    let mut out = vec![
        ScalarUDF::new_from_impl(Ago {
            signature: Signature::any(1, Volatility::Stable),
            now_ms: now_ms.clone(),
        }),
        ScalarUDF::new_from_impl(DateTrunc {
            signature: Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Any(2),
                    datafusion::logical_expr::TypeSignature::Any(3),
                ],
                Volatility::Immutable,
            ),
        }),
        ScalarUDF::new_from_impl(ToDateTime {
            signature: Signature::one_of(
                vec![
                    datafusion::logical_expr::TypeSignature::Any(2),
                    datafusion::logical_expr::TypeSignature::Any(3),
                ],
                Volatility::Immutable,
            ),
        }),
    ];
    for op in [MvOp::Sum, MvOp::Count, MvOp::Min, MvOp::Max] {
        out.push(ScalarUDF::new_from_impl(MultiValue {
            op,
            signature: any(1),
        }));
    }
    out.extend(crate::pinot_functions::all(now_ms));
    out.push(crate::json_match::udf());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations() {
        assert_eq!(parse_iso_duration("PT1M"), Some(60_000));
        assert_eq!(parse_iso_duration("PT2M"), Some(120_000));
        assert_eq!(parse_iso_duration("PT1H"), Some(3_600_000));
        assert_eq!(parse_iso_duration("P1D"), Some(86_400_000));
        assert_eq!(
            parse_iso_duration("P1DT1H30M"),
            Some(86_400_000 + 5_400_000)
        );
        assert_eq!(parse_iso_duration("PT0.5S"), Some(500));
        assert_eq!(parse_iso_duration("1M"), None);
        assert_eq!(parse_iso_duration("PT"), None);
        assert_eq!(parse_iso_duration("PT5"), None);
        assert_eq!(
            parse_iso_duration("P1M"),
            None,
            "months are not a fixed length"
        );
    }

    #[test]
    fn java_patterns() {
        assert_eq!(
            java_pattern_to_chrono("yyyy-MM-dd HH:mm:ss"),
            "%Y-%m-%d %H:%M:%S"
        );
        assert_eq!(
            java_pattern_to_chrono("yyyy-MM-dd'T'HH:mm:ss.SSS"),
            "%Y-%m-%dT%H:%M:%S.%3f"
        );
        assert_eq!(java_pattern_to_chrono("MMM d, h:mm a"), "%b %-d, %-I:%M %p");
    }

    #[test]
    fn calendar_truncation() {
        // 2026-11-25T10:30:19Z (a Wednesday).
        let t = 1_795_602_619_000;
        assert_eq!(trunc_calendar(t, "MONTH"), Some(1_793_491_200_000));
        assert_eq!(trunc_calendar(t, "WEEK"), Some(1_795_392_000_000));
    }
}
