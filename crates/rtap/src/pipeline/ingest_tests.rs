//! The ingest loop in process, driven through its channel as a source drives it, with orders
//! no honest shop sends: far-future and ancient event times, an order total of 1e17, a line
//! item of 2^31-1 units. The good orders around them must come out exactly as if the bad ones
//! had never been sent: in the table, in SQL and in the windows, before and after a restart.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpoint::CheckpointMetrics;
use clock::{ManualClock, SharedClock};
use ingest::{Batch, IngestMetrics, OwnedMessage, Position, SourceEvent};
use orders::{Generator, GeneratorConfig};
use serde_json::Value;
use tokio::sync::mpsc;

use super::ingest_loop::{IngestHealth, IngestLoop, LoopParts, Sinks};
use super::resume::{resume, Resumed};
use crate::config::RtapConfig;

const NOW: i64 = 1_795_618_800_000;

fn message(offset: i64, payload: Vec<u8>) -> OwnedMessage {
    OwnedMessage {
        position: Position {
            partition: 0,
            offset,
        },
        payload,
        record_time_ms: None,
    }
}

/// A generated order with `edit` applied to its JSON.
fn order(g: &mut Generator, seq: u64, time_ms: i64, edit: impl Fn(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&g.generate(seq, time_ms).to_json()).expect("json");
    edit(&mut v);
    serde_json::to_vec(&v).expect("json")
}

struct Run {
    resumed_rows: u64,
    windows: Arc<Mutex<rolling::Windows>>,
    table: Arc<table::RealtimeTable>,
    metrics: IngestMetrics,
}

/// Resumes the pipeline state under `config.data_dir` at clock `NOW`, feeds `batches` through
/// the ingest loop, stops it (last checkpoint) and hands back what it built.
fn run(config: &RtapConfig, batches: Vec<Vec<OwnedMessage>>) -> Run {
    let events = batches
        .into_iter()
        .map(|b| SourceEvent::Batch(Batch::new(b, None)))
        .collect();
    run_events(config, events, Box::new(|_| {}))
}

/// [`run`] with any source events, telling `on_checkpoint` the positions of every checkpoint.
fn run_events(
    config: &RtapConfig,
    events: Vec<SourceEvent>,
    on_checkpoint: sources::CheckpointHook,
) -> Run {
    let clock: SharedClock = ManualClock::new(NOW);
    let Resumed {
        table,
        windows,
        ingestor,
        deadletters,
        protocol,
        source,
    } = resume(
        config,
        "the test",
        ("generator", None),
        clock.clone(),
        CheckpointMetrics::default(),
    )
    .expect("resume");
    let resumed_rows = table.snapshot().rows();
    let windows = Arc::new(Mutex::new(windows));
    let metrics = IngestMetrics::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ingest_loop = IngestLoop::new(
        Sinks {
            table: table.clone(),
            windows: windows.clone(),
            recent: Arc::new(server::recent::RecentAnswers::default()),
            deadletters,
            protocol,
        },
        LoopParts {
            ingestor,
            source,
            metrics: metrics.clone(),
            health: Arc::new(IngestHealth::default()),
            stop: stop.clone(),
            clock,
            on_checkpoint,
            max_batch_bytes: config.ingest.max_batch_bytes,
            checkpoint_every: Duration::from_secs(1),
            panic_at_rows: None,
        },
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (tx, rx) = mpsc::channel(64);
    for e in events {
        tx.try_send(e).expect("room in the channel");
    }
    drop(tx);
    let handle = runtime.handle().clone();
    std::thread::spawn(move || ingest_loop.run(rx, handle))
        .join()
        .expect("the ingest loop ends when the channel closes");
    Run {
        resumed_rows,
        windows,
        table,
        metrics,
    }
}

#[test]
fn out_of_bounds_orders_are_dead_lettered_and_the_good_ones_stay_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = RtapConfig {
        data_dir: dir.path().to_path_buf(),
        ..RtapConfig::default()
    };
    let mut g = Generator::new(GeneratorConfig::default());
    // 100 good orders over the last 50 s, and the four bad ones among them.
    let good_time = |k: u64| NOW - 50_000 + k as i64 * 400;
    let mut good = Vec::new();
    let mut first = Vec::new();
    for k in 0..50u64 {
        let json = order(&mut g, k + 1, good_time(k), |_| {});
        good.push(json.clone());
        first.push(message(k as i64 + 1, json));
    }
    let bad = vec![
        order(&mut g, 1001, 9_000_000_000_000_000, |_| {}),
        order(&mut g, 1002, 1_000, |_| {}),
        order(&mut g, 1003, NOW - 1_000, |v| {
            v["order_total"] = 1e17.into()
        }),
        order(&mut g, 1004, NOW - 1_000, |v| {
            v["line_items"][0]["quantity"] = 2_147_483_647i64.into()
        }),
    ];
    let bad_messages: Vec<OwnedMessage> = bad
        .into_iter()
        .enumerate()
        .map(|(i, b)| message(51 + i as i64, b))
        .collect();
    let mut second = Vec::new();
    for k in 50..100u64 {
        let json = order(&mut g, k + 1, good_time(k), |_| {});
        good.push(json.clone());
        second.push(message(k as i64 + 5, json));
    }
    let r = run(&config, vec![first, bad_messages, second]);
    assert_eq!(
        r.table.snapshot().rows(),
        100,
        "every good order, no bad one"
    );
    assert_eq!(r.metrics.dead_letters.get(), 4);
    assert_eq!(r.metrics.late.get(), 0, "no good order counted as late");

    // The windows hold exactly the good orders.
    let expected_cents: i64 = good
        .iter()
        .map(|j| {
            let v: Value = serde_json::from_slice(j).expect("json");
            (v["order_total"].as_f64().expect("total") * 100.0).round() as i64
        })
        .sum();
    let (current, _) = r.windows.lock().expect("windows").current_and_previous(NOW);
    assert_eq!(current.orders, 100);
    assert_eq!(current.revenue_cents, expected_cents);

    // SQL over the table agrees.
    let engine = sql::SqlEngine::new(
        r.table.clone(),
        sql::SqlConfig::default(),
        ManualClock::new(NOW),
    )
    .expect("engine");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let out = rt.block_on(engine.query_pinot(
        "SELECT COUNT(*), CAST(ROUND(SUM(order_total) * 100) AS BIGINT), MAX(time_ms), \
         MIN(time_ms) FROM orders",
    ));
    let row = out["resultTable"]["rows"][0]
        .as_array()
        .cloned()
        .expect("a row");
    assert_eq!(row[0], 100);
    assert_eq!(row[1], expected_cents);
    // MAX and MIN answer DOUBLE, as in Pinot.
    assert!(
        row[2].as_f64().expect("max") < NOW as f64,
        "no far-future time in the table"
    );
    assert!(
        row[3].as_f64().expect("min") >= (NOW - 50_000) as f64,
        "no ancient time"
    );

    // The reasons name the bound.
    let text = std::fs::read_to_string(dir.path().join("deadletter").join("deadletter.jsonl"))
        .expect("dead letters");
    let reasons: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(reasons.len(), 4);
    assert!(
        reasons[0].contains("ahead of the wall clock"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("older than ingest.max_age_ms"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("order_total = 100000000000000000"),
        "{}",
        reasons[2]
    );
    assert!(
        reasons[3].contains("line_items.quantity = 2147483647"),
        "{}",
        reasons[3]
    );
    drop(engine);

    // After a restart: the same numbers, and the good orders are remembered (re-sent, they
    // are duplicates), while the bad ones are dead-lettered again.
    let again: Vec<OwnedMessage> = good
        .iter()
        .enumerate()
        .map(|(i, j)| message(200 + i as i64, j.clone()))
        .collect();
    let r2 = run(&config, vec![again]);
    assert_eq!(r2.resumed_rows, 100);
    assert_eq!(r2.table.snapshot().rows(), 100);
    assert_eq!(r2.metrics.duplicates.get(), 100);
    let (current, _) = r2
        .windows
        .lock()
        .expect("windows")
        .current_and_previous(NOW);
    assert_eq!(
        (current.orders, current.revenue_cents),
        (100, expected_cents)
    );
}

#[test]
fn a_checkpoint_with_a_run_away_stream_time_is_clamped_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = RtapConfig {
        data_dir: dir.path().to_path_buf(),
        ingest: ingest::IngestConfig {
            // As before event times were bounded.
            max_future_ms: i64::MAX / 4,
            ..ingest::IngestConfig::default()
        },
        ..RtapConfig::default()
    };
    let mut g = Generator::new(GeneratorConfig::default());
    let bad = message(1, order(&mut g, 1, NOW + 9_000_000_000_000, |_| {}));
    run(&config, vec![vec![bad]]);
    // Restarted with the bounds on: the windows count real orders again.
    let config = RtapConfig {
        data_dir: dir.path().to_path_buf(),
        ..RtapConfig::default()
    };
    let good = message(2, order(&mut g, 2, NOW - 1_000, |_| {}));
    let r = run(&config, vec![vec![good]]);
    assert_eq!(r.metrics.late.get(), 0);
    let (current, _) = r.windows.lock().expect("windows").current_and_previous(NOW);
    assert_eq!(current.orders, 1);
}

#[test]
fn released_partitions_are_never_checkpointed_or_committed_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = RtapConfig {
        data_dir: dir.path().to_path_buf(),
        ..RtapConfig::default()
    };
    let mut g = Generator::new(GeneratorConfig::default());
    let on = |partition: i32, offset: i64, g: &mut Generator| OwnedMessage {
        position: Position { partition, offset },
        payload: g
            .generate(offset as u64 + 100 * partition as u64 + 1, NOW - 1_000)
            .to_json(),
        record_time_ms: None,
    };
    let first: Vec<OwnedMessage> = (0..4).map(|p| on(p, 10, &mut g)).collect();
    let (reply, answer) = std::sync::mpsc::channel();
    // A rebalance: checkpoint what was read, then partitions 2 and 3 go to another member,
    // which moves them on; this member then reads partition 0 only.
    let events = vec![
        SourceEvent::Batch(Batch::new(first, None)),
        SourceEvent::Checkpoint(reply),
        SourceEvent::Release(vec![2, 3]),
        SourceEvent::Batch(Batch::new(vec![on(0, 11, &mut g)], None)),
    ];
    let commits = Arc::new(Mutex::new(Vec::new()));
    let seen = commits.clone();
    run_events(
        &config,
        events,
        Box::new(move |p| {
            if let Ok(mut c) = seen.lock() {
                c.push(p.clone());
            }
        }),
    );
    let at_revoke = answer.recv().expect("answered").expect("checkpointed");
    assert_eq!(
        at_revoke.get(&2),
        Some(&11),
        "the revoke checkpoint holds all four"
    );
    let commits = commits.lock().expect("commits");
    let last = commits.last().expect("a last checkpoint");
    assert_eq!(last.get(&0), Some(&12));
    assert_eq!(last.get(&1), Some(&11));
    assert!(
        !last.contains_key(&2) && !last.contains_key(&3),
        "a stale position of a released partition would rewind its new owner: {last:?}"
    );
}
