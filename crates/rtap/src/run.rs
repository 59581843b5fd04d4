//! Building and running the stages of a command, and stopping them in order.
//!
//! `rtap up` wires: order store -> orders API and generator (:5001) -> (in-process hand-off) ->
//! ingest thread -> realtime table and rolling windows -> SQL engine -> analytics API (:8888). On Ctrl-C or SIGTERM
//! the generator stops first (its current batch is stored and handed over whole), then ingest
//! drains what it was handed and seals the table, then the HTTP servers finish their requests.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use ingest::{schema, DeadLetterStore, IngestConfig, Ingestor};
use orders::{GeneratorConfig, SystemClock};
use rolling::{WindowConfig, Windows};
use server::{FeedConfig, OrderFeed};
use sql::{SqlConfig, SqlEngine};
use store::{EmbeddedStore, OrderStore, PostgresStore};
use table::{RealtimeTable, TableConfig};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::cli::{ApiArgs, Command, QueryArgs, UpArgs};
use crate::pipeline::{IngestLoop, IngestStats};

/// Batches of stored orders waiting for ingest before the generator is made to wait.
const TAP_CAPACITY: usize = 256;

pub async fn command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => up(args).await,
        Command::Api(args) => orders_api_only(args).await,
        Command::Query(args) => query(args).await,
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

fn table_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("segments").join("orders")
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

async fn bind(
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

fn serve(
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

async fn open_feed(
    args: &ApiArgs,
    store: Arc<dyn OrderStore>,
    seed: u64,
) -> anyhow::Result<OrderFeed> {
    OrderFeed::open(
        store,
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
    .context("cannot read the order store")
}

fn rate_text(rate: f64) -> String {
    if rate > 0.0 {
        format!("{rate} orders/s")
    } else {
        "as fast as possible".to_string()
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let api = &args.api;
    let data_dir = &api.common.data_dir;
    let store = open_store(api).await?;
    let seed = api.generator.seed.unwrap_or_else(random_seed);

    let table = Arc::new(
        RealtimeTable::open(
            &table_dir(data_dir),
            schema::order_schema(),
            schema::TIME_MS,
            &[schema::ORDER_ID, "customer_id"],
            TableConfig::default(),
        )
        .with_context(|| {
            format!(
                "cannot open the realtime table under {}",
                data_dir.display()
            )
        })?,
    );
    let deadletters = DeadLetterStore::open(&data_dir.join("deadletter"))
        .context("cannot open the dead-letter store")?;
    let engine = Arc::new(
        SqlEngine::new(
            table.clone(),
            SqlConfig::default(),
            Arc::new(|| chrono::Utc::now().timestamp_millis()),
        )
        .context("cannot start the SQL engine")?,
    );

    let windows = Arc::new(std::sync::Mutex::new(
        Windows::new(WindowConfig::default()).context("bad window configuration")?,
    ));
    let live = Arc::new(server::overview::Live {
        windows: windows.clone(),
        now_ms: Arc::new(|| chrono::Utc::now().timestamp_millis()),
    });
    let (tap_tx, tap_rx) = mpsc::channel(TAP_CAPACITY);
    let feed = Arc::new(open_feed(api, store.clone(), seed).await?.with_tap(tap_tx));
    let stats = Arc::new(IngestStats::default());
    let ingest_stop = Arc::new(AtomicBool::new(false));
    let ingest_loop = IngestLoop {
        ingestor: Ingestor::new(IngestConfig::default()),
        table: table.clone(),
        windows,
        deadletters,
        stats: stats.clone(),
        stop: ingest_stop.clone(),
    };
    let runtime = tokio::runtime::Handle::current();
    let ingest_thread = std::thread::Builder::new()
        .name("rtap-ingest".into())
        .spawn(move || ingest_loop.run(tap_rx, runtime))
        .context("cannot start the ingest thread")?;

    let (api_listener, api_addr) =
        bind(api.common.bind, api.api_port, "orders API", "--api-port").await?;
    let (http_listener, http_addr) = bind(
        api.common.bind,
        args.http_port,
        "analytics API",
        "--http-port",
    )
    .await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let generator = tokio::spawn(feed.clone().run(stop_rx.clone()));
    let api_server = serve(
        api_listener,
        server::orders_api::router(feed),
        stop_rx.clone(),
    );
    let analytics = server::analytics::router(engine).merge(server::overview::router(live));
    let http_server = serve(http_listener, analytics, stop_rx.clone());

    println!(
        "rtap up: orders API on http://{api_addr}  (store: {}; generator: {}, seed {seed})",
        store.describe(),
        rate_text(api.generator.rate)
    );
    println!(
        "rtap up: analytics API and SQL on http://{http_addr}  (table: {} rows under {})",
        table.snapshot().rows(),
        data_dir.display()
    );
    println!("  try: curl 'http://{api_addr}/orders?page=1&limit=5'");
    println!("       curl 'http://{http_addr}/orders/ordersperminute'");
    println!("       rtap query \"SELECT COUNT(*) FROM orders WHERE time_ms > ago('PT1M')\"");
    println!("  stop with Ctrl-C");

    stop_signal().await;
    tracing::info!("stopping: generator, then ingest (sealing the table), then HTTP");
    let _ = stop_tx.send(true);
    let made = generator.await.context("generator task failed")?;
    ingest_stop.store(true, Ordering::Release);
    let joined = tokio::task::spawn_blocking(move || ingest_thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        tracing::error!("the ingest thread ended abnormally");
    }
    api_server
        .await
        .context("orders API task failed")?
        .context("orders API failed")?;
    http_server
        .await
        .context("analytics API task failed")?
        .context("analytics API failed")?;
    tracing::info!(
        orders_generated = made,
        rows_ingested = stats.rows.load(Ordering::Relaxed),
        dead_lettered = stats.rejected.load(Ordering::Relaxed),
        "stopped cleanly"
    );
    Ok(())
}

async fn orders_api_only(args: ApiArgs) -> anyhow::Result<()> {
    let store = open_store(&args).await?;
    let seed = args.generator.seed.unwrap_or_else(random_seed);
    let feed = Arc::new(open_feed(&args, store.clone(), seed).await?);
    let (listener, addr) =
        bind(args.common.bind, args.api_port, "orders API", "--api-port").await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    println!(
        "rtap api: orders API on http://{addr}  (store: {}; generator: {}, seed {seed})",
        store.describe(),
        rate_text(args.generator.rate)
    );
    println!("  try: curl 'http://{addr}/orders?page=1&limit=5'");
    println!("  stop with Ctrl-C");
    let generator = tokio::spawn(feed.clone().run(stop_rx.clone()));
    let http = serve(listener, server::orders_api::router(feed), stop_rx);
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

async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let response = if args.local {
        query_local(&args).await?
    } else {
        let url = format!(
            "http://{}/query/sql",
            SocketAddr::new(args.common.bind, args.http_port)
        );
        match reqwest::Client::new()
            .post(&url)
            .json(&serde_json::json!({"sql": args.sql}))
            .send()
            .await
        {
            Ok(resp) => resp
                .json::<serde_json::Value>()
                .await
                .with_context(|| format!("bad answer from {url}"))?,
            Err(e) if e.is_connect() => {
                tracing::info!(
                    "no rtap answers at {url}; reading the table under the data directory"
                );
                query_local(&args).await?
            }
            Err(e) => return Err(e).with_context(|| format!("cannot query {url}")),
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else {
        print_table(&response);
    }
    match response["exceptions"].as_array() {
        Some(errors) if !errors.is_empty() => {
            let messages: Vec<String> = errors
                .iter()
                .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                .collect();
            anyhow::bail!("{}", messages.join("; "))
        }
        _ => Ok(()),
    }
}

async fn query_local(args: &QueryArgs) -> anyhow::Result<serde_json::Value> {
    let dir = table_dir(&args.common.data_dir);
    if !dir.join(table::manifest::FILE_NAME).exists() {
        anyhow::bail!(
            "no rtap answers on port {} and there is no table under {} (start one with `rtap up`)",
            args.http_port,
            args.common.data_dir.display()
        );
    }
    let table = Arc::new(
        RealtimeTable::open_read_only(&dir, schema::order_schema(), schema::TIME_MS)
            .with_context(|| format!("cannot read the table under {}", dir.display()))?,
    );
    let engine = SqlEngine::new(
        table,
        SqlConfig::default(),
        Arc::new(|| chrono::Utc::now().timestamp_millis()),
    )
    .context("cannot start the SQL engine")?;
    Ok(engine.query_pinot(&args.sql).await)
}

fn print_table(response: &serde_json::Value) {
    let table = &response["resultTable"];
    let names: Vec<String> = table["dataSchema"]["columnNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = table["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map(|cells| {
                            cells
                                .iter()
                                .map(|c| match c {
                                    serde_json::Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let widths: Vec<usize> = (0..names.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(names[i].chars().count())
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    println!("{}", line(&names));
    println!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    );
    for r in &rows {
        println!("{}", line(r));
    }
    println!(
        "({} rows, {} ms, {} of {} rows scanned)",
        rows.len(),
        response["timeUsedMs"],
        response["numDocsScanned"],
        response["totalDocs"]
    );
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
