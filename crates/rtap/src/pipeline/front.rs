//! Opening what the front of `rtap up` stands on: the order store and the generator's feed.

use std::sync::Arc;

use anyhow::Context;
use clock::SharedClock;
use orders::GeneratorConfig;
use sources::{FeedConfig, OrderFeed};
use store::{EmbeddedOptions, EmbeddedStore, OrderStore, PostgresStore};

use crate::config::RtapConfig;

/// Opens the order store the configuration names.
pub async fn open_store(config: &RtapConfig) -> anyhow::Result<Arc<dyn OrderStore>> {
    Ok(match &config.store.database_url {
        Some(url) => Arc::new(
            PostgresStore::connect(url)
                .await
                .context("cannot open the Postgres order store")?,
        ),
        None => {
            let path = config.data_dir.join("orders.redb");
            let options = EmbeddedOptions {
                cache_bytes: config.store.cache_bytes,
                zstd_level: config.store.zstd_level,
            };
            Arc::new(
                EmbeddedStore::open_with(&path, options)
                    .context("cannot open the embedded order store")?,
            )
        }
    })
}

/// How often the order store's retention runs.
pub const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Applies the store's retention in the background until `stop`.
pub fn start_retention(
    config: &RtapConfig,
    store: Arc<dyn OrderStore>,
    clock: SharedClock,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    sources::feed::spawn_retention(
        store,
        clock,
        config.store_retention_ms(),
        RETENTION_EVERY,
        stop,
    )
}

/// The generator job over `store` with the configured rate and limits.
pub async fn open_feed(
    config: &RtapConfig,
    store: Arc<dyn OrderStore>,
    seed: u64,
    clock: SharedClock,
) -> anyhow::Result<OrderFeed> {
    OrderFeed::open(
        store,
        clock,
        FeedConfig {
            generator: GeneratorConfig {
                seed,
                ..GeneratorConfig::default()
            },
            rate_per_sec: config.generator.rate_per_sec,
            max_orders: config.generator.max_orders,
        },
    )
    .await
    .context("cannot read the order store")
}

/// "31 orders/s" or "as fast as possible".
pub fn rate_text(rate: f64) -> String {
    if rate > 0.0 {
        format!("{rate} orders/s")
    } else {
        "as fast as possible".to_string()
    }
}
