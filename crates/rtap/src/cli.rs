//! The command line: one subcommand per way of running rtap, flags shared through flattened
//! argument groups so every command spells them the same (DESIGN.md, command-line conventions).
//!
//! Every flag also reads an `RTAP_*` environment variable, and every flag is a key of the
//! configuration (see [`crate::config`]): a flag that is given (or its variable) overrides the
//! `--config` file, which overrides the defaults. So flags carry no defaults of their own here;
//! the default each help text names is the configuration's.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::RtapConfig;

#[derive(Debug, Parser)]
#[command(
    name = "rtap",
    version,
    about = "Real-time analytics for order events, in one binary",
    long_about = "Real-time analytics for order events, in one binary.\n\n\
                  `rtap up` runs everything on this machine with nothing else installed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run rtap on this machine: the orders API with its generator, ingest into the realtime
    /// table, and the analytics API with SQL, all on the embedded store under --data-dir.
    Up(UpArgs),
    /// Make history: generate --orders orders with event times spread over the past --days
    /// days, store them and ingest them into the table under --data-dir, then exit. A later
    /// `rtap up` on the same directory goes on from there.
    Backfill(BackfillArgs),
    /// Run only the orders API (the original Flask service): GET/POST /orders, /health, with a
    /// background job adding generated orders at --rate.
    Api(ApiArgs),
    /// Publish orders to Kafka: from a running orders API (following new pages as they appear)
    /// or straight from the generator. Resumes after the last order the broker confirmed.
    Produce(ProduceArgs),
    /// Ingest from Kafka into the realtime table and windows, and serve the analytics API
    /// (no orders API, no generator: pair it with `rtap produce`).
    Serve(ServeArgs),
    /// Run one SQL query (Pinot dialect) and print the result: against a running rtap's
    /// analytics API, or the table under --data-dir when none answers.
    Query(QueryArgs),
    /// Print the effective configuration (defaults, --config file, environment and flags
    /// merged) as a documented TOML file to start your own from.
    Config(UpArgs),
    /// Write the Apache Pinot schema and REALTIME table config that make a Pinot cluster hold
    /// the same table as rtap from the same topic (every column, the derived ones as ingestion
    /// transforms, retention, indexes, dedup on order_id, the Kafka stream), as two JSON files
    /// in --out.
    PinotConfig(PinotConfigArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PinotConfigArgs {
    /// Directory to write orders_schema.json and orders_realtime_table_config.json into
    /// (created if missing; existing files of those names are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Configuration file (TOML): its table retention, dedup horizon and Kafka settings are used.
    #[arg(long, env = "RTAP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers as the Pinot servers reach them [default: kafka.brokers, else
    /// localhost:9092].
    #[arg(long, env = "RTAP_KAFKA")]
    pub kafka: Option<String>,
    /// Topic of the orders [default: FakeEcommOrders].
    #[arg(long, env = "RTAP_TOPIC")]
    pub topic: Option<String>,
    /// The topic's partition count, when `rtap produce` fills it (keyed by order_id, murmur2
    /// like Java clients): Pinot then prunes segments by partition for order_id lookups. Leave
    /// it out for a topic other producers fill.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: Option<i32>,
    /// Copies of every segment in the Pinot cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub replicas: u32,
    /// Leave out Pinot's dedup on order_id: for a topic that other producers fill without
    /// keying it by order_id (Pinot dedups within a partition only).
    #[arg(long)]
    pub no_dedup: bool,
    /// Rows a consuming segment takes before Pinot commits it.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub flush_rows: u64,
}

impl PinotConfigArgs {
    /// The configuration whose table, dedup and Kafka settings the Pinot config mirrors.
    pub fn config(&self) -> anyhow::Result<RtapConfig> {
        let mut c = RtapConfig::load(self.config.as_deref())?;
        if self.kafka.is_some() {
            c.kafka.brokers = self.kafka.clone();
        }
        set(&mut c.kafka.topic, &self.topic);
        c.validate()?;
        Ok(c)
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// Flags of the commands that ingest and serve (`up`, `serve`).
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Port of the analytics API and /query/sql; 0 picks a free port and prints it
    /// [default: 8888].
    #[arg(long, env = "RTAP_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Port of the live dashboard; 0 picks a free port and prints it [default: 8501].
    #[arg(long, env = "RTAP_DASHBOARD_PORT")]
    pub dashboard_port: Option<u16>,
    /// Seconds between checkpoints (table segments, windows, dedup and source position saved
    /// together, Kafka offsets committed; a crash loses nothing and redoes at most this much)
    /// [default: 5].
    #[arg(long, env = "RTAP_CHECKPOINT_INTERVAL", value_parser = parse_interval)]
    pub checkpoint_interval: Option<f64>,
    /// With --kafka: be a replica. Read every partition of the topic in a consumer group of
    /// this instance's own (<group>-replica-<instance id>), so that several rtap instances on
    /// one topic hold the same table and give the same answers (put them behind a load balancer
    /// that checks /health?maxLag=N). Without it, instances in one group split the partitions
    /// and each one answers for its own only (every response says which).
    #[arg(long, env = "RTAP_REPLICA")]
    pub replica: bool,
    /// Answer the analytics endpoints and /query/sql from this Apache Pinot broker
    /// (pinot://host:port, e.g. one fed by the table config of `rtap pinot-config`) instead of
    /// rtap's own table; the rolling windows, the item and coupon panels and the dashboard's
    /// time ranges stay in rtap.
    #[arg(long, env = "RTAP_OLAP")]
    pub olap: Option<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// Where the orders topic is. Without --kafka, `up` hands orders to ingest in process.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (host:port[,host:port]); puts a real Kafka topic between the
    /// generator and ingest.
    #[arg(long, env = "RTAP_KAFKA")]
    pub kafka: Option<String>,
    /// Topic of the orders [default: FakeEcommOrders].
    #[arg(long, env = "RTAP_TOPIC")]
    pub topic: Option<String>,
    /// Partitions of the topic when rtap creates it [default: 24].
    #[arg(long, env = "RTAP_PARTITIONS", value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: Option<i32>,
    /// Consumer group of ingest (rtap instances in one group split the partitions)
    /// [default: rtap].
    #[arg(long, env = "RTAP_GROUP")]
    pub group: Option<String>,
    /// Static member id in the consumer group (a restarted rtap takes its old place at once;
    /// an empty id: dynamic membership, the member leaves the group when it stops)
    /// [default: made once from the host name and data directory, kept in the data directory].
    #[arg(long, env = "RTAP_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// librdkafka debug contexts of rtap's Kafka clients (e.g. cgrp for the consumer group's
    /// joins and assignments, fetch, all); shown with RTAP_LOG=info,librdkafka=debug.
    #[arg(long, env = "RTAP_KAFKA_DEBUG")]
    pub kafka_debug: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Orders to add.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub orders: u64,
    /// Spread them over this many past days (fractions allowed; at most what ingest takes,
    /// ingest.max_age_ms, about 30 days by default).
    #[arg(long, default_value_t = 7.0, value_parser = parse_days)]
    pub days: f64,
    /// Seed of the generator (default: random, printed).
    #[arg(long, env = "RTAP_SEED")]
    pub seed: Option<u64>,
    /// Store the orders in this Postgres database instead of the embedded store.
    #[arg(long, env = "RTAP_DATABASE_URL")]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

fn parse_days(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if d.is_finite() && d > 0.0 && d <= 3650.0 => Ok(d),
        _ => Err(format!("days must be a number above 0, got {s:?}")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// Where `rtap produce` reads orders from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProduceFrom {
    /// A running orders API (GET /orders pages).
    Api,
    /// The generator, in process.
    Generator,
}

#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    #[arg(long, value_enum, default_value_t = ProduceFrom::Api)]
    pub from: ProduceFrom,
    /// Base URL of the orders API (with --from api).
    #[arg(long, env = "RTAP_API_URL", default_value = "http://127.0.0.1:5001")]
    pub api_url: String,
    #[command(flatten)]
    pub generator: GeneratorArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Configuration file (TOML; `rtap config` prints one).
    #[arg(long, env = "RTAP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the file that remembers the last order the broker confirmed
    /// [default: ./data].
    #[arg(long, env = "RTAP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Exit once every order the API has is confirmed, instead of following new pages.
    #[arg(long)]
    pub until_caught_up: bool,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "checkpoint interval must be a number of seconds from 0.1 to 3600, got {s:?}"
        )),
    }
}

#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// The query, e.g. "SELECT COUNT(*) FROM orders WHERE time_ms > ago('PT1M')".
    pub sql: String,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Port of the running rtap's analytics API [default: 8888].
    #[arg(long, env = "RTAP_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Read the table under --data-dir directly instead of asking a running rtap.
    #[arg(long)]
    pub local: bool,
    /// Print Pinot's JSON broker response instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Configuration file (TOML; `rtap config` prints one with every key).
    #[arg(long, env = "RTAP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for everything rtap stores [default: ./data].
    #[arg(long, env = "RTAP_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on; use 0.0.0.0 to serve other machines [default: 127.0.0.1].
    #[arg(long, env = "RTAP_BIND")]
    pub bind: Option<IpAddr>,
    /// Bearer token that /query/sql and POST /orders require (see http.protect_all for every
    /// endpoint); `rtap query` sends it.
    #[arg(long, env = "RTAP_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
}

/// The order generator.
#[derive(Debug, Clone, Args)]
pub struct GeneratorArgs {
    /// Orders generated per second (0: as fast as the store takes them) [default: 31].
    #[arg(long, env = "RTAP_RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Seed of the generator: the same seed gives the same orders (default: random, printed).
    #[arg(long, env = "RTAP_SEED")]
    pub seed: Option<u64>,
    /// Stop generating after this many orders (the API keeps serving).
    #[arg(long, env = "RTAP_MAX_ORDERS")]
    pub max_orders: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Port of the orders API; 0 picks a free port and prints it [default: 5001].
    #[arg(long, env = "RTAP_API_PORT")]
    pub api_port: Option<u16>,
    /// Store orders in this Postgres database instead of the embedded store, e.g.
    /// postgres://postgres@127.0.0.1:5432/test
    #[arg(long, env = "RTAP_DATABASE_URL")]
    pub database_url: Option<String>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|_| format!("rate must be a number of orders per second, got {s:?}"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(format!(
            "rate must be 0 (unlimited) or a positive number, got {s}"
        ));
    }
    Ok(rate)
}

/// Sets `slot` when the flag (or its variable) was given.
fn set<T>(slot: &mut T, value: &Option<T>)
where
    T: Clone,
{
    if let Some(v) = value {
        *slot = v.clone();
    }
}

impl CommonArgs {
    /// The configuration file's values with these flags applied.
    pub fn load(&self) -> anyhow::Result<RtapConfig> {
        let mut c = RtapConfig::load(self.config.as_deref())?;
        self.apply(&mut c);
        Ok(c)
    }

    fn apply(&self, c: &mut RtapConfig) {
        set(&mut c.data_dir, &self.data_dir);
        set(&mut c.http.bind, &self.bind);
        if self.auth_token.is_some() {
            c.http.auth_token = self.auth_token.clone();
        }
    }
}

impl GeneratorArgs {
    fn apply(&self, c: &mut RtapConfig) {
        set(&mut c.generator.rate_per_sec, &self.rate);
        if self.seed.is_some() {
            c.generator.seed = self.seed;
        }
        if self.max_orders.is_some() {
            c.generator.max_orders = self.max_orders;
        }
    }
}

impl ApiArgs {
    /// The effective configuration of `rtap api`.
    pub fn config(&self) -> anyhow::Result<RtapConfig> {
        let mut c = self.common.load()?;
        self.apply(&mut c);
        c.validate()?;
        Ok(c)
    }

    fn apply(&self, c: &mut RtapConfig) {
        self.generator.apply(c);
        set(&mut c.http.api_port, &self.api_port);
        if self.database_url.is_some() {
            c.store.database_url = self.database_url.clone();
        }
    }
}

impl KafkaArgs {
    fn apply(&self, c: &mut RtapConfig) {
        if self.kafka.is_some() {
            c.kafka.brokers = self.kafka.clone();
        }
        set(&mut c.kafka.topic, &self.topic);
        set(&mut c.kafka.partitions, &self.partitions);
        set(&mut c.kafka.group, &self.group);
        if self.instance_id.is_some() {
            c.kafka.instance_id = self.instance_id.clone();
        }
        if self.kafka_debug.is_some() {
            c.kafka.debug = self.kafka_debug.clone();
        }
    }
}

impl PipelineArgs {
    fn apply(&self, c: &mut RtapConfig) {
        set(&mut c.http.http_port, &self.http_port);
        set(&mut c.http.dashboard_port, &self.dashboard_port);
        set(&mut c.table.seal_after_secs, &self.checkpoint_interval);
        if self.replica {
            c.kafka.replica = true;
        }
        if self.olap.is_some() {
            c.olap.broker = self.olap.clone();
        }
        self.kafka.apply(c);
    }
}

impl UpArgs {
    /// The effective configuration of `rtap up` (and `rtap config`).
    pub fn config(&self) -> anyhow::Result<RtapConfig> {
        let mut c = self.api.common.load()?;
        self.api.apply(&mut c);
        self.pipeline.apply(&mut c);
        c.validate()?;
        Ok(c)
    }
}

impl BackfillArgs {
    /// The effective configuration of `rtap backfill`: its pipeline generates nothing live
    /// and serves on ports picked at random, on loopback only.
    pub fn config(&self) -> anyhow::Result<RtapConfig> {
        let mut c = self.common.load()?;
        if self.seed.is_some() {
            c.generator.seed = self.seed;
        }
        if self.database_url.is_some() {
            c.store.database_url = self.database_url.clone();
        }
        self.kafka.apply(&mut c);
        c.generator.max_orders = Some(0);
        // Its servers are only a side effect of running the pipeline: never open to others.
        c.http.bind = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        c.http.api_port = 0;
        c.http.http_port = 0;
        c.http.dashboard_port = 0;
        c.validate()?;
        Ok(c)
    }
}

impl ServeArgs {
    /// The effective configuration of `rtap serve`.
    pub fn config(&self) -> anyhow::Result<RtapConfig> {
        let mut c = self.common.load()?;
        self.pipeline.apply(&mut c);
        c.validate()?;
        Ok(c)
    }
}

impl ProduceArgs {
    /// The effective configuration of `rtap produce`.
    pub fn config(&self) -> anyhow::Result<RtapConfig> {
        let mut c = RtapConfig::load(self.config.as_deref())?;
        set(&mut c.data_dir, &self.data_dir);
        self.generator.apply(&mut c);
        self.kafka.apply(&mut c);
        c.validate()?;
        Ok(c)
    }
}

impl QueryArgs {
    /// The effective configuration of `rtap query`.
    pub fn config(&self) -> anyhow::Result<RtapConfig> {
        let mut c = self.common.load()?;
        set(&mut c.http.http_port, &self.http_port);
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rate_is_validated() {
        assert_eq!(parse_rate("31"), Ok(31.0));
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("inf").is_err());
    }

    #[test]
    fn flags_override_the_file_and_the_file_the_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("rtap.toml");
        std::fs::write(&file, "[http]\nhttp_port = 7000\ndashboard_port = 7001\n").expect("write");
        let cli = Cli::try_parse_from([
            "rtap",
            "up",
            "--config",
            file.to_str().expect("utf-8"),
            "--http-port",
            "7100",
        ])
        .expect("parses");
        let Command::Up(args) = cli.command else {
            panic!("not up");
        };
        let c = args.config().expect("config");
        assert_eq!(c.http.http_port, 7100, "flag over file");
        assert_eq!(c.http.dashboard_port, 7001, "file over default");
        assert_eq!(c.http.api_port, 5001, "default");
    }
}
