//! The relay: feeds an [`EventBus`] topic from the event store's store-wide log, so an
//! appended event reaches the bus without a dual write.
//!
//! An application appends events and nothing else; the relay reads
//! [`EventStore::read_all`] from its own checkpoint, publishes each batch, and only then saves
//! the checkpoint (fenced by its lease epoch). A process that dies between the publish and
//! the checkpoint publishes that batch again when it (or another instance) resumes: delivery
//! is at least once, and every message carries its event's id as [`Message::id`] so handlers
//! de-duplicate.
//!
//! Several instances of one relay may run: the one holding the [`CheckpointStore`] lease
//! publishes, the others stand by. The leader publishes only inside the time its lease is
//! known to be valid (measured from when it asked for the lease, minus a tenth for clock-rate
//! drift), and gives up a publish that would outlive it, so a paused former leader never
//! publishes while its successor does. The one gap: a publish the transport already sent
//! when the relay gave up on it may still land; the id makes it a harmless duplicate.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use backend_memory::{MemoryBackend, MemoryBus};
//! use cqrs_core::{bus::{handler_fn, Delivery, EventBus, SubscriptionSpec}, EventData, ExpectedVersion, StreamId};
//! use cqrs_runtime::{Relay, RelayOptions, RunnerState};
//!
//! let stores = MemoryBackend::new().stores();
//! let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
//! let relay = Relay::new(&stores, bus.clone(), RelayOptions::new("orders-relay", "orders")).start();
//!
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let handler = handler_fn(move |d: Delivery| {
//!     let tx = tx.clone();
//!     async move { let _ = tx.send(d.message.headers.extra["event-type"].clone()); Ok(()) }
//! });
//! let sub = bus.subscribe(SubscriptionSpec::new("orders", "mailer"), Arc::new(handler)).await?;
//!
//! let order: StreamId = "order-1".parse()?;
//! let placed = EventData::json("OrderPlaced", &serde_json::json!({"total": 42}))?;
//! stores.events.append(&order, ExpectedVersion::NoStream, vec![placed]).await?;
//! assert_eq!(rx.recv().await.as_deref(), Some("OrderPlaced"));
//!
//! relay.wait_until(|s| s.published == 1 && s.state == RunnerState::Running, Duration::from_secs(5)).await?;
//! sub.stop().await?;
//! relay.stop().await?;
//! # Ok(()) }
//! ```

use std::{fmt, sync::Arc, time::Duration};

use cqrs_core::{
    bus::{headers, EventBus, Message, MessageId, Priority},
    Checkpoint, CheckpointStore, Clock, Error, EventFilter, EventStore, Lease, RecordedEvent, Stores,
    SystemClock,
};
use tokio::{sync::watch, time::Instant};

use crate::{
    task::{pause, Handle},
    RunnerState,
};

/// The message the relay publishes for `event`: its id is the event id (handlers
/// de-duplicate on it), its key the stream id (so a stream's events keep their order on
/// transports that order per key), its payload the stored bytes. The event's metadata
/// carries over as it was stored (read it back with [`Delivery::metadata`]), beside the
/// relay's own [`headers`].
///
/// [`Delivery::metadata`]: cqrs_core::bus::Delivery::metadata
pub fn event_message(event: &RecordedEvent, priority: Priority) -> Message {
    let data = &event.data;
    let mut m = Message::new(event.stream_id.as_str(), data.content_type, data.payload.clone())
        .with_id(MessageId::from_uuid(*data.event_id.as_uuid()))
        .with_priority(priority);
    m.headers = data.metadata.clone();
    let extra = &mut m.headers.extra;
    extra.insert(headers::EVENT_TYPE.into(), data.event_type.clone());
    extra.insert(headers::SCHEMA_VERSION.into(), data.schema_version.to_string());
    extra.insert(headers::STREAM_VERSION.into(), event.version.to_string());
    extra.insert(
        headers::RECORDED_AT.into(),
        event.recorded_at.as_millis().to_string(),
    );
    if data.content_encoding != cqrs_core::ContentEncoding::Identity {
        extra.insert(
            headers::CONTENT_ENCODING.into(),
            data.content_encoding.as_str().into(),
        );
    }
    m
}

/// How a relay works: a typed builder (setters take and return `Self`).
#[derive(Debug, Clone)]
pub struct RelayOptions {
    name: String,
    topic: String,
    owner: String,
    lease_ttl: Duration,
    batch_size: usize,
    idle_poll: Duration,
    filter: EventFilter,
    priority: Priority,
    clock: Arc<dyn Clock>,
}

impl RelayOptions {
    /// Relay `name` (its checkpoint and lease name) publishing to `topic`; a unique owner
    /// name, a 10 s lease, batches of 500, a 100 ms idle poll, every event, normal priority.
    pub fn new(name: impl Into<String>, topic: impl Into<String>) -> Self {
        RelayOptions {
            name: name.into(),
            topic: topic.into(),
            owner: format!("relay-{}", uuid::Uuid::now_v7()),
            lease_ttl: Duration::from_secs(10),
            batch_size: 500,
            idle_poll: Duration::from_millis(100),
            filter: EventFilter::all(),
            priority: Priority::Normal,
            clock: Arc::new(SystemClock),
        }
    }

    /// The lease owner name (unique per instance).
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// How long the lease lasts unless renewed. A publish must finish within it: the relay
    /// renews before each batch and gives up a publish that would outlive the lease.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Events read and published per batch (at least 1).
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// The pause between reads once caught up, between lease attempts in standby, and after
    /// a transport error.
    #[must_use]
    pub fn idle_poll(mut self, d: Duration) -> Self {
        self.idle_poll = d;
        self
    }

    /// Relays only the events `filter` matches (the checkpoint still moves past the others).
    #[must_use]
    pub fn filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The priority of every relayed message.
    #[must_use]
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// The clock lag is measured with.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// What a relay reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayStatus {
    /// [`RunnerState::Standby`] without the lease, [`RunnerState::CatchingUp`] or
    /// [`RunnerState::Running`] with it, [`RunnerState::Faulted`] after a publish the bus
    /// refused as invalid, [`RunnerState::Stopped`].
    pub state: RunnerState,
    /// Messages published (re-publications after a restart included).
    pub published: u64,
    /// Checkpoints saved.
    pub commits: u64,
    /// Errors seen (transport, store, lost leases).
    pub errors: u64,
    /// The last saved checkpoint.
    pub checkpoint: Checkpoint,
    /// Milliseconds between the last published event's `recorded_at` and its checkpoint.
    pub lag_ms: u64,
    /// The epoch of the lease held, if any.
    pub lease_epoch: Option<u64>,
    /// The last error, as text.
    pub last_error: Option<String>,
}

impl RelayStatus {
    fn new() -> Self {
        RelayStatus {
            state: RunnerState::Stopped,
            published: 0,
            commits: 0,
            errors: 0,
            checkpoint: Checkpoint::origin(),
            lag_ms: 0,
            lease_epoch: None,
            last_error: None,
        }
    }
}

/// Feeds one bus topic from one event store. See the [module docs](self).
pub struct Relay {
    events: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    bus: Arc<dyn EventBus>,
    options: RelayOptions,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay from `stores` (its event store and checkpoint store) to `bus`.
    pub fn new(stores: &Stores, bus: Arc<dyn EventBus>, options: RelayOptions) -> Self {
        Relay {
            events: stores.events.clone(),
            checkpoints: stores.checkpoints.clone(),
            bus,
            options,
        }
    }

    /// Starts the relay on the current tokio runtime: it takes the lease (or stands by until
    /// it can), then publishes from its checkpoint and follows the log.
    pub fn start(self) -> RelayHandle {
        let name = self.options.name.clone();
        Handle::spawn("relay", name, RelayStatus::new(), move |status, stop| {
            RelayWorker {
                relay: self,
                status,
                stop,
            }
            .run()
        })
    }
}

/// A started relay: watch it, wait on it, stop it, or [`Handle::abort`] it as a crash would.
pub type RelayHandle = Handle<RelayStatus>;

/// Why the leading loop gave up its lease.
enum Exit {
    Stop,
    LeaseLost,
    Faulted,
}

struct RelayWorker {
    relay: Relay,
    status: watch::Sender<RelayStatus>,
    stop: watch::Receiver<bool>,
}

/// A lease and the instant until which it is known to be ours.
struct Held {
    lease: Lease,
    valid_until: Instant,
}

impl RelayWorker {
    fn name(&self) -> &str {
        &self.relay.options.name
    }

    fn set(&self, f: impl FnOnce(&mut RelayStatus)) {
        self.status.send_modify(f);
    }

    fn note_error(&self, e: &dyn fmt::Display) {
        let text = e.to_string();
        tracing::warn!(relay = %self.name(), error = %text, "relay error");
        metrics::counter!("cqrs_relay_errors_total", "relay" => self.name().to_owned()).increment(1);
        self.set(|s| {
            s.errors += 1;
            s.last_error = Some(text);
        });
    }

    /// Sleeps `d` unless a stop is requested first; returns true when stopping.
    async fn pause(&mut self, d: Duration) -> bool {
        pause(&mut self.stop, d).await
    }

    /// The instant a lease asked for at `asked` stops being ours for certain: the store
    /// started its TTL after `asked`; a tenth of it is kept back for clock-rate drift.
    fn valid_until(&self, asked: Instant) -> Instant {
        let ttl = self.relay.options.lease_ttl;
        asked + ttl - ttl / 10
    }

    async fn run(mut self) {
        loop {
            let Some(held) = self.acquire().await else { break };
            self.set(|s| s.lease_epoch = Some(held.lease.epoch));
            let exit = self.lead(held).await;
            self.set(|s| s.lease_epoch = None);
            match exit {
                Exit::Stop => break,
                Exit::Faulted => {
                    self.set(|s| s.state = RunnerState::Faulted);
                    return;
                }
                Exit::LeaseLost => {
                    let idle = self.relay.options.idle_poll;
                    if self.pause(idle).await {
                        break;
                    }
                }
            }
        }
        self.set(|s| s.state = RunnerState::Stopped);
    }

    /// Takes the lease, standing by while another instance holds it; `None` when stopping.
    async fn acquire(&mut self) -> Option<Held> {
        let o = &self.relay.options;
        let (name, owner, ttl, idle) = (o.name.clone(), o.owner.clone(), o.lease_ttl, o.idle_poll);
        loop {
            if *self.stop.borrow() {
                return None;
            }
            let asked = Instant::now();
            match self.relay.checkpoints.acquire(&name, &owner, ttl).await {
                Ok(lease) => {
                    return Some(Held {
                        lease,
                        valid_until: self.valid_until(asked),
                    })
                }
                Err(Error::LeaseHeld { .. }) => self.set(|s| s.state = RunnerState::Standby),
                Err(e) => self.note_error(&e),
            }
            if self.pause(idle).await {
                return None;
            }
        }
    }

    /// Renews the lease; `false` when it is lost.
    async fn renew(&mut self, held: &mut Held) -> bool {
        let asked = Instant::now();
        match self
            .relay
            .checkpoints
            .renew(&held.lease, self.relay.options.lease_ttl)
            .await
        {
            Ok(lease) => {
                held.lease = lease;
                held.valid_until = self.valid_until(asked);
                true
            }
            Err(e) => {
                self.note_error(&e);
                false
            }
        }
    }

    async fn lead(&mut self, mut held: Held) -> Exit {
        let mut cp = match self.relay.checkpoints.load(self.name()).await {
            Ok(cp) => cp.unwrap_or_default(),
            Err(e) => {
                self.note_error(&e);
                return self.release(&held.lease, Exit::LeaseLost).await;
            }
        };
        self.set(|s| s.checkpoint = cp.clone());
        let ttl = self.relay.options.lease_ttl;
        loop {
            if *self.stop.borrow() {
                return self.release(&held.lease, Exit::Stop).await;
            }
            // Renew whenever less than two thirds of the lease is left, so a batch always
            // starts with most of a lease ahead of it.
            if held.valid_until.saturating_duration_since(Instant::now()) < ttl * 2 / 3
                && !self.renew(&mut held).await
            {
                return Exit::LeaseLost;
            }
            match self.step(&held, &mut cp).await {
                Ok(true) => {
                    if self.pause(self.relay.options.idle_poll).await {
                        return self.release(&held.lease, Exit::Stop).await;
                    }
                }
                Ok(false) => {}
                Err(Exit::Faulted) => return self.release(&held.lease, Exit::Faulted).await,
                Err(Exit::LeaseLost) => return self.release(&held.lease, Exit::LeaseLost).await,
                Err(Exit::Stop) => return self.release(&held.lease, Exit::Stop).await,
            }
        }
    }

    /// Reads, publishes and checkpoints one batch. `Ok(true)` when caught up or after a
    /// transient error (pause, then try again).
    async fn step(&mut self, held: &Held, cp: &mut Checkpoint) -> std::result::Result<bool, Exit> {
        let o = &self.relay.options;
        let batch = match self.relay.events.read_all(cp, o.batch_size, &o.filter).await {
            Ok(b) => b,
            Err(e) => {
                self.note_error(&e);
                if matches!(e, Error::CheckpointMismatch { .. } | Error::DataLoss { .. }) {
                    return Err(Exit::Faulted);
                }
                return Ok(true);
            }
        };
        crate::task::report_quarantined("relay", self.name(), &batch);
        let messages: Vec<Message> = batch
            .events
            .iter()
            .map(|e| event_message(e, self.relay.options.priority))
            .collect();
        let count = messages.len() as u64;
        let last_recorded = batch.events.last().map(|e| e.recorded_at);
        if !messages.is_empty() {
            // Publish only inside the lease: a publish still running when the lease may
            // have passed to another instance is given up, and so is the lead.
            let Some(left) = held.valid_until.checked_duration_since(Instant::now()) else {
                return Err(Exit::LeaseLost);
            };
            let topic = self.relay.options.topic.clone();
            match tokio::time::timeout(left, self.relay.bus.publish(&topic, messages)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.note_error(&e);
                    // An invalid message or a closed bus will not get better by retrying.
                    return match e {
                        Error::InvalidInput { .. } | Error::TooLarge { .. } | Error::Closed => {
                            Err(Exit::Faulted)
                        }
                        _ => Ok(true),
                    };
                }
                Err(_) => {
                    self.note_error(&format!(
                        "publish to {topic} did not finish within the lease ({left:?}); giving the lease up"
                    ));
                    return Err(Exit::LeaseLost);
                }
            }
            self.set(|s| s.published += count);
            metrics::counter!("cqrs_relay_published_total", "relay" => self.name().to_owned())
                .increment(count);
        }
        if batch.next != *cp {
            if let Err(e) = self
                .relay
                .checkpoints
                .save(self.name(), &batch.next, held.lease.epoch)
                .await
            {
                self.note_error(&e);
                return Err(Exit::LeaseLost);
            }
            *cp = batch.next;
            let lag = last_recorded.map(|t| self.relay.options.clock.now().millis_since(t));
            if let Some(lag) = lag {
                metrics::gauge!("cqrs_relay_lag_ms", "relay" => self.name().to_owned()).set(lag as f64);
            }
            self.set(|s| {
                s.commits += 1;
                s.checkpoint = cp.clone();
                if let Some(lag) = lag {
                    s.lag_ms = lag;
                }
            });
        }
        let state = if batch.caught_up {
            RunnerState::Running
        } else {
            RunnerState::CatchingUp
        };
        self.set(|s| s.state = state);
        Ok(batch.caught_up)
    }

    async fn release(&self, lease: &Lease, exit: Exit) -> Exit {
        if let Err(e) = self.relay.checkpoints.release(lease).await {
            self.note_error(&e);
        }
        exit
    }
}
