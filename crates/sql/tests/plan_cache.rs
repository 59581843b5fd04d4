//! The plan cache (`sql.plan_cache_entries`) on a real table: a repeated query text is planned
//! once, and still answers exactly what planning it afresh would: `ago()` at the moment of
//! each run, rows appended since the last run, each run's own parameters, Pinot's default LIMIT
//! only where Pinot's dialect answers, and the cache holds no more plans than configured.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::ScalarValue;
use ingest::{IngestConfig, Ingestor, Message};
use orders::{Generator, GeneratorConfig};
use sql::{Lane, QueryOutput, SqlConfig, SqlEngine, SqlError};
use table::{RealtimeTable, TableConfig};

const T0: i64 = 1_795_618_800_000;
/// Orders stored at the start, 100 ms apart from T0; the clock stands right after the last.
const ROWS: u64 = 10_000;
/// Orders appended later, continuing the same spacing.
const MORE: u64 = 500;

struct Fixture {
    engine: SqlEngine,
    table: Arc<RealtimeTable>,
    clock: Arc<clock::ManualClock>,
    later: Vec<Vec<u8>>,
    ingestor: Ingestor,
    _dir: tempfile::TempDir,
}

fn fixture(plan_cache_entries: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock::ManualClock::new(T0 + ROWS as i64 * 100);
    let table = common::order_table(dir.path(), TableConfig::default(), clock.clone());
    let mut g = Generator::new(GeneratorConfig::default());
    let mut docs: Vec<Vec<u8>> = (0..ROWS + MORE)
        .map(|k| g.generate(k + 1, T0 + k as i64 * 100).to_json())
        .collect();
    let later = docs.split_off(ROWS as usize);
    let mut ingestor = Ingestor::new(IngestConfig::default());
    let batch = ingestor
        .ingest(&Message::numbered(&docs), T0 + ROWS as i64 * 100)
        .batch
        .expect("rows");
    table.append(batch).expect("append");
    let config = SqlConfig {
        plan_cache_entries,
        ..SqlConfig::default()
    };
    let engine = SqlEngine::new(table.clone(), config, clock.clone()).expect("engine");
    Fixture {
        engine,
        table,
        clock,
        later,
        ingestor,
        _dir: dir,
    }
}

fn int(out: &QueryOutput) -> i64 {
    let column = datafusion::arrow::compute::cast(out.batches[0].column(0), &DataType::Int64)
        .expect("an integer");
    column.as_primitive::<Int64Type>().value(0)
}

async fn user(engine: &SqlEngine, sql: &str) -> QueryOutput {
    engine
        .run_in(Lane::User, sql, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// (plans made, runs of a kept optimized plan) since `before`.
fn planned_since(engine: &SqlEngine, before: &sql::PlanCacheStats) -> (u64, u64) {
    let now = engine.plan_cache_stats();
    (
        now.misses - before.misses,
        now.optimized_hits - before.optimized_hits,
    )
}

/// Orders after `ms` past T0: k * 100 > ms for k in 0..rows.
fn after(ms: i64, rows: u64) -> i64 {
    (0..rows as i64).filter(|k| k * 100 > ms).count() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_plan_answers_as_a_fresh_one_would() {
    let mut f = fixture(128);
    let engine = &f.engine;

    // ago() is evaluated at each run, though the plan is kept: 599 orders in the last minute,
    // 299 once the clock has moved on 30 s.
    let last_minute = "SELECT COUNT(*) FROM orders WHERE time_ms > ago('PT1M')";
    assert_eq!(int(&user(engine, last_minute).await), after(940_000, ROWS));
    assert_eq!(int(&user(engine, last_minute).await), 599);
    f.clock.advance(30_000);
    assert_eq!(int(&user(engine, last_minute).await), after(970_000, ROWS));
    assert_eq!(int(&user(engine, last_minute).await), 299);
    let stats = engine.plan_cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (3, 1, 1));
    // ... optimized again each time: the optimizer folds ago() into a constant.
    assert_eq!(stats.optimized_hits, 0);

    // A query without a moment in it is kept optimized; rows appended since are read all the
    // same (the segments to read are chosen per run).
    let since = format!(
        "SELECT COUNT(*) FROM orders WHERE time_ms >= {}",
        T0 + 500_000
    );
    assert_eq!(int(&user(engine, &since).await), 5_000);
    let more = f
        .ingestor
        .ingest(&Message::numbered(&f.later), T0 + 2 * ROWS as i64 * 100)
        .batch
        .expect("rows");
    f.table.append(more).expect("append");
    assert_eq!(int(&user(engine, &since).await), 5_000 + MORE as i64);
    let stats = engine.plan_cache_stats();
    assert_eq!((stats.hits, stats.optimized_hits), (4, 1));

    // rtap's own queries bind their parameters per run.
    let sql = "SELECT COUNT(*) FROM orders WHERE time_ms > $1";
    for (from, want) in [
        (940_000, 599 + MORE as i64),
        (1_020_000, after(1_020_000, ROWS + MORE)),
    ] {
        let out = engine
            .run(sql, vec![ScalarValue::Int64(Some(T0 + from))])
            .await
            .expect(sql);
        assert_eq!(int(&out), want, "after {from}");
    }
    assert_eq!(engine.plan_cache_stats().hits, 5);

    // The same text through Pinot's dialect answers Pinot's default 10 rows; through the user
    // lane without it, every row: two plans.
    let all = "SELECT order_id FROM orders";
    let pinot = engine.query_pinot(all).await;
    assert_eq!(
        pinot["resultTable"]["rows"].as_array().map(Vec::len),
        Some(10),
        "{pinot}"
    );
    assert_eq!(user(engine, all).await.num_rows(), (ROWS + MORE) as usize);
    let pinot = engine.query_pinot(all).await;
    assert_eq!(
        pinot["resultTable"]["rows"].as_array().map(Vec::len),
        Some(10),
        "{pinot}"
    );
    let stats = engine.plan_cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (6, 5, 5));

    // A text with a parameter, run without its value, fails as planning it afresh would, and
    // is not kept; with the value it answers (a plan of its own, parameters bound first).
    let from = "SELECT COUNT(*) FROM orders WHERE time_ms >= $1";
    assert!(engine.run(from, Vec::new()).await.is_err());
    let out = engine
        .run(from, vec![ScalarValue::Int64(Some(T0 + 500_000))])
        .await
        .expect(from);
    assert_eq!(int(&out), 5_000 + MORE as i64);
    let stats = engine.plan_cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (6, 7, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_parameters_is_kept_optimized_and_bound_on_each_run() {
    let f = fixture(128);
    // The stored orders sealed into a segment (T0 to T0 + 999,900 ms), the later ones in memory.
    f.table.flush().expect("seal");
    assert_eq!(f.table.snapshot().segments.len(), 1);
    let mut ingestor = f.ingestor;
    let more = ingestor
        .ingest(&Message::numbered(&f.later), T0 + 2 * ROWS as i64 * 100)
        .batch
        .expect("rows");
    f.table.append(more).expect("append");
    let engine = &f.engine;
    let sql = "SELECT COUNT(*) FROM orders WHERE time_ms >= $1 AND time_ms < $2";
    let run = |lo: ScalarValue, hi: ScalarValue| async move {
        engine
            .run(sql, vec![lo, hi])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    let ms = |offset: i64| ScalarValue::Int64(Some(T0 + offset));
    // (from, to, orders, sealed segments read): in the segment; then only in memory, where the
    // segment is skipped by the bounds bound after optimization.
    let cases = [
        (100_000, 200_000, 1_000, 1),
        (1_000_000, 1_010_000, 100, 0),
        (950_000, 1_050_000, 1_000, 1),
    ];
    for (round, (from, to, orders, read)) in cases.into_iter().enumerate() {
        let out = run(ms(from), ms(to)).await;
        assert_eq!(int(&out), orders, "[{from}, {to})");
        let files = out.segments.processed - out.segments.consuming_processed;
        assert_eq!(files, read, "[{from}, {to}): segments read");
        let stats = engine.plan_cache_stats();
        assert_eq!(
            (stats.misses, stats.hits, stats.optimized_hits),
            (1, round as u64, round as u64),
            "planned once, kept optimized"
        );
    }
    // Values of other types than the placeholders' (BIGINT): planned with them, as before the
    // plan was kept, and the same answer.
    let small = ScalarValue::Int32(Some(i32::MAX));
    let text = ScalarValue::Utf8(Some((T0 + 200_000).to_string()));
    let out = run(ms(100_000), text).await;
    assert_eq!(int(&out), 1_000);
    let out = run(small, ms(200_000)).await;
    assert_eq!(int(&out), 2_000, "from 1970-01-25 to T0 + 200 s");
    // A NULL of the placeholder's type binds into the kept plan: `time_ms >= NULL` holds for no
    // row, in the segment (whose pruning must not read NULL as a bound) and in memory alike.
    let null = ScalarValue::Int64(None);
    let before = engine.plan_cache_stats();
    for (lo, hi) in [(null.clone(), ms(200_000)), (ms(100_000), null)] {
        let out = run(lo, hi).await;
        assert_eq!(int(&out), 0);
        // No bound from NULL: the segment is read, and the filter finds nothing in it.
        let files = out.segments.processed - out.segments.consuming_processed;
        assert_eq!(files, 1, "segments read with a NULL bound");
    }
    assert_eq!(
        planned_since(engine, &before),
        (0, 2),
        "NULLs bound into the kept plan"
    );

    // The overview's shape: parameters in aggregate filters too.
    let overview = "SELECT COUNT(*) FILTER (WHERE time_ms >= $2) AS now, \
                    COUNT(*) FILTER (WHERE time_ms < $2) AS before \
                    FROM orders WHERE time_ms >= $1 AND time_ms < $3";
    let before = engine.plan_cache_stats();
    for (from, split, to) in [(900_000, 960_000, 1_020_000), (0, 100_000, 150_000)] {
        let out = engine
            .run(overview, vec![ms(from), ms(split), ms(to)])
            .await
            .expect(overview);
        let column = |i: usize| {
            out.batches[0]
                .column(i)
                .as_primitive::<Int64Type>()
                .value(0)
        };
        let want = |lo: i64, hi: i64| after(lo - 1, ROWS + MORE) - after(hi - 1, ROWS + MORE);
        assert_eq!(
            (column(0), column(1)),
            (want(split, to), want(from, split)),
            "[{from}, {split}, {to})"
        );
    }
    assert_eq!(
        planned_since(engine, &before),
        (1, 1),
        "the overview kept optimized"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_holds_at_most_its_entries_and_none_when_off() {
    let f = fixture(2);
    for n in 1..=5 {
        let sql = format!("SELECT COUNT(*) + {n} FROM orders");
        assert_eq!(int(&user(&f.engine, &sql).await), ROWS as i64 + n);
    }
    let stats = f.engine.plan_cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (0, 5, 2));
    // The most recently used two are kept.
    assert_eq!(
        int(&user(&f.engine, "SELECT COUNT(*) + 5 FROM orders").await),
        ROWS as i64 + 5
    );
    assert_eq!(
        int(&user(&f.engine, "SELECT COUNT(*) + 4 FROM orders").await),
        ROWS as i64 + 4
    );
    let stats = f.engine.plan_cache_stats();
    assert_eq!((stats.hits, stats.optimized_hits), (2, 2));
    // A text longer than what is kept is planned every time and never kept.
    let long = format!("SELECT COUNT(*) FROM orders /* {} */", "x".repeat(9_000));
    assert_eq!(int(&user(&f.engine, &long).await), ROWS as i64);
    assert_eq!(int(&user(&f.engine, &long).await), ROWS as i64);
    let stats = f.engine.plan_cache_stats();
    assert_eq!((stats.hits, stats.entries), (2, 2));

    let off = fixture(0);
    for _ in 0..3 {
        assert_eq!(
            int(&user(&off.engine, "SELECT COUNT(*) FROM orders").await),
            ROWS as i64
        );
    }
    let stats = off.engine.plan_cache_stats();
    assert_eq!((stats.hits, stats.entries), (0, 0));
}

/// Every value of every column of the answer, as text.
fn text(out: &QueryOutput) -> String {
    let mut all = String::new();
    for batch in &out.batches {
        for column in batch.columns() {
            let column =
                datafusion::arrow::compute::cast(column, &DataType::Utf8).expect("as text");
            for v in column.as_string::<i32>().iter().flatten() {
                all.push_str(v);
                all.push('\n');
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_answers_the_plan_and_explain_analyze_runs_it() {
    let f = fixture(128);
    for _ in 0..2 {
        let out = user(
            &f.engine,
            "EXPLAIN SELECT COUNT(*) FROM orders WHERE time_ms >= 0",
        )
        .await;
        let plan = text(&out);
        assert!(
            plan.contains("logical_plan") && plan.contains("physical_plan"),
            "{plan}"
        );
        assert!(plan.contains("AggregateExec"), "{plan}");
    }
    let out = user(
        &f.engine,
        "EXPLAIN ANALYZE SELECT COUNT(*) FROM orders WHERE order_total >= 0",
    )
    .await;
    let plan = text(&out);
    assert!(plan.contains("output_rows"), "{plan}");
    // An EXPLAIN carries its plan as text: never kept.
    let stats = f.engine.plan_cache_stats();
    assert_eq!((stats.hits, stats.entries), (0, 0));
    // The plan explained is the one that runs: with the LIMIT every answer gets.
    let plan = text(&user(&f.engine, "EXPLAIN SELECT order_id FROM orders").await);
    assert!(plan.contains("fetch=100001"), "{plan}");
    // Sealed segments are read by path: the answer does not show the server's directories
    // (an engine without a column cache, which would answer this small segment from memory).
    f.table.flush().expect("seal");
    let reading = SqlEngine::new(
        f.table.clone(),
        SqlConfig {
            column_cache_bytes: 0,
            ..SqlConfig::default()
        },
        f.clock.clone(),
    )
    .expect("engine");
    let plan = text(
        &user(
            &reading,
            "EXPLAIN SELECT COUNT(*) FROM orders WHERE order_total > 1",
        )
        .await,
    );
    let dir = f.table.dir().to_string_lossy().to_string();
    assert!(plan.contains("<table>"), "{plan}");
    assert!(!plan.contains(dir.trim_start_matches('/')), "{plan}");
    // A plan too large to write out after every optimizer rule is not explained.
    let wide = format!(
        "EXPLAIN SELECT * FROM orders WHERE order_id IN ({})",
        (0..2_000)
            .map(|i| format!("'{i:040}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let err = f
        .engine
        .run_in(Lane::User, &wide, Vec::new())
        .await
        .expect_err("too large to explain");
    assert_eq!(err.pinot_code(), 245, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_function_of_the_moment_is_planned_every_time() {
    let f = fixture(128);
    // generate_series' arguments are folded while the SQL is planned, ago() included.
    let sql = "SELECT MAX(value) FROM generate_series(ago('PT1M'), ago('PT0S'), 1000)";
    let first = int(&user(&f.engine, sql).await);
    assert_eq!(first, T0 + ROWS as i64 * 100);
    f.clock.advance(10_000);
    assert_eq!(int(&user(&f.engine, sql).await), first + 10_000);
    assert_eq!(f.engine.plan_cache_stats().entries, 0);
}

/// `WITH a0 AS (SELECT order_id FROM orders), a1 AS (SELECT * FROM a0 UNION ALL SELECT * FROM
/// a0), ...`: the last reads the table 2^levels times.
fn doubling(levels: usize) -> String {
    let ctes: Vec<String> = std::iter::once("a0 AS (SELECT order_id FROM orders)".to_string())
        .chain((1..=levels).map(|i| {
            format!(
                "a{i} AS (SELECT * FROM a{p} UNION ALL SELECT * FROM a{p})",
                p = i - 1
            )
        }))
        .collect();
    format!("WITH {} SELECT COUNT(*) FROM a{levels}", ctes.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_ctes_expand_past_the_limit_is_refused_before_planning() {
    let f = fixture(128);
    // Eight copies of the table: answered.
    assert_eq!(int(&user(&f.engine, &doubling(3)).await), 8 * ROWS as i64);
    // 2^24 copies from 1 KB of text (13 levels took 4.6 s and 1.5 GB of a release build to
    // plan; 24 would not end): refused at once.
    let started = std::time::Instant::now();
    for sql in [
        doubling(24),
        format!("SELECT COUNT(*) FROM ({}) t", doubling(24)),
    ] {
        let err = f
            .engine
            .run_in(Lane::User, &sql, Vec::new())
            .await
            .expect_err("too many reads");
        assert_eq!(err.pinot_code(), 700, "{err}");
        assert!(err.to_string().contains("sql.max_plan_nodes"), "{err}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// `run_since` counts the time its caller spent already (`/users/{id}/orders` before it falls
/// back to SQL): with the whole limit spent, the query is refused as a timeout before anything
/// is planned or run; with time left, it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_since_counts_the_time_already_spent() {
    let f = fixture(128);
    let engine = &f.engine;
    let limit_ms = engine.config().timeout_ms;
    let sql = "SELECT COUNT(*) FROM orders WHERE time_ms >= $1";
    let params = || vec![ScalarValue::Int64(Some(T0))];
    let spent = Duration::from_millis(limit_ms + 1);
    let started = Instant::now()
        .checked_sub(spent)
        .expect("an instant the limit ago");
    match engine.run_since(started, sql, params()).await.err() {
        Some(SqlError::Timeout(ms)) => assert_eq!(ms, limit_ms),
        other => panic!("a timeout, not {other:?}"),
    }
    let stats = engine.plan_cache_stats();
    assert_eq!(stats.hits + stats.misses, 0, "nothing planned");
    let out = engine
        .run_since(Instant::now(), sql, params())
        .await
        .expect(sql);
    assert_eq!(int(&out), ROWS as i64);
}
