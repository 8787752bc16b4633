//! # cqrs
//!
//! CQRS and event sourcing in Rust with pluggable storage. This facade re-exports
//! [`cqrs_core`] (types, traits, pure logic), [`runtime`] (what needs tokio) and the backends
//! enabled by Cargo features: `memory` (default), `postgres`, `redis`, `mongo`. Features only
//! make backends available; the application picks one at run time with [`connect`], which
//! dispatches on the URL scheme and returns trait objects, so switching backend is a change
//! of URL.
//!
//! ```
//! use cqrs::{EventData, EventStore, ExpectedVersion, StreamId};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrs::Result<()> {
//! let stores = cqrs::connect("memory:").await?;
//! let stream: StreamId = "order-1".parse()?;
//! let placed = EventData::json("Placed", &serde_json::json!({ "qty": 2 }))?;
//! let out = stores.events.append(&stream, ExpectedVersion::NoStream, vec![placed]).await?;
//! assert_eq!(out.first_version, 1);
//! # Ok(()) }
//! ```

//! What implementing or consuming the public traits needs comes with the facade:
//! [`async_trait`] for [`runtime::Projection`] and [`bus::MessageHandler`], [`StreamExt`] and
//! [`TryStreamExt`] for [`EventStoreExt::stream_events`], [`serde_json`] for document bodies,
//! and [`codec::decode_event`] to read a recorded event as a domain event. A projection
//! written with `cqrs::` paths alone:
//!
//! ```
//! use cqrs::{async_trait, codec::decode_event, runtime::Projection, serde_json::json};
//! use cqrs::{upcast::UpcasterChain, BoxError, Change, Document, RecordedEvent, TryStreamExt};
//!
//! #[derive(serde::Deserialize)]
//! enum OrderEvent { Placed { qty: u32 } }
//!
//! struct Quantities { upcasters: UpcasterChain }
//!
//! #[async_trait]
//! impl Projection for Quantities {
//!     fn name(&self) -> &str { "quantities" }
//!     fn collections(&self) -> Vec<String> { vec!["quantities".into()] }
//!     async fn handle(&self, e: &RecordedEvent) -> Result<Vec<Change>, BoxError> {
//!         let OrderEvent::Placed { qty } = decode_event(&e.data, &self.upcasters)?;
//!         let document = Document::new(e.stream_id.as_str(), json!({ "qty": qty }));
//!         Ok(vec![Change::Upsert { collection: "quantities".into(), document }])
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrs::Result<()> {
//! use cqrs::{EventData, EventStoreExt, ExpectedVersion, StreamId};
//! let stores = cqrs::connect("memory:").await?;
//! let order: StreamId = "order-1".parse()?;
//! let placed = EventData::json("Placed", &json!({ "qty": 2 }))?;
//! stores.events.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
//! let events: Vec<_> = stores.events.stream_events(&order, 1, 100).try_collect().await?;
//! let changes = Quantities { upcasters: UpcasterChain::default() }.handle(&events[0]).await;
//! assert_eq!(changes.map(|c| c.len()).ok(), Some(1));
//! # Ok(()) }
//! ```
//!
//! [`testing`] holds given/when/then fixtures for aggregates and projections.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use async_trait::async_trait;
pub use cqrs_core::*;
pub use cqrs_runtime as runtime;
pub use futures::{StreamExt, TryStreamExt};
pub use serde_json;

pub mod testing;

#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use backend_memory as memory;

#[cfg(feature = "mongo")]
#[cfg_attr(docsrs, doc(cfg(feature = "mongo")))]
pub use backend_mongo as mongo;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use backend_postgres as postgres;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use backend_redis as redis;

/// The backends [`connect`] knows, by URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `memory:` — the in-memory reference backend (feature `memory`).
    Memory,
    /// `postgres://` or `postgresql://` (feature `postgres`).
    Postgres,
    /// `redis://`, `rediss://` or `redis+cluster://` (feature `redis`).
    Redis,
    /// `mongodb://` or `mongodb+srv://` (feature `mongo`).
    Mongo,
}

impl BackendKind {
    /// Which backend a URL names, from its scheme alone. Never echoes the URL (it may hold
    /// credentials).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unparsable URL or an unknown scheme.
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase())
            .filter(|s| {
                // RFC 3986: a letter, then letters, digits, '+', '-' or '.'. Anything else means
                // there was no scheme, and the text before ':' may be a user or a host.
                let mut b = s.bytes();
                b.next().is_some_and(|c| c.is_ascii_alphabetic())
                    && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
            })
            .ok_or_else(|| Error::invalid("a store URL needs a scheme, such as memory: or postgres://"))?;
        match scheme.as_str() {
            "memory" => Ok(BackendKind::Memory),
            "postgres" | "postgresql" => Ok(BackendKind::Postgres),
            "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => Ok(BackendKind::Redis),
            "mongodb" | "mongodb+srv" => Ok(BackendKind::Mongo),
            other => Err(Error::invalid(format!(
                "unknown store URL scheme {other:?}: expected memory:, postgres://, redis://, rediss://, redis+cluster:// or mongodb://"
            ))),
        }
    }

    /// The Cargo feature that makes this backend available.
    pub const fn feature(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Postgres => "postgres",
            BackendKind::Redis => "redis",
            BackendKind::Mongo => "mongo",
        }
    }
}

/// Opens the backend a URL names and returns its stores as trait objects.
///
/// | scheme | backend | feature |
/// |---|---|---|
/// | `memory:` | in-memory reference backend | `memory` (default) |
/// | `postgres://`, `postgresql://` | PostgreSQL | `postgres` |
/// | `redis://`, `rediss://`, `redis+cluster://` | Redis, single node or Cluster | `redis` |
/// | `mongodb://`, `mongodb+srv://` | MongoDB | `mongo` |
///
/// # Errors
/// [`Error::InvalidInput`] for an unknown scheme or a backend whose feature is not enabled
/// (the message names the feature); [`Error::Unsupported`] for a backend that is not
/// implemented yet; connection errors of the backend.
pub async fn connect(url: &str) -> Result<Stores> {
    let kind = BackendKind::from_url(url)?;
    match kind {
        #[cfg(feature = "memory")]
        BackendKind::Memory => Ok(backend_memory::MemoryBackend::new().stores()),
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => backend_postgres::connect(url).await,
        #[cfg(feature = "redis")]
        BackendKind::Redis => backend_redis::connect(url).await,
        #[cfg(feature = "mongo")]
        BackendKind::Mongo => backend_mongo::connect(url).await,
        #[allow(unreachable_patterns)]
        other => Err(Error::invalid(format!(
            "{other:?} URLs need the `{}` feature of the cqrs crate",
            other.feature()
        ))),
    }
}

/// Opens the event bus of the backend a URL names, on the same server, schema or key
/// prefix as [`connect`]'s stores: the in-memory bus for `memory:` (a new, empty one each
/// call), the outbox bus for PostgreSQL (its tables come with [`migrate`]), Redis Streams for
/// Redis. Redis Pub/Sub and transport options are chosen through the backend crates.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread")] async fn main() -> cqrs::Result<()> {
/// let bus = cqrs::connect_bus("memory:").await?;
/// assert!(bus.capabilities().durable);
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`connect`]; [`Error::Unsupported`] for MongoDB (no bus yet).
pub async fn connect_bus(url: &str) -> Result<std::sync::Arc<dyn bus::EventBus>> {
    use std::sync::Arc;
    let kind = BackendKind::from_url(url)?;
    match kind {
        #[cfg(feature = "memory")]
        BackendKind::Memory => Ok(Arc::new(backend_memory::MemoryBus::new())),
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => {
            let options = backend_postgres::PgStoreOptions::from_url(url)?;
            let backend = backend_postgres::PgBackend::connect(&options).await?;
            Ok(Arc::new(backend.bus(backend_postgres::PgBusOptions::new())))
        }
        #[cfg(feature = "redis")]
        BackendKind::Redis => {
            let options = backend_redis::RedisStoreOptions::from_url(url)?;
            let bus = backend_redis::RedisBus::open(options, backend_redis::RedisBusOptions::new()).await?;
            Ok(Arc::new(bus))
        }
        // No MongoDB transport yet: a PostgreSQL or Redis bus runs beside a MongoDB store.
        BackendKind::Mongo => Err(Error::Unsupported {
            capability: "an event bus on MongoDB",
        }),
        #[allow(unreachable_patterns)]
        other => Err(Error::invalid(format!(
            "{other:?} URLs need the `{}` feature of the cqrs crate",
            other.feature()
        ))),
    }
}

/// Prepares the store a URL names: creates or upgrades its schema (PostgreSQL migrations),
/// idempotently and safely under concurrent first use. Run it once at deployment (or at
/// start-up) before [`connect`]; backends that need no preparation do nothing.
///
/// # Errors
/// As [`connect`], plus the backend's migration errors.
pub async fn migrate(url: &str) -> Result<()> {
    match BackendKind::from_url(url)? {
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => backend_postgres::migrate(url).await,
        _ => connect(url).await.map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_map_to_backends() {
        assert_eq!(BackendKind::from_url("memory:").ok(), Some(BackendKind::Memory));
        assert_eq!(
            BackendKind::from_url("postgresql://u:p@h/db").ok(),
            Some(BackendKind::Postgres)
        );
        assert_eq!(BackendKind::from_url("REDIS://h").ok(), Some(BackendKind::Redis));
        assert_eq!(
            BackendKind::from_url("redis+cluster://h:7000").ok(),
            Some(BackendKind::Redis)
        );
        assert_eq!(
            BackendKind::from_url("mongodb+srv://h").ok(),
            Some(BackendKind::Mongo)
        );
    }

    #[test]
    fn errors_never_echo_credentials() {
        let err = BackendKind::from_url("ftp://user:hunter2@host")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ftp") && !err.contains("hunter2"), "{err}");
        assert!(BackendKind::from_url("no-scheme").is_err());
    }

    #[test]
    fn errors_never_echo_what_may_be_a_user_or_host() {
        let err = BackendKind::from_url("postgres//admin@db.internal:5432")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("admin") && !err.contains("db.internal"), "{err}");
    }

    #[tokio::test]
    async fn unavailable_backends_say_why_without_credentials() {
        // With the feature off the message names the feature; with it on (as `scripts/test`
        // builds, all features) nothing listens on loopback port 1, so the server is
        // unavailable. Either way the message holds no secret.
        let result = connect("mongodb://user:secret@127.0.0.1:1/?serverSelectionTimeoutMS=200").await;
        let err = result.as_ref().map(|_| ()).unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        if cfg!(feature = "mongo") {
            assert!(matches!(result, Err(Error::Unavailable { .. })), "{err}");
        } else {
            assert!(err.contains("`mongo` feature"), "{err}");
        }
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn memory_url_gives_working_stores() {
        let stores = connect("memory:").await.unwrap();
        let s: StreamId = "s".parse().unwrap();
        let e = EventData::json("E", &1).unwrap();
        let out = stores
            .events
            .append(&s, ExpectedVersion::NoStream, vec![e])
            .await
            .unwrap();
        assert_eq!(out.next_expected, 1);
        assert_eq!(
            stores.events.stream_state(&s).await.unwrap(),
            StreamState::Live(1)
        );
    }

    /// `postgres://` through the facade: migrate, connect, append, read back; the schema is
    /// this test's own and is dropped afterwards.
    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn postgres_url_migrates_and_connects() {
        let base = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let schema = format!("t_facade_{}", uuid::Uuid::now_v7().simple());
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}schema={schema}");
        assert!(connect(&url).await.is_err(), "an unmigrated schema is refused");
        migrate(&url).await.unwrap();
        migrate(&url).await.unwrap();
        let stores = connect(&url).await.unwrap();
        let s: StreamId = "order-1".parse().unwrap();
        let out = stores
            .events
            .append(
                &s,
                ExpectedVersion::NoStream,
                vec![EventData::json("Placed", &1).unwrap()],
            )
            .await
            .unwrap();
        assert_eq!(out.next_expected, 1);
        assert_eq!(stores.events.read_stream(&s, 1, 10).await.unwrap().len(), 1);
        stores.events.close().await.unwrap();
        let pool = sqlx::PgPool::connect(&base).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
    }
}
