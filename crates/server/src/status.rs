//! `GET /api/status` (every stage: state, rates, lag, last error) and `GET /metrics`
//! (Prometheus text format), on the analytics and the dashboard ports.
//!
//! The stages report their state through one closure the composition root builds (it knows the
//! stages; this module only formats). Metrics are defined next to the stage that counts them
//! and registered by the composition root in one `prometheus-client` registry, encoded here.
//! Request latency is measured here, by a middleware on the routers, into one histogram per
//! route.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::Value;

/// One stage of the pipeline as `/api/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub name: &'static str,
    /// "running", "waiting", "paused", "finished" (a generator that made its `--max-orders`),
    /// "stopped", "failed" or "off".
    pub state: String,
    /// Rates, lag, counts: whatever tells how the stage is doing.
    pub detail: Value,
    pub last_error: Option<String>,
}

/// What the composition root reports for `/api/status`.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub stages: Vec<StageStatus>,
}

/// Upper bounds (seconds) of the request latency buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The label of the latency histogram: the route (never the raw path, so cardinality is the
/// number of routes).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

type LatencyFamily = Family<EndpointLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Seconds since start, read at scrape time.
#[derive(Debug)]
struct Uptime(Instant);

impl Collector for Uptime {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(self.0.elapsed().as_secs_f64());
        let m = encoder.encode_descriptor(
            "rtap_uptime_seconds",
            "Seconds since rtap started",
            None,
            g.metric_type(),
        )?;
        g.encode(m)
    }
}

/// Telemetry shared by the HTTP front ends: the stage report behind `/api/status` and the
/// metrics registry behind `/metrics`.
pub struct Telemetry {
    report: Box<dyn Fn() -> Report + Send + Sync>,
    registry: Registry,
    latency: LatencyFamily,
    started: Instant,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Telemetry {
    /// `registry` holds the stages' metrics (each stage registers its own); the request latency
    /// histogram and the uptime are added here.
    pub fn new(
        report: impl Fn() -> Report + Send + Sync + 'static,
        mut registry: Registry,
    ) -> Arc<Self> {
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "rtap_http_request_duration_seconds",
            "Time to answer an analytics or dashboard request, by endpoint",
            latency.clone(),
        );
        let started = Instant::now();
        registry.register_collector(Box::new(Uptime(started)));
        Arc::new(Telemetry {
            report: Box::new(report),
            registry,
            latency,
            started,
        })
    }

    pub fn report(&self) -> Report {
        (self.report)()
    }

    fn observe(&self, endpoint: String, seconds: f64) {
        self.latency
            .get_or_create(&EndpointLabel { endpoint })
            .observe(seconds);
    }

    /// `/api/status` as JSON.
    pub fn status_json(&self) -> Value {
        let report = self.report();
        let healthy = report
            .stages
            .iter()
            .all(|s| s.state != "failed" && s.state != "stopped");
        serde_json::json!({
            "status": if healthy { "ok" } else { "degraded" },
            "uptimeSeconds": self.started.elapsed().as_secs(),
            "stages": report.stages,
        })
    }

    /// The metrics in the OpenMetrics text format (which Prometheus reads).
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "could not encode the metrics");
        }
        out
    }
}

/// Middleware: records each request's latency under its route.
pub async fn measure(
    State(t): State<Arc<Telemetry>>,
    path: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = path.map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    if endpoint != "/metrics" && endpoint != "/api/stream" {
        t.observe(endpoint, started.elapsed().as_secs_f64());
    }
    response
}

async fn status(State(t): State<Arc<Telemetry>>) -> Json<Value> {
    Json(t.status_json())
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.prometheus(),
    )
        .into_response()
}

/// `GET /health`: 200 `{"status": "ok", "rows"}` while every stage runs, 503
/// `{"status": "unhealthy", "failed": [{"stage", "error"}]}` once one has failed (what a load
/// balancer or supervisor should watch).
async fn health(State(t): State<Arc<Telemetry>>) -> Response {
    let report = t.report();
    let failed: Vec<Value> = report
        .stages
        .iter()
        .filter(|s| s.state == "failed")
        .map(|s| serde_json::json!({"stage": s.name, "error": s.last_error}))
        .collect();
    let rows = report
        .stages
        .iter()
        .find(|s| s.name == "table")
        .map(|s| s.detail["rows"].clone())
        .unwrap_or(Value::Null);
    if failed.is_empty() {
        Json(serde_json::json!({"status": "ok", "rows": rows})).into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unhealthy", "failed": failed, "rows": rows})),
        )
            .into_response()
    }
}

/// `/health`, `/api/status` and `/metrics`, to merge into a router.
pub fn router(t: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(t)
}

/// Wraps `app` so every request's latency is recorded.
pub fn measured(app: Router, t: Arc<Telemetry>) -> Router {
    app.layer(axum::middleware::from_fn_with_state(t, measure))
}
