//! `GET /api/status` (every stage: state, rates, lag, last error) and `GET /metrics`
//! (Prometheus text format), on the analytics and the dashboard ports.
//!
//! The stages report through one closure the composition root builds (it knows the stages;
//! this module only formats). Query latency is measured here, by a middleware on the analytics
//! router, into one histogram per endpoint.
//!
//! The exposition format is written by hand: a few counters and gauges read at scrape time and
//! one histogram family are three kinds of line, simpler than wiring a metrics registry through
//! every stage; the test suite checks the output with a real Prometheus text parser.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

/// One stage of the pipeline as `/api/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub name: &'static str,
    /// "running", "waiting", "stopped", "failed" or "off".
    pub state: String,
    /// Rates, lag, counts: whatever tells how the stage is doing.
    pub detail: Value,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// One counter or gauge, read at scrape time.
#[derive(Debug, Clone)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub value: f64,
}

/// What the composition root reports.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub stages: Vec<StageStatus>,
    pub metrics: Vec<Metric>,
}

/// Upper bounds (seconds) of the query latency buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }
}

/// Telemetry shared by the HTTP front ends.
pub struct Telemetry {
    report: Box<dyn Fn() -> Report + Send + Sync>,
    latency: Mutex<BTreeMap<String, Arc<Histogram>>>,
    started: Instant,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

impl Telemetry {
    pub fn new(report: impl Fn() -> Report + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Telemetry {
            report: Box::new(report),
            latency: Mutex::new(BTreeMap::new()),
            started: Instant::now(),
        })
    }

    pub fn report(&self) -> Report {
        (self.report)()
    }

    fn histogram(&self, endpoint: &str) -> Arc<Histogram> {
        let mut map = match self.latency.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(endpoint.to_string()).or_default().clone()
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

    /// The Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let report = self.report();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP rtap_uptime_seconds Seconds since rtap started."
        );
        let _ = writeln!(out, "# TYPE rtap_uptime_seconds gauge");
        let _ = writeln!(
            out,
            "rtap_uptime_seconds {}",
            self.started.elapsed().as_secs_f64()
        );
        for m in &report.metrics {
            let kind = match m.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
            let _ = writeln!(out, "# TYPE {} {kind}", m.name);
            let _ = writeln!(out, "{} {}", m.name, m.value);
        }
        let map: Vec<(String, Arc<Histogram>)> = match self.latency.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        };
        let name = "rtap_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer an analytics or dashboard request, by endpoint."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (endpoint, h) in map {
            let label = endpoint.replace('\\', "\\\\").replace('"', "\\\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{endpoint=\"{label}\",le=\"{b}\"}} {}",
                    h.counts[i].load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{endpoint=\"{label}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "{name}_sum{{endpoint=\"{label}\"}} {}",
                h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
            );
            let _ = writeln!(out, "{name}_count{{endpoint=\"{label}\"}} {count}");
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
        t.histogram(&endpoint)
            .observe(started.elapsed().as_secs_f64());
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
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        t.prometheus(),
    )
        .into_response()
}

/// `/api/status` and `/metrics`, to merge into a router.
pub fn router(t: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(t)
}

/// Wraps `app` so every request's latency is recorded.
pub fn measured(app: Router, t: Arc<Telemetry>) -> Router {
    app.layer(axum::middleware::from_fn_with_state(t, measure))
}
