//! The column cache: scans that take sealed segments' decoded columns from memory answer
//! exactly as scans of the files, read no file once the columns are kept, stay within the
//! cache's budget, and forget segments that left the table.

use std::sync::Arc;

use datafusion::arrow::array::{
    AsArray, BooleanArray, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::{collect, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use table::{ColumnCacheStats, RealtimeTable, TableConfig, TableScan};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time_ms", DataType::Int64, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, true),
        Field::new("flag", DataType::Boolean, false),
    ]))
}

const T0: i64 = 1_000_000;

/// Rows `ids` (row `i` at `T0 + 10 * i`; every 7th amount NULL, every 3rd flagged) in a
/// shuffled order: a seal sorts them by time.
fn batch(ids: impl Iterator<Item = i64>) -> RecordBatch {
    let mut ids: Vec<i64> = ids.collect();
    ids.sort_by_key(|i| (i * 7_919) % 10_007);
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|i| T0 + 10 * i),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("o-{i}")),
            )),
            Arc::new(Int64Array::from_iter(
                ids.iter().map(|i| (i % 7 != 0).then_some(i % 100)),
            )),
            Arc::new(BooleanArray::from_iter(
                ids.iter().map(|i| Some(i % 3 == 0)),
            )),
        ],
    )
    .expect("batch")
}

fn open(dir: &std::path::Path, config: TableConfig) -> Arc<RealtimeTable> {
    open_with(dir, schema(), config)
}

fn open_with(dir: &std::path::Path, schema: SchemaRef, config: TableConfig) -> Arc<RealtimeTable> {
    Arc::new(
        RealtimeTable::open(
            dir,
            schema,
            "time_ms",
            &[],
            config,
            clock::ManualClock::new(0),
        )
        .expect("open"),
    )
}

/// Four sealed segments of 3,000 rows (rows 0 to 11,999), three row groups each, no merges.
fn four_segments(dir: &std::path::Path) -> Arc<RealtimeTable> {
    let t = open(
        dir,
        TableConfig {
            merge_min_segments: 1_000,
            row_group_rows: 1_000,
            ..TableConfig::default()
        },
    );
    for s in 0..4 {
        t.append(batch(s * 3_000..(s + 1) * 3_000)).expect("append");
        t.flush().expect("seal");
    }
    t
}

/// A context with the table as `c` (with a column cache of `budget` bytes) and as `p` (none).
fn context(t: &Arc<RealtimeTable>, budget: usize) -> (SessionContext, TableScan) {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    let cached = TableScan::new(t.clone()).with_column_cache(budget);
    ctx.register_table("c", Arc::new(cached.clone()))
        .expect("register");
    ctx.register_table("p", Arc::new(TableScan::new(t.clone())))
        .expect("register");
    (ctx, cached)
}

/// The query's answer as text, and its physical plan.
async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
    let plan = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .create_physical_plan()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batches = collect(plan.clone(), ctx.task_ctx())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let text = pretty_format_batches(&batches).expect("format").to_string();
    let shown = displayable(plan.as_ref()).indent(true).to_string();
    (text, shown)
}

/// Every query of `queries` (with `{t}` for the table) answered by `c` as by `p`.
async fn same_answers(ctx: &SessionContext, queries: &[String]) -> Vec<String> {
    let mut plans = Vec::new();
    for q in queries {
        // One alias for both: the answers' headers name it.
        let (cached, plan) = run(ctx, &q.replace("{t}", "c AS t")).await;
        let (plain, _) = run(ctx, &q.replace("{t}", "p AS t")).await;
        assert_eq!(cached, plain, "{q}\n{plan}");
        plans.push(plan);
    }
    plans
}

fn bounded(lo: i64, hi: i64) -> Vec<String> {
    let (lo, hi) = (T0 + lo, T0 + hi);
    vec![
        format!(
            "SELECT COUNT(*), SUM(amount), COUNT(amount), SUM(CASE WHEN flag THEN 1 ELSE 0 END) \
             FROM {{t}} WHERE time_ms >= {lo} AND time_ms < {hi}"
        ),
        format!(
            "SELECT time_ms, id, amount FROM {{t}} WHERE time_ms BETWEEN {lo} AND {hi} \
             AND amount > 50 ORDER BY time_ms"
        ),
    ]
}

#[tokio::test]
async fn kept_columns_answer_as_the_files_do_and_no_file_is_read_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Four segments, then 500 rows in memory.
    let t = four_segments(dir.path());
    t.append(batch(12_000..12_500)).expect("append");
    let (ctx, cached) = context(&t, 8 << 20);

    // Bounds inside a row group, across row groups and segments, into memory; and none.
    let mut queries: Vec<String> = [
        (0, 10),
        (15_005, 15_015),
        (25_000, 65_000),
        (29_990, 30_010),
        (100_000, 124_000),
        (118_000, 200_000),
    ]
    .into_iter()
    .flat_map(|(lo, hi)| bounded(lo, hi))
    .collect();
    queries.push("SELECT COUNT(*), SUM(amount) FROM {t}".into());
    queries.push("SELECT COUNT(*) FROM {t}".into());
    queries.push("SELECT time_ms, id FROM {t} ORDER BY time_ms DESC LIMIT 5".into());
    same_answers(&ctx, &queries).await;
    // Known by construction: rows 2,500 to 6,499, of which 4,000 / 7 (rounded) have no amount.
    let (text, _) = run(
        &ctx,
        &format!(
            "SELECT COUNT(*) AS n, COUNT(amount) AS a FROM c WHERE time_ms >= {} AND time_ms < {}",
            T0 + 25_000,
            T0 + 65_000
        ),
    )
    .await;
    let no_amount = (2_500..6_500).filter(|i| i % 7 == 0).count();
    assert!(
        text.contains(&format!("| 4000 | {} |", 4_000 - no_amount)),
        "{text}"
    );
    let first = cached.column_cache_stats();
    assert!(first.decoded > 0 && first.arrays > 0, "{first:?}");
    assert_eq!(first.bytes, cached_recount(&cached));

    // Asked again: nothing decoded, every segment from the cache.
    let plans = same_answers(&ctx, &queries).await;
    let again = cached.column_cache_stats();
    assert_eq!(again.decoded, first.decoded, "{again:?}");
    assert!(again.hits > first.hits, "{again:?}");
    assert!(plans[4].contains("CachedRowsExec"), "{}", plans[4]);
    assert!(!plans[4].contains(".parquet"), "{}", plans[4]);

    // With the files gone, the cached scan still answers what it kept (the plain one cannot).
    let answers: Vec<String> = {
        let mut v = Vec::new();
        for q in &queries[..4] {
            v.push(run(&ctx, &q.replace("{t}", "p AS t")).await.0);
        }
        v
    };
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "parquet") {
            std::fs::remove_file(&path).expect("remove");
        }
    }
    for (q, want) in queries[..4].iter().zip(answers) {
        let (text, plan) = run(&ctx, &q.replace("{t}", "c AS t")).await;
        assert_eq!(text, want, "{q}\n{plan}");
    }
    let plain = ctx
        .sql(&queries[0].replace("{t}", "p"))
        .await
        .expect("plan")
        .collect()
        .await;
    assert!(plain.is_err(), "the files are gone");
}

#[tokio::test]
async fn the_budget_bounds_what_is_kept_and_what_one_scan_decodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = four_segments(dir.path());
    // 64 KiB: one scan may decode 32 KiB, the two columns of one or two row groups (8 KB each);
    // with the row-group summaries of a few files, a few such scans fill it.
    let budget = 64 << 10;
    let (ctx, cached) = context(&t, budget);
    let one_group = |g: i64| {
        format!(
            "SELECT COUNT(*), SUM(amount) FROM {{t}} WHERE time_ms >= {} AND time_ms < {}",
            T0 + g * 10_000,
            T0 + (g + 1) * 10_000
        )
    };
    for g in 0..12 {
        same_answers(&ctx, &[one_group(g)]).await;
        let stats = cached.column_cache_stats();
        assert!(stats.bytes <= budget, "group {g}: {stats:?}");
        assert_eq!(stats.bytes, cached_recount(&cached), "group {g}");
    }
    let small = cached.column_cache_stats();
    assert!(
        small.decoded >= 4,
        "row groups decoded one scan at a time: {small:?}"
    );
    // A scan of everything would decode 24 arrays of 8 KB (less what is kept): over its share,
    // it decodes at most two row groups and reads the rest as files.
    let plans = same_answers(&ctx, &["SELECT COUNT(*), SUM(amount) FROM {t}".to_string()]).await;
    let after: ColumnCacheStats = cached.column_cache_stats();
    assert!(after.bytes <= budget, "{after:?}");
    assert!(plans[0].contains(".parquet"), "{}", plans[0]);
    assert!(
        after.decoded <= small.decoded + 2,
        "a scan decodes at most its share: {small:?} then {after:?}"
    );
    // A file the cache knows (some of its columns kept) is held to the share too: every
    // column of the newest segment's three row groups is about 60 KB.
    same_answers(&ctx, &[one_group(11)]).await;
    let known = cached.column_cache_stats();
    let every_column = format!(
        "SELECT * FROM {{t}} WHERE time_ms >= {} ORDER BY time_ms",
        T0 + 90_000
    );
    let plans = same_answers(&ctx, &[every_column]).await;
    assert!(plans[0].contains(".parquet"), "{}", plans[0]);
    assert_eq!(cached.column_cache_stats().decoded, known.decoded);
}

#[tokio::test]
async fn merged_segments_out_of_order_are_cut_row_by_row_and_their_inputs_forgotten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = open(
        dir.path(),
        TableConfig {
            merge_min_segments: 2,
            merge_target_rows: 1_000_000,
            row_group_rows: 10_000,
            ..TableConfig::default()
        },
    );
    let (ctx, cached) = context(&t, 8 << 20);
    let queries: Vec<String> = [(0, 1_000), (5_005, 25_015), (39_000, 45_000)]
        .into_iter()
        .flat_map(|(lo, hi)| bounded(lo, hi))
        .collect();
    // Even rows, then odd rows over the same times: two sealed segments, each sorted.
    t.append(batch((0..4_000).map(|i| 2 * i))).expect("append");
    t.flush().expect("seal");
    same_answers(&ctx, &queries).await;
    t.append(batch((0..4_000).map(|i| 2 * i + 1)))
        .expect("append");
    t.flush().expect("seal");
    same_answers(&ctx, &queries).await;
    let before = cached.column_cache_stats();
    // Their merge concatenates them: one row group whose times go up, then down and up again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while t.snapshot().segments.len() != 1 {
        let report = t.maintain();
        assert!(report.failed().is_none(), "{report:?}");
        assert!(std::time::Instant::now() < deadline, "no merge");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(t.snapshot().segments[0].entry.rows, 8_000);
    // Its times are not in order: the cut goes row by row.
    let path = t.snapshot().segments[0].path.clone();
    let times: Vec<i64> = table::segment::read_batches(&path)
        .expect("read")
        .flat_map(|b| {
            let b = b.expect("batch");
            let times = b.column(0).as_primitive::<Int64Type>().values().to_vec();
            times
        })
        .collect();
    assert!(
        times.windows(2).any(|w| w[0] > w[1]),
        "merged rows out of order"
    );
    let plans = same_answers(&ctx, &queries).await;
    assert!(plans[0].contains("CachedRowsExec"), "{}", plans[0]);
    let (text, _) = run(
        &ctx,
        &format!(
            "SELECT COUNT(*) AS n FROM c WHERE time_ms >= {} AND time_ms < {}",
            T0 + 5_005,
            T0 + 25_015
        ),
    )
    .await;
    assert!(text.contains("| 2001 |"), "rows 501 to 2,501: {text}");
    // The inputs' columns are gone: only the merged segment's four (time, id, amount and flag
    // of its one row group) are kept.
    let after = cached.column_cache_stats();
    assert!(before.arrays >= 8, "{before:?}");
    assert_eq!(after.arrays, 4, "{after:?}");
    assert_eq!(after.bytes, cached_recount(&cached));
}

#[tokio::test]
async fn rows_held_by_plans_stay_within_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = four_segments(dir.path());
    // Twelve scans of one row group each (about 26 KB of rows apiece) in one query: plans may
    // hold 128 KiB of the cache's rows, so some scans read their files.
    let budget = 128 << 10;
    let (ctx, cached) = context(&t, budget);
    let query = |table: &str| {
        let parts: Vec<String> = (0..12)
            .map(|g| {
                format!(
                    "SELECT time_ms, id, amount FROM {table} WHERE time_ms >= {} AND time_ms < {}",
                    T0 + g * 10_000,
                    T0 + (g + 1) * 10_000
                )
            })
            .collect();
        format!(
            "SELECT * FROM ({}) ORDER BY time_ms",
            parts.join(" UNION ALL ")
        )
    };
    let (want, _) = run(&ctx, &query("p")).await;
    let plan = ctx
        .sql(&query("c"))
        .await
        .expect("plan")
        .create_physical_plan()
        .await
        .expect("physical plan");
    let held = cached.column_cache_stats();
    assert!(held.lent > 0 && held.lent <= budget, "{held:?}");
    let text = displayable(plan.as_ref()).indent(true).to_string();
    assert!(text.contains("CachedRowsExec"), "{text}");
    assert!(text.contains(".parquet"), "{text}");
    let batches = collect(plan.clone(), ctx.task_ctx()).await.expect("run");
    let got = pretty_format_batches(&batches).expect("format").to_string();
    assert_eq!(got, want);
    drop(plan);
    assert_eq!(
        cached.column_cache_stats().lent,
        0,
        "released with the plan"
    );
    let stats = cached.column_cache_stats();
    assert_eq!(stats.bytes, cached_recount(&cached));
}

/// Scans that need a nested column read the files and leave the cache as it was: a minute of
/// line items would otherwise push out the narrow columns the overview asks for every second.
#[tokio::test]
async fn scans_of_nested_columns_read_the_files_and_keep_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let item = Arc::new(Field::new("item", DataType::Utf8, true));
    let schema = Arc::new(Schema::new(vec![
        Field::new("time_ms", DataType::Int64, false),
        Field::new("amount", DataType::Int64, true),
        Field::new("tags", DataType::List(item), true),
    ]));
    let t = open_with(
        dir.path(),
        schema.clone(),
        TableConfig {
            merge_min_segments: 1_000,
            row_group_rows: 1_000,
            ..TableConfig::default()
        },
    );
    // Row i at T0 + 10 i, with 1 + i % 4 tags.
    let mut tags = ListBuilder::new(StringBuilder::new());
    for i in 0..3_000 {
        for k in 0..=(i % 4) {
            tags.values().append_value(format!("tag-{k}"));
        }
        tags.append(true);
    }
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(
                (0..3_000).map(|i| T0 + 10 * i),
            )),
            Arc::new(Int64Array::from_iter_values((0..3_000).map(|i| i % 100))),
            Arc::new(tags.finish()),
        ],
    )
    .expect("batch");
    t.append(batch).expect("append");
    t.flush().expect("seal");
    let (ctx, cached) = context(&t, 8 << 20);
    let bounds = format!("time_ms >= {} AND time_ms < {}", T0 + 5_000, T0 + 25_000);
    let narrow = format!("SELECT COUNT(*), SUM(amount) FROM {{t}} WHERE {bounds}");
    let nested =
        format!("SELECT COUNT(*) AS n, SUM(array_length(tags)) AS tags FROM {{t}} WHERE {bounds}");

    same_answers(&ctx, std::slice::from_ref(&narrow)).await;
    let kept = cached.column_cache_stats();
    assert!(kept.decoded > 0 && kept.bytes > 0, "{kept:?}");

    let plans = same_answers(&ctx, std::slice::from_ref(&nested)).await;
    assert!(plans[0].contains(".parquet"), "{}", plans[0]);
    assert!(!plans[0].contains("CachedRowsExec"), "{}", plans[0]);
    let after = cached.column_cache_stats();
    assert_eq!(after.decoded, kept.decoded, "nothing decoded: {after:?}");
    assert_eq!(
        after.bytes, kept.bytes,
        "nothing kept or evicted: {after:?}"
    );
    // Rows 500 to 2,499: 500 runs of 1 + 2 + 3 + 4 tags.
    let (text, _) = run(&ctx, &nested.replace("{t}", "c")).await;
    assert!(text.contains("| 2000 | 5000 |"), "{text}");

    // The narrow query still answers from memory (a sanity check: with this budget the tags
    // would have fitted beside it; the counters above are what tell the bypass).
    let plans = same_answers(&ctx, std::slice::from_ref(&narrow)).await;
    assert!(plans[0].contains("CachedRowsExec"), "{}", plans[0]);
    assert!(!plans[0].contains(".parquet"), "{}", plans[0]);
}

fn cached_recount(scan: &TableScan) -> usize {
    scan.column_cache().expect("a column cache").recount()
}
