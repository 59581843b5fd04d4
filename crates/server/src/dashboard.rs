//! The live dashboard (SPEC section 7; the original Streamlit page, port 8501), served by rtap.
//!
//! One page (`dashboard/index.html`, `app.js`, `style.css`, embedded in the binary) with charts
//! drawn by uPlot (the npm package, installed by `build.rs` and embedded; it works with no
//! internet access). The page opens `GET /api/stream`, a server-sent event stream that pushes a
//! whole snapshot every second: the overview and per-second series from the rolling windows and
//! every SQL panel computed exactly as the analytics endpoints compute them, so the page shows
//! the API's numbers. `GET /api/snapshot` gives the same snapshot once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sql::SqlEngine;

use crate::overview::{overview_at, series_at, Live};

const PUSH_EVERY: Duration = Duration::from_secs(1);
/// Seconds of per-second series on the page.
const SERIES_SECONDS: usize = 300;

const INDEX_HTML: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const STYLE_CSS: &str = include_str!("../dashboard/style.css");
const UPLOT_JS: &str = include_str!(concat!(
    env!("OUT_DIR"),
    "/npm/node_modules/uplot/dist/uPlot.iife.min.js"
));
const UPLOT_CSS: &str = include_str!(concat!(
    env!("OUT_DIR"),
    "/npm/node_modules/uplot/dist/uPlot.min.css"
));

#[derive(Debug, Clone)]
pub struct Dashboard {
    pub engine: Arc<SqlEngine>,
    pub live: Arc<Live>,
    /// Turns true when rtap stops: open streams end, so the server can finish.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl Dashboard {
    /// Everything the page shows, as of now.
    pub async fn snapshot(&self) -> Value {
        let now = self.live.clock.now_ms();
        // The windows first: ingest appends to the table before it counts in the windows, so
        // SQL run after this read sees at least what the windows saw.
        let overview = overview_at(&self.live, now);
        let series = series_at(&self.live, now, SERIES_SECONDS);
        let mut panels = crate::analytics::panels(self.engine.clone()).await;
        if let Value::Object(map) = &mut panels {
            map.insert("generatedAt".into(), json!(now));
            map.insert("overview".into(), overview);
            map.insert("series".into(), series);
        }
        panels
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn snapshot(State(d): State<Arc<Dashboard>>) -> Json<Value> {
    Json(d.snapshot().await)
}

async fn stream(
    State(d): State<Arc<Dashboard>>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let events = futures_util::stream::unfold((d, true), |(d, first)| async move {
        let mut stop = d.stop.clone();
        if *stop.borrow() {
            return None;
        }
        if !first {
            tokio::select! {
                _ = tokio::time::sleep(PUSH_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
        let data = d.snapshot().await.to_string();
        let event = Event::default()
            .event("snapshot")
            .retry(Duration::from_secs(1))
            .data(data);
        Some((Ok(event), (d, false)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The dashboard's routes (merge `status::router` for `/api/status` and `/metrics`).
pub fn router(d: Arc<Dashboard>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/vendor/uPlot.iife.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", UPLOT_JS) }),
        )
        .route(
            "/vendor/uPlot.min.css",
            get(|| async { asset("text/css; charset=utf-8", UPLOT_CSS) }),
        )
        .route("/api/snapshot", get(snapshot))
        .route("/api/stream", get(stream))
        .with_state(d)
}
