//! `rtap serve`: Kafka -> table and windows -> analytics API and dashboard.

use crate::cli::ServeArgs;
use crate::pipeline::{self, Mode};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let running = pipeline::start(&config, Mode::Serve, clock::system()).await?;
    running.print_banner();
    crate::signals::stop_signal().await;
    running.shutdown().await
}
