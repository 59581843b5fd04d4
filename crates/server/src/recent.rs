//! The fixed endpoints answered from [`rolling::Recent`] (kept at ingest) instead of SQL, and
//! its rebuild from the table when rtap starts.
//!
//! Each answer is built in exactly the shape the SQL path builds (the same keys, NULLs, rounding
//! and New York stamps), so a client cannot tell them apart except by the time they take;
//! `?source=sql` on any of these endpoints asks SQL instead, which is how tests and users
//! cross-check the two. Until the rebuild has finished (or when it could not be done exactly)
//! the state is not trusted and every endpoint answers from SQL.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::TimeZone;
use datafusion::common::ScalarValue;
use rolling::recent::{self, CountList, ItemCount, ItemList, MinuteMetrics, Ranked, Recent};
use serde_json::{json, Value};
use sql::SqlEngine;

use crate::analytics::{objects, round_money};

/// The recent answers shared by ingest (writer) and the endpoints (readers), with whether they
/// may be used.
#[derive(Debug, Default)]
pub struct RecentAnswers {
    state: Mutex<Recent>,
    trusted: std::sync::atomic::AtomicBool,
}

pub type SharedRecent = Arc<RecentAnswers>;

impl RecentAnswers {
    pub fn new(recent: Recent) -> Self {
        RecentAnswers {
            state: Mutex::new(recent),
            trusted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The state (ingest writes through this). A panic while it was held may have left it
    /// half updated: from then on the endpoints answer from SQL.
    pub fn lock(&self) -> MutexGuard<'_, Recent> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                self.set_trusted(false);
                poisoned.into_inner()
            }
        }
    }

    pub fn trusted(&self) -> bool {
        self.trusted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether answers may come from here; ingest withdraws it if it ever fails to feed a batch.
    pub fn set_trusted(&self, yes: bool) {
        self.trusted
            .store(yes, std::sync::atomic::Ordering::Release);
    }

    /// The state, when it may answer (not after a panic while it was held).
    fn read(&self) -> Option<MutexGuard<'_, Recent>> {
        if !self.trusted() {
            return None;
        }
        let guard = self.lock();
        self.trusted().then_some(guard)
    }
}

/// Seconds of the last minute read per rebuild query: at most `sql.max_rows` rows each, so the
/// rebuild is exact up to that many orders per this many seconds.
const REBUILD_CHUNK_SECONDS: i64 = 5;

fn int(v: i64) -> ScalarValue {
    ScalarValue::Int64(Some(v))
}

async fn rows(engine: &SqlEngine, sql: &str, params: Vec<i64>) -> Result<sql::QueryOutput, String> {
    let out = engine
        .run(sql, params.into_iter().map(int).collect())
        .await
        .map_err(|e| e.to_string())?;
    if out.truncated {
        return Err(format!(
            "a rebuild query was cut ({})",
            out.truncated_reason.as_deref().unwrap_or("a limit")
        ));
    }
    Ok(out)
}

fn feed(out: &sql::QueryOutput, mut f: impl FnMut(&recent::RecentRow<'_>)) -> Result<(), String> {
    for batch in &out.batches {
        ingest::for_each_recent_row(batch, &mut f).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Fills `answers` from the table as it stands at `now_ms` (ingest must not be running yet),
/// then trusts it. Err: it could not be done exactly; the endpoints keep answering from SQL.
pub async fn rebuild(
    engine: &SqlEngine,
    answers: &RecentAnswers,
    now_ms: i64,
) -> Result<(), String> {
    let mut fresh = {
        let old = answers.lock();
        Recent::new(old.max_keys())
            .with_retention(old.retention_ms())
            .with_key_bytes(old.key_bytes())
    };
    // Every pane a read at `now_ms` may ask for (and any ahead of the clock).
    let (first_second, first_minute) = Recent::kept_from(now_ms);
    // Minutes, from SQL's own rollup.
    let out = rows(
        engine,
        &crate::history::series_sql("MINUTE"),
        vec![first_minute - 1, i64::MAX],
    )
    .await?;
    // The rollup query stops at 1,000 minutes, newest first: more than that ahead of the
    // clock would hide the hour's own minutes.
    if out.num_rows() >= 1000 {
        return Err("more than 1,000 minutes of orders at or after the last hour".into());
    }
    for m in objects(&out, crate::history::SERIES_KEYS) {
        let n = |k: &str| m[k].as_u64().unwrap_or(0);
        fresh.add_minute(
            m["start"].as_i64().ok_or("a minute without a start")?,
            MinuteMetrics {
                orders: n("orders"),
                revenue: m["revenue"].as_f64().unwrap_or(0.0),
                fraud: n("fraud"),
                delivered: n("delivered"),
                refunded: n("refunded"),
            },
        );
    }
    // The last minute's rows, a few seconds per query (each within `sql.max_rows`).
    let columns = ingest::RECENT_COLUMNS
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut from = first_second;
    let end = recent::minute_window(now_ms).1;
    loop {
        let last = from >= end;
        let sql = if last {
            format!("SELECT {columns} FROM orders WHERE time_ms >= $1")
        } else {
            format!("SELECT {columns} FROM orders WHERE time_ms >= $1 AND time_ms < $2")
        };
        let to = from + REBUILD_CHUNK_SECONDS * 1000;
        let params = if last { vec![from] } else { vec![from, to] };
        feed(&rows(engine, &sql, params).await?, |r| {
            fresh.observe_second(r)
        })?;
        if last {
            break;
        }
        from = to.min(end);
    }
    // The newest orders and customers: the last five minutes usually hold them; else look
    // further back, the whole table last.
    let latest = format!(
        "SELECT {columns} FROM orders WHERE time_ms > $1 ORDER BY time_ms DESC, order_id LIMIT {}",
        recent::LATEST
    );
    let users = format!(
        "SELECT customer_id, MAX(time_ms) AS latest FROM orders WHERE time_ms > $1 \
         GROUP BY customer_id ORDER BY latest DESC, customer_id LIMIT {}",
        recent::USERS
    );
    let out = newest(engine, &latest, recent::LATEST, now_ms).await?;
    feed(&out, |r| fresh.observe_latest(r))?;
    let out = newest(engine, &users, recent::USERS, now_ms).await?;
    for u in objects(&out, &["customer_id", "latest"]) {
        let t = u["latest"].as_i64().ok_or("a customer without a time")?;
        fresh.observe_user(u["customer_id"].as_str(), t);
    }
    fresh.prune(now_ms);
    *answers.lock() = fresh;
    answers.set_trusted(true);
    Ok(())
}

/// A "newest `want`" query (`$1` its lower time bound) over ever longer spans back from
/// `now_ms`: an idle shop does not cost a scan of the whole table unless it must.
async fn newest(
    engine: &SqlEngine,
    sql: &str,
    want: usize,
    now_ms: i64,
) -> Result<sql::QueryOutput, String> {
    const HOUR_MS: i64 = 3_600_000;
    for span in [5 * 60_000, HOUR_MS, 24 * HOUR_MS, 7 * 24 * HOUR_MS] {
        let out = rows(engine, sql, vec![now_ms.saturating_sub(span)]).await?;
        if out.num_rows() >= want {
            return Ok(out);
        }
    }
    rows(engine, sql, vec![i64::MIN]).await
}

/// `yyyy-MM-dd HH:mm:ss` in New York, as the SQL's `ToDateTime` writes it.
pub(crate) fn stamp(ms: i64) -> Value {
    chrono_tz::America::New_York
        .timestamp_millis_opt(ms)
        .single()
        .map_or(Value::Null, |t| {
            json!(t.format("%Y-%m-%d %H:%M:%S").to_string())
        })
}

fn key(k: &Option<String>) -> Value {
    k.as_ref().map_or(Value::Null, |s| json!(s))
}

/// `/orders/ordersperminute`.
pub fn orders_per_minute(answers: &RecentAnswers, now_ms: i64) -> Option<Value> {
    let state = answers.read()?;
    let mut rows: Vec<Value> = state
        .per_minute(now_ms)?
        .into_iter()
        .map(|(start, m)| {
            json!({
                "timestamp": stamp(start),
                "orders": m.orders,
                "revenue": m.revenue,
                "fraud": m.fraud,
                "delivered": m.delivered,
                "refunded": m.refunded,
            })
        })
        .collect();
    round_money(&mut rows, &["revenue"]);
    Some(Value::Array(rows))
}

fn items(list: Vec<Ranked<ItemCount>>, label: &str) -> Value {
    Value::Array(
        list.into_iter()
            .map(|r| {
                json!({
                    label: key(&r.key),
                    "orders": r.value.orders,
                    "quantity": r.value.quantity(),
                })
            })
            .collect(),
    )
}

fn counts(list: Vec<Ranked<u64>>, label: &str, count: &str) -> Value {
    Value::Array(
        list.into_iter()
            .map(|r| json!({ label: key(&r.key), count: r.value }))
            .collect(),
    )
}

/// `/orders/popular`.
pub fn popular(answers: &RecentAnswers, now_ms: i64) -> Option<Value> {
    let mut state = answers.read()?;
    Some(json!({
        "itemNames": items(state.top_items(ItemList::Items, now_ms, 5)?, "itemName"),
        "categories": items(state.top_items(ItemList::Categories, now_ms, 5)?, "category"),
    }))
}

/// `/orders/couponslastminute` (every code used).
pub fn coupons(answers: &RecentAnswers, now_ms: i64) -> Option<Value> {
    let mut state = answers.read()?;
    Some(counts(
        state.top_counts(CountList::Coupons, now_ms, usize::MAX)?,
        "coupon_code",
        "times_used",
    ))
}

/// `/orders/toplocations`.
pub fn top_locations(answers: &RecentAnswers, now_ms: i64) -> Option<Value> {
    let mut state = answers.read()?;
    Some(json!({
        "cities": counts(state.top_counts(CountList::Cities, now_ms, 5)?, "city", "totalOrders"),
        "states": counts(state.top_counts(CountList::States, now_ms, 5)?, "state", "totalOrders"),
    }))
}

/// `/orders/latestorders`.
pub fn latest_orders(answers: &RecentAnswers, now_ms: i64) -> Option<Value> {
    let state = answers.read()?;
    let mut rows: Vec<Value> = state
        .latest(now_ms)?
        .into_iter()
        .map(|o| {
            json!({
                "orderId": o.order_id,
                "timestamp": stamp(o.time_ms),
                "orderTotal": o.order_total,
                "customerId": o.customer_id,
                "productsOrdered": o.products_ordered,
                "totalQuantity": o.total_quantity,
            })
        })
        .collect();
    round_money(&mut rows, &["orderTotal"]);
    Some(Value::Array(rows))
}

/// `/users/`.
pub fn users(answers: &RecentAnswers, now_ms: i64) -> Option<Value> {
    let state = answers.read()?;
    Some(Value::Array(
        state
            .users(now_ms)?
            .into_iter()
            .map(|(id, t)| json!({"customer_id": id, "timestamp": stamp(t)}))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_while_the_state_was_held_sends_every_read_to_sql() {
        let answers = Arc::new(RecentAnswers::new(Recent::default()));
        answers.set_trusted(true);
        assert!(latest_orders(&answers, 0).is_some());
        let held = answers.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = held.lock();
            panic!("a panic while the state is held");
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(latest_orders(&answers, 0), None);
        assert!(!answers.trusted());
    }
}
