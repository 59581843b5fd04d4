//! `rtap up`: everything on this machine.

use crate::cli::UpArgs;
use crate::pipeline::{self, Mode};

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let running = pipeline::start(&config, Mode::Up, clock::system()).await?;
    running.print_banner();
    crate::signals::stop_signal().await;
    running.shutdown().await
}
