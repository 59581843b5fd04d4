//! The live dashboard (SPEC section 7; the original Streamlit page, port 8501), served by rtap.
//!
//! One page (`dashboard/index.html`, `app.js`, `style.css`, embedded in the binary) with charts
//! drawn by uPlot (the npm package, installed by `build.rs` and embedded; it works with no
//! internet access). The page opens `GET /api/stream`, a server-sent event stream that pushes a
//! whole snapshot every second: the overview and per-second series from the rolling windows and
//! every SQL panel computed exactly as the analytics endpoints compute them, so the page shows
//! the API's numbers. `GET /api/snapshot` gives the same snapshot once. One snapshot is made per
//! second for all viewers together (see [`Dashboard`]). `GET /api/range` and `GET /api/drill`
//! answer the page's range picker and drill-downs (see [`crate::history`]).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use sql::SqlEngine;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::history::{Drill, History, Range};
use crate::overview::{overview_at, series_at, Live};

const PUSH_EVERY: Duration = Duration::from_secs(1);
/// A snapshot younger than this is served as it is.
const FRESH_FOR: Duration = Duration::from_millis(1_500);
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

/// One snapshot, as JSON text, and when it was made.
type Published = Option<(Instant, Arc<str>)>;

/// The dashboard: what it shows, and who watches.
///
/// A snapshot costs several SQL queries, so it is made once per second for everyone (by
/// [`Dashboard::spawn_refresher`], and only while someone watches) and the same text is pushed
/// to every viewer: the cost does not grow with the number of viewers. At most `max_viewers`
/// event streams are open at once; one more is refused with 503.
pub struct Dashboard {
    pub engine: Arc<SqlEngine>,
    pub live: Arc<Live>,
    /// Turns true when rtap stops: open streams end, so the server can finish.
    pub stop: watch::Receiver<bool>,
    max_viewers: usize,
    viewers: Arc<AtomicUsize>,
    latest: watch::Sender<Published>,
    making: tokio::sync::Mutex<()>,
    snapshots: Counter,
    viewers_gauge: Gauge,
    history: History,
    /// Which partitions the numbers cover (Kafka sources): shown on the page when partial.
    coverage: Option<crate::status::CoverageFn>,
    /// `--olap`: the panels' SQL goes to this Pinot broker.
    olap: Option<Arc<crate::olap::PinotBroker>>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("max_viewers", &self.max_viewers)
            .finish_non_exhaustive()
    }
}

/// Counts a viewer while its stream is open.
struct Viewer {
    viewers: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.viewers.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

impl Dashboard {
    pub fn new(
        engine: Arc<SqlEngine>,
        live: Arc<Live>,
        stop: watch::Receiver<bool>,
        max_viewers: usize,
        coverage: Option<crate::status::CoverageFn>,
        olap: Option<Arc<crate::olap::PinotBroker>>,
    ) -> Arc<Self> {
        Arc::new(Dashboard {
            engine,
            live,
            stop,
            max_viewers,
            viewers: Arc::new(AtomicUsize::new(0)),
            latest: watch::channel(None).0,
            making: tokio::sync::Mutex::new(()),
            snapshots: Counter::default(),
            viewers_gauge: Gauge::default(),
            history: History::default(),
            coverage,
            olap,
        })
    }

    /// `rtap_dashboard_snapshots_total` and `rtap_dashboard_viewers`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rtap_dashboard_snapshots",
            "Dashboard snapshots made (once a second while anyone watches, whatever the number of viewers)",
            self.snapshots.clone(),
        );
        registry.register(
            "rtap_dashboard_viewers",
            "Open dashboard event streams",
            self.viewers_gauge.clone(),
        );
    }

    /// Everything the page shows, as of now (costs SQL: use [`Dashboard::current`]).
    pub async fn snapshot(&self) -> Value {
        let now = self.live.clock.now_ms();
        // The windows first: ingest appends to the table and feeds the recent answers before
        // it counts in the windows, so the panels read after this see at least what the
        // windows saw.
        let overview = overview_at(&self.live, now);
        let series = series_at(&self.live, now, SERIES_SECONDS);
        let mut panels = crate::analytics::panels(crate::analytics::Analytics {
            engine: self.engine.clone(),
            recent: self.live.recent.clone(),
            olap: self.olap.clone(),
        })
        .await;
        if let Value::Object(map) = &mut panels {
            map.insert("generatedAt".into(), json!(now));
            map.insert("overview".into(), overview);
            map.insert("series".into(), series);
            if let Some(c) = self.coverage.as_ref().and_then(|f| f()) {
                map.insert("coverage".into(), crate::status::coverage_json(&c));
            }
        }
        panels
    }

    /// Makes a new snapshot and hands it to every viewer.
    async fn refresh(&self) -> Arc<str> {
        let text: Arc<str> = Arc::from(self.snapshot().await.to_string());
        self.snapshots.inc();
        self.latest
            .send_replace(Some((Instant::now(), text.clone())));
        text
    }

    /// The latest snapshot if it is fresh, else a new one (made once however many ask).
    pub async fn current(&self) -> Arc<str> {
        let fresh = |p: &Published| {
            p.as_ref()
                .filter(|(at, _)| at.elapsed() < FRESH_FOR)
                .map(|(_, t)| t.clone())
        };
        if let Some(t) = fresh(&self.latest.borrow()) {
            return t;
        }
        let _making = self.making.lock().await;
        if let Some(t) = fresh(&self.latest.borrow()) {
            return t;
        }
        self.refresh().await
    }

    /// Makes a snapshot every second while anyone watches, until rtap stops.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let d = self.clone();
        tokio::spawn(async move {
            let mut stop = d.stop.clone();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(PUSH_EVERY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                if d.viewers.load(Ordering::Acquire) > 0 {
                    let _making = d.making.lock().await;
                    d.refresh().await;
                }
            }
        })
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

async fn snapshot(State(d): State<Arc<Dashboard>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        d.current().await.to_string(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct RangeQuery {
    range: String,
    category: Option<String>,
    state: Option<String>,
}

/// `GET /api/range?range=24h`: the series and top lists of one range.
async fn range(
    State(d): State<Arc<Dashboard>>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("expected ?range=...: {e}")))?;
    let range = Range::parse(&q.range)?;
    let v = d.history.range(&d.engine, range).await?;
    Ok(Json(v.as_ref()).into_response())
}

/// `GET /api/drill?range=1h&category=Books` (its top items) or `&state=TX` (its top cities).
async fn drill(
    State(d): State<Arc<Dashboard>>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(format!("expected ?range=...: {e}")))?;
    let range = Range::parse(&q.range)?;
    let drill = match (q.category, q.state) {
        (Some(c), None) => Drill::Category(c),
        (None, Some(s)) => Drill::State(s),
        _ => {
            return Err(ApiError::BadRequest(
                "a drill-down names one category= or one state=".into(),
            ))
        }
    };
    let v = d.history.drill(&d.engine, range, drill).await?;
    Ok(Json(v.as_ref()).into_response())
}

async fn stream(State(d): State<Arc<Dashboard>>) -> Response {
    let viewers = d.viewers.fetch_add(1, Ordering::AcqRel);
    if viewers >= d.max_viewers {
        d.viewers.fetch_sub(1, Ordering::AcqRel);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": format!(
                "too many dashboard viewers ({viewers} open, the limit is {}, http.max_viewers); try again later",
                d.max_viewers
            )})),
        )
            .into_response();
    }
    d.viewers_gauge.inc();
    let viewer = Viewer {
        viewers: d.viewers.clone(),
        gauge: d.viewers_gauge.clone(),
    };
    let updates = d.latest.subscribe();
    let state = (d, updates, viewer, true);
    let events =
        futures_util::stream::unfold(state, |(d, mut updates, viewer, first)| async move {
            let mut stop = d.stop.clone();
            if *stop.borrow() {
                return None;
            }
            let text = if first {
                d.current().await
            } else {
                tokio::select! {
                    changed = updates.changed() => {
                        changed.ok()?;
                        updates.borrow_and_update().as_ref().map(|(_, t)| t.clone())?
                    }
                    _ = stop.wait_for(|s| *s) => return None,
                }
            };
            let event = Event::default()
                .event("snapshot")
                .retry(Duration::from_secs(1))
                .data(text.as_ref());
            Some((Ok::<_, Infallible>(event), (d, updates, viewer, false)))
        });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
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
        .route("/api/range", get(range))
        .route("/api/drill", get(drill))
        .with_state(d)
}
