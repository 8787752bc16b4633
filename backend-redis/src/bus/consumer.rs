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
//! - Reading: XREADGROUP in a script that checks the lease, at most `read_batch` entries
//!   held per partition (the window). Among the window's ready messages (the oldest
//!   unsettled one of each key) the [`PriorityScheduler`] picks; a key's next message waits
//!   while an earlier one is unsettled (retries included).
//! - Settling: one script per outcome (ack, retry, dead letter with its ack, drop), each
//!   checking the lease; every script answers the partition's stats so metrics follow.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

use async_trait::async_trait;
use cqrs_core::{
    bus::{
        Breaker, BreakerState, DeadLetterReason, Delivery, HandlerError, HandlerErrorKind, Health,
        HealthStatus, LatencyWindow, Message, MessageHandler, Priority, PriorityScheduler, Subscription,
        SubscriptionMetrics, SubscriptionSpec,
    },
    Error, Result, Timestamp,
};
use futures::FutureExt;
use redis::Value;
use tokio::{
    sync::{watch, Notify},
    task::{JoinHandle, JoinSet},
    time::Instant,
};

use super::codec::{self, entry_id, Body, Entry};
use super::keys::PartKeys;
use super::scripts;
use super::streams::{stats, Shared};
use crate::conn::reply;
use crate::error::unexpected;

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

/// How a job ended, for the driver's window.
enum Outcome {
    /// Settled: the entry leaves the window.
    Done,
    /// Failed, retried at this time.
    Retry(Instant),
    /// The partition's lease is gone: drop the partition.
    Lost,
    /// A transport error: try the entry again later.
    Failed,
}

struct JobDone {
    p: u32,
    id: (u64, u64),
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Ready,
    Due(Instant),
    Busy,
}

struct Slot {
    entry: Entry,
    state: SlotState,
}

/// An owned partition.
struct Part {
    /// While taking over pending entries: the XAUTOCLAIM cursor.
    claiming: Option<String>,
    window: BTreeMap<(u64, u64), Slot>,
    in_flight: usize,
    releasing: bool,
    /// The last read filled the window: more may be waiting.
    more: bool,
}

impl Part {
    fn new() -> Self {
        Part {
            claiming: Some("0-0".to_owned()),
            window: BTreeMap::new(),
            in_flight: 0,
            releasing: false,
            more: false,
        }
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
    let driver = Driver {
        ctx: ctx.clone(),
        owned: BTreeMap::new(),
        jobs: JoinSet::new(),
        scheduler: PriorityScheduler::new(ctx.shared.options.priority_bypass),
    };
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

struct Driver {
    ctx: Arc<Ctx>,
    owned: BTreeMap<u32, Part>,
    jobs: JoinSet<JobDone>,
    scheduler: PriorityScheduler,
}

impl Driver {
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let ctx = self.ctx.clone();
        let block = ctx.shared.options.block;
        let mut next_maint = Instant::now();
        let mut next_poll = Instant::now();
        let mut read_now = true;
        loop {
            if *stop.borrow() || ctx.shared.check_open().is_err() {
                break;
            }
            let published = ctx.shared.published.notified();
            let rebalance = ctx.shared.rebalance.notified();
            tokio::pin!(published, rebalance);
            published.as_mut().enable();
            rebalance.as_mut().enable();

            let lost: Vec<u32> = std::mem::take(&mut *lock(&ctx.counters.lost));
            for p in lost {
                self.drop_part(p);
            }
            if Instant::now() >= next_maint {
                if let Err(e) = self.maintain().await {
                    ctx.counters.note_error(e);
                }
                next_maint = Instant::now() + ctx.beat();
            }
            if read_now || Instant::now() >= next_poll {
                read_now = match self.read().await {
                    Ok(n) => n > 0,
                    Err(e) => {
                        ctx.counters.note_error(e);
                        false
                    }
                };
                next_poll = Instant::now() + block;
            }
            let breaker_wait = self.dispatch();

            let now = Instant::now();
            let mut until = next_maint.min(next_poll);
            if let Some(due) = self.next_due() {
                until = until.min(due);
            }
            if let Some(w) = breaker_wait {
                until = until.min(now + w);
            }
            tokio::select! {
                Some(done) = self.jobs.join_next(), if !self.jobs.is_empty() => {
                    if self.finish(done) {
                        read_now = true;
                    }
                    if self.owned.values().any(|p| p.releasing && p.in_flight == 0) {
                        next_maint = Instant::now();
                    }
                }
                () = &mut published => read_now = true,
                () = &mut rebalance => next_maint = Instant::now(),
                () = ctx.wake.notified() => {}
                () = tokio::time::sleep_until(until) => {}
                _ = stop.changed() => {}
            }
        }
        self.shutdown().await
    }

    /// Graceful end: in-flight handlers get one ack timeout to finish (then are dropped,
    /// their entries staying pending), leases are released and the consumer leaves, so
    /// another consumer takes the partitions over at once.
    async fn shutdown(mut self) -> Result<()> {
        let deadline = Instant::now() + self.ctx.spec.ack_timeout_value();
        while !self.jobs.is_empty() {
            tokio::select! {
                Some(done) = self.jobs.join_next() => { self.finish(done); }
                () = tokio::time::sleep_until(deadline) => {
                    self.jobs.abort_all();
                    while self.jobs.join_next().await.is_some() {}
                }
            }
        }
        let owned: Vec<u32> = self.owned.keys().copied().collect();
        self.owned.clear();
        lock(&self.ctx.counters.owned).clear();
        let released = self.ctx.lease("release", &owned).await;
        let left = self.ctx.member("leave").await;
        self.ctx.shared.rebalance.notify_waiters();
        released?;
        left?;
        Ok(())
    }

    fn publish_owned(&self) {
        *lock(&self.ctx.counters.owned) = self.owned.keys().copied().collect();
    }

    fn drop_part(&mut self, p: u32) {
        if self.owned.remove(&p).is_some() {
            self.publish_owned();
        }
    }

    /// Heartbeats, computes this consumer's share of the partitions, releases idle ones it
    /// should not own and acquires free ones it should.
    async fn maintain(&mut self) -> Result<()> {
        let ctx = self.ctx.clone();
        let members = ctx.member("beat").await?.unwrap_or_default();
        let n = u32::try_from(members.len()).unwrap_or(u32::MAX).max(1);
        let me = members
            .iter()
            .position(|m| m == ctx.consumer())
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(0);
        let mine = |p: u32| p % n == me;
        for (p, part) in &mut self.owned {
            part.releasing = !mine(*p);
        }
        let idle: Vec<u32> = self
            .owned
            .iter()
            .filter(|(_, part)| part.releasing && part.in_flight == 0)
            .map(|(p, _)| *p)
            .collect();
        if !idle.is_empty() {
            for p in &idle {
                self.owned.remove(p);
            }
            self.publish_owned();
            ctx.lease("release", &idle).await?;
            ctx.shared.rebalance.notify_waiters();
        }
        let want: Vec<u32> = (0..ctx.shared.options.partitions)
            .filter(|p| mine(*p) && !self.owned.contains_key(p))
            .collect();
        if !want.is_empty() {
            for p in ctx.lease("acquire", &want).await? {
                self.owned.insert(p, Part::new());
            }
            self.publish_owned();
        }
        Ok(())
    }

    /// Fills the windows: pending entries of newly acquired partitions first (in id
    /// order), then new entries. Returns how many entries came in.
    async fn read(&mut self) -> Result<usize> {
        let ctx = self.ctx.clone();
        let batch = ctx.shared.options.read_batch;
        let mut got = 0;
        let claiming: Vec<(u32, String, usize)> = self
            .owned
            .iter()
            .filter(|(_, part)| !part.releasing && part.window.len() < batch)
            .filter_map(|(p, part)| part.claiming.clone().map(|c| (*p, c, batch - part.window.len())))
            .collect();
        for (p, cursor, room) in claiming {
            got += self.claim(p, &cursor, room).await?;
        }
        let reading: Vec<u32> = self
            .owned
            .iter()
            .filter(|(_, part)| !part.releasing && part.claiming.is_none() && part.window.len() < batch)
            .map(|(p, _)| *p)
            .collect();
        for chunk in ctx.shared.batches(&reading) {
            let mut inv = scripts::READ.prepare_invoke();
            for p in &chunk {
                let keys = ctx.part(*p)?;
                inv.key(keys.stream())
                    .key(keys.lease(ctx.group()))
                    .key(keys.attempts(ctx.group()));
            }
            inv.arg(ctx.group()).arg(ctx.consumer()).arg(&ctx.token);
            for p in &chunk {
                let len = self.owned.get(p).map_or(0, |part| part.window.len());
                inv.arg(batch.saturating_sub(len).max(1));
            }
            let answer = reply::array(ctx.shared.conn.script(&inv).await?)?;
            for (p, v) in chunk.iter().zip(answer) {
                let (status, mut items) = reply::status(v)?;
                if status != "ok" {
                    self.drop_part(*p);
                    continue;
                }
                let entries = reply::array(items.next().unwrap_or(Value::Nil))?;
                ctx.counters.update_stats(*p, items.next());
                let n = entries.len();
                got += n;
                if let Some(part) = self.owned.get_mut(p) {
                    let room = batch.saturating_sub(part.window.len()).max(1);
                    part.more = n >= room;
                    for e in entries {
                        let entry = codec::entry(e)?;
                        if let Some(id) = entry_id(&entry.id) {
                            part.window.insert(
                                id,
                                Slot {
                                    entry,
                                    state: SlotState::Ready,
                                },
                            );
                        }
                    }
                }
            }
        }
        Ok(got)
    }

    /// Takes over one page of partition `p`'s pending entries.
    async fn claim(&mut self, p: u32, cursor: &str, room: usize) -> Result<usize> {
        let ctx = self.ctx.clone();
        let keys = ctx.part(p)?;
        let answer = ctx
            .shared
            .conn
            .script(
                scripts::CLAIM
                    .key(keys.stream())
                    .key(keys.lease(ctx.group()))
                    .key(keys.attempts(ctx.group()))
                    .key(keys.retry(ctx.group()))
                    .arg(ctx.group())
                    .arg(ctx.consumer())
                    .arg(&ctx.token)
                    .arg(cursor)
                    .arg(room),
            )
            .await?;
        let (status, mut items) = reply::status(answer)?;
        if status != "ok" {
            self.drop_part(p);
            return Ok(0);
        }
        let next = reply::next_string(&mut items)?;
        let entries = reply::array(items.next().unwrap_or(Value::Nil))?;
        let dues = reply::array(items.next().unwrap_or(Value::Nil))?;
        let server_now = reply::next_u64(&mut items)?;
        ctx.counters.update_stats(p, items.next());
        let now = Instant::now();
        let n = entries.len();
        let Some(part) = self.owned.get_mut(&p) else {
            return Ok(0);
        };
        for (e, due) in entries.into_iter().zip(dues) {
            let entry = codec::entry(e)?;
            let state = match reply::opt_string(due)?.and_then(|d| d.parse::<u64>().ok()) {
                Some(due) if due > server_now => {
                    SlotState::Due(now + Duration::from_millis(due - server_now))
                }
                _ => SlotState::Ready,
            };
            if let Some(id) = entry_id(&entry.id) {
                part.window.insert(id, Slot { entry, state });
            }
        }
        part.claiming = (next != "0-0").then_some(next);
        part.more = part.claiming.is_some();
        Ok(n)
    }

    /// The earliest retry due in an owned window.
    fn next_due(&self) -> Option<Instant> {
        self.owned
            .values()
            .filter(|p| !p.releasing)
            .flat_map(|p| p.window.values())
            .filter_map(|s| match s.state {
                SlotState::Due(t) => Some(t),
                _ => None,
            })
            .min()
    }

    /// Starts jobs: undecodable entries go to the dead letter at once; then ready messages
    /// (the oldest unsettled of each key) up to the concurrency, most urgent first. Returns
    /// how long the circuit breaker keeps the handler closed off, if it does.
    fn dispatch(&mut self) -> Option<Duration> {
        let ctx = self.ctx.clone();
        let now = Instant::now();
        let mut undecodable = Vec::new();
        for (p, part) in &mut self.owned {
            if part.releasing {
                continue;
            }
            for (id, slot) in &mut part.window {
                if slot.state == SlotState::Ready {
                    if let Body::Undecodable(why) = &slot.entry.body {
                        slot.state = SlotState::Busy;
                        part.in_flight += 1;
                        undecodable.push((*p, *id, slot.entry.id.clone(), why.clone()));
                    }
                }
            }
        }
        for (p, id, entry, why) in undecodable {
            let c = ctx.clone();
            self.jobs.spawn(async move {
                let reason = DeadLetterReason::Undecodable { error: why };
                let outcome = c.settle(p, &entry, Settle::Dead(reason, None)).await;
                JobDone { p, id, outcome }
            });
        }
        while self.jobs.len() < ctx.spec.concurrency_limit() {
            let mut ready: Vec<(Priority, (u64, u64), u32)> = Vec::new();
            for (p, part) in &self.owned {
                if part.releasing {
                    continue;
                }
                let mut seen: HashSet<&str> = HashSet::new();
                for (id, slot) in &part.window {
                    let Body::Message(m) = &slot.entry.body else {
                        continue;
                    };
                    if !seen.insert(m.key.as_str()) {
                        continue;
                    }
                    match slot.state {
                        SlotState::Ready => ready.push((m.priority, *id, *p)),
                        SlotState::Due(t) if t <= now => ready.push((m.priority, *id, *p)),
                        _ => {}
                    }
                }
            }
            if ready.is_empty() {
                return None;
            }
            if let Some(mut b) = ctx.breaker() {
                if let Err(wait) = b.try_acquire(ctx.now_ts()) {
                    return Some(wait);
                }
            }
            // Publish order across partitions, approximated by entry id (server time).
            ready.sort_by_key(|(_, id, p)| (*id, *p));
            let picked = self
                .scheduler
                .pick(ready.iter().zip(0u64..).map(|((pr, _, _), i)| (*pr, i)))
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| ready.get(i).copied());
            let (_, id, p) = picked?;
            let part = self.owned.get_mut(&p)?;
            let slot = part.window.get_mut(&id)?;
            let Body::Message(message) = &slot.entry.body else {
                return None;
            };
            slot.state = SlotState::Busy;
            part.in_flight += 1;
            let (c, message, entry) = (ctx.clone(), message.clone(), slot.entry.id.clone());
            self.jobs.spawn(async move {
                let outcome = c.deliver(p, entry, message).await;
                JobDone { p, id, outcome }
            });
        }
        None
    }

    /// Applies a finished job to the window; true when a read may find more.
    fn finish(&mut self, done: std::result::Result<JobDone, tokio::task::JoinError>) -> bool {
        let Ok(JobDone { p, id, outcome }) = done else {
            // A job only ends this way when aborted at shutdown.
            return false;
        };
        if matches!(outcome, Outcome::Lost) {
            self.drop_part(p);
            return false;
        }
        let block = self.ctx.shared.options.block;
        let Some(part) = self.owned.get_mut(&p) else {
            return false;
        };
        part.in_flight = part.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Done => {
                part.window.remove(&id);
            }
            Outcome::Retry(at) => {
                if let Some(s) = part.window.get_mut(&id) {
                    s.state = SlotState::Due(at);
                }
            }
            Outcome::Failed => {
                if let Some(s) = part.window.get_mut(&id) {
                    s.state = SlotState::Due(Instant::now() + block);
                }
            }
            Outcome::Lost => {}
        }
        part.more
    }
}

/// How a delivery is settled.
enum Settle {
    Ack,
    Retry(Duration),
    /// Dead letter; with the key and id to park later messages of the key behind.
    Dead(DeadLetterReason, Option<(String, String)>),
    Drop,
}

impl Ctx {
    fn release_breaker(&self) {
        if let Some(mut b) = self.breaker() {
            b.release();
        }
    }

    /// One delivery: start it (`deliver.lua`), call the handler, settle the outcome.
    async fn deliver(self: &Arc<Self>, p: u32, entry: String, message: Message) -> Outcome {
        let keys = match self.part(p) {
            Ok(k) => k.settle_keys(self.group()),
            Err(_) => return Outcome::Lost,
        };
        let mut inv = scripts::DELIVER.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        inv.arg(self.group())
            .arg(&entry)
            .arg(&self.token)
            .arg(self.ack_ms())
            .arg(&message.key);
        let started = self.shared.conn.script(&inv).await.and_then(reply::status);
        let (status, mut items) = match started {
            Ok(s) => s,
            Err(e) => {
                self.counters.note_error(e);
                self.release_breaker();
                return Outcome::Failed;
            }
        };
        let (attempt, elapsed) = match status.as_str() {
            "ok" => {
                let attempt = reply::next_u64(&mut items).unwrap_or(1);
                let elapsed = reply::next_u64(&mut items).unwrap_or(0);
                self.counters.update_stats(p, items.next());
                (attempt, elapsed)
            }
            "gone" | "parked" => {
                if status == "parked" {
                    let _ = items.next();
                    self.counters.dead_lettered.fetch_add(1, Ordering::SeqCst);
                }
                self.counters.update_stats(p, items.next());
                self.release_breaker();
                return Outcome::Done;
            }
            _ => {
                self.release_breaker();
                return Outcome::Lost;
            }
        };
        let delivery = Delivery {
            message,
            topic: self.spec.topic().to_owned(),
            group: self.group().to_owned(),
            consumer: self.consumer().to_owned(),
            partition: p,
            entry: entry.clone(),
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
        };
        let gauge = InFlight::enter(&self.counters.in_flight);
        let clock = Instant::now();
        let result = AssertUnwindSafe(self.handler.handle(&delivery))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(HandlerError::retryable("handler panicked")));
        lock(&self.counters.latency).record(clock.elapsed());
        drop(gauge);
        let settle = match result {
            Ok(()) => {
                if let Some(mut b) = self.breaker() {
                    b.on_success();
                }
                Settle::Ack
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::SeqCst);
                self.counters.note_error(&e);
                if e.kind() != HandlerErrorKind::Undecodable {
                    let now = self.now_ts_ceil();
                    if let Some(mut b) = self.breaker() {
                        b.on_failure(now);
                    }
                }
                let park = Some((delivery.message.key.clone(), delivery.message.id.to_string()));
                let message = e.message().to_owned();
                match e.kind() {
                    HandlerErrorKind::Permanent => {
                        Settle::Dead(DeadLetterReason::Permanent { error: message }, park)
                    }
                    HandlerErrorKind::Undecodable => {
                        Settle::Dead(DeadLetterReason::Undecodable { error: message }, None)
                    }
                    HandlerErrorKind::Retryable => {
                        let elapsed = Duration::from_millis(elapsed);
                        match self.spec.retry_policy().next_delay(delivery.attempt, elapsed) {
                            Some(wait) => Settle::Retry(wait),
                            None => Settle::Dead(DeadLetterReason::MaxAttempts { last_error: message }, park),
                        }
                    }
                }
            }
        };
        let settle = match settle {
            Settle::Dead(..) if !self.spec.dead_letter_enabled() => Settle::Drop,
            other => other,
        };
        self.settle(p, &entry, settle).await
    }

    /// Settles entry `entry` of partition `p` with one script.
    async fn settle(&self, p: u32, entry: &str, settle: Settle) -> Outcome {
        let keys = match self.part(p) {
            Ok(k) => k.settle_keys(self.group()),
            Err(_) => return Outcome::Lost,
        };
        let mut inv = scripts::SETTLE.prepare_invoke();
        for k in &keys {
            inv.key(k);
        }
        let op = match &settle {
            Settle::Ack => "ack",
            Settle::Retry(_) => "retry",
            Settle::Dead(..) => "dead",
            Settle::Drop => "drop",
        };
        inv.arg(op).arg(self.group()).arg(entry).arg(&self.token);
        match &settle {
            Settle::Retry(wait) => {
                inv.arg(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
            }
            Settle::Dead(reason, park) => {
                let (kind, detail) = codec::reason_fields(reason);
                inv.arg(kind).arg(detail);
                match park {
                    Some((key, id)) => inv.arg("1").arg(key).arg(id),
                    None => inv.arg("0").arg("").arg(""),
                };
                // Counted before the script runs: once the dead letter is visible, the
                // metrics already show it (and no longer count it as lag).
                self.counters.dead_lettered.fetch_add(1, Ordering::SeqCst);
                self.counters.dead_pending.fetch_add(1, Ordering::SeqCst);
            }
            Settle::Ack | Settle::Drop => {}
        }
        let answer = self.shared.conn.script(&inv).await.and_then(reply::status);
        let dead = matches!(settle, Settle::Dead(..));
        let outcome = match answer {
            Ok((status, mut items)) if status == "ok" => {
                self.counters.update_stats(p, items.next());
                match settle {
                    Settle::Ack => {
                        self.counters.handled.fetch_add(1, Ordering::SeqCst);
                        Outcome::Done
                    }
                    Settle::Retry(wait) => {
                        self.counters.retried.fetch_add(1, Ordering::SeqCst);
                        Outcome::Retry(Instant::now() + wait)
                    }
                    Settle::Dead(..) | Settle::Drop => Outcome::Done,
                }
            }
            Ok(_) => Outcome::Lost,
            Err(e) => {
                self.counters.note_error(e);
                Outcome::Failed
            }
        };
        if dead {
            if !matches!(outcome, Outcome::Done) {
                self.counters.dead_lettered.fetch_sub(1, Ordering::SeqCst);
            }
            self.counters.dead_pending.fetch_sub(1, Ordering::SeqCst);
        }
        outcome
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
