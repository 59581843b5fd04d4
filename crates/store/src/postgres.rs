//! The Postgres store (`--database-url postgres://...`).
//!
//! Table `rtap_orders(seq, order_id, body, created_at)`, created if missing in the first schema
//! of the connection's search path. Appends take a transaction-scoped advisory lock and number
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
        sqlx::query(CREATE_TABLE)
            .execute(&pool)
            .await
            .map_err(|e| match classify(e) {
                StoreError::Unavailable(m) => {
                    StoreError::Unavailable(format!("cannot reach {description}: {m}"))
                }
                StoreError::Failed(m) => StoreError::Failed(format!("{description}: {m}")),
            })?;
        Ok(PostgresStore { pool, description })
    }
}

#[async_trait]
impl OrderStore for PostgresStore {
    async fn append(&self, orders: &[NewOrder]) -> Result<u64, StoreError> {
        let mut txn = self.pool.begin().await.map_err(classify)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *txn)
            .await
            .map_err(classify)?;
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM rtap_orders")
            .fetch_one(&mut *txn)
            .await
            .map_err(classify)?;
        let seqs: Vec<i64> = (1..=orders.len() as i64).map(|i| last + i).collect();
        let ids: Vec<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
        let bodies: Vec<&str> = orders.iter().map(|o| o.json.as_str()).collect();
        sqlx::query(
            "INSERT INTO rtap_orders (seq, order_id, body)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[])",
        )
        .bind(&seqs)
        .bind(&ids)
        .bind(&bodies)
        .execute(&mut *txn)
        .await
        .map_err(classify)?;
        txn.commit().await.map_err(classify)?;
        Ok((last + orders.len() as i64) as u64)
    }

    async fn slice(&self, offset: u64, limit: u64) -> Result<Slice, StoreError> {
        // One statement, so the total and the rows come from the same snapshot.
        let rows = sqlx::query(
            "WITH t AS (SELECT COALESCE(MAX(seq), 0) AS total FROM rtap_orders)
             SELECT t.total, o.body FROM t
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
            slice.total = total as u64;
            if let Some(body) = row.try_get::<Option<String>, _>(1).map_err(classify)? {
                slice.orders.push(body);
            }
        }
        Ok(slice)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM rtap_orders")
            .fetch_one(&self.pool)
            .await
            .map_err(classify)?;
        Ok(n as u64)
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
