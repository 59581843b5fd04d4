//! The deterministic order generator.
//!
//! Order `seq` of seed `s` draws from its own random stream `(s, ORDER_STREAM, seq)`, and its
//! customer `k` from `(s, CUSTOMER_STREAM, k)`, so the same seed and sequence number give the same
//! order byte for byte. The one piece of state carried from order to order is the coupon ledger
//! (usage limits per rolling hour), so a run is reproduced by generating the same sequence numbers
//! with the same event times from a fresh generator. Money is computed in integer cents and only
//! turned into dollars at the end, so `order_total` equals its parts to the cent.

use std::borrow::Cow;

use crate::catalog::Catalog;
use crate::coupons::{CouponLedger, Effect, COUPONS};
use crate::geo::{Geo, Location};
use crate::model::{
    Address, CouponCode, Customer, LineItem, Order, Product, Shipment, StatusEntry, Text,
};
use crate::rng::Rng;
use crate::timefmt::{new_york_micros, utc_millis};

const ORDER_STREAM: u64 = 1;
const CUSTOMER_STREAM: u64 = 2;
const DAY_MS: i64 = 86_400_000;

/// SPEC 1: `Pending` .30, `Shipped` .30, `Out for Delivery` .10, `Delivered` .25, `Returned` .05,
/// `Lost` .01; the weights sum to 1.01 and are normalised by the draw.
const SHIPPING_STATUS: [(&str, f64); 6] = [
    ("Pending", 0.30),
    ("Shipped", 0.30),
    ("Out for Delivery", 0.10),
    ("Delivered", 0.25),
    ("Returned", 0.05),
    ("Lost", 0.01),
];
const PAYMENT_STATUS: [(&str, f64); 4] = [
    ("authorized", 0.50),
    ("captured", 0.40),
    ("failed", 0.05),
    ("refunded", 0.05),
];
const SHIPPING_SPEED: [(&str, f64); 3] =
    [("Standard", 0.70), ("Express", 0.22), ("Overnight", 0.08)];
const CURRENCY: [(&str, f64, f64); 3] =
    [("USD", 1.0, 0.85), ("EUR", 1.07, 0.08), ("CAD", 0.75, 0.07)];
const LOYALTY: [(&str, f64); 4] = [
    ("None", 0.55),
    ("Silver", 0.25),
    ("Gold", 0.15),
    ("Platinum", 0.05),
];
const PROVIDERS: [&str; 4] = ["FedEx", "UPS", "USPS", "DHL"];
const SUBSCRIPTION_FREQUENCY: [&str; 5] = [
    "every week",
    "every 2 weeks",
    "every 4 weeks",
    "every month",
    "every 8 weeks",
];
const FULFILLMENT_CENTERS: [&str; 14] = [
    "FC_Dallas",
    "FC_Reno",
    "FC_Columbus",
    "FC_Orlando",
    "FC_Phoenix",
    "FC_Atlanta",
    "FC_Denver",
    "FC_Seattle",
    "FC_Chicago",
    "FC_Memphis",
    "FC_Allentown",
    "FC_Sacramento",
    "FC_Indianapolis",
    "FC_Charlotte",
];
const STREET_SUFFIXES: [&str; 10] = [
    "St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Way", "Pl", "Ter",
];
const EMAIL_DOMAINS: [&str; 7] = [
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "icloud.com",
    "hotmail.com",
    "aol.com",
    "proton.me",
];
/// Number of coupon codes on an order: 0, 1 or 2 (before usage limits and stacking rules).
const COUPON_COUNT_WEIGHTS: [f64; 3] = [0.60, 0.30, 0.10];

/// Settings of the generator.
#[derive(Debug, Clone, Copy)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// How many distinct customers orders are spread over; repeat customers make
    /// `/users/{id}/orders` meaningful.
    pub customers: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            customers: 100_000,
        }
    }
}

/// Produces orders; see the module docs for what is deterministic.
#[derive(Debug)]
pub struct Generator {
    config: GeneratorConfig,
    catalog: &'static Catalog,
    geo: &'static Geo,
    coupons: CouponLedger,
}

/// One value of a `(value, weight)` table, drawn by weight (no allocation: this is per order).
fn weighted<T: Copy>(rng: &mut Rng, table: &[(T, f64)]) -> T {
    let total: f64 = table.iter().map(|(_, w)| w).sum();
    let mut x = rng.unit() * total;
    for (value, w) in table {
        if x < *w {
            return *value;
        }
        x -= w;
    }
    table[table.len() - 1].0
}

fn dollars(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// `value * percent / 100`, rounded half up, in integer cents.
fn percent_of(cents: i64, percent: i64) -> i64 {
    (cents * percent + 50) / 100
}

impl Generator {
    pub fn new(config: GeneratorConfig) -> Self {
        Generator {
            config,
            catalog: Catalog::get(),
            geo: Geo::get(),
            coupons: CouponLedger::default(),
        }
    }

    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    fn address(&self, rng: &mut Rng, loc: &Location) -> (String, String) {
        let street = format!(
            "{} {} {}",
            rng.range(1, 9999),
            rng.pick(&self.geo.streets),
            rng.pick(&STREET_SUFFIXES)
        );
        let zipcode = format!("{}{:02}", loc.zip3, rng.below(100));
        (street, zipcode)
    }

    /// Customer `k`: the same person (name, unique email, home address, phone) every time.
    fn customer(&self, k: u64) -> (Customer, &'static Location) {
        let mut rng = Rng::for_key(self.config.seed, CUSTOMER_STREAM, k);
        let first = *rng.pick(&self.geo.first_names);
        let last = *rng.pick(&self.geo.last_names);
        let loc = rng.pick(&self.geo.locations);
        let (address, zipcode) = self.address(&mut rng, loc);
        let customer = Customer {
            address,
            city: Cow::Borrowed(loc.city),
            customer_id: rng.uuid(),
            // The customer number makes the address unique across the whole pool.
            email: format!(
                "{}.{}{}@{}",
                first.to_ascii_lowercase(),
                last.to_ascii_lowercase(),
                k,
                rng.pick(&EMAIL_DOMAINS)
            ),
            name: format!("{first} {last}"),
            phone: format!(
                "{}-{}-{:04}",
                loc.area_code,
                rng.range(200, 999),
                rng.below(10_000)
            ),
            state: Cow::Borrowed(loc.state),
            zipcode,
        };
        (customer, loc)
    }

    fn tracking_number(rng: &mut Rng, provider: &str) -> String {
        let digits = |rng: &mut Rng, n: usize| -> String {
            (0..n)
                .map(|_| char::from(b'0' + rng.below(10) as u8))
                .collect()
        };
        match provider {
            "UPS" => {
                const ALNUM: &[u8] = b"0123456789ABCDEFGHJKLMNPRSTUVWXYZ";
                let tail: String = (0..16)
                    .map(|_| char::from(ALNUM[rng.below(ALNUM.len() as u64) as usize]))
                    .collect();
                format!("1Z{tail}")
            }
            "FedEx" => digits(rng, 12),
            "USPS" => format!("94{}", digits(rng, 20)),
            _ => digits(rng, 10),
        }
    }

    /// Generates order `seq` at event time `time_ms` (UTC epoch milliseconds).
    pub fn generate(&mut self, seq: u64, time_ms: i64) -> Order {
        let mut rng = Rng::for_key(self.config.seed, ORDER_STREAM, seq);
        let order_id = rng.uuid();
        let (customer, home) = self.customer(rng.below(self.config.customers.max(1)));

        // Line items: 1..7 distinct products, quantity 1..3.
        let n_items = rng.range(1, 7) as usize;
        let mut picked: Vec<usize> = Vec::with_capacity(n_items);
        while picked.len() < n_items {
            let p = self.catalog.draw(&mut rng);
            if !picked.contains(&p) {
                picked.push(p);
            }
        }
        let mut subtotal_cents = 0;
        let mut env_fee_due = false;
        let line_items: Vec<LineItem> = picked
            .iter()
            .map(|&p| {
                let product = &self.catalog.products[p];
                let quantity = rng.range(1, 3) as u32;
                let stock = if rng.chance(0.03) {
                    0
                } else {
                    rng.range(1, 500) as u32
                };
                let free_qty = u32::from(quantity == 3 && rng.chance(0.2));
                subtotal_cents += product.price_cents * i64::from(quantity);
                env_fee_due |= product.env_fee;
                LineItem {
                    free_qty,
                    product: Product {
                        category: Cow::Borrowed(product.category),
                        name: Cow::Borrowed(product.name.as_str()),
                        out_of_stock: stock == 0,
                        price: dollars(product.price_cents),
                        product_id: Cow::Borrowed(product.product_id.as_str()),
                        stock,
                    },
                    quantity,
                }
            })
            .collect();

        // Coupons: 0, 1 or 2 distinct codes, within their hourly limits; a non-stackable code
        // is only ever alone.
        let wanted = rng.weighted(&COUPON_COUNT_WEIGHTS);
        let mut after_cents = subtotal_cents;
        let mut free_shipping = false;
        let mut coupon_codes = Vec::with_capacity(wanted);
        let first_code = rng.below(COUPONS.len() as u64) as usize;
        let second_code =
            (first_code + 1 + rng.below(COUPONS.len() as u64 - 1) as usize) % COUPONS.len();
        for &index in [first_code, second_code].iter().take(wanted) {
            let coupon = &COUPONS[index];
            let alone_only = matches!(
                coupon.effect,
                Effect::PercentOff {
                    stackable: false,
                    ..
                }
            );
            if alone_only && !coupon_codes.is_empty() {
                continue;
            }
            if !self.coupons.try_use(index, time_ms) {
                continue;
            }
            match coupon.effect {
                Effect::PercentOff { percent, .. } => {
                    after_cents -= percent_of(after_cents, percent);
                }
                Effect::FreeShipping => free_shipping = true,
            }
            coupon_codes.push(CouponCode {
                name: Cow::Borrowed(coupon.code),
            });
            if alone_only {
                break;
            }
        }

        let shipping_cents = if free_shipping {
            0
        } else {
            rng.range(300, 2500)
        };
        let env_fee_cents = if env_fee_due { rng.range(100, 500) } else { 0 };
        let tax_percent = rng.range(5, 10);
        let tax_cents = percent_of(after_cents, tax_percent);
        let total_cents = after_cents + shipping_cents + env_fee_cents + tax_cents;

        // Addresses: shipping is the customer's home; billing is the same 80% of the time,
        // otherwise an address in another city.
        let shipping_address = Address {
            city: customer.city.clone(),
            state: customer.state.clone(),
            street: customer.address.clone(),
            zipcode: customer.zipcode.clone(),
        };
        let billing_address = if rng.chance(0.8) {
            shipping_address.clone()
        } else {
            let mut loc = rng.pick(&self.geo.locations);
            while loc.city == home.city {
                loc = rng.pick(&self.geo.locations);
            }
            let (street, zipcode) = self.address(&mut rng, loc);
            Address {
                city: Cow::Borrowed(loc.city),
                state: Cow::Borrowed(loc.state),
                street,
                zipcode,
            }
        };
        let risk_base = rng.range(0, 100) as u32;
        let risk_score = if billing_address.city != shipping_address.city {
            (risk_base + 20).min(100)
        } else {
            risk_base
        };

        let shipping_status = weighted(&mut rng, &SHIPPING_STATUS);
        let expected_delivery_date = matches!(shipping_status, "Shipped" | "Out for Delivery")
            .then(|| utc_millis(time_ms + rng.range(1, 4) * DAY_MS));
        let delivery_date = (shipping_status == "Delivered")
            .then(|| utc_millis(time_ms + rng.range(0, 2 * DAY_MS)));
        let shipping_provider = if shipping_status != "Pending" || rng.chance(0.7) {
            Some(*rng.pick(&PROVIDERS))
        } else {
            None
        };
        let tracking_number = shipping_provider.map(|p| Self::tracking_number(&mut rng, p));

        // Shipments: one, or the items split in two non-empty parts.
        let shipment_time = utc_millis(time_ms + rng.range(60_000, 6 * 3_600_000));
        let split_at = if line_items.len() >= 2 && rng.chance(0.3) {
            rng.range(1, line_items.len() as i64 - 1) as usize
        } else {
            line_items.len()
        };
        let mut shipments = Vec::with_capacity(2);
        for items in [&line_items[..split_at], &line_items[split_at..]] {
            if items.is_empty() {
                continue;
            }
            shipments.push(Shipment {
                items: items.to_vec(),
                shipment_id: rng.uuid(),
                shipment_status: Cow::Borrowed(shipping_status),
                shipment_timestamp: shipment_time.clone(),
                tracking_number: if shipments.is_empty() {
                    tracking_number.clone()
                } else {
                    shipping_provider.map(|p| Self::tracking_number(&mut rng, p))
                },
            });
        }

        let refunded = rng.chance(0.10);
        let partial_refund_cents = if refunded { rng.range(100, 15_000) } else { 0 };
        let mut status_history = vec![StatusEntry {
            status: Cow::Borrowed(shipping_status),
            status_id: rng.uuid(),
            timestamp: utc_millis(time_ms),
        }];
        if refunded {
            status_history.push(StatusEntry {
                status: Cow::Borrowed("Refunded"),
                status_id: rng.uuid(),
                timestamp: utc_millis(time_ms + rng.range(3_600_000, 3 * DAY_MS)),
            });
        }

        let wallet = rng.chance(0.5);
        let payment_info = if wallet {
            let local = customer.email.split('@').next().unwrap_or("wallet");
            format!(
                "{local}@{}",
                if rng.chance(0.5) {
                    "paypal.com"
                } else {
                    "venmo.com"
                }
            )
        } else {
            let bin = *rng.pick(&["4443", "4111", "5105", "5425", "3714", "6011"]);
            format!("{bin}xxxxxxxx{:04}", rng.below(10_000))
        };
        let payment_method = if wallet {
            "PayPal"
        } else if rng.chance(0.6) {
            "credit_card"
        } else {
            "debit_card"
        };
        let payment_status = weighted(&mut rng, &PAYMENT_STATUS);
        let currency_row = CURRENCY[rng.weighted(&CURRENCY.map(|(_, _, w)| w))];
        let loyalty_tier = weighted(&mut rng, &LOYALTY);
        let loyalty_points_used = if matches!(loyalty_tier, "Gold" | "Platinum") {
            rng.range(0, 1000) as u32
        } else {
            0
        };
        let subscribed = rng.chance(0.25);
        let subscription_id = subscribed.then(|| rng.uuid());
        let subscription_frequency =
            subscribed.then(|| Cow::Borrowed(*rng.pick(&SUBSCRIPTION_FREQUENCY)));
        let pet_name: Text = Cow::Borrowed(*rng.pick(&self.geo.first_names));
        let fulfillment_center = Cow::Borrowed(*rng.pick(&FULFILLMENT_CENTERS));
        let shipping_speed = Cow::Borrowed(weighted(&mut rng, &SHIPPING_SPEED));

        Order {
            billing_address,
            coupon_codes,
            currency: Cow::Borrowed(currency_row.0),
            customer,
            delivered: Cow::Borrowed(if shipping_status == "Delivered" {
                "yes"
            } else {
                "no"
            }),
            delivery_date,
            env_fee: dollars(env_fee_cents),
            exchange_rate: currency_row.1,
            expected_delivery_date,
            fraud_flag: risk_score > 91,
            fulfillment_center,
            line_items,
            loyalty_points_used,
            loyalty_tier: Cow::Borrowed(loyalty_tier),
            order_id,
            order_total: dollars(total_cents),
            partial_refund_amount: dollars(partial_refund_cents),
            payment_info,
            payment_method: Cow::Borrowed(payment_method),
            payment_status: Cow::Borrowed(payment_status),
            pet_name,
            refunded: Cow::Borrowed(if refunded { "yes" } else { "no" }),
            risk_score,
            shipments,
            shipping_address,
            shipping_cost: dollars(shipping_cents),
            shipping_provider: shipping_provider.map(Cow::Borrowed),
            shipping_speed,
            shipping_status: Cow::Borrowed(shipping_status),
            status_history,
            subscription_frequency,
            subscription_id,
            subtotal_after_coupon: dollars(after_cents),
            subtotal_before_promos: dollars(subtotal_cents),
            tax_amount: dollars(tax_cents),
            tax_rate: dollars(tax_percent),
            time_ms,
            timestamp: new_york_micros(time_ms),
            tracking_number,
        }
    }
}
