//! `rtap up`: everything on this machine.

use crate::cli::UpArgs;
use crate::pipeline::{self, Mode};

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    pipeline::supervise::run(config, Mode::Up, clock::system()).await
}
