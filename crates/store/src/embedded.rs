//! The embedded store: one redb file (`orders.redb` under the data directory). redb gives
//! crash-safe, fsynced transactions with concurrent readers beside the single writer, which is
//! exactly the contract of the trait; an append-only file of our own would have to re-invent
//! torn-write recovery.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{NewOrder, OrderStore, Slice, StoreError};

/// position (1-based) -> order JSON.
const ORDERS: TableDefinition<u64, &str> = TableDefinition::new("orders");
/// order id -> position: keeps order ids unique, as the Postgres table's UNIQUE constraint does.
const ORDER_IDS: TableDefinition<&str, u64> = TableDefinition::new("order_ids");

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`, creating parent directories.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Failed(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let db = Database::create(path)
            .map_err(|e| StoreError::Failed(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(failed)?;
        txn.open_table(ORDERS).map_err(failed)?;
        txn.open_table(ORDER_IDS).map_err(failed)?;
        txn.commit().map_err(failed)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
        })
    }

    fn append_blocking(&self, orders: &[NewOrder]) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let total = {
            let mut table = txn.open_table(ORDERS).map_err(failed)?;
            let mut ids = txn.open_table(ORDER_IDS).map_err(failed)?;
            let mut last = table.last().map_err(failed)?.map_or(0, |(k, _)| k.value());
            for order in orders {
                last += 1;
                let previous = ids.insert(order.order_id.as_str(), last).map_err(failed)?;
                if let Some(position) = previous {
                    // Dropping the transaction without commit discards the whole batch.
                    return Err(StoreError::Failed(format!(
                        "order id {} is already stored (position {})",
                        order.order_id,
                        position.value()
                    )));
                }
                table.insert(last, order.json.as_str()).map_err(failed)?;
            }
            last
        };
        txn.commit().map_err(failed)?;
        Ok(total)
    }

    fn slice_blocking(&self, offset: u64, limit: u64) -> Result<Slice, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(ORDERS).map_err(failed)?;
        let total = table.last().map_err(failed)?.map_or(0, |(k, _)| k.value());
        let first = offset.saturating_add(1);
        let last = offset.saturating_add(limit).min(total);
        let mut orders = Vec::with_capacity(last.saturating_sub(offset) as usize);
        if first <= last {
            for entry in table.range(first..=last).map_err(failed)? {
                let (_, value) = entry.map_err(failed)?;
                orders.push(value.value().to_owned());
            }
        }
        Ok(Slice { total, orders })
    }

    fn count_blocking(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(ORDERS).map_err(failed)?;
        let total = table.last().map_err(failed)?.map_or(0, |(k, _)| k.value());
        Ok(total)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EmbeddedStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| StoreError::Failed(format!("store task failed: {e}")))?
    }
}

#[async_trait]
impl OrderStore for EmbeddedStore {
    async fn append(&self, orders: &[NewOrder]) -> Result<u64, StoreError> {
        let orders = orders.to_vec();
        self.blocking(move |s| s.append_blocking(&orders)).await
    }

    async fn slice(&self, offset: u64, limit: u64) -> Result<Slice, StoreError> {
        self.blocking(move |s| s.slice_blocking(offset, limit))
            .await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.blocking(|s| s.count_blocking()).await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.count().await.map(|_| ())
    }

    fn describe(&self) -> String {
        format!("embedded store {}", self.path.display())
    }
}
