//! The relay: nothing appended is lost when a relay dies mid-run, and two instances never
//! publish at the same time, even when the leader stalls inside a publish.
//!
//! `cargo nextest run -p cqrs-runtime -E 'binary(relay)'`
#![allow(clippy::unwrap_used)] // test code: a failed setup should panic with its cause

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use backend_memory::{MemoryBackend, MemoryBus};
use cqrs_core::{
    bus::{handler_fn, Delivery, EventBus, MessageId, SubscriptionSpec},
    EventData, ExpectedVersion, Stores, StreamId,
};
use cqrs_runtime::{relay::headers, Relay, RelayHandle, RelayOptions, RunnerState};
use tokio::time::Instant;

/// One publish call as the bus saw it: who, from when until it returned or was dropped.
#[derive(Debug, Clone)]
struct Span {
    owner: &'static str,
    start: Instant,
    end: Instant,
}

/// Records its publish calls into a shared log, then forwards them; optionally stalls every
/// call from the `stall_from`-th on (a leader paused mid-publish: GC, a stopped VM).
#[derive(Debug)]
struct Recording {
    owner: &'static str,
    inner: Arc<dyn EventBus>,
    log: Arc<Mutex<Vec<Span>>>,
    calls: Mutex<usize>,
    stall_from: Option<usize>,
}

/// Writes the span when the publish returns or its future is dropped.
struct SpanGuard<'a> {
    bus: &'a Recording,
    start: Instant,
}

impl Drop for SpanGuard<'_> {
    fn drop(&mut self) {
        let span = Span {
            owner: self.bus.owner,
            start: self.start,
            end: Instant::now(),
        };
        self.bus.log.lock().unwrap().push(span);
    }
}

#[async_trait]
impl EventBus for Recording {
    fn capabilities(&self) -> cqrs_core::bus::BusCapabilities {
        self.inner.capabilities()
    }
    async fn publish(&self, topic: &str, messages: Vec<cqrs_core::bus::Message>) -> cqrs_core::Result<()> {
        let _guard = SpanGuard {
            bus: self,
            start: Instant::now(),
        };
        let n = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        if self.stall_from.is_some_and(|from| n >= from) {
            std::future::pending::<()>().await;
        }
        self.inner.publish(topic, messages).await
    }
    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn cqrs_core::bus::MessageHandler>,
    ) -> cqrs_core::Result<Box<dyn cqrs_core::bus::Subscription>> {
        self.inner.subscribe(spec, handler).await
    }
    async fn dead_letters(
        &self,
        topic: &str,
        group: &str,
        max: usize,
    ) -> cqrs_core::Result<Vec<cqrs_core::bus::DeadLetter>> {
        self.inner.dead_letters(topic, group, max).await
    }
    async fn trim(&self, topic: &str) -> cqrs_core::Result<u64> {
        self.inner.trim(topic).await
    }
    async fn close(&self) -> cqrs_core::Result<()> {
        self.inner.close().await
    }
}

struct World {
    stores: Stores,
    bus: Arc<dyn EventBus>,
    log: Arc<Mutex<Vec<Span>>>,
    received: Arc<Mutex<Vec<MessageId>>>,
    sub: Box<dyn cqrs_core::bus::Subscription>,
}

const TOPIC: &str = "orders";
const TTL: Duration = Duration::from_millis(300);

async fn world() -> World {
    let stores = MemoryBackend::new().stores();
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let received = Arc::new(Mutex::new(Vec::new()));
    let seen = received.clone();
    let handler = handler_fn(move |d: Delivery| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(d.message.id);
            Ok(())
        }
    });
    let sub = bus
        .subscribe(
            SubscriptionSpec::new(TOPIC, "check").concurrency(8),
            Arc::new(handler),
        )
        .await
        .unwrap();
    World {
        stores,
        bus,
        log: Arc::new(Mutex::new(Vec::new())),
        received,
        sub,
    }
}

impl World {
    fn relay(&self, owner: &'static str, stall_from: Option<usize>) -> RelayHandle {
        let bus = Arc::new(Recording {
            owner,
            inner: self.bus.clone(),
            log: self.log.clone(),
            calls: Mutex::new(0),
            stall_from,
        });
        let options = RelayOptions::new("orders-relay", TOPIC)
            .owner(owner)
            .lease_ttl(TTL)
            .batch_size(50)
            .idle_poll(Duration::from_millis(10));
        Relay::new(&self.stores, bus, options).start()
    }

    /// Appends `n` events over 20 streams in batches of 1-4, concurrently with the relays;
    /// returns their ids.
    fn write(&self, n: usize) -> tokio::task::JoinHandle<HashSet<MessageId>> {
        let events = self.stores.events.clone();
        tokio::spawn(async move {
            let mut ids = HashSet::new();
            let mut i = 0;
            while i < n {
                let size = 1 + i % 4;
                let stream: StreamId = format!("order-{}", i % 20).parse().unwrap();
                let batch: Vec<EventData> = (i..(i + size).min(n))
                    .map(|k| EventData::json("OrderPlaced", &serde_json::json!({ "n": k })).unwrap())
                    .collect();
                ids.extend(batch.iter().map(|e| MessageId::from_uuid(*e.event_id.as_uuid())));
                i += batch.len();
                events.append(&stream, ExpectedVersion::Any, batch).await.unwrap();
                tokio::task::yield_now().await;
            }
            ids
        })
    }

    /// Waits until the checking subscriber received every id of `ids` at least once.
    async fn wait_received(&self, ids: &HashSet<MessageId>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got: HashSet<MessageId> = self.received.lock().unwrap().iter().copied().collect();
            let missing = ids.difference(&got).count();
            if missing == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} of {} events never reached the bus",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Fails if a publish by one owner overlapped a publish by another.
    fn check_no_concurrent_publish(&self) {
        let log = self.log.lock().unwrap();
        assert!(log.iter().any(|s| s.owner == "a") && log.iter().any(|s| s.owner == "b"));
        for x in log.iter() {
            for y in log.iter().filter(|y| y.owner != x.owner) {
                assert!(
                    x.end <= y.start || y.end <= x.start,
                    "{} published from {:?} to {:?} while {} published from {:?} to {:?}",
                    x.owner,
                    x.start,
                    x.end,
                    y.owner,
                    y.start,
                    y.end
                );
            }
        }
    }
}

/// A relay killed mid-run (no release, nothing flushed) is replaced by its standby after the
/// lease expires; every appended event reaches the bus, and the two never publish at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_relay_loses_nothing_and_standby_takes_over() {
    let w = world().await;
    let a = w.relay("a", None);
    a.wait_until(|s| s.lease_epoch.is_some(), Duration::from_secs(5))
        .await
        .unwrap();
    let b = w.relay("b", None);
    let writer = w.write(3000);
    a.wait_until(|s| s.published >= 500, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        b.status().state,
        RunnerState::Standby,
        "b must stand by while a leads"
    );
    a.abort();
    let mut ids = writer.await.unwrap();
    // Events appended after the crash: only b can publish them.
    ids.extend(w.write(500).await.unwrap());
    w.wait_received(&ids).await;
    let b_status = b
        .wait_until(
            |s| s.state == RunnerState::Running && s.published > 0,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(b_status.lease_epoch.is_some());
    w.check_no_concurrent_publish();
    // Each event id reached the bus; duplicates are only the batch a died with.
    let received = w.received.lock().unwrap().clone();
    let distinct: HashSet<MessageId> = received.iter().copied().collect();
    assert_eq!(distinct, ids);
    assert!(
        received.len() - ids.len() <= 50,
        "{} duplicates",
        received.len() - ids.len()
    );
    b.stop().await.unwrap();
    w.sub.stop().await.unwrap();
}

/// A leader that stalls inside its publishes gives each up before its lease can pass to
/// the standby, which takes over: no stalled publish overlaps one of the standby's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_leader_never_publishes_alongside_its_successor() {
    let w = world().await;
    let a = w.relay("a", Some(3));
    a.wait_until(|s| s.lease_epoch.is_some(), Duration::from_secs(5))
        .await
        .unwrap();
    let b = w.relay("b", None);
    let ids = w.write(1000).await.unwrap();
    w.wait_received(&ids).await;
    let a_status = a.status();
    assert!(
        a_status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("within the lease")),
        "a should have given its stalled publish up: {a_status:?}"
    );
    b.wait_until(|s| s.published > 0, Duration::from_secs(10))
        .await
        .unwrap();
    w.check_no_concurrent_publish();
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    w.sub.stop().await.unwrap();
}

/// A relayed message carries the event's id, stream, type, versions and metadata.
#[tokio::test(flavor = "multi_thread")]
async fn relayed_message_carries_the_event() {
    let w = world().await;
    let relay = w.relay("a", None);
    let stream: StreamId = "order-7".parse().unwrap();
    let event = EventData::json("OrderPlaced", &serde_json::json!({ "total": 42 }))
        .unwrap()
        .with_schema_version(3)
        .with_metadata(cqrs_core::Metadata {
            correlation_id: Some("corr-1".into()),
            causation_id: Some("cause-1".into()),
            actor: Some("alice".into()),
            ..Default::default()
        });
    let id = MessageId::from_uuid(*event.event_id.as_uuid());
    w.stores
        .events
        .append(&stream, ExpectedVersion::NoStream, vec![event.clone()])
        .await
        .unwrap();
    w.wait_received(&HashSet::from([id])).await;
    relay
        .wait_until(|s| s.commits >= 1, Duration::from_secs(5))
        .await
        .unwrap();
    let loaded = w.stores.events.read_stream(&stream, 1, 10).await.unwrap();
    let m = cqrs_runtime::event_message(&loaded[0], cqrs_core::bus::Priority::Normal);
    assert_eq!(m.id, id);
    assert_eq!(m.key, "order-7");
    assert_eq!(m.payload, event.payload);
    assert_eq!(m.headers.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(m.headers.causation_id.as_deref(), Some("cause-1"));
    assert_eq!(m.headers.extra[headers::EVENT_TYPE], "OrderPlaced");
    assert_eq!(m.headers.extra[headers::SCHEMA_VERSION], "3");
    assert_eq!(m.headers.extra[headers::STREAM_VERSION], "1");
    assert_eq!(m.headers.extra[headers::ACTOR], "alice");
    relay.stop().await.unwrap();
    w.sub.stop().await.unwrap();
}
