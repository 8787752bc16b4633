//! # backend-mongo
//!
//! The MongoDB backend on the official `mongodb` driver: one [`MongoBackend`] (one
//! `mongodb::Client`, one database, a collection prefix) implements every store trait of
//! `cqrs-core`: [`EventStore`](cqrs_core::EventStore),
//! [`SnapshotStore`](cqrs_core::SnapshotStore), [`StateStore`](cqrs_core::StateStore),
//! [`ReadStore`](cqrs_core::ReadStore), [`CheckpointStore`](cqrs_core::CheckpointStore)
//! (leases with fencing epochs) and [`Admin`](cqrs_core::Admin).
//!
//! **Not yet verified against a live server in this project's CI** (no MongoDB is
//! available there); see the README.
//!
//! - An append writes ONE commit document (its events and the array of their versions), so a
//!   multi-event append is atomic without a transaction. A unique compound multikey index on
//!   `(s, v)` (stream, versions) catches any overlap and a unique index on the event ids
//!   catches any re-send; duplicate-key errors are resolved by reading the clashing commits
//!   back ([`cqrs_core::decide_append`] decides: idempotent re-send, `IdempotencyMismatch`,
//!   `Conflict`, or `AlreadyExists` for an id of another stream).
//! - The store-wide log needs a replica set (one node is enough): each append increments a
//!   counter document and inserts its commit in ONE transaction, so commit sequence order is
//!   commit order and a reader resuming after sequence `n` never skips a commit that
//!   becomes visible later. The cost: every append in the store serialises on that counter
//!   document (write conflicts are retried). On a standalone server the backend declares
//!   no store-wide log (`partitions: 0`) and appends are single inserts.
//! - BSON payloads are stored as embedded documents when they round-trip byte-identically
//!   and their keys are ones MongoDB accepts; everything else as binary.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrs_core::Result<()> {
//! // MONGODB_URL=mongodb://db:27017/?replicaSet=rs0&database=orders&prefix=es_
//! let url = std::env::var("MONGODB_URL").unwrap_or_default();
//! let stores = backend_mongo::connect(&url).await?; // runs the idempotent init()
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
mod checkpoint_store;
mod error;
mod event_store;
mod indexes;
mod mapping;
mod options;
mod query;
mod read_store;
mod resolve;
mod snapshot_store;
mod state_store;

pub use backend::MongoBackend;
pub use cqrs_core;
pub use options::{MongoStoreOptions, MAX_BSON_DOCUMENT_BYTES};

use cqrs_core::{Result, Stores};

/// Connects to the store a `mongodb://` URL names (see [`MongoStoreOptions`] for the
/// parameters), runs [`MongoBackend::init`] (idempotent) and returns its stores.
///
/// # Errors
/// [`cqrs_core::Error::InvalidInput`] for a bad URL; [`cqrs_core::Error::Unavailable`] if
/// no server answers within the server selection timeout (10 s unless the URL sets
/// `serverSelectionTimeoutMS`).
pub async fn connect(url: &str) -> Result<Stores> {
    let options = MongoStoreOptions::from_url(url)?;
    let backend = MongoBackend::connect(&options).await?;
    backend.init().await?;
    Ok(backend.stores())
}

/// Creates the collections and indexes a `mongodb://` URL names: the explicit init step.
///
/// # Errors
/// As [`MongoBackend::init`].
pub async fn init(url: &str) -> Result<()> {
    let backend = MongoBackend::connect(&MongoStoreOptions::from_url(url)?).await?;
    backend.init().await
}
