//! The Postgres store (`--database-url postgres://...`).
//!
//! Table `rtap_orders(seq, order_id, body, created_at, event_ms)`, created if missing in the
//! first schema of the connection's search path (`event_ms` is added to a table made by an
//! earlier rtap; its rows fall back to `created_at`), beside `rtap_orders_expired`, one row
//! holding the last position retention removed. Appends take a transaction-scoped advisory lock and number
//! rows `max(seq)+1, ...`, so positions are consecutive and commit in position order even with
//! several writers: a page that was full once never changes. The pool connects lazily and
//! reconnects by itself, so the service survives a database outage and recovers when it returns.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Row;

use crate::{NewOrder, OrderStore, Slice, StoreError};

/// Key of the advisory lock that serialises appends ("rtap" in ASCII).
const APPEND_LOCK: i64 = 0x7274_6170;
/// How long a request waits for a connection before answering "unavailable".
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS rtap_orders (
    seq BIGINT PRIMARY KEY,
    order_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";
/// Whether the table (as the search path finds it) has the event time column yet.
const HAS_EVENT_TIME: &str = "SELECT EXISTS (SELECT 1 FROM information_schema.columns
    WHERE table_name = 'rtap_orders' AND column_name = 'event_ms'
      AND table_schema = ANY (current_schemas(false)))";
/// Only when missing: altering needs the table's owner and an exclusive lock.
const ADD_EVENT_TIME: &str = "ALTER TABLE rtap_orders ADD COLUMN IF NOT EXISTS event_ms BIGINT";
const CREATE_EXPIRED: &str = "CREATE TABLE IF NOT EXISTS rtap_orders_expired (
    id INT PRIMARY KEY CHECK (id = 1),
    expired BIGINT NOT NULL
)";
const SEED_EXPIRED: &str =
    "INSERT INTO rtap_orders_expired (id, expired) VALUES (1, 0) ON CONFLICT (id) DO NOTHING";
/// The last position: the newest order's, or the last one retention removed.
const TOTAL: &str = "SELECT GREATEST((SELECT COALESCE(MAX(seq), 0) FROM rtap_orders),
    (SELECT expired FROM rtap_orders_expired WHERE id = 1))";

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    description: String,
}

fn classify(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => {
            // Class 08 (connection exception) and 57P0x (server shutting down) are outages.
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let msg = format!("{db} (SQLSTATE {code})");
            if code.starts_with("08") || code.starts_with("57P") {
                StoreError::Unavailable(msg)
            } else {
                StoreError::Failed(msg)
            }
        }
        other => StoreError::Failed(other.to_string()),
    }
}

impl PostgresStore {
    /// Connects to `url` and creates the table if missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Failed(format!("bad database URL: {e}")))?;
        let description = format!(
            "postgres {}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("(default database)")
        );
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        let named = |e: sqlx::Error| match classify(e) {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("cannot reach {description}: {m}"))
            }
            StoreError::Failed(m) => StoreError::Failed(format!("{description}: {m}")),
        };
        sqlx::query(CREATE_TABLE)
            .execute(&pool)
            .await
            .map_err(named)?;
        let has_event_time: bool = sqlx::query_scalar(HAS_EVENT_TIME)
            .fetch_one(&pool)
            .await
            .map_err(named)?;
        if !has_event_time {
            sqlx::query(ADD_EVENT_TIME)
                .execute(&pool)
                .await
                .map_err(named)?;
        }
        for statement in [CREATE_EXPIRED, SEED_EXPIRED] {
            sqlx::query(statement).execute(&pool).await.map_err(named)?;
        }
        Ok(PostgresStore { pool, description })
    }
}

impl PostgresStore {
    /// A transaction holding the append lock (released at its end).
    async fn locked(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut txn = self.pool.begin().await.map_err(classify)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *txn)
            .await
            .map_err(classify)?;
        Ok(txn)
    }
}

#[async_trait]
impl OrderStore for PostgresStore {
    async fn append(&self, orders: &[NewOrder]) -> Result<u64, StoreError> {
        let mut txn = self.locked().await?;
        let last: i64 = sqlx::query_scalar(TOTAL)
            .fetch_one(&mut *txn)
            .await
            .map_err(classify)?;
        let seqs: Vec<i64> = (1..=orders.len() as i64).map(|i| last + i).collect();
        let ids: Vec<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
        let bodies: Vec<&str> = orders.iter().map(|o| o.json.as_str()).collect();
        let times: Vec<i64> = orders.iter().map(|o| o.time_ms).collect();
        sqlx::query(
            "INSERT INTO rtap_orders (seq, order_id, body, event_ms)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[])",
        )
        .bind(&seqs)
        .bind(&ids)
        .bind(&bodies)
        .bind(&times)
        .execute(&mut *txn)
        .await
        .map_err(classify)?;
        txn.commit().await.map_err(classify)?;
        Ok((last + orders.len() as i64) as u64)
    }

    async fn slice(&self, offset: u64, limit: u64) -> Result<Slice, StoreError> {
        // One statement, so the total and the rows come from the same snapshot.
        let rows = sqlx::query(
            "WITH t AS (SELECT COALESCE(MAX(seq), 0) AS newest FROM rtap_orders),
                  e AS (SELECT expired FROM rtap_orders_expired WHERE id = 1)
             SELECT GREATEST(t.newest, COALESCE(e.expired, 0)), COALESCE(e.expired, 0), o.body
             FROM t LEFT JOIN e ON true
             LEFT JOIN rtap_orders o ON o.seq > $1 AND o.seq <= $2
             ORDER BY o.seq",
        )
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset.saturating_add(limit)).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let mut slice = Slice::default();
        for row in rows {
            let total: i64 = row.try_get(0).map_err(classify)?;
            let expired: i64 = row.try_get(1).map_err(classify)?;
            slice.total = total as u64;
            slice.expired = expired as u64;
            if let Some(body) = row.try_get::<Option<String>, _>(2).map_err(classify)? {
                slice.orders.push(body);
            }
        }
        Ok(slice)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(TOTAL)
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(n as u64)
    }

    async fn expire(&self, before_ms: i64, max_orders: u64) -> Result<u64, StoreError> {
        // Under the append lock, so the expired mark and new positions never cross.
        let mut txn = self.locked().await?;
        let rows = sqlx::query(
            "SELECT seq, COALESCE(event_ms, (EXTRACT(EPOCH FROM created_at) * 1000)::BIGINT)
             FROM rtap_orders ORDER BY seq LIMIT $1",
        )
        .bind(i64::try_from(max_orders).unwrap_or(i64::MAX))
        .fetch_all(&mut *txn)
        .await
        .map_err(classify)?;
        let mut last = None;
        let mut removed = 0u64;
        for row in rows {
            let seq: i64 = row.try_get(0).map_err(classify)?;
            let time: i64 = row.try_get(1).map_err(classify)?;
            if time >= before_ms {
                break;
            }
            last = Some(seq);
            removed += 1;
        }
        let Some(last) = last else {
            return Ok(0);
        };
        sqlx::query("DELETE FROM rtap_orders WHERE seq <= $1")
            .bind(last)
            .execute(&mut *txn)
            .await
            .map_err(classify)?;
        sqlx::query("UPDATE rtap_orders_expired SET expired = GREATEST(expired, $1) WHERE id = 1")
            .bind(last)
            .execute(&mut *txn)
            .await
            .map_err(classify)?;
        txn.commit().await.map_err(classify)?;
        Ok(removed)
    }

    async fn health(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(classify)
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
