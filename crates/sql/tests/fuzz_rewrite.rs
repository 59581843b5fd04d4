//! Mutation fuzzing of the Pinot rewrite: the README's queries and rtap's own, with tokens
//! swapped, dropped, duplicated and nested, plus random token soup. The rewrite must never
//! panic: it answers with a rewritten query or an error.
//!
//! Bounded for the test suite (`RTAP_FUZZ_SECONDS`, default 3 s); run it long with e.g.
//! `RTAP_FUZZ_SECONDS=600 cargo test --workspace --test fuzz_rewrite -- --nocapture`.

use std::time::{Duration, Instant};

use orders::rng::Rng;
use sql::dialect::{rewrite, Catalog};

fn budget() -> Duration {
    let secs = std::env::var("RTAP_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(3);
    Duration::from_secs(secs)
}

const SEEDS: &[&str] = &[
    "SELECT line_items.product.name AS itemName, COUNT(*) AS orders, SUMMV(line_items.quantity) AS quantity FROM orders WHERE time_ms > ago('PT1M') GROUP BY line_items.product.name ORDER BY quantity DESC LIMIT 5",
    "SELECT ToDateTime(DATETRUNC('MINUTE', time_ms, 'MILLISECONDS'), 'yyyy-MM-dd HH:mm:ss', 'America/New_York') AS ts, COUNT(*) FROM orders GROUP BY ts ORDER BY ts DESC LIMIT 60",
    "SELECT \"coupon_codes.name\", COUNT(*) FROM orders WHERE fraud_flag = 'true' AND time_ms BETWEEN 1 AND 2 GROUP BY 1",
    "SELECT DISTINCTCOUNT(customer_id), AVGMV(itemQtys), MINMV(itemQtys), MAXMV(itemQtys), COUNTMV(itemNames) FROM orders",
    "SELECT COUNT(*) FILTER (WHERE delivered = 'yes') FROM orders WHERE customer_city IN ('Austin', 'Boston')",
    "SELECT CAST(time_ms AS TIMESTAMP), productsOrdered FROM orders ORDER BY time_ms DESC LIMIT 10",
];

const TOKENS: &[&str] = &[
    "(",
    ")",
    ",",
    ".",
    "'",
    "\"",
    ";",
    "*",
    "AS",
    "FROM",
    "WHERE",
    "SUMMV",
    "COUNTMV",
    "AVGMV",
    "DISTINCTCOUNT",
    "ago",
    "orders",
    "line_items",
    "product",
    "name",
    "coupon_codes",
    "=",
    "true",
    "'true'",
    "--",
    "/*",
    "*/",
    "SELECT",
    "GROUP",
    "BY",
    "LIMIT",
    "1e999",
    "\u{0}",
    "é",
    "$1",
];

fn mutate(rng: &mut Rng, sql: &str) -> String {
    let mut parts: Vec<String> = sql.split(' ').map(str::to_string).collect();
    for _ in 0..=rng.below(6) {
        let at = rng.below(parts.len() as u64 + 1) as usize;
        match rng.below(6) {
            0 if at < parts.len() => {
                parts.remove(at);
            }
            1 => parts.insert(at, (*rng.pick(TOKENS)).to_string()),
            2 if at < parts.len() => {
                let p = parts[at].clone();
                parts.insert(at, p);
            }
            3 => {
                let depth = 1 + rng.below(200) as usize;
                parts.insert(
                    at,
                    format!("SUMMV({}x{})", "(".repeat(depth), ")".repeat(depth)),
                );
            }
            4 if at < parts.len() => {
                let cut = rng.below(parts[at].len() as u64 + 1) as usize;
                let p = parts[at].clone();
                let cut = (0..=cut)
                    .rev()
                    .find(|c| p.is_char_boundary(*c))
                    .unwrap_or(0);
                parts[at] = p[..cut].to_string();
            }
            _ => parts.insert(at, (*rng.pick(TOKENS)).repeat(1 + rng.below(20) as usize)),
        }
    }
    parts.join(" ")
}

#[test]
fn no_query_text_can_make_the_rewrite_panic() {
    let catalog = Catalog::new("orders", &ingest::schema::order_schema());
    let mut rng = Rng::for_key(11, 2, 0);
    let started = Instant::now();
    let (mut tried, mut rewritten) = (0u64, 0u64);
    while started.elapsed() < budget() {
        let seed = rng.pick(SEEDS);
        let sql = if rng.chance(0.1) {
            (0..rng.below(40))
                .map(|_| *rng.pick(TOKENS))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            mutate(&mut rng, seed)
        };
        if rewrite(&sql, &catalog).is_ok() {
            rewritten += 1;
        }
        tried += 1;
    }
    eprintln!(
        "fuzz_rewrite: {tried} queries in {:.1} s, {rewritten} rewritten, the rest refused",
        started.elapsed().as_secs_f64()
    );
    assert!(tried > 0);
}
