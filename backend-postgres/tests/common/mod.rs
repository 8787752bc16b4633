//! Shared test setup: a fresh schema per test on the server at `DATABASE_URL`.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use backend_postgres::{PgBackend, PgStoreOptions};
use cqrs_core::BoxError;
use sqlx::Connection;

/// The server the tests use.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `DATABASE_URL`, or the default local server.
pub fn url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Options for `schema` with a small pool and `application_name` = the schema.
pub fn options(schema: &str) -> Result<PgStoreOptions, BoxError> {
    Ok(PgStoreOptions::from_url(&url())?
        .with_schema(schema)?
        .max_connections(4)
        .application_name(schema))
}

/// A migrated backend in a fresh schema; an unreachable server is an error saying how to
/// start one.
pub async fn fresh(schema: &str) -> Result<Arc<PgBackend>, BoxError> {
    let backend = PgBackend::connect(&options(schema)?).await.map_err(|e| {
        format!(
            "PostgreSQL is unreachable at {} ({e}). Start it (for example \
             `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16`) \
             or set DATABASE_URL",
            url()
        )
    })?;
    backend.migrate().await?;
    Ok(backend)
}

/// Drops a test's schema.
pub async fn drop_schema(schema: &str) -> Result<(), BoxError> {
    let mut conn = sqlx::PgConnection::connect(&url()).await?;
    let name = backend_postgres::SchemaName::new(schema)?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", name.quoted()))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
