//! # orders: what an order event is, and where they come from
//!
//! The first stage of rtap's data flow: the order model of SPEC section 1 (serde types whose
//! JSON is the wire format on every later edge: the orders API, Kafka, ingest), rtap's own seeded
//! product catalog and US locations, and the deterministic generator. Knows nothing of I/O,
//! Kafka or Arrow.
//!
//! Layout:
//! - [`model`]: the serde types; keys serialise in alphabetical order, as the original API did.
//! - [`generator`]: order `seq` of seed `s` at event time `t`, deterministic, money in cents.
//! - [`catalog`], [`geo`]: the product catalog and the people/places tables, compiled in.
//! - [`coupons`]: the four codes and their usage limits per rolling hour.
//! - `Clock` & co: re-exported from the `clock` crate (event time comes from the clock the
//!   composition root hands the generator).
//! - [`rng`], [`timefmt`], `json`: the stable random stream, and the fast date and JSON writers.

pub mod catalog;
pub mod coupons;
pub mod generator;
pub mod geo;
mod json;
pub mod model;
pub mod rng;
pub mod timefmt;

pub use clock::{Clock, ManualClock, SteppingClock, SystemClock};
pub use generator::{Generator, GeneratorConfig};
pub use model::Order;

impl Order {
    /// The order as the JSON bytes every later stage sees (keys sorted, money with at most two
    /// decimals).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3072);
        self.write_json(&mut out);
        out
    }

    /// The order's JSON as a string.
    pub fn to_json_string(&self) -> String {
        let mut out = Vec::with_capacity(3072);
        json::write_order(self, &mut out);
        // The writer copies UTF-8 strings whole and adds only ASCII.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Appends the order's JSON to `out` (reusing a buffer on hot paths).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        json::write_order(self, out);
    }
}
