//! The orders API over real HTTP, against both stores (embedded redb and a real Postgres), and
//! a Postgres outage simulated by cutting a TCP proxy between the service and the database.

use std::sync::Arc;
use std::time::Duration;

use orders::{GeneratorConfig, SystemClock};
use serde_json::Value;
use sources::{FeedConfig, OrderFeed};
use store::testing::{fresh_postgres_url, test_database_url};
use store::{EmbeddedStore, OrderStore, PostgresStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

struct Running {
    base: String,
    stop: watch::Sender<bool>,
    feed_job: tokio::task::JoinHandle<u64>,
}

async fn start(store: Arc<dyn OrderStore>, rate: f64, max_orders: Option<u64>) -> Running {
    let feed = Arc::new(
        OrderFeed::open(
            store,
            Arc::new(SystemClock),
            FeedConfig {
                generator: GeneratorConfig {
                    seed: 99,
                    ..GeneratorConfig::default()
                },
                rate_per_sec: rate,
                max_orders,
            },
        )
        .await
        .expect("open feed"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stop_rx) = watch::channel(false);
    let feed_job = tokio::spawn(feed.clone().run(stop_rx));
    let app = server::orders_api::router(feed);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Running {
        base,
        stop,
        feed_job,
    }
}

async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.expect("a JSON body");
    (status, body)
}

async fn wait_for_total(base: &str, at_least: u64) -> Value {
    for _ in 0..200 {
        let (status, body) = get(&format!("{base}/orders?page=1&limit=1")).await;
        if status == 200 && body["total_orders"].as_u64().unwrap_or(0) >= at_least {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {at_least} orders after 5 s");
}

async fn api_scenario(store: Arc<dyn OrderStore>) {
    // 23 orders from the background job, then it stops: totals are exact.
    let app = start(store.clone(), 1000.0, Some(23)).await;
    assert_eq!(app.feed_job.await.expect("feed job"), 23);
    let base = &app.base;

    let (status, page) = get(&format!("{base}/orders?page=1&limit=5")).await;
    assert_eq!(status, 200);
    let keys: Vec<&String> = page.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        ["data", "limit", "page", "total_orders", "total_pages"]
    );
    assert_eq!(
        (page["limit"].as_u64(), page["page"].as_u64()),
        (Some(5), Some(1))
    );
    assert_eq!(page["total_orders"], 23);
    assert_eq!(page["total_pages"], 5);
    let data = page["data"].as_array().expect("data");
    assert_eq!(data.len(), 5);
    assert!(data
        .iter()
        .all(|o| o["order_id"].is_string() && o["customer"]["email"].is_string()));

    // Oldest first, and the pages tile the whole table without gaps or repeats.
    let mut ids = Vec::new();
    let mut times = Vec::new();
    for p in 1..=5 {
        let (_, page) = get(&format!("{base}/orders?page={p}&limit=5")).await;
        for o in page["data"].as_array().expect("data") {
            ids.push(o["order_id"].as_str().expect("id").to_string());
            times.push(o["time_ms"].as_i64().expect("time"));
        }
    }
    assert_eq!(ids.len(), 23);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 23);
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let (_, beyond) = get(&format!("{base}/orders?page=6&limit=5")).await;
    assert_eq!(beyond["data"].as_array().map(Vec::len), Some(0));
    assert_eq!(beyond["total_orders"], 23);
    let (_, default_limit) = get(&format!("{base}/orders")).await;
    assert_eq!(
        (
            default_limit["limit"].as_u64(),
            default_limit["page"].as_u64()
        ),
        (Some(1000), Some(1))
    );
    assert_eq!(default_limit["data"].as_array().map(Vec::len), Some(23));

    // POST then GET: the new order is the 24th, on the last page.
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/orders"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 201);
    let created: Value = resp.json().await.expect("json");
    assert_eq!(created["message"], "Order created");
    let new_id = created["order_id"].as_str().expect("order_id").to_string();
    let (_, last) = get(&format!("{base}/orders?page=24&limit=1")).await;
    assert_eq!(last["total_orders"], 24);
    assert_eq!(last["data"][0]["order_id"], new_id.as_str());
    let original_page_two = get(&format!("{base}/orders?page=2&limit=5")).await.1;

    // Every bad parameter is a 400 with a JSON error naming it.
    for (query, message) in [
        ("page=0", "page must be at least 1, got 0"),
        ("limit=0", "limit must be at least 1, got 0"),
        ("limit=1001", "limit 1001 is over the maximum of 1000"),
        (
            "page=abc",
            "page must be a whole number of at least 1, got \"abc\"",
        ),
        (
            "limit=ten",
            "limit must be a whole number of at least 1, got \"ten\"",
        ),
        (
            "page=-1",
            "page must be a whole number of at least 1, got \"-1\"",
        ),
        (
            "page=1.5",
            "page must be a whole number of at least 1, got \"1.5\"",
        ),
        (
            "limit=",
            "limit must be a whole number of at least 1, got \"\"",
        ),
        (
            "page=99999999999999999999999",
            "page must be a whole number of at least 1, got \"99999999999999999999999\"",
        ),
    ] {
        let (status, body) = get(&format!("{base}/orders?{query}")).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"], message, "{query}");
    }
    // A page far beyond the end is empty, not an error or an overflow.
    let (status, far) = get(&format!(
        "{base}/orders?page=18446744073709551615&limit=1000"
    ))
    .await;
    assert_eq!(
        (status, far["data"].as_array().map(Vec::len)),
        (200, Some(0))
    );

    // The rest of the surface.
    assert_eq!(
        get(&format!("{base}/health")).await,
        (200, serde_json::json!({"status": "ok"}))
    );
    let (status, banner) = get(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert!(banner["message"]
        .as_str()
        .expect("message")
        .contains("/orders"));
    let (status, missing) = get(&format!("{base}/nope")).await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"], "no such endpoint: GET /nope");
    let big = vec![b'x'; 1 << 20];
    let resp = client.post(format!("{base}/orders")).body(big).send().await;
    if let Ok(resp) = resp {
        // Either refused as too large or created without reading the body: never a 5xx.
        assert!(resp.status().as_u16() < 500, "{}", resp.status());
    }

    // Retention removes the 7 oldest: their page says so, positions do not move.
    let total = store.count().await.expect("count");
    assert_eq!(store.expire(i64::MAX, 7).await.expect("expire"), 7);
    let (status, gone) = get(&format!("{base}/orders?page=1&limit=5")).await;
    assert_eq!(status, 200);
    assert_eq!(gone["data"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        (
            &gone["total_orders"],
            &gone["expired_orders"],
            &gone["first_kept_page"]
        ),
        (&Value::from(total), &Value::from(7), &Value::from(2))
    );
    assert!(gone["message"]
        .as_str()
        .expect("message")
        .starts_with("orders 1 to 7 passed the store's retention"));
    let (_, partly) = get(&format!("{base}/orders?page=2&limit=5")).await;
    assert_eq!(
        partly["data"].as_array().expect("data")[..],
        original_page_two["data"].as_array().expect("data")[2..]
    );
    assert_eq!(partly["expired_orders"], 7);
    let (_, kept) = get(&format!("{base}/orders?page=3&limit=5")).await;
    assert!(kept.get("expired_orders").is_none(), "{kept}");
    assert_eq!(kept["data"].as_array().map(Vec::len), Some(5));
    // Everything gone: no page to point at.
    store.expire(i64::MAX, 1_000).await.expect("expire");
    let (_, none) = get(&format!("{base}/orders?page=1&limit=5")).await;
    assert_eq!(none["expired_orders"], total);
    assert!(none.get("first_kept_page").is_none(), "{none}");
    assert!(none["message"]
        .as_str()
        .expect("message")
        .starts_with(&format!("all {total} orders passed")));
    let _ = app.stop.send(true);
}

async fn stable_paging_while_orders_arrive(store: Arc<dyn OrderStore>) {
    let app = start(store, 0.0, Some(3_000)).await;
    let base = app.base.clone();
    wait_for_total(&base, 300).await;
    let (_, first) = get(&format!("{base}/orders?page=2&limit=100")).await;
    let first_ids: Vec<Value> = first["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|o| o["order_id"].clone())
        .collect();
    assert_eq!(first_ids.len(), 100);
    let mut reads = 0;
    while !app.feed_job.is_finished() || reads < 10 {
        let (_, again) = get(&format!("{base}/orders?page=2&limit=100")).await;
        let ids: Vec<Value> = again["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|o| o["order_id"].clone())
            .collect();
        assert_eq!(ids, first_ids, "page 2 changed while orders were added");
        reads += 1;
    }
    let (_, end) = get(&format!("{base}/orders?page=3&limit=1000")).await;
    assert_eq!(end["total_orders"], 3000);
    assert_eq!(end["data"].as_array().map(Vec::len), Some(1000));
    let _ = app.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("orders.redb")).expect("open");
    api_scenario(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_api() {
    let url = fresh_postgres_url("api").await;
    api_scenario(Arc::new(
        PostgresStore::connect(&url).await.expect("connect"),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_stable_paging() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("orders.redb")).expect("open");
    stable_paging_while_orders_arrive(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stable_paging() {
    let url = fresh_postgres_url("stable_api").await;
    stable_paging_while_orders_arrive(Arc::new(
        PostgresStore::connect(&url).await.expect("connect"),
    ))
    .await;
}

/// A TCP proxy to Postgres that the test can cut and restore: a real outage as the service
/// sees it (connections reset, new ones refused), without stopping the shared database.
struct Proxy {
    port: u16,
    tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(port: u16, upstream: String) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let mut tasks = JoinSet::new();
        let connections = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let held = connections.clone();
        tasks.spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let upstream = upstream.clone();
                held.lock().await.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        tasks.spawn(async move {
            // Holds the connection tasks; aborting this task drops (and so aborts) them all.
            let _keep = connections;
            std::future::pending::<()>().await;
        });
        Proxy { port, tasks }
    }

    async fn cut(mut self) -> u16 {
        self.tasks.shutdown().await;
        self.port
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_is_503_and_the_service_recovers() {
    let direct = fresh_postgres_url("outage").await;
    let base_url = test_database_url();
    let upstream = {
        let after_at = base_url
            .split('@')
            .nth(1)
            .expect("user@host in the test URL");
        after_at.split('/').next().expect("host:port").to_string()
    };
    let proxy = Proxy::start(0, upstream.clone()).await;
    let via_proxy = direct.replacen(&upstream, &format!("127.0.0.1:{}", proxy.port), 1);
    let store = PostgresStore::connect(&via_proxy)
        .await
        .expect("connect through proxy");
    let app = start(Arc::new(store), 200.0, None).await;
    let base = app.base.clone();
    wait_for_total(&base, 5).await;

    let port = proxy.cut().await;
    let mut saw_outage = false;
    for _ in 0..100 {
        let (status, body) = get(&format!("{base}/orders?page=1&limit=5")).await;
        if status == 503 {
            assert!(
                body["error"]
                    .as_str()
                    .expect("error")
                    .contains("unavailable"),
                "{body}"
            );
            saw_outage = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_outage, "GET /orders never reported the outage");
    let (status, health) = get(&format!("{base}/health")).await;
    assert_eq!(status, 500);
    assert_eq!(health["status"], "unhealthy");
    let resp = reqwest::Client::new()
        .post(format!("{base}/orders"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 503);

    let _proxy = Proxy::start(port, upstream).await;
    let before = {
        let mut recovered = None;
        for _ in 0..200 {
            let (status, body) = get(&format!("{base}/orders?page=1&limit=1")).await;
            if status == 200 {
                recovered = Some(body["total_orders"].as_u64().expect("total"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        recovered.expect("the service did not recover within 10 s of the database returning")
    };
    assert_eq!(get(&format!("{base}/health")).await.0, 200);
    // The generator job resumes too.
    wait_for_total(&base, before + 20).await;
    // Nothing was stored twice or skipped across the outage: positions 1..=total hold
    // distinct orders.
    let _ = app.stop.send(true);
    let (_, page) = get(&format!("{base}/orders?page=1&limit=1000")).await;
    let total = page["total_orders"].as_u64().expect("total") as usize;
    let mut ids: Vec<&str> = page["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|o| o["order_id"].as_str())
        .collect();
    assert_eq!(ids.len(), total.min(1000));
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total.min(1000), "an order was stored twice");
}
