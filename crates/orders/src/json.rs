//! The order's JSON, written by hand: the one serialisation on rtap's hottest path.
//!
//! serde_json spends most of an order's budget checking every byte of every key and value for
//! characters to escape. Here keys are static and known clean, ids and dates are written from
//! their parts, and only free text goes through the escaper. The output is byte for byte what
//! `serde_json::to_vec(&order)` gives (a test pins that), using the same float formatter.

use uuid::Uuid;

use crate::model::{
    Address, CouponCode, Customer, LineItem, Order, Product, Shipment, StatusEntry,
};

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// Whether the next key is the first of its object (no comma before it).
    first: bool,
}

impl Writer<'_> {
    fn open(&mut self) {
        self.out.push(b'{');
        self.first = true;
    }

    fn close(&mut self) {
        self.out.push(b'}');
        self.first = false;
    }

    /// `"key":`, with the comma that separates it from the previous member.
    fn key(&mut self, key: &'static str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, s: &str) {
        self.out.push(b'"');
        let bytes = s.as_bytes();
        // No early exit: a branch-free scan vectorises, and escapes are rare.
        let needs_escape = bytes.iter().fold(false, |acc, &b| {
            acc | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if !needs_escape {
            self.out.extend_from_slice(bytes);
        } else {
            for &b in bytes {
                match b {
                    b'"' => self.out.extend_from_slice(b"\\\""),
                    b'\\' => self.out.extend_from_slice(b"\\\\"),
                    b'\n' => self.out.extend_from_slice(b"\\n"),
                    b'\r' => self.out.extend_from_slice(b"\\r"),
                    b'\t' => self.out.extend_from_slice(b"\\t"),
                    0x08 => self.out.extend_from_slice(b"\\b"),
                    0x0c => self.out.extend_from_slice(b"\\f"),
                    b if b < 0x20 => {
                        const HEX: &[u8; 16] = b"0123456789abcdef";
                        self.out.extend_from_slice(b"\\u00");
                        self.out.push(HEX[usize::from(b >> 4)]);
                        self.out.push(HEX[usize::from(b & 0xf)]);
                    }
                    b => self.out.push(b),
                }
            }
        }
        self.out.push(b'"');
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    fn uuid(&mut self, id: &Uuid) {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        self.out.push(b'"');
        self.out
            .extend_from_slice(id.hyphenated().encode_lower(&mut buf).as_bytes());
        self.out.push(b'"');
    }

    fn f64(&mut self, v: f64) {
        if v.is_finite() {
            let mut buf = zmij::Buffer::new();
            self.out.extend_from_slice(buf.format_finite(v).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
    }

    fn int(&mut self, v: impl itoa::Integer) {
        let mut buf = itoa::Buffer::new();
        self.out.extend_from_slice(buf.format(v).as_bytes());
    }

    fn bool(&mut self, v: bool) {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    fn array<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        self.out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            each(self, item);
        }
        self.out.push(b']');
        self.first = false;
    }

    fn address(&mut self, a: &Address) {
        self.open();
        self.key("city");
        self.str(&a.city);
        self.key("state");
        self.str(&a.state);
        self.key("street");
        self.str(&a.street);
        self.key("zipcode");
        self.str(&a.zipcode);
        self.close();
    }

    fn customer(&mut self, c: &Customer) {
        self.open();
        self.key("address");
        self.str(&c.address);
        self.key("city");
        self.str(&c.city);
        self.key("customer_id");
        self.uuid(&c.customer_id);
        self.key("email");
        self.str(&c.email);
        self.key("name");
        self.str(&c.name);
        self.key("phone");
        self.str(&c.phone);
        self.key("state");
        self.str(&c.state);
        self.key("zipcode");
        self.str(&c.zipcode);
        self.close();
    }

    fn coupon(&mut self, c: &CouponCode) {
        self.open();
        self.key("name");
        self.str(&c.name);
        self.close();
    }

    fn product(&mut self, p: &Product) {
        self.open();
        self.key("category");
        self.str(&p.category);
        self.key("name");
        self.str(&p.name);
        self.key("out_of_stock");
        self.bool(p.out_of_stock);
        self.key("price");
        self.f64(p.price);
        self.key("product_id");
        self.str(&p.product_id);
        self.key("stock");
        self.int(p.stock);
        self.close();
    }

    fn line_item(&mut self, li: &LineItem) {
        self.open();
        self.key("free_qty");
        self.int(li.free_qty);
        self.key("product");
        self.product(&li.product);
        self.key("quantity");
        self.int(li.quantity);
        self.close();
    }

    fn shipment(&mut self, s: &Shipment) {
        self.open();
        self.key("items");
        self.array(&s.items, Self::line_item);
        self.key("shipment_id");
        self.uuid(&s.shipment_id);
        self.key("shipment_status");
        self.str(&s.shipment_status);
        self.key("shipment_timestamp");
        self.str(&s.shipment_timestamp);
        self.key("tracking_number");
        self.opt_str(s.tracking_number.as_deref());
        self.close();
    }

    fn status(&mut self, s: &StatusEntry) {
        self.open();
        self.key("status");
        self.str(&s.status);
        self.key("status_id");
        self.uuid(&s.status_id);
        self.key("timestamp");
        self.str(&s.timestamp);
        self.close();
    }
}

/// Appends the JSON of `o` to `out`.
pub fn write_order(o: &Order, out: &mut Vec<u8>) {
    let mut w = Writer { out, first: true };
    w.open();
    w.key("billing_address");
    w.address(&o.billing_address);
    w.key("coupon_codes");
    w.array(&o.coupon_codes, Writer::coupon);
    w.key("currency");
    w.str(&o.currency);
    w.key("customer");
    w.customer(&o.customer);
    w.key("delivered");
    w.str(&o.delivered);
    w.key("delivery_date");
    w.opt_str(o.delivery_date.as_deref());
    w.key("env_fee");
    w.f64(o.env_fee);
    w.key("exchange_rate");
    w.f64(o.exchange_rate);
    w.key("expected_delivery_date");
    w.opt_str(o.expected_delivery_date.as_deref());
    w.key("fraud_flag");
    w.bool(o.fraud_flag);
    w.key("fulfillment_center");
    w.str(&o.fulfillment_center);
    w.key("line_items");
    w.array(&o.line_items, Writer::line_item);
    w.key("loyalty_points_used");
    w.int(o.loyalty_points_used);
    w.key("loyalty_tier");
    w.str(&o.loyalty_tier);
    w.key("order_id");
    w.uuid(&o.order_id);
    w.key("order_total");
    w.f64(o.order_total);
    w.key("partial_refund_amount");
    w.f64(o.partial_refund_amount);
    w.key("payment_info");
    w.str(&o.payment_info);
    w.key("payment_method");
    w.str(&o.payment_method);
    w.key("payment_status");
    w.str(&o.payment_status);
    w.key("pet_name");
    w.str(&o.pet_name);
    w.key("refunded");
    w.str(&o.refunded);
    w.key("risk_score");
    w.int(o.risk_score);
    w.key("shipments");
    w.array(&o.shipments, Writer::shipment);
    w.key("shipping_address");
    w.address(&o.shipping_address);
    w.key("shipping_cost");
    w.f64(o.shipping_cost);
    w.key("shipping_provider");
    w.opt_str(o.shipping_provider.as_deref());
    w.key("shipping_speed");
    w.str(&o.shipping_speed);
    w.key("shipping_status");
    w.str(&o.shipping_status);
    w.key("status_history");
    w.array(&o.status_history, Writer::status);
    w.key("subscription_frequency");
    w.opt_str(o.subscription_frequency.as_deref());
    w.key("subscription_id");
    match &o.subscription_id {
        Some(id) => w.uuid(id),
        None => w.out.extend_from_slice(b"null"),
    }
    w.key("subtotal_after_coupon");
    w.f64(o.subtotal_after_coupon);
    w.key("subtotal_before_promos");
    w.f64(o.subtotal_before_promos);
    w.key("tax_amount");
    w.f64(o.tax_amount);
    w.key("tax_rate");
    w.f64(o.tax_rate);
    w.key("time_ms");
    w.int(o.time_ms);
    w.key("timestamp");
    w.str(&o.timestamp);
    w.key("tracking_number");
    w.opt_str(o.tracking_number.as_deref());
    w.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Generator, GeneratorConfig};

    #[test]
    fn identical_to_serde_json() {
        let mut g = Generator::new(GeneratorConfig {
            seed: 9,
            ..GeneratorConfig::default()
        });
        for seq in 1..=20_000 {
            let o = g.generate(seq, 1_793_491_200_000 + seq as i64 * 7);
            let mut mine = Vec::new();
            write_order(&o, &mut mine);
            let theirs = serde_json::to_vec(&o).expect("serde_json");
            assert_eq!(
                String::from_utf8_lossy(&mine),
                String::from_utf8_lossy(&theirs),
                "order {seq}"
            );
        }
    }

    #[test]
    fn free_text_is_escaped_like_serde_json() {
        let mut g = Generator::new(GeneratorConfig::default());
        let mut o = g.generate(1, 0);
        o.customer.name = "Zoë \"Z\" O'Brien\\\n\t\u{1}\u{8}\u{c}\r".to_string();
        o.payment_info = "ünïcødé ✓".to_string();
        let mut mine = Vec::new();
        write_order(&o, &mut mine);
        assert_eq!(mine, serde_json::to_vec(&o).expect("serde_json"));
        let back: Order = serde_json::from_slice(&mine).expect("parses");
        assert_eq!(back, o);
    }
}
