//! The in-memory event bus: the reference transport of the `conformance` bus suite.
//!
//! A topic is split into K partitions by [`partition_for`](cqrs_core::bus::partition_for) of the message key. Each consumer
//! group keeps, per partition, which entries it acknowledged, the attempts made on each
//! pending entry (our own counter) and which consumer owns the partition. Within a group a
//! partition is owned by one live consumer at a time (partitions are spread round-robin over
//! the live consumers, a consumer hands a partition over only once nothing of it is in
//! flight), so a key is never handled twice at once. A consumer stays live while it
//! heartbeats (every quarter of its ack timeout, also while a slow handler runs); a crashed
//! one ([`Subscription::abort`]) stops heartbeating and its partitions, in-flight messages
//! included, are claimed by another consumer once its ack timeout has passed. A graceful
//! [`Subscription::stop`] waits up to one ack timeout for in-flight handlers, then drops them
//! and releases their messages at once.
//!
//! Everything happens under one mutex never held across an `await`, so a dead letter and
//! its acknowledgement are one step. A pick looks at the first 256 un-acknowledged entries
//! of each partition the consumer owns (as the Redis bus reads a window): priorities order
//! the ready messages among them.

mod state;
mod subscription;
#[cfg(test)]
mod tests;

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use cqrs_core::{
    bus::{
        Breaker, BusCapabilities, DeadLetter, EventBus, Message, MessageHandler, Priority, Subscription,
        SubscriptionSpec,
    },
    validate_name, Clock, Error, Result, SystemClock,
};
use tokio::{
    sync::{watch, Notify},
    time::Instant,
};

use state::{Body, BusState, Group, Member};
use subscription::{Counters, MemorySubscription, Tasks, Worker};

/// The in-memory bus. Clones share the same topics.
///
/// Declares every capability: durable (at-least-once while the value lives), ordered per
/// key, dead letter with sequenced parking, delayed retry, priorities, claim after the ack
/// timeout, retention. Nothing is persisted.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread")] async fn main() -> cqrs_core::Result<()> {
/// use std::sync::Arc;
/// use backend_memory::MemoryBus;
/// use cqrs_core::{bus::{handler_fn, Delivery, EventBus, Message, SubscriptionSpec}, ContentType};
///
/// let bus = MemoryBus::new();
/// bus.publish("orders", vec![Message::new("order-1", ContentType::Json, "{}")]).await?;
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let handler = handler_fn(move |d: Delivery| {
///     let tx = tx.clone();
///     async move { let _ = tx.send(d.message.key); Ok(()) }
/// });
/// let sub = bus.subscribe(SubscriptionSpec::new("orders", "billing"), Arc::new(handler)).await?;
/// assert_eq!(rx.recv().await.as_deref(), Some("order-1"));
/// sub.stop().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    partitions: u32,
    bypass_limit: u32,
    clock: Arc<dyn Clock>,
    state: Mutex<BusState>,
    notify: Notify,
    closed: AtomicBool,
}

impl MemoryBus {
    /// Default partitions per topic.
    pub const DEFAULT_PARTITIONS: u32 = 8;

    /// A bus with [`MemoryBus::DEFAULT_PARTITIONS`] partitions per topic, strict priority
    /// and the system clock (for dead-letter timestamps).
    pub fn new() -> Self {
        MemoryBus::with_options(MemoryBusOptions::default())
    }

    /// A bus built from `options`.
    pub fn with_options(options: MemoryBusOptions) -> Self {
        MemoryBus {
            shared: Arc::new(Shared {
                partitions: options.partitions.max(1),
                bypass_limit: options.priority_bypass,
                clock: options.clock,
                state: Mutex::new(BusState::default()),
                notify: Notify::new(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Stores an entry that does not decode, as a corrupted transport entry would be: the
    /// conformance suite's way to show such an entry is dead-lettered instead of blocking.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad names, [`Error::Closed`].
    pub async fn publish_undecodable(&self, topic: &str, key: &str, error: &str) -> Result<()> {
        self.shared.check_open()?;
        validate_name("topic", topic)?;
        validate_name("partition key", key)?;
        let mut state = self.shared.lock();
        let t = self.shared.topic(&mut state, topic);
        t.push(
            key,
            Priority::Normal,
            Body::Undecodable(error.to_owned()),
            self.shared.partitions,
        );
        drop(state);
        self.shared.notify.notify_waiters();
        Ok(())
    }
}

/// How a [`MemoryBus`] is built. Setters take and return `Self`.
///
/// ```
/// use backend_memory::{MemoryBus, MemoryBusOptions};
/// use cqrs_core::bus::EventBus;
/// let bus = MemoryBus::with_options(MemoryBusOptions::new().partitions(4).priority_bypass(8));
/// assert_eq!(bus.capabilities().partitions, 4);
/// ```
#[derive(Debug, Clone)]
pub struct MemoryBusOptions {
    partitions: u32,
    priority_bypass: u32,
    clock: Arc<dyn Clock>,
}

impl MemoryBusOptions {
    /// The defaults: [`MemoryBus::DEFAULT_PARTITIONS`], strict priority, the system clock.
    pub fn new() -> Self {
        MemoryBusOptions::default()
    }

    /// Partitions per topic (at least 1).
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Serve the oldest ready message after this many picks in a row passed over it (see
    /// [`PriorityScheduler::new`](cqrs_core::bus::PriorityScheduler::new); 0, the default: strict priority).
    #[must_use]
    pub fn priority_bypass(mut self, limit: u32) -> Self {
        self.priority_bypass = limit;
        self
    }

    /// The clock stamping dead letters.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl Default for MemoryBusOptions {
    fn default() -> Self {
        MemoryBusOptions {
            partitions: MemoryBus::DEFAULT_PARTITIONS,
            priority_bypass: 0,
            clock: Arc::new(SystemClock),
        }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::new()
    }
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBus")
            .field("partitions", &self.shared.partitions)
            .field("closed", &self.shared.closed.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

pub(super) fn entry_id(partition: usize, offset: u64) -> String {
    format!("p{partition}-{offset}")
}

pub(super) fn parse_entry(entry: &str) -> Option<(usize, u64)> {
    let (p, o) = entry.strip_prefix('p')?.split_once('-')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

#[async_trait]
impl EventBus for MemoryBus {
    fn capabilities(&self) -> BusCapabilities {
        BusCapabilities::all(self.shared.partitions)
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.shared.check_open()?;
        cqrs_core::bus::validate_publish(topic, &messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        let mut state = self.shared.lock();
        let t = self.shared.topic(&mut state, topic);
        for m in messages {
            let (key, priority) = (m.key.clone(), m.priority);
            t.push(&key, priority, Body::Message(m), self.shared.partitions);
        }
        drop(state);
        self.shared.notify.notify_waiters();
        Ok(())
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<Box<dyn Subscription>> {
        self.shared.check_open()?;
        spec.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| Error::backend("memory", e))?;
        let now = Instant::now();
        let (topic, group, consumer) = (
            spec.topic().to_owned(),
            spec.group().to_owned(),
            spec.consumer_name().to_owned(),
        );
        let inc = {
            let mut state = self.shared.lock();
            state.next_incarnation += 1;
            let inc = state.next_incarnation;
            let bypass = self.shared.bypass_limit;
            let t = self.shared.topic(&mut state, &topic);
            let g = t
                .groups
                .entry(group.clone())
                .or_insert_with(|| Group::new(&t.parts, spec.start(), bypass));
            if let Some(m) = g.members.get(&consumer) {
                if m.alive_until > now {
                    return Err(Error::AlreadyExists {
                        what: format!("consumer {consumer:?} in group {group:?} of topic {topic:?}"),
                    });
                }
                let old = m.incarnation;
                for gp in &mut g.parts {
                    gp.release_in_flight(old);
                    if gp.owner == Some(old) {
                        gp.owner = None;
                    }
                }
            }
            g.members.insert(
                consumer.clone(),
                Member {
                    incarnation: inc,
                    alive_until: now + spec.ack_timeout_value(),
                    ack_timeout: spec.ack_timeout_value(),
                },
            );
            inc
        };
        self.shared.notify.notify_waiters();

        let counters = Arc::new(Counters {
            breaker: spec
                .circuit_breaker_settings()
                .map(|s| Mutex::new(Breaker::new(s))),
            ..Counters::default()
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = Arc::new(Worker {
            shared: self.shared.clone(),
            spec,
            handler,
            inc,
            counters: counters.clone(),
            epoch: Instant::now(),
        });
        let mut workers = Vec::new();
        for _ in 0..worker.spec.concurrency_limit() {
            let (w, rx) = (worker.clone(), stop_rx.clone());
            workers.push(runtime.spawn(async move { w.run(rx).await }));
        }
        drop(stop_rx);
        // The heartbeat outlives the stop signal: it keeps the claims of handlers still
        // finishing during a graceful stop; `stop()` ends it once the workers are done.
        let heartbeat = {
            let w = worker.clone();
            runtime.spawn(async move {
                let every = (w.spec.ack_timeout_value() / 4).max(Duration::from_millis(1));
                loop {
                    tokio::time::sleep(every).await;
                    if !w
                        .shared
                        .heartbeat(w.spec.topic(), w.spec.group(), w.spec.consumer_name(), w.inc)
                    {
                        return;
                    }
                }
            })
        };
        Ok(Box::new(MemorySubscription {
            worker,
            counters,
            stop: stop_tx,
            tasks: Mutex::new(Some(Tasks { workers, heartbeat })),
            consumer,
        }))
    }

    async fn dead_letters(&self, topic: &str, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
        self.shared.check_open()?;
        let state = self.shared.lock();
        Ok(state
            .topics
            .get(topic)
            .and_then(|t| t.groups.get(group))
            .map(|g| g.dead.iter().take(max).cloned().collect())
            .unwrap_or_default())
    }

    async fn trim(&self, topic: &str) -> Result<u64> {
        self.shared.check_open()?;
        let mut state = self.shared.lock();
        let Some(t) = state.topics.get_mut(topic) else {
            return Ok(0);
        };
        if t.groups.is_empty() {
            return Ok(0);
        }
        let mut removed = 0u64;
        for (p, part) in t.parts.iter_mut().enumerate() {
            let floor = t
                .groups
                .values()
                .filter_map(|g| g.parts.get(p).map(|gp| gp.acked_below))
                .min()
                .unwrap_or(0);
            while part.entries.front().is_some_and(|e| e.offset < floor) {
                part.entries.pop_front();
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.notify.notify_waiters();
        Ok(())
    }
}
