//! Where an order's event time comes from. Live runs pass the wall clock; tests and replays pass
//! a synthetic clock so the same seed gives the same orders, byte for byte.

use std::sync::atomic::{AtomicI64, Ordering};

/// A source of event time in UTC epoch milliseconds.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A synthetic clock: starts at `start_ms` and advances `step_ms` every time it is read, so a
/// run of n orders spans exactly n steps of event time.
#[derive(Debug)]
pub struct SteppingClock {
    next_ms: AtomicI64,
    step_ms: i64,
}

impl SteppingClock {
    pub fn new(start_ms: i64, step_ms: i64) -> Self {
        SteppingClock {
            next_ms: AtomicI64::new(start_ms),
            step_ms,
        }
    }
}

impl Clock for SteppingClock {
    fn now_ms(&self) -> i64 {
        self.next_ms.fetch_add(self.step_ms, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stepping_clock_advances_per_read() {
        let c = SteppingClock::new(1_000, 32);
        assert_eq!(c.now_ms(), 1_000);
        assert_eq!(c.now_ms(), 1_032);
        assert_eq!(c.now_ms(), 1_064);
    }
}
