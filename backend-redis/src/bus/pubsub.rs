//! [`RedisPubSubBus`]: an [`EventBus`] over Redis Pub/Sub, at most once.
//!
//! One RESP3 connection per bus (set up by the crate's `conn.rs`, so prefix, TLS and
//! timeouts are those of [`RedisStoreOptions`]) publishes and subscribes; Redis pushes the
//! messages of subscribed channels to a callback that routes them, without blocking, into
//! one in-process queue per consumer group. The consumers of a group (in this bus
//! instance) compete for that queue. A channel is subscribed while some subscription of this
//! bus listens to its topic and unsubscribed when the last one stops.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use cqrs_core::{
    bus::{
        Breaker, BreakerState, BusCapabilities, DeadLetter, Delivery, EventBus, HandlerError,
        HandlerErrorKind, Health, HealthStatus, LatencyWindow, Message, MessageHandler, MessageId, Priority,
        Subscription, SubscriptionMetrics, SubscriptionSpec,
    },
    ContentType, Error, Metadata, Result, Timestamp,
};
use futures::FutureExt;
use redis::{PushInfo, PushKind, Value};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use crate::{conn::Conn, RedisStoreOptions};

/// Tuning of a [`RedisPubSubBus`]. Setters take and return `Self`.
///
/// ```
/// use backend_redis::PubSubOptions;
/// let options = PubSubOptions::new().buffer(1_000);
/// assert_eq!(options.buffer_size(), 1_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubSubOptions {
    buffer: usize,
}

impl PubSubOptions {
    /// Default messages a group may hold received but not yet handled: 10 000.
    pub const DEFAULT_BUFFER: usize = 10_000;

    /// The defaults.
    pub fn new() -> Self {
        PubSubOptions {
            buffer: Self::DEFAULT_BUFFER,
        }
    }

    /// How many received messages a consumer group may hold before newer ones are dropped
    /// (at least 1). Redis itself disconnects a subscriber that does not read fast enough
    /// (`client-output-buffer-limit pubsub`), so this bus always reads and drops here
    /// instead, counting the drop in the group's subscriptions' `last_error`.
    #[must_use]
    pub fn buffer(mut self, messages: usize) -> Self {
        self.buffer = messages.max(1);
        self
    }

    /// The buffer size.
    pub fn buffer_size(&self) -> usize {
        self.buffer
    }
}

impl Default for PubSubOptions {
    fn default() -> Self {
        PubSubOptions::new()
    }
}

/// An [`EventBus`] over Redis Pub/Sub: at most once, for notifications and wake-ups.
///
/// Declares `BusCapabilities { partitions: 1, durable: false }` and nothing else:
/// - A message reaches only the subscriptions listening when Redis receives it; nothing is
///   stored, a new group never sees earlier messages, and a message in a consumer's memory
///   is lost if the process crashes or the connection drops (the connection re-subscribes
///   by itself after a reconnect, and `last_error` says the connection was lost).
/// - Consumer groups are local to one bus instance: the consumers of a group in this
///   instance share each message (one of them handles it), but two processes subscribing
///   with the same group name both get every message (Pub/Sub is a broadcast).
/// - A handler error is retried in process under the subscription's
///   [`RetryPolicy`](cqrs_core::bus::RetryPolicy), on the same consumer; once the policy gives
///   up, or for a permanent or undecodable error, the message is dropped (counted in
///   `failed`). There is no dead letter, no claim after a crash, no retention, no per-key
///   order guarantee beyond Redis delivering one connection's messages in order.
/// - A circuit breaker holds the message in hand while open (newer messages wait in the
///   group's buffer, see [`PubSubOptions::buffer`]).
///
/// On Redis Cluster (`redis+cluster://` URLs) classic Pub/Sub messages are broadcast to
/// every node, and redis-rs subscribes over its RESP3 cluster connection, so the bus works
/// there too.
///
/// ```no_run
/// # #[tokio::main(flavor = "multi_thread")] async fn main() -> cqrs_core::Result<()> {
/// use std::sync::Arc;
/// use backend_redis::{RedisPubSubBus, RedisStoreOptions};
/// use cqrs_core::{bus::{handler_fn, Delivery, EventBus, Message, SubscriptionSpec}, ContentType};
///
/// let bus = RedisPubSubBus::connect(RedisStoreOptions::from_env().prefix("shop")).await?;
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let handler = handler_fn(move |d: Delivery| {
///     let tx = tx.clone();
///     async move { let _ = tx.send(d.message.key); Ok(()) }
/// });
/// // Subscribe first: Pub/Sub delivers only to those listening.
/// let sub = bus.subscribe(SubscriptionSpec::new("cache", "invalidator"), Arc::new(handler)).await?;
/// bus.publish("cache", vec![Message::new("product-7", ContentType::Json, "{}")]).await?;
/// assert_eq!(rx.recv().await.as_deref(), Some("product-7"));
/// sub.stop().await?;
/// bus.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisPubSubBus {
    shared: Arc<Shared>,
}

struct Shared {
    conn: Conn,
    prefix: String,
    router: Arc<Router>,
    /// Channels subscribed at Redis. Changed only while this lock is held, together with
    /// the SUBSCRIBE or UNSUBSCRIBE, so the two never race.
    subscribed: tokio::sync::Mutex<HashSet<String>>,
    published: Mutex<HashMap<String, Arc<AtomicU64>>>,
    closed: AtomicBool,
    close_tx: watch::Sender<bool>,
    buffer: usize,
}

/// Routes pushed messages to group queues; shared with the push callback.
#[derive(Default)]
struct Router {
    channels: Mutex<HashMap<Vec<u8>, Channel>>,
    received: AtomicU64,
    closed: AtomicBool,
}

struct Channel {
    groups: HashMap<String, Arc<GroupQueue>>,
}

struct Incoming {
    message: std::result::Result<Message, String>,
    entry: String,
}

struct GroupQueue {
    state: Mutex<GroupState>,
    notify: tokio::sync::Notify,
    capacity: usize,
}

#[derive(Default)]
struct GroupState {
    queue: VecDeque<Incoming>,
    consumers: HashMap<String, Arc<Counters>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupQueue {
    fn push(&self, incoming: Incoming) {
        let mut state = lock(&self.state);
        if state.queue.len() >= self.capacity {
            let note = format!(
                "buffer of {} messages full: dropped message {}",
                self.capacity, incoming.entry
            );
            for c in state.consumers.values() {
                c.note_error(note.clone());
            }
            return;
        }
        state.queue.push_back(incoming);
        drop(state);
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<Incoming> {
        let mut state = lock(&self.state);
        let next = state.queue.pop_front();
        if next.is_some() && !state.queue.is_empty() {
            // Another worker may be idle: hand it the rest.
            self.notify.notify_one();
        }
        next
    }

    fn len(&self) -> usize {
        lock(&self.state).queue.len()
    }
}

impl Router {
    /// The push callback: must not block (it runs on the connection's reader).
    fn on_push(&self, info: PushInfo) {
        match info.kind {
            PushKind::Message => {
                let mut data = info.data.into_iter();
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                    return;
                };
                let (Some(channel), Some(payload)) = (bulk(channel), bulk(payload)) else {
                    return;
                };
                self.route(&channel, &payload);
            }
            PushKind::Disconnection => {
                let channels = lock(&self.channels);
                for group in channels.values().flat_map(|c| c.groups.values()) {
                    for c in lock(&group.state).consumers.values() {
                        c.note_error(
                            "the Pub/Sub connection was lost: messages published until it \
                             re-subscribed are lost"
                                .to_owned(),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn route(&self, channel: &[u8], payload: &[u8]) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let groups: Vec<Arc<GroupQueue>> = match lock(&self.channels).get(channel) {
            Some(c) => c.groups.values().cloned().collect(),
            None => return,
        };
        if groups.is_empty() {
            return;
        }
        let n = self.received.fetch_add(1, Ordering::SeqCst) + 1;
        let decoded = decode_batch(payload);
        for group in &groups {
            match &decoded {
                Ok(messages) => {
                    for (i, m) in messages.iter().enumerate() {
                        group.push(Incoming {
                            message: Ok(m.clone()),
                            entry: format!("ps-{n}-{i}"),
                        });
                    }
                }
                Err(e) => group.push(Incoming {
                    message: Err(e.clone()),
                    entry: format!("ps-{n}"),
                }),
            }
        }
    }
}

fn bulk(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

impl RedisPubSubBus {
    /// Connects with the default [`PubSubOptions`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad options, [`Error::Unavailable`] when Redis cannot be
    /// reached.
    pub async fn connect(options: RedisStoreOptions) -> Result<Self> {
        RedisPubSubBus::connect_with(options, PubSubOptions::default()).await
    }

    /// Connects with `pubsub` tuning. Channels are named `<prefix>:pubsub:<topic>`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad options, [`Error::Unavailable`] when Redis cannot be
    /// reached.
    pub async fn connect_with(options: RedisStoreOptions, pubsub: PubSubOptions) -> Result<Self> {
        options.validate()?;
        let router = Arc::new(Router::default());
        let push_router = router.clone();
        let conn = Conn::connect_with_push(&options, move |info: PushInfo| {
            push_router.on_push(info);
            Ok::<(), std::convert::Infallible>(())
        })
        .await?;
        let (close_tx, _) = watch::channel(false);
        Ok(RedisPubSubBus {
            shared: Arc::new(Shared {
                conn,
                prefix: options.prefix.clone(),
                router,
                subscribed: tokio::sync::Mutex::new(HashSet::new()),
                published: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                close_tx,
                buffer: pubsub.buffer,
            }),
        })
    }
}

impl Shared {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}:pubsub:{topic}", self.prefix)
    }

    fn published(&self, topic: &str) -> Arc<AtomicU64> {
        lock(&self.published).entry(topic.to_owned()).or_default().clone()
    }

    /// Takes `consumer` out of its group (the group goes when empty, its buffered messages
    /// with it); returns whether the channel has no listener left.
    fn deregister(&self, channel: &str, group: &str, consumer: &str) -> bool {
        let mut channels = lock(&self.router.channels);
        let Some(c) = channels.get_mut(channel.as_bytes()) else {
            return true;
        };
        if let Some(g) = c.groups.get(group) {
            let empty = {
                let mut state = lock(&g.state);
                state.consumers.remove(consumer);
                state.consumers.is_empty()
            };
            if empty {
                c.groups.remove(group);
            }
        }
        if c.groups.is_empty() {
            channels.remove(channel.as_bytes());
            return true;
        }
        false
    }

    /// Unsubscribes `channel` at Redis if nothing listens to it any more.
    async fn release_channel(&self, channel: &str) -> Result<()> {
        let mut subscribed = self.subscribed.lock().await;
        let listened = lock(&self.router.channels).contains_key(channel.as_bytes());
        if !listened && subscribed.remove(channel) {
            self.conn.unsubscribe(channel).await?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedisPubSubBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPubSubBus")
            .field("prefix", &self.shared.prefix)
            .field("cluster", &self.shared.conn.is_cluster())
            .field("closed", &self.shared.closed.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventBus for RedisPubSubBus {
    fn capabilities(&self) -> BusCapabilities {
        BusCapabilities {
            partitions: 1,
            durable: false,
            ..BusCapabilities::default()
        }
    }

    /// Publishes the batch as ONE Pub/Sub message, so it reaches a subscriber whole and in
    /// order or not at all.
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.shared.check_open()?;
        cqrs_core::bus::validate_publish(topic, &messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        let frame = encode_batch(&messages)?;
        let count = u64::try_from(messages.len()).unwrap_or(u64::MAX);
        self.shared
            .conn
            .run(redis::cmd("PUBLISH").arg(self.shared.channel(topic)).arg(frame))
            .await?;
        self.shared.published(topic).fetch_add(count, Ordering::SeqCst);
        Ok(())
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<Box<dyn Subscription>> {
        self.shared.check_open()?;
        spec.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| Error::backend("redis", e))?;
        let shared = &self.shared;
        let channel = shared.channel(spec.topic());
        let counters = Arc::new(Counters {
            breaker: spec
                .circuit_breaker_settings()
                .map(|s| Mutex::new(Breaker::new(s))),
            ..Counters::default()
        });
        let group = {
            let mut subscribed = shared.subscribed.lock().await;
            // Registered before SUBSCRIBE: whatever Redis pushes once it confirmed is routed.
            let group = {
                let mut channels = lock(&shared.router.channels);
                let c = channels
                    .entry(channel.clone().into_bytes())
                    .or_insert_with(|| Channel {
                        groups: HashMap::new(),
                    });
                let g = c
                    .groups
                    .entry(spec.group().to_owned())
                    .or_insert_with(|| {
                        Arc::new(GroupQueue {
                            state: Mutex::new(GroupState::default()),
                            notify: tokio::sync::Notify::new(),
                            capacity: shared.buffer,
                        })
                    })
                    .clone();
                let mut state = lock(&g.state);
                if state.consumers.contains_key(spec.consumer_name()) {
                    return Err(Error::AlreadyExists {
                        what: format!(
                            "consumer {:?} in group {:?} of topic {:?}",
                            spec.consumer_name(),
                            spec.group(),
                            spec.topic()
                        ),
                    });
                }
                state
                    .consumers
                    .insert(spec.consumer_name().to_owned(), counters.clone());
                drop(state);
                g
            };
            if !subscribed.contains(&channel) {
                if let Err(e) = shared.conn.subscribe(&channel).await {
                    shared.deregister(&channel, spec.group(), spec.consumer_name());
                    return Err(e);
                }
                subscribed.insert(channel.clone());
            }
            group
        };

        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = Arc::new(Worker {
            shared: shared.clone(),
            published: shared.published(spec.topic()),
            spec,
            handler,
            group,
            counters: counters.clone(),
            epoch: Instant::now(),
        });
        let workers = (0..worker.spec.concurrency_limit())
            .map(|_| {
                let (w, stop, closed) = (worker.clone(), stop_rx.clone(), shared.close_tx.subscribe());
                runtime.spawn(async move { w.run(stop, closed).await })
            })
            .collect();
        Ok(Box::new(PubSubSubscription {
            worker,
            channel,
            stop: stop_tx,
            workers: Mutex::new(Some(workers)),
        }))
    }

    async fn dead_letters(&self, _topic: &str, _group: &str, _max: usize) -> Result<Vec<DeadLetter>> {
        Err(Error::Unsupported {
            capability: "dead letters on the Redis Pub/Sub bus (at most once: a failed message is dropped)",
        })
    }

    async fn trim(&self, _topic: &str) -> Result<u64> {
        Err(Error::Unsupported {
            capability: "trim on the Redis Pub/Sub bus (nothing is retained)",
        })
    }

    async fn close(&self) -> Result<()> {
        let shared = &self.shared;
        shared.closed.store(true, Ordering::SeqCst);
        shared.router.closed.store(true, Ordering::SeqCst);
        shared.close_tx.send_replace(true);
        let mut subscribed = shared.subscribed.lock().await;
        let channels: Vec<String> = subscribed.drain().collect();
        for channel in channels {
            shared.conn.unsubscribe(&channel).await?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Counters {
    handled: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    in_flight: AtomicU64,
    latency: Mutex<LatencyWindow>,
    last_error: Mutex<Option<String>>,
    stopping: AtomicBool,
    stopped: AtomicBool,
    breaker: Option<Mutex<Breaker>>,
}

impl Counters {
    fn note_error(&self, error: String) {
        *lock(&self.last_error) = Some(error);
    }
}

struct Worker {
    shared: Arc<Shared>,
    published: Arc<AtomicU64>,
    spec: SubscriptionSpec,
    handler: Arc<dyn MessageHandler>,
    group: Arc<GroupQueue>,
    counters: Arc<Counters>,
    epoch: Instant,
}

/// Why a worker stopped waiting.
enum Wake {
    Ready,
    Stop,
}

impl Worker {
    fn now_ts(&self) -> Timestamp {
        Timestamp::from_millis(i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX))
    }

    /// The time rounded up to the next millisecond: a breaker opened "now" then stays open
    /// at least its full `open_for` (rounded down it could let a trial through up to 1 ms
    /// early, since `try_acquire` compares with the rounded-down time).
    fn now_ts_ceil(&self) -> Timestamp {
        let ms = self.epoch.elapsed().as_micros().div_ceil(1000);
        Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    fn breaker(&self) -> Option<MutexGuard<'_, Breaker>> {
        self.counters.breaker.as_ref().map(lock)
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>, mut closed: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() || *closed.borrow() {
                break;
            }
            let Some(incoming) = self.group.pop() else {
                tokio::select! {
                    () = self.group.notify.notified() => {}
                    _ = stop.changed() => {}
                    _ = closed.changed() => {}
                }
                continue;
            };
            self.handle(incoming, &mut stop).await;
        }
        if *closed.borrow() {
            self.counters.stopped.store(true, Ordering::SeqCst);
        }
    }

    /// Waits `wait`, or less if the subscription stops.
    async fn pause(wait: Duration, stop: &mut watch::Receiver<bool>) -> Wake {
        if *stop.borrow() {
            return Wake::Stop;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => Wake::Ready,
            _ = stop.changed() => Wake::Stop,
        }
    }

    async fn handle(&self, incoming: Incoming, stop: &mut watch::Receiver<bool>) {
        let c = &self.counters;
        let message = match incoming.message {
            Ok(m) => m,
            Err(e) => {
                c.failed.fetch_add(1, Ordering::SeqCst);
                c.note_error(format!("undecodable Pub/Sub message dropped: {e}"));
                return;
            }
        };
        let mut delivery = Delivery {
            message,
            topic: self.spec.topic().to_owned(),
            group: self.spec.group().to_owned(),
            consumer: self.spec.consumer_name().to_owned(),
            partition: 0,
            entry: incoming.entry,
            attempt: 1,
        };
        let first = Instant::now();
        loop {
            // While the breaker is open the message stays in hand (not handled, not lost
            // unless the subscription stops meanwhile).
            let wait = self
                .breaker()
                .and_then(|mut b| b.try_acquire(self.now_ts()).err());
            if let Some(wait) = wait {
                if let Wake::Stop = Self::pause(wait, stop).await {
                    return;
                }
                continue;
            }
            c.in_flight.fetch_add(1, Ordering::SeqCst);
            let started = Instant::now();
            let result = AssertUnwindSafe(self.handler.handle(&delivery))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(HandlerError::retryable("handler panicked")));
            lock(&c.latency).record(started.elapsed());
            c.in_flight.fetch_sub(1, Ordering::SeqCst);
            let e = match result {
                Ok(()) => {
                    if let Some(mut b) = self.breaker() {
                        b.on_success();
                    }
                    c.handled.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Err(e) => e,
            };
            c.failed.fetch_add(1, Ordering::SeqCst);
            c.note_error(e.to_string());
            if e.kind() != HandlerErrorKind::Undecodable {
                let now = self.now_ts_ceil();
                if let Some(mut b) = self.breaker() {
                    b.on_failure(now);
                }
            }
            if e.kind() != HandlerErrorKind::Retryable {
                return;
            }
            let Some(wait) = self
                .spec
                .retry_policy()
                .next_delay(delivery.attempt, first.elapsed())
            else {
                return;
            };
            c.retried.fetch_add(1, Ordering::SeqCst);
            if let Wake::Stop = Self::pause(wait, stop).await {
                return;
            }
            delivery.attempt = delivery.attempt.saturating_add(1);
        }
    }
}

/// A subscription of a [`RedisPubSubBus`].
struct PubSubSubscription {
    worker: Arc<Worker>,
    channel: String,
    stop: watch::Sender<bool>,
    workers: Mutex<Option<Vec<JoinHandle<()>>>>,
}

impl PubSubSubscription {
    fn take_workers(&self) -> Option<Vec<JoinHandle<()>>> {
        lock(&self.workers).take()
    }
}

impl fmt::Debug for PubSubSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSubSubscription")
            .field("topic", &self.worker.spec.topic())
            .field("group", &self.worker.spec.group())
            .field("consumer", &self.worker.spec.consumer_name())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Subscription for PubSubSubscription {
    fn consumer(&self) -> &str {
        self.worker.spec.consumer_name()
    }

    /// `published` counts what this bus instance published to the topic; `lag` is what the
    /// group received and has not started handling; `dead_lettered` is always 0.
    fn metrics(&self) -> SubscriptionMetrics {
        let c = &self.worker.counters;
        SubscriptionMetrics {
            published: self.worker.published.load(Ordering::SeqCst),
            handled: c.handled.load(Ordering::SeqCst),
            failed: c.failed.load(Ordering::SeqCst),
            retried: c.retried.load(Ordering::SeqCst),
            dead_lettered: 0,
            in_flight: c.in_flight.load(Ordering::SeqCst),
            lag: u64::try_from(self.worker.group.len()).unwrap_or(u64::MAX),
            latency: lock(&c.latency).percentiles(),
        }
    }

    fn health(&self) -> Health {
        let c = &self.worker.counters;
        let status = if c.stopped.load(Ordering::SeqCst) {
            HealthStatus::Stopped
        } else if c.stopping.load(Ordering::SeqCst) {
            HealthStatus::Stopping
        } else {
            HealthStatus::Running
        };
        let now = self.worker.now_ts();
        Health {
            status,
            breaker: self
                .worker
                .breaker()
                .map_or(BreakerState::Closed, |b| b.state(now)),
            // The one partition is shared by the group's consumers while they run.
            owned_partitions: if status == HealthStatus::Running {
                vec![0]
            } else {
                Vec::new()
            },
            last_error: lock(&c.last_error).clone(),
        }
    }

    /// Stops taking messages, lets in-flight handler calls finish (up to the ack timeout,
    /// then drops them), and unsubscribes the channel if nothing else of this bus listens.
    /// A message waiting for a retry or a half-open breaker is dropped; messages buffered
    /// for the group stay for its other consumers, or are dropped with the last one.
    async fn stop(self: Box<Self>) -> Result<()> {
        let w = &self.worker;
        w.counters.stopping.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
        if let Some(mut workers) = self.take_workers() {
            let grace = w.spec.ack_timeout_value();
            let all = futures::future::join_all(workers.iter_mut());
            if tokio::time::timeout(grace, all).await.is_err() {
                for t in &workers {
                    t.abort();
                }
            }
        }
        w.shared
            .deregister(&self.channel, w.spec.group(), w.spec.consumer_name());
        let released = w.shared.release_channel(&self.channel).await;
        w.counters.stopped.store(true, Ordering::SeqCst);
        released
    }

    fn abort(self: Box<Self>) {
        // Drop does it.
    }
}

impl Drop for PubSubSubscription {
    fn drop(&mut self) {
        let Some(workers) = self.take_workers() else {
            return;
        };
        for t in workers {
            t.abort();
        }
        let w = &self.worker;
        w.counters.stopped.store(true, Ordering::SeqCst);
        if w.shared
            .deregister(&self.channel, w.spec.group(), w.spec.consumer_name())
        {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (shared, channel) = (w.shared.clone(), self.channel.clone());
                runtime.spawn(async move {
                    if let Err(e) = shared.release_channel(&channel).await {
                        tracing::warn!(%channel, error = %e, "could not unsubscribe an aborted subscription's channel");
                    }
                });
            }
        }
    }
}

// The wire format of one published batch (binary, since payloads are arbitrary bytes):
// `PS1`, u32 BE count, then per message: u32 BE length and the message. A message: the
// 16-byte id, priority rank (u8), content type (u8), u16 BE key length, key, u32 BE
// metadata length, metadata JSON (empty when none), payload (the rest).
const MAGIC: &[u8] = b"PS1";

fn content_code(ct: ContentType) -> u8 {
    match ct {
        ContentType::Json => 0,
        ContentType::Bson => 1,
        ContentType::Opaque => 2,
    }
}

fn encode_batch(messages: &[Message]) -> Result<Vec<u8>> {
    let too_big = |what: &str| Error::invalid(format!("message {what} is too large for one Pub/Sub message"));
    let mut out = Vec::with_capacity(64 * messages.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(
        &u32::try_from(messages.len())
            .map_err(|_| too_big("batch"))?
            .to_be_bytes(),
    );
    for m in messages {
        let meta = if m.headers.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&m.headers).map_err(|e| Error::invalid(format!("message headers: {e}")))?
        };
        let key = m.key.as_bytes();
        let len = 16 + 2 + 2 + key.len() + 4 + meta.len() + m.payload.len();
        out.extend_from_slice(&u32::try_from(len).map_err(|_| too_big("size"))?.to_be_bytes());
        out.extend_from_slice(m.id.as_uuid().as_bytes());
        out.push(u8::try_from(m.priority.rank()).unwrap_or(2));
        out.push(content_code(m.content_type));
        out.extend_from_slice(
            &u16::try_from(key.len())
                .map_err(|_| too_big("key"))?
                .to_be_bytes(),
        );
        out.extend_from_slice(key);
        out.extend_from_slice(
            &u32::try_from(meta.len())
                .map_err(|_| too_big("headers"))?
                .to_be_bytes(),
        );
        out.extend_from_slice(&meta);
        out.extend_from_slice(&m.payload);
    }
    Ok(out)
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
    if b.len() < n {
        return Err("truncated".to_owned());
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn take_u32(b: &mut &[u8]) -> std::result::Result<usize, String> {
    let raw = take(b, 4)?;
    let n = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
    usize::try_from(n).map_err(|_| "length overflow".to_owned())
}

fn decode_batch(mut b: &[u8]) -> std::result::Result<Vec<Message>, String> {
    if take(&mut b, MAGIC.len())? != MAGIC {
        return Err("not a message batch of this bus".to_owned());
    }
    let count = take_u32(&mut b)?;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = take_u32(&mut b)?;
        out.push(decode_message(take(&mut b, len)?)?);
    }
    if !b.is_empty() {
        return Err("trailing bytes".to_owned());
    }
    Ok(out)
}

fn decode_message(mut b: &[u8]) -> std::result::Result<Message, String> {
    let id = uuid::Uuid::from_slice(take(&mut b, 16)?).map_err(|e| e.to_string())?;
    let head = take(&mut b, 2)?;
    let priority = *Priority::ALL
        .get(usize::from(head[0]))
        .ok_or_else(|| format!("priority rank {}", head[0]))?;
    let content_type = match head[1] {
        0 => ContentType::Json,
        1 => ContentType::Bson,
        2 => ContentType::Opaque,
        other => return Err(format!("content type code {other}")),
    };
    let raw = take(&mut b, 2)?;
    let key_len = usize::from(u16::from_be_bytes([raw[0], raw[1]]));
    let key = std::str::from_utf8(take(&mut b, key_len)?)
        .map_err(|_| "key is not UTF-8".to_owned())?
        .to_owned();
    let meta_len = take_u32(&mut b)?;
    let meta = take(&mut b, meta_len)?;
    let headers = if meta.is_empty() {
        Metadata::default()
    } else {
        serde_json::from_slice(meta).map_err(|e| format!("headers: {e}"))?
    };
    Ok(Message {
        id: MessageId::from_uuid(id),
        key,
        priority,
        headers,
        content_type,
        payload: Bytes::copy_from_slice(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip() {
        let a = Message::new("k-ü", ContentType::Opaque, vec![0u8, 255, 7])
            .with_priority(Priority::Critical)
            .with_correlation_id("c")
            .with_header("n", "1");
        let b = Message::new("k2", ContentType::Json, "{}");
        let frame = encode_batch(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(decode_batch(&frame).unwrap(), vec![a, b]);
        assert!(decode_batch(&frame[..frame.len() - 1]).is_err());
        assert!(decode_batch(b"XX").is_err());
    }
}
