//! The composition root: [`start`] builds the running pipeline of `rtap up` or `rtap serve` from
//! one [`RtapConfig`] and one clock, and [`Running::shutdown`] stops it in the documented order.
//!
//! ```text
//!  orders API + generator ──tap──► embedded source ─┐
//!  (store: embedded / Postgres)  └─► producer ─► Kafka topic ─► Kafka source ─┤
//!                                                                             ▼
//!                       ingest loop (thread): decode, dedup, dead letters ─► table ─► SQL ─► :8888, :8501
//!                                                                      └─► windows ──────┘
//!                       checkpoint protocol: manifest + windows + dedup + position, one rename
//! ```
//!
//! Stop order (why it matters): the generator and the orders API first, so nothing new is
//! stored; then the producer flushes what it was handed; then the source stops handing over;
//! then ingest drains what it holds, seals the table and writes the last checkpoint; only then
//! may the Kafka source commit that checkpoint's offsets and leave the group; the analytics API
//! and dashboard go last, so they answer until the data stops moving.

mod front;
pub mod http;
pub mod ingest_loop;
#[cfg(test)]
mod ingest_tests;
pub mod resume;
pub mod status;
pub mod supervise;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clock::SharedClock;
use ingest::IngestMetrics;
use prometheus_client::registry::Registry;
use server::listen::{ConnectionCollector, ConnectionStats};
use sources::embedded::EmbeddedSource;
use sources::feed::GeneratorJob;
use sources::kafka::handoff::Handoff;
use sources::metrics::SourceMetrics;
use sources::{OrderFeed, Source};
use sql::SqlEngine;
use store::OrderStore;
use tokio::sync::{mpsc, watch};

use crate::config::RtapConfig;
pub use front::{open_feed, open_store, rate_text, start_retention};
use ingest_loop::{IngestHealth, IngestLoop, LoopParts, Sinks};
use status::{GeneratorFlags, Parts};

/// Batches of stored orders (2,000 orders, from the generator or when replaying the store at start)
/// that may wait for the hand-over to ingest (or to the Kafka producer) before the generator
/// waits. Kept small: this channel is bounded by count only; what ingest has been handed is
/// bounded by bytes (`ingest.max_pending_bytes`), what the producer holds by its queue.
const TAP_CAPACITY: usize = 4;
/// Source events waiting for the ingest loop (their payload bytes hold a share of
/// `ingest.max_pending_bytes`, so the count only bounds small batches).
const SOURCE_CAPACITY: usize = 256;

/// Which command's pipeline to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Orders API + generator in front (`rtap up`), handing orders over in process or through
    /// Kafka.
    Up,
    /// Only the Kafka consumer in front (`rtap serve`).
    Serve,
}

/// The front of `rtap up`: the orders API's feed and its generator job.
struct Front {
    feed: Arc<OrderFeed>,
    store: Arc<dyn OrderStore>,
    job: GeneratorJob,
    /// The order store's retention task (ends on the same stop signal as the job).
    retention: tokio::task::JoinHandle<u64>,
    handoff: Option<Handoff>,
}

/// A running pipeline.
pub struct Running {
    pub api_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    pub dashboard_addr: SocketAddr,
    config: RtapConfig,
    mode: Mode,
    front: Option<Front>,
    source: Arc<dyn Source>,
    parts: Arc<Parts>,
    front_stop: watch::Sender<bool>,
    http_stop: watch::Sender<bool>,
    ingest_stop: Arc<AtomicBool>,
    ingest_thread: std::thread::JoinHandle<()>,
    api_server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    http_server: tokio::task::JoinHandle<std::io::Result<()>>,
    dash_server: tokio::task::JoinHandle<std::io::Result<()>>,
    summary: tokio::task::JoinHandle<()>,
    /// The consumer group ingest reads in (with `--replica`, this instance's own).
    group: Option<String>,
}

/// How often the `--olap` broker's health is checked.
const OLAP_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Builds and starts every stage of `mode` from `config`. `restarts`: how many times the
/// supervisor restarted the pipeline before (shown in `/api/status`).
pub async fn start(
    config: &RtapConfig,
    mode: Mode,
    clock: SharedClock,
    restarts: u64,
) -> anyhow::Result<Running> {
    let data_dir = config.data_dir.as_path();
    http::warn_if_open(config);
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let kafka = config.kafka();
    if mode == Mode::Serve && kafka.is_none() {
        anyhow::bail!("rtap serve reads from Kafka: give the brokers with --kafka host:port");
    }
    let store = match mode {
        Mode::Up => Some(open_store(config).await?),
        Mode::Serve => None,
    };
    let kafka = match kafka {
        Some(mut k) => {
            if k.instance_id.is_none() {
                k.instance_id = Some(
                    sources::kafka::persistent_instance_id(data_dir)
                        .context("cannot set up the consumer's instance id")?,
                );
            }
            if config.kafka.replica {
                // A group of its own, the same across restarts (the id is kept in the data
                // directory, or given): it reads every partition and resumes from its commits.
                let id = match k.instance_id.as_deref().filter(|id| !id.is_empty()) {
                    Some(id) => id.to_string(),
                    None => sources::kafka::persistent_instance_id(data_dir)
                        .context("cannot set up the replica's instance id")?,
                };
                k.group = format!("{}-replica-{id}", k.group);
            }
            Some(k)
        }
        None => None,
    };
    let source_kind = if kafka.is_some() {
        "kafka"
    } else {
        "generator"
    };
    let origin = match (&store, &kafka) {
        (_, Some(k)) => format!("Kafka topic {} on {}", k.topic, k.brokers),
        (Some(s), None) => format!("the order store ({})", s.describe()),
        (None, None) => "the source".to_string(),
    };
    let restore_started = std::time::Instant::now();
    let checkpoint_metrics = checkpoint::CheckpointMetrics::default();
    let resumed = {
        let config = config.clone();
        let clock = clock.clone();
        let metrics = checkpoint_metrics.clone();
        let topic = kafka.as_ref().map(|k| k.topic.clone());
        tokio::task::spawn_blocking(move || {
            resume::resume(
                &config,
                &origin,
                (source_kind, topic.as_deref()),
                clock,
                metrics,
            )
        })
        .await
        .context("restoring the checkpoint failed")??
    };
    let resume::Resumed {
        table,
        windows,
        ingestor,
        deadletters,
        protocol,
        source: mut position,
    } = resumed;
    if let Some(k) = &kafka {
        position.topic = Some(k.topic.clone());
    }
    tracing::info!(
        rows = table.snapshot().rows(),
        position = ?position.next,
        ms = restore_started.elapsed().as_millis() as u64,
        "restored the last checkpoint"
    );

    let engine = Arc::new(
        SqlEngine::new(table.clone(), config.sql, clock.clone())
            .context("cannot start the SQL engine")?,
    );
    let windows = Arc::new(Mutex::new(windows));
    let recent = Arc::new(server::recent::RecentAnswers::new(
        rolling::Recent::default().with_retention(Some(config.table.retention_ms)),
    ));
    // Before ingest starts, so the rebuild and the rows ingest adds do not overlap.
    let rebuild_started = std::time::Instant::now();
    match server::recent::rebuild(&engine, &recent, clock.now_ms()).await {
        Ok(()) => tracing::info!(
            ms = rebuild_started.elapsed().as_millis() as u64,
            "rebuilt the recent answers from the table"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot rebuild the recent answers from the table; the fixed endpoints answer from SQL"
        ),
    }
    let live = Arc::new(server::overview::Live {
        windows: windows.clone(),
        clock: clock.clone(),
        recent: Some(recent.clone()),
    });
    let (source_tx, source_rx) = mpsc::channel(SOURCE_CAPACITY);
    let (front_stop, front_stop_rx) = watch::channel(false);
    let (http_stop, http_stop_rx) = watch::channel(false);
    let source_metrics = SourceMetrics::default();
    let budget = ingest::ByteBudget::new(config.ingest.max_pending_bytes);

    // The front: orders API + generator (+ producer), and the source ingest reads.
    let mut front = None;
    let mut embedded = None;
    if let Some(store) = &store {
        let seed = config
            .generator
            .seed
            .or(position.seed)
            .unwrap_or_else(crate::signals::random_seed);
        position.seed = Some(seed);
        let stored = store.count().await.context("cannot read the order store")?;
        let (tap_tx, tap_rx) = mpsc::channel(TAP_CAPACITY);
        let mut handoff = None;
        let mut tap_rx = Some(tap_rx);
        let resume_seq = match (&kafka, tap_rx.take()) {
            (Some(k), Some(rx)) => {
                sources::kafka::admin::ensure_topic(k, std::time::Duration::from_secs(30))
                    .await
                    .with_context(|| format!("cannot create topic {} on {}", k.topic, k.brokers))?;
                let h = Handoff::start(k, data_dir, rx).context("cannot start the producer")?;
                let from = h.resume_seq();
                handoff = Some(h);
                from
            }
            (_, rx) => {
                tap_rx = rx;
                position.next.get(&0).copied().unwrap_or(1).max(1) as u64
            }
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
                resume::table_dir(data_dir).display()
            );
        }
        let feed = Arc::new(
            open_feed(config, store.clone(), seed, clock.clone())
                .await?
                .with_tap(tap_tx),
        );
        if let Some(rx) = tap_rx {
            embedded = Some(EmbeddedSource::start(
                feed.clone(),
                rx,
                source_tx.clone(),
                budget.clone(),
            ));
        }
        let job = feed.clone().start_job(resume_seq, front_stop_rx.clone());
        let retention =
            start_retention(config, store.clone(), clock.clone(), front_stop_rx.clone());
        front = Some(Front {
            feed,
            store: store.clone(),
            job,
            retention,
            handoff,
        });
    }
    let source: Arc<dyn Source> = match (&kafka, embedded) {
        (Some(k), _) => Arc::new(
            sources::kafka::consumer::start(k, source_tx.clone(), budget.clone(), &source_metrics)
                .with_context(|| format!("cannot consume {} from {}", k.topic, k.brokers))?,
        ),
        (None, Some(e)) => Arc::new(e),
        (None, None) => anyhow::bail!("nothing to read orders from"),
    };
    drop(source_tx);

    let ingest_metrics = IngestMetrics::default();
    let health = Arc::new(IngestHealth::default());
    let ingest_stop = Arc::new(AtomicBool::new(false));
    let ingest_loop = IngestLoop::new(
        Sinks {
            table: table.clone(),
            windows: windows.clone(),
            recent,
            deadletters,
            protocol,
        },
        LoopParts {
            ingestor,
            source: position,
            metrics: ingest_metrics.clone(),
            health: health.clone(),
            stop: ingest_stop.clone(),
            clock: clock.clone(),
            on_checkpoint: sources::Source::on_checkpoint(source.as_ref()),
            max_batch_bytes: config.ingest.max_batch_bytes,
            checkpoint_every: std::time::Duration::from_secs_f64(config.table.seal_after_secs),
            panic_at_rows: ingest_loop::fault_at_rows(),
        },
    );
    let runtime = tokio::runtime::Handle::current();
    let ingest_thread = {
        let health = health.clone();
        std::thread::Builder::new()
            .name("rtap-ingest".into())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| ingest_loop.run(source_rx, runtime));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    if let Ok(mut f) = health.failed.lock() {
                        *f = Some(format!("the ingest thread panicked: {what}"));
                    }
                }
            })
            .context("cannot start the ingest thread")?
    };

    let mut api_server = None;
    let mut api_addr = None;
    let connections: Vec<(&'static str, Arc<ConnectionStats>)> = ["api", "http", "dashboard"]
        .into_iter()
        .map(|port| (port, Arc::new(ConnectionStats::default())))
        .collect();
    if let Some(f) = &front {
        let (addr, server) = http::orders_api(
            config,
            f.feed.clone(),
            connections[0].1.clone(),
            front_stop_rx.clone(),
        )
        .await?;
        api_server = Some(server);
        api_addr = Some(addr);
    }
    // `--olap`: the endpoints' SQL goes to a Pinot broker (checked every few seconds).
    let olap = match &config.olap.broker {
        Some(spec) => Some(Arc::new(
            server::olap::PinotBroker::new(
                spec,
                server::olap::BrokerLimits {
                    // An answer is bounded like rtap's own (`sql.max_response_bytes`).
                    max_answer_bytes: config.sql.max_response_bytes,
                    ..server::olap::BrokerLimits::with_timeout(std::time::Duration::from_millis(
                        config.olap.timeout_ms,
                    ))
                },
            )
            .map_err(|e| anyhow::anyhow!("olap.broker: {e}"))?,
        )),
        None => None,
    };
    let parts = Arc::new(Parts {
        metrics: ingest_metrics.clone(),
        checkpoints: checkpoint_metrics.clone(),
        health,
        table: table.clone(),
        windows: windows.clone(),
        feed: front.as_ref().map(|f| f.feed.clone()),
        store: front.as_ref().map(|f| f.store.describe()),
        source: source.clone(),
        producer: front
            .as_ref()
            .and_then(|f| f.handoff.as_ref())
            .map(|h| h.producer.clone()),
        generator: front.as_ref().map(|f| GeneratorFlags {
            running: f.job.running(),
            finished: f.job.finished(),
            restarts: f.job.restarts(),
        }),
        restarts,
        olap: olap.clone(),
    });
    let mut registry = Registry::default();
    ingest_metrics.register(&mut registry);
    checkpoint_metrics.register(&mut registry);
    registry.register_collector(Box::new(table::metrics::TableCollector(table.clone())));
    registry.register_collector(Box::new(table::metrics::ColumnCacheCollector(
        engine.column_cache(),
    )));
    registry.register_collector(Box::new(status::LagCollector(parts.clone())));
    if let Some(f) = &front {
        registry.register_collector(Box::new(sources::metrics::FeedCollector(f.feed.clone())));
        if let Some(h) = &f.handoff {
            registry.register_collector(Box::new(sources::metrics::ProducerCollector(
                h.producer.clone(),
            )));
        }
    }
    if kafka.is_some() {
        source_metrics.register_kafka(&mut registry);
    }
    // Instances in one consumer group each hold their partitions only: every answer says so.
    let coverage: server::status::CoverageFn = {
        let source = source.clone();
        Arc::new(move || source.coverage())
    };
    let board = server::dashboard::Dashboard::new(
        engine.clone(),
        live.clone(),
        http_stop_rx.clone(),
        config.http.max_viewers,
        Some(coverage.clone()),
        olap.clone(),
    );
    board.register(&mut registry);
    let connection_stats = |port: usize| connections[port].1.clone();
    let (http_stats, dash_stats) = (connection_stats(1), connection_stats(2));
    registry.register_collector(Box::new(ConnectionCollector(if front.is_some() {
        connections.clone()
    } else {
        connections[1..].to_vec()
    })));
    let telemetry = {
        let parts = parts.clone();
        server::status::Telemetry::new(move || parts.report(), registry)
    };
    let (http_listener, http_addr) = http::bind(
        config.http.bind,
        config.http.http_port,
        "analytics API",
        "--http-port",
    )
    .await?;
    let analytics = server::status::measured(
        server::status::covered(
            server::analytics::router(engine.clone(), live.recent.clone(), olap.clone())
                .merge(server::overview::router(live.clone()))
                .merge(server::status::router(telemetry.clone())),
            coverage.clone(),
        ),
        telemetry.clone(),
    );
    let http_server = http::serve(
        config,
        http_listener,
        analytics,
        http_stats,
        http_stop_rx.clone(),
    );
    let (dash_listener, dashboard_addr) = http::bind(
        config.http.bind,
        config.http.dashboard_port,
        "dashboard",
        "--dashboard-port",
    )
    .await?;
    let dashboard = server::status::measured(
        server::status::covered(
            server::dashboard::router(board.clone())
                .merge(server::status::router(telemetry.clone())),
            coverage,
        ),
        telemetry,
    );
    board.spawn_refresher();
    let dash_server = http::serve(
        config,
        dash_listener,
        dashboard,
        dash_stats,
        http_stop_rx.clone(),
    );
    if let Some(broker) = &olap {
        broker.spawn_checks(OLAP_CHECK_EVERY, http_stop_rx.clone());
    }
    let summary = tokio::spawn(http::live_summary(parts.clone(), http_stop_rx));
    Ok(Running {
        api_addr,
        http_addr,
        dashboard_addr,
        config: config.clone(),
        mode,
        front,
        source,
        parts,
        front_stop,
        http_stop,
        ingest_stop,
        ingest_thread,
        api_server,
        http_server,
        dash_server,
        summary,
        group: kafka.as_ref().map(|k| k.group.clone()),
    })
}

impl Running {
    /// The configuration it runs with, ports as bound (a restart binds the same ones).
    pub fn bound_config(&self) -> RtapConfig {
        let mut c = self.config.clone();
        if let Some(a) = self.api_addr {
            c.http.api_port = a.port();
        }
        c.http.http_port = self.http_addr.port();
        c.http.dashboard_port = self.dashboard_addr.port();
        c
    }

    /// Resolves when the pipeline can no longer go on exactly (the ingest thread died, or the
    /// source lost partitions without a checkpoint), with the reason. The supervisor then
    /// restarts it from the last checkpoint.
    pub async fn failure(&self) -> String {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if let Some(f) = self.parts.health.failed.lock().ok().and_then(|f| f.clone()) {
                return f;
            }
            if self.ingest_thread.is_finished() {
                return "the ingest thread ended".into();
            }
            if let Some(f) = self.source.failure() {
                return f;
            }
        }
    }

    /// Stored orders ingest has not taken yet (embedded source), or messages behind (Kafka),
    /// when known.
    pub fn lag(&self) -> Option<u64> {
        self.parts.lag()
    }

    /// Orders this process's producer has had confirmed by Kafka, and whether any are still on
    /// their way (None without a producer).
    pub fn produced(&self) -> Option<(u64, bool)> {
        self.parts.producer.as_ref().map(|p| {
            let progress = p.progress();
            (progress.confirmed, progress.in_flight > 0)
        })
    }

    /// Rows in the table.
    pub fn rows(&self) -> u64 {
        self.parts.table.snapshot().rows()
    }

    /// Why the pipeline cannot go on, if it cannot (see [`Running::failure`]).
    pub fn failed(&self) -> Option<String> {
        self.parts
            .health
            .failed
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .or_else(|| self.source.failure())
    }

    /// Prints where everything is (the banner tests and users read).
    pub fn print_banner(&self) {
        let command = match self.mode {
            Mode::Up => "up",
            Mode::Serve => "serve",
        };
        let kafka = self.config.kafka();
        if let (Some(addr), Some(f)) = (self.api_addr, &self.front) {
            let via = match &kafka {
                Some(k) => format!("; producing to {} on {}", k.topic, k.brokers),
                None => String::new(),
            };
            println!(
                "rtap {command}: orders API on http://{addr}  (store: {}; generator: {}, seed {}{via})",
                f.store.describe(),
                rate_text(self.config.generator.rate_per_sec),
                f.feed.seed()
            );
        }
        let from = match &kafka {
            Some(k) => format!(
                ", consuming {} on {} as group {}",
                k.topic,
                k.brokers,
                self.group.as_deref().unwrap_or(&k.group)
            ),
            None => String::new(),
        };
        let olap = match self.parts.olap.as_ref() {
            Some(b) => format!("; answers from the Pinot broker at {}", b.base()),
            None => String::new(),
        };
        println!(
            "rtap {command}: analytics API and SQL on http://{}  (table: {} rows under {}{from}{olap})",
            self.http_addr,
            self.parts.table.snapshot().rows(),
            self.config.data_dir.display()
        );
        println!(
            "rtap {command}: dashboard on http://{}  (live; status at /api/status, metrics at /metrics)",
            self.dashboard_addr
        );
        println!(
            "  try: curl 'http://{}/orders/ordersperminute'",
            self.http_addr
        );
        println!("       rtap query \"SELECT COUNT(*) FROM orders WHERE time_ms > ago('PT1M')\"");
        println!("  stop with Ctrl-C");
    }

    /// Stops every stage in the documented order (see the module docs); returns how many
    /// orders the generator made.
    pub async fn shutdown(self) -> anyhow::Result<u64> {
        tracing::info!("stopping: generator, then the producer and consumer, then ingest (sealing and checkpointing), then HTTP");
        let _ = self.front_stop.send(true);
        let mut made = 0;
        let mut handoff = None;
        if let Some(f) = self.front {
            made = f.job.join().await;
            // Its store handle must be gone before a restart in this process opens the file.
            let _ = f.retention.await;
            handoff = f.handoff;
        }
        // The orders API finishes its requests now, so nothing new is stored after this.
        if let Some(a) = self.api_server {
            a.await
                .context("orders API task failed")?
                .context("orders API failed")?;
        }
        if let Some(h) = handoff {
            tokio::task::spawn_blocking(move || h.finish())
                .await
                .context("producer task failed")?;
        }
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || source.stop())
            .await
            .context("source task failed")?;
        self.ingest_stop.store(true, Ordering::Release);
        let thread = self.ingest_thread;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("the ingest thread ended abnormally");
        }
        let source = self.source.clone();
        let _ = tokio::task::spawn_blocking(move || source.join()).await;
        let _ = self.http_stop.send(true);
        self.http_server
            .await
            .context("analytics API task failed")?
            .context("analytics API failed")?;
        self.dash_server
            .await
            .context("dashboard task failed")?
            .context("dashboard failed")?;
        let _ = self.summary.await;
        tracing::info!(
            orders_generated = made,
            rows_ingested = self.parts.metrics.rows.get(),
            dead_lettered = self.parts.metrics.dead_letters.get(),
            "stopped cleanly"
        );
        Ok(made)
    }
}
