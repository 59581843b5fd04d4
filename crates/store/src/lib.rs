//! # store: where the orders API keeps its orders
//!
//! The source side of rtap's data flow, behind the orders API (`rtap api`, the original Flask
//! service): an append-only, paged list of order documents. Two backends behind one trait, the
//! seam SPEC section 2 asks for: [`embedded::EmbeddedStore`] (a redb file under the data
//! directory, nothing to install) and [`postgres::PostgresStore`].
//!
//! Invariant both keep: orders get consecutive positions 1, 2, 3, ... in the order they were
//! appended, and a position never changes, so paging oldest-first is stable while new orders
//! arrive (they only ever land after the last page). Documents are stored as the JSON text the
//! generator wrote and handed back untouched.

use async_trait::async_trait;

pub mod embedded;
pub mod postgres;
/// Test support for this and other crates (a fresh Postgres schema per test).
#[doc(hidden)]
pub mod testing;

pub use embedded::EmbeddedStore;
pub use postgres::PostgresStore;

/// One order to append: its id (unique) and its JSON document.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub order_id: String,
    pub json: String,
}

/// A slice of the stored orders, read from one consistent snapshot.
#[derive(Debug, Clone, Default)]
pub struct Slice {
    /// Orders stored at the time of the read.
    pub total: u64,
    /// JSON documents at positions `offset+1 ..= offset+limit` (fewer at the end).
    pub orders: Vec<String>,
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
    /// returns the new total.
    async fn append(&self, orders: &[NewOrder]) -> Result<u64, StoreError>;

    /// Up to `limit` orders after the first `offset`, oldest first, with the total.
    async fn slice(&self, offset: u64, limit: u64) -> Result<Slice, StoreError>;

    /// Number of stored orders.
    async fn count(&self) -> Result<u64, StoreError>;

    /// Ok when the backend is reachable and answering.
    async fn health(&self) -> Result<(), StoreError>;

    /// Where the orders are, for logs and banners (never includes a password).
    fn describe(&self) -> String;
}
