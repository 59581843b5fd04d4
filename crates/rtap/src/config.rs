//! One configuration for every command: [`RtapConfig`], made of the per-component configs.
//!
//! Where a value comes from, lowest precedence first: the defaults below, the TOML file given
//! with `--config` (or `RTAP_CONFIG`), then `RTAP_*` environment variables, then flags (clap
//! reads a flag's variable when the flag is absent). Unknown keys are refused
//! (`deny_unknown_fields`); every value is checked once at start-up by
//! [`RtapConfig::validate`], with a message naming the key and the bad value. `rtap config`
//! prints the effective configuration as TOML, every key documented ([`render`]), so a user
//! can start a file from it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use ingest::IngestConfig;
use rolling::WindowConfig;
use serde::{Deserialize, Serialize};
use sql::SqlConfig;
use table::TableConfig;

/// Everything rtap can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtapConfig {
    /// Where rtap stores everything.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub generator: GeneratorSettings,
    pub store: StoreConfig,
    pub kafka: KafkaSettings,
    pub table: TableConfig,
    pub ingest: IngestConfig,
    pub sql: SqlConfig,
    pub windows: WindowConfig,
    pub olap: OlapSettings,
}

/// `--olap`: an Apache Pinot broker that answers the analytics endpoints and `/query/sql`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OlapSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    pub timeout_ms: u64,
}

impl Default for OlapSettings {
    fn default() -> Self {
        OlapSettings {
            broker: None,
            timeout_ms: 10_000,
        }
    }
}

/// Where rtap listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub bind: IpAddr,
    pub api_port: u16,
    pub http_port: u16,
    pub dashboard_port: u16,
    /// Open connections per port; one more is answered 503 and closed.
    pub max_connections: usize,
    /// A request's headers must arrive within this (also how long an idle keep-alive
    /// connection stays open).
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this.
    pub body_read_timeout_ms: u64,
    /// A write to a client that makes no progress this long closes the connection.
    pub write_timeout_ms: u64,
    /// A response not started within this is answered 503 (SQL has its own, shorter limit).
    pub request_timeout_ms: u64,
    /// On stop, connections in flight get this long to finish.
    pub shutdown_grace_ms: u64,
    /// Open dashboard event streams at most.
    pub max_viewers: usize,
    /// When set, `/query/sql` and `POST /orders` (every endpoint with `protect_all`) need
    /// `Authorization: Bearer <token>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    pub protect_all: bool,
    /// Host names besides localhost that a loopback rtap answers (DNS rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// Origins allowed to read answers cross-site (CORS); none by default.
    pub cors_origins: Vec<String>,
}

/// The order generator behind the orders API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorSettings {
    pub rate_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_orders: Option<u64>,
}

/// Where the orders API stores orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Orders older than this (event time) are removed; default: the table's retention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    /// The embedded store's page cache.
    pub cache_bytes: usize,
    /// zstd level of the embedded store's orders.
    pub zstd_level: i32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let embedded = store::EmbeddedOptions::default();
        StoreConfig {
            database_url: None,
            retention_ms: None,
            cache_bytes: embedded.cache_bytes,
            zstd_level: embedded.zstd_level,
        }
    }
}

/// The Kafka topic between the generator and ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    pub topic: String,
    pub partitions: i32,
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debug: Option<String>,
    /// Read every partition in a consumer group of this instance's own, so that several
    /// instances on one topic hold the same table (replicas) instead of splitting it.
    pub replica: bool,
}

impl Default for RtapConfig {
    fn default() -> Self {
        RtapConfig {
            data_dir: PathBuf::from("./data"),
            http: HttpConfig::default(),
            generator: GeneratorSettings::default(),
            store: StoreConfig::default(),
            kafka: KafkaSettings::default(),
            table: TableConfig::default(),
            ingest: IngestConfig::default(),
            sql: SqlConfig::default(),
            windows: WindowConfig::default(),
            olap: OlapSettings::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            api_port: 5001,
            http_port: 8888,
            dashboard_port: 8501,
            max_connections: 4_096,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            write_timeout_ms: 30_000,
            request_timeout_ms: 60_000,
            shutdown_grace_ms: 5_000,
            max_viewers: 1_000,
            auth_token: None,
            protect_all: false,
            allowed_hosts: Vec::new(),
            cors_origins: Vec::new(),
        }
    }
}

impl Default for GeneratorSettings {
    fn default() -> Self {
        GeneratorSettings {
            rate_per_sec: 31.0,
            seed: None,
            max_orders: None,
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: None,
            topic: "FakeEcommOrders".into(),
            partitions: 24,
            group: "rtap".into(),
            instance_id: None,
            debug: None,
            replica: false,
        }
    }
}

/// Every key with what it means, in file order (what `rtap config` and the README show).
/// Optional keys (no default) have an example value, shown commented out.
pub const KEYS: &[(&str, &str, Option<&str>)] = &[
    ("data_dir", "where rtap stores everything (order store, table, checkpoints); flag --data-dir, env RTAP_DATA_DIR", None),
    ("http.bind", "address to listen on (0.0.0.0 serves other machines); --bind, RTAP_BIND", None),
    ("http.api_port", "orders API port (0 picks a free one); --api-port, RTAP_API_PORT", None),
    ("http.http_port", "analytics API and SQL port; --http-port, RTAP_HTTP_PORT", None),
        ("http.dashboard_port", "dashboard port; --dashboard-port, RTAP_DASHBOARD_PORT", None),
    ("http.max_connections", "open connections per port (at most a third of the open-file limit); one more is answered 503 and closed", None),
    ("http.header_read_timeout_ms", "a request's headers must arrive within this (also the idle keep-alive timeout)", None),
    ("http.body_read_timeout_ms", "a request's body must arrive within this", None),
    ("http.write_timeout_ms", "a write to a client that makes no progress this long (it stopped reading) closes the connection", None),
    ("http.request_timeout_ms", "a response not started within this is answered 503 (SQL has its own sql.timeout_ms)", None),
    ("http.shutdown_grace_ms", "on stop, connections in flight get this long to finish", None),
    ("http.max_viewers", "open dashboard event streams at most; one more is answered 503", None),
    ("http.auth_token", "bearer token for /query/sql and POST /orders (all endpoints with protect_all); --auth-token, RTAP_AUTH_TOKEN (never printed by rtap config)", Some("\"a-long-random-secret\"")),
    ("http.protect_all", "every endpoint but /health and the page's files needs the token", None),
    ("http.allowed_hosts", "host names besides localhost rtap answers (DNS rebinding protection; on a non-loopback bind, setting it turns the check on)", None),
    ("http.cors_origins", "origins allowed to read answers cross-site; none by default", None),
    ("generator.rate_per_sec", "orders generated per second, 0 = as fast as the store takes them; --rate, RTAP_RATE", None),
    ("generator.seed", "generator seed (default: random, saved with the checkpoint); --seed, RTAP_SEED", Some("42")),
    ("generator.max_orders", "stop generating after this many orders; --max-orders, RTAP_MAX_ORDERS", Some("100000")),
    ("store.database_url", "store orders in Postgres instead of the embedded store; --database-url, RTAP_DATABASE_URL", Some("\"postgres://postgres@127.0.0.1:5432/test\"")),
    ("store.retention_ms", "stored orders older than this (event time) are removed, oldest first (default: table.retention_ms)", Some("604800000")),
    ("store.cache_bytes", "page cache of the embedded store", None),
    ("store.zstd_level", "zstd level of the embedded store's orders (1..22)", None),
    ("kafka.brokers", "Kafka bootstrap servers: puts a topic between generator and ingest; --kafka, RTAP_KAFKA", Some("\"127.0.0.1:9092\"")),
    ("kafka.topic", "the orders topic; --topic, RTAP_TOPIC", None),
    ("kafka.partitions", "partitions when rtap creates the topic (1..10000); --partitions, RTAP_PARTITIONS", None),
    ("kafka.group", "consumer group of ingest; --group, RTAP_GROUP", None),
    ("kafka.replica", "true: read every partition in a consumer group of this instance's own (<group>-replica-<instance id>), so instances on one topic are replicas with the same table and answers; false: instances in one group split the partitions; --replica, RTAP_REPLICA", None),
    ("kafka.instance_id", "static group member id (default: made once from the host name and data directory, kept in <data_dir>/instance-id; \"\" = dynamic membership: the member leaves the group when it stops); --instance-id, RTAP_INSTANCE_ID", Some("\"rtap-a\"")),
    ("kafka.debug", "librdkafka debug contexts of rtap's Kafka clients (cgrp: the consumer group's joins and assignments; fetch; all), logged with RTAP_LOG=info,librdkafka=debug; --kafka-debug, RTAP_KAFKA_DEBUG", Some("\"cgrp\"")),
    ("table.max_memory_rows", "seal the in-memory rows into a Parquet segment at this many rows", None),
    ("table.max_memory_bytes", "... or at this many bytes of Arrow buffers, whichever comes first", None),
    ("table.max_unsealed_rows", "ingest stops taking rows (the source waits) while this many are not sealed, e.g. on a full disk", None),
    ("table.max_unsealed_bytes", "... or while rows of this many bytes are not sealed (at least twice table.max_memory_bytes)", None),
    ("table.seal_after_secs", "... or when the oldest is this old: also the checkpoint interval; --checkpoint-interval, RTAP_CHECKPOINT_INTERVAL", None),
    ("table.retention_ms", "segments whose newest row is older than this are dropped (30 days)", None),
    ("table.merge_target_rows", "merged segments hold up to this many rows, and their inputs' oldest rows lie within a quarter of table.retention_ms of one another (their newest too); where either limit stops a run, two segments of its size tier (above the first) are enough", None),
    ("table.merge_min_segments", "merge once this many segments of one size tier are in a row (tiers are powers of it above 64 times it: 512 rows for 8); a row is rewritten about once per tier it climbs (4 times at 31 orders/s)", None),
    ("table.row_group_rows", "rows per Parquet row group (the unit of time pruning)", None),
    ("table.page_bytes", "largest Parquet data page before compression (4096..67108864; pages also close at 20,000 rows): a seal or merge holds each column's open page uncompressed, so this bounds that part of its memory (the row group's compressed pages and the dictionaries are held regardless)", None),
    ("table.zstd_level", "zstd level of the segment files (1..22)", None),
    ("ingest.max_message_bytes", "messages larger than this are dead-lettered unparsed", None),
    ("ingest.dedup_horizon_ms", "how far back in event time a re-delivered order is recognised (memory: about 10 MB per million ids inside it)", None),
    ("ingest.dedup_max_entries", "hard cap on remembered order ids (the oldest eighth of the horizon goes first)", None),
    ("ingest.decode_threads", "threads that parse a batch in parallel, 0 = one per core", None),
    ("ingest.max_future_ms", "an order more than this ahead of the wall clock is dead-lettered", None),
    ("ingest.max_age_ms", "an order older than this is dead-lettered (default: table.retention_ms)", Some("2592000000")),
    ("ingest.max_amount", "largest absolute money amount of any field, in dollars; order_total must be >= 0", None),
    ("ingest.max_line_items", "most line items (and coupon codes, status entries) one order may have", None),
    ("ingest.max_item_quantity", "largest quantity (and free quantity) of one line item", None),
    ("ingest.max_batch_bytes", "most payload bytes decoded as one batch", None),
    ("ingest.max_pending_bytes", "payload bytes handed over by the source and not yet ingested; the source waits at this bound", None),
    ("ingest.deadletter_max_file_bytes", "the dead-letter file is rotated at this size", None),
    ("ingest.deadletter_max_files", "rotated dead-letter files kept (the oldest are deleted; the count stays exact)", None),
    ("sql.timeout_ms", "a query running longer is cancelled (Pinot error 250)", None),
    ("sql.max_rows", "results are cut at this many rows (partialResult)", None),
    ("sql.max_response_bytes", "... and at about this many bytes of result data", None),
    ("sql.max_sql_bytes", "longest SQL text accepted", None),
    ("sql.max_nesting_depth", "deepest nesting of parentheses accepted", None),
    ("sql.max_operators", "most operators (+, =, AND, ...) in one query (a long chain is a deep expression tree)", None),
    ("sql.max_plan_nodes", "most table reads and SELECTs of a query once its CTEs are expanded (counted before planning), and most nodes of its plan (each reference to a CTE is a copy of it)", None),
    ("sql.memory_limit_bytes", "memory all queries may hold together (they spill to disk where they can)", None),
    ("sql.query_memory_bytes", "memory one query may hold (Pinot error 245 past it)", None),
    ("sql.max_concurrent", "user queries running at once", None),
    ("sql.max_queued", "user queries waiting for a turn; past it \"server busy\" (Pinot error 211)", None),
    ("sql.max_function_output", "most the functions of one query that can multiply data (range, generate_series, repeat, lpad, rpad, array_repeat, array_resize, array_replace*, make_array, array_concat, array_append, array_prepend, replace, regexp_replace, concat, concat_ws, overlay, array_to_string) may make together (bytes of text or list elements)", None),
    ("sql.max_value_size", "largest single value one of those functions may make (bytes of text or list elements)", None),
    ("sql.max_join_pairs", "most row pairs a join without an equality key (a cross join, a join on <) may compare, from the sizes of its two sides (Pinot error 245 past it)", None),
    ("sql.threads", "threads of the query runtime, 0 = one per core", None),
    ("sql.metadata_cache_bytes", "Parquet footers and page indexes of sealed segments kept in memory (LRU), 0 = none", None),
    ("sql.column_cache_bytes", "decoded columns of sealed segments kept in memory (LRU), so queries over the newest minutes of a live table do not decode the same Parquet pages every time; each read of the table in a query decodes at most half of it, and rows held by running queries count against as much again; reads of the table that include a list column bypass it; 0 = none", None),
    ("sql.plan_cache_entries", "plans of this many recently run query texts kept (0 = none, at most 4096): a repeated query skips the Pinot rewrite, SQL parsing and analysis, and the optimizer too where nothing in it depends on the moment (no ago(), now(), parameters or functions that multiply data)", None),
    ("sql.default_limit", "rows a /query/sql selection or group-by without LIMIT answers (Pinot's default LIMIT 10), 0 = every row (up to sql.max_rows)", None),
    ("windows.size_ms", "rolling window length (windows.* apply to a fresh data directory; a checkpoint keeps its own)", None),
    ("windows.advance_ms", "window hop (a multiple of it is the window length)", None),
    ("windows.grace_ms", "how late an order may be and still count in the windows", None),
    ("olap.broker", "an Apache Pinot broker (pinot://host:port) that answers the analytics endpoints and /query/sql instead of rtap's own table (the rolling windows stay in rtap); --olap, RTAP_OLAP", Some("\"pinot://127.0.0.1:8099\"")),
    ("olap.timeout_ms", "a request to the broker that takes longer fails (the endpoint answers 503)", None),
];

impl RtapConfig {
    /// The defaults overlaid with the TOML file at `path`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        match path {
            None => Ok(RtapConfig::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| {
                    format!("cannot read the configuration file {}", p.display())
                })?;
                Self::parse(&text)
                    .with_context(|| format!("bad configuration file {}", p.display()))
            }
        }
    }

    /// Parses a configuration file's text (missing keys keep their defaults).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
    }

    /// Checks every value once, at start-up; the error names the key and the bad value.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.kafka.replica && self.kafka.brokers.is_none() {
            anyhow::bail!("kafka.replica (--replica) needs Kafka: give the brokers with --kafka");
        }
        if let Some(debug) = &self.kafka.debug {
            check_kafka_debug(debug)?;
        }
        if let Some(b) = &self.olap.broker {
            server::olap::broker_base(b).map_err(|e| anyhow::anyhow!("olap.broker: {e}"))?;
        }
        if !(100..=3_600_000).contains(&self.olap.timeout_ms) {
            anyhow::bail!(
                "olap.timeout_ms must be from 100 to 3600000, got {}",
                self.olap.timeout_ms
            );
        }
        let g = &self.generator;
        if !g.rate_per_sec.is_finite() || g.rate_per_sec < 0.0 {
            anyhow::bail!(
                "generator.rate_per_sec must be 0 (unlimited) or a positive number, got {}",
                g.rate_per_sec
            );
        }
        let k = &self.kafka;
        if !(1..=10_000).contains(&k.partitions) {
            anyhow::bail!(
                "kafka.partitions must be from 1 to 10000, got {}",
                k.partitions
            );
        }
        if k.topic.trim().is_empty() {
            anyhow::bail!("kafka.topic must not be empty");
        }
        if k.group.trim().is_empty() {
            anyhow::bail!("kafka.group must not be empty");
        }
        if k.brokers.as_deref().is_some_and(|b| b.trim().is_empty()) {
            anyhow::bail!("kafka.brokers must not be empty (leave it out to run without Kafka)");
        }
        let h = &self.http;
        if h.max_connections == 0 || h.max_viewers == 0 {
            anyhow::bail!(
                "http.max_connections and http.max_viewers must be at least 1, got {} and {}",
                h.max_connections,
                h.max_viewers
            );
        }
        for (key, value) in [
            ("header_read_timeout_ms", h.header_read_timeout_ms),
            ("body_read_timeout_ms", h.body_read_timeout_ms),
            ("write_timeout_ms", h.write_timeout_ms),
            ("request_timeout_ms", h.request_timeout_ms),
        ] {
            if value == 0 {
                anyhow::bail!("http.{key} must be at least 1, got 0");
            }
        }
        if h.request_timeout_ms <= self.sql.timeout_ms {
            anyhow::bail!(
                "http.request_timeout_ms ({}) must be longer than sql.timeout_ms ({}): a slow \
                 query is answered with its own timeout error",
                h.request_timeout_ms,
                self.sql.timeout_ms
            );
        }
        if let Some(t) = h.auth_token.as_deref() {
            if t.trim().len() < 8 {
                anyhow::bail!(
                    "http.auth_token must be at least 8 characters (use a long random secret)"
                );
            }
            if t.trim() != t || t.chars().any(|c| c.is_control()) {
                anyhow::bail!(
                    "http.auth_token must not start or end with spaces or hold control \
                     characters (clients could not send it in a header)"
                );
            }
        }
        let st = &self.store;
        if st.retention_ms.is_some_and(|r| r <= 0) {
            anyhow::bail!(
                "store.retention_ms must be positive, got {}",
                st.retention_ms.unwrap_or(0)
            );
        }
        let max_age = self.ingest.max_age_ms.unwrap_or(self.table.retention_ms);
        if self.store_retention_ms() < max_age {
            anyhow::bail!(
                "store.retention_ms ({}) must not be shorter than ingest.max_age_ms ({max_age}): \
                 stored orders that ingest still takes would be removed before it replays them",
                self.store_retention_ms()
            );
        }
        if !(1..=22).contains(&st.zstd_level) {
            anyhow::bail!("store.zstd_level must be 1..=22, got {}", st.zstd_level);
        }
        if st.cache_bytes < 1024 * 1024 {
            anyhow::bail!(
                "store.cache_bytes must be at least 1048576 (1 MiB), got {}",
                st.cache_bytes
            );
        }
        let s = self.table.seal_after_secs;
        if !(s.is_finite() && (0.1..=3600.0).contains(&s)) {
            anyhow::bail!("table.seal_after_secs (the checkpoint interval) must be from 0.1 to 3600 seconds, got {s}");
        }
        self.table.validate().map_err(|e| {
            anyhow::anyhow!(
                "table.{}",
                e.to_string()
                    .trim_start_matches("bad table configuration: ")
            )
        })?;
        self.ingest
            .validate()
            .map_err(|e| anyhow::anyhow!("ingest.{e}"))?;
        self.sql
            .validate()
            .map_err(|e| anyhow::anyhow!("sql.{e}"))?;
        self.windows
            .validate()
            .map_err(|e| anyhow::anyhow!("windows: {e}"))?;
        // The windows keep panes this far ahead of the clock; an order further ahead would be
        // stored but not counted in them.
        let ahead = self.windows.size_ms.saturating_add(self.windows.grace_ms);
        if self.ingest.max_future_ms > ahead {
            anyhow::bail!(
                "ingest.max_future_ms ({}) must not be over windows.size_ms + windows.grace_ms \
                 ({ahead}): the windows could not count orders that far ahead",
                self.ingest.max_future_ms
            );
        }
        Ok(())
    }

    /// How long stored orders are kept (event time).
    pub fn store_retention_ms(&self) -> i64 {
        self.store.retention_ms.unwrap_or(self.table.retention_ms)
    }

    /// The Kafka configuration, when Kafka is on.
    pub fn kafka(&self) -> Option<sources::kafka::KafkaConfig> {
        let k = &self.kafka;
        k.brokers
            .as_ref()
            .map(|brokers| sources::kafka::KafkaConfig {
                brokers: brokers.clone(),
                topic: k.topic.clone(),
                partitions: k.partitions,
                replication: 1,
                group: k.group.clone(),
                // None: the pipeline reads (or makes) `<data_dir>/instance-id`.
                instance_id: k.instance_id.clone(),
                debug: k.debug.clone(),
            })
    }
}

/// The configuration as a TOML file, every key preceded by what it means; optional keys that
/// are not set appear commented out with an example.
pub fn render(config: &RtapConfig) -> anyhow::Result<String> {
    let mut shown = config.clone();
    if let Some(url) = &mut shown.store.database_url {
        *url = redact_password(url);
    }
    // A secret never goes into a file rtap prints: give it with RTAP_AUTH_TOKEN.
    shown.http.auth_token = None;
    let plain = toml::to_string_pretty(&shown).context("cannot write the configuration as TOML")?;
    let doc = |path: &str| KEYS.iter().find(|(k, _, _)| *k == path);
    let mut out = String::from(
        "# rtap configuration: `rtap <command> --config FILE` (or RTAP_CONFIG=FILE).\n\
         # Precedence: defaults < this file < RTAP_* environment variables < flags.\n",
    );
    let mut section = String::new();
    let flush_optional = |section: &str, out: &mut String, present: &[String]| {
        for (key, what, example) in KEYS {
            let (sec, name) = key.rsplit_once('.').unwrap_or(("", key));
            if sec == section && !present.iter().any(|p| p == name) {
                if let Some(example) = example {
                    out.push_str(&format!("# {what}\n# {name} = {example}\n"));
                }
            }
        }
    };
    let mut present: Vec<String> = Vec::new();
    for line in plain.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            flush_optional(&section, &mut out, &present);
            present.clear();
            section = name.to_string();
            out.push_str(&format!("\n{trimmed}\n"));
            continue;
        }
        if let Some((key, _)) = trimmed.split_once(" = ") {
            let path = if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            };
            if let Some((_, what, _)) = doc(&path) {
                out.push_str(&format!("# {what}\n"));
            }
            present.push(key.to_string());
        }
        if !trimmed.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    flush_optional(&section, &mut out, &present);
    Ok(out)
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db` (give the password with
/// `RTAP_DATABASE_URL` instead of writing it into a file).
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// librdkafka's debug contexts (2.12), checked here so a typo names the setting, not the
/// client that refused it.
const KAFKA_DEBUG_CONTEXTS: [&str; 21] = [
    "generic",
    "broker",
    "topic",
    "metadata",
    "feature",
    "queue",
    "msg",
    "protocol",
    "cgrp",
    "security",
    "fetch",
    "interceptor",
    "plugin",
    "consumer",
    "admin",
    "eos",
    "mock",
    "assignor",
    "conf",
    "telemetry",
    "all",
];

fn check_kafka_debug(debug: &str) -> anyhow::Result<()> {
    for context in debug.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        // librdkafka takes names in any case, and `+name` / `-name`.
        let name = context.trim_start_matches(['+', '-']).to_ascii_lowercase();
        if !KAFKA_DEBUG_CONTEXTS.contains(&name.as_str()) {
            anyhow::bail!(
                "kafka.debug (--kafka-debug, RTAP_KAFKA_DEBUG): {context:?} is not a librdkafka \
                 debug context; use a comma-separated list of {}",
                KAFKA_DEBUG_CONTEXTS.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact_password("postgres://me:s3cret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(redact_password("postgres://me@db/x"), "postgres://me@db/x");
        let mut c = RtapConfig::default();
        c.store.database_url = Some("postgres://me:s3cret@db/x".into());
        assert!(!render(&c).expect("renders").contains("s3cret"));
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(
            RtapConfig::parse("").expect("parses"),
            RtapConfig::default()
        );
        RtapConfig::default()
            .validate()
            .expect("the defaults are valid");
    }

    #[test]
    fn kafka_debug_contexts_are_checked_by_name() {
        let mut c = RtapConfig::default();
        c.kafka.debug = Some("cgrp, Fetch,+eos".into());
        c.validate().expect("known contexts");
        c.kafka.debug = Some("cgrp,bogus".into());
        let e = c.validate().expect_err("an unknown context").to_string();
        assert!(
            e.contains("--kafka-debug") && e.contains("\"bogus\""),
            "{e}"
        );
    }

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let c = RtapConfig::parse("[http]\nhttp_port = 9999\n[table]\nzstd_level = 3\n")
            .expect("parses");
        assert_eq!(c.http.http_port, 9999);
        assert_eq!(c.http.api_port, 5001);
        assert_eq!(c.table.zstd_level, 3);
        assert_eq!(c.table.seal_after_secs, 5.0);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = RtapConfig::parse("[http]\nhttp_prot = 1\n").expect_err("typo");
        let msg = format!("{err:#}");
        assert!(msg.contains("unknown field `http_prot`"), "{msg}");
        let err = RtapConfig::parse("[tabel]\n").expect_err("unknown section");
        assert!(
            format!("{err:#}").contains("unknown field `tabel`"),
            "{err:#}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let err = RtapConfig::parse("[http]\nhttp_port = 70000\n").expect_err("out of range");
        assert!(format!("{err:#}").contains("http_port"), "{err:#}");
        let err = RtapConfig::parse("[generator]\nrate_per_sec = \"fast\"\n").expect_err("type");
        assert!(format!("{err:#}").contains("rate_per_sec"), "{err:#}");
        let cases = [
            ("[table]\nzstd_level = 40\n", "table.zstd_level must be 1..=22, got 40"),
            ("[table]\npage_bytes = 1024\n", "table.page_bytes must be 4096..=67108864, got 1024"),
            ("[table]\nseal_after_secs = 0.0\n", "table.seal_after_secs (the checkpoint interval) must be from 0.1 to 3600 seconds, got 0"),
            ("[generator]\nrate_per_sec = -1.0\n", "generator.rate_per_sec must be 0 (unlimited) or a positive number, got -1"),
            ("[kafka]\npartitions = 0\n", "kafka.partitions must be from 1 to 10000, got 0"),
            ("[sql]\ntimeout_ms = 0\n", "sql.timeout_ms must be at least 1, got 0"),
            ("[sql]\nplan_cache_entries = 5000\n", "sql.plan_cache_entries must be from 0 (none) to 4096, got 5000"),
            ("[sql]\ntimeout_ms = 60000\n", "http.request_timeout_ms (60000) must be longer than sql.timeout_ms (60000): a slow query is answered with its own timeout error"),
            ("[ingest]\ndecode_threads = 300\n", "ingest.decode_threads must be from 0 (one per core) to 256, got 300"),
            ("[windows]\nsize_ms = 1500\n", "windows: window size 1500 ms must be a positive multiple of the advance 1000 ms"),
            ("[windows]\ngrace_ms = 0\n", "ingest.max_future_ms (300000) must not be over windows.size_ms + windows.grace_ms (60000): the windows could not count orders that far ahead"),
        ];
        for (text, expected) in cases {
            let c = RtapConfig::parse(text).expect("parses");
            let err = c.validate().expect_err(text);
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn the_rendered_file_reads_back_as_the_same_configuration() {
        let mut c = RtapConfig::default();
        c.generator.seed = Some(7);
        c.kafka.brokers = Some("127.0.0.1:9092".into());
        let text = render(&c).expect("renders");
        assert_eq!(RtapConfig::parse(&text).expect("parses back"), c);
        assert!(text.contains("# generator seed"), "{text}");
        // Optional keys that are not set appear commented out.
        assert!(text.contains("# max_orders = 100000"), "{text}");
        assert!(text.contains("# database_url = "), "{text}");
        for (key, _, _) in KEYS {
            let name = key.rsplit('.').next().unwrap_or(key);
            assert!(text.contains(name), "{key} is not documented in\n{text}");
        }
    }
}
