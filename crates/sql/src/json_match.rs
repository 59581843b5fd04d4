//! `JSON_MATCH(json, 'filter')`: Pinot's filter on a JSON document, with Pinot's semantics
//! (Pinot's JSON index page, docs.pinot.apache.org/basics/indexing/json-index, and its
//! `JsonUtils.flatten`, `MutableJsonIndexImpl`/`ImmutableJsonIndexReader` in apache/pinot).
//!
//! The document is flattened into records: every array element is a record of its own (scalars
//! outside the array are in every record; sibling arrays give every combination, at most
//! [`MAX_RECORDS`]; a larger document matches nothing). Values are text (`"1"` for the number 1, `"true"`, strings as they are);
//! `null`, `[]` and `{}` give no value at all. Each predicate is checked on one record, AND and
//! OR combine on the same record (so two conditions on `"$.a[*].x"` and `"$.a[*].y"` must hold
//! for the same element), and a row matches when one of its records does.
//!
//! The filter: keys are JSONPath in double quotes (`"$.customer.city"`, `"$.items[*].name"`,
//! `"$.items[0].name"`; a key without `$` is the legacy form, `a.b` meaning `$.a.b`), values are
//! SQL literals (strings in single quotes, doubled inside the outer literal). Predicates: `=`,
//! `!=` / `<>`, `IN (...)`, `NOT IN (...)`, `IS NOT NULL`, `IS NULL` (only as the whole filter),
//! `REGEXP_LIKE("$.k", 'regex')` (whole-value match), `LIKE`, `<`, `<=`, `>`, `>=`,
//! `BETWEEN a AND b` (numeric when the literal is a number, else by text), `AND`, `OR` and
//! parentheses. `!=` and `NOT IN` hold for a record that has the key with another value
//! (Pinot 1.2). `NOT` is refused, as Pinot refuses it.
//!
//! Pinot needs a JSON index on the column for JSON_MATCH; rtap evaluates it by reading the
//! documents (`rtap pinot-config` declares the JSON index for Pinot).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result, ScalarValue};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;
use serde_json::Value;

use crate::pinot_functions::{parse_json_path, Step};

/// Records one document may flatten into (Pinot's `JsonUtils.MAX_COMBINATIONS`) ...
pub const MAX_RECORDS: usize = 100_000;
/// ... and leaf places in all its records (a scalar outside an array is in every record): what
/// bounds (with [`MAX_WORK`]) the memory and time one document costs: tens of MB at most.
pub const MAX_SLOTS: usize = 1 << 20;
/// ... and the bytes of leaf paths and values plus the record steps flattening takes.
const MAX_WORK: usize = 16 << 20;
/// Predicates in one filter, and regular expressions among them.
const MAX_PREDICATES: usize = 128;
const MAX_REGEXES: usize = 16;
/// The longest filter text taken (the query's own size limit applies first).
const MAX_FILTER_BYTES: usize = 64 * 1024;
/// A regular expression's compiled size limit (as REGEXP_EXTRACT's).
const REGEX_SIZE: usize = 1 << 20;

#[derive(Debug, Clone)]
enum Literal {
    Text(String),
    Number(f64, String),
}

impl Literal {
    fn text(&self) -> &str {
        match self {
            Literal::Text(t) | Literal::Number(_, t) => t,
        }
    }
}

#[derive(Debug, Clone)]
enum Test {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    NotNull,
    Regex(Regex),
    /// Lower and upper bounds, each inclusive or not.
    Range(Option<(Literal, bool)>, Option<(Literal, bool)>),
}

#[derive(Debug, Clone)]
enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Pred(Vec<Step>, Test),
    /// `"$.k" IS NULL`: no record has the key (only as the whole filter).
    IsNull(Vec<Step>),
}

fn invalid<T>(filter: &str, why: &str) -> Result<T> {
    plan_err!("Invalid json match filter: {filter} ({why})")
}

// ---------------------------------------------------------------- filter text -> Filter

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Key(String),
    Str(String),
    Num(f64, String),
    Word(String),
    Op(&'static str),
}

/// The text quoted by `quote` at byte `start` of `s` (the quote doubled inside stands for
/// itself), and where it ends.
fn quoted(s: &str, start: usize, quote: char) -> Result<(String, usize)> {
    let mut text = String::new();
    let mut i = start + 1;
    loop {
        let Some(n) = s[i..].find(quote) else {
            return invalid(s, &format!("a {quote} is not closed"));
        };
        text.push_str(&s[i..i + n]);
        i += n + 1;
        if s[i..].starts_with(quote) {
            text.push(quote);
            i += 1;
        } else {
            return Ok((text, i));
        }
    }
}

fn tokens(s: &str) -> Result<Vec<Tok>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'"' => {
                let (key, next) = quoted(s, i, '"')?;
                out.push(Tok::Key(key));
                i = next;
            }
            b'\'' => {
                let (text, next) = quoted(s, i, '\'')?;
                out.push(Tok::Str(text));
                i = next;
            }
            b'(' => {
                out.push(Tok::Op("("));
                i += 1;
            }
            b')' => {
                out.push(Tok::Op(")"));
                i += 1;
            }
            b',' => {
                out.push(Tok::Op(","));
                i += 1;
            }
            b'=' => {
                out.push(Tok::Op("="));
                i += 1;
            }
            b'!' if b.get(i + 1) == Some(&b'=') => {
                out.push(Tok::Op("!="));
                i += 2;
            }
            b'<' => {
                let (op, n) = match b.get(i + 1) {
                    Some(b'=') => ("<=", 2),
                    Some(b'>') => ("!=", 2),
                    _ => ("<", 1),
                };
                out.push(Tok::Op(op));
                i += n;
            }
            b'>' => {
                let (op, n) = match b.get(i + 1) {
                    Some(b'=') => (">=", 2),
                    _ => (">", 1),
                };
                out.push(Tok::Op(op));
                i += n;
            }
            b'-' | b'+' | b'.' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_digit()
                        || b[i] == b'.'
                        || b[i] == b'e'
                        || b[i] == b'E'
                        || ((b[i] == b'-' || b[i] == b'+') && matches!(b[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                let text = &s[start..i];
                match text.parse::<f64>() {
                    Ok(v) if v.is_finite() => {
                        out.push(Tok::Num(v, text.trim_start_matches('+').to_string()))
                    }
                    _ => return invalid(s, &format!("{text:?} is not a number")),
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || matches!(b[i], b'_' | b'$' | b'.' | b'[' | b']' | b'*'))
                {
                    i += 1;
                }
                out.push(Tok::Word(s[start..i].to_string()));
            }
            _ => {
                return invalid(
                    s,
                    &format!("unexpected {:?}", &s[i..].chars().next().unwrap_or(' ')),
                )
            }
        }
    }
    Ok(out)
}

/// A key's JSONPath as steps (JSON_EXTRACT_SCALAR's path syntax); a key without `$` is `$.` + key.
fn path(filter: &str, key: &str) -> Result<Vec<Step>> {
    let key = if key.starts_with('$') {
        key.to_string()
    } else {
        format!("$.{key}")
    };
    parse_json_path(&key).or_else(|_| {
        invalid(
            filter,
            &format!("the key {key:?} is not a JSONPath of .key, ['key'], [n] and [*]"),
        )
    })
}

struct Parser<'a> {
    filter: &'a str,
    toks: Vec<Tok>,
    at: usize,
    /// Conditions and regular expressions read so far (bounded while parsing, before a
    /// regex is compiled).
    predicates: usize,
    regexes: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }
    fn word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
    }
    fn op(&self, o: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(x)) if *x == o)
    }
    fn expect_op(&mut self, o: &str) -> Result<()> {
        if self.op(o) {
            self.at += 1;
            Ok(())
        } else {
            invalid(self.filter, &format!("expected {o}"))
        }
    }
    fn or(&mut self, depth: usize) -> Result<Filter> {
        if depth > 64 {
            return invalid(self.filter, "nested too deeply");
        }
        let mut parts = vec![self.and(depth)?];
        while self.word("OR") {
            self.at += 1;
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::Or(parts)
        })
    }
    fn and(&mut self, depth: usize) -> Result<Filter> {
        let mut parts = vec![self.primary(depth)?];
        while self.word("AND") {
            self.at += 1;
            parts.push(self.primary(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }
    fn literal(&mut self) -> Result<Literal> {
        let lit = match self.peek() {
            Some(Tok::Str(s)) => Literal::Text(s.clone()),
            Some(Tok::Num(v, t)) => Literal::Number(*v, t.clone()),
            Some(Tok::Word(w))
                if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") =>
            {
                Literal::Text(w.to_ascii_lowercase())
            }
            _ => return invalid(self.filter, "expected a value"),
        };
        self.at += 1;
        Ok(lit)
    }
    fn list(&mut self) -> Result<Vec<String>> {
        self.expect_op("(")?;
        let mut values = vec![self.literal()?.text().to_string()];
        while self.op(",") {
            self.at += 1;
            values.push(self.literal()?.text().to_string());
        }
        self.expect_op(")")?;
        Ok(values)
    }
    fn regex(&mut self, pattern: &str) -> Result<Regex> {
        self.regexes += 1;
        if self.regexes > MAX_REGEXES {
            return invalid(
                self.filter,
                &format!("at most {MAX_REGEXES} REGEXP_LIKE/LIKE in one filter"),
            );
        }
        regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(REGEX_SIZE)
            .build()
            .or_else(|e| invalid(self.filter, &format!("bad regular expression: {e}")))
    }
    fn primary(&mut self, depth: usize) -> Result<Filter> {
        if self.op("(") {
            self.at += 1;
            let inner = self.or(depth + 1)?;
            self.expect_op(")")?;
            return Ok(inner);
        }
        if self.word("NOT") {
            return invalid(self.filter, "NOT is not supported in JSON_MATCH");
        }
        if self.word("REGEXP_LIKE") {
            self.at += 1;
            self.expect_op("(")?;
            let key = self.key()?;
            self.expect_op(",")?;
            let pattern = match self.literal()? {
                Literal::Text(t) => t,
                Literal::Number(_, t) => t,
            };
            self.expect_op(")")?;
            return Ok(Filter::Pred(key, Test::Regex(self.regex(&pattern)?)));
        }
        let key = self.key()?;
        let negated = if self.word("NOT") {
            self.at += 1;
            true
        } else {
            false
        };
        if self.word("IN") {
            self.at += 1;
            let values = self.list()?;
            return Ok(Filter::Pred(
                key,
                if negated {
                    Test::NotIn(values)
                } else {
                    Test::In(values)
                },
            ));
        }
        if self.word("LIKE") {
            if negated {
                return invalid(self.filter, "NOT LIKE is not supported in JSON_MATCH");
            }
            self.at += 1;
            let pattern = self.literal()?.text().to_string();
            return Ok(Filter::Pred(
                key,
                Test::Regex(self.regex(&like_regex(&pattern))?),
            ));
        }
        if negated {
            return invalid(self.filter, "NOT is not supported in JSON_MATCH");
        }
        if self.word("IS") {
            self.at += 1;
            let not = self.word("NOT");
            if not {
                self.at += 1;
            }
            if !self.word("NULL") {
                return invalid(self.filter, "expected NULL after IS");
            }
            self.at += 1;
            return Ok(if not {
                Filter::Pred(key, Test::NotNull)
            } else {
                Filter::IsNull(key)
            });
        }
        if self.word("BETWEEN") {
            self.at += 1;
            let lo = self.literal()?;
            if !self.word("AND") {
                return invalid(self.filter, "expected AND in BETWEEN");
            }
            self.at += 1;
            let hi = self.literal()?;
            return Ok(Filter::Pred(
                key,
                Test::Range(Some((lo, true)), Some((hi, true))),
            ));
        }
        let Some(Tok::Op(op)) = self.peek().cloned() else {
            return invalid(self.filter, "expected a comparison after the key");
        };
        self.at += 1;
        let value = self.literal()?;
        Ok(Filter::Pred(
            key,
            match op {
                "=" => Test::Eq(value.text().to_string()),
                "!=" => Test::NotEq(value.text().to_string()),
                "<" => Test::Range(None, Some((value, false))),
                "<=" => Test::Range(None, Some((value, true))),
                ">" => Test::Range(Some((value, false)), None),
                ">=" => Test::Range(Some((value, true)), None),
                other => return invalid(self.filter, &format!("unexpected {other}")),
            },
        ))
    }
    fn key(&mut self) -> Result<Vec<Step>> {
        let key = match self.peek() {
            Some(Tok::Key(k)) | Some(Tok::Word(k)) => k.clone(),
            _ => {
                return invalid(
                    self.filter,
                    "the left-hand side must be a key; put double quotes around it: \"$.key\"",
                )
            }
        };
        self.at += 1;
        // Every condition names one key: counted here, while parsing.
        self.predicates += 1;
        if self.predicates > MAX_PREDICATES {
            return invalid(
                self.filter,
                &format!("at most {MAX_PREDICATES} conditions in one filter"),
            );
        }
        path(self.filter, &key)
    }
}

/// SQL LIKE pattern (`%`, `_`) as a regular expression.
fn like_regex(pattern: &str) -> String {
    let mut out = String::new();
    for c in pattern.chars() {
        match c {
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out
}

fn parse_filter(filter: &str) -> Result<Filter> {
    if filter.len() > MAX_FILTER_BYTES {
        return invalid(filter, "longer than 64 KiB");
    }
    let mut p = Parser {
        filter,
        toks: tokens(filter)?,
        at: 0,
        predicates: 0,
        regexes: 0,
    };
    if p.toks.is_empty() {
        return invalid(filter, "empty");
    }
    let f = p.or(0)?;
    if p.at != p.toks.len() {
        return invalid(filter, "unexpected text after the filter");
    }
    if !matches!(f, Filter::IsNull(_)) && has_is_null(&f) {
        return plan_err!("Invalid json match filter: {filter} (IS NULL cannot be nested)");
    }
    Ok(f)
}

fn has_is_null(f: &Filter) -> bool {
    match f {
        Filter::IsNull(_) => true,
        Filter::And(v) | Filter::Or(v) => v.iter().any(has_is_null),
        Filter::Pred(..) => false,
    }
}

// ---------------------------------------------------------------- document -> records

/// A document's leaves (each once) and its records, each a list of leaf indexes.
struct Flat {
    leaves: Vec<(Vec<Step>, String)>,
    records: Vec<Vec<u32>>,
}

/// Flattens `doc` into records (see the module doc); None when it makes more than
/// [`MAX_RECORDS`] records or more than [`MAX_SLOTS`] leaf places in all.
fn flatten(doc: &Value) -> Option<Flat> {
    struct Walk {
        leaves: Vec<(Vec<Step>, String)>,
        at: Vec<Step>,
        /// Bytes of the key path `at` (each leaf keeps a copy of it) ...
        at_bytes: usize,
        /// ... and what every leaf's copy and record step has cost so far: at most
        /// [`MAX_WORK`], so neither memory nor time can grow with the square of a document.
        work: usize,
    }
    fn product(a: Vec<Vec<u32>>, b: Vec<Vec<u32>>) -> Option<Vec<Vec<u32>>> {
        let slots = a
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            .saturating_mul(b.len())
            + b.iter()
                .map(Vec::len)
                .sum::<usize>()
                .saturating_mul(a.len());
        if a.len().saturating_mul(b.len()) > MAX_RECORDS || slots > MAX_SLOTS {
            return None;
        }
        if let [only] = b.as_slice() {
            // The common case (an object's scalar field): extended in place, no copies.
            let mut a = a;
            for r in &mut a {
                r.extend_from_slice(only);
            }
            return Some(a);
        }
        let mut out = Vec::with_capacity(a.len() * b.len());
        for r in &a {
            for t in &b {
                let mut both = r.clone();
                both.extend_from_slice(t);
                out.push(both);
            }
        }
        Some(out)
    }
    impl Walk {
        fn walk(&mut self, v: &Value) -> Option<Vec<Vec<u32>>> {
            match v {
                Value::Null => Some(vec![Vec::new()]),
                Value::Object(map) => {
                    let mut records: Vec<Vec<u32>> = vec![Vec::new()];
                    for (k, child) in map {
                        self.at.push(Step::Key(k.clone()));
                        self.at_bytes += k.len() + 8;
                        let sub = self.walk(child);
                        self.at.pop();
                        self.at_bytes -= k.len() + 8;
                        let sub = sub?;
                        if let [only] = sub.as_slice() {
                            if only.is_empty() {
                                // null, {} or []: adds nothing to any record.
                                continue;
                            }
                        }
                        self.spend(records.len().saturating_mul(sub.len()))?;
                        records = product(records, sub)?;
                    }
                    Some(records)
                }
                Value::Array(items) => {
                    if items.is_empty() {
                        return Some(vec![Vec::new()]);
                    }
                    let mut records = Vec::new();
                    let mut slots = 0usize;
                    for (i, child) in items.iter().enumerate() {
                        self.at.push(Step::Index(i));
                        self.at_bytes += 8;
                        let sub = self.walk(child);
                        self.at.pop();
                        self.at_bytes -= 8;
                        let sub = sub?;
                        slots += sub.iter().map(Vec::len).sum::<usize>();
                        records.extend(sub);
                        if records.len() > MAX_RECORDS || slots > MAX_SLOTS {
                            return None;
                        }
                    }
                    Some(records)
                }
                scalar => {
                    if self.leaves.len() >= MAX_SLOTS {
                        return None;
                    }
                    let text = match scalar {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    self.spend(self.at_bytes + text.len())?;
                    let index = u32::try_from(self.leaves.len()).ok()?;
                    self.leaves.push((self.at.clone(), text));
                    Some(vec![vec![index]])
                }
            }
        }

        fn spend(&mut self, units: usize) -> Option<()> {
            self.work = self.work.saturating_add(units);
            (self.work <= MAX_WORK).then_some(())
        }
    }
    let mut w = Walk {
        leaves: Vec::new(),
        at: Vec::new(),
        at_bytes: 0,
        work: 0,
    };
    let records = w.walk(doc)?;
    Some(Flat {
        leaves: w.leaves,
        records,
    })
}

fn matches_path(pattern: &[Step], concrete: &[Step]) -> bool {
    pattern.len() == concrete.len()
        && pattern.iter().zip(concrete).all(|(p, c)| match (p, c) {
            (Step::Any, Step::Index(_)) => true,
            (p, c) => p == c,
        })
}

fn compare(value: &str, bound: &Literal) -> Option<std::cmp::Ordering> {
    match bound {
        Literal::Number(b, _) => value.trim().parse::<f64>().ok()?.partial_cmp(b),
        Literal::Text(t) => Some(value.cmp(t.as_str())),
    }
}

fn test(t: &Test, value: &str) -> bool {
    use std::cmp::Ordering::*;
    match t {
        Test::Eq(v) => value == v,
        Test::NotEq(v) => value != v,
        Test::In(vs) => vs.iter().any(|v| v == value),
        Test::NotIn(vs) => !vs.iter().any(|v| v == value),
        Test::NotNull => true,
        Test::Regex(r) => r.is_match(value),
        Test::Range(lo, hi) => {
            let lo_ok = lo.as_ref().is_none_or(|(b, inclusive)| {
                matches!(
                    (compare(value, b), inclusive),
                    (Some(Greater), _) | (Some(Equal), true)
                )
            });
            let hi_ok = hi.as_ref().is_none_or(|(b, inclusive)| {
                matches!(
                    (compare(value, b), inclusive),
                    (Some(Less), _) | (Some(Equal), true)
                )
            });
            lo_ok && hi_ok
        }
    }
}

fn on_record(f: &Filter, leaves: &[(Vec<Step>, String)], r: &[u32]) -> bool {
    let leaf = |i: &u32| &leaves[*i as usize];
    match f {
        Filter::And(v) => v.iter().all(|f| on_record(f, leaves, r)),
        Filter::Or(v) => v.iter().any(|f| on_record(f, leaves, r)),
        Filter::Pred(key, t) => r
            .iter()
            .map(leaf)
            .any(|(p, value)| matches_path(key, p) && test(t, value)),
        Filter::IsNull(key) => !r.iter().map(leaf).any(|(p, _)| matches_path(key, p)),
    }
}

/// Whether a document matches: one of its records does (`IS NULL`: none has the key). A
/// document too large to flatten ([`MAX_RECORDS`], [`MAX_SLOTS`]) matches nothing: one such
/// value must not make every query on its column fail.
fn matches(f: &Filter, doc: &Value) -> bool {
    let Some(flat) = flatten(doc) else {
        return false;
    };
    match f {
        Filter::IsNull(_) => flat.records.iter().all(|r| on_record(f, &flat.leaves, r)),
        _ => flat.records.iter().any(|r| on_record(f, &flat.leaves, r)),
    }
}

// ---------------------------------------------------------------- the SQL function

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonMatch {
    signature: Signature,
}

impl ScalarUDFImpl for JsonMatch {
    fn name(&self) -> &str {
        "json_match"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        // A bad filter is refused when the query is planned, as Pinot refuses it, not only
        // when a row reaches the function.
        match args.get(1) {
            Some(Expr::Literal(
                ScalarValue::Utf8(Some(f))
                | ScalarValue::Utf8View(Some(f))
                | ScalarValue::LargeUtf8(Some(f)),
                _,
            )) => {
                parse_filter(f)?;
            }
            _ => return plan_err!("JSON_MATCH's filter must be a constant string"),
        }
        Ok(ExprSimplifyResult::Original(args))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let filter = match &args.args[1] {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::Utf8View(Some(s))
                | ScalarValue::LargeUtf8(Some(s)),
            ) => s.clone(),
            _ => return plan_err!("JSON_MATCH's filter must be a constant string"),
        };
        let filter = parse_filter(&filter)?;
        let docs = cast(&args.args[0].to_array(args.number_rows)?, &DataType::Utf8)?;
        let docs = docs.as_string::<i32>();
        let mut out = BooleanBuilder::with_capacity(docs.len());
        for i in 0..docs.len() {
            if docs.is_null(i) {
                // Pinot's JSON column holds "null" for a missing value: only IS NULL matches.
                out.append_value(matches(&filter, &Value::Null));
                continue;
            }
            let doc = match serde_json::from_str::<Value>(docs.value(i)) {
                Ok(doc) => doc,
                // Not JSON: indexed as a top-level string value.
                Err(_) => Value::String(docs.value(i).to_string()),
            };
            out.append_value(matches(&filter, &doc));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(JsonMatch {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(doc: Value, filter: &str) -> bool {
        matches(&parse_filter(filter).expect("filter"), &doc)
    }

    #[test]
    fn pinot_doc_examples() {
        // docs.pinot.apache.org/basics/indexing/json-index, "person" documents.
        let adam = json!({"name": "adam", "age": 30, "country": "us",
            "addresses": [
                {"number": 112, "street": "main st", "country": "us"},
                {"number": 2, "street": "second st", "country": "us"},
                {"number": 3, "street": "third st", "country": "ca"}]});
        assert!(m(adam.clone(), r#""$.name"='adam'"#));
        assert!(!m(adam.clone(), r#""$.name"='bob'"#));
        assert!(m(adam.clone(), r#""$.addresses[*].number"=112"#));
        assert!(m(adam.clone(), r#""$.addresses[0].number"=112"#));
        assert!(!m(adam.clone(), r#""$.addresses[1].number"=112"#));
        assert!(m(
            adam.clone(),
            r#""$.name"='adam' AND "$.addresses[*].number"=112"#
        ));
        // Same element for AND on one array: no address is both main st and in ca.
        assert!(!m(
            adam.clone(),
            r#""$.addresses[*].street"='main st' AND "$.addresses[*].country"='ca'"#
        ));
        assert!(m(
            adam.clone(),
            r#""$.addresses[*].street"='main st' OR "$.addresses[*].country"='ca'"#
        ));
        // != : some address with another country.
        assert!(m(adam.clone(), r#""$.addresses[*].country" != 'us'"#));
        assert!(!m(
            adam.clone(),
            r#""$.addresses[*].country" NOT IN ('us', 'ca')"#
        ));
        assert!(m(adam.clone(), r#""$.addresses[*].country" IN ('ca')"#));
        assert!(m(adam.clone(), r#""$.phone" IS NULL"#));
        assert!(!m(adam.clone(), r#""$.name" IS NULL"#));
        assert!(m(adam.clone(), r#""$.name" IS NOT NULL"#));
        assert!(m(
            adam.clone(),
            r#"REGEXP_LIKE("$.addresses[*].street", '.*st.*')"#
        ));
        assert!(
            !m(
                adam.clone(),
                r#"REGEXP_LIKE("$.addresses[*].street", 'st')"#
            ),
            "whole value"
        );
        assert!(m(adam.clone(), r#""$.age" > 18"#));
        assert!(m(adam.clone(), r#""$.age" BETWEEN 20 AND 30"#));
        assert!(!m(adam.clone(), r#""$.age" BETWEEN 31 AND 40"#));
        // Text range when the literal is text: "30" < "4".
        assert!(m(adam.clone(), r#""$.age" < '4'"#));
        assert!(!m(adam.clone(), r#""$.age" < 4"#));
        // Numbers and text compare as text: 30 matches '30' and 30.
        assert!(m(adam.clone(), r#""$.age" = '30'"#));
        // Legacy keys.
        assert!(m(adam.clone(), "name='adam'"));
        assert!(m(adam, r#""$.addresses[*].street" LIKE '%main%'"#));
    }

    #[test]
    fn nulls_empties_and_errors() {
        assert!(m(json!({"a": null}), r#""$.a" IS NULL"#));
        assert!(m(json!({"a": []}), r#""$.a" IS NULL"#));
        assert!(m(Value::Null, r#""$.a" IS NULL"#));
        assert!(!m(Value::Null, r#""$.a" = 'x'"#));
        assert!(m(json!({"t": true}), r#""$.t" = true"#));
        assert!(m(json!({"t": true}), r#""$.t" = 'true'"#));
        assert!(m(json!({"a": "it's"}), r#""$.a" = 'it''s'"#));
        for bad in [
            r#"NOT "$.a" = 1"#,
            r#""$.a" IS NULL AND "$.b" = 1"#,
            r#""$.a" = "#,
            r#"1 = 1"#,
            r#""$.a" = 'x"#,
            "",
        ] {
            let err = parse_filter(bad).expect_err(bad).to_string();
            assert!(err.contains("Invalid json match filter"), "{bad}: {err}");
        }
    }

    #[test]
    fn documents_too_large_to_flatten_match_nothing_and_stay_small() {
        // A cross product over the record cap.
        let wide: Vec<Value> = (0..400).map(|i| json!(i)).collect();
        let doc = json!({"a": wide.clone(), "b": wide});
        assert!(flatten(&doc).is_none());
        assert!(!m(doc, r#""$.a[*]" = 1"#));
        // Under the record cap, but a scalar copied into every record: over the slot cap.
        let many: Vec<Value> = (0..99_999).map(|_| json!(0)).collect();
        let mut doc = json!({"a": many});
        for k in 0..20 {
            doc[format!("s{k}")] = json!("x".repeat(1_000));
        }
        assert!(flatten(&doc).is_none(), "{} slots", 99_999 * 21);
        // Just under both: matches, and each leaf's text is held once.
        let many: Vec<Value> = (0..40_000).map(|i| json!(i)).collect();
        let doc = json!({"a": many, "s": "y".repeat(100_000)});
        let flat = flatten(&doc).expect("fits");
        assert_eq!(flat.leaves.len(), 40_001);
        assert_eq!(flat.records.len(), 40_000);
        assert!(m(doc, r#""$.a[*]" = 39999 AND "$.s" IS NOT NULL"#));
    }

    #[test]
    fn long_paths_and_many_empty_keys_stay_cheap() {
        // A long key over many leaves: every leaf would copy the path.
        let zeros: Vec<Value> = (0..16_000).map(|_| json!(0)).collect();
        let doc = json!({"k".repeat(32_000): zeros});
        assert!(flatten(&doc).is_none(), "path copies are budgeted");
        // Thousands of keys adding nothing to 65,536 records: skipped, not multiplied.
        let mut doc = serde_json::Map::new();
        for k in 0..16 {
            doc.insert(format!("a{k:02}"), json!([null, null]));
        }
        for k in 0..6_500 {
            doc.insert(format!("b{k:04}"), json!({}));
        }
        // (Multiplied, they would cost 6,500 x 65,536 record steps: over the work budget.)
        let flat = flatten(&Value::Object(doc)).expect("fits");
        assert_eq!(flat.records.len(), 65_536);
    }

    #[test]
    fn filters_are_bounded() {
        let long = format!(r#""$.a" IN ({})"#, vec!["'x'"; 20_000].join(","));
        assert!(long.len() > MAX_FILTER_BYTES);
        assert!(parse_filter(&long).is_err());
        let deep = format!("{}\"$.a\" = 1{}", "(".repeat(70), ")".repeat(70));
        assert!(parse_filter(&deep).is_err(), "nesting is bounded");
        let ok = format!("{}\"$.a\" = 1{}", "(".repeat(60), ")".repeat(60));
        assert!(parse_filter(&ok).is_ok());
        let many = vec![r#""$.a" = 1"#; MAX_PREDICATES + 1].join(" OR ");
        assert!(parse_filter(&many).is_err(), "conditions are bounded");
        let regexes = vec![r#"REGEXP_LIKE("$.a", 'x.*')"#; MAX_REGEXES + 1].join(" OR ");
        assert!(parse_filter(&regexes).is_err(), "regexes are bounded");
        let huge = r#"REGEXP_LIKE("$.a", '(\w{1,100}){1,100}')"#;
        assert!(
            parse_filter(huge).is_err(),
            "a regex over its compiled size is refused"
        );
    }
}
