//! Statistical and structural tests over 100,000 generated orders: every promise of SPEC
//! section 1 that can be checked on the JSON a consumer sees.

use std::collections::HashMap;

use chrono::{NaiveDateTime, TimeZone};
use orders::catalog::Catalog;
use orders::geo::Geo;
use orders::{Clock, Generator, GeneratorConfig, SteppingClock};
use serde_json::Value;

const N: usize = 100_000;
/// 2026-11-01T00:00:00Z, and 32 ms between orders (about 31 orders/s, the default rate).
const START_MS: i64 = 1_793_491_200_000;
const STEP_MS: i64 = 32;

fn generate(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut generator = Generator::new(GeneratorConfig {
        seed,
        ..GeneratorConfig::default()
    });
    let clock = SteppingClock::new(START_MS, STEP_MS);
    (1..=n as u64)
        .map(|seq| generator.generate(seq, clock.now_ms()).to_json())
        .collect()
}

fn cents(v: &Value) -> i64 {
    let x = v.as_f64().expect("a number");
    let c = (x * 100.0).round();
    assert!(
        (x * 100.0 - c).abs() < 1e-6,
        "{x} has more than two decimals"
    );
    c as i64
}

fn share(count: usize) -> f64 {
    count as f64 / N as f64
}

fn assert_share(what: &str, count: usize, expected: f64, tolerance: f64) {
    let got = share(count);
    assert!(
        (got - expected).abs() <= tolerance,
        "{what}: {got:.4} is not within {tolerance} of {expected}"
    );
}

fn assert_keys_sorted(v: &Value, path: &str) {
    match v {
        Value::Object(map) => {
            let keys: Vec<&String> = map.keys().collect();
            // serde_json's Map without preserve_order sorts; check the raw text instead below.
            for (k, child) in map {
                assert_keys_sorted(child, &format!("{path}.{k}"));
            }
            assert!(!keys.is_empty(), "{path} is an empty object");
        }
        Value::Array(items) => items.iter().for_each(|i| assert_keys_sorted(i, path)),
        _ => {}
    }
}

/// Keys in the raw JSON text appear in alphabetical order at every level.
fn raw_keys_sorted(raw: &[u8]) -> bool {
    // A tiny scanner over the generator's own compact JSON: track the last key per depth.
    let text = std::str::from_utf8(raw).expect("utf-8");
    let bytes = text.as_bytes();
    let mut last_key: Vec<Option<String>> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => last_key.push(None),
            b'[' => last_key.push(None),
            b'}' | b']' => {
                last_key.pop();
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while bytes[j] != b'"' {
                    if bytes[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                let s = &text[start..j];
                let is_key = bytes.get(j + 1) == Some(&b':');
                if is_key {
                    if let Some(slot) = last_key.last_mut() {
                        if let Some(prev) = slot {
                            if prev.as_str() >= s {
                                return false;
                            }
                        }
                        *slot = Some(s.to_string());
                    }
                }
                i = j;
            }
            _ => {}
        }
        i += 1;
    }
    true
}

fn utc_ms(s: &str) -> i64 {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.3f")
        .unwrap_or_else(|e| panic!("{s:?} is not %Y-%m-%d %H:%M:%S.%3f: {e}"))
        .and_utc()
        .timestamp_millis()
}

#[test]
fn one_hundred_thousand_orders_keep_every_promise() {
    let raw = generate(7, N);
    let catalog = Catalog::get();
    let env_fee_products: std::collections::HashSet<&str> = catalog
        .products
        .iter()
        .filter(|p| p.env_fee)
        .map(|p| p.product_id.as_str())
        .collect();
    let geo = Geo::get();
    let area_codes: HashMap<&str, Vec<&str>> =
        geo.locations.iter().fold(HashMap::new(), |mut m, l| {
            m.entry(l.state).or_default().push(l.area_code);
            m
        });
    let zip3_of_city: HashMap<(&str, &str), &str> = geo
        .locations
        .iter()
        .map(|l| ((l.state, l.city), l.zip3))
        .collect();

    let mut fraud = 0;
    let mut refunded = 0;
    let mut delivered = 0;
    let mut pending = 0;
    let mut pending_tracked = 0;
    let mut subscribed = 0;
    let mut items_hist = [0usize; 8];
    let mut qty_hist = [0usize; 4];
    let mut qty_total = 0usize;
    let mut payment: HashMap<String, usize> = HashMap::new();
    let mut billing_differs = 0;
    let mut emails: HashMap<String, String> = HashMap::new();
    let mut coupon_uses: HashMap<String, Vec<i64>> = HashMap::new();
    let mut order_ids = std::collections::HashSet::new();

    for (n, bytes) in raw.iter().enumerate() {
        if n < 2_000 {
            assert!(
                raw_keys_sorted(bytes),
                "keys not sorted in {}",
                String::from_utf8_lossy(bytes)
            );
        }
        let o: Value = serde_json::from_slice(bytes).expect("valid JSON");
        if n < 100 {
            assert_keys_sorted(&o, "");
        }
        // Types of every required field.
        for key in [
            "order_id",
            "currency",
            "delivered",
            "refunded",
            "fulfillment_center",
            "loyalty_tier",
            "payment_info",
            "payment_method",
            "payment_status",
            "pet_name",
            "shipping_speed",
            "shipping_status",
            "timestamp",
        ] {
            assert!(o[key].is_string(), "{key} is not a string: {}", o[key]);
        }
        for key in [
            "subtotal_before_promos",
            "subtotal_after_coupon",
            "shipping_cost",
            "env_fee",
            "tax_rate",
            "tax_amount",
            "order_total",
            "partial_refund_amount",
            "exchange_rate",
        ] {
            assert!(o[key].is_number(), "{key} is not a number: {}", o[key]);
        }
        for key in ["time_ms", "risk_score", "loyalty_points_used"] {
            assert!(o[key].is_i64(), "{key} is not an integer: {}", o[key]);
        }
        assert!(o["fraud_flag"].is_boolean());
        for key in ["line_items", "coupon_codes", "shipments", "status_history"] {
            assert!(o[key].is_array(), "{key} is not an array");
        }
        for key in ["customer", "shipping_address", "billing_address"] {
            assert!(o[key].is_object(), "{key} is not an object");
        }
        for key in [
            "expected_delivery_date",
            "delivery_date",
            "subscription_id",
            "subscription_frequency",
            "tracking_number",
            "shipping_provider",
        ] {
            assert!(o[key].is_string() || o[key].is_null(), "{key}: {}", o[key]);
        }
        assert_eq!(o.as_object().map(|m| m.len()), Some(39), "field count");
        let id = o["order_id"].as_str().expect("string");
        let uuid = uuid::Uuid::parse_str(id).expect("order_id is a UUID");
        assert_eq!(uuid.get_version_num(), 4);
        assert!(order_ids.insert(id.to_string()), "duplicate order_id {id}");

        // Event time and its New York rendering.
        let time_ms = o["time_ms"].as_i64().expect("int");
        assert_eq!(time_ms, START_MS + n as i64 * STEP_MS);
        let ts = o["timestamp"].as_str().expect("string");
        let local =
            NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.6f").expect("timestamp format");
        assert_eq!(ts.len(), 26, "{ts}");
        let back = chrono_tz::America::New_York
            .from_local_datetime(&local)
            .earliest()
            .expect("a valid local time")
            .timestamp_millis();
        // The one ambiguous hour a year may map to the earlier instant.
        assert!(
            back == time_ms || back == time_ms - 3_600_000,
            "{ts} vs {time_ms}"
        );

        // Money, to the cent.
        let items = o["line_items"].as_array().expect("array");
        assert!((1..=7).contains(&items.len()));
        items_hist[items.len()] += 1;
        let mut subtotal = 0;
        let mut any_env_fee = false;
        let mut product_ids = std::collections::HashSet::new();
        for it in items {
            let q = it["quantity"].as_u64().expect("quantity") as usize;
            assert!((1..=3).contains(&q));
            qty_hist[q] += 1;
            qty_total += 1;
            assert!(it["free_qty"].is_u64());
            let p = &it["product"];
            let price = cents(&p["price"]);
            assert!((299..=24_999).contains(&price), "price {price}");
            subtotal += price * q as i64;
            let pid = p["product_id"].as_str().expect("product_id");
            assert!(product_ids.insert(pid), "a product twice in one order");
            any_env_fee |= env_fee_products.contains(pid);
            assert_eq!(
                p["out_of_stock"].as_bool(),
                Some(p["stock"].as_u64() == Some(0))
            );
            assert!(p["name"].is_string() && p["category"].is_string());
        }
        assert_eq!(cents(&o["subtotal_before_promos"]), subtotal);
        let after = cents(&o["subtotal_after_coupon"]);
        let shipping = cents(&o["shipping_cost"]);
        let env_fee = cents(&o["env_fee"]);
        let tax_rate = cents(&o["tax_rate"]);
        let tax = cents(&o["tax_amount"]);
        assert!((5..=10).contains(&tax_rate), "tax_rate {tax_rate}");
        assert_eq!(
            tax,
            (after * tax_rate + 50) / 100,
            "tax is subtotal_after_coupon x tax_rate"
        );
        assert_eq!(
            cents(&o["order_total"]),
            after + shipping + env_fee + tax,
            "order_total = parts"
        );
        assert!(after <= subtotal);
        assert_eq!(
            env_fee > 0,
            any_env_fee,
            "env_fee iff aquatic or terrarium equipment"
        );
        if any_env_fee {
            assert!((100..=500).contains(&env_fee));
        }

        // Coupons.
        let codes: Vec<&str> = o["coupon_codes"]
            .as_array()
            .expect("array")
            .iter()
            .map(|c| c["name"].as_str().expect("code"))
            .collect();
        assert!(codes.len() <= 2);
        if codes.len() == 2 {
            assert_ne!(codes[0], codes[1]);
            assert!(
                !codes.contains(&"PETSAREGREAT"),
                "PETSAREGREAT does not stack"
            );
        }
        let free_ship = codes.contains(&"FREESHIP");
        if free_ship {
            assert_eq!(shipping, 0);
        } else {
            assert!((300..=2500).contains(&shipping), "shipping {shipping}");
        }
        let mut expect_after = subtotal;
        for c in &codes {
            let pct = match *c {
                "SAVE10" => 10,
                "WELCOME" => 5,
                "PETSAREGREAT" => 15,
                "FREESHIP" => 0,
                other => panic!("unknown coupon {other}"),
            };
            expect_after -= (expect_after * pct + 50) / 100;
            coupon_uses.entry(c.to_string()).or_default().push(time_ms);
        }
        assert_eq!(after, expect_after, "coupons applied in order");

        // Statuses and dates.
        let status = o["shipping_status"].as_str().expect("status");
        let is_delivered = o["delivered"] == "yes";
        assert_eq!(
            is_delivered,
            status == "Delivered",
            "delivered iff Delivered"
        );
        assert!(o["delivered"] == "yes" || o["delivered"] == "no");
        delivered += usize::from(is_delivered);
        match o["expected_delivery_date"].as_str() {
            Some(d) => {
                assert!(status == "Shipped" || status == "Out for Delivery");
                let days = (utc_ms(d) - time_ms) / 86_400_000;
                assert!((1..=4).contains(&days), "{d}");
            }
            None => assert!(status != "Shipped" && status != "Out for Delivery"),
        }
        match o["delivery_date"].as_str() {
            Some(d) => {
                assert_eq!(status, "Delivered");
                let ms = utc_ms(d) - time_ms;
                assert!((0..=2 * 86_400_000).contains(&ms), "{d}");
            }
            None => assert_ne!(status, "Delivered"),
        }
        let tracked = o["tracking_number"].is_string();
        assert_eq!(tracked, o["shipping_provider"].is_string());
        if status == "Pending" {
            pending += 1;
            pending_tracked += usize::from(tracked);
        } else {
            assert!(tracked, "every non-Pending order has a tracking number");
        }
        let history = o["status_history"].as_array().expect("array");
        assert_eq!(history[0]["status"], status);
        let is_refunded = o["refunded"] == "yes";
        refunded += usize::from(is_refunded);
        assert_eq!(history.len(), 1 + usize::from(is_refunded));
        if is_refunded {
            assert_eq!(history[1]["status"], "Refunded");
            assert!((100..=15_000).contains(&cents(&o["partial_refund_amount"])));
        } else {
            assert_eq!(cents(&o["partial_refund_amount"]), 0);
        }
        for h in history {
            utc_ms(h["timestamp"].as_str().expect("timestamp"));
        }

        // Shipments partition the line items, none empty.
        let shipments = o["shipments"].as_array().expect("array");
        assert!((1..=2).contains(&shipments.len()));
        let shipped: Vec<&Value> = shipments
            .iter()
            .flat_map(|s| {
                let items = s["items"].as_array().expect("items");
                assert!(!items.is_empty(), "empty shipment");
                utc_ms(s["shipment_timestamp"].as_str().expect("ts"));
                items
            })
            .collect();
        assert_eq!(shipped, items.iter().collect::<Vec<_>>());

        // Risk and fraud.
        let risk = o["risk_score"].as_i64().expect("risk");
        assert!((0..=100).contains(&risk));
        assert_eq!(o["fraud_flag"].as_bool(), Some(risk > 91));
        fraud += usize::from(risk > 91);
        if o["billing_address"]["city"] != o["shipping_address"]["city"] {
            billing_differs += 1;
            assert!(risk >= 20);
        } else {
            assert_eq!(o["billing_address"], o["shipping_address"]);
        }

        // Customer and places.
        let c = &o["customer"];
        let state = c["state"].as_str().expect("state");
        let city = c["city"].as_str().expect("city");
        let phone = c["phone"].as_str().expect("phone");
        assert_eq!(phone.len(), 12, "{phone}");
        assert!(
            area_codes[state].contains(&&phone[..3]),
            "{phone} does not fit {state}"
        );
        let zip = c["zipcode"].as_str().expect("zip");
        assert_eq!(zip.len(), 5);
        assert_eq!(&zip[..3], zip3_of_city[&(state, city)]);
        assert_eq!(c["city"], o["shipping_address"]["city"]);
        let cid = c["customer_id"].as_str().expect("customer_id").to_string();
        let email = c["email"].as_str().expect("email").to_string();
        if let Some(prev) = emails.insert(email.clone(), cid.clone()) {
            assert_eq!(prev, cid, "email {email} shared by two customers");
        }

        // The rest of the enumerations.
        *payment
            .entry(o["payment_status"].as_str().expect("s").to_string())
            .or_default() += 1;
        let method = o["payment_method"].as_str().expect("method");
        assert!(["credit_card", "PayPal", "debit_card"].contains(&method));
        let info = o["payment_info"].as_str().expect("info");
        assert!(
            info.contains('@') || (info.len() == 16 && &info[4..12] == "xxxxxxxx"),
            "{info}"
        );
        let (cur, rate) = (
            o["currency"].as_str().expect("c"),
            o["exchange_rate"].as_f64(),
        );
        assert!(matches!(
            (cur, rate),
            ("USD", Some(1.0)) | ("EUR", Some(1.07)) | ("CAD", Some(0.75))
        ));
        let tier = o["loyalty_tier"].as_str().expect("tier");
        let points = o["loyalty_points_used"].as_i64().expect("points");
        if tier == "Gold" || tier == "Platinum" {
            assert!((0..=1000).contains(&points));
        } else {
            assert_eq!(points, 0, "{tier}");
        }
        assert!(o["fulfillment_center"]
            .as_str()
            .expect("fc")
            .starts_with("FC_"));
        assert_eq!(
            o["subscription_id"].is_string(),
            o["subscription_frequency"].is_string()
        );
        subscribed += usize::from(o["subscription_id"].is_string());
    }

    assert_share("fraud", fraud, 0.13, 0.01);
    assert_share("refunded", refunded, 0.10, 0.006);
    assert_share("delivered", delivered, 0.25 / 1.01, 0.006);
    assert_share("billing differs", billing_differs, 0.20, 0.01);
    assert_share("subscriptions", subscribed, 0.25, 0.01);
    assert_share("payment authorized", payment["authorized"], 0.50, 0.01);
    assert_share("payment captured", payment["captured"], 0.40, 0.01);
    assert_share("payment failed", payment["failed"], 0.05, 0.005);
    assert_share("payment refunded", payment["refunded"], 0.05, 0.005);
    let tracked_pending = pending_tracked as f64 / pending as f64;
    assert!(
        (tracked_pending - 0.7).abs() < 0.015,
        "pending tracked {tracked_pending}"
    );
    for (k, count) in items_hist.iter().enumerate().skip(1) {
        assert_share(&format!("{k} line items"), *count, 1.0 / 7.0, 0.006);
    }
    for (q, count) in qty_hist.iter().enumerate().skip(1) {
        let got = *count as f64 / qty_total as f64;
        assert!((got - 1.0 / 3.0).abs() < 0.005, "quantity {q}: {got}");
    }
    // Coupon limits per rolling hour hold for every code and every hour of the run.
    let limits = [
        ("SAVE10", 1000),
        ("WELCOME", 500),
        ("PETSAREGREAT", 50),
        ("FREESHIP", 300),
    ];
    for (code, limit) in limits {
        let times = &coupon_uses[code];
        let mut start = 0;
        for end in 0..times.len() {
            while times[start] <= times[end] - 3_600_000 {
                start += 1;
            }
            assert!(
                end - start < limit,
                "{code} used more than {limit} times within an hour"
            );
        }
    }
    // The run covers 53 minutes: the tightest limits are reached, and not passed.
    assert_eq!(coupon_uses["PETSAREGREAT"].len(), 50);
    assert_eq!(coupon_uses["FREESHIP"].len(), 300);
}

#[test]
fn coupon_limits_reset_after_an_hour() {
    // Three hours at 31 orders/s: every limited code keeps being used in every hour.
    let mut generator = Generator::new(GeneratorConfig {
        seed: 3,
        ..GeneratorConfig::default()
    });
    let clock = SteppingClock::new(START_MS, STEP_MS);
    let mut per_hour: HashMap<(i64, String), usize> = HashMap::new();
    for seq in 1..=3 * 3600 * 31 {
        let o = generator.generate(seq, clock.now_ms());
        for c in &o.coupon_codes {
            *per_hour
                .entry(((o.time_ms - START_MS) / 3_600_000, c.name.to_string()))
                .or_default() += 1;
        }
    }
    for hour in 0..3 {
        assert_eq!(
            per_hour[&(hour, "PETSAREGREAT".to_string())],
            50,
            "hour {hour}"
        );
        assert_eq!(
            per_hour[&(hour, "FREESHIP".to_string())],
            300,
            "hour {hour}"
        );
        assert!(
            per_hour[&(hour, "SAVE10".to_string())] >= 900,
            "hour {hour}"
        );
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_orders() {
    let a = generate(11, 5_000);
    let b = generate(11, 5_000);
    assert!(
        a == b,
        "the same seed must give the same orders byte for byte"
    );
    let c = generate(12, 5_000);
    assert!(a.iter().zip(&c).all(|(x, y)| x != y));
    // Order n does not depend on how many orders came before it (apart from coupon limits,
    // which a fresh generator reaches only after many orders).
    let mut fresh = Generator::new(GeneratorConfig {
        seed: 11,
        ..GeneratorConfig::default()
    });
    let tenth = fresh.generate(10, START_MS + 9 * STEP_MS).to_json();
    assert_eq!(tenth, a[9]);
}

#[test]
fn repeat_customers_are_the_same_person() {
    let mut generator = Generator::new(GeneratorConfig {
        seed: 5,
        customers: 50,
    });
    let mut seen: HashMap<uuid::Uuid, orders::model::Customer> = HashMap::new();
    for seq in 1..=2_000 {
        let o = generator.generate(seq, START_MS + seq as i64);
        let c = o.customer.clone();
        if let Some(prev) = seen.insert(c.customer_id, c.clone()) {
            assert_eq!(prev, c);
        }
    }
    assert_eq!(seen.len(), 50);
}
