//! Coupon codes and their usage limits per rolling hour of event time.
//!
//! The original service counted uses forever, so after a few minutes no order had a discount.
//! Here each code may be used at most `hourly_limit` times in any 60 minutes of event time: the
//! ledger keeps the event times of the uses still inside the hour (at most the limit per code,
//! so memory is bounded) and forgets older ones as time moves on.

use std::collections::VecDeque;

const HOUR_MS: i64 = 3_600_000;

/// What a code does to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Percent off the subtotal; `stackable` codes combine with others.
    PercentOff { percent: i64, stackable: bool },
    /// Shipping becomes free.
    FreeShipping,
}

#[derive(Debug, Clone, Copy)]
pub struct Coupon {
    pub code: &'static str,
    pub effect: Effect,
    pub hourly_limit: usize,
}

/// The four codes of SPEC 1.2, in a fixed order (the generator draws by index).
pub const COUPONS: [Coupon; 4] = [
    Coupon {
        code: "SAVE10",
        effect: Effect::PercentOff {
            percent: 10,
            stackable: true,
        },
        hourly_limit: 1000,
    },
    Coupon {
        code: "WELCOME",
        effect: Effect::PercentOff {
            percent: 5,
            stackable: true,
        },
        hourly_limit: 500,
    },
    Coupon {
        code: "PETSAREGREAT",
        effect: Effect::PercentOff {
            percent: 15,
            stackable: false,
        },
        hourly_limit: 50,
    },
    Coupon {
        code: "FREESHIP",
        effect: Effect::FreeShipping,
        hourly_limit: 300,
    },
];

/// Uses of each code within the last hour of event time.
#[derive(Debug, Clone, Default)]
pub struct CouponLedger {
    uses: [VecDeque<i64>; 4],
}

impl CouponLedger {
    /// Records a use of code `index` at `time_ms` if the code is under its limit for the hour
    /// ending then; returns whether the use was allowed.
    pub fn try_use(&mut self, index: usize, time_ms: i64) -> bool {
        let uses = &mut self.uses[index];
        while uses.front().is_some_and(|t| *t <= time_ms - HOUR_MS) {
            uses.pop_front();
        }
        if uses.len() >= COUPONS[index].hourly_limit {
            return false;
        }
        uses.push_back(time_ms);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_applies_per_rolling_hour() {
        let mut ledger = CouponLedger::default();
        let petsaregreat = 2;
        for i in 0..50 {
            assert!(ledger.try_use(petsaregreat, i * 1000));
        }
        assert!(!ledger.try_use(petsaregreat, 60_000));
        // One hour after the first use, that use has left the window and frees one slot.
        assert!(ledger.try_use(petsaregreat, HOUR_MS));
        assert!(!ledger.try_use(petsaregreat, HOUR_MS + 1));
        assert!(ledger.try_use(petsaregreat, HOUR_MS + 1000));
        // Other codes are counted separately.
        assert!(ledger.try_use(0, HOUR_MS));
    }
}
