//! rtap tried as an attacker or an unlucky busy team would try it (bounded loops, loopback
//! only): SQL that would take all memory or CPU, floods of queries, half-open and idle
//! connections, hundreds of dashboard viewers, missing tokens, a foreign Host header and a
//! cross-site write. Each is refused with its error (Pinot's code where a Pinot client would see
//! it), rtap's memory stays under a ceiling, and it keeps serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{get_json, terminate, wait_count};

/// `rtap up` on free ports with a configuration file; the child and its orders API and
/// analytics and dashboard URLs.
fn start(dir: &Path, config: &str, extra: &[&str]) -> (common::Running, String, String, String) {
    let file = dir.join("rtap.toml");
    std::fs::write(&file, config).expect("config");
    let mut cmd = common::up_on_free_ports();
    cmd.arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(extra)
        .stderr(Stdio::null());
    let s = common::start(cmd);
    (
        s.child,
        s.api.expect("api"),
        s.http.expect("http"),
        s.dashboard.expect("dashboard"),
    )
}

fn rss_mb(child: &Child) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// POST /query/sql; (HTTP status, body).
fn sql(http: &str, query: &str, token: Option<&str>) -> (u16, Value) {
    runtime().block_on(async {
        let mut req = reqwest::Client::new()
            .post(format!("{http}/query/sql"))
            .json(&serde_json::json!({ "sql": query }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    })
}

fn error_of(v: &Value) -> (i64, String) {
    let e = &v["exceptions"][0];
    (
        e["errorCode"].as_i64().unwrap_or(0),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

fn overview_ok(http: &str) -> bool {
    get_json(&format!("{http}/orders/overview")).is_some_and(|(s, _)| s == 200)
}

const LIMITS: &str = "[sql]\ntimeout_ms = 4000\nquery_memory_bytes = 67108864\nmemory_limit_bytes = 134217728\nmax_response_bytes = 1048576\n";

#[test]
fn sql_bombs_are_refused_with_their_error_and_rtap_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, _api, http, _) = start(
        dir.path(),
        LIMITS,
        &["--rate", "0", "--max-orders", "20000", "--seed", "5"],
    );
    wait_count(&http, 20_000, Duration::from_secs(90));
    let ceiling_mb = rss_mb(&child) + 1_000;
    const FUNCTIONS: &[(i64, &str)] = &[
        (245, "sql.max_function_output"),
        (245, "sql.max_value_size"),
    ];
    // A join without a key over large sides is refused before it runs (sql.max_join_pairs).
    const MEMORY: &[(i64, &str)] = &[(245, "memory limit"), (245, "sql.max_join_pairs")];
    const TIME: &[(i64, &str)] = &[(250, "did not finish within 4000 ms")];
    // A grouping that can spill may spill and run out of time instead of memory.
    const MEMORY_OR_TIME: &[(i64, &str)] = &[
        (245, "memory limit"),
        (245, "spill files reached their limit"),
        (250, "did not finish"),
        (245, "sql.max_join_pairs"),
    ];
    let bombs: &[(&str, &[(i64, &str)])] = &[
        ("SELECT range(0, 100000) FROM orders", FUNCTIONS),
        ("SELECT generate_series(1, 1000000000)", FUNCTIONS),
        ("SELECT repeat(customer_name, 100000000) FROM orders", FUNCTIONS),
        ("SELECT lpad('x', 2000000000)", FUNCTIONS),
        ("SELECT array_repeat(order_id, 10000000) FROM orders", FUNCTIONS),
        ("SELECT SUM(length(repeat('x', 60000))) FROM orders", FUNCTIONS),
        ("WITH a AS (SELECT repeat('x', 1000000) s) SELECT MAX(length(s)) FROM a, orders", FUNCTIONS),
        ("SELECT array_agg(a.order_id) FROM orders a CROSS JOIN orders b", MEMORY),
        ("SELECT a.order_id, b.order_id, COUNT(*) FROM orders a CROSS JOIN orders b GROUP BY 1, 2", MEMORY_OR_TIME),
        ("SELECT COUNT(*) FROM orders a CROSS JOIN orders b CROSS JOIN orders c WHERE a.order_total + b.order_total > c.order_total", MEMORY_OR_TIME),
        ("SELECT SUM(value) FROM generate_series(1, 100000000000)", TIME),
    ];
    for (query, expected) in bombs {
        let started = Instant::now();
        let (status, body) = sql(&http, query, None);
        assert_eq!(status, 200, "{query}");
        let (got, message) = error_of(&body);
        assert!(
            expected
                .iter()
                .any(|(code, fragment)| got == *code && message.contains(fragment)),
            "{query}: {got} {message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{query} took {:?}",
            started.elapsed()
        );
        let rss = rss_mb(&child);
        assert!(
            rss < ceiling_mb,
            "{query}: RSS {rss} MB over {ceiling_mb} MB"
        );
        assert!(overview_ok(&http), "rtap stopped serving after {query}");
    }
    // Everything (a LIMIT past Pinot's default of 10), cut at the byte limit with a reason.
    let (_, body) = sql(&http, "SELECT * FROM orders LIMIT 100000000", None);
    assert_eq!(
        body["partialResult"], true,
        "{} rows, {}",
        body["numRowsResultSet"], body["exceptions"]
    );
    assert!(
        body["partialResultReason"]
            .as_str()
            .is_some_and(|r| r.contains("sql.max_response_bytes")),
        "{}",
        body["partialResultReason"]
    );
    assert!(body["resultTable"]["rows"]
        .as_array()
        .is_some_and(|r| !r.is_empty()));
    // Text limits, refused before parsing.
    let long = format!(
        "SELECT 1 FROM orders WHERE order_id IN ({})",
        "'x',".repeat(80_000)
    );
    let (_, body) = sql(&http, &long, None);
    let (code, message) = error_of(&body);
    assert_eq!(code, 700);
    assert!(message.contains("sql.max_sql_bytes"), "{message}");
    let deep = format!("SELECT {}1{} FROM orders", "(".repeat(100), ")".repeat(100));
    let (code, message) = error_of(&sql(&http, &deep, None).1);
    assert_eq!(code, 700);
    assert!(message.contains("sql.max_nesting_depth"), "{message}");
    // 20,000 SUMMV terms (340 KB; once 4.5 s of a busy HTTP runtime) are refused at once ...
    let terms: Vec<String> = (0..20_000).map(|_| "SUMMV(itemQtys)".to_string()).collect();
    let huge = format!("SELECT {} FROM orders", terms.join(" + "));
    let started = Instant::now();
    let (code, message) = error_of(&sql(&http, &huge, None).1);
    assert_eq!(code, 700);
    assert!(message.contains("sql.max_sql_bytes"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(1));
    // ... and so is a chain of 5,000 (a 5,000-deep expression would overflow the stack) ...
    let (code, message) = error_of(
        &sql(
            &http,
            &format!("SELECT {} FROM orders", terms[..5_000].join(" + ")),
            None,
        )
        .1,
    );
    assert_eq!(code, 700);
    assert!(message.contains("sql.max_operators"), "{message}");
    // ... while 900 terms run, in linear time and off the HTTP runtime.
    let terms: Vec<String> = (0..900).map(|_| "SUMMV(itemQtys)".to_string()).collect();
    let wide = format!("SELECT {} FROM orders WHERE time_ms < 0", terms.join(" + "));
    let started = Instant::now();
    let (_, body) = sql(&http, &wide, None);
    assert!(
        body["exceptions"].as_array().is_some_and(|e| e.is_empty()),
        "{}",
        body["exceptions"]
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(common::count(&http), Some(20_000), "the data is untouched");
    assert!(terminate(&mut child).success());
}

#[test]
fn queries_past_the_queue_are_refused_as_busy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, _api, http, _) = start(
        dir.path(),
        "[sql]\ntimeout_ms = 3000\nmax_concurrent = 1\nmax_queued = 1\n",
        &["--rate", "0", "--max-orders", "5000", "--seed", "6"],
    );
    wait_count(&http, 5_000, Duration::from_secs(60));
    let slow =
        "SELECT COUNT(*) FROM orders a CROSS JOIN orders b WHERE a.order_total > b.order_total";
    let answers: Vec<(i64, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| error_of(&sql(&http, slow, None).1)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let busy: Vec<&(i64, String)> = answers.iter().filter(|(c, _)| *c == 211).collect();
    assert!(busy.len() >= 4, "{answers:?}");
    assert!(busy[0].1.contains("server busy"), "{}", busy[0].1);
    assert!(busy[0].1.contains("sql.max_queued = 1"), "{}", busy[0].1);
    // The light endpoints did not wait behind them.
    assert!(overview_ok(&http));
    assert!(terminate(&mut child).success());
}

/// Opens `n` connections to `addr` that send half a request and then nothing.
fn half_open(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            s.write_all(b"GET /orders/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .ok()?;
            Some(s)
        })
        .collect()
}

#[test]
fn half_open_and_idle_connections_cannot_starve_rtap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, _api, http, _) = start(
        dir.path(),
        "[http]\nheader_read_timeout_ms = 2000\n",
        &["--rate", "500", "--checkpoint-interval", "0.5"],
    );
    let addr = http.trim_start_matches("http://").to_string();
    let checkpoints = |http: &str| {
        get_json(&format!("{http}/api/status")).and_then(|(_, s)| {
            s["stages"]
                .as_array()?
                .iter()
                .find(|st| st["name"] == "ingest")?["detail"]["checkpoints"]
                .as_u64()
        })
    };
    let before = checkpoints(&http).unwrap_or(0);
    let mut held = half_open(&addr, 1_000);
    assert!(held.len() >= 950, "only {} connections opened", held.len());
    // Normal requests still succeed, and checkpoints still happen, while they are held.
    for _ in 0..10 {
        assert!(overview_ok(&http));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        checkpoints(&http).unwrap_or(0) > before,
        "no checkpoint while connections were held"
    );
    // The server closes them once their headers are overdue.
    std::thread::sleep(Duration::from_millis(3_000));
    let closed = held
        .iter_mut()
        .map(|s| {
            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
            let mut buf = [0u8; 256];
            // Still open: the read times out. Closed: end of stream, a last answer, or a reset.
                        !matches!(s.read(&mut buf), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
        })
        .filter(|closed| *closed)
        .count();
    assert!(
        closed >= held.len() * 9 / 10,
        "{closed} of {} closed",
        held.len()
    );
    drop(held);
    assert!(terminate(&mut child).success());

    // At the connection cap, one more is answered 503 and closed.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, _api, http, _) = start(dir.path(), "[http]\nmax_connections = 20\n", &[]);
    let addr = http.trim_start_matches("http://").to_string();
    let held = half_open(&addr, 20);
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(&addr).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert!(overview_ok(&http));
    assert!(terminate(&mut child).success());
}

fn metric(url: &str, name: &str) -> f64 {
    let text = runtime().block_on(async {
        reqwest::get(url)
            .await
            .expect("get")
            .text()
            .await
            .expect("text")
    });
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn dashboard_viewers_share_one_snapshot_and_the_cap_refuses_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, _api, _http, dash) = start(
        dir.path(),
        "[http]\nmax_viewers = 100\n",
        &["--rate", "200"],
    );
    let addr = dash.trim_start_matches("http://").to_string();
    let open_stream = || -> (TcpStream, String) {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.write_all(
            b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
        )
        .expect("write");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = vec![0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        (s, head)
    };
    let mut streams = Vec::new();
    for _ in 0..100 {
        let (s, head) = open_stream();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        streams.push(s);
    }
    let (_, refused) = open_stream();
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many dashboard viewers"), "{refused}");
    let metrics = format!("{dash}/metrics");
    assert_eq!(metric(&metrics, "rtap_dashboard_viewers"), 100.0);
    let a = metric(&metrics, "rtap_dashboard_snapshots_total");
    std::thread::sleep(Duration::from_secs(4));
    let b = metric(&metrics, "rtap_dashboard_snapshots_total");
    assert!(
        b - a <= 6.0 && b - a >= 2.0,
        "{} snapshots in 4 s for 100 viewers: one a second for all of them",
        b - a
    );
    drop(streams);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(metric(&metrics, "rtap_dashboard_viewers"), 0.0);
    assert!(terminate(&mut child).success());
}

/// A raw request with chosen headers; (status, body).
fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[test]
fn tokens_hosts_and_cross_site_writes_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "a-long-test-secret";
    let (mut child, api, http, dash) =
        start(dir.path(), "", &["--rate", "50", "--auth-token", token]);
    // SQL and writes need the token; reading the analytics API does not.
    let (status, body) = sql(&http, "SELECT COUNT(*) FROM orders", None);
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("Bearer")));
    let (status, body) = sql(&http, "SELECT COUNT(*) FROM orders", Some(token));
    assert_eq!(status, 200);
    assert!(body["resultTable"]["rows"][0][0].is_u64(), "{body}");
    assert_eq!(sql(&http, "SELECT 1", Some("wrong-token-value")).0, 401);
    let post = |t: Option<&str>| {
        runtime().block_on(async {
            let mut r = reqwest::Client::new().post(format!("{api}/orders"));
            if let Some(t) = t {
                r = r.bearer_auth(t);
            }
            r.send().await.expect("post").status().as_u16()
        })
    };
    assert_eq!(post(None), 401);
    assert_eq!(post(Some(token)), 201);
    assert!(overview_ok(&http));
    // `rtap query` sends the token it is given.
    let out = common::rtap()
        .args([
            "query",
            "--json",
            "SELECT COUNT(*) FROM orders",
            "--http-port",
        ])
        .arg(http.rsplit(':').next().expect("port"))
        .env("RTAP_AUTH_TOKEN", token)
        .output()
        .expect("rtap query");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A page on another site, through DNS rebinding: a foreign Host is refused on every port.
    for base in [&api, &http, &dash] {
        let addr = base.trim_start_matches("http://");
        let (status, body) = raw(
            addr,
            "GET /orders/overview HTTP/1.1\r\nHost: evil.example:8888\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 403, "{base}: {body}");
        assert!(body.contains("http.allowed_hosts"), "{body}");
    }
    // A cross-site write, even with the token (the browser would send cookies, not tokens, but
    // a page must not trigger writes at all).
    let addr = api.trim_start_matches("http://");
    let (status, _) = raw(
        addr,
        &format!(
            "POST /orders HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 403);
    // A query from a page of another origin (another port of this machine, a sandboxed
    // `null` page), with the token: refused, GET too (reading is not the only harm a query does).
    let sql_addr = http.trim_start_matches("http://");
    for origin in ["http://127.0.0.1:9", "null"] {
        let (status, body) = raw(
            sql_addr,
            &format!(
                "GET /query/sql?sql=SELECT%201 HTTP/1.1\r\nHost: {sql_addr}\r\nOrigin: {origin}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert_eq!(status, 403, "{origin}: {body}");
    }
    // The page's own origin passes.
    let (status, body) = raw(
        sql_addr,
        &format!(
            "GET /query/sql?sql=SELECT%201 HTTP/1.1\r\nHost: {sql_addr}\r\nOrigin: http://{sql_addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200, "{body}");
    // The token in the query string is for the dashboard's stream only, not for SQL (it would
    // end up in logs and browser history).
    let (status, _) = raw(
        sql_addr,
        &format!(
            "GET /query/sql?sql=SELECT%201&access_token={token} HTTP/1.1\r\nHost: {sql_addr}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 401);
    // No CORS headers unless configured.
    let (_, head) = raw(
        http.trim_start_matches("http://"),
        "GET /orders/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n",
    );
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{head}"
    );
    assert!(terminate(&mut child).success());

    // protect_all: every endpoint but /health and the page's files.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, _api, http, dash) = start(
        dir.path(),
        "[http]\nprotect_all = true\ncors_origins = [\"http://app.example\"]\n",
        &["--rate", "50", "--auth-token", token],
    );
    assert_eq!(
        get_json(&format!("{http}/orders/overview")).map(|r| r.0),
        Some(401)
    );
    assert_eq!(get_json(&format!("{http}/health")).map(|r| r.0), Some(200));
    // A listed origin's preflight is answered without the token (browsers never send it there).
    let (status, head) = raw(
        http.trim_start_matches("http://"),
        "OPTIONS /orders/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://app.example\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 204, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("access-control-allow-origin: http://app.example"),
        "{head}"
    );
    let page = runtime().block_on(async {
        reqwest::get(format!("{dash}/"))
            .await
            .expect("page")
            .status()
            .as_u16()
    });
    assert_eq!(page, 200);
    let addr = dash.trim_start_matches("http://");
    let (status, _) = raw(
        addr,
        &format!("GET /api/snapshot?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200);
    assert!(terminate(&mut child).success());
}

#[test]
fn listening_beyond_loopback_without_a_token_warns_loudly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = common::rtap()
        .args(["api", "--bind", "0.0.0.0", "--api-port", "0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(common::Running)
        .expect("rtap api");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    // The warning may arrive in pieces: read until its end (it names the flag to use).
    while !seen.contains("--auth-token") && Instant::now() < deadline {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(seen.contains("WARNING: rtap listens on 0.0.0.0"), "{seen}");
    assert!(seen.contains("--auth-token"), "{seen}");
    assert!(terminate(&mut child).success());
}
