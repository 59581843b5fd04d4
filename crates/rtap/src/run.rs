//! Building and running the stages of a command, and stopping them in order.
//!
//! `rtap up` wires: order store -> orders API and generator (:5001) -> (in-process hand-off) ->
//! ingest thread -> realtime table and rolling windows -> SQL engine -> analytics API (:8888).
//! It starts from the last checkpoint (table segments, windows, dedup, source position) and
//! first replays the stored orders after that position, so a crash loses and doubles nothing.
//! On Ctrl-C or SIGTERM the generator stops first (its current batch is stored and handed over
//! whole), then ingest drains what it was handed, seals the table and checkpoints, then the
//! HTTP servers finish their requests.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use checkpoint::{Checkpointer, Restored, SourcePosition};
use ingest::{schema, DeadLetterStore, IngestConfig, Ingestor};
use orders::{GeneratorConfig, SystemClock};
use rolling::{WindowConfig, Windows};
use server::{FeedConfig, OrderFeed};
use sql::{SqlConfig, SqlEngine};
use store::{EmbeddedStore, OrderStore, PostgresStore};
use table::{RealtimeTable, TableConfig};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::cli::{ApiArgs, Command, QueryArgs, ServeArgs, UpArgs};
use crate::pipeline::{IngestLoop, IngestStats, Sinks};

/// Batches of stored orders waiting for ingest before the generator is made to wait.
const TAP_CAPACITY: usize = 256;

pub async fn command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => up(args).await,
        Command::Serve(args) => serve_kafka(args).await,
        Command::Produce(args) => crate::produce::command(args).await,
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
pub(crate) async fn stop_signal() {
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

/// How to get out of a corrupt data directory (the source is the source of truth).
fn recovery_hint(data_dir: &Path, origin: &str) -> String {
    format!(
        "rtap will not start on it rather than serve wrong numbers. To recover, move {cp}, \
         {dedup} and {seg} aside (keep them for inspection); the next `rtap up` rebuilds the \
         table, windows and dedup state from {origin}.",
        cp = data_dir.join(checkpoint::FILE_NAME).display(),
        dedup = data_dir.join("dedup").display(),
        seg = table_dir(data_dir).display(),
    )
}

/// The state `up` resumes from: the last checkpoint's, or an empty table.
struct Resumed {
    table: Arc<RealtimeTable>,
    windows: Windows,
    ingestor: Ingestor,
    deadletters: DeadLetterStore,
    checkpoints: Checkpointer,
    source: SourcePosition,
}

fn resume(
    data_dir: &Path,
    origin: &str,
    table_config: TableConfig,
    source_kind: &str,
) -> anyhow::Result<Resumed> {
    let (checkpoints, restored) = Checkpointer::open(data_dir)
        .map_err(|e| anyhow::anyhow!("{e}\n{}", recovery_hint(data_dir, origin)))?;
    if let Some(r) = &restored {
        if r.checkpoint.source.kind != source_kind {
            anyhow::bail!(
                "the data under {} was ingested from the {} source, this run reads from the {source_kind} \
                 source: mixing them would count orders twice. Use another --data-dir.",
                data_dir.display(),
                r.checkpoint.source.kind
            );
        }
    }
    let (manifest, windows, dedup, deadletter_bytes, source) = match restored {
        Some(Restored { checkpoint, dedup }) => (
            checkpoint.manifest,
            Windows::restore(&checkpoint.windows).context("bad window state in the checkpoint")?,
            dedup,
            checkpoint.deadletter_bytes,
            checkpoint.source,
        ),
        None => {
            if table_dir(data_dir)
                .join(table::manifest::FILE_NAME)
                .exists()
            {
                tracing::warn!(
                    "no checkpoint under {}: starting the table empty and rebuilding it from the order store",
                    data_dir.display()
                );
            }
            (
                table::Manifest {
                    version: 1,
                    ..table::Manifest::default()
                },
                Windows::new(WindowConfig::default()).context("bad window configuration")?,
                Vec::new(),
                0,
                SourcePosition {
                    kind: source_kind.into(),
                    ..SourcePosition::default()
                },
            )
        }
    };
    let table = RealtimeTable::open_at(
        &table_dir(data_dir),
        schema::order_schema(),
        schema::TIME_MS,
        &[schema::ORDER_ID, "customer_id"],
        table_config,
        manifest,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot open the realtime table under {}: {e}\n{}",
            data_dir.display(),
            recovery_hint(data_dir, origin)
        )
    })?;
    let mut ingestor = Ingestor::new(IngestConfig::default());
    ingestor.dedup_mut().restore(dedup);
    let deadletters =
        DeadLetterStore::open_at(&data_dir.join("deadletter"), Some(deadletter_bytes))
            .context("cannot open the dead-letter store")?;
    Ok(Resumed {
        table: Arc::new(table),
        windows,
        ingestor,
        deadletters,
        checkpoints,
        source,
    })
}

/// What runs in front of ingest.
enum Front {
    /// The orders API with its generator, handing stored orders to ingest in process.
    Embedded,
    /// The orders API with its generator, producing to Kafka; ingest consumes the topic.
    EmbeddedViaKafka(kafka::KafkaConfig),
    /// Only the Kafka consumer (`rtap serve`).
    Kafka(kafka::KafkaConfig),
}

/// Settings of one pipeline run (`up` or `serve`).
struct Pipeline<'a> {
    command: &'static str,
    data_dir: &'a Path,
    bind: IpAddr,
    http_port: u16,
    dashboard_port: u16,
    checkpoint_interval: f64,
    api: Option<&'a ApiArgs>,
    front: Front,
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let front = match args.pipeline.kafka.config() {
        Some(k) => Front::EmbeddedViaKafka(k),
        None => Front::Embedded,
    };
    run_pipeline(Pipeline {
        command: "up",
        data_dir: &args.api.common.data_dir,
        bind: args.api.common.bind,
        http_port: args.pipeline.http_port,
        dashboard_port: args.pipeline.dashboard_port,
        checkpoint_interval: args.pipeline.checkpoint_interval,
        api: Some(&args.api),
        front,
    })
    .await
}

async fn serve_kafka(args: ServeArgs) -> anyhow::Result<()> {
    let Some(k) = args.pipeline.kafka.config() else {
        anyhow::bail!("rtap serve reads from Kafka: give the brokers with --kafka host:port");
    };
    run_pipeline(Pipeline {
        command: "serve",
        data_dir: &args.common.data_dir,
        bind: args.common.bind,
        http_port: args.pipeline.http_port,
        dashboard_port: args.pipeline.dashboard_port,
        checkpoint_interval: args.pipeline.checkpoint_interval,
        api: None,
        front: Front::Kafka(k),
    })
    .await
}

async fn run_pipeline(p: Pipeline<'_>) -> anyhow::Result<()> {
    let data_dir = p.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let store = match p.api {
        Some(api) => Some(open_store(api).await?),
        None => None,
    };
    let kafka_config = match &p.front {
        Front::Embedded => None,
        Front::EmbeddedViaKafka(k) | Front::Kafka(k) => {
            // One data directory is one member of the group, across restarts.
            let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
            let id = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                dir.hash(&mut h);
                format!("rtap-{:016x}", h.finish())
            };
            Some(kafka::KafkaConfig {
                instance_id: Some(id),
                ..k.clone()
            })
        }
    };
    let source_kind = if kafka_config.is_some() {
        "kafka"
    } else {
        "generator"
    };
    let restore_started = std::time::Instant::now();
    let table_config = TableConfig {
        seal_after_secs: p.checkpoint_interval,
        ..TableConfig::default()
    };
    let resumed = {
        let dir = data_dir.to_path_buf();
        let origin = match (&store, &kafka_config) {
            (_, Some(k)) => format!("Kafka topic {} on {}", k.topic, k.brokers),
            (Some(s), None) => format!("the order store ({})", s.describe()),
            (None, None) => "the source".to_string(),
        };
        tokio::task::spawn_blocking(move || resume(&dir, &origin, table_config, source_kind))
            .await
            .context("restoring the checkpoint failed")??
    };
    let Resumed {
        table,
        windows,
        ingestor,
        deadletters,
        checkpoints,
        mut source,
    } = resumed;
    if let Some(k) = &kafka_config {
        source.topic = Some(k.topic.clone());
    }
    tracing::info!(
        rows = table.snapshot().rows(),
        position = ?source.next,
        ms = restore_started.elapsed().as_millis() as u64,
        "restored the last checkpoint"
    );

    let engine = Arc::new(
        SqlEngine::new(
            table.clone(),
            SqlConfig::default(),
            Arc::new(|| chrono::Utc::now().timestamp_millis()),
        )
        .context("cannot start the SQL engine")?,
    );
    let windows = Arc::new(std::sync::Mutex::new(windows));
    let live = Arc::new(server::overview::Live {
        windows: windows.clone(),
        now_ms: Arc::new(|| chrono::Utc::now().timestamp_millis()),
    });
    let (source_tx, source_rx) = mpsc::channel(TAP_CAPACITY);
    let (stop_tx, stop_rx) = watch::channel(false);

    // The front: orders API + generator (+ producer), and/or the Kafka consumer.
    let mut feed = None;
    let mut generator = None;
    let generator_running = Arc::new(AtomicBool::new(false));
    let generator_restarts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut producer = None;
    if let (Some(api), Some(store)) = (p.api, &store) {
        let seed = api
            .generator
            .seed
            .or(source.seed)
            .unwrap_or_else(random_seed);
        source.seed = Some(seed);
        let stored = store.count().await.context("cannot read the order store")?;
        let (tap_tx, tap_rx) = mpsc::channel(TAP_CAPACITY);
        let resume_seq = if let Some(k) = &kafka_config {
            kafka::admin::ensure_topic(k, std::time::Duration::from_secs(30))
                .await
                .with_context(|| format!("cannot create topic {} on {}", k.topic, k.brokers))?;
            let handoff = crate::produce::Handoff::start(k, data_dir, tap_rx)?;
            let from = handoff.resume_seq();
            producer = Some(handoff);
            from
        } else {
            tokio::spawn(forward_tap(tap_rx, source_tx.clone()));
            source.next.get(&0).copied().unwrap_or(1).max(1) as u64
        };
        if resume_seq > stored + 1 {
            anyhow::bail!(
                "the data under {} has taken {} orders but the order store ({}) holds only {stored}: \
                 they do not belong together. Use the data directory that goes with this store, \
                 or move {} and {} aside to rebuild the table from this store.",
                data_dir.display(),
                resume_seq - 1,
                store.describe(),
                data_dir.join(checkpoint::FILE_NAME).display(),
                table_dir(data_dir).display()
            );
        }
        let f = Arc::new(open_feed(api, store.clone(), seed).await?.with_tap(tap_tx));
        generator = Some({
            let feed = f.clone();
            let mut stop = stop_rx.clone();
            let running = generator_running.clone();
            let restarts = generator_restarts.clone();
            running.store(true, Ordering::Relaxed);
            tokio::spawn(async move {
                let _running = RunningFlag(running);
                // Stored orders not yet handed on (ingested, or produced) go first.
                match feed.replay(resume_seq, &mut stop).await {
                    Some(0) => {}
                    Some(n) => {
                        tracing::info!(orders = n, from_seq = resume_seq, "replayed stored orders")
                    }
                    None => return 0,
                }
                // The job is supervised: if it fails (panics), it is restarted with backoff
                // and the restart shows in /api/status.
                let mut backoff = std::time::Duration::from_secs(1);
                loop {
                    match tokio::spawn(feed.clone().run(stop.clone())).await {
                        Ok(n) => return n,
                        Err(e) if e.is_panic() && !*stop.borrow() => {
                            restarts.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                retry_in_s = backoff.as_secs(),
                                "the generator failed; restarting it"
                            );
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = stop.wait_for(|s| *s) => return 0,
                            }
                            backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                        }
                        Err(_) => return 0,
                    }
                }
            })
        });
        feed = Some(f);
    }
    let kafka_source = match &kafka_config {
        Some(k) => Some(
            kafka::source::start(k, source_tx.clone())
                .with_context(|| format!("cannot consume {} from {}", k.topic, k.brokers))?,
        ),
        None => None,
    };
    drop(source_tx);

    let stats = Arc::new(IngestStats::default());
    let ingest_stop = Arc::new(AtomicBool::new(false));
    let mut ingest_loop = IngestLoop::new(
        ingestor,
        Sinks {
            table: table.clone(),
            windows,
            deadletters,
            checkpoints,
        },
        source,
        stats.clone(),
        ingest_stop.clone(),
    );
    if let Some(src) = &kafka_source {
        let commits = std::sync::Mutex::new(src.commits.clone());
        ingest_loop = ingest_loop.on_checkpoint(move |offsets| {
            if let Ok(c) = commits.lock() {
                let _ = c.send(offsets.clone());
            }
        });
    }
    let runtime = tokio::runtime::Handle::current();
    let ingest_thread = std::thread::Builder::new()
        .name("rtap-ingest".into())
        .spawn(move || ingest_loop.run(source_rx, runtime))
        .context("cannot start the ingest thread")?;

    let mut api_server = None;
    if let (Some(api), Some(feed)) = (p.api, &feed) {
        let (listener, addr) = bind(p.bind, api.api_port, "orders API", "--api-port").await?;
        api_server = Some(serve(
            listener,
            server::orders_api::router(feed.clone()),
            stop_rx.clone(),
        ));
        let store = store.as_ref().map(|s| s.describe()).unwrap_or_default();
        let via = match &kafka_config {
            Some(k) => format!("; producing to {} on {}", k.topic, k.brokers),
            None => String::new(),
        };
        println!(
            "rtap {}: orders API on http://{addr}  (store: {store}; generator: {}, seed {}{via})",
            p.command,
            rate_text(api.generator.rate),
            feed.seed()
        );
    }
    let parts = Arc::new(crate::status::Parts {
        stats: stats.clone(),
        table: table.clone(),
        windows: live.windows.clone(),
        feed: feed.clone(),
        store: store.as_ref().map(|s| s.describe()),
        kafka: match (&kafka_config, &kafka_source) {
            (Some(k), Some(src)) => Some((k.clone(), src.status.clone())),
            _ => None,
        },
        producer: producer.as_ref().map(|h| h.producer.clone()),
        generator_running: generator_running.clone(),
        generator_restarts: generator_restarts.clone(),
        rate_sample: std::sync::Mutex::new((std::time::Instant::now(), 0, 0.0)),
    });
    let telemetry = {
        let parts = parts.clone();
        server::status::Telemetry::new(move || parts.report())
    };
    let (http_listener, http_addr) =
        bind(p.bind, p.http_port, "analytics API", "--http-port").await?;
    let analytics = server::status::measured(
        server::analytics::router(engine.clone())
            .merge(server::overview::router(live.clone()))
            .merge(server::status::router(telemetry.clone())),
        telemetry.clone(),
    );
    let http_server = serve(http_listener, analytics, stop_rx.clone());
    let (dash_listener, dash_addr) =
        bind(p.bind, p.dashboard_port, "dashboard", "--dashboard-port").await?;
    let dashboard = server::status::measured(
        server::dashboard::router(Arc::new(server::dashboard::Dashboard {
            engine,
            live,
            stop: stop_rx.clone(),
        }))
        .merge(server::status::router(telemetry.clone())),
        telemetry,
    );
    let dash_server = serve(dash_listener, dashboard, stop_rx.clone());
    let from = match &kafka_config {
        Some(k) => format!(
            ", consuming {} on {} as group {}",
            k.topic, k.brokers, k.group
        ),
        None => String::new(),
    };
    println!(
        "rtap {}: analytics API and SQL on http://{http_addr}  (table: {} rows under {}{from})",
        p.command,
        table.snapshot().rows(),
        data_dir.display()
    );
    println!(
        "rtap {}: dashboard on http://{dash_addr}  (live; status at /api/status, metrics at /metrics)",
        p.command
    );
    println!("  try: curl 'http://{http_addr}/orders/ordersperminute'");
    println!("       rtap query \"SELECT COUNT(*) FROM orders WHERE time_ms > ago('PT1M')\"");
    println!("  stop with Ctrl-C");

    let summary = tokio::spawn(live_summary(parts.clone(), stop_rx.clone()));
    stop_signal().await;
    tracing::info!("stopping: generator, then the producer and consumer, then ingest (sealing and checkpointing), then HTTP");
    let _ = stop_tx.send(true);
    let made = match generator {
        Some(g) => g.await.context("generator task failed")?,
        None => 0,
    };
    drop(feed);
    if let Some(handoff) = producer {
        tokio::task::spawn_blocking(move || handoff.finish())
            .await
            .context("producer task failed")?;
    }
    let kafka_source = match kafka_source {
        Some(src) => Some(
            tokio::task::spawn_blocking(move || {
                src.stop_polling();
                src
            })
            .await
            .context("Kafka source task failed")?,
        ),
        None => None,
    };
    ingest_stop.store(true, Ordering::Release);
    let joined = tokio::task::spawn_blocking(move || ingest_thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        tracing::error!("the ingest thread ended abnormally");
    }
    if let Some(src) = kafka_source {
        let _ = tokio::task::spawn_blocking(move || src.join()).await;
    }
    if let Some(a) = api_server {
        a.await
            .context("orders API task failed")?
            .context("orders API failed")?;
    }
    http_server
        .await
        .context("analytics API task failed")?
        .context("analytics API failed")?;
    dash_server
        .await
        .context("dashboard task failed")?
        .context("dashboard failed")?;
    let _ = summary.await;
    tracing::info!(
        orders_generated = made,
        rows_ingested = stats.rows.load(Ordering::Relaxed),
        dead_lettered = stats.rejected.load(Ordering::Relaxed),
        "stopped cleanly"
    );
    Ok(())
}

/// Clears a "running" flag when dropped (the task ended, however it ended).
struct RunningFlag(Arc<AtomicBool>);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// The one-line live summary: rewritten in place on a terminal, a log line every 10 s otherwise.
async fn live_summary(parts: Arc<crate::status::Parts>, mut stop: watch::Receiver<bool>) {
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

/// Hands the orders API's stored batches to ingest as source messages (partition 0, offset =
/// sequence number).
async fn forward_tap(
    mut tap: mpsc::Receiver<server::TapBatch>,
    ingest: mpsc::Sender<ingest::SourceEvent>,
) {
    while let Some(batch) = tap.recv().await {
        let messages = batch
            .into_iter()
            .map(|(seq, json)| ingest::OwnedMessage {
                position: ingest::Position {
                    partition: 0,
                    offset: seq as i64,
                },
                payload: json.into_bytes(),
                record_time_ms: None,
            })
            .collect();
        if ingest
            .send(ingest::SourceEvent::Batch(messages))
            .await
            .is_err()
        {
            return;
        }
    }
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

pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
