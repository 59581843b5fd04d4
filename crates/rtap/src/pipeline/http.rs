//! Listening sockets and the servers on them (with the access rules and connection limits of
//! the configuration), and the live summary line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use server::access::Access;
use server::listen::{ConnectionLimits, ConnectionStats};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::status::Parts;
use crate::config::RtapConfig;

/// Binds `ip:port` for `what`; the error names the flag that picks another port.
pub async fn bind(
    ip: IpAddr,
    port: u16,
    what: &str,
    flag: &str,
) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let addr = SocketAddr::new(ip, port);
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the {what} (is the port in use? choose another with {flag})")
    })?;
    let local = listener.local_addr().context("listener has no address")?;
    Ok((listener, local))
}

/// Starts the orders API over `feed` on the configured address; stops when `stop` turns true.
pub async fn orders_api(
    config: &RtapConfig,
    feed: Arc<sources::OrderFeed>,
    stats: Arc<ConnectionStats>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let (listener, addr) = bind(
        config.http.bind,
        config.http.api_port,
        "orders API",
        "--api-port",
    )
    .await?;
    Ok((
        addr,
        serve(
            config,
            listener,
            server::orders_api::router(feed),
            stats,
            stop,
        ),
    ))
}

/// The access rules of the configuration (the host check is on for loopback binds).
pub fn access(config: &RtapConfig) -> Arc<Access> {
    let h = &config.http;
    Arc::new(Access {
        token: h.auth_token.clone(),
        protect_all: h.protect_all,
        check_host: h.bind.is_loopback() || !h.allowed_hosts.is_empty(),
        allowed_hosts: h
            .allowed_hosts
            .iter()
            .map(|a| server::access::normalize_host(a))
            .collect(),
        cors_origins: h.cors_origins.clone(),
    })
}

/// Serves `app` on `listener`, with the access rules and connection limits of `config`, until
/// `stop` turns true (then the requests in flight get the shutdown grace to finish).
pub fn serve(
    config: &RtapConfig,
    listener: TcpListener,
    app: axum::Router,
    stats: Arc<ConnectionStats>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let h = &config.http;
    let limits = ConnectionLimits {
        max_connections: h.max_connections.min(connection_budget()),
        header_read_timeout: Duration::from_millis(h.header_read_timeout_ms),
        body_read_timeout: Duration::from_millis(h.body_read_timeout_ms),
        write_timeout: Duration::from_millis(h.write_timeout_ms),
        request_timeout: Duration::from_millis(h.request_timeout_ms),
        shutdown_grace: Duration::from_millis(h.shutdown_grace_ms),
    };
    let app = server::access::guarded(app, access(config));
    tokio::spawn(server::listen::serve(listener, app, limits, stats, stop))
}

/// Connections one port may hold within the process's open-file limit: a third of it (three
/// ports) after 512 kept for segments (a query opens a segment's file while it reads it; an
/// opened lookup index keeps its file open, one per segment and index), logs and the broker.
fn connection_budget() -> usize {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => usize::try_from(soft.saturating_sub(512) / 3)
            .unwrap_or(usize::MAX)
            .max(16),
        Err(_) => 256,
    }
}

/// Says loudly when rtap serves other machines with nothing guarding SQL and writes.
pub fn warn_if_open(config: &RtapConfig) {
    if !config.http.bind.is_loopback() && config.http.auth_token.is_none() {
        eprintln!(
            "WARNING: rtap listens on {} (other machines can reach it) without an access token: \
             anyone who can reach it can run SQL over your customers' orders and create orders. \
             Set --auth-token (RTAP_AUTH_TOKEN) or bind 127.0.0.1.",
            config.http.bind
        );
        tracing::warn!(bind = %config.http.bind, "listening beyond loopback without an access token");
    }
}

/// The one-line live summary: rewritten in place on a terminal, a log line every 10 s otherwise.
pub async fn live_summary(parts: Arc<Parts>, mut stop: watch::Receiver<bool>) {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal();
    let every = if terminal {
        std::time::Duration::from_secs(1)
    } else {
        std::time::Duration::from_secs(10)
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let line = parts.summary();
        if terminal {
            let mut out = std::io::stdout();
            let _ = write!(out, "\r\x1b[2K  {line}");
            let _ = out.flush();
        } else {
            tracing::info!("{line}");
        }
    }
    if terminal {
        println!();
    }
}
