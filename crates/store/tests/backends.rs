//! The same scenarios against both backends: the embedded redb store and a real Postgres.

use std::sync::Arc;
use std::time::Duration;

use store::testing::fresh_postgres_url;
use store::{EmbeddedStore, NewOrder, OrderStore, PostgresStore};

fn order(n: u64) -> NewOrder {
    NewOrder {
        order_id: format!("order-{n}"),
        json: format!("{{\"n\":{n}}}"),
    }
}

fn numbers(docs: &[String]) -> Vec<u64> {
    docs.iter()
        .map(|d| {
            d.trim_start_matches("{\"n\":")
                .trim_end_matches('}')
                .parse()
                .expect("a test document")
        })
        .collect()
}

async fn paging_scenario(store: Arc<dyn OrderStore>) {
    assert_eq!(store.count().await.expect("count"), 0);
    let empty = store.slice(0, 10).await.expect("slice");
    assert_eq!((empty.total, empty.orders.len()), (0, 0));
    store.health().await.expect("healthy");

    assert_eq!(
        store
            .append(&(1..=20).map(order).collect::<Vec<_>>())
            .await
            .expect("append"),
        20
    );
    assert_eq!(
        store
            .append(&[order(21), order(22), order(23), order(24), order(25)])
            .await
            .expect("append"),
        25
    );
    assert_eq!(store.count().await.expect("count"), 25);

    let first = store.slice(0, 10).await.expect("slice");
    assert_eq!(first.total, 25);
    assert_eq!(numbers(&first.orders), (1..=10).collect::<Vec<_>>());
    let last = store.slice(20, 10).await.expect("slice");
    assert_eq!(numbers(&last.orders), vec![21, 22, 23, 24, 25]);
    let beyond = store.slice(30, 10).await.expect("slice");
    assert_eq!((beyond.total, beyond.orders.len()), (25, 0));
    let huge = store
        .slice(u64::MAX - 5, 1000)
        .await
        .expect("slice at the end of u64");
    assert_eq!((huge.total, huge.orders.len()), (25, 0));

    // An order id is unique: a batch repeating one is refused whole.
    assert!(store.append(&[order(26), order(3)]).await.is_err());
    assert_eq!(
        store.count().await.expect("count"),
        25,
        "a failed append stores nothing"
    );
}

async fn stable_paging_under_concurrent_inserts(store: Arc<dyn OrderStore>) {
    store
        .append(&(1..=100).map(order).collect::<Vec<_>>())
        .await
        .expect("seed");
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut next = 101;
            for _ in 0..40 {
                let batch: Vec<NewOrder> = (next..next + 25).map(order).collect();
                store.append(&batch).await.expect("append");
                next += 25;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut reads = 0;
    let mut last_total = 0;
    while !writer.is_finished() || reads < 20 {
        for page in 0..3u64 {
            let s = store.slice(page * 50, 50).await.expect("slice");
            assert!(s.total >= last_total, "the total never goes back");
            last_total = s.total;
            let expected: Vec<u64> = (page * 50 + 1..=(page * 50 + 50).min(s.total)).collect();
            assert_eq!(numbers(&s.orders), expected);
        }
        // The newest page holds consecutive orders up to the total, never a gap.
        let offset = last_total.saturating_sub(10);
        let got = numbers(&store.slice(offset, 10).await.expect("slice").orders);
        assert_eq!(got.first().copied(), Some(offset + 1));
        for w in got.windows(2) {
            assert_eq!(w[1], w[0] + 1, "positions are consecutive");
        }
        reads += 1;
    }
    writer.await.expect("writer");
    assert_eq!(store.count().await.expect("count"), 1100);
    let all = store.slice(0, 2000).await.expect("slice");
    assert_eq!(numbers(&all.orders), (1..=1100).collect::<Vec<_>>());
}

fn embedded() -> (tempfile::TempDir, Arc<dyn OrderStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&dir.path().join("orders.redb")).expect("open");
    (dir, Arc::new(store))
}

async fn postgres(label: &str) -> Arc<dyn OrderStore> {
    let url = fresh_postgres_url(label).await;
    Arc::new(PostgresStore::connect(&url).await.expect("connect"))
}

#[tokio::test]
async fn embedded_paging() {
    let (_dir, store) = embedded();
    paging_scenario(store).await;
}

#[tokio::test]
async fn postgres_paging() {
    paging_scenario(postgres("paging").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_stable_paging() {
    let (_dir, store) = embedded();
    stable_paging_under_concurrent_inserts(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stable_paging() {
    stable_paging_under_concurrent_inserts(postgres("stable").await).await;
}

#[tokio::test]
async fn embedded_store_reopens_with_its_orders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/dir/orders.redb");
    {
        let store = EmbeddedStore::open(&path).expect("open");
        store
            .append(&(1..=7).map(order).collect::<Vec<_>>())
            .await
            .expect("append");
    }
    let store = EmbeddedStore::open(&path).expect("reopen");
    let s = store.slice(0, 100).await.expect("slice");
    assert_eq!(numbers(&s.orders), (1..=7).collect::<Vec<_>>());
}

#[tokio::test]
async fn postgres_errors_are_clear() {
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:1/nowhere")
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    let err = PostgresStore::connect("not a url")
        .await
        .expect_err("bad url");
    assert!(err.to_string().contains("bad database URL"), "{err}");
}
