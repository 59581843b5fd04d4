//! What the server crate's benches share.

use table::{RealtimeTable, TableConfig};

/// The orders table under `dir` with default settings, as rtap opens it (bloom filters on the
/// order and customer ids).
pub fn open_orders_table(dir: &std::path::Path) -> RealtimeTable {
    RealtimeTable::open(
        dir,
        ingest::schema::order_schema(),
        ingest::schema::TIME_MS,
        &[ingest::schema::ORDER_ID, "customer_id"],
        TableConfig::default(),
        clock::system(),
    )
    .expect("open table")
}
