//! # rtap: real-time analytics for order events, in one binary
//!
//! The composition root: parses the command line, builds each stage and wires them together.
//! Stages know nothing of each other beyond the narrow interfaces they are handed here.
//!
//! Layout:
//! - `cli`: the commands and their flags (`rtap --help`).
//! - `run`: builds and runs the stages for a command, and shuts them down in order.
//! - `pipeline`: the ingest loop, the realtime table's single writer.
//! - `produce`: `rtap produce` and the hand-off from the orders API to Kafka.
//!
//! Crates, in data-flow order: `orders` (model, catalog, generator) -> `store` (the orders API's
//! embedded or Postgres store) -> `ingest` (JSON -> Arrow, dedup, dead letters) -> `table`
//! (realtime table, Parquet segments) -> `sql` (Pinot dialect on DataFusion) -> `server` (HTTP).

mod cli;
mod pipeline;
mod produce;
mod run;
mod status;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RTAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::command(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
