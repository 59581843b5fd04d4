//! Cost of the rolling windows: one update per event, and the reads behind /orders/overview.
//!
//! `cargo bench --workspace --bench windows`

use std::hint::black_box;
use std::time::Instant;

use rolling::{Metrics, WindowConfig, Windows};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let events: u64 = 20_000_000;
    let mut w = Windows::new(WindowConfig::default()).expect("config");
    // 1,000 events a second of event time, slightly out of order (up to 2 s late).
    let t0 = 1_795_618_800_000i64;
    let times: Vec<i64> = (0..events as i64)
        .map(|i| t0 + i - (i * 7919 % 2000))
        .collect();
    let m = Metrics::order(42.17, false, true, false);
    let started = Instant::now();
    for &t in &times {
        black_box(w.observe(t, m));
    }
    let elapsed = started.elapsed();
    println!(
        "observe: {events} events in {:.3} s = {:.1} ns/event ({:.1} M events/s), late {}",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / events as f64,
        events as f64 / elapsed.as_secs_f64() / 1e6,
        w.late()
    );

    let now = *times.last().expect("times");
    let mut lat = Vec::with_capacity(100_000);
    for i in 0..100_000i64 {
        let s = Instant::now();
        black_box(w.current_and_previous(now - (i % 1000)));
        lat.push(s.elapsed().as_nanos() as f64);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "current_and_previous: p50 {:.0} ns, p99 {:.0} ns, max {:.0} ns",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
    let mut lat = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let s = Instant::now();
        black_box(w.series(now, 300));
        lat.push(s.elapsed().as_nanos() as f64);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "series(300): p50 {:.0} ns, p99 {:.0} ns",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    let s = Instant::now();
    let snap = w.snapshot();
    let snap_us = s.elapsed().as_micros();
    let s = Instant::now();
    let back = Windows::restore(&snap).expect("restore");
    let restore_us = s.elapsed().as_micros();
    assert_eq!(back.current_and_previous(now), w.current_and_previous(now));
    println!(
        "snapshot: {} panes in {snap_us} us; restore {restore_us} us",
        snap.panes.len()
    );
}
