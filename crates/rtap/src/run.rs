//! Building and running the stages of a command, and stopping them in order: on Ctrl-C or
//! SIGTERM the generator stops first (its current batch is stored or not at all), then the
//! HTTP servers finish their requests.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use orders::{GeneratorConfig, SystemClock};
use server::{FeedConfig, OrderFeed};
use store::{EmbeddedStore, OrderStore, PostgresStore};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{ApiArgs, Command};

pub async fn command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => orders_api(args, "rtap up").await,
        Command::Api(args) => orders_api(args, "rtap api").await,
    }
}

async fn open_store(args: &ApiArgs) -> anyhow::Result<Arc<dyn OrderStore>> {
    Ok(match &args.database_url {
        Some(url) => Arc::new(
            PostgresStore::connect(url)
                .await
                .context("cannot open the Postgres order store")?,
        ),
        None => {
            let path = args.common.data_dir.join("orders.redb");
            Arc::new(EmbeddedStore::open(&path).context("cannot open the embedded order store")?)
        }
    })
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops rtap");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn bind(args: &ApiArgs, port: u16, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let addr = SocketAddr::new(args.common.bind, port);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what} (is the port in use? choose another with --api-port)"))?;
    let local = listener.local_addr().context("listener has no address")?;
    Ok((listener, local))
}

async fn orders_api(args: ApiArgs, name: &str) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    let seed = args.generator.seed.unwrap_or_else(random_seed);
    let feed = Arc::new(
        OrderFeed::open(
            store.clone(),
            Arc::new(SystemClock),
            FeedConfig {
                generator: GeneratorConfig {
                    seed,
                    ..GeneratorConfig::default()
                },
                rate_per_sec: args.generator.rate,
                max_orders: args.generator.max_orders,
            },
        )
        .await
        .context("cannot read the order store")?,
    );
    let (listener, addr) = bind(&args, args.api_port, "orders API").await?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let rate = if args.generator.rate > 0.0 {
        format!("{} orders/s", args.generator.rate)
    } else {
        "as fast as possible".to_string()
    };
    println!(
        "{name}: orders API on http://{addr}  (store: {}; generator: {rate}, seed {seed})",
        store.describe()
    );
    println!("  try: curl 'http://{addr}/orders?page=1&limit=5'");
    println!("  stop with Ctrl-C");

    let generator = tokio::spawn(feed.clone().run(stop_rx.clone()));
    let app = server::orders_api::router(feed);
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|stop| *stop).await;
            })
            .await
    });

    stop_signal().await;
    tracing::info!("stopping: generator first, then HTTP");
    let _ = stop_tx.send(true);
    let made = generator.await.context("generator task failed")?;
    http.await
        .context("HTTP task failed")?
        .context("HTTP server failed")?;
    tracing::info!(orders_generated = made, "stopped cleanly");
    Ok(())
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
