//! The supervisor of `rtap up` and `rtap serve`: runs the pipeline until Ctrl-C or SIGTERM,
//! and when it can no longer go on exactly (the ingest thread died, or Kafka took partitions
//! away without a checkpoint), shows it failed for a moment (`/api/status`, `/health` 503, the
//! summary line), then stops it and starts it again from the last checkpoint, with backoff.
//! The restart is exact for the same reason a `kill -9` is: the checkpoint holds everything up
//! to its position, and the source is read again from there.

use std::time::Duration;

use clock::SharedClock;

use super::{start, Mode};
use crate::config::RtapConfig;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub async fn run(config: RtapConfig, mode: Mode, clock: SharedClock) -> anyhow::Result<()> {
    let mut config = config;
    let mut restarts = 0u64;
    let mut backoff = FIRST_BACKOFF;
    let stop = crate::signals::stop_signal();
    tokio::pin!(stop);
    loop {
        let running = match start(&config, mode, clock.clone(), restarts).await {
            Ok(r) => r,
            // The first start's errors are the user's to fix (a port in use, a bad directory).
            Err(e) if restarts == 0 => return Err(e),
            // A restart that fails (the disk still full, the broker still away) is tried again.
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), retry_in_s = backoff.as_secs(),
                    "the pipeline could not restart; trying again");
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if restarts == 0 {
            running.print_banner();
        } else {
            tracing::info!(restarts, "the pipeline restarted from its last checkpoint");
        }
        // A restart binds the same ports (port 0 picked them the first time).
        config = running.bound_config();
        let reason = tokio::select! {
            _ = &mut stop => return running.shutdown().await.map(|_| ()),
            reason = running.failure() => reason,
        };
        tracing::error!(reason = %reason, retry_in_s = backoff.as_secs(),
            "the pipeline cannot go on exactly; restarting it from the last checkpoint");
        // Stay up, showing the failure, for the backoff; a stop signal meanwhile stops rtap.
        let stopped = tokio::select! {
            _ = &mut stop => true,
            _ = tokio::time::sleep(backoff) => false,
        };
        let made = running.shutdown().await?;
        if stopped {
            return Ok(());
        }
        // `--max-orders` counts for the whole run, not per restart.
        if let Some(max) = &mut config.generator.max_orders {
            *max = max.saturating_sub(made);
        }
        restarts += 1;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
