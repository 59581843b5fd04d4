//! `rtap serve`: Kafka -> table and windows -> analytics API and dashboard.

use crate::cli::ServeArgs;
use crate::pipeline::{self, Mode};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    pipeline::supervise::run(config, Mode::Serve, clock::system()).await
}
