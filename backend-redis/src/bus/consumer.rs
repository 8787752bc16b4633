//! A subscription of the Redis bus: one driver task, its handler tasks and a heartbeat.
//!
//! - Membership: the consumer heartbeats into its group's membership set (consumer ->
//!   expiry by the server's clock). Partitions are spread over the live members sorted by
//!   name, round robin (`p % n == index`).
//! - Ownership: a consumer owns a partition under a lease (`SET NX PX ack_timeout` with its
//!   token), renewed every quarter of the ack timeout while anything runs (slow handlers
//!   included) and at every delivery. It hands a partition back only once nothing of it is
//!   in flight. On acquiring one it takes over the partition's pending entries (XAUTOCLAIM
//!   to itself, min-idle 0: the free lease proves the previous owner is gone), so a crashed
//!   consumer's messages are redelivered after the ack timeout, never to two at once.
//! - Reading: plain XREADGROUP (as the consumer's own Redis consumer, its token), each
//!   followed in the same pipeline by the partition's XPENDING summary, at most
//!   `read_batch` entries held per partition (the window). A read sent after the lease was
//!   lost can only leave entries in that token's pending list; the owner sees them in its
//!   next summary and sweeps them into its window (lease checked) before starting anything
//!   more of the partition. Starts and acks check the lease in their scripts. Among the window's ready messages (the oldest
//!   unsettled one of each key) the [`PriorityScheduler`](cqrs_core::bus::PriorityScheduler) picks; a key's next message waits
//!   while an earlier one is unsettled (retries included).
//! - Starting: the picks of a dispatch round start in one script call (attempt counted,
//!   lease checked and extended) by a delivery task, which then runs their handlers, each
//!   once it holds one of the concurrency's permits. Starts run up to one concurrency's
//!   worth ahead of free permits (none with a circuit breaker), so the next start's round
//!   trip overlaps the handlers of the last one.
//! - Settling: acks wait for the one ack flush in flight and go together in one script
//!   call; retries, dead letters (with their ack) and drops get one script each. Every
//!   script checks the lease, and those that change the group's counts answer the
//!   partition's stats so metrics follow.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use async_trait::async_trait;
use cqrs_core::{
    bus::{
        Breaker, BreakerState, Health, HealthStatus, LatencyWindow, MessageHandler, Subscription,
        SubscriptionMetrics, SubscriptionSpec,
    },
    Error, Result, Timestamp,
};
use redis::Value;
use tokio::{
    sync::{watch, Notify, Semaphore},
    task::JoinHandle,
    time::Instant,
};

mod delivery;
mod driver;

use super::keys::PartKeys;
use super::scripts;
use super::streams::{stats, Shared};
use crate::conn::reply;
use crate::error::unexpected;
use driver::Driver;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Counters, gauges and shared state of one subscription.
#[derive(Default)]
struct Counters {
    handled: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    in_flight: AtomicU64,
    /// Dead letters counted but whose script answer is not processed yet: the lag leaves
    /// them out already, so a dead letter seen by a reader is never still counted as lag.
    dead_pending: AtomicU64,
    latency: Mutex<LatencyWindow>,
    last_error: Mutex<Option<String>>,
    stopping: AtomicBool,
    stopped: AtomicBool,
    breaker: Option<Mutex<Breaker>>,
    /// Per partition: [version, entries added, unacknowledged by the group].
    stats: Mutex<Vec<[u64; 3]>>,
    owned: Mutex<Vec<u32>>,
    /// Partitions whose lease the heartbeat found taken.
    lost: Mutex<Vec<u32>>,
}

impl Counters {
    fn note_error(&self, error: impl fmt::Display) {
        *lock(&self.last_error) = Some(error.to_string());
    }

    /// Keeps the newest stats answer of partition `p`.
    fn update_stats(&self, p: u32, v: Option<Value>) {
        // An empty answer: the script left the stats alone.
        let v = v.filter(|v| !matches!(v, Value::Array(a) if a.is_empty()));
        let Some(Ok(s)) = v.map(stats) else {
            return;
        };
        let mut all = lock(&self.stats);
        if let Some(slot) = usize::try_from(p).ok().and_then(|i| all.get_mut(i)) {
            if s[0] >= slot[0] {
                *slot = s;
            }
        }
    }
}

/// Counts a handler call in flight until dropped (also when a stop's grace aborts it).
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::SeqCst);
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the driver, the handler tasks and the heartbeat share.
struct Ctx {
    shared: Arc<Shared>,
    spec: SubscriptionSpec,
    handler: Arc<dyn MessageHandler>,
    /// The lease value: consumer name and a fresh id, so an older incarnation never passes.
    token: String,
    counters: Counters,
    epoch: Instant,
    parts: Vec<PartKeys>,
    members: String,
    /// The heartbeat found a lost lease.
    wake: Notify,
    /// One per handler call that may run at once (the spec's concurrency): deliveries are
    /// started ahead of free permits, and wait for one before their handler is called.
    permits: Semaphore,
}

impl Ctx {
    fn group(&self) -> &str {
        self.spec.group()
    }

    fn consumer(&self) -> &str {
        self.spec.consumer_name()
    }

    fn ack_ms(&self) -> u64 {
        millis(self.spec.ack_timeout_value())
    }

    fn beat(&self) -> Duration {
        (self.spec.ack_timeout_value() / 4).max(Duration::from_millis(1))
    }

    /// Milliseconds since the subscription started, rounded down: the breaker's clock.
    fn now_ts(&self) -> Timestamp {
        Timestamp::from_millis(i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX))
    }

    /// The same rounded up: a failure is recorded no earlier than it happened, so the
    /// breaker never half-opens before its full `open_for` (the clock counts whole ms).
    fn now_ts_ceil(&self) -> Timestamp {
        let ms = self.epoch.elapsed().as_micros().div_ceil(1000);
        Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    fn part(&self, p: u32) -> Result<&PartKeys> {
        usize::try_from(p)
            .ok()
            .and_then(|i| self.parts.get(i))
            .ok_or_else(|| unexpected("a partition out of range"))
    }

    fn breaker(&self) -> Option<MutexGuard<'_, Breaker>> {
        self.counters.breaker.as_ref().map(lock)
    }

    /// Heartbeats (or joins, or leaves) the membership; the live members, sorted.
    async fn member(&self, op: &str) -> Result<Option<Vec<String>>> {
        let answer = self
            .shared
            .conn
            .script(
                scripts::MEMBER
                    .key(&self.members)
                    .arg(op)
                    .arg(self.consumer())
                    .arg(self.ack_ms()),
            )
            .await?;
        let (status, items) = reply::status(answer)?;
        if status != "ok" {
            return Ok(None);
        }
        let mut members = items.map(reply::string).collect::<Result<Vec<_>>>()?;
        members.sort();
        Ok(Some(members))
    }

    /// Runs `lease.lua` with `op` on partitions `parts`; the partitions it answered 1 for.
    async fn lease(&self, op: &str, parts: &[u32]) -> Result<Vec<u32>> {
        let mut ok = Vec::new();
        for batch in self.shared.batches(parts) {
            let mut inv = scripts::LEASE.prepare_invoke();
            for p in &batch {
                inv.key(self.part(*p)?.lease(self.group()));
            }
            inv.arg(op).arg(&self.token).arg(self.ack_ms());
            let answer = reply::array(self.shared.conn.script(&inv).await?)?;
            for (p, v) in batch.iter().zip(answer) {
                if reply::u64(v)? == 1 {
                    ok.push(*p);
                }
            }
        }
        Ok(ok)
    }

    /// Reads every partition's stats for the group (for lag and published counts).
    async fn refresh_stats(&self) -> Result<()> {
        let calls = (0..self.shared.options.partitions).map(|p| async move {
            let keys = self.part(p)?;
            let v = self
                .shared
                .conn
                .script(
                    scripts::STATS
                        .key(keys.stream())
                        .key(keys.attempts(self.group()))
                        .arg(self.group()),
                )
                .await?;
            Ok::<_, Error>((p, v))
        });
        for r in futures::future::join_all(calls).await {
            let (p, v) = r?;
            self.counters.update_stats(p, Some(v));
        }
        Ok(())
    }
}

/// Registers the consumer and starts its tasks.
pub(super) async fn start(
    shared: Arc<Shared>,
    spec: SubscriptionSpec,
    handler: Arc<dyn MessageHandler>,
    runtime: &tokio::runtime::Handle,
) -> Result<Box<dyn Subscription>> {
    let k = shared.options.partitions;
    // Semaphore::new panics above MAX_PERMITS; no concurrency that large can be used anyway.
    let spec_concurrency = spec.concurrency_limit().min(Semaphore::MAX_PERMITS);
    let parts = (0..k).map(|p| shared.keys.part(spec.topic(), p)).collect();
    let members = shared.keys.members(spec.topic(), spec.group());
    let ctx = Arc::new(Ctx {
        token: format!("{}:{}", spec.consumer_name(), uuid::Uuid::now_v7().simple()),
        counters: Counters {
            breaker: spec
                .circuit_breaker_settings()
                .map(|s| Mutex::new(Breaker::new(s))),
            stats: Mutex::new(vec![[0; 3]; usize::try_from(k).unwrap_or(0)]),
            ..Counters::default()
        },
        shared,
        spec,
        handler,
        epoch: Instant::now(),
        parts,
        members,
        wake: Notify::new(),
        permits: Semaphore::new(spec_concurrency),
    });
    if ctx.member("join").await?.is_none() {
        return Err(Error::AlreadyExists {
            what: format!(
                "consumer {:?} in group {:?} of topic {:?}",
                ctx.consumer(),
                ctx.group(),
                ctx.spec.topic()
            ),
        });
    }
    ctx.shared.rebalance.notify_waiters();
    let (stop_tx, stop_rx) = watch::channel(false);
    let driver = Driver::new(ctx.clone());
    let driver = runtime.spawn(driver.run(stop_rx));
    let heartbeat = runtime.spawn(heartbeat(ctx.clone()));
    Ok(Box::new(RedisSubscription {
        consumer: ctx.consumer().to_owned(),
        ctx,
        stop: stop_tx,
        tasks: Mutex::new(Some((driver, heartbeat))),
    }))
}

/// Keeps the consumer alive and its leases held while anything runs (a slow handler
/// included), and the stats fresh.
async fn heartbeat(ctx: Arc<Ctx>) {
    loop {
        tokio::time::sleep(ctx.beat()).await;
        let owned = lock(&ctx.counters.owned).clone();
        let kept = match ctx.lease("renew", &owned).await {
            Ok(kept) => kept,
            Err(e) => {
                ctx.counters.note_error(e);
                continue;
            }
        };
        let lost: Vec<u32> = owned.into_iter().filter(|p| !kept.contains(p)).collect();
        if !lost.is_empty() {
            lock(&ctx.counters.lost).extend(lost);
            ctx.wake.notify_one();
        }
        if let Err(e) = ctx.member("beat").await {
            ctx.counters.note_error(e);
        }
        if let Err(e) = ctx.refresh_stats().await {
            ctx.counters.note_error(e);
        }
    }
}

/// The driver (which answers how the graceful end went) and the heartbeat.
type Tasks = (JoinHandle<Result<()>>, JoinHandle<()>);

/// A subscription to a [`RedisBus`](super::RedisBus) topic.
struct RedisSubscription {
    consumer: String,
    ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Option<Tasks>>,
}

impl fmt::Debug for RedisSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSubscription")
            .field("topic", &self.ctx.spec.topic())
            .field("group", &self.ctx.group())
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Subscription for RedisSubscription {
    fn consumer(&self) -> &str {
        &self.consumer
    }

    fn metrics(&self) -> SubscriptionMetrics {
        let c = &self.ctx.counters;
        let (published, unacked) = lock(&c.stats).iter().fold((0u64, 0u64), |(a, u), s| {
            (a.saturating_add(s[1]), u.saturating_add(s[2]))
        });
        SubscriptionMetrics {
            published,
            handled: c.handled.load(Ordering::SeqCst),
            failed: c.failed.load(Ordering::SeqCst),
            retried: c.retried.load(Ordering::SeqCst),
            dead_lettered: c.dead_lettered.load(Ordering::SeqCst),
            in_flight: c.in_flight.load(Ordering::SeqCst),
            lag: unacked.saturating_sub(c.dead_pending.load(Ordering::SeqCst)),
            latency: lock(&c.latency).percentiles(),
        }
    }

    fn health(&self) -> Health {
        let c = &self.ctx.counters;
        let status = if c.stopped.load(Ordering::SeqCst) {
            HealthStatus::Stopped
        } else if c.stopping.load(Ordering::SeqCst) {
            HealthStatus::Stopping
        } else {
            HealthStatus::Running
        };
        let now = self.ctx.now_ts();
        Health {
            status,
            breaker: self.ctx.breaker().map_or(BreakerState::Closed, |b| b.state(now)),
            owned_partitions: lock(&c.owned).clone(),
            last_error: lock(&c.last_error).clone(),
        }
    }

    async fn stop(self: Box<Self>) -> Result<()> {
        self.ctx.counters.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        let tasks = lock(&self.tasks).take();
        let mut result = Ok(());
        if let Some((driver, heartbeat)) = tasks {
            // The heartbeat keeps the leases of handlers still finishing; it ends after
            // the driver released them.
            result = match driver.await {
                Ok(r) => r,
                Err(e) => Err(Error::backend("redis", e)),
            };
            heartbeat.abort();
        }
        self.ctx.counters.stopped.store(true, Ordering::SeqCst);
        result
    }

    fn abort(self: Box<Self>) {
        // Drop does it: nothing is acknowledged or released.
    }
}

impl Drop for RedisSubscription {
    fn drop(&mut self) {
        if let Some((driver, heartbeat)) = lock(&self.tasks).take() {
            driver.abort();
            heartbeat.abort();
            self.ctx.counters.stopped.store(true, Ordering::SeqCst);
        }
    }
}
