//! The analytics API (SPEC section 5; the original Quarkus app, port 8888) and `/query/sql`.
//!
//! Each endpoint runs rtap's own SQL (`queries/*.sql`) through the SQL engine, with the time
//! bounds computed once per request from the engine's clock and bound as parameters, and the
//! deliberate fixes of SPEC section 9: revenue is `SUM(order_total)` over distinct orders, every
//! order counts once, `latestorders` has `orderId`, a customer id is bound, never spliced.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::{header, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::common::ScalarValue;
use serde_json::{json, Map, Value};
use sql::response::cell;
use sql::{QueryOutput, SqlEngine};

use crate::error::ApiError;
use crate::olap::PinotBroker;
use crate::recent::{self, SharedRecent};

const MINUTE_MS: i64 = 60_000;
/// Largest SQL text `/query/sql` accepts.
const MAX_SQL_BODY_BYTES: usize = 1024 * 1024;

/// What the endpoints answer from: the SQL engine, and the recent answers kept at ingest (the
/// fixed endpoints use them when they are trusted) and the table's lookup indexes
/// (`/users/{id}/orders`), where `?source=sql` asks SQL regardless; or, with `--olap`, a Pinot
/// broker for all of them.
#[derive(Clone)]
pub struct Analytics {
    pub engine: Arc<SqlEngine>,
    pub recent: Option<SharedRecent>,
    pub olap: Option<Arc<PinotBroker>>,
}

/// A query's rows, from rtap's engine or from the broker.
pub(crate) enum Answer {
    Local(QueryOutput),
    Remote(Vec<Vec<Value>>),
}

impl Answer {
    fn num_rows(&self) -> usize {
        match self {
            Answer::Local(out) => out.num_rows(),
            Answer::Remote(rows) => rows.len(),
        }
    }

    /// Rows as JSON objects keyed by `keys`, in column order.
    pub(crate) fn objects(&self, keys: &[&str]) -> Vec<Value> {
        match self {
            Answer::Local(out) => objects(out, keys),
            Answer::Remote(rows) => rows
                .iter()
                .map(|row| {
                    Value::Object(
                        keys.iter()
                            .zip(row.iter().chain(std::iter::repeat(&Value::Null)))
                            .map(|(k, v)| ((*k).to_string(), whole_numbers_as_integers(v)))
                            .collect(),
                    )
                })
                .collect(),
        }
    }
}

/// A broker types every sum DOUBLE (Pinot does): a count or quantity comes back as `5.0` where
/// rtap's engine says `5`. Whole numbers are made integers again, so the endpoints answer the
/// same JSON either way (money is rounded to the cent afterwards, as a float, in both).
fn whole_numbers_as_integers(v: &Value) -> Value {
    match v.as_f64() {
        Some(x) if v.is_f64() && x.fract() == 0.0 && x.abs() < 9.0e15 => json!(x as i64),
        _ => v.clone(),
    }
}

/// The request's query string has `source=sql`.
fn asks_sql(query: &Option<String>) -> bool {
    query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p == "source=sql"))
}

impl Analytics {
    /// The recent answers, unless the request asked for SQL (`source=sql` in its query string)
    /// or the answers come from a Pinot broker.
    fn recent(&self, query: &Option<String>) -> Option<&recent::RecentAnswers> {
        self.asks_table(query)
            .then_some(self.recent.as_deref())
            .flatten()
    }

    /// Whether to answer from rtap's own table directly (indexes, rows in memory) rather than
    /// through SQL: not with a Pinot broker, not when the request asked for SQL (`source=sql`).
    fn asks_table(&self, query: &Option<String>) -> bool {
        self.olap.is_none() && !asks_sql(query)
    }

    /// The endpoints of the item and coupon grains (`/orders/popular`,
    /// `/orders/couponslastminute`) answer from rtap's own table even with `--olap`: their SQL
    /// counts per line item and per coupon (`line_items.quantity`), which rtap's SQL layer
    /// unnests and Pinot's table (lists per order, see `rtap pinot-config`) cannot express.
    fn item_grain(self) -> Analytics {
        Analytics { olap: None, ..self }
    }

    /// Runs one of rtap's own queries with `params` bound: on the engine, or on the broker.
    pub(crate) async fn run(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<Answer, ApiError> {
        match &self.olap {
            Some(broker) => {
                // rtap's own queries and typed parameters: a failure here is a bug.
                let text = crate::olap::inline(sql, &params).map_err(|e| {
                    ApiError::Query(sql::SqlError::Execution(format!("--olap: {e}")))
                })?;
                Ok(Answer::Remote(broker.rows(&text).await?))
            }
            None => Ok(Answer::Local(self.engine.run(sql, params).await?)),
        }
    }
}

pub fn router(
    engine: Arc<SqlEngine>,
    recent: Option<SharedRecent>,
    olap: Option<Arc<PinotBroker>>,
) -> Router {
    let answered_by_broker = olap.is_some();
    let router = Router::new()
        .route("/query/sql", get(query_get).post(query_post))
        .route("/orders/overview2", get(overview2))
        .route("/orders/ordersperminute", get(orders_per_minute))
        .route("/orders/popular", get(popular))
        .route("/orders/latestorders", get(latest_orders))
        .route("/orders/couponslastminute", get(coupons))
        .route("/orders/toplocations", get(top_locations))
        .route("/users", get(recent_users))
        .route("/users/", get(recent_users))
        .route("/users/{customer_id}/orders", get(user_orders))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_SQL_BODY_BYTES))
        .with_state(Analytics {
            engine,
            recent,
            olap,
        });
    if answered_by_broker {
        router.layer(axum::middleware::from_fn(mark_broker_answers))
    } else {
        router
    }
}

/// Routes answered from rtap's own table even with `--olap` (see [`Analytics::item_grain`]).
const LOCAL_WITH_OLAP: [&str; 2] = ["/orders/popular", "/orders/couponslastminute"];

/// With `--olap`: marks the broker's answers (every route but [`LOCAL_WITH_OLAP`]) with
/// [`crate::status::ANSWERED_BY`], so the coverage headers do not describe them by this
/// instance's partitions.
async fn mark_broker_answers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let local = LOCAL_WITH_OLAP.contains(&request.uri().path());
    let mut response = next.run(request).await;
    if !local && response.status() != axum::http::StatusCode::NOT_FOUND {
        response.headers_mut().insert(
            header::HeaderName::from_static(crate::status::ANSWERED_BY),
            header::HeaderValue::from_static("pinot"),
        );
    }
    response
}

/// Every SQL panel of the dashboard, computed exactly as the endpoints compute them (so the page
/// shows the API's numbers). A panel that fails carries `{"error": ...}` instead.
pub async fn panels(a: Analytics) -> Value {
    fn value(r: Result<Json<Value>, ApiError>) -> Value {
        r.map(|j| j.0)
            .unwrap_or_else(|e| json!({"error": e.to_string()}))
    }
    let engine = a.engine.clone();
    let (per_minute, popular, latest, coupons, locations) = tokio::join!(
        orders_per_minute(State(a.clone()), RawQuery(None)),
        popular(State(a.clone()), RawQuery(None)),
        latest_orders(State(a.clone()), RawQuery(None)),
        coupons(State(a.clone()), RawQuery(None)),
        top_locations(State(a.clone()), RawQuery(None)),
    );
    json!({
        "ordersPerMinute": value(per_minute),
        "popular": value(popular),
        "latestOrders": value(latest),
        "coupons": value(coupons),
        "topLocations": value(locations),
        "totalRows": engine.table().snapshot().rows(),
    })
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {method} {}", uri.path()))
}

/// Rows of a result as JSON objects keyed by the given names, in column order.
pub(crate) fn objects(out: &QueryOutput, keys: &[&str]) -> Vec<Value> {
    let mut rows = Vec::with_capacity(out.num_rows());
    for batch in &out.batches {
        for r in 0..batch.num_rows() {
            let mut obj = Map::new();
            for (key, column) in keys.iter().zip(batch.columns()) {
                let v = ScalarValue::try_from_array(column, r)
                    .map(|s| cell(&s))
                    .unwrap_or(Value::Null);
                obj.insert((*key).to_string(), v);
            }
            rows.push(Value::Object(obj));
        }
    }
    rows
}

/// Money to the cent: sums of doubles carry binary noise (0.1 + 0.2).
fn cents(v: &Value) -> Value {
    match v.as_f64() {
        Some(x) => json!((x * 100.0).round() / 100.0),
        None => json!(0.0),
    }
}

pub(crate) fn round_money(rows: &mut [Value], keys: &[&str]) {
    for row in rows {
        for k in keys {
            if let Some(v) = row.get_mut(*k) {
                *v = cents(v);
            }
        }
    }
}

async fn run(a: &Analytics, sql: &str, params: Vec<i64>) -> Result<Answer, ApiError> {
    let params = params
        .into_iter()
        .map(|p| ScalarValue::Int64(Some(p)))
        .collect();
    a.run(sql, params).await
}

fn period(row: &Value, suffix: &str) -> Value {
    let n = row[format!("orders_{suffix}")].as_i64().unwrap_or(0);
    let revenue = cents(&row[format!("revenue_{suffix}")]);
    let avg = if n > 0 {
        revenue.as_f64().unwrap_or(0.0) / n as f64
    } else {
        0.0
    };
    json!({
        "orders": n,
        "totalRevenue": revenue,
        "avgOrderValue": (avg * 100.0).round() / 100.0,
        "fraudCount": row[format!("fraud_{suffix}")].as_i64().unwrap_or(0),
        "deliveredCount": row[format!("delivered_{suffix}")].as_i64().unwrap_or(0),
        "refundedCount": row[format!("refunded_{suffix}")].as_i64().unwrap_or(0),
    })
}

async fn overview2(State(a): State<Analytics>) -> Result<Json<Value>, ApiError> {
    // The same bounds as the rolling windows: the window covering the last minute ends at the
    // end of the current second.
    let end = (a.engine.now_ms().div_euclid(1000) + 1) * 1000;
    let out = run(
        &a,
        include_str!("queries/overview.sql"),
        vec![end - 2 * MINUTE_MS, end - MINUTE_MS, end],
    )
    .await?;
    let keys = [
        "orders_now",
        "revenue_now",
        "fraud_now",
        "delivered_now",
        "refunded_now",
        "orders_before",
        "revenue_before",
        "fraud_before",
        "delivered_before",
        "refunded_before",
    ];
    let row = out.objects(&keys).into_iter().next().unwrap_or(Value::Null);
    Ok(Json(json!({
        "currentTimePeriod": period(&row, "now"),
        "previousTimePeriod": period(&row, "before"),
    })))
}

async fn orders_per_minute(
    State(a): State<Analytics>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let now = a.engine.now_ms();
    if let Some(v) = a.recent(&q).and_then(|r| recent::orders_per_minute(r, now)) {
        return Ok(Json(v));
    }
    // The current minute and the 59 before it (as the recent answers count them).
    let (start, end) = rolling::recent::hour_window(now);
    let out = run(
        &a,
        &crate::history::series_sql("MINUTE"),
        vec![start - 1, end - 1],
    )
    .await?;
    let mut rows = out.objects(crate::history::SERIES_KEYS);
    for row in &mut rows {
        if let Value::Object(o) = row {
            o.remove("start");
        }
    }
    round_money(&mut rows, &["revenue"]);
    Ok(Json(Value::Array(rows)))
}

/// The last minute as SQL bounds `($1, $2]`: `[end - 60 s, end)`, `end` the end of the current
/// second (the window `/orders/overview` and the recent answers use).
fn last_minute(now_ms: i64) -> Vec<i64> {
    let (start, end) = rolling::recent::minute_window(now_ms);
    vec![start - 1, end - 1]
}

async fn popular(
    State(a): State<Analytics>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let a = a.item_grain();
    let now = a.engine.now_ms();
    if let Some(v) = a.recent(&q).and_then(|r| recent::popular(r, now)) {
        return Ok(Json(v));
    }
    let bounds = last_minute(now);
    let items = run(
        &a,
        include_str!("queries/popular_items.sql"),
        bounds.clone(),
    )
    .await?;
    let categories = run(&a, include_str!("queries/popular_categories.sql"), bounds).await?;
    Ok(Json(json!({
        "itemNames": items.objects(&["itemName", "orders", "quantity"]),
        "categories": categories.objects(&["category", "orders", "quantity"]),
    })))
}

/// The queries sent to the broker with `--olap` (name, SQL): every column they name is a
/// column of the Pinot table `rtap pinot-config` writes (checked by rtap's tests).
pub const OLAP_QUERIES: [(&str, &str); 6] = [
    ("overview", include_str!("queries/overview.sql")),
    ("latest_orders", include_str!("queries/latest_orders.sql")),
    ("top_cities", include_str!("queries/top_cities.sql")),
    ("top_states", include_str!("queries/top_states.sql")),
    ("recent_users", include_str!("queries/recent_users.sql")),
    ("user_orders", include_str!("queries/user_orders.sql")),
];

/// Runs a "newest N" query over the last few minutes first, and over everything only when the
/// recent data has fewer than `want` rows: the common case reads only the newest segments.
async fn newest(a: &Analytics, sql: &str, want: usize) -> Result<Answer, ApiError> {
    let recent = run(a, sql, vec![a.engine.now_ms() - 5 * MINUTE_MS]).await?;
    if recent.num_rows() >= want {
        return Ok(recent);
    }
    // Every stored order has time_ms > 0 (ingest refuses others).
    run(a, sql, vec![0]).await
}

async fn latest_orders(
    State(a): State<Analytics>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    if let Some(v) = a
        .recent(&q)
        .and_then(|r| recent::latest_orders(r, a.engine.now_ms()))
    {
        return Ok(Json(v));
    }
    let out = newest(&a, include_str!("queries/latest_orders.sql"), 10).await?;
    let mut rows = out.objects(&[
        "orderId",
        "timestamp",
        "orderTotal",
        "customerId",
        "productsOrdered",
        "totalQuantity",
    ]);
    round_money(&mut rows, &["orderTotal"]);
    Ok(Json(Value::Array(rows)))
}

async fn coupons(
    State(a): State<Analytics>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let a = a.item_grain();
    let now = a.engine.now_ms();
    if let Some(v) = a.recent(&q).and_then(|r| recent::coupons(r, now)) {
        return Ok(Json(v));
    }
    let out = run(&a, include_str!("queries/coupons.sql"), last_minute(now)).await?;
    Ok(Json(Value::Array(
        out.objects(&["coupon_code", "times_used"]),
    )))
}

async fn top_locations(
    State(a): State<Analytics>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let now = a.engine.now_ms();
    if let Some(v) = a.recent(&q).and_then(|r| recent::top_locations(r, now)) {
        return Ok(Json(v));
    }
    let bounds = last_minute(now);
    let cities = run(&a, include_str!("queries/top_cities.sql"), bounds.clone()).await?;
    let states = run(&a, include_str!("queries/top_states.sql"), bounds).await?;
    Ok(Json(json!({
        "cities": cities.objects(&["city", "totalOrders"]),
        "states": states.objects(&["state", "totalOrders"]),
    })))
}

async fn recent_users(
    State(a): State<Analytics>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    if let Some(v) = a
        .recent(&q)
        .and_then(|r| recent::users(r, a.engine.now_ms()))
    {
        return Ok(Json(v));
    }
    let out = newest(&a, include_str!("queries/recent_users.sql"), 50).await?;
    Ok(Json(Value::Array(
        out.objects(&["customer_id", "timestamp"]),
    )))
}

/// Longest customer id accepted (a UUID is 36 characters).
const MAX_CUSTOMER_ID_CHARS: usize = 128;

/// Most orders `/users/{id}/orders` answers: the LIMIT of `queries/user_orders.sql`.
const MAX_USER_ORDERS: usize = 1000;

async fn user_orders(
    State(a): State<Analytics>,
    Path(customer_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    if customer_id.is_empty()
        || customer_id.chars().count() > MAX_CUSTOMER_ID_CHARS
        || customer_id.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(format!(
            "customer id must be 1 to {MAX_CUSTOMER_ID_CHARS} printable characters"
        )));
    }
    let started = Instant::now();
    let sql = include_str!("queries/user_orders.sql");
    // The customer's rows straight from the lookup indexes and the rows in memory: the same
    // rows the SQL below reads, without planning it (planning was most of this endpoint's time).
    let out = if a.asks_table(&q) {
        let columns = ["time_ms", "order_id", "order_total"];
        let answer = a
            .engine
            .key_rows(
                "customer_id",
                &customer_id,
                &columns,
                |batches, max_rows| {
                    let mut rows = newest_orders(&batches, MAX_USER_ORDERS.min(max_rows))?;
                    round_money(&mut rows, &["order_total"]);
                    Ok(rows)
                },
            )
            .await?;
        if let Some(rows) = answer {
            return Ok(Json(Value::Array(rows)));
        }
        // The indexes cannot answer (a file without one, lookups over budget): SQL scans,
        // within what is left of the same time limit.
        let params = vec![ScalarValue::Utf8(Some(customer_id))];
        Answer::Local(a.engine.run_since(started, sql, params).await?)
    } else {
        a.run(sql, vec![ScalarValue::Utf8(Some(customer_id))])
            .await?
    };
    let mut rows = out.objects(&["order_id", "order_total", "timestamp"]);
    round_money(&mut rows, &["order_total"]);
    Ok(Json(Value::Array(rows)))
}

/// The rows of `batches` (`time_ms`, `order_id`, `order_total`) as `user_orders.sql` answers
/// them: newest first, ties by order id, at most `limit`, the time as `ToDateTime(time_ms,
/// 'yyyy-MM-dd HH:mm:ss', 'America/New_York')` writes it.
fn newest_orders(batches: &[RecordBatch], limit: usize) -> Result<Vec<Value>, sql::SqlError> {
    let unexpected = |what: &str| {
        sql::SqlError::Execution(format!(
            "/users/{{id}}/orders: {what} is not of the table's type"
        ))
    };
    let mut rows: Vec<(i64, &str, usize, usize)> = Vec::new();
    for (b, batch) in batches.iter().enumerate() {
        let times = batch
            .column(0)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| unexpected("time_ms"))?;
        let ids = batch
            .column(1)
            .as_string_opt::<i32>()
            .ok_or_else(|| unexpected("order_id"))?;
        for r in 0..batch.num_rows() {
            // Neither column has NULLs (the table's schema); a NULL would sort as SQL's would
            // not, so it is refused rather than guessed.
            if times.is_null(r) || ids.is_null(r) {
                return Err(unexpected("a NULL time_ms or order_id"));
            }
            rows.push((times.value(r), ids.value(r), b, r));
        }
    }
    // ORDER BY time_ms DESC, order_id (byte order, as DataFusion compares strings): the first
    // `limit` picked, then sorted.
    let newest = |x: &(i64, &str, usize, usize), y: &(i64, &str, usize, usize)| {
        y.0.cmp(&x.0).then_with(|| x.1.cmp(y.1))
    };
    if rows.len() > limit && limit > 0 {
        rows.select_nth_unstable_by(limit - 1, newest);
    }
    rows.truncate(limit);
    rows.sort_unstable_by(newest);
    rows.into_iter()
        .map(|(time, id, b, r)| {
            let total = ScalarValue::try_from_array(batches[b].column(2), r)
                .map_err(|e| sql::SqlError::Execution(e.to_string()))?;
            Ok(json!({
                "order_id": id,
                "order_total": cell(&total),
                "timestamp": recent::stamp(time),
            }))
        })
        .collect()
}

#[derive(serde::Deserialize)]
struct SqlRequest {
    sql: String,
}

async fn query_get(
    State(a): State<Analytics>,
    query: Result<Query<SqlRequest>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(req) =
        query.map_err(|e| ApiError::BadRequest(format!("expected ?sql=<query>: {e}")))?;
    Ok(answer_sql(&a, &req.sql).await)
}

/// `/query/sql`: rtap's engine, or the broker's answer passed through as it came (a broker
/// that cannot be reached: Pinot's error 427 in a broker response, HTTP 503).
async fn answer_sql(a: &Analytics, sql: &str) -> Response {
    let Some(broker) = &a.olap else {
        return json_text(a.engine.query_pinot_json(sql).await);
    };
    match broker.query_text(sql).await {
        // A broker's own refusal (401, 500, ...) is not rtap refusing the caller: 502.
        Ok((status, body)) => (
            if (200..300).contains(&status) {
                axum::http::StatusCode::OK
            } else {
                axum::http::StatusCode::BAD_GATEWAY
            },
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(error) => {
            let error = ApiError::Olap(error);
            tracing::warn!(error = %error, "/query/sql: no answer from the broker");
            (
                error.status(),
                Json(json!({
                    "exceptions": [{
                        "errorCode": crate::olap::UNREACHABLE_CODE,
                        "message": error.to_string(),
                    }],
                    "numDocsScanned": 0,
                    "totalDocs": 0,
                    "timeUsedMs": 0,
                })),
            )
                .into_response()
        }
    }
}

async fn query_post(
    State(a): State<Analytics>,
    body: Result<Json<SqlRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| {
        ApiError::BadRequest(format!(
            "expected a JSON body {{\"sql\": \"...\"}}: {}",
            e.body_text()
        ))
    })?;
    Ok(answer_sql(&a, &req.sql).await)
}

/// A response of JSON text made elsewhere (the SQL engine writes its answers itself).
fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
