//! `rtap config`: prints the effective configuration as a documented TOML file.

use crate::cli::UpArgs;

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    super::print_out(&crate::config::render(&config)?)
}
