//! JSON order events -> rows of table `orders`, a batch at a time.
//!
//! Parsing (the expensive part) runs on all cores over slices of the batch; rows are then
//! appended in message order. A message that cannot become a row is returned as a
//! [`Rejected`] with the reason, and the rest of the batch is kept: malformed JSON, a wrongly
//! typed field, a missing or empty `order_id`, no event time (neither `time_ms` nor a record
//! timestamp), an event time too far ahead of the wall clock or older than retention, a money
//! amount or quantity outside [`Limits`], or a payload over the size limit. Nothing a message
//! holds can make decoding panic or a sum overflow: every bound is checked here.

use std::borrow::Cow;

use datafusion::arrow::record_batch::RecordBatch;
use serde::Deserialize;

mod columns;

use columns::Columns;

/// Where a message came from: a Kafka partition and offset, or the generator's sequence number
/// (partition 0, offset = sequence).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.partition, self.offset)
    }
}

/// One message to decode.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub position: Position,
    pub payload: &'a [u8],
    /// The record's own timestamp (Kafka), used when the order has no `time_ms`.
    pub record_time_ms: Option<i64>,
}

impl<'a> Message<'a> {
    /// Payloads in their order as partition 0, offsets 0, 1, ... (files, tests, benches).
    pub fn numbered(payloads: &'a [Vec<u8>]) -> Vec<Message<'a>> {
        payloads
            .iter()
            .enumerate()
            .map(|(k, payload)| Message {
                position: Position {
                    partition: 0,
                    offset: k as i64,
                },
                payload,
                record_time_ms: None,
            })
            .collect()
    }
}

/// What every message is checked against (from `IngestConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_future_ms: i64,
    pub max_age_ms: i64,
    pub max_amount: f64,
    pub max_line_items: usize,
    pub max_item_quantity: i32,
}

impl Default for Limits {
    fn default() -> Self {
        crate::IngestConfig::default().limits()
    }
}

/// Why a message was not turned into a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    Oversized {
        bytes: usize,
        limit: usize,
    },
    Malformed(String),
    MissingOrderId,
    MissingTime,
    BadTime(i64),
    /// Event time further ahead of the wall clock than `ingest.max_future_ms`.
    FutureTime {
        time_ms: i64,
        ahead_ms: i64,
        limit_ms: i64,
    },
    /// Event time older than `ingest.max_age_ms` (retention).
    TooOld {
        time_ms: i64,
        age_ms: i64,
        limit_ms: i64,
    },
    /// A value outside its plausible range; `what` names the field and the bound.
    BadValue {
        field: &'static str,
        value: String,
        bound: String,
    },
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::Oversized { bytes, limit } => {
                write!(
                    f,
                    "message of {bytes} bytes is over the limit of {limit} bytes"
                )
            }
            RejectReason::Malformed(e) => write!(f, "not a valid order: {e}"),
            RejectReason::MissingOrderId => write!(f, "order_id is missing or empty"),
            RejectReason::MissingTime => {
                write!(f, "time_ms is missing and the record has no timestamp")
            }
            RejectReason::BadTime(t) => {
                write!(f, "time_ms {t} is not a positive epoch millisecond")
            }
            RejectReason::FutureTime {
                time_ms,
                ahead_ms,
                limit_ms,
            } => write!(
                f,
                "time_ms {time_ms} is {ahead_ms} ms ahead of the wall clock, more than \
                 ingest.max_future_ms = {limit_ms}"
            ),
            RejectReason::TooOld {
                time_ms,
                age_ms,
                limit_ms,
            } => write!(
                f,
                "time_ms {time_ms} is {age_ms} ms old, older than ingest.max_age_ms = {limit_ms} \
                 (retention)"
            ),
            RejectReason::BadValue {
                field,
                value,
                bound,
            } => write!(f, "{field} = {value} is out of range ({bound})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub position: Position,
    pub reason: RejectReason,
}

/// A string field of the payload, borrowed from it unless it holds escapes. serde borrows a
/// `Cow<str>` field only when the field's type is exactly `Cow`: an `Option<Cow<str>>` was
/// copied into a new allocation for every field of every order.
#[derive(Debug, Default, PartialEq)]
struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Cow<'de, str>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        deserializer.deserialize_str(Visitor).map(Text)
    }
}

#[derive(Deserialize, Default)]
struct RawAddress<'a> {
    #[serde(borrow)]
    street: Option<Text<'a>>,
    #[serde(borrow)]
    city: Option<Text<'a>>,
    #[serde(borrow)]
    state: Option<Text<'a>>,
    #[serde(borrow)]
    zipcode: Option<Text<'a>>,
}

#[derive(Deserialize, Default)]
struct RawCustomer<'a> {
    #[serde(borrow)]
    customer_id: Option<Text<'a>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    email: Option<Text<'a>>,
    #[serde(borrow)]
    phone: Option<Text<'a>>,
    #[serde(borrow)]
    address: Option<Text<'a>>,
    #[serde(borrow)]
    city: Option<Text<'a>>,
    #[serde(borrow)]
    state: Option<Text<'a>>,
    #[serde(borrow)]
    zipcode: Option<Text<'a>>,
}

#[derive(Deserialize, Default, PartialEq)]
struct RawProduct<'a> {
    #[serde(borrow)]
    product_id: Option<Text<'a>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    category: Option<Text<'a>>,
    price: Option<f64>,
    stock: Option<i32>,
    /// Taken leniently (`true`, `1`, `"true"`, ...; anything else is no value): before it was
    /// stored, an order with any value here was accepted.
    #[serde(default, deserialize_with = "lenient_bool")]
    out_of_stock: Option<bool>,
}

/// A JSON boolean, a number (non-zero is true) or a text `"true"`/`"false"`; any other value
/// (object, array, other text, null) is no value, never an error.
fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v != 0))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v != 0))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v != 0.0))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(if v.eq_ignore_ascii_case("true") {
                Some(true)
            } else if v.eq_ignore_ascii_case("false") {
                Some(false)
            } else {
                None
            })
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut a: A,
        ) -> Result<Self::Value, A::Error> {
            while a
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    d.deserialize_any(Visitor)
}

#[derive(Deserialize, PartialEq)]
struct RawItem<'a> {
    #[serde(borrow, default)]
    product: RawProduct<'a>,
    quantity: Option<i32>,
    free_qty: Option<i32>,
}

#[derive(Deserialize)]
struct RawCoupon<'a> {
    #[serde(borrow)]
    name: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct RawStatus<'a> {
    #[serde(borrow)]
    status: Option<Text<'a>>,
    #[serde(borrow)]
    status_id: Option<Text<'a>>,
    #[serde(borrow)]
    timestamp: Option<Text<'a>>,
}

/// A shipment: its line items are normally a run of the order's (see [`crate::schema::SHIPMENT_ITEMS`]).
#[derive(Deserialize)]
struct RawShipment<'a> {
    #[serde(borrow)]
    items: Option<Vec<RawItem<'a>>>,
    #[serde(borrow)]
    shipment_id: Option<Text<'a>>,
    #[serde(borrow)]
    shipment_status: Option<Text<'a>>,
    #[serde(borrow)]
    shipment_timestamp: Option<Text<'a>>,
    #[serde(borrow)]
    tracking_number: Option<Text<'a>>,
}

/// The fields of an order event that become columns; anything else is skipped.
#[derive(Deserialize)]
struct RawOrder<'a> {
    #[serde(borrow)]
    order_id: Option<Text<'a>>,
    time_ms: Option<i64>,
    #[serde(borrow)]
    timestamp: Option<Text<'a>>,
    #[serde(borrow, default)]
    customer: Option<RawCustomer<'a>>,
    #[serde(borrow, default)]
    billing_address: Option<RawAddress<'a>>,
    #[serde(borrow, default)]
    shipping_address: Option<RawAddress<'a>>,
    subtotal_before_promos: Option<f64>,
    subtotal_after_coupon: Option<f64>,
    shipping_cost: Option<f64>,
    env_fee: Option<f64>,
    tax_rate: Option<f64>,
    tax_amount: Option<f64>,
    order_total: Option<f64>,
    partial_refund_amount: Option<f64>,
    exchange_rate: Option<f64>,
    #[serde(borrow)]
    currency: Option<Text<'a>>,
    #[serde(borrow)]
    payment_info: Option<Text<'a>>,
    #[serde(borrow)]
    payment_method: Option<Text<'a>>,
    #[serde(borrow)]
    payment_status: Option<Text<'a>>,
    #[serde(borrow)]
    pet_name: Option<Text<'a>>,
    #[serde(borrow)]
    shipping_status: Option<Text<'a>>,
    #[serde(borrow)]
    delivered: Option<Text<'a>>,
    #[serde(borrow)]
    refunded: Option<Text<'a>>,
    #[serde(borrow)]
    expected_delivery_date: Option<Text<'a>>,
    #[serde(borrow)]
    delivery_date: Option<Text<'a>>,
    fraud_flag: Option<bool>,
    risk_score: Option<i32>,
    #[serde(borrow)]
    fulfillment_center: Option<Text<'a>>,
    #[serde(borrow)]
    shipping_speed: Option<Text<'a>>,
    #[serde(borrow)]
    loyalty_tier: Option<Text<'a>>,
    loyalty_points_used: Option<i32>,
    #[serde(borrow)]
    subscription_id: Option<Text<'a>>,
    #[serde(borrow)]
    subscription_frequency: Option<Text<'a>>,
    #[serde(borrow)]
    tracking_number: Option<Text<'a>>,
    #[serde(borrow)]
    shipping_provider: Option<Text<'a>>,
    #[serde(borrow, default)]
    line_items: Option<Vec<RawItem<'a>>>,
    #[serde(borrow, default)]
    coupon_codes: Option<Vec<RawCoupon<'a>>>,
    #[serde(borrow, default)]
    status_history: Option<Vec<RawStatus<'a>>>,
    /// Kept as text and read by [`Shipments::of`] when the row is built: an order whose
    /// shipments have another shape is still an order (they are then stored as text).
    #[serde(borrow, default)]
    shipments: Option<&'a serde_json::value::RawValue>,
}

/// An order's shipments as the table stores them.
enum Shipments<'a> {
    /// No `shipments` (or null).
    None,
    /// Each a run of the line items, in order: how many each holds.
    Split(Vec<RawShipment<'a>>),
    /// Anything else, kept as compact JSON text (keys sorted, as the orders API writes),
    /// when it is at most [`MAX_SHIPMENTS_TEXT`] bytes; longer, it is not kept (None).
    Text(String),
}

/// The longest `shipments` text kept for an order whose shipments are not a split of its line
/// items (a SQL value is at most 64 KiB, `sql.max_value_size`).
pub const MAX_SHIPMENTS_TEXT: usize = 64 * 1024;

impl<'a> Shipments<'a> {
    fn of(order: &RawOrder<'a>) -> Shipments<'a> {
        let Some(raw) = order.shipments else {
            return Shipments::None;
        };
        let text = raw.get();
        if text == "null" {
            return Shipments::None;
        }
        let as_text = || match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => {
                let compact = v.to_string();
                if compact.len() <= MAX_SHIPMENTS_TEXT {
                    Shipments::Text(compact)
                } else {
                    Shipments::None
                }
            }
            Err(_) => Shipments::None,
        };
        let Ok(shipments) = serde_json::from_str::<Vec<RawShipment<'a>>>(text) else {
            return as_text();
        };
        let items = order.line_items.as_deref().unwrap_or_default();
        if shipments.len() > items.len() + 1 {
            // More shipments than items to put in them (empty ones): kept as text, bounded.
            return as_text();
        }
        let mut at = 0;
        for s in &shipments {
            let Some(part) = s.items.as_deref() else {
                return as_text();
            };
            if items.get(at..at + part.len()) != Some(part) {
                return as_text();
            }
            at += part.len();
        }
        if at != items.len() {
            return as_text();
        }
        Shipments::Split(shipments)
    }
}

/// A message that parsed, with what dedup and the table need to know about it.
pub struct Parsed<'a> {
    pub position: Position,
    pub order_id_hash: u128,
    pub time_ms: i64,
    order: RawOrder<'a>,
    /// Read here, on the parsing threads, not while the row is built.
    shipments: Shipments<'a>,
}

/// Parses one message; the size limit is checked before any parsing, event time against
/// `now_ms` (the wall clock) and the values against `limits` after.
pub fn parse<'a>(msg: &Message<'a>, limits: &Limits, now_ms: i64) -> Result<Parsed<'a>, Rejected> {
    let reject = |reason| Rejected {
        position: msg.position,
        reason,
    };
    if msg.payload.len() > limits.max_bytes {
        return Err(reject(RejectReason::Oversized {
            bytes: msg.payload.len(),
            limit: limits.max_bytes,
        }));
    }
    // UTF-8 is checked once for the whole payload (a fast pass over ASCII) so the parser need
    // not check every string again. A payload that is not all UTF-8 goes through `from_slice`,
    // which accepts invalid bytes in fields the table skips, as before.
    let parsed: Result<RawOrder<'a>, _> = match std::str::from_utf8(msg.payload) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(msg.payload),
    };
    let mut order = parsed.map_err(|e| reject(RejectReason::Malformed(e.to_string())))?;
    let order_id = match order.order_id.as_deref() {
        Some(id) if !id.trim().is_empty() => id,
        _ => return Err(reject(RejectReason::MissingOrderId)),
    };
    let order_id_hash = xxhash_rust::xxh3::xxh3_128(order_id.as_bytes());
    let time_ms = match order.time_ms.or(msg.record_time_ms) {
        None => return Err(reject(RejectReason::MissingTime)),
        Some(t) if t <= 0 => return Err(reject(RejectReason::BadTime(t))),
        Some(t) => t,
    };
    let ahead_ms = time_ms.saturating_sub(now_ms);
    if ahead_ms > limits.max_future_ms {
        return Err(reject(RejectReason::FutureTime {
            time_ms,
            ahead_ms,
            limit_ms: limits.max_future_ms,
        }));
    }
    let age_ms = now_ms.saturating_sub(time_ms);
    if age_ms > limits.max_age_ms {
        return Err(reject(RejectReason::TooOld {
            time_ms,
            age_ms,
            limit_ms: limits.max_age_ms,
        }));
    }
    check_values(&order, limits).map_err(reject)?;
    order.time_ms = Some(time_ms);
    let shipments = Shipments::of(&order);
    Ok(Parsed {
        position: msg.position,
        order_id_hash,
        time_ms,
        order,
        shipments,
    })
}

/// Money within `±max_amount` (and `order_total` not negative), line items and quantities
/// within their bounds: what keeps every sum downstream exact and far from overflow.
fn check_values(o: &RawOrder<'_>, limits: &Limits) -> Result<(), RejectReason> {
    let money = [
        ("subtotal_before_promos", o.subtotal_before_promos),
        ("subtotal_after_coupon", o.subtotal_after_coupon),
        ("shipping_cost", o.shipping_cost),
        ("env_fee", o.env_fee),
        ("tax_rate", o.tax_rate),
        ("tax_amount", o.tax_amount),
        ("order_total", o.order_total),
        ("partial_refund_amount", o.partial_refund_amount),
        ("exchange_rate", o.exchange_rate),
    ];
    for (field, value) in money {
        if let Some(v) = value {
            if !v.is_finite() || v.abs() > limits.max_amount {
                return Err(RejectReason::BadValue {
                    field,
                    value: v.to_string(),
                    bound: format!(
                        "at most {} in absolute value, ingest.max_amount",
                        limits.max_amount
                    ),
                });
            }
        }
    }
    if let Some(total) = o.order_total {
        if total < 0.0 {
            return Err(RejectReason::BadValue {
                field: "order_total",
                value: total.to_string(),
                bound: "must not be negative".into(),
            });
        }
    }
    let items = o.line_items.as_deref().unwrap_or_default();
    // Every list of an order is bounded like its line items (a status history or coupon list
    // of a million entries would make each JSON column read of it that large).
    for (field, len) in [
        ("line_items", items.len()),
        ("coupon_codes", o.coupon_codes.as_ref().map_or(0, Vec::len)),
        (
            "status_history",
            o.status_history.as_ref().map_or(0, Vec::len),
        ),
    ] {
        if len > limits.max_line_items {
            return Err(RejectReason::BadValue {
                field,
                value: format!("{len} entries"),
                bound: format!("at most {}, ingest.max_line_items", limits.max_line_items),
            });
        }
    }
    for item in items {
        for (field, q) in [
            ("line_items.quantity", item.quantity),
            ("line_items.free_qty", item.free_qty),
        ] {
            if let Some(q) = q {
                if !(0..=limits.max_item_quantity).contains(&q) {
                    return Err(RejectReason::BadValue {
                        field,
                        value: q.to_string(),
                        bound: format!(
                            "0 to {}, ingest.max_item_quantity",
                            limits.max_item_quantity
                        ),
                    });
                }
            }
        }
        if let Some(price) = item.product.price {
            if !price.is_finite() || price.abs() > limits.max_amount {
                return Err(RejectReason::BadValue {
                    field: "line_items.product.price",
                    value: price.to_string(),
                    bound: format!(
                        "at most {} in absolute value, ingest.max_amount",
                        limits.max_amount
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Builds rows of table `orders` from parsed messages, in the given order.
pub fn to_batch<'a>(
    parsed: impl IntoIterator<Item = &'a Parsed<'a>>,
    rows_hint: usize,
) -> RecordBatch {
    let mut columns = Columns::new(rows_hint);
    for p in parsed {
        columns.push(&p.order, &p.shipments);
    }
    columns.finish()
}

/// [`to_batch`] on up to `threads` threads: each builds the rows of one slice, then the slices
/// are joined in order (one copy of the built columns, cheaper than building them on one core).
pub fn to_batch_parallel(parsed: &[Parsed<'_>], threads: usize) -> RecordBatch {
    let threads = threads.max(1);
    if threads == 1 || parsed.len() < 2_048 {
        return to_batch(parsed, parsed.len());
    }
    let chunk = parsed.len().div_ceil(threads);
    let parts: Vec<RecordBatch> = std::thread::scope(|scope| {
        let handles: Vec<_> = parsed
            .chunks(chunk)
            .map(|part| scope.spawn(move || to_batch(part, part.len())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let schema = parts[0].schema();
    // Every part has the table's schema (built by the same code), so this cannot fail; should
    // it ever, build on one thread instead of losing the batch.
    datafusion::arrow::compute::concat_batches(&schema, &parts)
        .unwrap_or_else(|_| to_batch(parsed, parsed.len()))
}

/// Parses a batch on up to `threads` threads, keeping message order.
pub fn parse_all<'a>(
    messages: &[Message<'a>],
    limits: &Limits,
    now_ms: i64,
    threads: usize,
) -> Vec<Result<Parsed<'a>, Rejected>> {
    let threads = threads.max(1);
    if threads == 1 || messages.len() < 256 {
        return messages.iter().map(|m| parse(m, limits, now_ms)).collect();
    }
    let chunk = messages.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = messages
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|m| parse(m, limits, now_ms))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_borrow_from_the_payload_unless_escaped() {
        let payload = br#"{"order_id":"a-1","currency":"USD","pet_name":"Mr \"Bo\"","customer":{"name":"Ann"}}"#;
        let order: RawOrder<'_> = serde_json::from_slice(payload).expect("parses");
        let borrowed = |t: &Option<Text<'_>>| matches!(t, Some(Text(Cow::Borrowed(_))));
        assert!(borrowed(&order.order_id));
        assert!(borrowed(&order.currency));
        assert!(borrowed(&order.customer.as_ref().expect("customer").name));
        assert_eq!(order.pet_name.as_deref(), Some("Mr \"Bo\""));
        assert!(
            !borrowed(&order.pet_name),
            "an escaped string is decoded into its own copy"
        );
    }

    fn parse_one(payload: &[u8]) -> Result<Parsed<'_>, Rejected> {
        let message = Message {
            position: Position {
                partition: 0,
                offset: 1,
            },
            payload,
            record_time_ms: None,
        };
        parse(&message, &Limits::default(), 1_700_000_000_000)
    }

    fn reason(r: Result<Parsed<'_>, Rejected>) -> String {
        r.err().map(|e| e.reason.to_string()).unwrap_or_default()
    }

    #[test]
    fn text_fields_through_parse_null_missing_wrong_type_and_bad_utf8() {
        let p = parse_one(br#"{"order_id":"a-1","time_ms":1700000000000,"currency":null}"#)
            .expect("null is no value");
        assert_eq!(p.order.currency.as_deref(), None);
        assert_eq!(
            p.order.payment_method.as_deref(),
            None,
            "missing is no value"
        );
        assert_eq!(p.order.order_id.as_deref(), Some("a-1"));
        let err = reason(parse_one(
            br#"{"order_id":"a-1","time_ms":1700000000000,"currency":5}"#,
        ));
        assert!(err.contains("expected a string"), "{err}");
        // Invalid UTF-8 inside a field the table skips is accepted (as serde_json always did);
        // inside a kept string it is rejected.
        let mut skipped = br#"{"order_id":"a-1","time_ms":1700000000000,"gift_note":"x"}"#.to_vec();
        let at = skipped.len() - 3;
        skipped[at] = 0xff;
        assert!(parse_one(&skipped).is_ok());
        let mut kept = br#"{"order_id":"a-1","time_ms":1700000000000,"currency":"x"}"#.to_vec();
        let at = kept.len() - 3;
        kept[at] = 0xff;
        let err = reason(parse_one(&kept));
        assert!(err.starts_with("not a valid order"), "{err}");
        // `shipments` is kept (the JSON column `shipments`): invalid UTF-8 in it is rejected
        // like in any kept field.
        let mut shipments =
            br#"{"order_id":"a-1","time_ms":1700000000000,"shipments":"x"}"#.to_vec();
        let at = shipments.len() - 3;
        shipments[at] = 0xff;
        let err = reason(parse_one(&shipments));
        assert!(err.starts_with("not a valid order"), "{err}");
    }

    #[test]
    fn out_of_stock_of_any_type_never_rejects_an_order() {
        for (value, want) in [
            ("true", Some(true)),
            ("0", Some(false)),
            ("2", Some(true)),
            ("\"false\"", Some(false)),
            ("\"maybe\"", None),
            ("null", None),
            ("[1, {\"a\": [2]}]", None),
            ("{\"b\": true}", None),
        ] {
            let payload = format!(
                r#"{{"order_id":"a-1","time_ms":1700000000000,"line_items":[{{"product":{{"out_of_stock":{value}}},"quantity":1}}]}}"#
            );
            let p = parse_one(payload.as_bytes()).unwrap_or_else(|e| panic!("{value}: {e:?}"));
            let items = p.order.line_items.as_deref().unwrap_or_default();
            assert_eq!(items[0].product.out_of_stock, want, "{value}");
        }
    }

    #[test]
    fn every_list_of_an_order_is_bounded_and_odd_shipments_are_kept_small() {
        let limits = Limits {
            max_line_items: 3,
            ..Limits::default()
        };
        let one = |payload: &str| {
            let message = Message {
                position: Position {
                    partition: 0,
                    offset: 1,
                },
                payload: payload.as_bytes(),
                record_time_ms: None,
            };
            parse(&message, &limits, 1_700_000_000_000)
                .map(|p| matches!(p.shipments, Shipments::Text(_)))
                .map_err(|e| e.reason.to_string())
        };
        let head = r#"{"order_id":"a-1","time_ms":1700000000000"#;
        for field in ["status_history", "coupon_codes"] {
            let err = one(&format!("{head},\"{field}\":[{{}},{{}},{{}},{{}}]}}"))
                .expect_err("four entries");
            assert!(err.contains(field) && err.contains("at most 3"), "{err}");
            assert!(one(&format!("{head},\"{field}\":[{{}},{{}},{{}}]}}")).is_ok());
        }
        // Empty shipments beyond the items: kept as text (bounded), not as thousands of rows.
        let empties = vec![r#"{"items":[]}"#; 1_000].join(",");
        assert_eq!(
            one(&format!("{head},\"shipments\":[{empties}]}}")),
            Ok(true)
        );
        // Text over the bound is not kept at all.
        let big = format!(r#"{{"note":"{}"}}"#, "x".repeat(MAX_SHIPMENTS_TEXT));
        let p = one(&format!("{head},\"shipments\":[{big}]}}"));
        assert_eq!(
            p,
            Ok(false),
            "over {MAX_SHIPMENTS_TEXT} bytes the text is dropped"
        );
    }
}
