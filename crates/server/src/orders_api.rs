//! The orders API (SPEC section 2; the original Flask service, port 5001).
//!
//! `GET /orders?page&limit` pages through stored orders oldest first with the original's
//! response shape; `POST /orders` generates and stores one; `GET /health` checks the store;
//! `GET /` is a banner. Parameters are validated here and rejected with 400 and a message that
//! names the value; store outages are 503 (see [`crate::error`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::error::ApiError;
use sources::OrderFeed;
use store::StoreError;

/// Largest page the API serves (SPEC 2).
pub const MAX_LIMIT: u64 = 1000;
/// `POST /orders` takes no body; anything larger than this is refused unread.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(feed: Arc<OrderFeed>) -> Router {
    Router::new()
        .route("/", get(banner))
        .route("/health", get(health))
        .route("/orders", get(list_orders).post(create_order))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(feed)
}

async fn banner() -> Json<serde_json::Value> {
    Json(json!({
        "message": "rtap orders API: GET /orders?page=1&limit=1000 pages through stored orders \
                    (oldest first), POST /orders creates one, GET /health checks the store"
    }))
}

async fn health(State(feed): State<Arc<OrderFeed>>) -> Response {
    match feed.store().health().await {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"status": "unhealthy", "detail": e.to_string()})),
        )
            .into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {method} {}", uri.path()))
}

/// Paging parameters after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page: u64,
    pub limit: u64,
}

fn parse_param(
    params: &HashMap<String, String>,
    name: &str,
    default: u64,
) -> Result<u64, ApiError> {
    let Some(raw) = params.get(name) else {
        return Ok(default);
    };
    let value: u64 = raw.trim().parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "{name} must be a whole number of at least 1, got {raw:?}"
        ))
    })?;
    if value == 0 {
        return Err(ApiError::BadRequest(format!(
            "{name} must be at least 1, got 0"
        )));
    }
    Ok(value)
}

impl Paging {
    pub fn from_query(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        let page = parse_param(params, "page", 1)?;
        let limit = parse_param(params, "limit", MAX_LIMIT)?;
        if limit > MAX_LIMIT {
            return Err(ApiError::BadRequest(format!(
                "limit {limit} is over the maximum of {MAX_LIMIT}"
            )));
        }
        Ok(Paging { page, limit })
    }
}

async fn list_orders(
    State(feed): State<Arc<OrderFeed>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        query.map_err(|e| ApiError::BadRequest(format!("bad query string: {e}")))?;
    let paging = Paging::from_query(&params)?;
    let offset = (paging.page - 1).saturating_mul(paging.limit);
    let slice = feed.store().slice(offset, paging.limit).await?;
    // The documents are the generator's own JSON, stored verbatim: splice them in rather than
    // parse and re-serialise a megabyte per page.
    let mut body =
        String::with_capacity(slice.orders.iter().map(|o| o.len() + 1).sum::<usize>() + 128);
    body.push_str("{\"data\":[");
    for (i, order) in slice.orders.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(order);
    }
    let total_pages = slice.total.div_ceil(paging.limit);
    let _ = write!(
        body,
        "],\"limit\":{},\"page\":{},\"total_orders\":{},\"total_pages\":{}",
        paging.limit, paging.page, slice.total, total_pages
    );
    if slice.expired > offset {
        // Some or all of this page passed the store's retention: say so, and where the kept
        // orders start (the original's fields keep their meaning: positions never move).
        let _ = write!(body, ",\"expired_orders\":{}", slice.expired);
        if slice.expired < slice.total {
            let first_page = slice.expired / paging.limit + 1;
            let _ = write!(
                body,
                ",\"first_kept_page\":{first_page},\"message\":\"orders 1 to {} passed the \
                 store's retention and were removed; page {first_page} is the first that holds \
                 kept orders\"",
                slice.expired
            );
        } else {
            let _ = write!(
                body,
                ",\"message\":\"all {} orders passed the store's retention and were removed; \
                 new orders will follow them\"",
                slice.expired
            );
        }
    }
    body.push('}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn create_order(State(feed): State<Arc<OrderFeed>>) -> Result<Response, ApiError> {
    // On a task of its own: a request that times out or whose client goes away must not cancel
    // the create between the store's commit and the hand-over to ingest (the order would be
    // stored but never reach the table).
    let ids = tokio::spawn(async move { feed.create(1).await })
        .await
        .map_err(|e| StoreError::Failed(format!("creating the order failed: {e}")))??;
    let order_id = ids.into_iter().next().unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        Json(json!({"message": "Order created", "order_id": order_id})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(
            Paging::from_query(&params(&[])).ok(),
            Some(Paging {
                page: 1,
                limit: 1000
            })
        );
        assert_eq!(
            Paging::from_query(&params(&[("page", "3"), ("limit", "5")])).ok(),
            Some(Paging { page: 3, limit: 5 })
        );
        for (k, v, msg) in [
            ("page", "0", "page must be at least 1, got 0"),
            ("limit", "0", "limit must be at least 1, got 0"),
            ("limit", "1001", "limit 1001 is over the maximum of 1000"),
            (
                "page",
                "abc",
                "page must be a whole number of at least 1, got \"abc\"",
            ),
            (
                "limit",
                "-5",
                "limit must be a whole number of at least 1, got \"-5\"",
            ),
            (
                "limit",
                "2.5",
                "limit must be a whole number of at least 1, got \"2.5\"",
            ),
            (
                "page",
                "",
                "page must be a whole number of at least 1, got \"\"",
            ),
        ] {
            let err = Paging::from_query(&params(&[(k, v)])).expect_err(v);
            assert_eq!(err.to_string(), msg);
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        }
    }
}
