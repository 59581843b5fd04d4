//! # rolling: hopping-window metrics (what the Kafka Streams topology did)
//!
//! The streaming side of rtap, fed by ingest with the same deduplicated orders as the table.
//! Windows are `[k, k + size)` for every `k` that is a multiple of `advance` (60 s advancing 1 s
//! by default), on event time (`time_ms`), with a grace period (5 min) for late records.
//!
//! Instead of updating 60 windows per record per metric (the original's RocksDB stores), the
//! state is a ring of panes, one per `advance` of event time: a record updates exactly one pane,
//! and a window is the sum of its `size / advance` panes (60 additions, independent of volume).
//! Stream time is the largest event time seen. A record whose last window closed (its pane start
//! plus `size` plus `grace` is at or before stream time) is not counted in any window and is
//! counted as late instead; it still reaches the table. Panes older than any open window are
//! recycled, so memory is fixed.
//!
//! A plain synchronous state machine: time comes in with the records and the reads, never from
//! a clock of its own, so tests drive it with chosen times. [`Windows::snapshot`] and
//! [`Windows::restore`] give checkpoints.

use serde::{Deserialize, Serialize};

pub mod recent;

pub use recent::Recent;

/// Window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    pub size_ms: i64,
    pub advance_ms: i64,
    pub grace_ms: i64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            size_ms: 60_000,
            advance_ms: 1_000,
            grace_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("window advance must be positive, got {0} ms")]
    Advance(i64),
    #[error("window size {size} ms must be a positive multiple of the advance {advance} ms")]
    Size { size: i64, advance: i64 },
    #[error("grace must be zero or positive, got {0} ms")]
    Grace(i64),
    #[error("(size + grace) / advance must be at most {MAX_PANES} panes, got size {size} ms, grace {grace} ms, advance {advance} ms")]
    TooManyPanes { size: i64, grace: i64, advance: i64 },
}

/// Most panes the ring may hold (memory: 48 bytes each).
pub const MAX_PANES: i64 = 100_000;

impl WindowConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.advance_ms <= 0 {
            return Err(ConfigError::Advance(self.advance_ms));
        }
        if self.size_ms <= 0 || self.size_ms % self.advance_ms != 0 {
            return Err(ConfigError::Size {
                size: self.size_ms,
                advance: self.advance_ms,
            });
        }
        if self.grace_ms < 0 {
            return Err(ConfigError::Grace(self.grace_ms));
        }
        let panes = self
            .size_ms
            .checked_add(self.grace_ms)
            .map(|span| span / self.advance_ms);
        if panes.is_none_or(|p| p > MAX_PANES) {
            return Err(ConfigError::TooManyPanes {
                size: self.size_ms,
                grace: self.grace_ms,
                advance: self.advance_ms,
            });
        }
        Ok(())
    }

    fn panes_per_window(&self) -> i64 {
        self.size_ms / self.advance_ms
    }

    /// Panes kept: every pane of every window still open, plus the current one.
    fn ring_len(&self) -> usize {
        // Twice what the windows need: a record may be ahead of stream time (which stops at the
        // wall clock, see `Windows::observe_until`) by as much again without taking the slot of
        // a pane that is still open.
        (2 * ((self.size_ms + self.grace_ms) / self.advance_ms) + 2) as usize
    }
}

/// The five metrics of one order, as a window counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    pub orders: u64,
    /// Sum of `order_total`, in cents (exact; dollars only at the edge).
    pub revenue_cents: i64,
    pub fraud: u64,
    pub delivered: u64,
    pub refunded: u64,
}

impl Metrics {
    /// One order's contribution. Ingest bounds `order_total` long before this (see
    /// `ingest.max_amount`); the conversion saturates rather than wraps all the same.
    pub fn order(order_total: f64, fraud: bool, delivered: bool, refunded: bool) -> Self {
        Metrics {
            orders: 1,
            // A float-to-int `as` saturates (NaN becomes 0): no wrap to a negative revenue.
            revenue_cents: (order_total * 100.0).round() as i64,
            fraud: u64::from(fraud),
            delivered: u64::from(delivered),
            refunded: u64::from(refunded),
        }
    }

    /// Adds `o`; every sum saturates instead of wrapping (no value can turn a total negative).
    fn add(&mut self, o: &Metrics) {
        self.orders = self.orders.saturating_add(o.orders);
        self.revenue_cents = self.revenue_cents.saturating_add(o.revenue_cents);
        self.fraud = self.fraud.saturating_add(o.fraud);
        self.delivered = self.delivered.saturating_add(o.delivered);
        self.refunded = self.refunded.saturating_add(o.refunded);
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Pane {
    /// Which pane this slot holds (pane start / advance); stale slots are recycled.
    index: i64,
    metrics: Metrics,
}

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    /// Later than the grace period: not in any window.
    Late,
}

/// The window state.
#[derive(Debug, Clone)]
pub struct Windows {
    config: WindowConfig,
    ring: Vec<Pane>,
    /// Largest event time seen (ms); `i64::MIN` before the first record.
    stream_time_ms: i64,
    late: u64,
    counted: u64,
}

/// A checkpoint of [`Windows`]: only panes that hold something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsSnapshot {
    pub config: WindowConfig,
    pub stream_time_ms: i64,
    pub late: u64,
    pub counted: u64,
    /// (pane index, metrics).
    pub panes: Vec<(i64, Metrics)>,
}

impl Windows {
    pub fn new(config: WindowConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let ring = vec![
            Pane {
                index: i64::MIN,
                metrics: Metrics::default()
            };
            config.ring_len()
        ];
        Ok(Windows {
            config,
            ring,
            stream_time_ms: i64::MIN,
            late: 0,
            counted: 0,
        })
    }

    pub fn config(&self) -> &WindowConfig {
        &self.config
    }

    pub fn stream_time_ms(&self) -> Option<i64> {
        (self.stream_time_ms != i64::MIN).then_some(self.stream_time_ms)
    }

    /// Records counted as late so far.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Records counted in windows so far.
    pub fn counted(&self) -> u64 {
        self.counted
    }

    fn pane_index(&self, time_ms: i64) -> i64 {
        time_ms.div_euclid(self.config.advance_ms)
    }

    fn slot(&self, index: i64) -> usize {
        index.rem_euclid(self.ring.len() as i64) as usize
    }

    /// Whether a record at `time_ms` would still be counted at the current stream time.
    pub fn is_open(&self, time_ms: i64) -> bool {
        if self.stream_time_ms == i64::MIN {
            return true;
        }
        let pane_start = self
            .pane_index(time_ms)
            .saturating_mul(self.config.advance_ms);
        pane_start
            .saturating_add(self.config.size_ms)
            .saturating_add(self.config.grace_ms)
            > self.stream_time_ms
    }

    /// Adds one record: one pane update.
    pub fn observe(&mut self, time_ms: i64, m: Metrics) -> Outcome {
        self.observe_until(time_ms, m, i64::MAX)
    }

    /// Adds one record, moving stream time at most to `max_stream_ms` (the wall clock): an order
    /// a little ahead of the clock is counted in its pane, but does not make every order that
    /// arrives a minute late count as late.
    pub fn observe_until(&mut self, time_ms: i64, m: Metrics, max_stream_ms: i64) -> Outcome {
        if !self.is_open(time_ms) {
            self.late += 1;
            return Outcome::Late;
        }
        let index = self.pane_index(time_ms);
        // Stream time after this record: a jump forward closes the panes it leaves behind, but
        // a record ahead of the wall clock moves it only to the clock.
        let stream = self.stream_time_ms.max(time_ms.min(max_stream_ms));
        // The oldest pane still open then must keep its slot: a record further ahead of it than
        // the ring holds is not counted (as if late) rather than evicting an open pane.
        let oldest_open = self.pane_index(
            stream
                .saturating_sub(self.config.size_ms)
                .saturating_sub(self.config.grace_ms),
        );
        if index.saturating_sub(oldest_open) >= self.ring.len() as i64 {
            self.late += 1;
            return Outcome::Late;
        }
        let slot = self.slot(index);
        let pane = &mut self.ring[slot];
        if pane.index != index {
            // A newer pane can only evict one whose windows are all closed: the ring is longer
            // than size + grace. An older record than the slot's pane is impossible here because
            // `is_open` would have refused it.
            if pane.index > index {
                self.late += 1;
                return Outcome::Late;
            }
            *pane = Pane {
                index,
                metrics: Metrics::default(),
            };
        }
        pane.metrics.add(&m);
        self.stream_time_ms = stream;
        self.counted += 1;
        Outcome::Counted
    }

    /// The window `[end_ms - size, end_ms)`; `end_ms` is rounded down to a pane boundary.
    /// Empty windows (and windows older than the kept panes) are zeros.
    pub fn window(&self, end_ms: i64) -> Metrics {
        let last = self.pane_index(end_ms) - 1;
        let mut total = Metrics::default();
        for index in (last - self.config.panes_per_window() + 1)..=last {
            let pane = &self.ring[self.slot(index)];
            if pane.index == index {
                total.add(&pane.metrics);
            }
        }
        total
    }

    /// "Current" and "previous" at wall-clock `now_ms`: the window covering the last `size`
    /// (ending at the end of the pane that holds `now_ms`) and the one before it.
    pub fn current_and_previous(&self, now_ms: i64) -> (Metrics, Metrics) {
        let end = (self.pane_index(now_ms) + 1) * self.config.advance_ms;
        (self.window(end), self.window(end - self.config.size_ms))
    }

    /// Bounds `[start, end)` of the current window at `now_ms` (SQL uses the same).
    pub fn current_bounds(&self, now_ms: i64) -> (i64, i64) {
        let end = (self.pane_index(now_ms) + 1) * self.config.advance_ms;
        (end - self.config.size_ms, end)
    }

    /// Per-pane metrics for the `count` panes ending with the one holding `now_ms`, oldest
    /// first, as (pane start ms, metrics).
    pub fn series(&self, now_ms: i64, count: usize) -> Vec<(i64, Metrics)> {
        let last = self.pane_index(now_ms);
        let count = count.min(self.ring.len()) as i64;
        ((last - count + 1)..=last)
            .map(|index| {
                let pane = &self.ring[self.slot(index)];
                let m = if pane.index == index {
                    pane.metrics
                } else {
                    Metrics::default()
                };
                (index * self.config.advance_ms, m)
            })
            .collect()
    }

    /// Moves stream time back to `max_ms` when it ran past it, and drops the panes after it.
    /// Ingest never lets an order more than a few minutes ahead of the wall clock in, but a
    /// checkpoint written before those bounds existed may hold a stream time far in the future,
    /// which would count every real order as late; restoring clamps it. Returns whether it did.
    pub fn clamp_stream_time(&mut self, max_ms: i64) -> bool {
        if self.stream_time_ms <= max_ms {
            return false;
        }
        let last = self.pane_index(max_ms);
        for pane in &mut self.ring {
            if pane.index != i64::MIN && pane.index > last {
                *pane = Pane {
                    index: i64::MIN,
                    metrics: Metrics::default(),
                };
            }
        }
        self.stream_time_ms = self
            .ring
            .iter()
            .filter(|p| p.index != i64::MIN)
            .map(|p| (p.index + 1) * self.config.advance_ms - 1)
            .max()
            .unwrap_or(i64::MIN)
            .min(max_ms);
        true
    }

    pub fn snapshot(&self) -> WindowsSnapshot {
        let mut panes: Vec<(i64, Metrics)> = self
            .ring
            .iter()
            .filter(|p| p.index != i64::MIN && p.metrics != Metrics::default())
            .map(|p| (p.index, p.metrics))
            .collect();
        panes.sort_by_key(|(i, _)| *i);
        WindowsSnapshot {
            config: self.config,
            stream_time_ms: self.stream_time_ms,
            late: self.late,
            counted: self.counted,
            panes,
        }
    }

    pub fn restore(snapshot: &WindowsSnapshot) -> Result<Self, ConfigError> {
        let mut w = Windows::new(snapshot.config)?;
        for (index, metrics) in &snapshot.panes {
            let slot = w.slot(*index);
            w.ring[slot] = Pane {
                index: *index,
                metrics: *metrics,
            };
        }
        w.stream_time_ms = snapshot.stream_time_ms;
        w.late = snapshot.late;
        w.counted = snapshot.counted;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_618_800_000; // a whole minute

    fn one(total: f64) -> Metrics {
        Metrics::order(total, false, false, false)
    }

    #[test]
    fn records_land_in_the_right_windows() {
        let mut w = Windows::new(WindowConfig::default()).expect("config");
        assert_eq!(
            w.observe(T0, Metrics::order(10.0, true, false, false)),
            Outcome::Counted
        );
        assert_eq!(
            w.observe(T0 + 59_999, Metrics::order(5.5, false, true, true)),
            Outcome::Counted
        );
        assert_eq!(w.observe(T0 + 60_000, one(1.0)), Outcome::Counted);
        // [T0, T0+60s) holds the first two, exactly.
        let m = w.window(T0 + 60_000);
        assert_eq!(
            (m.orders, m.revenue_cents, m.fraud, m.delivered, m.refunded),
            (2, 1550, 1, 1, 1)
        );
        // Boundaries: the window ending at T0 + 1 s holds only the first; the one starting at
        // T0 + 1 s does not hold it.
        assert_eq!(w.window(T0 + 1_000).orders, 1);
        assert_eq!(w.window(T0 + 61_000).orders, 2);
        assert_eq!(w.window(T0 + 61_000).revenue_cents, 650);
        assert_eq!(w.window(T0 + 120_000).orders, 1);
        assert_eq!(
            w.window(T0 + 120_001).orders,
            1,
            "end is rounded down to a pane"
        );
        assert_eq!(w.window(T0 + 121_000).orders, 0, "empty window is zeros");
        assert_eq!(w.window(T0 - 1_000_000), Metrics::default());
    }

    #[test]
    fn current_and_previous_follow_the_clock() {
        let mut w = Windows::new(WindowConfig::default()).expect("config");
        for s in 0..180 {
            w.observe(T0 + s * 1000 + 500, one(1.0));
        }
        // At T0 + 179.5 s: current = [T0+120 s, T0+180 s), previous = [T0+60 s, T0+120 s).
        let (cur, prev) = w.current_and_previous(T0 + 179_500);
        assert_eq!((cur.orders, prev.orders), (60, 60));
        assert_eq!(w.current_bounds(T0 + 179_500), (T0 + 120_000, T0 + 180_000));
        // Two minutes later nothing new arrived: both are empty, never an error.
        let (cur, prev) = w.current_and_previous(T0 + 400_000);
        assert_eq!((cur.orders, prev.orders), (0, 0));
    }

    #[test]
    fn grace_decides_lateness() {
        let mut w = Windows::new(WindowConfig::default()).expect("config");
        w.observe(T0 + 600_000, one(1.0)); // stream time T0 + 10 min
                                           // Pane T0+240 s: its last window ends at T0+300 s, closes at T0+600 s: late.
        assert_eq!(w.observe(T0 + 240_999, one(1.0)), Outcome::Late);
        // Pane T0+241 s: last window closes at T0+601 s > stream time: counted.
        assert_eq!(w.observe(T0 + 241_000, one(1.0)), Outcome::Counted);
        assert_eq!(w.late(), 1);
        assert_eq!(w.window(T0 + 300_000).orders, 1);
        assert_eq!(w.window(T0 + 301_000).orders, 1);
        assert_eq!(w.window(T0 + 241_000).orders, 0);
    }

    #[test]
    fn snapshot_round_trips() {
        let mut w = Windows::new(WindowConfig::default()).expect("config");
        for s in 0..500 {
            w.observe(
                T0 + s * 700,
                Metrics::order(s as f64 / 7.0, s % 3 == 0, s % 4 == 0, s % 5 == 0),
            );
        }
        w.observe(T0 - 10_000_000, one(1.0));
        let snap = w.snapshot();
        let json = serde_json::to_string(&snap).expect("json");
        let back = Windows::restore(&serde_json::from_str(&json).expect("parse")).expect("restore");
        for end in (T0..T0 + 400_000).step_by(1_000) {
            assert_eq!(back.window(end), w.window(end));
        }
        assert_eq!((back.late(), back.counted()), (1, 500));
        assert_eq!(back.snapshot(), snap);
    }

    #[test]
    fn an_order_ahead_of_the_clock_does_not_make_late_ones_late() {
        let mut w = Windows::new(WindowConfig::default()).expect("config");
        let now = T0 + 600_000;
        // Four minutes ahead of the clock: counted, but stream time stays at the clock.
        assert_eq!(
            w.observe_until(now + 240_000, one(1.0), now),
            Outcome::Counted
        );
        assert_eq!(w.stream_time_ms(), Some(now));
        // An order two minutes late still counts (grace is five minutes).
        assert_eq!(
            w.observe_until(now - 120_000, one(1.0), now),
            Outcome::Counted
        );
        assert_eq!(w.late(), 0);
    }

    #[test]
    fn an_order_ahead_of_the_clock_never_takes_the_slot_of_an_open_pane() {
        let mut w = Windows::new(WindowConfig::default()).expect("config");
        let now = T0 + 600_000;
        // The minute before the current one holds an order...
        w.observe_until(now - 62_000, one(1.0), now);
        let (_, before) = w.current_and_previous(now);
        assert_eq!(before.orders, 1);
        // ... and stays whole when orders arrive up to five minutes ahead of the clock.
        for ahead in (0..=300_000).step_by(1_000) {
            assert_eq!(
                w.observe_until(now + ahead, one(1.0), now),
                Outcome::Counted
            );
        }
        let (_, before) = w.current_and_previous(now);
        assert_eq!(before.orders, 1, "the previous minute lost its pane");
        // Further ahead than the ring holds: not counted, nothing evicted.
        assert_eq!(
            w.observe_until(now + 100 * 60_000, one(1.0), now),
            Outcome::Late
        );
        assert_eq!(w.current_and_previous(now).1.orders, 1);
        // A late order inside grace still counts.
        assert_eq!(
            w.observe_until(now - 61_500, one(1.0), now),
            Outcome::Counted
        );
    }

    #[test]
    fn a_quiet_stream_that_resumes_after_an_hour_counts_every_order() {
        let mut w = Windows::new(WindowConfig::default()).expect("config");
        let now = T0 + 100 * 3_600_000;
        // Orders an hour apart (history replayed in order), all behind the wall clock.
        for k in 0..50 {
            let t = T0 + k * 3_600_000;
            assert_eq!(
                w.observe_until(t, one(1.0), now),
                Outcome::Counted,
                "order {k}"
            );
        }
        assert_eq!((w.late(), w.counted()), (0, 50));
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let mut w = Windows::new(WindowConfig::default()).expect("config");
        w.observe(T0, Metrics::order(1e17, false, false, false));
        w.observe(T0 + 1, Metrics::order(1e17, false, false, false));
        let (current, _) = w.current_and_previous(T0);
        assert_eq!(current.revenue_cents, i64::MAX, "saturated, not negative");
        assert_eq!(current.orders, 2);
        assert_eq!(
            Metrics::order(f64::NAN, false, false, false).revenue_cents,
            0
        );
    }

    #[test]
    fn a_run_away_stream_time_is_clamped_back() {
        let mut w = Windows::new(WindowConfig::default()).expect("config");
        w.observe(T0, one(1.0));
        // One order from the far future (what a checkpoint from before the bounds may hold).
        w.observe(9_000_000_000_000_000, one(1.0));
        assert_eq!(w.observe(T0 + 1_000, one(1.0)), Outcome::Late);
        assert!(w.clamp_stream_time(T0 + 5_000));
        assert!(!w.clamp_stream_time(T0 + 5_000), "already within");
        assert_eq!(w.stream_time_ms(), Some(T0 + 999));
        // Real orders count again, and the far-future pane is gone.
        assert_eq!(w.observe(T0 + 2_000, one(1.0)), Outcome::Counted);
        let (current, _) = w.current_and_previous(T0 + 2_000);
        assert_eq!(current.orders, 2);
        assert_eq!(w.snapshot().panes.len(), 2);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(Windows::new(WindowConfig {
            advance_ms: 0,
            ..WindowConfig::default()
        })
        .is_err());
        assert!(Windows::new(WindowConfig {
            size_ms: 1_500,
            advance_ms: 1_000,
            grace_ms: 0
        })
        .is_err());
        assert!(Windows::new(WindowConfig {
            grace_ms: -1,
            ..WindowConfig::default()
        })
        .is_err());
    }
}
