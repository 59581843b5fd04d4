//! The `--olap` broker client against a small server speaking Pinot's broker API: the bound on
//! what it reads, the bound on requests in flight, and what an unreachable or refusing broker
//! looks like. (The whole path, every endpoint through a real second rtap, is in
//! crates/rtap/tests/kafka.rs.)

use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use serde_json::{json, Value};
use server::olap::{BrokerLimits, PinotBroker};
use tokio::sync::Notify;

/// A broker whose `/query/sql` answers `body`, after `gate` is notified when there is one.
async fn fake_broker(body: Value, gate: Option<Arc<Notify>>) -> String {
    let app = axum::Router::new()
        .route(
            "/query/sql",
            post(move || {
                let body = body.clone();
                let gate = gate.clone();
                async move {
                    if let Some(g) = gate {
                        g.notified().await;
                    }
                    axum::Json(body)
                }
            }),
        )
        .route("/health", axum::routing::get(|| async { "OK" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("pinot://{addr}")
}

fn limits() -> BrokerLimits {
    BrokerLimits::with_timeout(Duration::from_secs(10))
}

fn answer(rows: Value) -> Value {
    json!({"resultTable": {"dataSchema": {"columnNames": ["a"], "columnDataTypes": ["LONG"]},
           "rows": rows}, "exceptions": []})
}

#[tokio::test]
async fn rows_come_back_and_an_answer_over_the_bound_is_refused() {
    let rows = json!([[1], [2], [3]]);
    let spec = fake_broker(answer(rows.clone()), None).await;
    let broker = PinotBroker::new(&spec, limits()).expect("broker");
    let got = broker.rows("SELECT a FROM orders").await.expect("rows");
    assert_eq!(
        Value::Array(got.into_iter().map(Value::Array).collect()),
        rows
    );
    assert_eq!(broker.stage().state, "running");

    // 3,000 rows is about 20 KB of JSON: over a 4 KB bound, refused without holding it all.
    let big: Vec<Value> = (0..3_000).map(|i| json!([i])).collect();
    let spec = fake_broker(answer(Value::Array(big)), None).await;
    let small = BrokerLimits {
        max_answer_bytes: 4_096,
        ..limits()
    };
    let broker = PinotBroker::new(&spec, small).expect("broker");
    let e = broker
        .rows("SELECT a FROM orders")
        .await
        .expect_err("too big");
    assert!(
        e.to_string().contains("answered more than 4096 bytes"),
        "{e}"
    );
    assert!(!e.is_transient(), "a refusal is not worth retrying");
}

#[tokio::test]
async fn requests_past_the_in_flight_bound_fail_as_busy_instead_of_piling_up() {
    let gate = Arc::new(Notify::new());
    let spec = fake_broker(answer(json!([[7]])), Some(gate.clone())).await;
    let one_at_a_time = BrokerLimits {
        max_in_flight: 1,
        queue_wait: Duration::from_millis(200),
        ..limits()
    };
    let broker = Arc::new(PinotBroker::new(&spec, one_at_a_time).expect("broker"));
    let first = {
        let b = broker.clone();
        tokio::spawn(async move { b.rows("SELECT 1").await })
    };
    // The first holds the only turn until the broker answers (it waits for the gate).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = broker.rows("SELECT 2").await.expect_err("busy");
    assert!(
        second.to_string().contains("is busy: 1 requests"),
        "{second}"
    );
    gate.notify_one();
    let first = first.await.expect("task").expect("the first is answered");
    assert_eq!(first, vec![vec![json!(7)]]);
    // With the turn free again, the next one goes through.
    gate.notify_one();
    assert!(broker.rows("SELECT 3").await.is_ok());
}

#[tokio::test]
async fn an_answer_without_a_result_table_is_no_rows() {
    // Older Pinot brokers leave resultTable out when every segment was pruned.
    let spec = fake_broker(json!({"exceptions": [], "numDocsScanned": 0}), None).await;
    let broker = PinotBroker::new(&spec, limits()).expect("broker");
    assert_eq!(
        broker.rows("SELECT a FROM orders").await.expect("rows"),
        Vec::<Vec<Value>>::new()
    );
}

#[tokio::test]
async fn a_refusal_and_an_unreachable_broker_are_clear_errors() {
    let refusal = json!({"exceptions": [{"errorCode": 150, "message": "SQLParsingError"}]});
    let spec = fake_broker(refusal, None).await;
    let broker = PinotBroker::new(&spec, limits()).expect("broker");
    let e = broker.rows("SELEC").await.expect_err("refused");
    assert!(
        e.to_string().contains("refused rtap's query (error 150)"),
        "{e}"
    );
    assert_eq!(broker.stage().state, "running", "it answered");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let broker = PinotBroker::new(&format!("pinot://127.0.0.1:{port}"), limits()).expect("broker");
    let e = broker.rows("SELECT 1").await.expect_err("unreachable");
    assert!(e.to_string().contains("is unreachable"), "{e}");
    broker.check().await;
    let stage = broker.stage();
    assert_eq!(stage.state, "waiting");
    assert_eq!(stage.detail["reachable"], false);
    assert_eq!(stage.detail["broker"], format!("http://127.0.0.1:{port}"));
}
