//! The functions that multiply their input, on a real table through the user lane: exact
//! answers below the limits, a resource-limit error (Pinot 245) naming the limit above them,
//! with the budget spent across every call of one query and fresh for the next query.

mod common;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use ingest::{IngestConfig, Ingestor, Message};
use orders::{Generator, GeneratorConfig};
use sql::{Lane, SqlConfig, SqlEngine, SqlError};
use table::TableConfig;

const T0: i64 = 1_795_618_800_000;
const ROWS: u64 = 10_000;

async fn engine_with_orders(dir: &std::path::Path) -> SqlEngine {
    engine_with(dir, SqlConfig::default().max_join_pairs).await
}

async fn engine_with(dir: &std::path::Path, max_join_pairs: u64) -> SqlEngine {
    let clock = clock::ManualClock::new(T0 + 3_600_000);
    let table = common::order_table(dir, TableConfig::default(), clock.clone());
    let mut g = Generator::new(GeneratorConfig::default());
    let docs: Vec<Vec<u8>> = (0..ROWS)
        .map(|k| g.generate(k + 1, T0 + k as i64 * 100).to_json())
        .collect();
    let msgs = Message::numbered(&docs);
    let mut ingestor = Ingestor::new(IngestConfig::default());
    table
        .append(ingestor.ingest(&msgs, T0 + 3_600_000).batch.expect("rows"))
        .expect("append");
    let config = SqlConfig {
        max_function_output: 4_000_000,
        max_value_size: 65_536,
        max_join_pairs,
        ..SqlConfig::default()
    };
    SqlEngine::new(table, config, clock).expect("engine")
}

async fn int(engine: &SqlEngine, sql: &str) -> Result<i64, SqlError> {
    let out = engine.run_in(Lane::User, sql, Vec::new()).await?;
    let column = out.batches[0].column(0).clone();
    let column =
        datafusion::arrow::compute::cast(&column, &datafusion::arrow::datatypes::DataType::Int64)
            .expect("an integer");
    let values = column.as_primitive::<Int64Type>();
    assert!(!values.is_null(0), "{sql}: NULL");
    Ok(values.value(0))
}

fn over(result: Result<i64, SqlError>, limit: &str) {
    match result {
        Err(e) => {
            assert_eq!(e.pinot_code(), 245, "{e}");
            assert!(e.to_string().contains(limit), "{e} should name {limit}");
        }
        Ok(v) => panic!("expected a refusal naming {limit}, got {v}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiplying_functions_answer_exactly_below_their_limits_and_refuse_above() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with_orders(dir.path()).await;
    // Exact answers below the limits.
    let exact: &[(&str, i64)] = &[
        ("SELECT array_length(range(0, 10, 3))", 4),
        ("SELECT array_length(range(10, 0, -4))", 3),
        ("SELECT array_length(generate_series(1, 5))", 5),
        ("SELECT length(lpad('ab', 5, '-'))", 5),
        ("SELECT CASE WHEN rpad('ab', 4, '*') = 'ab**' THEN 1 ELSE 0 END", 1),
        ("SELECT CASE WHEN replace('banana', 'an', 'AN') = 'bANANa' THEN 1 ELSE 0 END", 1),
        ("SELECT CASE WHEN regexp_replace('a1b2', '[0-9]', '#', 'g') = 'a#b#' THEN 1 ELSE 0 END", 1),
        ("SELECT CASE WHEN concat_ws('-', 'a', 'b', 'c') = 'a-b-c' THEN 1 ELSE 0 END", 1),
        ("SELECT CASE WHEN array_to_string(make_array(1, 2, 3), ',') = '1,2,3' THEN 1 ELSE 0 END", 1),
        ("SELECT array_length(array_repeat(make_array(1, 2), 3))", 3),
        ("SELECT cardinality(array_resize(make_array(1), 4, 7))", 4),
        ("SELECT length('ab' || 'cd' || order_id) FROM orders LIMIT 1", 40),
        ("SELECT CASE WHEN 'ab' || 'cd' = 'abcd' THEN 1 ELSE 0 END", 1),
        ("SELECT CASE WHEN (NULL || 'x') IS NULL THEN 1 ELSE 0 END", 1),
        ("SELECT length(CAST(order_id AS VARCHAR) || 'a') FROM orders LIMIT 1", 37),
        ("SELECT CASE WHEN (SELECT COUNT(*) FROM (SELECT customer_city || '!' AS c, COUNT(*) AS n FROM orders GROUP BY customer_city || '!') t WHERE c LIKE '%!') = (SELECT COUNT(DISTINCT customer_city) FROM orders) THEN 1 ELSE 0 END", 1),
        ("SELECT SUM(n) FROM (SELECT customer_state || 'x' AS s, COUNT(*) AS n FROM orders GROUP BY ROLLUP(customer_state || 'x')) t WHERE s IS NOT NULL", ROWS as i64),
        ("SELECT cardinality(array_replace_all(make_array(1, 2, 1), 1, 9))", 3),
        ("SELECT cardinality(array_append(array_concat(make_array(1), make_array(2, 3)), 4))", 4),
        // 10,000 rows x 5 bytes: well inside one query's budget.
        ("SELECT SUM(length(repeat('x', 5))) FROM orders", 50_000),
        ("SELECT COUNT(*) FROM orders WHERE length(concat(order_id, '-', customer_id)) > 3", ROWS as i64),
    ];
    for (query, want) in exact {
        assert_eq!(int(&engine, query).await.expect(query), *want, "{query}");
    }
    // One call per batch stays under the budget, the query as a whole does not: 10,000 rows x
    // 450 bytes = 4.5 M (a batch of 4,096 rows makes 1.8 M).
    over(
        int(&engine, "SELECT SUM(length(repeat('x', 450))) FROM orders").await,
        "sql.max_function_output",
    );
    // Spread over two functions: the same budget.
    over(
        int(
            &engine,
            "SELECT SUM(length(repeat('x', 220)) + length(lpad('y', 60))) FROM orders",
        )
        .await,
        "sql.max_function_output",
    );
    // The next query has a budget of its own.
    assert_eq!(
        int(&engine, "SELECT SUM(length(repeat('x', 5))) FROM orders")
            .await
            .expect("a fresh budget"),
        50_000
    );
    // The same text again takes its plan from the plan cache, with functions of a budget of its
    // own: 10,000 rows x 250 bytes twice would be over one budget.
    let cached = "SELECT SUM(length(repeat('x', 250))) FROM orders";
    let hits = engine.plan_cache_stats().hits;
    for _ in 0..2 {
        assert_eq!(int(&engine, cached).await.expect(cached), 2_500_000);
    }
    assert_eq!(engine.plan_cache_stats().hits, hits + 1);
    // ... and they are the bounded ones still.
    for _ in 0..2 {
        over(
            int(&engine, "SELECT SUM(length(repeat('x', 450))) FROM orders").await,
            "sql.max_function_output",
        );
    }
    assert_eq!(engine.plan_cache_stats().hits, hits + 3);
    // One value over its cap, however few rows: a join would copy it into every row.
    for query in [
        "WITH a AS (SELECT repeat('x', 1000000) s) SELECT COUNT(length(s)) FROM a, orders",
        "SELECT length(replace(repeat('a', 60000), 'a', repeat('b', 60000)))",
        "SELECT length(concat(repeat('a', 40000), repeat('a', 40000)))",
        "SELECT length(regexp_replace(repeat('a', 30000), '', repeat('b', 100), 'g'))",
        "SELECT array_length(array_repeat(range(0, 1000), 1000))",
        "SELECT length(array_to_string(range(0, 60000), ','))",
        // The size of a struct, a bytea or a fill value counts, not just how many there are.
        "SELECT cardinality(array_repeat(named_struct('a', repeat('x', 60000)), 60000))",
        "SELECT cardinality(array_repeat(arrow_cast(repeat('x', 60000), 'Binary'), 60000))",
        "SELECT cardinality(array_resize(make_array('a'), 65000, repeat('x', 60000)))",
        "SELECT cardinality(array_replace_all(array_repeat('a', 60000), 'a', repeat('x', 60000)))",
        "SELECT cardinality(array_concat(range(0, 40000), range(0, 40000)))",
        "SELECT cardinality(make_array(repeat('x', 40000), repeat('y', 40000)))",
        // Text || is the bounded concat: no CTE chain or long literal grows past the cap.
        "WITH a AS (SELECT repeat('x', 40000) s), b AS (SELECT s || s AS s FROM a) SELECT length(s) FROM b",
    ] {
        over(int(&engine, query).await, "sql.max_value_size");
    }
    // rtap's own queries are not wrapped: the same text runs there.
    let own = engine
        .run(
            "SELECT SUM(length(repeat('x', 450))) FROM orders",
            Vec::new(),
        )
        .await
        .expect("internal lane");
    assert_eq!(own.num_rows(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_caller_goes_away_stops_and_gives_back_its_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No join limit here: 10^12 rows to add up (not a COUNT(*), which statistics answer at
    // once), which would run until the query's timeout.
    let engine = engine_with(dir.path(), u64::MAX).await;
    let slow = engine.run_in(
        Lane::User,
        "SELECT SUM(a.risk_score + b.risk_score + c.risk_score) FROM orders a, orders b, orders c",
        Vec::new(),
    );
    if let Ok(answer) = tokio::time::timeout(std::time::Duration::from_millis(300), slow).await {
        panic!(
            "the cross join answered within 300 ms: {:?}",
            answer.map(|o| o.num_rows())
        );
    }
    // The caller gave up (a client that disconnects, a request timeout): the query stops and
    // its turn is free long before the query timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while engine.load().0 > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned query still runs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(engine.config().timeout_ms > 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_without_a_key_past_the_pair_limit_are_refused_before_they_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = engine_with_orders(dir.path()).await;
    // 10,000^3 pairs, and a filter that keeps none: no output batch, no moment to yield.
    let started = std::time::Instant::now();
    let err = engine
        .run_in(
            Lane::User,
            "SELECT COUNT(*) FROM orders a, orders b, orders c WHERE a.risk_score + b.risk_score + c.risk_score < 0",
            Vec::new(),
        )
        .await
        .expect_err("refused");
    assert_eq!(err.pinot_code(), 245, "{err}");
    assert!(err.to_string().contains("sql.max_join_pairs"), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("10000 x 100000000 rows") || message.contains("100000000 x 10000 rows"),
        "{message}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // A join on a key is not limited, and rtap's own queries are not either.
    assert_eq!(
        int(
            &engine,
            "SELECT COUNT(*) FROM orders a JOIN orders b ON a.order_id = b.order_id"
        )
        .await
        .expect("a join on a key"),
        10_000
    );
}
