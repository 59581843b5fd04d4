//! Pinot conformance: queries written from Apache Pinot's documentation (and, where the docs
//! are silent, Pinot's source), each with the exact answer Pinot gives on a fixed set of ten
//! orders, run through `/query/sql`'s path (`SqlEngine::query_pinot`). The cases are data
//! (`tests/pinot/cases.json`: feature, the page it follows, the SQL, and the expected column
//! names, Pinot types, rows, row count, response fields or error code); a summary line per
//! feature is printed, and any failing case fails the test with every difference listed.
//!
//! The ten orders, k = 0..9, one minute apart from T0 (2026-11-20 00:00 UTC); "now" is T0 + 10 min:
//!
//! | k | order_total | risk_score | city (state) | fraud | coupon | zipcode | items (name qty) |
//! |---|---|---|---|---|---|---|---|
//! | 0 | 10.5 | 1 | Austin (TX) | - | SAVE10 | 10001 | Widget 2 |
//! | 1 | 20 | 2 | Boston (MA) | - | SAVE10, FREESHIP | 10002 | Widget 1, Gadget 3 |
//! | 2 | 20 | 3 | Chicago (IL) | yes | - | 10003 | Widget 2 |
//! | 3 | 30 | 4 | Austin | - | FREESHIP | 10004 | Widget 1, Gadget 3 |
//! | 4 | 40 | 5 | Boston | - | WELCOME5 | 10005 | Widget 2 |
//! | 5 | 50 | 6 | Chicago | - | - | 10006 | Widget 1, Gadget 3 |
//! | 6 | 50 | 7 | Austin | - | - | 10007 | Widget 2 |
//! | 7 | 50 | 8 | Boston | yes | - | 10008 | Widget 1, Gadget 3 |
//! | 8 | 75.25 | 9 | Chicago | - | SAVE10 | 10009 | Widget 2 |
//! | 9 | 100 | 10 | Austin | - | - | 10010 | Widget 1, Gadget 3 |

mod common;

use std::collections::BTreeMap;

use ingest::{IngestConfig, Ingestor, Message};
use orders::model::{CouponCode, LineItem};
use orders::{Generator, GeneratorConfig};
use serde_json::Value;
use sql::{SqlConfig, SqlEngine};
use table::TableConfig;

/// 2026-11-20 00:00:00 UTC.
const T0: i64 = 1_795_132_800_000;
const MINUTE: i64 = 60_000;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    feature: String,
    /// The documentation page (or Pinot source file) the expected answer follows.
    doc: String,
    sql: String,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    types: Option<Vec<String>>,
    #[serde(default)]
    rows: Option<Vec<Value>>,
    #[serde(default)]
    row_count: Option<usize>,
    /// The one cell of the answer lies in [low, high] (approximate algorithms).
    #[serde(default)]
    approx: Option<[f64; 2]>,
    /// Response fields with their exact values.
    #[serde(default)]
    fields: Option<BTreeMap<String, Value>>,
    /// The Pinot error code the query answers (0: any error).
    #[serde(default)]
    error: Option<i64>,
    /// The answer (or error) comes within this many ms (`timeUsedMs`).
    #[serde(default)]
    max_time_ms: Option<u64>,
}

fn orders() -> Vec<Vec<u8>> {
    let totals = [10.5, 20.0, 20.0, 30.0, 40.0, 50.0, 50.0, 50.0, 75.25, 100.0];
    let places = [("Austin", "TX"), ("Boston", "MA"), ("Chicago", "IL")];
    let coupons: [&[&str]; 10] = [
        &["SAVE10"],
        &["SAVE10", "FREESHIP"],
        &[],
        &["FREESHIP"],
        &["WELCOME5"],
        &[],
        &[],
        &[],
        &["SAVE10"],
        &[],
    ];
    let mut g = Generator::new(GeneratorConfig::default());
    (0..10usize)
        .map(|k| {
            let mut o = g.generate(k as u64 + 1, T0 + k as i64 * MINUTE);
            let (city, state) = places[k % 3];
            o.order_total = totals[k];
            o.risk_score = k as u32 + 1;
            o.fraud_flag = k == 2 || k == 7;
            o.customer.city = city.into();
            o.customer.state = state.into();
            o.customer.zipcode = format!("{}", 10_001 + k);
            o.customer.customer_id = uuid::Uuid::from_u128(k as u128 % 4 + 1);
            o.coupon_codes = coupons[k]
                .iter()
                .map(|c| CouponCode {
                    name: (*c).to_string().into(),
                })
                .collect();
            let template = o.line_items[0].clone();
            let item = |name: &'static str, category: &'static str, quantity: u32, price: f64| {
                let mut i: LineItem = template.clone();
                i.product.name = name.into();
                i.product.category = category.into();
                i.product.price = price;
                i.quantity = quantity;
                i.free_qty = 0;
                i
            };
            o.line_items = if k % 2 == 0 {
                vec![item("Widget", "Tools", 2, 5.0)]
            } else {
                vec![
                    item("Widget", "Tools", 1, 5.0),
                    item("Gadget", "Toys", 3, 7.5),
                ]
            };
            o.to_json()
        })
        .collect()
}

fn engine(dir: &std::path::Path, config: SqlConfig) -> SqlEngine {
    let now = T0 + 10 * MINUTE;
    let clock = clock::ManualClock::new(now);
    let table = common::order_table(dir, TableConfig::default(), clock.clone());
    let docs = orders();
    let msgs = Message::numbered(&docs);
    let mut ingestor = Ingestor::new(IngestConfig::default());
    let batch = ingestor.ingest(&msgs, now).batch.expect("rows");
    assert_eq!(batch.num_rows(), 10, "every order is valid");
    table.append(batch).expect("append");
    SqlEngine::new(table, config, clock).expect("engine")
}

/// What is wrong with the answer to `case`, if anything.
fn check(case: &Case, answer: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    if let Some(ms) = case.max_time_ms {
        match answer["timeUsedMs"].as_u64() {
            Some(t) if t <= ms => {}
            other => wrong.push(format!("expected an answer within {ms} ms, took {other:?}")),
        }
    }
    let errors = answer["exceptions"].as_array().cloned().unwrap_or_default();
    if let Some(code) = case.error {
        match errors.first() {
            None => wrong.push(format!("expected error {code}, got an answer: {answer}")),
            Some(e) if code != 0 && e["errorCode"] != code => {
                wrong.push(format!("expected error {code}, got {e}"))
            }
            Some(_) => {}
        }
        return wrong;
    }
    if !errors.is_empty() {
        return vec![format!("failed: {}", Value::Array(errors))];
    }
    let table = &answer["resultTable"];
    let mut compare = |what: &str, expected: Value, got: &Value| {
        if expected != *got {
            wrong.push(format!("{what}: expected {expected}, got {got}"));
        }
    };
    if let Some(c) = &case.columns {
        compare(
            "columns",
            Value::from(c.clone()),
            &table["dataSchema"]["columnNames"],
        );
    }
    if let Some(t) = &case.types {
        compare(
            "types",
            Value::from(t.clone()),
            &table["dataSchema"]["columnDataTypes"],
        );
    }
    if let Some(r) = &case.rows {
        compare("rows", Value::Array(r.clone()), &table["rows"]);
    }
    if let Some(n) = case.row_count {
        let got = table["rows"].as_array().map_or(0, Vec::len);
        compare("row count", Value::from(n), &Value::from(got));
    }
    if let Some(fields) = &case.fields {
        for (k, v) in fields {
            compare(k, v.clone(), &answer[k]);
        }
    }
    if let Some([low, high]) = case.approx {
        match table["rows"][0][0].as_f64() {
            Some(v) if (low..=high).contains(&v) => {}
            other => wrong.push(format!(
                "expected a value in [{low}, {high}], got {other:?}"
            )),
        }
    }
    wrong
}

#[tokio::test]
async fn pinot_documented_queries_answer_as_pinot_does() {
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("pinot/cases.json")).expect("cases.json parses");
    assert!(cases.len() >= 80, "the suite keeps at least 80 queries");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine(dir.path(), SqlConfig::default());
    let mut by_feature: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        assert!(
            !case.doc.is_empty(),
            "{}: every case cites its source",
            case.sql
        );
        let answer = engine.query_pinot(&case.sql).await;
        let wrong = check(case, &answer);
        let tally = by_feature.entry(&case.feature).or_default();
        tally.1 += 1;
        if wrong.is_empty() {
            tally.0 += 1;
        } else {
            failures.push(format!(
                "[{}] {}\n    {}",
                case.feature,
                case.sql,
                wrong.join("\n    ")
            ));
        }
    }
    let passed: usize = by_feature.values().map(|(p, _)| p).sum();
    let summary: Vec<String> = by_feature
        .iter()
        .map(|(f, (p, n))| format!("{f} {p}/{n}"))
        .collect();
    println!(
        "pinot conformance: {passed}/{} queries pass ({})",
        cases.len(),
        summary.join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `sql.default_limit = 0`: a selection without LIMIT answers every row (15 line items).
#[tokio::test]
async fn default_limit_zero_answers_every_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limited = engine(dir.path(), SqlConfig::default());
    let sql = "SELECT line_items.product.name FROM orders";
    let rows = |v: &Value| v["resultTable"]["rows"].as_array().map_or(0, Vec::len);
    assert_eq!(rows(&limited.query_pinot(sql).await), 10);
    drop(limited);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SqlConfig {
        default_limit: 0,
        ..SqlConfig::default()
    };
    let all = engine(dir.path(), config);
    assert_eq!(rows(&all.query_pinot(sql).await), 15);
}
