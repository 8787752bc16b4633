//! # backend-postgres
//!
//! The PostgreSQL backend on sqlx: one [`PgBackend`] (one `PgPool`) implements every store
//! trait of `cqrs-core`: [`EventStore`](cqrs_core::EventStore),
//! [`SnapshotStore`](cqrs_core::SnapshotStore), [`StateStore`](cqrs_core::StateStore),
//! [`ReadStore`](cqrs_core::ReadStore), [`CheckpointStore`](cqrs_core::CheckpointStore)
//! (leases with fencing epochs) and [`Admin`](cqrs_core::Admin). [`PgBus`] is an outbox event bus
//! on the same pool and schema (messages published inside the caller's transaction, read under
//! the same transaction-id horizon as the log).
//!
//! - Everything lives in one schema (default `cqrs`), named by a validated, quoted,
//!   schema-qualified identifier in every statement (never `search_path`); the migrations
//!   table is inside it. [`PgBackend::migrate`] applies the embedded `migrations/*.sql`.
//! - An append is one round trip: a PL/pgSQL function takes
//!   the stream's advisory lock (keyed by stream id and schema) before anything assigns a
//!   transaction id, checks idempotency then the expectation (as
//!   [`cqrs_core::decide_append`]), and inserts the batch with one `UNNEST`.
//! - The store-wide log orders events by `(tx_id xid8, seq)` and shows only rows below
//!   `pg_snapshot_xmin(pg_current_snapshot())`, in one statement, so a reader never skips
//!   a transaction that commits late. Any open transaction in the instance holds readers
//!   back: set `idle_in_transaction_session_timeout`, and watch the
//!   `cqrs_postgres_log_horizon_lag_xids` gauge.
//!
//! See the README for connecting through the `cqrs` facade.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrs_core::Result<()> {
//! // DATABASE_URL=postgres://app@db/app?schema=orders&sslmode=require&pool_max_size=8
//! let url = std::env::var("DATABASE_URL").unwrap_or_default();
//! backend_postgres::migrate(&url).await?; // explicit; idempotent; safe under concurrent first use
//! let stores = backend_postgres::connect(&url).await?;
//! let order: cqrs_core::StreamId = "order-1".parse()?;
//! let placed = cqrs_core::EventData::new("Placed", cqrs_core::ContentType::Json, r#"{"qty":2}"#);
//! stores.events.append(&order, cqrs_core::ExpectedVersion::NoStream, vec![placed]).await?;
//! # Ok(()) }
//! ```

#![doc(test(attr(deny(warnings))))]

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod admin;
mod backend;
mod bus;
mod checkpoint_store;
mod error;
mod event_store;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod log;
mod migrate;
mod options;
mod read_store;
mod schema;
mod snapshot_store;
mod state_store;
pub mod testing;
mod transaction;

pub use backend::PgBackend;
pub use bus::{PgBus, PgBusOptions};

use cqrs_core::{Error, Result, Stores};

/// Connects to the store a `postgres://` URL names (see [`PgStoreOptions`] for the
/// parameters) and returns its stores. The schema must have been migrated ([`migrate()`]).
///
/// # Errors
/// [`Error::InvalidInput`] for a bad URL or an unmigrated schema; [`Error::Unavailable`]
/// if the server cannot be reached.
pub async fn connect(url: &str) -> Result<Stores> {
    let options = PgStoreOptions::from_url(url)?;
    let backend = PgBackend::connect(&options).await?;
    if let Err(e) = backend.load_identity().await {
        return Err(match e {
            Error::Unavailable { .. } => e,
            _ => Error::invalid(format!(
                "schema {} is not migrated: run backend_postgres::migrate (or PgBackend::migrate) first",
                options.schema().as_str()
            )),
        });
    }
    Ok(backend.stores())
}

/// Creates or upgrades the schema a `postgres://` URL names: the explicit migration step.
///
/// # Errors
/// As [`PgBackend::migrate`].
pub async fn migrate(url: &str) -> Result<()> {
    let backend = PgBackend::connect(&PgStoreOptions::from_url(url)?).await?;
    let result = backend.migrate().await;
    backend.pool().close().await;
    result
}
pub use cqrs_core;
pub use options::PgStoreOptions;
pub use schema::SchemaName;
pub use transaction::begin;
