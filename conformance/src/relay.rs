//! Relay behaviours (the event store → bus relay of `cqrs_runtime`), over any stores and bus:
//! nothing appended is lost when a relay dies mid-run, two instances never publish at the
//! same time, even when the leader stalls inside its publishes, and a command's metadata
//! reaches the bus handlers.
//!
//! Each behaviour takes the stores and the bus of one backend and a `label` that keeps its
//! topic, group and checkpoint names apart from other runs on a shared server:
//!
//! ```ignore
//! let stores = backend_memory::MemoryBackend::new().stores();
//! let bus: Arc<dyn EventBus> = Arc::new(backend_memory::MemoryBus::new());
//! conformance::relay::killed_relay_loses_nothing(&stores, bus, "m1").await?;
//! ```

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use cqrs_core::{
    aggregate::EventSourcedRepository,
    bus::{handler_fn, Delivery, EventBus, MessageId, Subscription, SubscriptionSpec},
    EventData, ExpectedVersion, Metadata, Stores, StreamId,
};
use cqrs_runtime::{Relay, RelayHandle, RelayOptions, RunnerState};
use tokio::time::Instant;

use crate::{ensure, ensure_eq, Ctx, Deadline, Failure};

/// The relays' lease: long enough for a page's publish and checkpoint on a loaded server,
/// short enough that a takeover happens within the test.
const TTL: Duration = Duration::from_millis(1000);

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
        lock(&self.bus.log).push(span);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
            let mut calls = lock(&self.calls);
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
    ) -> cqrs_core::Result<Box<dyn Subscription>> {
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
    label: String,
    log: Arc<Mutex<Vec<Span>>>,
    received: Arc<Mutex<Vec<MessageId>>>,
    sub: Box<dyn Subscription>,
}

impl World {
    async fn new(stores: &Stores, bus: Arc<dyn EventBus>, label: &str) -> Result<Self, Failure> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        let handler = handler_fn(move |d: Delivery| {
            let seen = seen.clone();
            async move {
                lock(&seen).push(d.message.id);
                Ok(())
            }
        });
        let spec = SubscriptionSpec::new(format!("relayed_{label}"), format!("check_{label}")).concurrency(8);
        let sub = bus.subscribe(spec, Arc::new(handler)).await.ctx("subscribe")?;
        Ok(World {
            stores: stores.clone(),
            bus,
            label: label.to_owned(),
            log: Arc::new(Mutex::new(Vec::new())),
            received,
            sub,
        })
    }

    fn relay(&self, owner: &'static str, stall_from: Option<usize>) -> RelayHandle {
        let bus = Arc::new(Recording {
            owner,
            inner: self.bus.clone(),
            log: self.log.clone(),
            calls: Mutex::new(0),
            stall_from,
        });
        let options = RelayOptions::new(format!("relay_{}", self.label), format!("relayed_{}", self.label))
            .owner(format!("{owner}_{}", self.label))
            .lease_ttl(TTL)
            .batch_size(50)
            .idle_poll(Duration::from_millis(10));
        Relay::new(&self.stores, bus, options).start()
    }

    /// Appends `n` events over 20 streams in batches of 1-4, concurrently with the relays;
    /// returns their ids.
    fn write(&self, n: usize) -> tokio::task::JoinHandle<Result<HashSet<MessageId>, Failure>> {
        let (events, label) = (self.stores.events.clone(), self.label.clone());
        tokio::spawn(async move {
            let mut ids = HashSet::new();
            let mut i = 0;
            while i < n {
                let size = 1 + i % 4;
                let stream = StreamId::new(format!("relay-{label}-{}", i % 20)).ctx("stream id")?;
                let batch = (i..(i + size).min(n))
                    .map(|k| EventData::json("OrderPlaced", &serde_json::json!({ "n": k })))
                    .collect::<cqrs_core::Result<Vec<_>>>()
                    .ctx("event")?;
                ids.extend(batch.iter().map(|e| MessageId::from_uuid(*e.event_id.as_uuid())));
                i += batch.len();
                events
                    .append(&stream, ExpectedVersion::Any, batch)
                    .await
                    .ctx("append")?;
                tokio::task::yield_now().await;
            }
            Ok(ids)
        })
    }

    /// Waits until the checking subscriber received every id of `ids` at least once.
    async fn wait_received(&self, ids: &HashSet<MessageId>) -> Result<(), Failure> {
        let deadline = Deadline::after(Duration::from_secs(60));
        loop {
            let got: HashSet<MessageId> = lock(&self.received).iter().copied().collect();
            let missing = ids.difference(&got).count();
            if missing == 0 {
                return Ok(());
            }
            deadline.check(&format!("{missing} of {} events to reach the bus", ids.len()))?;
            crate::poll_pause().await;
        }
    }

    /// Fails if a publish by one owner overlapped a publish by another.
    fn check_no_concurrent_publish(&self) -> Result<(), Failure> {
        let log = lock(&self.log);
        ensure!(
            log.iter().any(|s| s.owner == "a") && log.iter().any(|s| s.owner == "b"),
            "both relays should have published"
        );
        for x in log.iter() {
            for y in log.iter().filter(|y| y.owner != x.owner) {
                ensure!(
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
        Ok(())
    }
}

async fn join<T>(task: tokio::task::JoinHandle<Result<T, Failure>>) -> Result<T, Failure> {
    task.await.map_err(|e| Failure(format!("writer task: {e}")))?
}

/// A relay killed mid-run (no release, nothing flushed) is replaced by its standby after the
/// lease expires; every appended event reaches the bus, and the two never publish at once.
///
/// # Errors
/// A [`Failure`] naming what did not hold.
pub async fn killed_relay_loses_nothing(
    stores: &Stores,
    bus: Arc<dyn EventBus>,
    label: &str,
) -> Result<(), Failure> {
    let w = World::new(stores, bus, label).await?;
    let a = w.relay("a", None);
    a.wait_until(|s| s.lease_epoch.is_some(), Duration::from_secs(10))
        .await
        .ctx("a leads")?;
    let b = w.relay("b", None);
    let writer = w.write(3000);
    a.wait_until(|s| s.published >= 500, Duration::from_secs(30))
        .await
        .ctx("a publishes")?;
    ensure_eq!(b.status().state, RunnerState::Standby, "b's state while a leads");
    a.abort();
    let mut ids = join(writer).await?;
    // Events appended after the crash: only b can publish them.
    ids.extend(join(w.write(500)).await?);
    w.wait_received(&ids).await?;
    b.wait_until(
        |s| s.state == RunnerState::Running && s.published > 0,
        Duration::from_secs(30),
    )
    .await
    .ctx("b takes over")?;
    w.check_no_concurrent_publish()?;
    let received = lock(&w.received).clone();
    let distinct: HashSet<MessageId> = received.iter().copied().collect();
    ensure_eq!(distinct, ids, "event ids that reached the bus");
    b.stop().await.ctx("stop b")?;
    w.sub.stop().await.ctx("stop the subscriber")?;
    Ok(())
}

/// A leader that stalls inside its publishes gives each up before its lease can pass to the
/// standby, which takes over: no stalled publish overlaps one of the standby's, and nothing
/// is lost.
///
/// # Errors
/// A [`Failure`] naming what did not hold.
pub async fn stalled_leader_never_publishes_alongside_its_successor(
    stores: &Stores,
    bus: Arc<dyn EventBus>,
    label: &str,
) -> Result<(), Failure> {
    let w = World::new(stores, bus, label).await?;
    let a = w.relay("a", Some(3));
    a.wait_until(|s| s.lease_epoch.is_some(), Duration::from_secs(10))
        .await
        .ctx("a leads")?;
    let b = w.relay("b", None);
    let ids = join(w.write(1000)).await?;
    w.wait_received(&ids).await?;
    let a_status = a.status();
    ensure!(
        a_status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("within the lease")),
        "a should have given its stalled publish up: {a_status:?}"
    );
    b.wait_until(|s| s.published > 0, Duration::from_secs(30))
        .await
        .ctx("b publishes")?;
    w.check_no_concurrent_publish()?;
    a.stop().await.ctx("stop a")?;
    b.stop().await.ctx("stop b")?;
    w.sub.stop().await.ctx("stop the subscriber")?;
    Ok(())
}

/// Events a command produced with metadata reach a bus handler through the relay, which
/// reads the command's metadata back unchanged (`Delivery::metadata`) and derives a
/// follow-up caused by the event, in its correlation, by its actor (`Delivery::follow_up`).
///
/// # Errors
/// A [`Failure`] naming what did not hold.
pub async fn command_metadata_reaches_bus_handlers(
    stores: &Stores,
    bus: Arc<dyn EventBus>,
    label: &str,
) -> Result<(), Failure> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let handler = handler_fn(move |d: Delivery| {
        let record = record.clone();
        async move {
            lock(&record).push((d.message.id, d.metadata(), d.follow_up()));
            Ok(())
        }
    });
    let topic = format!("metadata_{label}");
    let sub = bus
        .subscribe(
            SubscriptionSpec::new(topic.clone(), format!("check_{label}")),
            Arc::new(handler),
        )
        .await
        .ctx("subscribe")?;
    let options = RelayOptions::new(format!("relay_{label}"), topic)
        .lease_ttl(TTL)
        .idle_poll(Duration::from_millis(10));
    let relay = Relay::new(stores, bus, options).start();
    let metadata = Metadata::new()
        .with_correlation_id(format!("req-{label}"))
        .with_causation_id("cmd-1")
        .with_actor("alice")
        .with_extra("tenant", "acme");
    let repo = EventSourcedRepository::<crate::policies::Counter>::new(stores.events.clone());
    let command = crate::policies::CounterCommand::AddEach(vec![1, 2]);
    repo.execute_with(&format!("md-{label}"), command, &metadata)
        .await
        .map_err(|e| Failure(format!("execute_with: {e}")))?;
    let deadline = Deadline::after(Duration::from_secs(30));
    while lock(&seen).len() < 2 {
        deadline.check("both events to reach the handler")?;
        crate::poll_pause().await;
    }
    relay.stop().await.ctx("stop the relay")?;
    sub.stop().await.ctx("stop the subscriber")?;
    let seen = lock(&seen).clone();
    for (id, read_back, follow_up) in seen {
        ensure_eq!(
            read_back,
            metadata,
            "metadata of message {id} as the handler reads it"
        );
        ensure_eq!(
            (follow_up.causation_id, follow_up.correlation_id, follow_up.actor),
            (
                Some(id.to_string()),
                metadata.correlation_id.clone(),
                metadata.actor.clone()
            ),
            "follow-up of message {id}"
        );
    }
    Ok(())
}
