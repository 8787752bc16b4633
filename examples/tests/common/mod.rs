//! Stores in namespaces of their own on the local PostgreSQL and Redis, and their removal.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support: each test binary uses part of it

use cqrs::Stores;

pub(crate) fn pg_base() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub(crate) fn redis_base() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub(crate) fn unique(label: &str) -> String {
    format!("t_{label}_{}", uuid::Uuid::now_v7().simple())
}

/// The URL of a PostgreSQL store in `schema`.
pub(crate) fn pg_url(schema: &str) -> String {
    let base = pg_base();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}schema={schema}")
}

/// The URL of a Redis store under `prefix`.
pub(crate) fn redis_url(prefix: &str) -> String {
    let base = redis_base();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}prefix={prefix}")
}

/// A PostgreSQL store in a schema of its own, migrated.
pub(crate) async fn postgres(schema: &str) -> Stores {
    let url = pg_url(schema);
    cqrs::migrate(&url)
        .await
        .expect("PostgreSQL must be reachable at DATABASE_URL");
    cqrs::connect(&url).await.unwrap()
}

/// A Redis store under a key prefix of its own.
pub(crate) async fn redis(prefix: &str) -> Stores {
    cqrs::connect(&redis_url(prefix))
        .await
        .expect("Redis must be reachable at REDIS_URL")
}

pub(crate) async fn drop_schema(schema: &str) {
    let pool = sqlx::PgPool::connect(&pg_base()).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}

pub(crate) async fn drop_prefix(prefix: &str) {
    let client = redis::Client::open(redis_base()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
