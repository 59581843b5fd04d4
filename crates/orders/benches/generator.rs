//! Generator throughput on one core: orders generated and serialised to JSON per second.
//!
//! `cargo bench -p orders --bench generator` (budget: >= 200,000 orders/s). Prints one line per
//! measurement; the figures go to BENCHMARKS.md.

use std::hint::black_box;
use std::time::Instant;

use orders::{Generator, GeneratorConfig};

const WARMUP: u64 = 20_000;
const ORDERS: u64 = 1_000_000;

fn main() {
    let mut generator = Generator::new(GeneratorConfig {
        seed: 1,
        ..GeneratorConfig::default()
    });
    let start_ms = 1_793_491_200_000_i64;
    for seq in 1..=WARMUP {
        black_box(generator.generate(seq, start_ms + seq as i64 * 32));
    }

    let mut generator = Generator::new(GeneratorConfig {
        seed: 2,
        ..GeneratorConfig::default()
    });
    let mut buf = Vec::with_capacity(8192);
    let mut bytes = 0usize;
    let t = Instant::now();
    for seq in 1..=ORDERS {
        buf.clear();
        generator
            .generate(seq, start_ms + seq as i64 * 32)
            .write_json(&mut buf);
        bytes += buf.len();
        black_box(&buf);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "generate+serialise: {ORDERS} orders in {secs:.2} s = {:.0} orders/s on one core, {:.0} MB/s of JSON, {:.0} bytes/order",
        ORDERS as f64 / secs,
        bytes as f64 / secs / 1e6,
        bytes as f64 / ORDERS as f64
    );

    let mut generator = Generator::new(GeneratorConfig {
        seed: 3,
        ..GeneratorConfig::default()
    });
    let t = Instant::now();
    for seq in 1..=ORDERS {
        black_box(generator.generate(seq, start_ms + seq as i64 * 32));
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "generate only:      {ORDERS} orders in {secs:.2} s = {:.0} orders/s",
        ORDERS as f64 / secs
    );
}
