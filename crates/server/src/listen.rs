//! Serving a router on a listening socket with bounds on every connection: the one place where
//! rtap's three HTTP ports accept connections.
//!
//! What `axum::serve` does not bound, and a hostile or unlucky client can exploit:
//! - **connections**: at most `max_connections` at once per port; one more is answered with a
//!   short `503` and closed, so a flood of idle sockets cannot use up the process's file
//!   descriptors (which would stop checkpoints and segment writes too);
//! - **slow or half-open clients**: a request's headers must arrive within
//!   `header_read_timeout` (hyper's HTTP/1 timer, which also closes an idle keep-alive
//!   connection that long after its last response), and a request body within
//!   `body_read_timeout`;
//! - **clients that stop reading**: a write to a connection that makes no progress for
//!   `write_timeout` closes it (a response nobody reads would hold its connection forever);
//! - **slow handlers**: a request whose response has not started within `request_timeout` is
//!   answered `503` (the dashboard's event stream starts its response at once, so it is not cut);
//! - **shutdown**: when told to stop, the listener closes at once and the connections in flight
//!   get `shutdown_grace` to finish; then they are aborted, so a lingering client cannot hold
//!   rtap open.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Bounds on one port's connections.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub write_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Counts of one port, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub open: AtomicU64,
    pub refused: AtomicU64,
    /// Connections closed because a write made no progress within the write timeout.
    pub write_timeouts: AtomicU64,
}

/// The ports' connection counts as `rtap_http_connections{port}`,
/// `rtap_http_connections_refused_total{port}` and `rtap_http_write_timeouts_total{port}`.
#[derive(Debug)]
pub struct ConnectionCollector(pub Vec<(&'static str, Arc<ConnectionStats>)>);

impl Collector for ConnectionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut open = encoder.encode_descriptor(
            "rtap_http_connections",
            "Open HTTP connections, by port",
            None,
            MetricType::Gauge,
        )?;
        for (port, stats) in &self.0 {
            let n = stats.open.load(Ordering::Relaxed);
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
                .encode(open.encode_family(&[("port", *port)])?)?;
        }
        for (name, help, read) in [
            (
                "rtap_http_connections_refused",
                "Connections refused at http.max_connections, by port",
                (|s: &ConnectionStats| s.refused.load(Ordering::Relaxed))
                    as fn(&ConnectionStats) -> u64,
            ),
            (
                "rtap_http_write_timeouts",
                "Connections closed because the client stopped reading, by port",
                |s: &ConnectionStats| s.write_timeouts.load(Ordering::Relaxed),
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (port, stats) in &self.0 {
                ConstCounter::new(read(stats)).encode(family.encode_family(&[("port", *port)])?)?;
            }
        }
        Ok(())
    }
}

/// The answer to a connection over the limit (then the socket is closed).
static BUSY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"error":"too many connections; retry in a moment (rtap busy)"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// A connection whose writes fail once one makes no progress for `timeout`.
struct TimedWrites<T> {
    inner: T,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    stats: Arc<ConnectionStats>,
}

impl<T> TimedWrites<T> {
    /// Turns a pending write into an error once it has been pending for the timeout.
    fn pending<R>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if std::future::Future::poll(sleep.as_mut(), cx).is_ready() {
            self.stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading (http.write_timeout_ms)",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedWrites<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedWrites<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `app` on `listener` until `stop` turns true, within `limits`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    stats: Arc<ConnectionStats>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = app
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            limits.body_read_timeout,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let graceful = GracefulShutdown::new();
    let mut accept_backoff = Duration::from_millis(5);
    loop {
        let accepted: (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => {
                    accept_backoff = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE) and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(accept_backoff).await;
                    accept_backoff = (accept_backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let (stream, _peer) = accepted;
        // Forget the connections that have ended.
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = stream.try_write(&BUSY);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true)
            .max_headers(64);
        let io = TimedWrites {
            inner: stream,
            timeout: limits.write_timeout,
            stalled: None,
            stats: stats.clone(),
        };
        let conn =
            builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        let open = OpenConnection::new(stats.clone(), permit);
        connections.spawn(async move {
            let _ = conn.await;
            drop(open);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!(
                open = connections.len(),
                "connections still open after the shutdown grace; closing them"
            );
        }
    }
    // Whatever is left is cut (an event stream, a client that never reads).
    connections.shutdown().await;
    Ok(())
}

/// One open connection: counted while it lives, its permit returned when it ends (or is
/// aborted).
struct OpenConnection {
    stats: Arc<ConnectionStats>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(stats: Arc<ConnectionStats>, permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            stats,
            _permit: permit,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}
