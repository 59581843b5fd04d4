//! What the server crate's benches share.

use table::{RealtimeTable, TableConfig};

/// The orders table under `dir` with default settings, as rtap opens it (bloom filters on the
/// order and customer ids, no dictionary on the nearly unique columns; with
/// `RTAP_BENCH_DICTIONARY=all` every column gets a dictionary, to compare), with its lookup
/// indexes (`RTAP_BENCH_LOOKUPS=0`: without, to compare).
pub fn open_orders_table(dir: &std::path::Path) -> RealtimeTable {
    let plain: &[&str] = match std::env::var("RTAP_BENCH_DICTIONARY").as_deref() {
        Ok("all") => &[],
        _ => &ingest::schema::PLAIN_COLUMNS,
    };
    RealtimeTable::open(
        dir,
        ingest::schema::order_schema(),
        ingest::schema::TIME_MS,
        &[ingest::schema::ORDER_ID, "customer_id"],
        TableConfig::default(),
        clock::system(),
    )
    .expect("open table")
    .with_plain_columns(plain)
    .with_lookups(match std::env::var("RTAP_BENCH_LOOKUPS").as_deref() {
        Ok("0") => Vec::new(),
        _ => table::LookupSpec::list(&ingest::schema::LOOKUPS),
    })
    .expect("lookup indexes")
}
