//! # backend-redis
//!
//! The Redis backend of the CQRS / event-sourcing SDK, on [redis-rs](https://docs.rs/redis):
//! one [`RedisBackend`] implements every store trait of `cqrs-core`
//! ([`EventStore`](cqrs_core::EventStore), [`SnapshotStore`](cqrs_core::SnapshotStore),
//! [`StateStore`](cqrs_core::StateStore), [`ReadStore`](cqrs_core::ReadStore),
//! [`CheckpointStore`](cqrs_core::CheckpointStore), [`Admin`](cqrs_core::Admin)) on a single
//! node or on Redis Cluster, chosen by URL.
//!
//! Design (see the crate README for durability and operations):
//! - Keys are `<prefix>:{p<k>}:<kind>:<name>`: every key of a stream shares the hash tag of
//!   its log partition, so one Lua script can touch them all, on a cluster too.
//! - An append is one Lua script (`src/lua/append.lua`, called by SHA) that checks
//!   idempotency per stream, then the expected version (kept in the stream's head hash),
//!   then writes: the events go to the stream's Redis stream under explicit entry ids
//!   `0-<version>`, and one commit pointer `(stream, from, to, first entry id)` goes to the
//!   partition's log stream. `read_all` expands commit pointers.
//! - Positions are `[log entry ms, log entry seq, index in commit]`.
//! - Read models, checkpoints and leases share one hash tag, so a read-model commit and its
//!   checkpoint are one atomic script (on a cluster they all live in one slot).
//!
//! ```no_run
//! # async fn demo() -> cqrs_core::Result<()> {
//! use backend_redis::{RedisBackend, RedisStoreOptions};
//! use cqrs_core::{ContentType, EventData, ExpectedVersion, StreamId};
//!
//! let backend = RedisBackend::open(RedisStoreOptions::from_env().prefix("shop")).await?;
//! let stores = backend.stores();
//! let order: StreamId = "order-1".parse()?;
//! let placed = EventData::new("OrderPlaced", ContentType::Json, r#"{"total":42}"#);
//! let out = stores.events.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
//! assert_eq!(out.next_expected, 1);
//! # Ok(()) }
//! ```

mod admin;
mod backend;
mod bus;
mod checkpoint_store;
mod conn;
mod error;
mod event_store;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod log;
mod options;
mod packed;
mod read_store;
mod scripts;
mod snapshot_store;
mod state_store;

pub use backend::{connect, RedisBackend};
pub use bus::{
    Dequeued, Enqueued, FifoOptions, FifoQueue, PubSubOptions, RedisBus, RedisBusOptions, RedisPubSubBus,
};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use cqrs_core;
pub use options::{RedisStoreOptions, DEFAULT_URL, MAX_READ_CONNECTIONS};
