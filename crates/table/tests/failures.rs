//! Background jobs that fail: a merge that fails backs off on its own clock and error, so it
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
    let report = maintain_until(&t, |r| r.error.is_some());
    assert!(report.error.is_some());
    assert!(!t.merge_activity().0);
    clock.advance(1_999);
    t.maintain();
    assert!(!t.merge_activity().0, "the second backoff is two seconds");

    // The input is back: the next try merges everything, and the error is gone.
    std::fs::rename(&away, &file).expect("move back");
    clock.advance(1);
    maintain_until(&t, |_| matches!(t.merge_activity(), (false, n) if n >= 1));
    assert_eq!(t.last_error(), None);
    assert_eq!(t.snapshot().rows(), 40);
    assert!(t.manifest().segments.len() < 4, "{:?}", t.manifest());
}
