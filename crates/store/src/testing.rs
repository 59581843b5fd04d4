//! Test support: every test that needs Postgres gets a schema of its own in the test database,
//! so tests run in parallel and never see each other's rows.
//!
//! The database is `RTAP_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`
//! (the test command starts Postgres if it is not running). A test fails, it does not skip, when
//! Postgres is unreachable: a silently skipped backend is a hole in the suite.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn test_database_url() -> String {
    std::env::var("RTAP_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.into())
}

/// Creates an empty schema and returns a database URL whose search path is that schema.
pub async fn fresh_postgres_url(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = test_database_url();
    let schema = format!(
        "rtap_test_{}_{}_{}",
        label.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("Postgres at {base} is needed by this test: {e}"));
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot drop schema {schema}: {e}"));
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create schema {schema}: {e}"));
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}
