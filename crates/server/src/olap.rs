//! `--olap pinot://broker:port`: the analytics endpoints and `/query/sql` answered by an Apache
//! Pinot broker (or anything that speaks its broker API, e.g. another rtap) instead of rtap's
//! own table. The SQL is rtap's own (`queries/*.sql`, Pinot's dialect), with the bound values
//! written in as literals; the rolling windows of `/orders/overview` stay in rtap.
//!
//! The broker's reachability is a stage of `/api/status` ("olap"): checked every few seconds
//! and after every query, with the last error.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use datafusion::common::ScalarValue;
use serde_json::{json, Value};

use crate::status::StageStatus;

/// Why the broker gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum OlapError {
    /// No connection, or it broke: the broker is down or unreachable.
    #[error("the Pinot broker at {0} is unreachable: {1}")]
    Unreachable(String, String),
    /// The request took longer than `olap.timeout_ms`.
    #[error("the Pinot broker at {0} did not answer within {1} ms")]
    Timeout(String, u128),
    /// Too many requests to the broker in flight already.
    #[error("the Pinot broker at {0} is busy: {1} requests to it are in flight")]
    Busy(String, usize),
    /// It answered, but not with rows: an exception, or something that is not a broker answer.
    #[error("the Pinot broker at {0} {1}")]
    Refused(String, String),
}

impl OlapError {
    /// Worth trying again soon (the endpoints answer 503 instead of 502).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            OlapError::Busy(..) | OlapError::Timeout(..) | OlapError::Unreachable(..)
        )
    }
}

/// At most `n` characters of a broker's text (its messages can hold whole stack traces).
fn clip(text: &str, n: usize) -> String {
    match text.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// How much rtap asks of, and takes from, a broker.
#[derive(Debug, Clone, Copy)]
pub struct BrokerLimits {
    /// Each request gives up after this.
    pub timeout: Duration,
    /// Most bytes of an answer read (a result is bounded by the broker's own limits; this
    /// bounds what a wrong or hostile server can make rtap hold).
    pub max_answer_bytes: usize,
    /// Requests in flight at once, so a burst of requests to rtap does not become an unbounded
    /// burst on the broker ...
    pub max_in_flight: usize,
    /// ... and how long one more waits for a turn before it fails as "busy".
    pub queue_wait: Duration,
}

impl BrokerLimits {
    /// 64 MiB answers, 16 requests at once, a turn waited for as long as a request may take.
    pub fn with_timeout(timeout: Duration) -> Self {
        BrokerLimits {
            timeout,
            max_answer_bytes: 64 * 1024 * 1024,
            max_in_flight: 16,
            queue_wait: timeout,
        }
    }
}

/// Pinot's error code for "a server did not answer", used when the broker itself cannot be
/// reached.
pub const UNREACHABLE_CODE: i64 = 427;

/// A Pinot broker and what rtap knows of its health.
pub struct PinotBroker {
    /// `http://host:port` (from `pinot://host:port`) or the `http(s)://` URL given.
    base: String,
    client: reqwest::Client,
    limits: BrokerLimits,
    in_flight: tokio::sync::Semaphore,
    reachable: AtomicBool,
    /// Epoch ms of the last answer, 0 if none yet.
    last_ok_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for PinotBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinotBroker")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// `pinot://host:port` (or `http://host:port`) as `http://host:port`. rtap is built without
/// TLS, so `https://` is refused rather than failing on every request. The error says what is
/// expected.
pub fn broker_base(spec: &str) -> Result<String, String> {
    let spec = spec.trim().trim_end_matches('/');
    let rest = match spec.split_once("://") {
        Some(("pinot" | "http", rest)) => rest,
        _ => {
            return Err(format!(
                "--olap takes pinot://host:port (a Pinot broker, port 8099 by default; rtap \
                 speaks plain HTTP to it), got {spec:?}"
            ))
        }
    };
    let url = reqwest::Url::parse(&format!("http://{rest}"))
        .map_err(|e| format!("--olap {spec:?} is not a URL: {e}"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("--olap {spec:?} names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("--olap must not carry credentials in the URL".to_string());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let port_given = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if !port_given || rest.contains(['?', '#']) {
        return Err(format!(
            "--olap {spec:?}: give host and port, e.g. pinot://broker:8099 (Pinot's default)"
        ));
    }
    Ok(format!("http://{rest}"))
}

impl PinotBroker {
    /// A broker at `spec` (see [`broker_base`]) asked within `limits`.
    pub fn new(spec: &str, limits: BrokerLimits) -> Result<Self, String> {
        let base = broker_base(spec)?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2).min(limits.timeout))
            .timeout(limits.timeout)
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(PinotBroker {
            base,
            client,
            limits,
            in_flight: tokio::sync::Semaphore::new(limits.max_in_flight.max(1)),
            reachable: AtomicBool::new(false),
            last_ok_ms: AtomicI64::new(0),
            last_error: Mutex::new(None),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn ok(&self) {
        self.reachable.store(true, Ordering::Release);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.last_ok_ms.store(now, Ordering::Release);
    }

    fn failed(&self, error: &str) {
        self.reachable.store(false, Ordering::Release);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(error.to_string());
        }
    }

    /// A transport error as an [`OlapError`]; a broken connection marks the broker unreachable
    /// (a slow query does not: the broker is there).
    fn transport(&self, e: &reqwest::Error) -> OlapError {
        if e.is_timeout() {
            return OlapError::Timeout(self.base.clone(), self.limits.timeout.as_millis());
        }
        let error = OlapError::Unreachable(self.base.clone(), e.to_string());
        self.failed(&error.to_string());
        error
    }

    /// Reads a response body up to `max_answer_bytes`.
    async fn body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, OlapError> {
        let mut out = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if out.len() + chunk.len() > self.limits.max_answer_bytes {
                return Err(OlapError::Refused(
                    self.base.clone(),
                    format!("answered more than {} bytes", self.limits.max_answer_bytes),
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Sends `sql` to the broker's `POST /query/sql`; the HTTP status and the JSON answer as
    /// they came.
    pub async fn query_text(&self, sql: &str) -> Result<(u16, Vec<u8>), OlapError> {
        let wait = self.limits.queue_wait;
        let Ok(Ok(_turn)) = tokio::time::timeout(wait, self.in_flight.acquire()).await else {
            return Err(OlapError::Busy(
                self.base.clone(),
                self.limits.max_in_flight,
            ));
        };
        let response = self
            .client
            .post(format!("{}/query/sql", self.base))
            .json(&json!({ "sql": sql }))
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status();
        let body = self.body(response).await?;
        if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return Err(OlapError::Refused(
                self.base.clone(),
                format!(
                    "answered {status} without JSON: {}",
                    clip(&String::from_utf8_lossy(&body), 200)
                ),
            ));
        }
        if status.is_success() {
            self.ok();
        }
        Ok((status.as_u16(), body))
    }

    /// The rows of `sql`'s result (each a list of cells), or the broker's first exception.
    pub async fn rows(&self, sql: &str) -> Result<Vec<Vec<Value>>, OlapError> {
        let (_, body) = self.query_text(sql).await?;
        let refused = |what: String| OlapError::Refused(self.base.clone(), what);
        let answer: Value =
            serde_json::from_slice(&body).map_err(|e| refused(format!("answered no JSON: {e}")))?;
        if let Some(first) = answer["exceptions"].as_array().and_then(|e| e.first()) {
            return Err(refused(format!(
                "refused rtap's query (error {}): {}",
                first["errorCode"],
                clip(&first["message"].to_string(), 300)
            )));
        }
        // A broker that pruned every segment answers without a resultTable (older Pinot
        // releases): no rows.
        if answer.get("resultTable").is_none_or(Value::is_null) {
            return Ok(Vec::new());
        }
        let rows = answer["resultTable"]["rows"]
            .as_array()
            .ok_or_else(|| refused("answered without resultTable.rows".to_string()))?
            .iter()
            .map(|r| r.as_array().cloned().unwrap_or_default())
            .collect();
        Ok(rows)
    }

    /// Asks the broker's `GET /health` (what Pinot brokers answer 200 "OK" on).
    pub async fn check(&self) {
        match self
            .client
            .get(format!("{}/health", self.base))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => self.ok(),
            Ok(r) => self.failed(&format!(
                "the Pinot broker at {} is unhealthy: /health answered {}",
                self.base,
                r.status()
            )),
            Err(e) => self.failed(&format!(
                "the Pinot broker at {} is unreachable: {e}",
                self.base
            )),
        }
    }

    /// Checks the broker every `every` until `stop`.
    pub fn spawn_checks(
        self: &std::sync::Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let broker = self.clone();
        tokio::spawn(async move {
            loop {
                broker.check().await;
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    }

    /// The "olap" stage of `/api/status`: "running" while the broker answers, "waiting" (with
    /// the error) while it does not; ingest and the windows go on either way.
    pub fn stage(&self) -> StageStatus {
        let reachable = self.reachable.load(Ordering::Acquire);
        let last_ok = self.last_ok_ms.load(Ordering::Acquire);
        StageStatus {
            name: "olap",
            state: if reachable { "running" } else { "waiting" }.into(),
            detail: json!({
                "broker": self.base,
                "reachable": reachable,
                "lastAnswerAtMs": (last_ok > 0).then_some(last_ok),
            }),
            last_error: if reachable {
                None
            } else {
                self.last_error.lock().ok().and_then(|e| e.clone())
            },
        }
    }
}

/// `sql` with `$1`, `$2`, ... replaced by `params` as SQL literals (numbers as they are, text
/// quoted with quotes doubled), and comment lines left out: what is sent to the broker.
/// Placeholders inside quoted text are left alone.
pub fn inline(sql: &str, params: &[ScalarValue]) -> Result<String, String> {
    let literal = |i: usize| -> Result<String, String> {
        match params.get(i.wrapping_sub(1)) {
            Some(ScalarValue::Int64(Some(v))) if *v == i64::MIN => {
                Ok(format!("({} - 1)", i64::MIN + 1))
            }
            // Negative numbers in parentheses: `a-$1` must not become the comment `a--5`.
            Some(ScalarValue::Int64(Some(v))) if *v < 0 => Ok(format!("({v})")),
            Some(ScalarValue::Int64(Some(v))) => Ok(v.to_string()),
            Some(ScalarValue::Utf8(Some(s))) => Ok(format!("'{}'", s.replace('\'', "''"))),
            other => Err(format!(
                "parameter ${i} cannot be sent to the broker: {other:?}"
            )),
        }
    };
    let text: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::with_capacity(text.len() + 64);
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
            out.push(c);
            continue;
        }
        if c == '$' && !quoted && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut n = 0usize;
            while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                n = n.saturating_mul(10).saturating_add(d as usize);
                chars.next();
            }
            out.push_str(&literal(n)?);
            continue;
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_literals_and_text_is_quoted() {
        let sql =
            "-- a comment $1\nSELECT a FROM t WHERE x > $1 AND y = $2 AND z = '$1' AND w <= $10";
        let mut params = vec![
            ScalarValue::Int64(Some(5)),
            ScalarValue::Utf8(Some("o'b".into())),
        ];
        params.extend((3..=10).map(|i| ScalarValue::Int64(Some(i))));
        assert_eq!(
            inline(sql, &params).expect("inline"),
            "SELECT a FROM t WHERE x > 5 AND y = 'o''b' AND z = '$1' AND w <= 10"
        );
        assert_eq!(
            inline("x > $1", &[ScalarValue::Int64(Some(i64::MIN))]).expect("inline"),
            "x > (-9223372036854775807 - 1)"
        );
        assert_eq!(
            inline("a-$1", &[ScalarValue::Int64(Some(-5))]).expect("inline"),
            "a-(-5)"
        );
        // Whatever a customer id holds stays inside its literal.
        for hostile in [
            "x' OR '1'='1",
            "'; DROP TABLE orders; --",
            "$1 '' \\' é ✓",
            "--",
        ] {
            let sql = inline(
                "SELECT 1 FROM t WHERE c = $1 AND d = $1",
                &[ScalarValue::Utf8(Some(hostile.into()))],
            )
            .expect("inline");
            let quoted = format!("'{}'", hostile.replace('\'', "''"));
            assert_eq!(
                sql,
                format!("SELECT 1 FROM t WHERE c = {quoted} AND d = {quoted}")
            );
        }
        assert!(inline("x > $2", &[ScalarValue::Int64(Some(1))]).is_err());
        assert!(inline("x > $0", &[ScalarValue::Int64(Some(1))]).is_err());
    }

    #[test]
    fn broker_addresses() {
        assert_eq!(
            broker_base("pinot://b:8099").as_deref(),
            Ok("http://b:8099")
        );
        assert_eq!(
            broker_base("pinot://b:8099/").as_deref(),
            Ok("http://b:8099")
        );
        assert_eq!(broker_base("http://b:9000").as_deref(), Ok("http://b:9000"));
        assert!(
            broker_base("https://pinot.example.com:443").is_err(),
            "no TLS in this build"
        );
        assert!(broker_base("pinot://b").is_err(), "a port is needed");
        assert_eq!(broker_base("pinot://b:80").as_deref(), Ok("http://b:80"));
        assert!(broker_base("pinot://b:8099?x=1").is_err());
        assert!(broker_base("b:8099").is_err());
        assert!(broker_base("pinot://").is_err());
        assert!(broker_base("ftp://b:1").is_err());
        assert!(broker_base("pinot://user:pw@b:8099").is_err());
    }
}
