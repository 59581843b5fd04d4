//! Time pruning and retention on a real table: a query bounded on `time_ms` reads only the
//! segments whose time range overlaps the bound, and segments past retention disappear (from
//! queries and from disk) while newer ones stay.

mod common;

use ingest::{schema, IngestConfig, Ingestor, Message};
use orders::{Generator, GeneratorConfig};
use sql::{SqlConfig, SqlEngine};
use table::{RealtimeTable, TableConfig};

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_795_618_800_000;

fn count(out: &sql::QueryOutput) -> i64 {
    use datafusion::arrow::array::AsArray;
    out.batches[0]
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
        .value(0)
}

#[tokio::test]
async fn bounded_queries_skip_segments_and_retention_drops_old_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = TableConfig {
        retention_ms: 30 * 24 * HOUR,
        merge_min_segments: 1_000,
        ..TableConfig::default()
    };
    // One clock for the table and SQL: an hour into day 40 (day 0 is 40 days before).
    let clock = clock::ManualClock::new(T0 + 40 * 24 * HOUR + HOUR);
    let table = common::order_table(dir.path(), config, clock.clone());
    // Four segments of 100 orders, one per day: days 0..3 (day 0 is 40 days before day 40).
    let mut g = Generator::new(GeneratorConfig::default());
    let mut ingestor = Ingestor::new(IngestConfig::default());
    let days = [0i64, 38, 39, 40];
    for (i, day) in days.iter().enumerate() {
        let docs: Vec<Vec<u8>> = (0..100)
            .map(|k| {
                g.generate(
                    i as u64 * 100 + k + 1,
                    T0 + day * 24 * HOUR + k as i64 * 1000,
                )
                .to_json()
            })
            .collect();
        let msgs = Message::numbered(&docs);
        table
            .append(
                ingestor
                    .ingest(&msgs, T0 + day * 24 * HOUR + HOUR)
                    .batch
                    .expect("rows"),
            )
            .expect("append");
        table.flush().expect("seal one segment per day");
    }
    assert_eq!(table.snapshot().segments.len(), 4);

    // Without a column cache: the removed file below shows which segments a query reads.
    let files_only = SqlConfig {
        column_cache_bytes: 0,
        ..SqlConfig::default()
    };
    let engine = SqlEngine::new(table.clone(), files_only, clock.clone()).expect("engine");
    let all = engine
        .run("SELECT COUNT(*) FROM orders", Vec::new())
        .await
        .expect("query");
    assert_eq!(
        (count(&all), all.docs_scanned, all.total_docs),
        (400, 400, 400)
    );
    // Remove the oldest segment's file behind the table's back: a query that read it would
    // fail, so the bounded queries below succeeding shows they skipped it.
    let day0_file = table.snapshot().segments[0].path.clone();
    std::fs::remove_file(&day0_file).expect("remove");
    // The last two hours touch only the newest segment.
    let recent = engine
        .run(
            "SELECT COUNT(*) FROM orders WHERE time_ms > ago('PT2H')",
            Vec::new(),
        )
        .await
        .expect("query");
    assert_eq!(count(&recent), 100);
    assert_eq!(recent.docs_scanned, 100, "only the newest segment was read");
    let two_days = engine
        .run(
            &format!(
                "SELECT COUNT(*) FROM orders WHERE time_ms BETWEEN {} AND {}",
                T0 + 38 * 24 * HOUR,
                T0 + 39 * 24 * HOUR + 50_000
            ),
            Vec::new(),
        )
        .await
        .expect("query");
    assert_eq!(count(&two_days), 151);
    assert!(
        engine
            .run("SELECT SUM(order_total) FROM orders", Vec::new())
            .await
            .is_err(),
        "an unbounded query does read it"
    );

    // Retention (30 days) at day 40: day 0's segment goes, the others stay.
    if let Some(e) = table.maintain().failed() {
        panic!("maintain: {e}");
    }
    let snap = table.snapshot();
    assert_eq!(snap.segments.len(), 3);
    assert_eq!(snap.rows(), 300);
    drop(snap);
    assert_eq!(
        count(
            &engine
                .run("SELECT COUNT(*) FROM orders", Vec::new())
                .await
                .expect("query")
        ),
        300
    );
    // The manifest on disk agrees after a reopen.
    drop(engine);
    drop(table);
    let reopened = RealtimeTable::open(
        dir.path(),
        schema::order_schema(),
        schema::TIME_MS,
        &[schema::ORDER_ID],
        config,
        clock.clone(),
    )
    .expect("reopen");
    assert_eq!(reopened.snapshot().rows(), 300);
}

/// Segments answered from the column cache (the default) count and answer as segments read
/// from their files: the same rows, `numSegmentsProcessed` and `numDocsScanned`.
#[tokio::test]
async fn cached_segments_answer_and_count_as_files_do() {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = TableConfig {
        merge_min_segments: 1_000,
        row_group_rows: 50,
        ..TableConfig::default()
    };
    let clock = clock::ManualClock::new(T0 + 3 * 24 * HOUR);
    let table = common::order_table(dir.path(), config, clock.clone());
    let mut g = Generator::new(GeneratorConfig::default());
    let mut ingestor = Ingestor::new(IngestConfig::default());
    // Three sealed days of 200 orders (four row groups each), then 100 orders in memory.
    for day in 0..4i64 {
        let n = if day < 3 { 200 } else { 100 };
        let docs: Vec<Vec<u8>> = (0..n)
            .map(|k| {
                g.generate(
                    (day * 1_000 + k + 1) as u64,
                    T0 + day * 24 * HOUR + k * 60_000,
                )
                .to_json()
            })
            .collect();
        let at = T0 + day * 24 * HOUR + n * 60_000;
        let batch = ingestor
            .ingest(&Message::numbered(&docs), at)
            .batch
            .expect("rows");
        table.append(batch).expect("append");
        if day < 3 {
            table.flush().expect("seal one segment per day");
        }
    }
    let files_only = SqlConfig {
        column_cache_bytes: 0,
        ..SqlConfig::default()
    };
    let reading = SqlEngine::new(table.clone(), files_only, clock.clone()).expect("engine");
    let caching =
        SqlEngine::new(table.clone(), SqlConfig::default(), clock.clone()).expect("engine");
    let day = |d: i64, minutes: i64| T0 + d * 24 * HOUR + minutes * 60_000;
    let queries = [
        "SELECT COUNT(*), SUM(order_total) FROM orders".to_string(),
        format!(
            "SELECT COUNT(*), SUM(order_total) FROM orders WHERE time_ms >= {} AND time_ms < {}",
            day(1, 30),
            day(2, 170)
        ),
        format!(
            "SELECT COUNT(*) FROM orders WHERE fraud_flag = true AND time_ms BETWEEN {} AND {}",
            day(0, 10),
            day(3, 50)
        ),
        format!(
            "SELECT order_id, order_total FROM orders WHERE time_ms > {} \
             ORDER BY time_ms DESC LIMIT 7",
            day(2, 100)
        ),
    ];
    for round in 0..2 {
        for q in &queries {
            let want = reading.run(q, Vec::new()).await.expect("query");
            let got = caching.run(q, Vec::new()).await.expect("query");
            let text = |o: &sql::QueryOutput| {
                pretty_format_batches(&o.batches)
                    .expect("format")
                    .to_string()
            };
            assert_eq!(text(&got), text(&want), "round {round}: {q}");
            assert_eq!(got.segments, want.segments, "round {round}: {q}");
            // A top-n over files counts the rows its threshold let through the Parquet reader;
            // kept rows are all counted, as Pinot counts every row matching the filter.
            if !q.contains("LIMIT") {
                assert_eq!(got.docs_scanned, want.docs_scanned, "round {round}: {q}");
            }
        }
    }
    let stats = caching.column_cache().expect("a column cache").stats();
    assert!(stats.hits > 0 && stats.decoded > 0, "{stats:?}");
    assert_eq!(stats.lent, 0, "no plan holds rows after its query");
}
