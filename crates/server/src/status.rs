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

use axum::extract::{MatchedPath, RawQuery, Request, State};
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
use sources::Coverage;

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
    /// The partitions of the topic this instance reads (Kafka sources only).
    pub coverage: Option<Coverage>,
}

/// Asks the source which partitions this instance reads, at the moment of a request.
pub type CoverageFn = Arc<dyn Fn() -> Option<Coverage> + Send + Sync>;

/// Partition numbers as ascending ranges, `0-5,8,10-11`: short even for thousands of partitions.
pub fn partition_ranges(partitions: &[i32]) -> String {
    let mut sorted = partitions.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end.saturating_add(1) {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// Coverage as `/api/status` and the dashboard show it.
pub fn coverage_json(c: &Coverage) -> Value {
    serde_json::json!({
        "state": c.state(),
        "complete": c.complete(),
        "topic": c.topic,
        "partitions": c.partitions,
        "topicPartitions": c.topic_partitions,
        "moved": c.moved,
        "text": coverage_text(c),
    })
}

/// One line for people: "all 24 partitions of FakeEcommOrders" or "partitions 0-2 of the 24
/// of FakeEcommOrders: answers cover only those".
pub fn coverage_text(c: &Coverage) -> String {
    let held = if c.partitions.is_empty() {
        "no partitions (waiting for the consumer group to assign some)".to_string()
    } else {
        let ranges = partition_ranges(&c.partitions);
        if ranges.len() <= 120 {
            format!("partitions {ranges}")
        } else {
            format!("{} partitions", c.partitions.len())
        }
    };
    match (c.state(), c.topic_partitions) {
        ("complete", Some(n)) => format!("all {n} partitions of {}", c.topic),
        (_, Some(n)) if c.moved => format!(
            "{held} of the {n} of {} now, but the consumer group moved partitions to or from it \
             since it started: its answers lack what other instances read from them meanwhile",
            c.topic
        ),
        (_, Some(n)) => format!(
            "{held} of the {n} of {}: answers cover only those (other instances in the consumer group hold the rest)",
            c.topic
        ),
        _ => format!("{held} of {} (the topic's partition count is not known yet)", c.topic),
    }
}

/// Longest `X-Rtap-Partitions` value: proxies refuse responses with large headers (nginx's
/// default buffer is 4 KB for all of them).
const MAX_PARTITIONS_HEADER: usize = 512;

/// The partition ranges, or "N partitions (see /api/status)" when they would not fit
/// [`MAX_PARTITIONS_HEADER`] (thousands of partitions assigned in a scattered way).
fn partitions_header(partitions: &[i32]) -> String {
    let ranges = partition_ranges(partitions);
    if ranges.len() <= MAX_PARTITIONS_HEADER {
        ranges
    } else {
        format!("{} partitions (listed in /api/status)", partitions.len())
    }
}

/// A response header saying who answered instead of this instance's table (`pinot`: the
/// `--olap` broker). Such an answer is not bounded by the partitions this instance reads.
pub const ANSWERED_BY: &str = "x-rtap-answered-by";

/// Middleware: every response says which partitions its numbers cover, in `X-Rtap-Coverage`
/// (`complete`, `partial` or `unknown`), `X-Rtap-Partitions` (ranges, `0-5,8`) and
/// `X-Rtap-Topic-Partitions`. Nothing is added for a source without partitions. An answer from
/// the `--olap` broker (marked [`ANSWERED_BY`]) says `X-Rtap-Coverage: olap` instead: what it
/// covers is the broker's table, not this instance's partitions.
async fn cover(State(coverage): State<CoverageFn>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if response.headers().contains_key(ANSWERED_BY) {
        response.headers_mut().insert(
            header::HeaderName::from_static("x-rtap-coverage"),
            header::HeaderValue::from_static("olap"),
        );
        return response;
    }
    if let Some(c) = coverage() {
        let headers = response.headers_mut();
        let pairs = [
            ("x-rtap-coverage", c.state().to_string()),
            ("x-rtap-partitions", partitions_header(&c.partitions)),
            (
                "x-rtap-topic-partitions",
                c.topic_partitions
                    .map_or_else(String::new, |n| n.to_string()),
            ),
        ];
        for (name, value) in pairs {
            if let Ok(v) = header::HeaderValue::from_str(&value) {
                headers.insert(header::HeaderName::from_static(name), v);
            }
        }
    }
    response
}

/// Wraps `app` so every response carries the coverage headers (see [`cover`]).
pub fn covered(app: Router, coverage: CoverageFn) -> Router {
    app.layer(axum::middleware::from_fn_with_state(coverage, cover))
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
        let mut status = serde_json::json!({
            "status": if healthy { "ok" } else { "degraded" },
            "uptimeSeconds": self.started.elapsed().as_secs(),
            "stages": report.stages,
        });
        if let Some(c) = &report.coverage {
            status["coverage"] = coverage_json(c);
        }
        status
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
/// balancer or supervisor should watch). With `?maxLag=N` also 503 `{"status": "behind", "lag"}`
/// while ingest is more than N messages behind its source, or its lag is not known yet (a
/// replica that is catching up is taken out of rotation until it has).
async fn health(State(t): State<Arc<Telemetry>>, RawQuery(query): RawQuery) -> Response {
    let max_lag = match query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("maxLag="))
    {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({
                        "error": format!("maxLag must be a whole number of messages, got {v:?}")
                    })),
                )
                    .into_response()
            }
        },
    };
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
    let lag = report
        .stages
        .iter()
        .find(|s| s.name == "ingest")
        .and_then(|s| s.detail["lag"].as_u64());
    let behind = max_lag.filter(|max| lag.is_none_or(|l| l > *max));
    if failed.is_empty() && behind.is_none() {
        Json(serde_json::json!({"status": "ok", "rows": rows, "lag": lag})).into_response()
    } else if let (true, Some(max)) = (failed.is_empty(), behind) {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "behind", "lag": lag, "maxLag": max, "rows": rows})),
        )
            .into_response()
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
