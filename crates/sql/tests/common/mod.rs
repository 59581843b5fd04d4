//! Shared by the SQL crate's tests.

use std::sync::Arc;

use ingest::schema;
use table::{RealtimeTable, TableConfig};

/// The order table in `dir`, on `clock`.
pub fn order_table(
    dir: &std::path::Path,
    config: TableConfig,
    clock: Arc<clock::ManualClock>,
) -> Arc<RealtimeTable> {
    Arc::new(
        RealtimeTable::open(
            dir,
            schema::order_schema(),
            schema::TIME_MS,
            &[schema::ORDER_ID],
            config,
            clock,
        )
        .expect("open the order table"),
    )
}
