//! The embedded store: one redb file (`orders.redb` under the data directory). redb gives
//! crash-safe, fsynced transactions with concurrent readers beside the single writer, which is
//! exactly the contract of the trait; an append-only file of our own would have to re-invent
//! torn-write recovery.
//!
//! Each order is kept zstd-compressed against a dictionary made of the store's own first
//! orders (see [`crate::codec`]): about 0.5 KB on disk instead of 3.2 KB of JSON, which also
//! puts several orders in one 4 KiB page instead of one page (or more) per order. redb's page
//! cache is bounded by [`EmbeddedOptions::cache_bytes`] (redb's own default is 1 GiB, which a
//! long-running process fills with pages it wrote).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::codec::{self, Codec, Header};
use crate::{NewOrder, OrderStore, Slice, StoreError};

/// position (1-based) -> [`Header`] + zstd frame of the order's JSON.
const ORDERS: TableDefinition<u64, &[u8]> = TableDefinition::new("orders_v2");
/// (event time, xxh3-128 of the order id) -> position: the same order (id and event time) is
/// not stored twice (orders stored by an rtap before this format have no key, see
/// [`HASH_ORDER_KEYS`]). Keyed by time first so that appends land at the end of the tree, as
/// the orders do, and retention removes keys from its front: keyed by the hash alone (the
/// second format's [`HASH_ORDER_KEYS`]), every order dirtied a random 4 KiB page of the key
/// table, 2.5-3.6 KB more written per order at 0.6-2 M stored, growing with the store, and a
/// quarter to a third of `rtap up`'s throughput. The price: the same id at another event time
/// is not refused here. The only writer is the feed, whose ids derive from (seed, sequence
/// number) and which never appends a sequence number twice; the table's dedup drops an id
/// seen again within its event-time horizon (24 h by default), whatever its time. (Postgres
/// keeps a UNIQUE constraint on the id alone.)
const ORDER_KEYS: TableDefinition<(i64, u128), u64> = TableDefinition::new("order_time_keys");
/// The second format's keys: id hash -> position. Dropped when the file is opened, without
/// rebuilding its keys into [`ORDER_KEYS`] (that would read every stored order at the first
/// start; the orders before the upgrade are not re-appended by anything).
const HASH_ORDER_KEYS: TableDefinition<u128, u64> = TableDefinition::new("order_keys");
/// Counters: "expired" (positions `1..=expired` are removed), "dictionary" (the id of the
/// dictionary new orders are compressed with; 0 = none yet).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Compression dictionaries by id (1, 2, ...).
const DICTIONARIES: TableDefinition<u32, &[u8]> = TableDefinition::new("dictionaries");

/// The first format (uncompressed JSON): migrated into [`ORDERS`] when the file is opened.
const LEGACY_ORDERS: TableDefinition<u64, &str> = TableDefinition::new("orders");
const LEGACY_ORDER_IDS: TableDefinition<&str, u64> = TableDefinition::new("order_ids");

/// Orders migrated from the first format per transaction.
const MIGRATE_CHUNK: u64 = 20_000;

/// How the embedded store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// redb's page cache: memory the store may keep for pages it has read or written.
    pub cache_bytes: usize,
    /// zstd level of stored orders (1..=22).
    pub zstd_level: i32,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            cache_bytes: 16 * 1024 * 1024,
            zstd_level: 3,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    codec: Arc<RwLock<Codec>>,
    /// Held by a write that may make a dictionary, from its transaction's start until the
    /// dictionary is committed or taken back: no other write compresses with a dictionary
    /// that is not in the file.
    writer: Arc<Mutex<()>>,
}

/// Takes back a dictionary made inside a write transaction unless it committed (also when the
/// write fails or panics).
struct Rollback<'a> {
    store: &'a EmbeddedStore,
    dictionary: Option<u32>,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.dictionary.take() {
            self.store.codec_mut().forget(id);
        }
    }
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

/// A counter of [`META`] as of a read transaction (0 when unset).
fn read_meta(txn: &redb::ReadTransaction, key: &str) -> Result<u64, StoreError> {
    let table = txn.open_table(META).map_err(failed)?;
    let value = table.get(key).map_err(failed)?.map_or(0, |v| v.value());
    Ok(value)
}

fn meta(txn: &WriteTransaction, key: &str) -> Result<u64, StoreError> {
    let table = txn.open_table(META).map_err(failed)?;
    let value = table.get(key).map_err(failed)?.map_or(0, |v| v.value());
    Ok(value)
}

/// The dictionaries as stored, the current one in use.
fn load_codec(db: &Database, level: i32) -> Result<Codec, StoreError> {
    let txn = db.begin_read().map_err(failed)?;
    let mut codec = Codec::new(level);
    let dictionaries = txn.open_table(DICTIONARIES).map_err(failed)?;
    for entry in dictionaries.iter().map_err(failed)? {
        let (id, bytes) = entry.map_err(failed)?;
        codec.add(id.value(), bytes.value());
    }
    let current = read_meta(&txn, "dictionary")?;
    codec.use_dictionary(u32::try_from(current).unwrap_or(0));
    Ok(codec)
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path` with default options, creating parent
    /// directories.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Opens (or creates) the store file at `path`. A file of the first (uncompressed) format
    /// is converted in place, in transactions of 20,000 orders; its orders count as stored now
    /// for retention (the first format kept no event times). The second format's id-hash key
    /// table is dropped (see [`HASH_ORDER_KEYS`]).
    pub fn open_with(path: &Path, options: EmbeddedOptions) -> Result<Self, StoreError> {
        if !(1..=22).contains(&options.zstd_level) {
            return Err(StoreError::Failed(format!(
                "the store's zstd level must be 1..=22, got {}",
                options.zstd_level
            )));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Failed(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let db = redb::Builder::new()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(|e| StoreError::Failed(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(failed)?;
        txn.open_table(ORDERS).map_err(failed)?;
        txn.open_table(ORDER_KEYS).map_err(failed)?;
        txn.open_table(META).map_err(failed)?;
        txn.open_table(DICTIONARIES).map_err(failed)?;
        txn.commit().map_err(failed)?;
        let codec = load_codec(&db, options.zstd_level)?;
        let store = EmbeddedStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
            codec: Arc::new(RwLock::new(codec)),
            writer: Arc::new(Mutex::new(())),
        };
        store.drop_hash_keys()?;
        if store.migrate_legacy()? == 0 {
            return Ok(store);
        }
        // The converted file is a fraction of the old one: give the space back.
        let EmbeddedStore {
            db, path, codec, ..
        } = store;
        let mut db = Arc::into_inner(db)
            .ok_or_else(|| StoreError::Failed("the store is in use while converting".into()))?;
        if let Err(e) = db.compact() {
            // The orders are converted; only space is not given back yet.
            tracing::warn!(file = %path.display(), error = %e,
                "could not compact the converted order store; it keeps its size");
        }
        Ok(EmbeddedStore {
            db: Arc::new(db),
            path,
            codec,
            writer: Arc::new(Mutex::new(())),
        })
    }

    fn codec(&self) -> std::sync::RwLockReadGuard<'_, Codec> {
        match self.codec.read() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn codec_mut(&self) -> std::sync::RwLockWriteGuard<'_, Codec> {
        match self.codec.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        match self.writer.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether the file has the table `definition`.
    fn has_table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        definition: TableDefinition<K, V>,
    ) -> Result<bool, StoreError> {
        match self.db.begin_read().map_err(failed)?.open_table(definition) {
            Ok(_) => Ok(true),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(e) => Err(failed(e)),
        }
    }

    /// Drops the second format's key table ([`HASH_ORDER_KEYS`]) if the file has it: orders
    /// stored before are not keyed in [`ORDER_KEYS`] (see there). Returns whether it was there.
    fn drop_hash_keys(&self) -> Result<bool, StoreError> {
        if !self.has_table(HASH_ORDER_KEYS)? {
            return Ok(false);
        }
        tracing::info!(file = %self.path.display(),
            "dropping the order store's id-hash keys (once; redb reads the table's pages to free them)");
        let started = std::time::Instant::now();
        let _writer = self.lock_writer();
        let txn = self.db.begin_write().map_err(failed)?;
        txn.delete_table(HASH_ORDER_KEYS).map_err(failed)?;
        txn.commit().map_err(failed)?;
        tracing::info!(file = %self.path.display(), seconds = started.elapsed().as_secs_f64(),
            "dropped the order store's id-hash keys; new orders are keyed by event time and id");
        Ok(true)
    }

    /// Converts the first format's tables, if any, then drops them. Each transaction moves a
    /// chunk and removes it from the old tables, so an interrupted conversion resumes. Returns
    /// how many orders were converted.
    fn migrate_legacy(&self) -> Result<u64, StoreError> {
        if !self.has_table(LEGACY_ORDER_IDS)? {
            return Ok(0);
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut migrated = 0u64;
        loop {
            let _writer = self.lock_writer();
            let mut rollback = Rollback {
                store: self,
                dictionary: None,
            };
            let txn = self.db.begin_write().map_err(failed)?;
            let (batch, ids): (Vec<(u64, NewOrder)>, Vec<String>) = {
                let ids = txn.open_table(LEGACY_ORDER_IDS).map_err(failed)?;
                let legacy = txn.open_table(LEGACY_ORDERS).map_err(failed)?;
                let mut batch = Vec::new();
                let mut seen = Vec::new();
                for entry in ids.iter().map_err(failed)?.take(MIGRATE_CHUNK as usize) {
                    let (id, position) = entry.map_err(failed)?;
                    let id = id.value().to_owned();
                    if let Some(json) = legacy.get(position.value()).map_err(failed)? {
                        batch.push((
                            position.value(),
                            NewOrder {
                                order_id: id.clone(),
                                time_ms: now_ms,
                                json: json.value().to_owned(),
                            },
                        ));
                    }
                    seen.push(id);
                }
                (batch, seen)
            };
            if ids.is_empty() {
                txn.delete_table(LEGACY_ORDERS).map_err(failed)?;
                txn.delete_table(LEGACY_ORDER_IDS).map_err(failed)?;
                txn.commit().map_err(failed)?;
                tracing::info!(orders = migrated, file = %self.path.display(),
                    "converted the order store to the compressed format");
                return Ok(migrated);
            }
            self.write_orders(&txn, &batch, &mut rollback)?;
            {
                let mut legacy = txn.open_table(LEGACY_ORDERS).map_err(failed)?;
                let mut legacy_ids = txn.open_table(LEGACY_ORDER_IDS).map_err(failed)?;
                for (position, _) in &batch {
                    legacy.remove(*position).map_err(failed)?;
                }
                for id in &ids {
                    legacy_ids.remove(id.as_str()).map_err(failed)?;
                }
            }
            txn.commit().map_err(failed)?;
            rollback.dictionary = None;
            migrated += batch.len() as u64;
            tracing::info!(
                orders = migrated,
                "converting the order store to the compressed format"
            );
        }
    }

    /// Compresses `orders` and writes them at their positions (positions, and each order's
    /// (event time, id), must be new).
    /// A dictionary made for them is noted in `rollback`.
    fn write_orders(
        &self,
        txn: &WriteTransaction,
        orders: &[(u64, NewOrder)],
        rollback: &mut Rollback<'_>,
    ) -> Result<(), StoreError> {
        rollback.dictionary =
            self.ensure_dictionary(txn, orders.iter().map(|(_, o)| o.json.as_str()))?;
        let codec = self.codec();
        let values = codec.compress_all(orders.iter().map(|(_, o)| o))?;
        let mut table = txn.open_table(ORDERS).map_err(failed)?;
        let mut keys = txn.open_table(ORDER_KEYS).map_err(failed)?;
        for ((position, order), value) in orders.iter().zip(&values) {
            let key = (order.time_ms, codec::id_hash(&order.order_id));
            if let Some(previous) = keys.insert(key, *position).map_err(failed)? {
                // Dropping the transaction without commit discards the whole batch.
                return Err(StoreError::Failed(format!(
                    "order {} at event time {} is already stored (position {})",
                    order.order_id,
                    order.time_ms,
                    previous.value()
                )));
            }
            if table
                .insert(*position, value.as_slice())
                .map_err(failed)?
                .is_some()
            {
                return Err(StoreError::Failed(format!(
                    "position {position} is already taken: was this file written by an older \
                     rtap after it was converted?"
                )));
            }
        }
        Ok(())
    }

    /// Makes the store's dictionary from its first orders once there are a few, and a larger
    /// one as more arrive, until it is full or the first orders are all in it (orders before
    /// the first dictionary are compressed without one; each order names its dictionary).
    fn ensure_dictionary<'a>(
        &self,
        txn: &WriteTransaction,
        incoming: impl Iterator<Item = &'a str>,
    ) -> Result<Option<u32>, StoreError> {
        let current_bytes = {
            let codec = self.codec();
            if codec.settled() {
                return Ok(None);
            }
            codec.current_bytes()
        };
        let mut samples: Vec<String> = Vec::new();
        {
            let table = txn.open_table(ORDERS).map_err(failed)?;
            let codec = self.codec();
            let mut decoder = codec.decoder();
            for entry in table
                .iter()
                .map_err(failed)?
                .take(codec::DICTIONARY_SAMPLES)
            {
                let (_, value) = entry.map_err(failed)?;
                samples.push(decoder.decompress(value.value())?);
            }
        }
        let room = codec::DICTIONARY_SAMPLES.saturating_sub(samples.len());
        samples.extend(incoming.take(room).map(str::to_owned));
        let all_samples = samples.len() >= codec::DICTIONARY_SAMPLES;
        let made = codec::dictionary_from(&samples);
        let settled = all_samples || made.as_ref().is_some_and(|b| codec::is_full(b.len()));
        let better = made.filter(|b| b.len() >= current_bytes.saturating_mul(2).max(1));
        let Some(bytes) = better else {
            self.codec_mut().settle(settled);
            return Ok(None);
        };
        let id = {
            let mut dictionaries = txn.open_table(DICTIONARIES).map_err(failed)?;
            let id = 1 + dictionaries
                .last()
                .map_err(failed)?
                .map_or(0, |(k, _)| k.value());
            dictionaries.insert(id, bytes.as_slice()).map_err(failed)?;
            let mut m = txn.open_table(META).map_err(failed)?;
            m.insert("dictionary", u64::from(id)).map_err(failed)?;
            id
        };
        let mut codec = self.codec_mut();
        codec.settle(settled);
        codec.add(id, &bytes);
        codec.use_dictionary(id);
        Ok(Some(id))
    }

    fn append_blocking(&self, orders: &[NewOrder]) -> Result<u64, StoreError> {
        let _writer = self.lock_writer();
        let mut rollback = Rollback {
            store: self,
            dictionary: None,
        };
        let txn = self.db.begin_write().map_err(failed)?;
        let last = {
            let table = txn.open_table(ORDERS).map_err(failed)?;
            let last = table.last().map_err(failed)?.map_or(0, |(k, _)| k.value());
            last.max(meta(&txn, "expired")?)
        };
        let positioned: Vec<(u64, NewOrder)> = (last + 1..).zip(orders.iter().cloned()).collect();
        self.write_orders(&txn, &positioned, &mut rollback)?;
        txn.commit().map_err(failed)?;
        rollback.dictionary = None;
        Ok(last + orders.len() as u64)
    }

    fn slice_blocking(&self, offset: u64, limit: u64) -> Result<Slice, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(ORDERS).map_err(failed)?;
        let expired = read_meta(&txn, "expired")?;
        let total = table
            .last()
            .map_err(failed)?
            .map_or(0, |(k, _)| k.value())
            .max(expired);
        let first = offset.max(expired).saturating_add(1);
        let last = offset.saturating_add(limit).min(total);
        let mut orders = Vec::with_capacity(last.saturating_sub(first - 1) as usize);
        if first <= last {
            let codec = self.codec();
            let mut decoder = codec.decoder();
            for entry in table.range(first..=last).map_err(failed)? {
                let (_, value) = entry.map_err(failed)?;
                orders.push(decoder.decompress(value.value())?);
            }
        }
        Ok(Slice {
            total,
            expired,
            orders,
        })
    }

    fn count_blocking(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(ORDERS).map_err(failed)?;
        let last = table.last().map_err(failed)?.map_or(0, |(k, _)| k.value());
        let expired = read_meta(&txn, "expired")?;
        Ok(last.max(expired))
    }

    fn expire_blocking(&self, before_ms: i64, max_orders: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let removed = {
            let mut table = txn.open_table(ORDERS).map_err(failed)?;
            let mut doomed: Vec<(u64, (i64, u128))> = Vec::new();
            for entry in table.iter().map_err(failed)? {
                if doomed.len() as u64 >= max_orders {
                    break;
                }
                let (position, value) = entry.map_err(failed)?;
                let header = Header::read(value.value())?;
                if header.time_ms >= before_ms {
                    break;
                }
                doomed.push((position.value(), (header.time_ms, header.id_hash)));
            }
            let Some(&(last, _)) = doomed.last() else {
                return Ok(0);
            };
            let mut keys = txn.open_table(ORDER_KEYS).map_err(failed)?;
            for (position, key) in &doomed {
                table.remove(*position).map_err(failed)?;
                // Only this order's key: an order stored before the keys were by time has none,
                // and the same (time, id) may have been stored again since.
                let mine = keys.get(*key).map_err(failed)?.map(|p| p.value()) == Some(*position);
                if mine {
                    keys.remove(*key).map_err(failed)?;
                }
            }
            let mut m = txn.open_table(META).map_err(failed)?;
            m.insert("expired", last).map_err(failed)?;
            doomed.len() as u64
        };
        txn.commit().map_err(failed)?;
        Ok(removed)
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

    async fn expire(&self, before_ms: i64, max_orders: u64) -> Result<u64, StoreError> {
        self.blocking(move |s| s.expire_blocking(before_ms, max_orders))
            .await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.count().await.map(|_| ())
    }

    fn describe(&self) -> String {
        format!("embedded store {}", self.path.display())
    }
}
