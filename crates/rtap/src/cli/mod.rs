//! The command line: one subcommand per way of running rtap, flags shared through flattened
//! argument groups so every command spells them the same (DESIGN.md, command-line conventions).
//! Every flag also reads an `RTAP_*` environment variable.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Port of the analytics API and /query/sql (0 picks a free port and prints it).
    #[arg(long, env = "RTAP_HTTP_PORT", default_value_t = 8888)]
    pub http_port: u16,
    /// Port of the live dashboard (0 picks a free port and prints it).
    #[arg(long, env = "RTAP_DASHBOARD_PORT", default_value_t = 8501)]
    pub dashboard_port: u16,
    /// Seconds between checkpoints (table segments, windows, dedup and source position saved
    /// together, Kafka offsets committed; a crash loses nothing and redoes at most this much).
    #[arg(long, env = "RTAP_CHECKPOINT_INTERVAL", default_value_t = 5.0, value_parser = parse_interval)]
    pub checkpoint_interval: f64,
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
    /// Topic of the orders.
    #[arg(long, env = "RTAP_TOPIC", default_value = "FakeEcommOrders")]
    pub topic: String,
    /// Partitions of the topic when rtap creates it.
    #[arg(long, env = "RTAP_PARTITIONS", default_value_t = 24, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// Consumer group of ingest (rtap instances in one group split the partitions).
    #[arg(long, env = "RTAP_GROUP", default_value = "rtap")]
    pub group: String,
}

impl KafkaArgs {
    pub fn config(&self) -> Option<kafka::KafkaConfig> {
        self.kafka.as_ref().map(|brokers| kafka::KafkaConfig {
            brokers: brokers.clone(),
            topic: self.topic.clone(),
            partitions: self.partitions,
            replication: 1,
            group: self.group.clone(),
            instance_id: None,
        })
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
    /// Directory of the file that remembers the last order the broker confirmed.
    #[arg(long, env = "RTAP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
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
    /// Port of the running rtap's analytics API.
    #[arg(long, env = "RTAP_HTTP_PORT", default_value_t = 8888)]
    pub http_port: u16,
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
    /// Directory for everything rtap stores.
    #[arg(long, env = "RTAP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address to listen on; use 0.0.0.0 to serve other machines.
    #[arg(long, env = "RTAP_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
}

/// The order generator.
#[derive(Debug, Clone, Args)]
pub struct GeneratorArgs {
    /// Orders generated per second (0: as fast as the store takes them).
    #[arg(long, env = "RTAP_RATE", default_value_t = 31.0, value_parser = parse_rate)]
    pub rate: f64,
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
    /// Port of the orders API (0 picks a free port and prints it).
    #[arg(long, env = "RTAP_API_PORT", default_value_t = 5001)]
    pub api_port: u16,
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
}
