//! Who may ask what, checked on every port before any handler runs.
//!
//! - **Host check** (on when rtap listens on a loopback address, or when `http.allowed_hosts`
//!   is set): the `Host` header must name this machine (`localhost`, `127.0.0.1`, `[::1]`, with
//!   any port) or one of `http.allowed_hosts`. A web page the user visits cannot then reach a
//!   loopback rtap by pointing its own domain name at 127.0.0.1 (DNS rebinding) and read
//!   customers' data.
//! - **Cross-site requests**: a write (`POST /orders`) or any `/query/sql` carrying an `Origin`
//!   other than the one the request is addressed to (scheme, host and port; `Origin: null`
//!   too), or `Sec-Fetch-Site: cross-site`, is refused: another page cannot make the user's
//!   browser create orders or run queries.
//! - **Bearer token** (`http.auth_token`, `--auth-token`, `RTAP_AUTH_TOKEN`): when set,
//!   `/query/sql` and `POST /orders` require `Authorization: Bearer <token>` (the dashboard's
//!   `/api/stream` and `/api/snapshot` may send `?access_token=` instead: an event stream
//!   cannot send headers); with `http.protect_all` every endpoint does, except `/health` and
//!   the dashboard's static files (the page asks for the token and keeps it for the tab).
//! - **CORS**: no `Access-Control-Allow-Origin` at all, unless origins are listed in
//!   `http.cors_origins`; their preflight (`OPTIONS`) is answered before the token is asked
//!   for, as browsers never send it there.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

/// The access rules of one rtap.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub token: Option<String>,
    /// Every endpoint needs the token, not only SQL and writes.
    pub protect_all: bool,
    /// Check the `Host` header (rtap listens on loopback, or hosts are listed).
    pub check_host: bool,
    /// Names (as [`normalize_host`] makes them) allowed besides this machine's.
    pub allowed_hosts: Vec<String>,
    pub cors_origins: Vec<String>,
}

/// Paths anyone may read even with `protect_all`: the page itself (it holds no data) and the
/// load balancer's health check.
const PUBLIC: &[&str] = &["/", "/app.js", "/style.css", "/health"];

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Paths that may carry the token in the query string (`?access_token=`).
const QUERY_TOKEN_PATHS: &[&str] = &["/api/stream", "/api/snapshot"];

/// A host name as the Host check compares it (`http.allowed_hosts` entries go through this).
pub fn normalize_host(value: &str) -> String {
    host_of(value)
}

/// The `host[:port]` an `Origin` names (lowercased), or None for `null` or a malformed one.
fn origin_authority(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") || rest.is_empty() {
        return None;
    }
    let authority = rest
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    Some(without_default_port(&authority))
}

/// `host[:port]` without a default port (:80 or :443). Host and port are compared, not the
/// scheme: behind a TLS proxy a page of `https://h` talks to rtap's plain HTTP as `Host: h`.
fn without_default_port(authority: &str) -> String {
    authority
        .strip_suffix(":80")
        .or_else(|| authority.strip_suffix(":443"))
        .unwrap_or(authority)
        .to_string()
}

/// The request came from a page of another origin than the one it is addressed to.
fn is_foreign_origin(origin: &str, host_header: &str, access: &Access) -> bool {
    if access.cors_origins.iter().any(|c| c == origin) {
        return false;
    }
    let host = without_default_port(&host_header.trim().to_ascii_lowercase());
    origin_authority(origin).is_none_or(|a| a != host)
}

/// The host part of a `Host` or `Origin` value, lowercased, without port or brackets.
fn host_of(value: &str) -> String {
    let v = value.trim().to_ascii_lowercase();
    let v = v
        .split_once("://")
        .map_or(v.as_str(), |(_, rest)| rest)
        .to_string();
    let v = v.split('/').next().unwrap_or_default().to_string();
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_string();
    }
    match v.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
        _ => v,
    }
}

/// A Host that DNS rebinding cannot produce: this machine's names, or any IP address (a page
/// that rebinds its own name to 127.0.0.1 still sends its name). So Prometheus, probes and
/// load balancers that address rtap by IP pass the check.
fn is_local(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost") || host.parse::<std::net::IpAddr>().is_ok()
}

/// Constant-time comparison (a token must not leak through timing).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented_token(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    if req.method() == Method::GET && QUERY_TOKEN_PATHS.contains(&req.uri().path()) {
        let query = req.uri().query()?;
        for pair in query.split('&') {
            if let Some(v) = pair.strip_prefix("access_token=") {
                return Some(percent_decode(v));
            }
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn needs_token(access: &Access, method: &Method, path: &str) -> bool {
    if access.token.is_none() {
        return false;
    }
    if path == "/query/sql" || (path == "/orders" && method == Method::POST) {
        return true;
    }
    access.protect_all && !PUBLIC.contains(&path) && !path.starts_with("/vendor/")
}

async fn guard(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let host_header = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let host = host_of(&host_header);
    if access.check_host && !is_local(&host) && !access.allowed_hosts.contains(&host) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "host {host:?} is not allowed: rtap answers only requests addressed to this \
                 machine or to a name in http.allowed_hosts"
            ),
        );
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string);
    let allowed_origin = origin
        .clone()
        .filter(|o| access.cors_origins.iter().any(|c| c == o));
    // A preflight never carries the token: answer it for the listed origins first.
    if req.method() == Method::OPTIONS {
        if let Some(o) = allowed_origin {
            let mut r = StatusCode::NO_CONTENT.into_response();
            cors_headers(&mut r, &o);
            return r;
        }
    }
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if writes || req.uri().path() == "/query/sql" {
        // A listed CORS origin is another site by design.
        let cross_site = allowed_origin.is_none()
            && req
                .headers()
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes() == b"cross-site");
        let foreign_origin = origin
            .as_deref()
            .is_some_and(|o| is_foreign_origin(o, &host_header, &access));
        if cross_site || foreign_origin {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "{} {} from another site ({}) is refused",
                    req.method(),
                    req.uri().path(),
                    origin.as_deref().unwrap_or("Sec-Fetch-Site: cross-site")
                ),
            );
        }
    }
    if needs_token(&access, req.method(), req.uri().path()) {
        let ok = match (&access.token, presented_token(&req)) {
            (Some(want), Some(got)) => same(want.as_bytes(), got.as_bytes()),
            _ => false,
        };
        if !ok {
            let mut r = refuse(
                StatusCode::UNAUTHORIZED,
                format!(
                    "{} needs the access token: send `Authorization: Bearer <token>` (the token \
                     rtap was started with, http.auth_token)",
                    req.uri().path()
                ),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let mut response = next.run(req).await;
    if let Some(o) = allowed_origin {
        cors_headers(&mut response, &o);
    }
    response
}

fn cors_headers(r: &mut Response, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// Wraps `app` with the access rules.
pub fn guarded(app: Router, access: Arc<Access>) -> Router {
    app.layer(axum::middleware::from_fn_with_state(access, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_without_ports_or_brackets() {
        assert_eq!(host_of("127.0.0.1:8888"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8888"), "::1");
        assert_eq!(host_of("LocalHost"), "localhost");
        assert_eq!(host_of("http://evil.example:80/x"), "evil.example");
        assert!(is_local("localhost") && is_local("::1") && !is_local("evil.example"));
        assert_eq!(normalize_host("Shop.Example:8888"), "shop.example");
    }

    #[test]
    fn origins_compare_host_and_port() {
        let a = Access::default();
        assert!(!is_foreign_origin(
            "http://127.0.0.1:8888",
            "127.0.0.1:8888",
            &a
        ));
        assert!(!is_foreign_origin(
            "http://shop.example",
            "shop.example:80",
            &a
        ));
        // Another port is another origin, on the same machine too.
        assert!(is_foreign_origin(
            "http://127.0.0.1:9999",
            "127.0.0.1:8888",
            &a
        ));
        // Default ports on either side, whatever the scheme (a TLS proxy in front).
        assert!(!is_foreign_origin(
            "https://h.example:80",
            "h.example:80",
            &a
        ));
        assert!(!is_foreign_origin("https://h.example", "h.example", &a));
        assert!(is_foreign_origin("null", "127.0.0.1:8888", &a));
        assert!(is_foreign_origin("file://", "127.0.0.1:8888", &a));
        assert!(is_foreign_origin(
            "http://evil.example",
            "127.0.0.1:8888",
            &a
        ));
        let listed = Access {
            cors_origins: vec!["http://127.0.0.1:9999".into()],
            ..Access::default()
        };
        assert!(!is_foreign_origin(
            "http://127.0.0.1:9999",
            "127.0.0.1:8888",
            &listed
        ));
    }

    #[test]
    fn ip_addresses_and_local_names_pass_the_host_check_other_names_do_not() {
        for h in [
            "localhost",
            "a.localhost",
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "fe80::1",
        ] {
            assert!(is_local(h), "{h}");
        }
        for h in [
            "evil.example",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "",
        ] {
            assert!(!is_local(h), "{h}");
        }
        assert_eq!(host_of("[::1]:8888"), "::1");
    }

    #[test]
    fn tokens_compare_whole_and_decode_from_queries() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd") && !same(b"abc", b"ab"));
        assert_eq!(percent_decode("a%2Bb+c%zz"), "a+b c%zz");
    }

    #[test]
    fn what_needs_the_token() {
        let a = Access {
            token: Some("t".into()),
            ..Access::default()
        };
        assert!(needs_token(&a, &Method::POST, "/query/sql"));
        assert!(needs_token(&a, &Method::GET, "/query/sql"));
        assert!(needs_token(&a, &Method::POST, "/orders"));
        assert!(!needs_token(&a, &Method::GET, "/orders"));
        assert!(!needs_token(&a, &Method::GET, "/orders/overview"));
        let all = Access {
            protect_all: true,
            ..a
        };
        assert!(needs_token(&all, &Method::GET, "/orders/overview"));
        assert!(!needs_token(&all, &Method::GET, "/health"));
        assert!(!needs_token(
            &all,
            &Method::GET,
            "/vendor/uPlot.iife.min.js"
        ));
    }
}
