//! # clock: the one notion of "now"
//!
//! Every stage that asks what time it is (the generator stamping event times, the table deciding
//! a segment is old enough to seal or past retention, the windows' "current minute", SQL's
//! `ago()` and `now()`, the overview, checkpoints) asks a [`Clock`] handed to it by the
//! composition root. Live, that is the wall clock; tests hand every stage the same
//! [`ManualClock`] and move time forward by calling [`ManualClock::advance`] instead of sleeping,
//! so what depends on time is tested exactly and without flakes.
//!
//! A tiny crate of its own because every stage needs it and none of them should depend on
//! another stage for it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A source of time in UTC epoch milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall-clock time: event times, retention, "the last minute".
    fn now_ms(&self) -> i64;

    /// Milliseconds that only ever go forward (the wall clock can be stepped back by NTP):
    /// for "how long ago", e.g. a segment's age before it is sealed. Only differences mean
    /// anything.
    fn monotonic_ms(&self) -> i64 {
        self.now_ms()
    }
}

/// A clock shared between stages.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            // A wall clock before 1970 is a broken machine; rtap treats it as the epoch.
            Err(_) => 0,
        }
    }

    fn monotonic_ms(&self) -> i64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let start = START.get_or_init(std::time::Instant::now);
        i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

/// The wall clock as a [`SharedClock`].
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    pub fn new(start_ms: i64) -> Arc<Self> {
        Arc::new(ManualClock {
            now_ms: AtomicI64::new(start_ms),
        })
    }

    /// Moves time forward (or back, with a negative step) by `ms`.
    pub fn advance(&self, ms: i64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn set(&self, ms: i64) {
        self.now_ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// A synthetic clock: starts at `start_ms` and advances `step_ms` every time it is read, so a
/// run of n orders spans exactly n steps of event time (replays, benches).
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

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(5_000);
        assert_eq!(c.now_ms(), 5_000);
        assert_eq!(c.now_ms(), 5_000);
        c.advance(250);
        assert_eq!(c.now_ms(), 5_250);
        c.set(1);
        assert_eq!(c.now_ms(), 1);
    }

    #[test]
    fn the_wall_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
