//! One file per command; each reads its configuration, builds what it runs (through
//! [`crate::pipeline`] for `up` and `serve`) and stops it on Ctrl-C or SIGTERM.

mod api;
mod backfill;
mod config;
mod pinot_config;
mod produce;
mod query;
mod serve;
mod up;

use crate::cli::Command;

/// Writes `text` to stdout. A reader that stopped reading (`rtap config | head`) is not an
/// error: the rest is not wanted (`println!` would panic on the broken pipe).
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => up::run(args).await,
        Command::Backfill(args) => backfill::run(args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Api(args) => api::run(args).await,
        Command::Query(args) => query::run(args).await,
        Command::Config(args) => config::run(args),
        Command::PinotConfig(args) => pinot_config::run(&args),
    }
}
