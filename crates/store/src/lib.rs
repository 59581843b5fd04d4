//! # store: where the orders API keeps its orders
//!
//! The source side of rtap's data flow, behind the orders API (`rtap api`, the original Flask
//! service): an append-only, paged list of order documents. Two backends behind one trait, the
//! seam SPEC section 2 asks for: [`embedded::EmbeddedStore`] (a redb file under the data
//! directory, nothing to install) and [`postgres::PostgresStore`].
//!
//! Invariant both keep: orders get consecutive positions 1, 2, 3, ... in the order they were
//! appended, and a position never changes, so paging oldest-first is stable while new orders
//! arrive (they only ever land after the last page). Documents are handed back exactly as the
//! generator wrote them (the embedded store keeps them zstd-compressed).
//!
//! Retention ([`OrderStore::expire`]) removes orders from the front only: positions
//! `1..=expired` are gone, the rest are where they were, so a page keeps its orders until they
//! expire and a page of expired orders is recognisably empty ([`Slice::expired`]). An order's
//! age is its event time (`time_ms`), the same clock the table's retention uses.

use async_trait::async_trait;

mod codec;
pub mod embedded;
pub mod postgres;
/// Test support for this and other crates (a fresh Postgres schema per test).
#[doc(hidden)]
pub mod testing;

pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use postgres::PostgresStore;

/// One order to append: its id, its event time and its JSON document. Postgres refuses an id
/// already stored; the embedded store an id already stored at the same event time, among the
/// orders stored since its keys became (event time, id) (see `embedded::ORDER_KEYS` for why).
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order_id: String,
    /// Event time (epoch ms): what retention measures.
    pub time_ms: i64,
    pub json: String,
}

/// A slice of the stored orders, read from one consistent snapshot.
#[derive(Debug, Clone, Default)]
pub struct Slice {
    /// Orders ever stored (the last position) at the time of the read.
    pub total: u64,
    /// Positions `1..=expired` were removed by retention.
    pub expired: u64,
    /// JSON documents at positions `max(offset, expired)+1 ..= offset+limit` (fewer at the end).
    pub orders: Vec<String>,
}

impl Slice {
    /// Position of the first document in [`Slice::orders`] for a read at `offset`.
    pub fn first_position(&self, offset: u64) -> u64 {
        offset.max(self.expired).saturating_add(1)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached right now (database down, pool exhausted); retrying later
    /// may succeed.
    #[error("order store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered but refused or failed the operation.
    #[error("order store failed: {0}")]
    Failed(String),
}

impl StoreError {
    /// Whether the caller should retry later rather than give up.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Appends `orders` in the given order after the last stored one, all or nothing, and
    /// returns the new total. A batch with an order already stored is refused whole (see
    /// [`NewOrder`] for what each backend counts as the same order).
    async fn append(&self, orders: &[NewOrder]) -> Result<u64, StoreError>;

    /// Up to `limit` orders after the first `offset`, oldest first, with the total.
    async fn slice(&self, offset: u64, limit: u64) -> Result<Slice, StoreError>;

    /// Orders ever stored: the last position (expired ones included).
    async fn count(&self) -> Result<u64, StoreError>;

    /// Removes, oldest position first, up to `max_orders` orders whose event time is before
    /// `before_ms`, stopping at the first that is not; returns how many went. Call it again
    /// while it returns `max_orders`.
    async fn expire(&self, before_ms: i64, max_orders: u64) -> Result<u64, StoreError>;

    /// Ok when the backend is reachable and answering.
    async fn health(&self) -> Result<(), StoreError>;

    /// Where the orders are, for logs and banners (never includes a password).
    fn describe(&self) -> String;
}
