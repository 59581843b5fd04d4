//! Opening what the front of `rtap up` stands on: the order store and the generator's feed.

use std::sync::Arc;

use anyhow::Context;
use clock::SharedClock;
use orders::GeneratorConfig;
use sources::{FeedConfig, OrderFeed};
use store::{EmbeddedStore, OrderStore, PostgresStore};

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
            Arc::new(EmbeddedStore::open(&path).context("cannot open the embedded order store")?)
        }
    })
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
