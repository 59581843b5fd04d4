//! The dashboard's time ranges and drill-downs (`GET /api/range`, `GET /api/drill`), from the
//! table: the orders-over-time series and the top lists of the last 5 minutes, hour, 24 hours,
//! 7 days or 30 days, and one category's items or one state's cities in such a range.
//!
//! The series is grouped per minute (5 minutes, an hour) or per hour in SQL; days are folded
//! from hours here, by their New York date (New York's offsets are whole hours, so every hour
//! lies in one New York day). Answers are cached for a few seconds per question, so the cost
//! does not grow with the number of viewers asking the same thing. These run in the user
//! lane: a heavy range waits its turn (or is refused as busy) like any user query.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::common::ScalarValue;
use serde_json::{json, Value};
use sql::{Lane, QueryOutput, SqlEngine};

use crate::analytics::{objects, round_money};
use crate::error::ApiError;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Answers kept (a drill-down per category or state and range, at most); past it the oldest
/// goes.
const MAX_CACHED: usize = 128;
/// Computations at once: questions are spread over this many locks, so viewers asking the same
/// question wait for one answer, and the dashboard's history never holds more than this many
/// of the user lane's turns (`sql.max_concurrent`, `sql.max_queued`): the top lists of one
/// answer are made one after another.
const LOCKS: usize = 2;
/// Longest category or state name a drill-down accepts.
const MAX_NAME_CHARS: usize = 200;

/// A time range the dashboard offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Range {
    Minute,
    FiveMinutes,
    Hour,
    Day,
    Week,
    Month,
}

/// The unit the series of a range is bucketed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Minute,
    Hour,
    Day,
}

impl Range {
    pub const ALL: [Range; 6] = [
        Range::Minute,
        Range::FiveMinutes,
        Range::Hour,
        Range::Day,
        Range::Week,
        Range::Month,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Range::Minute => "1m",
            Range::FiveMinutes => "5m",
            Range::Hour => "1h",
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Month => "30d",
        }
    }

    pub fn parse(s: &str) -> Result<Range, ApiError> {
        Range::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "unknown range {:?}: one of {}",
                    s.chars().take(20).collect::<String>(),
                    Range::ALL.map(Range::name).join(", ")
                ))
            })
    }

    /// How long an answer for this range is served again: longer ranges change less per
    /// second and cost more to compute.
    fn fresh_for(self) -> Duration {
        match self {
            Range::Minute | Range::FiveMinutes | Range::Hour => Duration::from_secs(5),
            Range::Day => Duration::from_secs(30),
            Range::Week | Range::Month => Duration::from_secs(60),
        }
    }

    pub fn span_ms(self) -> i64 {
        match self {
            Range::Minute => MINUTE_MS,
            Range::FiveMinutes => 5 * MINUTE_MS,
            Range::Hour => HOUR_MS,
            Range::Day => DAY_MS,
            Range::Week => 7 * DAY_MS,
            Range::Month => 30 * DAY_MS,
        }
    }

    fn bucket(self) -> Bucket {
        match self {
            Range::Minute | Range::FiveMinutes | Range::Hour => Bucket::Minute,
            Range::Day | Range::Week => Bucket::Hour,
            Range::Month => Bucket::Day,
        }
    }
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Bucket::Minute => "minute",
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }
}

/// What a drill-down looks into.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Drill {
    /// The top items of one category.
    Category(String),
    /// The top cities of one state.
    State(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Question {
    Range(Range),
    Drill(Range, Drill),
}

impl Question {
    fn fresh_for(&self) -> Duration {
        match self {
            Question::Range(r) | Question::Drill(r, _) => r.fresh_for(),
        }
    }

    fn lock(&self) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        BuildHasherDefault::<DefaultHasher>::default().hash_one(self) as usize % LOCKS
    }
}

/// Range and drill-down answers, cached per question for a few seconds.
#[derive(Debug, Default)]
pub struct History {
    answers: Mutex<HashMap<Question, (Instant, Arc<Value>)>>,
    /// One computation per lock at a time (see [`LOCKS`]).
    making: [tokio::sync::Mutex<()>; LOCKS],
}

impl History {
    fn cached(&self, q: &Question) -> Option<Arc<Value>> {
        let answers = self.answers.lock().ok()?;
        answers
            .get(q)
            .filter(|(at, _)| at.elapsed() < q.fresh_for())
            .map(|(_, v)| v.clone())
    }

    fn keep(&self, q: Question, v: Arc<Value>) {
        if let Ok(mut answers) = self.answers.lock() {
            answers.retain(|q, (at, _)| at.elapsed() < q.fresh_for());
            if answers.len() >= MAX_CACHED {
                let oldest = answers
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(q, _)| q.clone());
                if let Some(o) = oldest {
                    answers.remove(&o);
                }
            }
            answers.insert(q, (Instant::now(), v));
        }
    }

    async fn answer(&self, engine: &SqlEngine, q: Question) -> Result<Arc<Value>, ApiError> {
        if let Some(v) = self.cached(&q) {
            return Ok(v);
        }
        let _making = self.making[q.lock()].lock().await;
        if let Some(v) = self.cached(&q) {
            return Ok(v);
        }
        let now = engine.now_ms();
        let v = Arc::new(match &q {
            Question::Range(r) => range_at(engine, *r, now).await?,
            Question::Drill(r, d) => drill_at(engine, *r, d, now).await?,
        });
        self.keep(q, v.clone());
        Ok(v)
    }

    /// The series and top lists of `range`.
    pub async fn range(&self, engine: &SqlEngine, range: Range) -> Result<Arc<Value>, ApiError> {
        self.answer(engine, Question::Range(range)).await
    }

    /// One category's items or one state's cities in `range`.
    pub async fn drill(
        &self,
        engine: &SqlEngine,
        range: Range,
        drill: Drill,
    ) -> Result<Arc<Value>, ApiError> {
        let name = match &drill {
            Drill::Category(n) | Drill::State(n) => n,
        };
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(ApiError::BadRequest(format!(
                "a drill-down names 1 to {MAX_NAME_CHARS} printable characters"
            )));
        }
        self.answer(engine, Question::Drill(range, drill)).await
    }
}

async fn run(
    engine: &SqlEngine,
    sql: &str,
    params: Vec<ScalarValue>,
) -> Result<QueryOutput, ApiError> {
    Ok(engine.run_in(Lane::User, sql, params).await?)
}

/// The JSON keys of [`series_sql`]'s columns, in order.
pub(crate) const SERIES_KEYS: &[&str] = &[
    "start",
    "timestamp",
    "orders",
    "revenue",
    "fraud",
    "delivered",
    "refunded",
];

/// Orders per `unit` ("MINUTE" or "HOUR", never the caller's text) in ($1, $2], newest first,
/// with each bucket's start and New York stamp.
pub fn series_sql(unit: &'static str) -> String {
    include_str!("queries/series.sql").replace("{UNIT}", unit)
}

fn bounds(from: i64, to: i64) -> Vec<ScalarValue> {
    vec![ScalarValue::Int64(Some(from)), ScalarValue::Int64(Some(to))]
}

/// Orders in `(now - span, now]` per bucket, newest first, then the top lists of that range.
async fn range_at(engine: &SqlEngine, range: Range, now: i64) -> Result<Value, ApiError> {
    let from = now - range.span_ms();
    let bucket = range.bucket();
    let unit = match bucket {
        Bucket::Minute => "MINUTE",
        Bucket::Hour | Bucket::Day => "HOUR",
    };
    let out = run(engine, &series_sql(unit), bounds(from, now)).await?;
    let mut series = objects(&out, SERIES_KEYS);
    if bucket == Bucket::Day {
        series = fold_days(series);
    }
    round_money(&mut series, &["revenue"]);
    let list = |sql: &'static str| run(engine, sql, bounds(from, now));
    let items = list(include_str!("queries/popular_items.sql")).await?;
    let categories = list(include_str!("queries/popular_categories.sql")).await?;
    let cities = list(include_str!("queries/top_cities.sql")).await?;
    let states = list(include_str!("queries/top_states.sql")).await?;
    let coupons = list(include_str!("queries/coupons.sql")).await?;
    let mut coupons = objects(&coupons, &["coupon_code", "times_used"]);
    coupons.truncate(10);
    Ok(json!({
        "range": range.name(),
        "bucket": bucket.name(),
        "from": from,
        "to": now,
        "series": series,
        "itemNames": objects(&items, &["itemName", "orders", "quantity"]),
        "categories": objects(&categories, &["category", "orders", "quantity"]),
        "cities": objects(&cities, &["city", "totalOrders"]),
        "states": objects(&states, &["state", "totalOrders"]),
        "coupons": coupons,
    }))
}

/// Hour rows (newest first, `timestamp` "yyyy-MM-dd HH:mm:ss" New York time) summed per New
/// York day, newest first; a day starts at its earliest hour's `start`.
fn fold_days(hours: Vec<Value>) -> Vec<Value> {
    let mut days: Vec<Value> = Vec::new();
    for h in hours {
        let day = h["timestamp"]
            .as_str()
            .and_then(|t| t.get(..10))
            .unwrap_or_default()
            .to_string();
        let same = days
            .last()
            .is_some_and(|d| d["timestamp"].as_str().and_then(|t| t.get(..10)) == Some(&day));
        if !same {
            let mut first = h.clone();
            first["timestamp"] = json!(format!("{day} 00:00:00"));
            days.push(first);
            continue;
        }
        if let Some(d) = days.last_mut() {
            for k in ["orders", "fraud", "delivered", "refunded"] {
                let sum = d[k].as_i64().unwrap_or(0) + h[k].as_i64().unwrap_or(0);
                d[k] = json!(sum);
            }
            let revenue =
                d["revenue"].as_f64().unwrap_or(0.0) + h["revenue"].as_f64().unwrap_or(0.0);
            d["revenue"] = json!(revenue);
            // Rows come newest first: the earlier hour starts the day.
            d["start"] = h["start"].clone();
        }
    }
    days
}

async fn drill_at(
    engine: &SqlEngine,
    range: Range,
    drill: &Drill,
    now: i64,
) -> Result<Value, ApiError> {
    let from = now - range.span_ms();
    let (sql, name, key, keys): (&str, &String, &str, &[&str]) = match drill {
        Drill::Category(c) => (
            include_str!("queries/category_items.sql"),
            c,
            "category",
            &["itemName", "orders", "quantity"],
        ),
        Drill::State(s) => (
            include_str!("queries/state_cities.sql"),
            s,
            "state",
            &["city", "totalOrders"],
        ),
    };
    let mut params = bounds(from, now);
    params.push(ScalarValue::Utf8(Some(name.clone())));
    let out = run(engine, sql, params).await?;
    Ok(json!({
        "range": range.name(),
        "from": from,
        "to": now,
        key: name,
        "rows": objects(&out, keys),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_by_name_and_refuse_anything_else() {
        for r in Range::ALL {
            assert_eq!(Range::parse(r.name()).ok(), Some(r));
        }
        assert!(Range::parse("2h").is_err());
        assert!(Range::parse("").is_err());
    }

    #[test]
    fn hours_fold_into_new_york_days_newest_first() {
        let hour = |ts: &str, start: i64, orders: i64, revenue: f64| {
            json!({"start": start, "timestamp": ts, "orders": orders, "revenue": revenue,
                   "fraud": 1, "delivered": 0, "refunded": 2})
        };
        let days = fold_days(vec![
            hour("2026-11-25 01:00:00", 30, 3, 1.5),
            hour("2026-11-25 00:00:00", 20, 4, 2.25),
            hour("2026-11-24 23:00:00", 10, 5, 10.0),
        ]);
        assert_eq!(days.len(), 2);
        assert_eq!(days[0]["timestamp"], "2026-11-25 00:00:00");
        assert_eq!(days[0]["orders"], 7);
        assert_eq!(days[0]["revenue"], 3.75);
        assert_eq!(days[0]["fraud"], 2);
        assert_eq!(days[0]["refunded"], 4);
        assert_eq!(days[0]["start"], 20);
        assert_eq!(days[1]["timestamp"], "2026-11-24 00:00:00");
        assert_eq!(days[1]["orders"], 5);
        assert_eq!(days[1]["start"], 10);
    }
}
