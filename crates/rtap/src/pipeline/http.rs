//! Listening sockets and the servers on them, and the live summary line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::status::Parts;

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
    config: &crate::config::RtapConfig,
    feed: Arc<sources::OrderFeed>,
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
        serve(listener, server::orders_api::router(feed), stop),
    ))
}

/// Serves `app` on `listener` until `stop` turns true (then finishes the requests in flight).
pub fn serve(
    listener: TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    })
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
