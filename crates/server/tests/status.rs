//! `/health?maxLag=` (what a load balancer in front of replicas checks) and the coverage an
//! instance reports when it holds only some partitions of the topic: in `/api/status` and in the
//! headers of every response.

use std::sync::{Arc, Mutex};

use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use server::status::{covered, partition_ranges, CoverageFn, Report, StageStatus, Telemetry};
use sources::Coverage;

/// What the fake pipeline reports: ingest's lag, and the partitions it holds.
#[derive(Default)]
struct Fake {
    lag: Option<u64>,
    coverage: Option<Coverage>,
}

async fn serve(fake: Arc<Mutex<Fake>>) -> String {
    let report = {
        let fake = fake.clone();
        move || {
            let f = fake.lock().expect("lock");
            Report {
                stages: vec![
                    StageStatus {
                        name: "ingest",
                        state: "running".into(),
                        detail: json!({"lag": f.lag}),
                        last_error: None,
                    },
                    StageStatus {
                        name: "table",
                        state: "running".into(),
                        detail: json!({"rows": 7}),
                        last_error: None,
                    },
                ],
                coverage: f.coverage.clone(),
            }
        }
    };
    let telemetry = Telemetry::new(report, Registry::default());
    let coverage: CoverageFn = {
        let fake = fake.clone();
        Arc::new(move || fake.lock().expect("lock").coverage.clone())
    };
    let app = covered(
        axum::Router::new()
            .route(
                "/orders/latestorders",
                axum::routing::get(|| async { axum::Json(json!([])) }),
            )
            .route(
                "/orders/overview2",
                axum::routing::get(|| async {
                    (
                        [(server::status::ANSWERED_BY, "pinot")],
                        axum::Json(json!({})),
                    )
                }),
            )
            .merge(server::status::router(telemetry)),
        coverage,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = reqwest::get(url).await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn health_with_max_lag_takes_a_replica_that_is_behind_out_of_rotation() {
    let fake = Arc::new(Mutex::new(Fake {
        lag: Some(500),
        coverage: None,
    }));
    let base = serve(fake.clone()).await;
    let (code, _, body) = get(&format!("{base}/health")).await;
    assert_eq!(
        (code, body["status"].clone()),
        (200, json!("ok")),
        "no bound: healthy"
    );
    assert_eq!(body["lag"], 500);
    let (code, _, body) = get(&format!("{base}/health?maxLag=100")).await;
    assert_eq!(code, 503);
    assert_eq!(
        body,
        json!({"status": "behind", "lag": 500, "maxLag": 100, "rows": 7})
    );
    let (code, _, _) = get(&format!("{base}/health?maxLag=500")).await;
    assert_eq!(code, 200, "at the bound is not behind");
    // Lag not known yet (no statistics from the broker): not ready.
    fake.lock().expect("lock").lag = None;
    let (code, _, body) = get(&format!("{base}/health?maxLag=100")).await;
    assert_eq!((code, body["status"].clone()), (503, json!("behind")));
    let (code, _, body) = get(&format!("{base}/health?maxLag=lots")).await;
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().expect("error").contains("maxLag"),
        "{body}"
    );
    let (code, _, _) = get(&format!("{base}/health?maxLag=-1")).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn an_instance_that_holds_some_partitions_says_which_on_every_answer() {
    let fake = Arc::new(Mutex::new(Fake::default()));
    let base = serve(fake.clone()).await;
    // A source without partitions (the embedded one): nothing is added.
    let (_, headers, _) = get(&format!("{base}/orders/latestorders")).await;
    assert!(headers.get("x-rtap-coverage").is_none());
    let (_, _, status_json) = get(&format!("{base}/api/status")).await;
    assert!(status_json.get("coverage").is_none(), "{status_json}");

    fake.lock().expect("lock").coverage = Some(Coverage {
        topic: "FakeEcommOrders".into(),
        partitions: vec![0, 1, 2, 5, 7, 8],
        topic_partitions: Some(24),
        moved: false,
    });
    let (_, headers, _) = get(&format!("{base}/orders/latestorders")).await;
    assert_eq!(headers["x-rtap-coverage"], "partial");
    assert_eq!(headers["x-rtap-partitions"], "0-2,5,7-8");
    assert_eq!(headers["x-rtap-topic-partitions"], "24");
    // The --olap broker's answer is not bounded by this instance's partitions.
    let (_, headers, _) = get(&format!("{base}/orders/overview2")).await;
    assert_eq!(headers["x-rtap-coverage"], "olap");
    assert!(headers.get("x-rtap-partitions").is_none());
    let (_, headers, status) = get(&format!("{base}/api/status")).await;
    assert_eq!(headers["x-rtap-coverage"], "partial");
    let c = &status["coverage"];
    assert_eq!(c["state"], "partial");
    assert_eq!(c["complete"], false);
    assert_eq!(c["partitions"], json!([0, 1, 2, 5, 7, 8]));
    assert_eq!(c["topicPartitions"], 24);
    assert_eq!(
        c["text"],
        "partitions 0-2,5,7-8 of the 24 of FakeEcommOrders: answers cover only those (other \
         instances in the consumer group hold the rest)"
    );

    fake.lock().expect("lock").coverage = Some(Coverage {
        topic: "FakeEcommOrders".into(),
        partitions: (0..24).collect(),
        topic_partitions: Some(24),
        moved: false,
    });
    let (_, headers, status) = get(&format!("{base}/orders/latestorders")).await;
    assert_eq!(headers["x-rtap-coverage"], "complete", "{status}");
    assert_eq!(headers["x-rtap-partitions"], "0-23");
    let (_, _, status) = get(&format!("{base}/api/status")).await;
    assert_eq!(
        status["coverage"]["text"],
        "all 24 partitions of FakeEcommOrders"
    );

    // Every partition now, but the group moved some here after others had read from them: the
    // table lacks that, so the answers are still partial.
    fake.lock().expect("lock").coverage = Some(Coverage {
        topic: "FakeEcommOrders".into(),
        partitions: (0..24).collect(),
        topic_partitions: Some(24),
        moved: true,
    });
    let (_, headers, status) = get(&format!("{base}/api/status")).await;
    assert_eq!(headers["x-rtap-coverage"], "partial");
    assert_eq!(status["coverage"]["moved"], true);
    assert!(
        status["coverage"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("lack what other instances read")),
        "{status}"
    );

    // Thousands of scattered partitions do not make a header proxies refuse.
    fake.lock().expect("lock").coverage = Some(Coverage {
        topic: "FakeEcommOrders".into(),
        partitions: (0..10_000).step_by(2).collect(),
        topic_partitions: Some(10_000),
        moved: false,
    });
    let (_, headers, _) = get(&format!("{base}/orders/latestorders")).await;
    assert_eq!(
        headers["x-rtap-partitions"],
        "5000 partitions (listed in /api/status)"
    );
    let (_, _, status) = get(&format!("{base}/api/status")).await;
    assert_eq!(
        status["coverage"]["partitions"].as_array().map(Vec::len),
        Some(5000)
    );

    // Before the broker's metadata arrives the count is unknown: never called complete.
    fake.lock().expect("lock").coverage = Some(Coverage {
        topic: "T".into(),
        partitions: vec![],
        topic_partitions: None,
        moved: false,
    });
    let (_, headers, _) = get(&format!("{base}/orders/latestorders")).await;
    assert_eq!(headers["x-rtap-coverage"], "unknown");
    assert_eq!(headers["x-rtap-partitions"], "");
}

#[test]
fn partition_ranges_are_short_and_ascending() {
    assert_eq!(partition_ranges(&[]), "");
    assert_eq!(partition_ranges(&[3]), "3");
    assert_eq!(partition_ranges(&[5, 1, 2, 3, 9, 10, 3]), "1-3,5,9-10");
    let all: Vec<i32> = (0..10_000).collect();
    assert_eq!(partition_ranges(&all), "0-9999");
    assert_eq!(
        partition_ranges(&[i32::MAX - 1, i32::MAX]),
        format!("{}-{}", i32::MAX - 1, i32::MAX)
    );
}
