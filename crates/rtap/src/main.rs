//! # rtap: real-time analytics for order events, in one binary
//!
//! The composition root: parses the command line, reads one configuration, builds each stage
//! and wires them together. Stages know nothing of each other beyond the narrow interfaces they
//! are handed here.
//!
//! Layout:
//! - `cli`: the commands and their flags (`rtap --help`).
//! - `config`: [`config::RtapConfig`], the one configuration (file < env < flags), validated once.
//! - `commands`: one file per command (`up`, `serve`, `api`, `produce`, `query`, `config`).
//! - `pinot_config`: the Apache Pinot schema and table config of `rtap pinot-config`.
//! - `pipeline`: builds the running pipeline of `up` and `serve` and stops it in order
//!   (`pipeline/mod.rs`); resuming from a checkpoint (`resume`), the ingest loop, the table's
//!   single writer (`ingest_loop`), `/api/status` and the live summary (`status`), sockets
//!   (`http`).
//! - `signals`: stop signals and seeds.
//!
//! Crates, in data-flow order: `orders` (model, catalog, generator) -> `store` (the orders API's
//! embedded or Postgres store) -> `sources` (the generator feed, Kafka) -> `ingest` (JSON ->
//! Arrow, dedup, dead letters) -> `table` (realtime table, Parquet segments) and `rolling`
//! (windows) -> `checkpoint` (their state saved as one) -> `sql` (Pinot dialect on DataFusion)
//! -> `server` (HTTP). `clock` is the one notion of "now" all of them are handed.

mod cli;
mod commands;
mod config;
mod pinot_config;
mod pipeline;
mod signals;

use clap::Parser;

/// mimalloc instead of glibc's malloc: with glibc, a process that had ingested 1 M orders held
/// over twice its heap (arenas per thread that are not given back); see BENCHMARKS.md. The
/// `system-allocator` feature keeps glibc's, for heap profilers that intercept malloc.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RTAP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Every connection, segment file being read and opened lookup index is a descriptor: take
    // what the system allows (the soft limit is often 1,024; connection limits keep the use
    // bounded below it, retention and the merge policy the segments).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
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
    match runtime.block_on(commands::run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
