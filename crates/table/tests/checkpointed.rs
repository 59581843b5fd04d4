//! A table opened at a checkpoint's manifest: exactly those segments, checked against their
//! checksums; later files removed; retired files kept while a checkpoint may list them. And
//! background jobs that fail: a merge that fails backs off on its own clock and error, so it
//! neither holds seals (and so checkpoints) back nor hides a failing seal, and a clean shutdown
//! still seals what is in memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use table::{Maintenance, Manifest, RealtimeTable, TableConfig};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time_ms", DataType::Int64, false),
        Field::new("id", DataType::Utf8, false),
    ]))
}

fn batch(from: i64, n: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(from..from + n)),
            Arc::new(StringArray::from_iter_values(
                (from..from + n).map(|i| format!("id-{i}")),
            )),
        ],
    )
    .expect("batch")
}

fn config() -> TableConfig {
    TableConfig {
        merge_min_segments: 2,
        merge_target_rows: 1_000,
        ..TableConfig::default()
    }
}

fn open_at(dir: &std::path::Path, m: Manifest) -> Result<RealtimeTable, table::TableError> {
    RealtimeTable::open_at(
        dir,
        schema(),
        "time_ms",
        &["id"],
        config(),
        m,
        clock::ManualClock::new(0),
    )
}

/// Appends and seals one segment per batch; returns the manifest after each seal.
fn seal_segments(t: &RealtimeTable, batches: &[(i64, i64)]) -> Vec<Manifest> {
    batches
        .iter()
        .map(|(from, n)| {
            t.append(batch(*from, *n)).expect("append");
            t.flush().expect("seal");
            t.manifest()
        })
        .collect()
}

#[test]
fn opening_at_an_older_manifest_drops_later_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = open_at(dir.path(), Manifest::default()).expect("open");
    let manifests = seal_segments(&t, &[(0, 10), (10, 10), (20, 10)]);
    drop(t);
    let t = open_at(dir.path(), manifests[0].clone()).expect("reopen at the first checkpoint");
    assert_eq!(t.snapshot().rows(), 10);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .collect();
    assert_eq!(files.len(), 1, "the later segments were removed");
    assert_eq!(t.manifest(), manifests[0], "the stored manifest follows");
}

#[test]
fn a_segment_that_does_not_match_its_checksum_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = open_at(dir.path(), Manifest::default()).expect("open");
    let m = seal_segments(&t, &[(0, 100)]).remove(0);
    drop(t);
    let path = dir.path().join(&m.segments[0].file);
    let mut bytes = std::fs::read(&path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40; // one flipped bit, same length
    std::fs::write(&path, &bytes).expect("write");
    let err = open_at(dir.path(), m.clone()).expect_err("corrupt segment");
    let text = err.to_string();
    assert!(
        text.contains("checksum") && text.contains(&m.segments[0].file),
        "{text}"
    );
    // A truncated file is caught as well.
    std::fs::write(&path, &bytes[..middle]).expect("truncate");
    let err = open_at(dir.path(), m).expect_err("truncated segment");
    assert!(err.to_string().contains("bytes on disk"), "{err}");
}

#[test]
fn retired_files_stay_while_a_checkpoint_may_list_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = open_at(dir.path(), Manifest::default()).expect("open");
    let before = seal_segments(&t, &[(0, 10), (10, 10)])
        .pop()
        .expect("manifest");
    // Two small segments: a merge replaces them. /metrics shows it due, then running (from the
    // maintain that starts it to the one that installs it), then counted.
    assert!(t.merge_due());
    let mut seen_running = t.merge_activity() == (true, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while t.manifest().segments.len() != 1 {
        let report = t.maintain();
        assert!(report.failed().is_none(), "{report:?}");
        seen_running |= t.merge_activity() == (true, 0);
        assert!(std::time::Instant::now() < deadline, "no merge");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(seen_running);
    assert_eq!(t.merge_activity(), (false, 1));
    assert!(!t.merge_due());
    t.maintain();
    // No checkpoint has committed the merge: its inputs stay on disk.
    for e in &before.segments {
        assert!(
            dir.path().join(&e.file).exists(),
            "{} deleted too early",
            e.file
        );
    }
    drop(t);
    let t = open_at(dir.path(), before).expect("a restart from the older checkpoint works");
    assert_eq!(t.snapshot().rows(), 20);
}

#[test]
fn seals_and_retention_follow_the_tables_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock::ManualClock::new(1_000_000);
    let t = RealtimeTable::open(
        dir.path(),
        schema(),
        "time_ms",
        &["id"],
        TableConfig {
            seal_after_secs: 5.0,
            retention_ms: 60_000,
            ..config()
        },
        clock.clone(),
    )
    .expect("open");
    // Rows at event times 1_000_000 .. 1_000_009, appended at clock time 1_000_000.
    t.append(batch(1_000_000, 10)).expect("append");
    assert!(!t.maintain().seal_started, "not old enough yet");
    clock.advance(4_999);
    assert!(!t.maintain().seal_started, "4.999 s old");
    clock.advance(1);
    assert!(t.maintain().seal_started, "5 s old: sealed");
    t.flush().expect("the seal finishes");
    assert_eq!(t.snapshot().segments.len(), 1);
    assert_eq!(t.snapshot().memory_rows, 0);
    // Retention: the segment goes once its newest row (1_000_009) is older than 60 s.
    clock.set(1_000_009 + 60_000);
    assert!(t.maintain().failed().is_none());
    assert_eq!(t.snapshot().segments.len(), 1, "exactly 60 s old stays");
    clock.advance(1);
    assert!(t.maintain().failed().is_none());
    assert_eq!(t.snapshot().segments.len(), 0, "past retention: dropped");
    assert_eq!(t.snapshot().rows(), 0);
}

/// Batches of about 0.4 MiB each (long ids): the in-memory rows seal at `max_memory_bytes`
/// (1 MiB) long before `max_memory_rows`, and the seal writes rows from several batches,
/// arriving out of time order, sorted into small row groups.
#[test]
fn the_in_memory_rows_seal_at_their_byte_bound_sorted_across_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = RealtimeTable::open(
        dir.path(),
        schema(),
        "time_ms",
        &["id"],
        TableConfig {
            max_memory_bytes: 1024 * 1024,
            max_unsealed_bytes: 2 * 1024 * 1024,
            row_group_rows: 300,
            ..config()
        },
        clock::ManualClock::new(0),
    )
    .expect("open");
    let wide = |from: i64, n: i64| {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values((from..from + n).rev())),
                Arc::new(StringArray::from_iter_values(
                    (from..from + n).rev().map(|i| format!("{i:0>400}")),
                )),
            ],
        )
        .expect("batch")
    };
    let mut appended = Vec::new();
    let mut sealed = false;
    for from in [3_000, 0, 2_000, 1_000] {
        t.append(wide(from, 1_000)).expect("append");
        appended.push(from);
        let bytes = t.snapshot().memory_bytes;
        sealed = t.maintain().seal_started;
        assert_eq!(sealed, bytes >= 1024 * 1024, "{bytes} bytes in memory");
        if sealed {
            break;
        }
    }
    assert!(
        sealed && appended.len() >= 2,
        "sealed by bytes, far below 100,000 rows"
    );
    t.flush().expect("flush");
    let snap = t.snapshot();
    assert_eq!((snap.segments.len(), snap.memory_bytes), (1, 0));
    let seg = &snap.segments[0];
    let mut want: Vec<i64> = appended.iter().flat_map(|&f| f..f + 1_000).collect();
    want.sort_unstable();
    assert_eq!(
        (seg.entry.rows, seg.entry.min_time_ms, seg.entry.max_time_ms),
        (want.len() as u64, want[0], want[want.len() - 1])
    );
    let file = std::fs::File::open(&seg.path).expect("segment");
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet");
    assert_eq!(
        reader.metadata().num_row_groups(),
        want.len().div_ceil(300),
        "rows in groups of 300"
    );
    let times: Vec<i64> = reader
        .build()
        .expect("reader")
        .flat_map(|b| {
            let b = b.expect("batch");
            let t = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("times")
                .clone();
            t.values().to_vec()
        })
        .collect();
    assert_eq!(times, want, "sorted by time across the batches");
}

/// Runs `maintain` until `done` says its report is the one awaited (jobs run on threads of
/// their own; the table's clock does not move meanwhile).
fn maintain_until(t: &RealtimeTable, done: impl Fn(&Maintenance) -> bool) -> Maintenance {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = t.maintain();
        if done(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "still waiting: {report:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_failing_merge_backs_off_without_holding_seals_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock::ManualClock::new(0);
    let t = RealtimeTable::open_at(
        dir.path(),
        schema(),
        "time_ms",
        &["id"],
        TableConfig {
            merge_min_segments: 2,
            merge_target_rows: 1_000,
            max_memory_rows: 10,
            ..TableConfig::default()
        },
        Manifest::default(),
        clock.clone(),
    )
    .expect("open");
    for from in [0, 10] {
        t.append(batch(from, 10)).expect("append");
        t.flush().expect("seal");
    }
    // The merge of the two segments cannot read its first input.
    let file = dir.path().join(&t.manifest().segments[0].file);
    let away = dir.path().join("moved-away");
    std::fs::rename(&file, &away).expect("move");
    assert!(t.merge_due());
    t.maintain();
    assert_eq!(t.merge_activity(), (true, 0), "the merge runs");
    // A clean shutdown while it runs still seals the rows in memory.
    t.append(batch(20, 10)).expect("append");
    t.flush()
        .expect("the rows in memory are sealed although the merge failed");
    assert_eq!(t.snapshot().memory_rows, 0);
    assert_eq!(t.manifest().segments.len(), 3);
    assert_eq!(
        t.merge_activity(),
        (false, 0),
        "failed: not running, not counted"
    );
    let error = t.last_error().expect("the merge's error is shown");
    assert!(error.starts_with("merge: "), "{error}");

    // The merge waits a second now; a seal due meanwhile starts at once, at the same instant.
    t.append(batch(30, 10)).expect("append");
    let report = t.maintain();
    assert!(report.seal_started, "a failed merge held the seal back");
    assert!(!t.merge_activity().0, "the merge waits for its backoff");
    maintain_until(&t, |r| r.sealed.is_some());
    assert_eq!(t.manifest().segments.len(), 4);
    let error = t
        .last_error()
        .expect("a seal does not clear a merge's error");
    assert!(error.starts_with("merge: "), "{error}");

    // One second after the failure the merge is tried again, fails again, and then waits two.
    clock.advance(999);
    t.maintain();
    assert!(!t.merge_activity().0, "tried again before its backoff");
    clock.advance(1);
    t.maintain();
    assert!(t.merge_activity().0, "tried again after its backoff");
    let report = maintain_until(&t, |r| r.housekeeping_error.is_some());
    assert!(
        report.error.is_none(),
        "a merge's failure is not a seal's: the checkpoint goes on"
    );
    assert!(!t.merge_activity().0);
    clock.advance(1_999);
    t.maintain();
    assert!(!t.merge_activity().0, "the second backoff is two seconds");

    // Seals that fail (directories where their files go) give the error shown, and no merge
    // starts until a seal succeeds again, although the merge's own wait is over.
    let next = t.manifest().next_segment_id;
    let blocked: Vec<_> = (next..next + 4)
        .map(|id| dir.path().join(format!("seg-{id:010}.parquet")))
        .collect();
    for path in &blocked {
        std::fs::create_dir(path).expect("block a segment's file");
    }
    t.append(batch(40, 10)).expect("append");
    let report = maintain_until(&t, |r| r.error.is_some());
    assert!(report.housekeeping_error.is_none(), "{report:?}");
    let error = t.last_error().expect("the seal's error");
    assert!(error.starts_with("seal: "), "{error}");
    // A second later the seal is tried again: the merge must not start beside it.
    clock.advance(1_000);
    assert!(t.maintain().seal_started);
    assert!(!t.merge_activity().0, "a merge started while seals fail");
    maintain_until(&t, |r| r.error.is_some());

    // The input is back and the seals' paths free: after the seal's two-second wait the seal
    // goes first, then the merge, and every error is gone.
    std::fs::rename(&away, &file).expect("move back");
    for path in &blocked {
        std::fs::remove_dir(path).expect("unblock");
    }
    clock.advance(2_000);
    maintain_until(&t, |r| r.sealed.is_some());
    maintain_until(&t, |_| matches!(t.merge_activity(), (false, n) if n >= 1));
    assert_eq!(t.last_error(), None);
    assert_eq!(t.snapshot().rows(), 50);
    assert!(t.manifest().segments.len() < 5, "{:?}", t.manifest());
}

#[test]
fn a_seal_whose_manifest_cannot_be_stored_leaves_no_file_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = open_at(dir.path(), Manifest::default()).expect("open");
    seal_segments(&t, &[(0, 10)]);
    let segment_files = || {
        std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
            .count()
    };
    // The manifest's temporary file cannot be made: every store fails before its rename.
    let tmp = dir.path().join("manifest.json.tmp");
    std::fs::create_dir(&tmp).expect("block the manifest");
    t.append(batch(10, 10)).expect("append");
    for _ in 0..3 {
        t.flush().expect_err("the manifest cannot be stored");
    }
    assert_eq!(segment_files(), 1, "a failed seal left its file behind");
    assert_eq!(t.snapshot().rows(), 20, "its rows are still in memory");
    std::fs::remove_dir(&tmp).expect("unblock");
    t.flush().expect("seal");
    assert_eq!(segment_files(), 2);
    assert_eq!(t.manifest().segments.len(), 2);
}
