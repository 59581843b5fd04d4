//! Who may ask what, checked on every port before any handler runs.
//!
//! - **Host check** (on by default when rtap listens on a loopback address): the `Host` header
//!   must name this machine (`localhost`, `127.0.0.1`, `[::1]`, with any port) or one of
//!   `http.allowed_hosts`. A web page the user visits cannot then reach a loopback rtap by
//!   pointing its own domain name at 127.0.0.1 (DNS rebinding) and read customers' data.
//! - **Cross-site writes**: a request that changes something (`POST /orders`, `/query/sql`)
//!   carrying an `Origin` of another site, or `Sec-Fetch-Site: cross-site`, is refused: another
//!   page cannot make the user's browser create orders or run queries.
//! - **Bearer token** (`http.auth_token`, `--auth-token`, `RTAP_AUTH_TOKEN`): when set,
//!   `/query/sql` and `POST /orders` require `Authorization: Bearer <token>` (or
//!   `?access_token=` on a GET, for the dashboard's event stream, which cannot send headers);
//!   with `http.protect_all` every endpoint does, except `/health` and the dashboard's static
//!   files (the page asks for the token and keeps it for the tab).
//! - **CORS**: no `Access-Control-Allow-Origin` at all, unless origins are listed in
//!   `http.cors_origins`.

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
    /// Check the `Host` header (rtap listens on loopback).
    pub check_host: bool,
    pub allowed_hosts: Vec<String>,
    pub cors_origins: Vec<String>,
}

/// Paths anyone may read even with `protect_all`: the page itself (it holds no data) and the
/// load balancer's health check.
const PUBLIC: &[&str] = &["/", "/app.js", "/style.css", "/health"];

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
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

fn is_local(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost") || host == "127.0.0.1" || host == "::1"
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
    if req.method() == Method::GET {
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
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_of)
        .unwrap_or_default();
    if access.check_host && !is_local(&host) && !access.allowed_hosts.contains(&host) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "host {host:?} is not allowed: rtap listens on loopback and answers only requests \
                 addressed to this machine (add the name to http.allowed_hosts to allow it)"
            ),
        );
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string);
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if writes {
        let cross_site = req
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site");
        let foreign_origin = origin.as_deref().is_some_and(|o| {
            o != "null" && host_of(o) != host && !access.cors_origins.iter().any(|c| c == o)
        });
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
    let allowed_origin = origin.filter(|o| access.cors_origins.iter().any(|c| c == o));
    if req.method() == Method::OPTIONS {
        if let Some(o) = allowed_origin {
            let mut r = StatusCode::NO_CONTENT.into_response();
            cors_headers(&mut r, &o);
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
