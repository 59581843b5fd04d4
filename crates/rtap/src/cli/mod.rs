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
    /// Run one SQL query (Pinot dialect) and print the result: against a running rtap's
    /// analytics API, or the table under --data-dir when none answers.
    Query(QueryArgs),
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Port of the analytics API and /query/sql (0 picks a free port and prints it).
    #[arg(long, env = "RTAP_HTTP_PORT", default_value_t = 8888)]
    pub http_port: u16,
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
