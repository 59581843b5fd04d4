//! `/orders/overview` (SPEC section 6; the original's Kafka Streams state stores) and the
//! per-second series behind the dashboard's live charts, read from the rolling windows.
//!
//! Reads take the window lock for a few microseconds (60 pane additions); ingest holds it for
//! one pane update per order. "Now" is the wall clock, so a quiet stream shows its windows
//! emptying, with zeros rather than errors.

use std::sync::{Arc, Mutex};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use rolling::{Metrics, Windows};
use serde_json::{json, Value};

use crate::error::ApiError;

/// Longest series served: the panes the windows keep (size + grace).
const MAX_SERIES_SECONDS: usize = 360;

pub struct Live {
    pub windows: Arc<Mutex<Windows>>,
    pub clock: clock::SharedClock,
    /// The fixed endpoints' answers kept at ingest (the dashboard's panels read them too).
    pub recent: Option<crate::recent::SharedRecent>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

/// A window's metrics in the SPEC shape (money in dollars, to the cent).
pub fn period(m: &Metrics) -> Value {
    let avg_cents = if m.orders > 0 {
        (m.revenue_cents as f64 / m.orders as f64).round()
    } else {
        0.0
    };
    json!({
        "orders": m.orders,
        "totalRevenue": m.revenue_cents as f64 / 100.0,
        "avgOrderValue": avg_cents / 100.0,
        "fraudCount": m.fraud,
        "deliveredCount": m.delivered,
        "refundedCount": m.refunded,
    })
}

/// Routes without a fallback, to be merged into the analytics router.
pub fn router(live: Arc<Live>) -> Router {
    Router::new()
        .route("/orders/overview", get(overview))
        .route("/orders/overview/series", get(series))
        .with_state(live)
}

fn windows(live: &Live) -> std::sync::MutexGuard<'_, Windows> {
    match live.windows.lock() {
        Ok(w) => w,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The overview at `now` (what `GET /orders/overview` answers).
pub fn overview_at(live: &Live, now: i64) -> Value {
    let (current, previous) = windows(live).current_and_previous(now);
    json!({
        "currentTimePeriod": period(&current),
        "previousTimePeriod": period(&previous),
    })
}

async fn overview(State(live): State<Arc<Live>>) -> Json<Value> {
    Json(overview_at(&live, live.clock.now_ms()))
}

/// The per-second series of the last `seconds` at `now` (what `/orders/overview/series` answers).
pub fn series_at(live: &Live, now: i64, seconds: usize) -> Value {
    let w = windows(live);
    let points: Vec<Value> = w
        .series(now, seconds)
        .into_iter()
        .map(|(start, m)| {
            json!({
                "start": start,
                "orders": m.orders,
                "revenue": m.revenue_cents as f64 / 100.0,
                "fraud": m.fraud,
                "delivered": m.delivered,
                "refunded": m.refunded,
            })
        })
        .collect();
    json!({
        "advanceMs": w.config().advance_ms,
        "late": w.late(),
        "points": points,
    })
}

#[derive(serde::Deserialize)]
struct SeriesQuery {
    seconds: Option<String>,
}

async fn series(
    State(live): State<Arc<Live>>,
    query: Result<Query<SeriesQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(format!("bad query string: {e}")))?;
    let seconds = match q.seconds.as_deref() {
        None => 300,
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_SERIES_SECONDS).contains(&n) => n,
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "seconds must be a whole number from 1 to {MAX_SERIES_SECONDS}, got {raw:?}"
                )))
            }
        },
    };
    Ok(Json(series_at(&live, live.clock.now_ms(), seconds)))
}
