//! # backend-memory
//!
//! The in-memory reference backend: one [`MemoryBackend`] implements every store trait of
//! `cqrs-core` ([`EventStore`](cqrs_core::EventStore), [`SnapshotStore`](cqrs_core::SnapshotStore),
//! [`StateStore`](cqrs_core::StateStore), [`ReadStore`](cqrs_core::ReadStore),
//! [`CheckpointStore`](cqrs_core::CheckpointStore), [`Admin`](cqrs_core::Admin)) over one
//! shared state behind a mutex. It is the embedded default for examples and unit tests, and
//! the backend the others are compared with: it calls the core logic directly
//! ([`cqrs_core::decide_append`], [`cqrs_core::Limits::check_batch`],
//! [`cqrs_core::Query::run`]) instead of re-implementing it.
//!
//! Nothing is persisted. Each backend has its own [`cqrs_core::StoreIdentity`] (a UUID v7
//! made at construction), so a checkpoint taken from one is refused by another.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrs_core::Result<()> {
//! use backend_memory::MemoryBackend;
//! use cqrs_core::{Checkpoint, ContentType, EventData, EventFilter, ExpectedVersion, StreamId};
//!
//! let stores = MemoryBackend::new().stores();
//! let order: StreamId = "order-1".parse()?;
//! let placed = EventData::new("OrderPlaced", ContentType::Json, r#"{"total":42}"#);
//!
//! let out = stores.events.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
//! assert_eq!((out.first_version, out.next_expected), (1, 1));
//!
//! let events = stores.events.read_stream(&order, 1, 100).await?;
//! assert_eq!(events[0].event_type(), "OrderPlaced");
//!
//! let page = stores.events.read_all(&Checkpoint::origin(), 100, &EventFilter::all()).await?;
//! assert!(page.caught_up);
//! assert_eq!(page.events.len(), 1);
//! # Ok(()) }
//! ```

#![doc(test(attr(deny(warnings))))]

mod admin;
mod bus;
mod checkpoint_store;
mod event_store;
mod options;
mod read_store;
mod snapshot_store;
mod state;
mod state_store;

pub use bus::{MemoryBus, MemoryBusOptions};
pub use options::MemoryOptions;
pub use state::MemoryBackend;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use cqrs_core::{
        Checkpoint, CheckpointStore, ContentType, Error, EventData, EventFilter, EventStore, ExpectedVersion,
        LimitKind, Limits, ManualClock, StateExpectation, StreamId, Timestamp,
    };

    use super::*;

    fn stream(name: &str) -> StreamId {
        StreamId::new(name).unwrap()
    }

    fn event(n: u64) -> EventData {
        EventData::new("Tested", ContentType::Json, format!("{{\"n\":{n}}}"))
    }

    #[tokio::test]
    async fn calls_counts_every_store_call_and_close_refuses_the_rest() {
        let backend = MemoryBackend::new();
        let stores = backend.stores();
        assert_eq!(backend.calls(), 0);
        let s = stream("s");
        stores
            .events
            .append(&s, ExpectedVersion::NoStream, vec![event(1)])
            .await
            .unwrap();
        stores.events.read_stream(&s, 1, 10).await.unwrap();
        stores.states.get("kind", "id").await.unwrap();
        assert_eq!(backend.calls(), 3, "one per trait call, whatever the store");
        // Sync accessors are not round trips.
        let _ = stores.events.capabilities();
        assert_eq!(backend.calls(), 3);

        stores.events.close().await.unwrap();
        assert!(matches!(
            stores.events.read_stream(&s, 1, 10).await,
            Err(Error::Closed)
        ));
        assert!(matches!(
            stores
                .states
                .put("k", "i", StateExpectation::Any, "x".into())
                .await,
            Err(Error::Closed)
        ));
        stores.events.close().await.unwrap();
        assert_eq!(backend.calls(), 7, "refused calls and a second close count too");
    }

    #[test]
    fn options_default_to_default_limits_and_the_system_clock() {
        let options = MemoryOptions::default();
        assert_eq!(options.limits, Limits::default());
        let before = Timestamp::from_system_time(std::time::SystemTime::now());
        let now = options.clock.now();
        assert!(
            now >= before && now.millis_since(before) < 60_000,
            "{now} vs {before}"
        );
    }

    #[tokio::test]
    async fn the_store_clock_stamps_events_and_times_leases() {
        let clock = ManualClock::new(Timestamp::from_millis(5_000));
        let backend = MemoryBackend::with_options(MemoryOptions::new().clock(Arc::new(clock.clone())));
        let s = stream("s");
        backend
            .append(&s, ExpectedVersion::Any, vec![event(1)])
            .await
            .unwrap();
        let read = backend.read_stream(&s, 1, 1).await.unwrap();
        assert_eq!(read[0].recorded_at, Timestamp::from_millis(5_000));

        let lease = backend.acquire("p", "a", Duration::from_secs(1)).await.unwrap();
        assert_eq!(lease.expires_at, Timestamp::from_millis(6_000));
        assert!(matches!(
            backend.acquire("p", "b", Duration::from_secs(1)).await,
            Err(Error::LeaseHeld { .. })
        ));
        clock.advance(Duration::from_secs(1));
        let taken = backend.acquire("p", "b", Duration::from_secs(1)).await.unwrap();
        assert_eq!(taken.epoch, lease.epoch + 1, "an expired lease is taken over");
    }

    #[tokio::test]
    async fn configured_limits_bound_batches_and_read_pages() {
        let limits = Limits {
            max_batch_count: 3,
            max_read_bytes: 1,
            ..Limits::default()
        };
        let backend = MemoryBackend::with_options(MemoryOptions::new().limits(limits));
        let s = stream("s");
        assert!(matches!(
            backend
                .append(&s, ExpectedVersion::Any, (0..4).map(event).collect())
                .await,
            Err(Error::TooLarge {
                kind: LimitKind::BatchCount,
                limit: 3,
                actual: 4
            })
        ));
        backend
            .append(&s, ExpectedVersion::Any, (0..3).map(event).collect())
            .await
            .unwrap();
        assert_eq!(backend.read_stream(&s, 1, 10).await.unwrap().len(), 1);
        assert_eq!(backend.read_stream_backward(&s, None, 10).await.unwrap().len(), 1);
        let batch = backend
            .read_all(&Checkpoint::origin(), 10, &EventFilter::all())
            .await
            .unwrap();
        assert_eq!(batch.events.len(), 1);
        assert!(!batch.caught_up);
    }

    #[tokio::test]
    async fn each_backend_has_its_own_identity() {
        let (a, b) = (MemoryBackend::new(), MemoryBackend::new());
        assert_ne!(a.identity(), b.identity());
        a.append(&stream("s"), ExpectedVersion::Any, vec![event(1)])
            .await
            .unwrap();
        let from_a = a
            .read_all(&Checkpoint::origin(), 10, &EventFilter::all())
            .await
            .unwrap()
            .next;
        assert!(matches!(
            b.read_all(&from_a, 10, &EventFilter::all()).await,
            Err(Error::CheckpointMismatch { .. })
        ));
    }
}
