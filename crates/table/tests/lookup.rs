//! Lookup indexes: `key = 'x'` answered from the segments' indexes equals the answer of a scan
//! (a brute-force model), through seals, merges, in-memory rows, segments without an index,
//! a corrupt index and a key with too many rows; and the plan really reads the indexes.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::array::{
    Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::physical_plan::displayable;
use datafusion::prelude::SessionContext;
use table::{LookupSpec, Manifest, RealtimeTable, TableConfig, TableScan};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time_ms", DataType::Int64, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("id", DataType::Utf8, false),
        Field::new("v", DataType::Float64, true),
        Field::new("other", DataType::Utf8, true),
    ]))
}

fn spec() -> Vec<LookupSpec> {
    vec![LookupSpec {
        column: "key".into(),
        carry: vec!["time_ms".into(), "id".into(), "v".into()],
    }]
}

/// A row of the model: (time, key, id, v).
type Row = (i64, Option<String>, String, Option<f64>);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Ends of keys sharing a 61-byte prefix: the 64-byte fence ends inside the multi-byte
/// characters, and "aaa" sorts before them while its fence is longer.
const STRADDLING: [&str; 5] = ["aaa", "\u{1F600}", "\u{1F600}b", "\u{e9}\u{e9}", "zz"];

/// Keys: a few very common ones, many rare ones, long ones sharing a 70-byte prefix (longer
/// than what the index keeps in memory per block), ones straddling the fence length, NULLs.
fn key_of(rng: &mut Rng) -> Option<String> {
    let long = "k".repeat(70);
    match rng.next() % 12 {
        0 => None,
        10 => Some(String::new()),
        11 => Some(format!(
            "{}{}",
            "m".repeat(61),
            STRADDLING[(rng.next() % 5) as usize]
        )),
        1 | 2 => Some(format!("hot-{}", rng.next() % 3)),
        3 | 4 => Some(format!("{long}-{}", rng.next() % 40)),
        _ => Some(format!("c-{}", rng.next() % 500)),
    }
}

fn batch(rng: &mut Rng, first_id: usize, n: usize, model: &mut Vec<Row>) -> RecordBatch {
    let rows: Vec<Row> = (0..n)
        .map(|i| {
            let t = 1_000_000 + (rng.next() % 100_000) as i64;
            let v = (rng.next() % 7 != 0).then(|| (rng.next() % 10_000) as f64 / 100.0);
            (t, key_of(rng), format!("o-{}", first_id + i), v)
        })
        .collect();
    model.extend(rows.iter().cloned());
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.clone()))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.2.clone()),
            )),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.3))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "x"))),
        ],
    )
    .expect("batch")
}

fn config() -> TableConfig {
    TableConfig {
        merge_min_segments: 3,
        merge_target_rows: 40_000,
        row_group_rows: 1_000,
        ..TableConfig::default()
    }
}

fn open(dir: &std::path::Path, lookups: bool, m: Manifest) -> RealtimeTable {
    let t = RealtimeTable::open_at(
        dir,
        schema(),
        "time_ms",
        &["id"],
        config(),
        m,
        clock::ManualClock::new(0),
    )
    .expect("open");
    if lookups {
        t.with_lookups(spec()).expect("lookups")
    } else {
        t
    }
}

/// Until the merge policy has nothing more to merge (a running merge's inputs are still listed).
fn wait_for_merges(t: &RealtimeTable) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let report = t.maintain();
        assert!(report.failed().is_none(), "{report:?}");
        if !t.merge_due() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no merge");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The query's rows as (time, key, id, v), sorted, and the text of its physical plan.
async fn query(t: &Arc<RealtimeTable>, sql: &str) -> (Vec<Row>, String) {
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(TableScan::new(t.clone())))
        .expect("register");
    let df = ctx.sql(sql).await.expect("plan");
    let plan = df.create_physical_plan().await.expect("physical plan");
    let text = displayable(plan.as_ref()).indent(true).to_string();
    let mut rows = Vec::new();
    for b in datafusion::physical_plan::collect(plan, ctx.task_ctx())
        .await
        .expect("run")
    {
        let time = b
            .column_by_name("time_ms")
            .expect("time")
            .as_primitive::<Int64Type>();
        let key = b.column_by_name("key").expect("key").as_string::<i32>();
        let id = b.column_by_name("id").expect("id").as_string::<i32>();
        let v = b
            .column_by_name("v")
            .expect("v")
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            rows.push((
                time.value(i),
                key.is_valid(i).then(|| key.value(i).to_string()),
                id.value(i).to_string(),
                v.is_valid(i).then(|| v.value(i)),
            ));
        }
    }
    rows.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    (rows, text)
}

fn expected(model: &[Row], keys: &[&str]) -> Vec<Row> {
    let mut rows: Vec<Row> = model
        .iter()
        .filter(|r| r.1.as_deref().is_some_and(|k| keys.contains(&k)))
        .cloned()
        .collect();
    rows.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    rows
}

fn quoted(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every kind of key (hot, rare, long, absent, below and above every key) equals the model;
/// with `indexed`, every segment has a usable index and no query reads a segment file.
async fn check_all(t: &Arc<RealtimeTable>, model: &[Row], indexed: bool) {
    let long = "k".repeat(70);
    let long3 = format!("{long}-3");
    let long39 = format!("{long}-39");
    let mut keys: Vec<String> = vec![
        "hot-0".into(),
        "hot-2".into(),
        "c-0".into(),
        "c-499".into(),
        "c-77".into(),
        long3.clone(),
        long39.clone(),
        long.clone(),
        "absent".into(),
        "".into(),
        " ".into(),
        "zzz".into(),
        "a".into(),
    ];
    keys.extend((0..500).step_by(37).map(|i| format!("c-{i}")));
    keys.extend(
        STRADDLING
            .iter()
            .map(|end| format!("{}{end}", "m".repeat(61))),
    );
    keys.push("m".repeat(61));
    let check_plan = |sql: &str, plan: &str| {
        if indexed {
            assert!(!plan.contains(".parquet"), "{sql}: a scan: {plan}");
        }
    };
    for key in &keys {
        let sql = format!("SELECT time_ms, key, id, v FROM t WHERE key = '{key}'");
        let (rows, plan) = query(t, &sql).await;
        assert_eq!(rows, expected(model, &[key]), "{sql}");
        check_plan(&sql, &plan);
    }
    let set = ["c-5", "hot-1", long3.as_str(), "c-5", "nope"];
    let sql = format!(
        "SELECT time_ms, key, id, v FROM t WHERE key IN ({})",
        quoted(&set)
    );
    let (rows, plan) = query(t, &sql).await;
    assert_eq!(
        rows,
        expected(model, &set),
        "{sql}: duplicates in the list count once"
    );
    check_plan(&sql, &plan);
    // Short lists (DataFusion turns them into ORs) and ORs written out.
    for sql in [
        "SELECT time_ms, key, id, v FROM t WHERE key IN ('c-7', 'hot-2')".to_string(),
        "SELECT time_ms, key, id, v FROM t WHERE key = 'c-7' OR key = 'hot-2'".to_string(),
        "SELECT time_ms, key, id, v FROM t WHERE key = 'c-7' OR key IN ('hot-2', 'c-7')"
            .to_string(),
    ] {
        let (rows, plan) = query(t, &sql).await;
        assert_eq!(rows, expected(model, &["c-7", "hot-2"]), "{sql}");
        check_plan(&sql, &plan);
    }
    // An OR over another column is not a key filter: scanned, same answer.
    let sql = "SELECT time_ms, key, id, v FROM t WHERE key = 'c-7' OR id = 'o-1'";
    let (rows, plan) = query(t, sql).await;
    let mut want: Vec<Row> = model
        .iter()
        .filter(|r| r.1.as_deref() == Some("c-7") || r.2 == "o-1")
        .cloned()
        .collect();
    want.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    assert_eq!(rows, want, "{sql}");
    if indexed {
        assert!(plan.contains(".parquet"), "{sql}: {plan}");
    }
}

#[tokio::test]
async fn lookups_equal_a_scan_through_seals_merges_and_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Arc::new(open(dir.path(), true, Manifest::default()));
    let mut rng = Rng(7);
    let mut model = Vec::new();
    let mut next = 0;
    // Small seals (merged three of one size tier at a time into one segment), then a larger
    // one, then rows that stay in memory.
    for n in [600, 700, 800, 1_800, 1_900, 12_000] {
        t.append(batch(&mut rng, next, n, &mut model))
            .expect("append");
        next += n;
        t.flush().expect("seal");
        wait_for_merges(&t);
    }
    t.append(batch(&mut rng, next, 2_000, &mut model))
        .expect("append");
    let m = t.manifest();
    // 600 + 700 + 800 merged (tier 2: 576 to 1,727 rows with a factor of 3), then merged
    // again with 1,800 and 1,900 (tier 3).
    assert!(
        m.segments.iter().any(|s| s.rows == 5_800),
        "a merged segment: {m:?}"
    );
    assert!(m.segments.iter().all(|s| s.lookups.len() == 1), "{m:?}");
    check_all(&t, &model, true).await;

    // The plan reads no segment file when the index carries the columns ...
    let (_, plan) = query(&t, "SELECT time_ms, key, id, v FROM t WHERE key = 'hot-0'").await;
    assert!(!plan.contains(".parquet"), "{plan}");
    // ... and every segment when it does not (here: `other`).
    let (_, plan) = query(
        &t,
        "SELECT time_ms, key, id, v, other FROM t WHERE key = 'hot-0'",
    )
    .await;
    assert!(plan.contains(".parquet"), "{plan}");
    // A count without columns: rows, no columns.
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(TableScan::new(t.clone())))
        .expect("register");
    let counted = ctx
        .sql("SELECT COUNT(*) FROM t WHERE key = 'hot-1'")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let n = counted[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(n as usize, expected(&model, &["hot-1"]).len());

    // Reopened at its manifest (checksums checked), the indexes answer the same.
    drop(t);
    let t = Arc::new(open(dir.path(), true, m.clone()));
    let model_sealed: Vec<Row> = model[..model.len() - 2_000].to_vec();
    check_all(&t, &model_sealed, true).await;
}

#[tokio::test]
async fn segments_without_a_readable_index_are_scanned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(11);
    let mut model = Vec::new();
    // One segment written before indexes existed ...
    let t = open(dir.path(), false, Manifest::default());
    t.append(batch(&mut rng, 0, 3_000, &mut model))
        .expect("append");
    t.flush().expect("seal");
    let m = t.manifest();
    drop(t);
    assert!(m.segments[0].lookups.is_empty());
    // ... then two with one, the second of which gets damaged.
    let t = open(dir.path(), true, m);
    for (from, n) in [(3_000, 3_000), (6_000, 3_000)] {
        t.append(batch(&mut rng, from, n, &mut model))
            .expect("append");
        t.flush().expect("seal");
    }
    let m = t.manifest();
    drop(t);
    assert_eq!(
        m.segments.iter().map(|s| s.lookups.len()).sum::<usize>(),
        2,
        "{m:?}"
    );
    let damaged = m
        .segments
        .iter()
        .rev()
        .find(|s| !s.lookups.is_empty())
        .expect("indexed");
    let path = dir.path().join(&damaged.lookups[0].file);
    let mut bytes = std::fs::read(&path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, &bytes).expect("write");
    let scanned = |plan: &str| -> Vec<String> {
        m.segments
            .iter()
            .map(|s| s.file.clone())
            .filter(|f| plan.contains(f.as_str()))
            .collect()
    };
    let t = Arc::new(open(dir.path(), true, m.clone()));
    check_all(&t, &model, false).await;
    let (_, plan) = query(&t, "SELECT time_ms, key, id, v FROM t WHERE key = 'c-1'").await;
    let files = scanned(&plan);
    assert_eq!(files.len(), 2, "the old and the damaged segment: {plan}");
    assert!(files.contains(&damaged.file), "{plan}");

    // A truncated index (same manifest, not checked on this open) is refused when opened.
    std::fs::write(&path, &bytes[..middle]).expect("truncate");
    let t = Arc::new(
        RealtimeTable::open_read_only(dir.path(), schema(), "time_ms").expect("read only"),
    );
    check_all(&t, &model, false).await;
    let (_, plan) = query(&t, "SELECT time_ms, key, id, v FROM t WHERE key = 'c-1'").await;
    let files = scanned(&plan);
    assert_eq!(files.len(), 2, "the old and the truncated segment: {plan}");
    assert!(files.contains(&damaged.file), "{plan}");

    // A missing index: the same.
    std::fs::remove_file(&path).expect("remove");
    let t = Arc::new(
        RealtimeTable::open_read_only(dir.path(), schema(), "time_ms").expect("read only"),
    );
    check_all(&t, &model, false).await;
    let (_, plan) = query(&t, "SELECT time_ms, key, id, v FROM t WHERE key = 'c-1'").await;
    assert_eq!(scanned(&plan).len(), 2, "{plan}");
}

/// A table with two sealed segments of 3,000 rows, each with its index.
fn two_indexed_segments(seed: u64) -> (tempfile::TempDir, Arc<RealtimeTable>, Rng, Vec<Row>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Arc::new(open(dir.path(), true, Manifest::default()));
    let mut rng = Rng(seed);
    let mut model = Vec::new();
    for (from, n) in [(0, 3_000), (3_000, 3_000)] {
        t.append(batch(&mut rng, from, n, &mut model))
            .expect("append");
        t.flush().expect("seal");
    }
    (dir, t, rng, model)
}

/// An index damaged after the table opened it (its footer already read): the block that
/// fails its checksum makes its segment scanned (and only it), for good.
#[tokio::test]
async fn an_index_damaged_while_open_scans_its_segment_only() {
    let (dir, t, _, model) = two_indexed_segments(17);
    check_all(&t, &model, true).await;
    let m = t.manifest();
    assert_eq!(m.segments.len(), 2, "{m:?}");
    let victim = &m.segments[0];
    // Every block: whichever block a key lands in fails its checksum.
    damage_blocks(&dir.path().join(&victim.lookups[0].file));
    let sql = "SELECT time_ms, key, id, v FROM t WHERE key = 'hot-1'";
    let (rows, plan) = query(&t, sql).await;
    assert_eq!(rows, expected(&model, &["hot-1"]));
    assert!(plan.contains(&victim.file), "{plan}");
    assert!(!plan.contains(&m.segments[1].file), "{plan}");
    // Remembered: a key whose block would still read as intact scans the segment too.
    check_all(&t, &model, false).await;
    let (_, plan) = query(&t, "SELECT time_ms, key, id, v FROM t WHERE key = 'zzz'").await;
    assert!(plan.contains(&victim.file), "{plan}");
    assert!(!plan.contains(&m.segments[1].file), "{plan}");
}

/// An index file cut short after the table opened it (the descriptor it keeps sees the cut):
/// a block past the end is refused as damage, its segment scanned (and only it), for good.
#[tokio::test]
async fn an_index_cut_short_while_open_scans_its_segment_only() {
    let (dir, t, _, model) = two_indexed_segments(23);
    check_all(&t, &model, true).await;
    let m = t.manifest();
    let victim = &m.segments[0];
    let path = dir.path().join(&victim.lookups[0].file);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    // The first blocks stay whole; the last, which a lookup of 'zzz' (above every key) reads,
    // lies past the cut.
    file.set_len(victim.lookups[0].bytes / 2).expect("truncate");
    let first = "SELECT time_ms, key, id, v FROM t WHERE key = 'c-0'";
    let (rows, plan) = query(&t, first).await;
    assert_eq!(rows, expected(&model, &["c-0"]));
    assert!(!plan.contains(".parquet"), "c-0's block is whole: {plan}");
    let (rows, plan) = query(&t, "SELECT time_ms, key, id, v FROM t WHERE key = 'zzz'").await;
    assert_eq!(rows, expected(&model, &["zzz"]));
    assert!(plan.contains(&victim.file), "{plan}");
    assert!(!plan.contains(&m.segments[1].file), "{plan}");
    // Remembered: the key in the whole first block scans that segment too now.
    let (rows, plan) = query(&t, first).await;
    assert_eq!(rows, expected(&model, &["c-0"]));
    assert!(plan.contains(&victim.file), "{plan}");
    assert!(!plan.contains(&m.segments[1].file), "{plan}");
    check_all(&t, &model, false).await;
}

/// Flips a bit every 64 bytes of an index file's blocks (not its footer).
fn damage_blocks(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let footer_at = bytes.len() - 2_000.min(bytes.len() / 2);
    for at in (64..footer_at).step_by(64) {
        bytes[at] ^= 0x10;
    }
    std::fs::write(path, &bytes).expect("write");
}

/// A merge that reads an input's index damaged after the table opened (no checksum check of
/// the whole file): the block checksums refuse it, the merged segment has no index, the
/// answers are right.
#[tokio::test]
async fn a_merge_reading_a_damaged_block_writes_no_index() {
    let (dir, t, mut rng, mut model) = two_indexed_segments(19);
    let m = t.manifest();
    damage_blocks(&dir.path().join(&m.segments[0].lookups[0].file));
    t.append(batch(&mut rng, 6_000, 3_000, &mut model))
        .expect("append");
    t.flush().expect("seal");
    wait_for_merges(&t);
    let m = t.manifest();
    assert_eq!(m.segments.len(), 1, "{m:?}");
    assert!(m.segments[0].lookups.is_empty(), "{m:?}");
    check_all(&t, &model, false).await;
}

#[tokio::test]
async fn a_key_with_too_many_rows_is_scanned_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Arc::new(open(dir.path(), true, Manifest::default()));
    let n = 80_000;
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| {
                if i % 10 == 0 {
                    "rare".to_string()
                } else {
                    "hot".to_string()
                }
            }))),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("o-{i}")),
            )),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
            Arc::new(StringArray::from_iter_values((0..n).map(|_| "x"))),
        ],
    )
    .expect("batch");
    t.append(batch).expect("append");
    t.flush().expect("seal");
    let (rows, plan) = query(&t, "SELECT time_ms, key, id, v FROM t WHERE key = 'hot'").await;
    assert_eq!(rows.len(), 72_000);
    assert!(
        plan.contains(".parquet"),
        "over the row limit: scanned: {plan}"
    );
    let (rows, plan) = query(&t, "SELECT time_ms, key, id, v FROM t WHERE key = 'rare'").await;
    assert_eq!(rows.len(), 8_000);
    assert!(rows.iter().all(|r| r.0 % 10 == 0));
    assert!(!plan.contains(".parquet"), "{plan}");
    let mut by_key: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *by_key.entry(r.1.as_deref().unwrap_or("")).or_default() += 1;
    }
    assert_eq!(by_key.len(), 1);
    // Without a query: the same budget, so no rows for the hot key (its callers ask SQL), and
    // the rare key's rows from the index, with the rows still in memory.
    let columns = ["time_ms", "id", "v"];
    let hot = table::provider::key_rows(&t, "key", "hot", &columns).expect("key_rows");
    assert!(
        hot.is_none(),
        "over the row limit: no answer from the indexes"
    );
    t.append(
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values([n, n + 1])),
                Arc::new(StringArray::from_iter_values(["rare", "hot"])),
                Arc::new(StringArray::from_iter_values(["late-rare", "late-hot"])),
                Arc::new(Float64Array::from_iter_values([0.5, 1.5])),
                Arc::new(StringArray::from_iter_values(["x", "x"])),
            ],
        )
        .expect("batch"),
    )
    .expect("append");
    let rare = table::provider::key_rows(&t, "key", "rare", &columns)
        .expect("key_rows")
        .expect("the rare key answered from its index");
    let mut ids: Vec<String> = rare
        .iter()
        .flat_map(|b| {
            assert_eq!(b.num_columns(), 3);
            let ids = b.column(1).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| ids.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    ids.sort();
    let mut want: Vec<String> = (0..n)
        .filter(|i| i % 10 == 0)
        .map(|i| format!("o-{i}"))
        .chain(["late-rare".to_string()])
        .collect();
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn a_key_with_too_many_bytes_is_scanned_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Arc::new(open(dir.path(), true, Manifest::default()));
    // 20,000 rows of 1 KB ids under one key (20 MB, over the 16 MiB a lookup may hold),
    // 5,000 under another (5 MB).
    let n = 25_000;
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| {
                if i % 5 == 0 {
                    "small"
                } else {
                    "big"
                }
            }))),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("{i:01000}")),
            )),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
            Arc::new(StringArray::from_iter_values((0..n).map(|_| "x"))),
        ],
    )
    .expect("batch");
    t.append(batch).expect("append");
    t.flush().expect("seal");
    let (rows, plan) = query(&t, "SELECT time_ms, key, id, v FROM t WHERE key = 'big'").await;
    assert_eq!(rows.len(), 20_000);
    assert!(
        plan.contains(".parquet"),
        "over the byte limit: scanned: {plan}"
    );
    let (rows, plan) = query(&t, "SELECT time_ms, key, id, v FROM t WHERE key = 'small'").await;
    assert_eq!(rows.len(), 5_000);
    assert!(rows.iter().all(|r| r.0 % 5 == 0 && r.2.len() == 1_000));
    assert!(!plan.contains(".parquet"), "{plan}");
}

/// Every index row's position points at the segment row with the same key and id.
fn check_row_positions(dir: &std::path::Path, m: &Manifest) {
    for s in &m.segments {
        let rows: Vec<RecordBatch> = table::segment::read_batches(&dir.join(&s.file))
            .expect("segment")
            .map(|b| b.expect("batch"))
            .collect();
        let mut keys = Vec::new();
        let mut ids = Vec::new();
        for b in &rows {
            let k = b.column_by_name("key").expect("key").as_string::<i32>();
            let i = b.column_by_name("id").expect("id").as_string::<i32>();
            for r in 0..b.num_rows() {
                keys.push(k.is_valid(r).then(|| k.value(r).to_string()));
                ids.push(i.value(r).to_string());
            }
        }
        let file = std::fs::File::open(dir.join(&s.lookups[0].file)).expect("index");
        let mut seen = 0;
        for block in FileReader::try_new(file, None).expect("ipc") {
            let block = block.expect("block");
            let k = block.column(0).as_string::<i32>();
            let i = block.column_by_name("id").expect("id").as_string::<i32>();
            let row = block
                .column_by_name("__row")
                .expect("row")
                .as_any()
                .downcast_ref::<UInt32Array>()
                .expect("u32");
            for j in 0..block.num_rows() {
                let r = row.value(j) as usize;
                assert_eq!(keys[r].as_deref(), Some(k.value(j)), "{} row {r}", s.file);
                assert_eq!(ids[r], i.value(j), "{} row {r}", s.file);
                seen += 1;
            }
        }
        let with_key = keys.iter().filter(|k| k.is_some()).count();
        assert_eq!(seen, with_key, "{}: every keyed row once", s.file);
    }
}

#[tokio::test]
async fn index_rows_point_at_their_segment_rows_after_merges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Arc::new(open(dir.path(), true, Manifest::default()));
    let mut rng = Rng(5);
    let mut model = Vec::new();
    let mut next = 0;
    for n in [2_000, 3_000, 1_800, 2_500] {
        t.append(batch(&mut rng, next, n, &mut model))
            .expect("append");
        next += n;
        t.flush().expect("seal");
        wait_for_merges(&t);
    }
    let m = t.manifest();
    assert!(m.segments.iter().any(|s| s.rows == 6_800), "{m:?}");
    check_row_positions(dir.path(), &m);
    // A stray index file (a crash between writing it and the manifest) goes at the next open.
    drop(t);
    let stray = dir.path().join("seg-0000000999.key.lookup");
    std::fs::write(&stray, b"x").expect("stray");
    let t = open(dir.path(), true, m);
    assert!(!stray.exists());
    drop(t);
}

#[tokio::test]
async fn a_merge_leaves_out_an_index_that_failed_its_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = open(dir.path(), true, Manifest::default());
    let mut rng = Rng(3);
    let mut model = Vec::new();
    t.append(batch(&mut rng, 0, 2_000, &mut model))
        .expect("append");
    t.flush().expect("seal");
    t.append(batch(&mut rng, 2_000, 2_000, &mut model))
        .expect("append");
    t.flush().expect("seal");
    let m = t.manifest();
    drop(t);
    let path = dir.path().join(&m.segments[0].lookups[0].file);
    let mut bytes = std::fs::read(&path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let t = Arc::new(open(dir.path(), true, m));
    t.append(batch(&mut rng, 4_000, 2_000, &mut model))
        .expect("append");
    t.flush().expect("seal");
    wait_for_merges(&t);
    let m = t.manifest();
    assert_eq!(m.segments.len(), 1, "{m:?}");
    assert!(
        m.segments[0].lookups.is_empty(),
        "not merged from a bad index: {m:?}"
    );
    check_all(&t, &model, false).await;
}

#[tokio::test]
async fn many_keys_times_many_segments_are_scanned_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Arc::new(
        RealtimeTable::open(
            dir.path(),
            schema(),
            "time_ms",
            &[],
            TableConfig {
                merge_min_segments: 1_000,
                ..config()
            },
            clock::ManualClock::new(0),
        )
        .expect("open")
        .with_lookups(spec())
        .expect("lookups"),
    );
    let mut rng = Rng(9);
    let mut model = Vec::new();
    for i in 0..20 {
        t.append(batch(&mut rng, i * 600, 600, &mut model))
            .expect("append");
        t.flush().expect("seal");
    }
    assert_eq!(t.manifest().segments.len(), 20);
    // 100 keys x 20 segments read 2,000 blocks: within the 4,096 a query may read.
    let few: Vec<String> = (0..100).map(|i| format!("c-{i}")).collect();
    let few: Vec<&str> = few.iter().map(String::as_str).collect();
    let sql = format!(
        "SELECT time_ms, key, id, v FROM t WHERE key IN ({})",
        quoted(&few)
    );
    let (rows, plan) = query(&t, &sql).await;
    assert_eq!(rows, expected(&model, &few));
    assert!(!plan.contains(".parquet"), "{plan}");
    // 256 keys x 20 segments would read 5,120: scanned instead.
    let many: Vec<String> = (0..256).map(|i| format!("c-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let sql = format!(
        "SELECT time_ms, key, id, v FROM t WHERE key IN ({})",
        quoted(&many)
    );
    let (rows, plan) = query(&t, &sql).await;
    assert_eq!(rows, expected(&model, &many));
    assert!(plan.contains(".parquet"), "{plan}");
}

#[test]
fn damaged_index_files_are_errors_never_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = open(dir.path(), true, Manifest::default());
    let mut rng = Rng(13);
    let mut model = Vec::new();
    t.append(batch(&mut rng, 0, 3_000, &mut model))
        .expect("append");
    t.flush().expect("seal");
    let entry = t.manifest().segments[0].lookups[0].clone();
    drop(t);
    let path = dir.path().join(&entry.file);
    let good = std::fs::read(&path).expect("read");
    let probe = dir.path().join("probe.lookup");
    let straddling = format!("{}{}", "m".repeat(61), STRADDLING[1]);
    let keys = ["c-1", "hot-0", "", "zzz", straddling.as_str()];
    let mut budget = table::lookup::Budget {
        rows: usize::MAX,
        bytes: usize::MAX,
        blocks: usize::MAX,
    };
    // The intact file finds every row of a key.
    std::fs::write(&probe, &good).expect("write");
    let index = table::lookup::LookupIndex::open(&probe, &entry).expect("intact");
    // (key, id) of what a lookup of `key` finds, sorted.
    let ids = |found: Vec<RecordBatch>| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = found
            .iter()
            .flat_map(|b| {
                let k = b.column(0).as_string::<i32>();
                let i = b.column_by_name("id").expect("id").as_string::<i32>();
                (0..b.num_rows())
                    .map(|r| (k.value(r).to_string(), i.value(r).to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    };
    let want: Vec<Vec<(String, String)>> = keys
        .iter()
        .map(|key| {
            let mut rows: Vec<(String, String)> = expected(&model, &[key])
                .into_iter()
                .map(|r| (key.to_string(), r.2))
                .collect();
            rows.sort();
            rows
        })
        .collect();
    for (key, want) in keys.iter().zip(&want) {
        let found = index.lookup(key, &mut budget).expect("lookup");
        assert_eq!(&ids(found), want, "{key}");
    }
    assert!(want[1].len() > 100, "hot-0 spans blocks");
    let other = table::manifest::LookupEntry {
        column: "id".into(),
        ..entry.clone()
    };
    assert!(
        table::lookup::LookupIndex::open(&probe, &other).is_err(),
        "an index on another column"
    );
    // Every byte of the footer and a spread of the body, each changed in turn: opening fails,
    // or each lookup fails or finds exactly the key's rows; nothing panics.
    let footer_start = good.len().saturating_sub(4_096);
    let positions = (0..good.len()).step_by(97).chain(footer_start..good.len());
    let mut opened = 0;
    let mut refused = 0;
    for at in positions {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[at] ^= flip;
            std::fs::write(&probe, &bad).expect("write");
            if let Ok(index) = table::lookup::LookupIndex::open(&probe, &entry) {
                opened += 1;
                for (key, want) in keys.iter().zip(&want) {
                    match index.lookup(key, &mut budget) {
                        Ok(found) => {
                            assert_eq!(&ids(found), want, "byte {at} ^ {flip:#x}, key {key:?}")
                        }
                        Err(_) => refused += 1,
                    }
                }
            }
        }
    }
    assert!(
        opened > 0,
        "damage to a block is found when the block is read"
    );
    assert!(refused > 0, "a damaged block fails its lookup");
    // Truncated files.
    for len in [0, 5, 10, good.len() / 2, good.len() - 1] {
        std::fs::write(&probe, &good[..len]).expect("write");
        let truncated = table::manifest::LookupEntry {
            bytes: len as u64,
            ..entry.clone()
        };
        assert!(table::lookup::LookupIndex::open(&probe, &truncated).is_err());
    }
    // An index without a footer checksum (written by an older build) is not used.
    std::fs::write(&probe, &good).expect("write");
    let older = table::manifest::LookupEntry {
        footer_checksum: None,
        ..entry.clone()
    };
    assert!(table::lookup::LookupIndex::open(&probe, &older).is_err());
}
