//! A batch mixing good orders with every kind of bad message: every good one becomes a row,
//! every bad one is rejected with its reason and position and lands in the dead-letter store.

use datafusion::arrow::array::{Array, AsArray};
use ingest::{DeadLetterStore, IngestConfig, Ingestor, Message, Position, RejectReason};
use orders::{Generator, GeneratorConfig};

#[test]
fn good_messages_survive_bad_neighbours() {
    let mut g = Generator::new(GeneratorConfig::default());
    let good: Vec<Vec<u8>> = (1..=5)
        .map(|s| g.generate(s, 1_795_618_800_000 + s as i64).to_json())
        .collect();
    let mut no_time: serde_json::Value =
        serde_json::from_slice(&g.generate(6, 1).to_json()).expect("json");
    no_time.as_object_mut().expect("object").remove("time_ms");
    let no_time = serde_json::to_vec(&no_time).expect("json");
    let huge = format!(
        "{{\"order_id\":\"big\",\"time_ms\":1,\"pad\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );

    let bad: Vec<(&[u8], &str)> = vec![
        (b"{not json", "not a valid order"),
        (b"", "not a valid order"),
        (b"[1,2,3]", "not a valid order"),
        (b"{\"time_ms\": 5}", "order_id is missing"),
        (
            b"{\"order_id\": \"  \", \"time_ms\": 5}",
            "order_id is missing",
        ),
        (b"{\"order_id\": 42, \"time_ms\": 5}", "not a valid order"),
        (
            b"{\"order_id\": \"a\", \"time_ms\": \"soon\"}",
            "not a valid order",
        ),
        (
            b"{\"order_id\": \"a\", \"time_ms\": 1.5}",
            "not a valid order",
        ),
        (
            b"{\"order_id\": \"a\", \"time_ms\": -3}",
            "is not a positive epoch",
        ),
        (b"{\"order_id\": \"b\"}", "time_ms is missing"),
        (
            b"{\"order_id\": \"c\", \"time_ms\": 9, \"order_total\": \"lots\"}",
            "not a valid order",
        ),
        (b"\xff\xfe{\"order_id\": \"d\"}", "not a valid order"),
        (huge.as_bytes(), "over the limit"),
    ];

    let mut messages = Vec::new();
    let mut offset = 0;
    let mut expect_bad = Vec::new();
    for (i, (payload, reason)) in bad.iter().enumerate() {
        messages.push(Message {
            position: Position {
                partition: 3,
                offset,
            },
            payload: &good[i % 5],
            record_time_ms: None,
        });
        offset += 1;
        messages.push(Message {
            position: Position {
                partition: 3,
                offset,
            },
            payload,
            record_time_ms: None,
        });
        expect_bad.push((offset, *reason));
        offset += 1;
    }
    // No time_ms, but the record has a timestamp: accepted with that time.
    messages.push(Message {
        position: Position {
            partition: 3,
            offset,
        },
        payload: &no_time,
        record_time_ms: Some(1_700_000_000_000),
    });

    let mut ingestor = Ingestor::new(IngestConfig {
        decode_threads: 2,
        // The record-timestamp order below is from 2023: this test is about malformed input,
        // not event-time bounds (those have their own test).
        max_age_ms: Some(10 * 365 * 24 * 3_600_000),
        ..IngestConfig::default()
    });
    let out = ingestor.ingest(&messages, 1_795_618_800_000);
    assert_eq!(out.rejected.len(), bad.len());
    for (r, (offset, reason)) in out.rejected.iter().zip(&expect_bad) {
        assert_eq!(
            r.position,
            Position {
                partition: 3,
                offset: *offset
            }
        );
        assert!(
            r.reason.to_string().contains(reason),
            "offset {offset}: {} (wanted {reason})",
            r.reason
        );
    }
    assert!(matches!(
        out.rejected.last().map(|r| &r.reason),
        Some(RejectReason::Oversized { .. })
    ));

    // The good ones: 13 copies of 5 orders, deduplicated to 5, plus the one with a record time.
    let batch = out.batch.expect("rows");
    assert_eq!(batch.num_rows(), 6);
    assert_eq!(out.duplicates, 8);
    let times = batch
        .column_by_name("time_ms")
        .expect("time_ms")
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    assert_eq!(times.value(5), 1_700_000_000_000);
    let products = batch
        .column_by_name("productsOrdered")
        .expect("col")
        .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
    assert!((0..6).all(|i| (1..=7).contains(&products.value(i))));
    assert_eq!(
        batch.column_by_name("itemNames").expect("col").null_count(),
        0
    );

    // Dead letters keep the reason, the position and the payload.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = DeadLetterStore::open(dir.path()).expect("open");
    let with_payloads: Vec<_> = out
        .rejected
        .iter()
        .map(|r| {
            (
                r.clone(),
                messages
                    .iter()
                    .find(|m| m.position == r.position)
                    .map(|m| m.payload)
                    .unwrap_or_default(),
            )
        })
        .collect();
    store.append(&with_payloads, 123).expect("append");
    store.sync().expect("sync");
    let text = std::fs::read_to_string(store.path()).expect("read");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), bad.len());
    assert_eq!(lines[0]["payload"], "{not json");
    assert_eq!(lines[0]["offset"], 1);
    assert_eq!(lines[0]["partition"], 3);
    assert!(lines[11]["payload_hex"]
        .as_str()
        .expect("hex")
        .starts_with("fffe"));
    assert_eq!(lines[12]["truncated"], true);
    assert_eq!(lines[12]["bytes"], huge.len());
    assert_eq!(
        DeadLetterStore::open(dir.path()).expect("reopen").count(),
        bad.len() as u64
    );
}

/// Rows built on several threads are the rows built on one, in message order, with duplicates
/// and bad messages dropped in the same places.
#[test]
fn parallel_building_equals_one_thread() {
    let mut g = Generator::new(GeneratorConfig::default());
    let now = 1_795_618_800_000;
    let mut payloads: Vec<Vec<u8>> = (1..=9_000)
        .map(|s| g.generate(s, now - 60_000 + s as i64).to_json())
        .collect();
    // A duplicate and a bad message in the middle of every thread's slice.
    payloads.insert(2_000, payloads[10].clone());
    payloads.insert(6_000, b"{broken".to_vec());
    let messages: Vec<Message<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Message {
            position: Position {
                partition: 0,
                offset: i as i64,
            },
            payload: p,
            record_time_ms: None,
        })
        .collect();
    let decode = |threads: usize| {
        let mut ingestor = Ingestor::new(IngestConfig {
            decode_threads: threads,
            ..IngestConfig::default()
        });
        ingestor.ingest(&messages, now)
    };
    let one = decode(1);
    for threads in [2, 3, 8] {
        let many = decode(threads);
        assert_eq!((many.duplicates, many.rejected.len()), (1, 1));
        let (a, b) = (
            one.batch.as_ref().expect("rows"),
            many.batch.as_ref().expect("rows"),
        );
        assert_eq!(a.num_rows(), 9_000);
        assert_eq!(a, b, "{threads} threads");
    }
}
