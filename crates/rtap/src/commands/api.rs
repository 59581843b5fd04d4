//! `rtap api`: only the orders API (the original Flask service) with its generator.

use anyhow::Context;
use tokio::sync::watch;

use crate::cli::ApiArgs;
use crate::pipeline::{http, open_feed, open_store, rate_text, start_retention};

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let stop = crate::signals::stop_signal();
    http::warn_if_open(&config);
    let store = open_store(&config).await?;
    let seed = config
        .generator
        .seed
        .unwrap_or_else(crate::signals::random_seed);
    let feed = std::sync::Arc::new(open_feed(&config, store.clone(), seed, clock::system()).await?);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stats = std::sync::Arc::new(server::listen::ConnectionStats::default());
    let (addr, server) = http::orders_api(&config, feed.clone(), stats, stop_rx.clone()).await?;
    println!(
        "rtap api: orders API on http://{addr}  (store: {}; generator: {}, seed {seed})",
        store.describe(),
        rate_text(config.generator.rate_per_sec)
    );
    println!("  try: curl 'http://{addr}/orders?page=1&limit=5'");
    println!("  stop with Ctrl-C");
    let retention = start_retention(&config, store.clone(), clock::system(), stop_rx.clone());
    let generator = tokio::spawn(feed.run(stop_rx));
    stop.await;
    tracing::info!("stopping: generator first, then HTTP");
    let _ = stop_tx.send(true);
    let made = generator.await.context("generator task failed")?;
    let _ = retention.await;
    server
        .await
        .context("HTTP task failed")?
        .context("HTTP server failed")?;
    tracing::info!(orders_generated = made, "stopped cleanly");
    Ok(())
}
