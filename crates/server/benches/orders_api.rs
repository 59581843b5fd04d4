//! Latency of the orders API's largest page, `GET /orders?page=P&limit=1000`, over real HTTP on
//! loopback, with 100,000 stored orders, for the embedded store and (when reachable) Postgres.
//!
//! `cargo bench -p server --bench orders_api`. Postgres: `RTAP_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test` (a fresh schema is used and left for inspection).

use std::sync::Arc;
use std::time::{Duration, Instant};

use orders::{Generator, GeneratorConfig, SystemClock};
use sources::{FeedConfig, OrderFeed};
use store::{EmbeddedStore, NewOrder, OrderStore, PostgresStore};

const STORED: u64 = 100_000;
const REQUESTS: usize = 300;

async fn fill(store: &dyn OrderStore) {
    let mut generator = Generator::new(GeneratorConfig {
        seed: 5,
        ..GeneratorConfig::default()
    });
    let mut seq = store.count().await.expect("count");
    while seq < STORED {
        let batch: Vec<NewOrder> = (seq + 1..=(seq + 5_000).min(STORED))
            .map(|s| {
                let time_ms = 1_793_491_200_000 + s as i64 * 32;
                let o = generator.generate(s, time_ms);
                NewOrder {
                    order_id: o.order_id.to_string(),
                    time_ms,
                    json: o.to_json_string(),
                }
            })
            .collect();
        seq += batch.len() as u64;
        store.append(&batch).await.expect("append");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(name: &str, store: Arc<dyn OrderStore>) {
    let t = Instant::now();
    fill(store.as_ref()).await;
    let fill_secs = t.elapsed().as_secs_f64();
    let feed = Arc::new(
        OrderFeed::open(
            store,
            Arc::new(SystemClock),
            FeedConfig {
                generator: GeneratorConfig::default(),
                rate_per_sec: 31.0,
                max_orders: Some(0),
            },
        )
        .await
        .expect("feed"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, server::orders_api::router(feed)).await });
    let client = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(REQUESTS);
    let mut bytes = 0;
    for i in 0..REQUESTS + 20 {
        let page = 1 + (i * 37) % (STORED as usize / 1000);
        let t = Instant::now();
        let body = client
            .get(format!("{base}/orders?page={page}&limit=1000"))
            .send()
            .await
            .expect("request")
            .bytes()
            .await
            .expect("body");
        let elapsed = t.elapsed();
        if i >= 20 {
            latencies.push(elapsed);
            bytes = body.len();
        }
    }
    latencies.sort();
    println!(
        "{name}: GET /orders?limit=1000 with {STORED} stored ({:.1} MB/page): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {REQUESTS} requests (store filled in {fill_secs:.1} s)",
        bytes as f64 / 1e6,
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = EmbeddedStore::open(&dir.path().join("orders.redb")).expect("open");
    measure("embedded", Arc::new(embedded)).await;

    let url = store::testing::fresh_postgres_url("bench").await;
    match PostgresStore::connect(&url).await {
        Ok(pg) => measure("postgres", Arc::new(pg)).await,
        Err(e) => println!("postgres: skipped, not reachable: {e}"),
    }
}
