//! Mutation fuzzing of the decoder: real orders with random byte flips, insertions, deletions,
//! truncations, extreme numbers and deep nesting. Whatever a message holds, decoding must not
//! panic and every message must end as exactly one of: a row, a rejection, a duplicate.
//!
//! Bounded for the test suite (`RTAP_FUZZ_SECONDS`, default 3 s); run it long with e.g.
//! `RTAP_FUZZ_SECONDS=600 cargo test --workspace --test fuzz_decode -- --nocapture`.

use std::time::{Duration, Instant};

use ingest::{IngestConfig, Ingestor, Message, Position};
use orders::rng::Rng;
use orders::{Generator, GeneratorConfig};

const NOW: i64 = 1_795_618_800_000;

fn budget() -> Duration {
    let secs = std::env::var("RTAP_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(3);
    Duration::from_secs(secs)
}

/// Values that are valid JSON and hostile to a decoder.
const EXTREMES: &[&str] = &[
    "1e308",
    "-1e308",
    "1e400",
    "9223372036854775808",
    "-9223372036854775809",
    "2147483648",
    "-1",
    "0",
    "0.000000000001",
    "null",
    "true",
    "\"\"",
    "\"\\u0000\"",
    "[]",
    "{}",
    "\"\\ud800\"",
];

fn mutate(rng: &mut Rng, json: &[u8]) -> Vec<u8> {
    let mut out = json.to_vec();
    for _ in 0..=rng.below(4) {
        if out.is_empty() {
            break;
        }
        let at = rng.below(out.len() as u64) as usize;
        match rng.below(8) {
            0 => out[at] = rng.below(256) as u8,
            1 => {
                let byte = *rng.pick(b"{}[]\":,\\0123456789-e.");
                out.insert(at, byte);
            }
            2 => {
                let end = (at + rng.below(64) as usize).min(out.len());
                out.drain(at..end);
            }
            3 => out.truncate(at),
            4 => {
                // Replace the number after a `:` with an extreme value.
                if let Some(colon) = out[at..].iter().position(|b| *b == b':') {
                    let start = at + colon + 1;
                    let end = out[start..]
                        .iter()
                        .position(|b| matches!(b, b',' | b'}' | b']'))
                        .map_or(out.len(), |e| start + e);
                    let value = rng.pick(EXTREMES).as_bytes().to_vec();
                    out.splice(start..end, value);
                }
            }
            5 => {
                let depth = 1 + rng.below(300) as usize;
                let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                out.splice(at..at, nested.into_bytes());
            }
            6 => {
                let dup = out[at..(at + 32).min(out.len())].to_vec();
                out.splice(at..at, dup);
            }
            _ => out.reverse(),
        }
    }
    out
}

#[test]
fn no_message_can_make_decoding_panic_or_disappear() {
    let mut g = Generator::new(GeneratorConfig {
        seed: 4242,
        ..GeneratorConfig::default()
    });
    let seeds: Vec<Vec<u8>> = (1..=64)
        .map(|s| g.generate(s, NOW - 10_000 + s as i64).to_json())
        .collect();
    let mut rng = Rng::for_key(7, 1, 0);
    let mut ingestor = Ingestor::new(IngestConfig {
        decode_threads: 2,
        ..IngestConfig::default()
    });
    let started = Instant::now();
    let (mut messages, mut rows, mut rejected) = (0u64, 0u64, 0u64);
    let mut offset = 0i64;
    while started.elapsed() < budget() {
        let batch: Vec<Vec<u8>> = (0..300)
            .map(|_| {
                let seed = seeds[rng.below(seeds.len() as u64) as usize].clone();
                mutate(&mut rng, &seed)
            })
            .collect();
        let msgs: Vec<Message<'_>> = batch
            .iter()
            .map(|payload| {
                offset += 1;
                Message {
                    position: Position {
                        partition: 0,
                        offset,
                    },
                    payload,
                    record_time_ms: None,
                }
            })
            .collect();
        let out = ingestor.ingest(&msgs, NOW);
        let made = out.batch.as_ref().map_or(0, |b| b.num_rows());
        assert_eq!(
            made + out.rejected.len() + out.duplicates,
            msgs.len(),
            "every message is a row, a rejection or a duplicate"
        );
        messages += msgs.len() as u64;
        rows += made as u64;
        rejected += out.rejected.len() as u64;
    }
    eprintln!(
        "fuzz_decode: {messages} mutated messages in {:.1} s: {rows} rows, {rejected} rejected",
        started.elapsed().as_secs_f64()
    );
    assert!(messages > 0);
}
