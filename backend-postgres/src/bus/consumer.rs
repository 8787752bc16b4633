//! One subscription: a coordinator task (membership, leases, rebalancing, loading rows,
//! metrics) and `concurrency` worker tasks (pick, record the delivery, call the handler,
//! settle), and two batch tasks that record the workers' deliveries and acknowledgements a
//! batch per statement, all fenced by the partition leases' epochs.

use std::{
    collections::BTreeMap,
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
        HealthStatus, LatencyWindow, MessageHandler, Subscription, SubscriptionMetrics, SubscriptionSpec,
    },
    Error, Result, Timestamp,
};
use futures::FutureExt;
use sqlx::{postgres::PgRow, Row};
use tokio::{sync::oneshot, sync::watch, sync::Notify, task::JoinHandle, time::Instant};
use uuid::Uuid;

use super::outbox::{decode, reason_columns, Shared};
use super::window::{Body, DeadTicket, Entry, Known, Part, Pick, Pos, Ticket, Window};
use crate::error;

/// SQLSTATE the rebalance function raises when this consumer was replaced or removed.
const REPLACED: &str = "CQ101";

/// Settles count lag and published in their statement only while this consumer holds at
/// most this many unsettled rows (the counts cost time proportional to the backlog); the
/// coordinator refreshes them every heartbeat anyway.
const COUNT_BELOW: usize = 64;

/// Attempts of a statement that failed on a deadlock or serialization failure.
const TRIES: u32 = 5;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn part_i32(p: u32) -> i32 {
    i32::try_from(p).unwrap_or(i32::MAX)
}

/// Deadlock or serialization failure: the statement was rolled back and may be retried.
fn is_retryable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

#[derive(Default)]
pub(super) struct Counters {
    handled: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    in_flight: AtomicU64,
    latency: Mutex<LatencyWindow>,
    last_error: Mutex<Option<String>>,
    stopping: AtomicBool,
    stopped: AtomicBool,
    gone: AtomicBool,
    breaker: Option<Mutex<Breaker>>,
    /// (lag, published) as last counted.
    counts: Mutex<(u64, u64)>,
    /// Held by every statement that counts lag and published (the heartbeat's count, the
    /// acknowledgement batches) and by every settle that changes the lag (acknowledgements,
    /// dead letters: until the transaction ends), from before it is sent until its counts
    /// are stored. They run one at a time, so each count's snapshot sees every earlier
    /// settle of this consumer committed and no settle commits between a count and its
    /// storing: the last count stored is the newest, with nothing to compare. Taken before
    /// a pool connection, never while holding one (no wait cycle with the pool).
    turn: tokio::sync::Mutex<()>,
}

impl Counters {
    fn note_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// Stores the counts of a statement (NULL: it did not count); returns those replaced.
    fn set_counts(&self, lag: Option<i64>, published: Option<i64>) -> (u64, u64) {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let before = *c;
        if let Some(lag) = lag {
            c.0 = u64::try_from(lag).unwrap_or(0);
        }
        if let Some(p) = published {
            c.1 = u64::try_from(p).unwrap_or(0);
        }
        before
    }

    /// Puts back counts replaced by a transaction that then failed to commit.
    fn restore_counts(&self, before: (u64, u64)) {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner) = before;
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

/// A delivery waiting to be recorded by the next batch: (partition, epoch, row).
type DeliverReq = (u32, i64, Pos);
/// Its attempt number, `None` when the lease was lost, or why the batch failed.
type DeliverOut = std::result::Result<Option<i32>, String>;
/// An acknowledgement waiting for the next batch: (partition, epoch, row, new floor, whether
/// to count lag and published).
type AckReq = (u32, i64, Pos, Option<Pos>, bool);
/// Whether the lease was still held (the row is settled), or why the batch failed.
type AckOut = std::result::Result<bool, String>;

/// Requests queued for one batched statement, and the wake-up of the task that runs it.
/// Workers' deliveries and acknowledgements are batched so that `concurrency` workers cost
/// one statement (one commit) per batch rather than one per message.
struct Queue<T, R> {
    items: Mutex<Vec<(T, oneshot::Sender<R>)>>,
    wake: Notify,
}

impl<T, R> Default for Queue<T, R> {
    fn default() -> Self {
        Queue {
            items: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }
}

impl<T, R> Queue<T, R> {
    /// Queues a request and waits for its answer (`None`: the batch task ended).
    async fn submit(&self, item: T) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        self.items
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((item, tx));
        // notify_one keeps a permit, so a request queued while a batch runs is not missed.
        self.wake.notify_one();
        rx.await.ok()
    }

    /// Everything queued, waiting until something is.
    async fn take(&self) -> Vec<(T, oneshot::Sender<R>)> {
        loop {
            let items = std::mem::take(&mut *self.items.lock().unwrap_or_else(PoisonError::into_inner));
            if !items.is_empty() {
                return items;
            }
            self.wake.notified().await;
        }
    }
}

/// How a delivery ended.
enum Settle {
    Ack,
    /// Acknowledged without being handled (dead letter off).
    Drop,
    Retry(Duration, String),
    DeadLetter(DeadLetterReason),
}

/// Why a rebalance did not happen.
enum Lost {
    /// This consumer was replaced or removed, or the bus closed: stop.
    Gone,
    Failed(Error),
}

pub(super) struct Consumer {
    shared: Arc<Shared>,
    spec: SubscriptionSpec,
    handler: Arc<dyn MessageHandler>,
    /// This subscription's incarnation id: the owner of its leases.
    owner: String,
    ack_ms: i64,
    window: Mutex<Window>,
    /// Wakes the workers.
    local: Notify,
    /// Wakes the coordinator (a window ran dry).
    more: Notify,
    counters: Counters,
    epoch: Instant,
    delivers: Queue<DeliverReq, DeliverOut>,
    acks: Queue<AckReq, AckOut>,
}

pub(super) async fn subscribe(
    shared: Arc<Shared>,
    spec: SubscriptionSpec,
    handler: Arc<dyn MessageHandler>,
) -> Result<Box<dyn Subscription>> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| Error::backend("postgres", e))?;
    let partitions = i32::try_from(shared.options.get_partitions()).unwrap_or(i32::MAX);
    let latest = spec.start() == cqrs_core::bus::StartFrom::Latest;
    sqlx::query(&shared.sql.group)
        .bind(spec.topic())
        .bind(spec.group())
        .bind(partitions)
        .bind(latest)
        .execute(&shared.pool)
        .await
        .map_err(error::sent)?;
    let owner = Uuid::now_v7().simple().to_string();
    let ack_ms = millis(spec.ack_timeout_value());
    let joined = sqlx::query(&shared.sql.member)
        .bind(spec.topic())
        .bind(spec.group())
        .bind(spec.consumer_name())
        .bind(&owner)
        .bind(ack_ms)
        .fetch_optional(&shared.pool)
        .await
        .map_err(error::sent)?;
    if joined.is_none() {
        return Err(Error::AlreadyExists {
            what: format!(
                "consumer {:?} in group {:?} of topic {:?}",
                spec.consumer_name(),
                spec.group(),
                spec.topic()
            ),
        });
    }
    let consumer = Arc::new(Consumer {
        window: Mutex::new(Window::new(shared.options.get_priority_bypass())),
        shared,
        counters: Counters {
            breaker: spec
                .circuit_breaker_settings()
                .map(|s| Mutex::new(Breaker::new(s))),
            ..Counters::default()
        },
        spec,
        handler,
        owner,
        ack_ms,
        local: Notify::new(),
        more: Notify::new(),
        epoch: Instant::now(),
        delivers: Queue::default(),
        acks: Queue::default(),
    });
    // The first rebalance runs here, so a failure is the caller's and the consumer owns its
    // partitions when this returns.
    let mut tries = 0;
    loop {
        match consumer.rebalance(true).await {
            Ok(()) => break,
            Err(Lost::Failed(e)) if tries + 1 < TRIES && matches!(e, Error::Unavailable { .. }) => {
                tries += 1;
            }
            Err(lost) => {
                let _ = consumer.leave().await;
                return Err(match lost {
                    Lost::Gone => Error::Closed,
                    Lost::Failed(e) => e,
                });
            }
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..consumer.spec.concurrency_limit() {
        let (c, rx) = (Arc::clone(&consumer), stop_rx.clone());
        workers.push(runtime.spawn(async move { c.work(rx).await }));
    }
    // The coordinator outlives the stop signal: it keeps the leases of handlers still
    // finishing during a graceful stop; `stop()` ends it once the workers are done.
    let coordinator = {
        let c = Arc::clone(&consumer);
        runtime.spawn(async move { c.coordinate(stop_rx).await })
    };
    // Like the coordinator, the batch tasks serve the workers until `stop()` ends them.
    let batches = {
        let (c, a) = (Arc::clone(&consumer), Arc::clone(&consumer));
        vec![
            runtime.spawn(async move { c.deliver_batches().await }),
            runtime.spawn(async move { a.ack_batches().await }),
        ]
    };
    let name = consumer.spec.consumer_name().to_owned();
    Ok(Box::new(PgSubscription {
        consumer,
        stop: stop_tx,
        tasks: Mutex::new(Some(Tasks {
            workers,
            coordinator,
            batches,
        })),
        name,
    }))
}

impl Consumer {
    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ts(&self) -> Timestamp {
        Timestamp::from_millis(i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX))
    }

    fn breaker(&self) -> Option<MutexGuard<'_, Breaker>> {
        self.counters
            .breaker
            .as_ref()
            .map(|b| b.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn beat(&self) -> Duration {
        (self.spec.ack_timeout_value() / 4).max(Duration::from_millis(1))
    }

    fn gone(&self) -> bool {
        self.counters.gone.load(Ordering::SeqCst) || self.shared.check_open().is_err()
    }

    /// Heartbeat and rebalance: renews membership, leases and claims, takes the partitions
    /// assigned to this consumer that are free (when `take`), and hands back those it should
    /// not own (all of them when not `take`) once nothing of them is in flight.
    async fn rebalance(&self, take: bool) -> std::result::Result<(), Lost> {
        if self.shared.check_open().is_err() {
            return Err(Lost::Gone);
        }
        let sql = &self.shared.sql;
        let row = sqlx::query(&sql.rebalance)
            .bind(self.spec.topic())
            .bind(self.spec.group())
            .bind(self.spec.consumer_name())
            .bind(&self.owner)
            .bind(self.ack_ms)
            .bind(take)
            .fetch_one(&self.shared.pool)
            .await;
        let row = match row {
            Ok(row) => row,
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(REPLACED) => {
                return Err(Lost::Gone)
            }
            Err(e) if is_retryable(&e) => return Err(Lost::Failed(error::not_sent(e))),
            Err(e) => return Err(Lost::Failed(error::sent(e))),
        };
        let owned = owned_parts(&row).map_err(Lost::Failed)?;
        let members: i32 = row.try_get("members").map_err(|e| Lost::Failed(error::sent(e)))?;
        let me: i32 = row.try_get("me").map_err(|e| Lost::Failed(error::sent(e)))?;
        let mut taken = Vec::new();
        let mut surplus = Vec::new();
        {
            let mut w = self.lock();
            w.parts
                .retain(|p, part| owned.get(p).is_some_and(|(epoch, _)| *epoch == part.epoch));
            for (&p, &(epoch, floor)) in &owned {
                if let std::collections::btree_map::Entry::Vacant(slot) = w.parts.entry(p) {
                    let mut part = Part::new(epoch, floor);
                    // Nothing is picked until its pending state is loaded.
                    part.releasing = true;
                    slot.insert(part);
                    taken.push(p);
                }
                let mine = i64::from(p) % i64::from(members.max(1)) == i64::from(me);
                if !take || !mine {
                    surplus.push(p);
                }
            }
        }
        if !taken.is_empty() {
            if let Err(e) = self.load_pending(&taken).await {
                // Forget them: the next rebalance finds them owned and loads them again.
                let mut w = self.lock();
                for p in &taken {
                    w.parts.remove(p);
                }
                return Err(Lost::Failed(e));
            }
        }
        surplus.retain(|p| !taken.contains(p));
        if !surplus.is_empty() {
            self.release(&surplus).await.map_err(Lost::Failed)?;
        }
        Ok(())
    }

    /// Hands back the partitions of `candidates` with nothing in flight.
    async fn release(&self, candidates: &[u32]) -> Result<()> {
        let parts = self.lock().begin_release(candidates);
        if parts.is_empty() {
            return Ok(());
        }
        let ids: Vec<i32> = parts.iter().map(|p| part_i32(*p)).collect();
        let done = sqlx::query(&self.shared.sql.release)
            .bind(self.spec.topic())
            .bind(self.spec.group())
            .bind(self.spec.consumer_name())
            .bind(&self.owner)
            .bind(Some(ids))
            .bind(false)
            .execute(&self.shared.pool)
            .await;
        let mut w = self.lock();
        match done {
            Ok(_) => {
                for p in &parts {
                    w.parts.remove(p);
                }
                drop(w);
                self.shared.handovers.fetch_add(1, Ordering::SeqCst);
                self.shared.announce();
                Ok(())
            }
            Err(e) => {
                for p in &parts {
                    if let Some(part) = w.parts.get_mut(p) {
                        part.releasing = false;
                    }
                }
                Err(error::sent(e))
            }
        }
    }

    /// Removes this consumer and hands back every partition it owns.
    async fn leave(&self) -> Result<()> {
        sqlx::query(&self.shared.sql.release)
            .bind(self.spec.topic())
            .bind(self.spec.group())
            .bind(self.spec.consumer_name())
            .bind(&self.owner)
            .bind(None::<Vec<i32>>)
            .bind(true)
            .execute(&self.shared.pool)
            .await
            .map_err(error::sent)?;
        self.lock().parts.clear();
        self.shared.handovers.fetch_add(1, Ordering::SeqCst);
        self.shared.announce();
        Ok(())
    }

    /// Loads attempts, retry times, done marks and parked keys of newly taken partitions,
    /// then lets them be picked from.
    async fn load_pending(&self, parts: &[u32]) -> Result<()> {
        let ids: Vec<i32> = parts.iter().map(|p| part_i32(*p)).collect();
        let rows = sqlx::query(&self.shared.sql.pending)
            .bind(self.spec.topic())
            .bind(self.spec.group())
            .bind(ids)
            .fetch_all(&self.shared.pool)
            .await
            .map_err(error::sent)?;
        let mut w = self.lock();
        for row in &rows {
            let get = |e: sqlx::Error| Error::corrupt(format!("bus pending row: {e}"));
            let p: i32 = row.try_get("partition").map_err(get)?;
            let Some(part) = u32::try_from(p).ok().and_then(|p| w.parts.get_mut(&p)) else {
                continue;
            };
            let key: Option<String> = row.try_get("key").map_err(get)?;
            if let Some(key) = key {
                let behind: Option<Uuid> = row.try_get("behind").map_err(get)?;
                part.parked.insert(key, behind.unwrap_or_default());
                continue;
            }
            let tx: Option<String> = row.try_get("tx").map_err(get)?;
            let seq: Option<i64> = row.try_get("seq").map_err(get)?;
            let Some(pos) = tx.zip(seq).and_then(|(t, s)| Pos::parse(&t, s)) else {
                continue;
            };
            let attempts: Option<i32> = row.try_get("attempts").map_err(get)?;
            let done: Option<bool> = row.try_get("done").map_err(get)?;
            let due_in: Option<i64> = row.try_get("due_in").map_err(get)?;
            let first_ago: Option<i64> = row.try_get("first_ago").map_err(get)?;
            let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
            part.known.insert(
                pos,
                Known {
                    attempts: attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(0),
                    due_in: due_in.map(ms),
                    first_ago: first_ago.map(ms),
                    done: done.unwrap_or(false),
                },
            );
        }
        for p in parts {
            if let Some(part) = w.parts.get_mut(p) {
                part.releasing = false;
            }
        }
        Ok(())
    }

    /// Reads the next rows of every owned partition whose window has room; true when rows
    /// of these partitions wait above the horizon.
    async fn load(&self) -> Result<bool> {
        let cap = self.shared.options.get_window();
        let (parts, txs, seqs, limits, epochs) = {
            let w = self.lock();
            let mut v = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), BTreeMap::new());
            for (&p, part) in &w.parts {
                let room = cap.saturating_sub(part.entries.len());
                if part.releasing || room == 0 {
                    continue;
                }
                v.0.push(part_i32(p));
                v.1.push(part.read.tx_text());
                v.2.push(part.read.seq);
                v.3.push(i64::try_from(room).unwrap_or(i64::MAX));
                v.4.insert(p, (part.epoch, part.read, room));
            }
            v
        };
        if parts.is_empty() {
            return Ok(false);
        }
        let rows = sqlx::query(&self.shared.sql.load)
            .bind(self.spec.topic())
            .bind(parts)
            .bind(txs)
            .bind(seqs)
            .bind(limits)
            .fetch_all(&self.shared.pool)
            .await
            .map_err(error::sent)?;
        let now = Instant::now();
        let mut blocked = false;
        let mut got: BTreeMap<u32, usize> = BTreeMap::new();
        let mut w = self.lock();
        for row in &rows {
            let get = |e: sqlx::Error| Error::corrupt(format!("outbox row: {e}"));
            let p: i32 = row.try_get("part").map_err(get)?;
            let Ok(p) = u32::try_from(p) else {
                blocked = row.try_get("blocked").map_err(get)?;
                continue;
            };
            let Some(&(epoch, read, _)) = epochs.get(&p) else {
                continue;
            };
            let Some(part) = w.parts.get_mut(&p).filter(|x| x.epoch == epoch && x.read >= read) else {
                continue;
            };
            let entry = entry_from_row(row, part, now)?;
            if entry.pos <= part.read {
                continue;
            }
            part.read = entry.pos;
            part.entries.push_back(entry);
            *got.entry(p).or_default() += 1;
        }
        for (p, (epoch, _, room)) in &epochs {
            if let Some(part) = w.parts.get_mut(p).filter(|x| x.epoch == *epoch) {
                part.more = got.get(p).copied().unwrap_or(0) >= *room;
                // Rows loaded already settled (done marks) leave the window at once.
                part.pop_done();
            }
        }
        let opened = !w.open;
        w.open = true;
        drop(w);
        if !got.is_empty() || opened {
            self.local.notify_waiters();
        }
        Ok(blocked)
    }

    /// Stores the offsets of partitions whose settled prefix got ahead of them (rows
    /// settled out of order, or loaded already done).
    async fn compact(&self) {
        let behind: Vec<(u32, i64, Pos)> = {
            let w = self.lock();
            w.parts
                .iter()
                .filter(|(_, p)| p.done_to > p.floor)
                .map(|(&k, p)| (k, p.epoch, p.done_to))
                .collect()
        };
        for (p, epoch, to) in behind {
            let r = sqlx::query(&self.shared.sql.advance)
                .bind(self.spec.topic())
                .bind(self.spec.group())
                .bind(part_i32(p))
                .bind(&self.owner)
                .bind(epoch)
                .bind(to.tx_text())
                .bind(to.seq)
                .execute(&self.shared.pool)
                .await;
            match r {
                Ok(_) => {
                    if let Some(part) = self.lock().part(p, epoch) {
                        part.floor = part.floor.max(to);
                    }
                }
                Err(e) => self.counters.note_error(format!("storing the offset: {e}")),
            }
        }
    }

    /// Counts lag and published (holding the count turn: see [`Counters::turn`]).
    async fn refresh_counts(&self) {
        let _turn = self.counters.turn.lock().await;
        let row = sqlx::query(&self.shared.sql.metrics)
            .bind(self.spec.topic())
            .bind(self.spec.group())
            .fetch_one(&self.shared.pool)
            .await;
        let Ok(row) = row else {
            return;
        };
        let lag: Option<i64> = row.try_get("lag").ok();
        let published: Option<i64> = row.try_get("published").ok();
        self.counters.set_counts(lag, published);
    }

    async fn coordinate(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let beat = self.beat();
        // First load: wait (up to one ack timeout) until rows committed before the
        // subscription are below the horizon, so the first picks see the whole backlog.
        let deadline = Instant::now() + self.spec.ack_timeout_value();
        let mut pause = Duration::from_millis(1);
        loop {
            match self.load().await {
                Ok(true) if Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(beat);
                }
                Ok(_) => break,
                Err(e) => {
                    self.counters.note_error(e.to_string());
                    break;
                }
            }
        }
        {
            self.lock().open = true;
        }
        self.local.notify_waiters();
        self.refresh_counts().await;
        let poll = self.shared.options.get_poll_interval();
        let mut next_beat = Instant::now() + beat;
        let mut seen = self.shared.handovers.load(Ordering::SeqCst);
        let mut quick: Option<Duration> = None;
        let mut stopping = false;
        loop {
            if self.gone() {
                self.counters.gone.store(true, Ordering::SeqCst);
                self.local.notify_waiters();
                return;
            }
            let woken = self.shared.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let more = self.more.notified();
            tokio::pin!(more);
            more.as_mut().enable();
            let until = quick.map_or(next_beat, |q| next_beat.min(Instant::now() + q));
            tokio::select! {
                () = &mut woken => {}
                () = &mut more => {}
                () = tokio::time::sleep_until(until) => {}
                changed = stop.changed(), if !stopping => {
                    let _ = changed;
                    stopping = true;
                }
            }
            stopping = stopping || *stop.borrow();
            let handovers = self.shared.handovers.load(Ordering::SeqCst);
            if Instant::now() >= next_beat || handovers != seen {
                seen = handovers;
                next_beat = Instant::now() + beat;
                match self.rebalance(!stopping).await {
                    Ok(()) => {}
                    Err(Lost::Gone) => {
                        self.counters.gone.store(true, Ordering::SeqCst);
                        self.local.notify_waiters();
                        return;
                    }
                    Err(Lost::Failed(e)) => self.counters.note_error(format!("rebalance: {e}")),
                }
                self.compact().await;
                self.refresh_counts().await;
            }
            if stopping {
                continue;
            }
            match self.load().await {
                Ok(true) => {
                    let q = quick.map_or(Duration::from_millis(2), |q| q * 2);
                    quick = Some(q.min(poll));
                }
                Ok(false) => quick = None,
                Err(e) => self.counters.note_error(format!("reading the outbox: {e}")),
            }
        }
    }

    async fn work(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let beat = self.beat();
        loop {
            if *stop.borrow() || self.gone() {
                return;
            }
            // The circuit breaker: while open, take nothing (messages stay pending).
            let wait = self
                .breaker()
                .and_then(|mut b| b.try_acquire(self.now_ts()).err());
            if let Some(wait) = wait {
                tokio::select! {
                    () = tokio::time::sleep(wait.min(beat)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let notified = self.local.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pick = self.lock().pick(Instant::now());
            match pick {
                Pick::Deliver(t) => self.deliver(*t).await,
                Pick::DeadLetter(list) => {
                    if let Some(mut b) = self.breaker() {
                        b.release();
                    }
                    for d in list {
                        self.settle_unhandled(d).await;
                    }
                }
                Pick::Wait(until) => {
                    if let Some(mut b) = self.breaker() {
                        b.release();
                    }
                    let dry = {
                        let w = self.lock();
                        let half = self.shared.options.get_window() / 2;
                        w.parts.values().any(|p| p.more && p.entries.len() <= half)
                    };
                    if dry {
                        self.more.notify_one();
                    }
                    let now = Instant::now();
                    let deadline = until.map_or(now + beat, |u| u.min(now + beat));
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(deadline) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    /// Records the delivery (fenced, batched with other workers' by `deliver_batches`),
    /// calls the handler, settles.
    async fn deliver(&self, t: Ticket) {
        let attempt = self
            .delivers
            .submit((t.part, t.epoch, t.pos))
            .await
            .unwrap_or_else(|| Err("the delivery batch task ended".to_owned()));
        let attempt = match attempt {
            Ok(Some(n)) => u32::try_from(n).unwrap_or(1),
            Ok(None) => {
                self.lock().lose(t.part, t.epoch);
                return;
            }
            Err(e) => {
                self.counters.note_error(format!("recording a delivery: {e}"));
                self.lock().release(t.part, t.epoch, t.pos);
                if let Some(mut b) = self.breaker() {
                    b.release();
                }
                tokio::time::sleep(self.beat()).await;
                return;
            }
        };
        self.lock()
            .delivered(t.part, t.epoch, t.pos, attempt, Instant::now());
        let d = Delivery {
            message: t.message,
            topic: self.spec.topic().to_owned(),
            group: self.spec.group().to_owned(),
            consumer: self.spec.consumer_name().to_owned(),
            partition: t.part,
            entry: t.pos.to_string(),
            attempt,
        };
        let gauge = InFlight::enter(&self.counters.in_flight);
        let started = Instant::now();
        let result = AssertUnwindSafe(self.handler.handle(&d)).catch_unwind().await;
        let elapsed = started.elapsed();
        drop(gauge);
        self.counters
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(elapsed);
        let result = result.unwrap_or_else(|_| Err(HandlerError::retryable("handler panicked")));
        let settle = match result {
            Ok(()) => {
                if let Some(mut b) = self.breaker() {
                    b.on_success();
                }
                Settle::Ack
            }
            Err(e) => {
                self.counters.failed.fetch_add(1, Ordering::SeqCst);
                self.counters.note_error(e.to_string());
                if e.kind() != HandlerErrorKind::Undecodable {
                    let now = self.now_ts();
                    if let Some(mut b) = self.breaker() {
                        b.on_failure(now);
                    }
                }
                self.decide((t.part, t.epoch, t.pos), attempt, &e)
            }
        };
        let settle = match settle {
            Settle::DeadLetter(_) if !self.spec.dead_letter_enabled() => Settle::Drop,
            other => other,
        };
        self.settle(
            t.part,
            t.epoch,
            t.pos,
            settle,
            attempt,
            Some((&d.message.key, *d.message.id.as_uuid())),
        )
        .await;
    }

    fn decide(&self, at: (u32, i64, Pos), attempt: u32, e: &HandlerError) -> Settle {
        match e.kind() {
            HandlerErrorKind::Permanent => Settle::DeadLetter(DeadLetterReason::Permanent {
                error: e.message().to_owned(),
            }),
            HandlerErrorKind::Undecodable => Settle::DeadLetter(DeadLetterReason::Undecodable {
                error: e.message().to_owned(),
            }),
            HandlerErrorKind::Retryable => {
                let elapsed = self
                    .lock()
                    .first_at(at.0, at.1, at.2)
                    .map_or(Duration::ZERO, |t| t.elapsed());
                match self.spec.retry_policy().next_delay(attempt, elapsed) {
                    Some(wait) => Settle::Retry(wait, e.message().to_owned()),
                    None => Settle::DeadLetter(DeadLetterReason::MaxAttempts {
                        last_error: e.message().to_owned(),
                    }),
                }
            }
        }
    }

    /// Dead-letters a parked or undecodable row without calling the handler.
    async fn settle_unhandled(&self, d: DeadTicket) {
        let settle = if self.spec.dead_letter_enabled() {
            Settle::DeadLetter(d.reason)
        } else {
            Settle::Drop
        };
        self.settle(d.part, d.epoch, d.pos, settle, d.attempts, None)
            .await;
    }

    /// Ends a delivery in one statement fenced by the lease: acknowledgements (and drops)
    /// join the next batched statement of `ack_batches`; retries and dead letters run their
    /// own (a transaction when it dead-letters, so the counts are stored before the dead
    /// letter is visible).
    async fn settle(
        &self,
        part: u32,
        epoch: i64,
        pos: Pos,
        settle: Settle,
        attempts: u32,
        message: Option<(&str, Uuid)>,
    ) {
        let (kind, floor, want_counts) = {
            let mut w = self.lock();
            let floor = match settle {
                Settle::Retry(..) => None,
                _ => w.floor_after(part, epoch, pos),
            };
            let retry = matches!(settle, Settle::Retry(..));
            // A retry leaves the row pending: it changes no count, so it counts nothing.
            (i32::from(retry), floor, !retry && w.backlog() <= COUNT_BELOW)
        };
        let (wait, last_error) = match &settle {
            Settle::Retry(wait, error) => (millis(*wait), Some(error.clone())),
            _ => (0, None),
        };
        let (reason, error_text, behind) = match &settle {
            Settle::DeadLetter(r) => {
                let (name, err, behind) = reason_columns(r);
                (Some(name), err, behind)
            }
            _ => (None, None, None),
        };
        // Dead letters after attempts or a permanent error park the key (ordered topics).
        let park = match (&settle, message) {
            (
                Settle::DeadLetter(DeadLetterReason::MaxAttempts { .. } | DeadLetterReason::Permanent { .. }),
                Some((key, id)),
            ) => Some((key.to_owned(), id)),
            _ => None,
        };
        let query = sqlx::query(&self.shared.sql.settle)
            .bind(self.spec.topic())
            .bind(self.spec.group())
            .bind(part_i32(part))
            .bind(&self.owner)
            .bind(epoch)
            .bind(pos.tx_text())
            .bind(pos.seq)
            .bind(kind)
            .bind(floor.map(|f| f.tx_text()))
            .bind(floor.map(|f| f.seq))
            .bind(self.ack_ms)
            .bind(wait)
            .bind(last_error)
            .bind(reason)
            .bind(pos.to_string())
            .bind(error_text)
            .bind(behind)
            .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
            .bind(park.as_ref().map(|(k, _)| k.clone()))
            .bind(park.as_ref().map(|(_, id)| *id))
            .bind(want_counts);
        let batched = matches!(settle, Settle::Ack | Settle::Drop);
        let result: std::result::Result<bool, String> = async {
            if batched {
                return self
                    .acks
                    .submit((part, epoch, pos, floor, want_counts))
                    .await
                    .unwrap_or_else(|| Err("the acknowledgement batch task ended".to_owned()));
            }
            let single = async {
                if reason.is_none() {
                    let row = query.fetch_one(&self.shared.pool).await?;
                    return Ok(row.try_get::<i64, _>("owned")? > 0);
                }
                // A dead letter settles its row: it holds the count turn until it commits.
                let _turn = self.counters.turn.lock().await;
                let mut tx = crate::begin(&self.shared.pool).await?;
                let row = query.fetch_one(&mut *tx).await?;
                let owned = row.try_get::<i64, _>("owned")? > 0;
                // Counted before the dead letter becomes visible, as the counts are.
                let mut before = None;
                if owned {
                    before = Some(
                        self.counters
                            .set_counts(row.try_get("lag")?, row.try_get("published")?),
                    );
                    self.counters.dead_lettered.fetch_add(1, Ordering::SeqCst);
                }
                if let Err(e) = tx.commit().await {
                    if let Some(before) = before {
                        self.counters.restore_counts(before);
                        self.counters.dead_lettered.fetch_sub(1, Ordering::SeqCst);
                    }
                    return Err(e);
                }
                Ok(owned)
            };
            single.await.map_err(|e: sqlx::Error| e.to_string())
        }
        .await;
        match result {
            Ok(true) => {
                let mut w = self.lock();
                match settle {
                    Settle::Retry(wait, _) => {
                        w.retry(part, epoch, pos, Instant::now() + wait);
                        drop(w);
                        self.counters.retried.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        if let Some((key, id)) = &park {
                            w.park(part, epoch, key, *id);
                        }
                        w.settled(part, epoch, pos, floor);
                        drop(w);
                        match other {
                            Settle::Ack => self.counters.handled.fetch_add(1, Ordering::SeqCst),
                            _ => 0,
                        };
                    }
                }
                self.local.notify_waiters();
            }
            Ok(false) => {
                self.lock().lose(part, epoch);
            }
            Err(e) => {
                self.counters.note_error(format!("settling a delivery: {e}"));
                self.lock().release(part, epoch, pos);
                self.local.notify_waiters();
            }
        }
    }

    /// Records the queued deliveries, one statement per batch, until aborted.
    async fn deliver_batches(self: Arc<Self>) {
        loop {
            let batch = self.delivers.take().await;
            let mut v = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for ((part, epoch, pos), _) in &batch {
                v.0.push(part_i32(*part));
                v.1.push(*epoch);
                v.2.push(pos.tx_text());
                v.3.push(pos.seq);
            }
            let mut tries = 0;
            let rows = loop {
                let r = sqlx::query(&self.shared.sql.deliver_batch)
                    .bind(self.spec.topic())
                    .bind(self.spec.group())
                    .bind(&self.owner)
                    .bind(self.ack_ms)
                    .bind(self.spec.consumer_name())
                    .bind(&v.0)
                    .bind(&v.1)
                    .bind(&v.2)
                    .bind(&v.3)
                    .fetch_all(&self.shared.pool)
                    .await;
                match r {
                    Err(e) if is_retryable(&e) && tries + 1 < TRIES => tries += 1,
                    other => break other,
                }
            };
            let rows = rows.map_err(|e| e.to_string()).and_then(|rows| {
                let mut got = BTreeMap::new();
                for row in &rows {
                    let p: i32 = row.try_get("partition").map_err(|e| e.to_string())?;
                    let tx: String = row.try_get("tx").map_err(|e| e.to_string())?;
                    let seq: i64 = row.try_get("seq").map_err(|e| e.to_string())?;
                    let n: i32 = row.try_get("attempts").map_err(|e| e.to_string())?;
                    if let Some(pos) = Pos::parse(&tx, seq) {
                        got.insert((p, pos), n);
                    }
                }
                Ok(got)
            });
            for ((part, _, pos), reply) in batch {
                let out = match &rows {
                    Ok(got) => Ok(got.get(&(part_i32(part), pos)).copied()),
                    Err(e) => Err(e.clone()),
                };
                let _ = reply.send(out);
            }
        }
    }

    /// Acknowledges the queued deliveries, one statement per batch, until aborted.
    async fn ack_batches(self: Arc<Self>) {
        loop {
            let batch = self.acks.take().await;
            // Per partition (and epoch): the furthest new floor of its settles.
            let mut floors: BTreeMap<(u32, i64), Option<Pos>> = BTreeMap::new();
            let mut rows = (Vec::new(), Vec::new(), Vec::new());
            let mut want = false;
            for ((part, epoch, pos, floor, counts), _) in &batch {
                let f = floors.entry((*part, *epoch)).or_default();
                *f = (*f).max(*floor);
                rows.0.push(part_i32(*part));
                rows.1.push(pos.tx_text());
                rows.2.push(pos.seq);
                want |= *counts;
            }
            let mut parts = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for ((part, epoch), floor) in &floors {
                parts.0.push(part_i32(*part));
                parts.1.push(*epoch);
                parts.2.push(floor.map(|f| f.tx_text()));
                parts.3.push(floor.map(|f| f.seq));
            }
            let mut tries = 0;
            // Acknowledgements change the lag: the batch holds the count turn.
            let turn = self.counters.turn.lock().await;
            let row = loop {
                let r = sqlx::query(&self.shared.sql.ack_batch)
                    .bind(self.spec.topic())
                    .bind(self.spec.group())
                    .bind(&self.owner)
                    .bind(self.ack_ms)
                    .bind(&parts.0)
                    .bind(&parts.1)
                    .bind(&parts.2)
                    .bind(&parts.3)
                    .bind(&rows.0)
                    .bind(&rows.1)
                    .bind(&rows.2)
                    .bind(want)
                    .fetch_one(&self.shared.pool)
                    .await;
                match r {
                    Err(e) if is_retryable(&e) && tries + 1 < TRIES => tries += 1,
                    other => break other,
                }
            };
            let owned = row.map_err(|e| e.to_string()).and_then(|row| {
                let owned: Vec<i32> = row.try_get("owned").map_err(|e| e.to_string())?;
                if !owned.is_empty() {
                    let lag: Option<i64> = row.try_get("lag").map_err(|e| e.to_string())?;
                    let published: Option<i64> = row.try_get("published").map_err(|e| e.to_string())?;
                    self.counters.set_counts(lag, published);
                }
                Ok(owned)
            });
            drop(turn);
            for ((part, ..), reply) in batch {
                let out = match &owned {
                    Ok(owned) => Ok(owned.contains(&part_i32(part))),
                    Err(e) => Err(e.clone()),
                };
                let _ = reply.send(out);
            }
        }
    }
}

/// The owned partitions from the rebalance row: partition -> (epoch, offset).
fn owned_parts(row: &PgRow) -> Result<BTreeMap<u32, (i64, Pos)>> {
    let get = |e: sqlx::Error| Error::corrupt(format!("rebalance row: {e}"));
    let parts: Vec<i32> = row.try_get("parts").map_err(get)?;
    let epochs: Vec<i64> = row.try_get("epochs").map_err(get)?;
    let txs: Vec<String> = row.try_get("floors_tx").map_err(get)?;
    let seqs: Vec<i64> = row.try_get("floors_seq").map_err(get)?;
    let mut out = BTreeMap::new();
    for (((p, e), t), s) in parts.into_iter().zip(epochs).zip(txs).zip(seqs) {
        let pos = Pos::parse(&t, s).ok_or_else(|| Error::corrupt(format!("stored offset {t}:{s}")))?;
        if let Ok(p) = u32::try_from(p) {
            out.insert(p, (e, pos));
        }
    }
    Ok(out)
}

/// A window entry from a loaded outbox row, with what the pending table knew about it.
fn entry_from_row(row: &PgRow, part: &mut Part, now: Instant) -> Result<Entry> {
    let get = |e: sqlx::Error| Error::corrupt(format!("outbox row: {e}"));
    let tx: String = row.try_get("tx").map_err(get)?;
    let seq: i64 = row.try_get("seq").map_err(get)?;
    let pos = Pos::parse(&tx, seq).ok_or_else(|| Error::corrupt(format!("outbox position {tx}:{seq}")))?;
    let key: String = row.try_get("key").map_err(get)?;
    let priority: i16 = row.try_get("priority").map_err(get)?;
    let id: Uuid = row.try_get("id").map_err(get)?;
    let headers: String = row.try_get("headers").map_err(get)?;
    let content_type: String = row.try_get("content_type").map_err(get)?;
    let payload: Vec<u8> = row.try_get("payload").map_err(get)?;
    let body = match decode(id, key.clone(), priority, &headers, &content_type, payload) {
        Ok(m) => Body::Message(m),
        Err(e) => Body::Undecodable(e),
    };
    let priority = match &body {
        Body::Message(m) => m.priority,
        Body::Undecodable(_) => cqrs_core::bus::Priority::Normal,
    };
    let known = part.known.remove(&pos).unwrap_or_default();
    Ok(Entry {
        pos,
        key,
        priority,
        body,
        attempts: known.attempts,
        due: known.due_in.map(|d| now + d),
        first_at: known.first_ago.and_then(|a| now.checked_sub(a)),
        in_flight: false,
        done: known.done,
    })
}

struct Tasks {
    workers: Vec<JoinHandle<()>>,
    coordinator: JoinHandle<()>,
    batches: Vec<JoinHandle<()>>,
}

/// A subscription to a [`PgBus`](super::PgBus) topic.
struct PgSubscription {
    consumer: Arc<Consumer>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Option<Tasks>>,
    name: String,
}

impl PgSubscription {
    fn take_tasks(&self) -> Option<Tasks> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl fmt::Debug for PgSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSubscription")
            .field("topic", &self.consumer.spec.topic())
            .field("group", &self.consumer.spec.group())
            .field("consumer", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Subscription for PgSubscription {
    fn consumer(&self) -> &str {
        &self.name
    }

    fn metrics(&self) -> SubscriptionMetrics {
        let c = &self.consumer.counters;
        let (lag, published) = *c.counts.lock().unwrap_or_else(PoisonError::into_inner);
        SubscriptionMetrics {
            published,
            handled: c.handled.load(Ordering::SeqCst),
            failed: c.failed.load(Ordering::SeqCst),
            retried: c.retried.load(Ordering::SeqCst),
            dead_lettered: c.dead_lettered.load(Ordering::SeqCst),
            in_flight: c.in_flight.load(Ordering::SeqCst),
            lag,
            latency: c
                .latency
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .percentiles(),
        }
    }

    fn health(&self) -> Health {
        let c = &self.consumer.counters;
        let status = if c.stopped.load(Ordering::SeqCst) || c.gone.load(Ordering::SeqCst) {
            HealthStatus::Stopped
        } else if c.stopping.load(Ordering::SeqCst) {
            HealthStatus::Stopping
        } else {
            HealthStatus::Running
        };
        let now = self.consumer.now_ts();
        let breaker = self
            .consumer
            .breaker()
            .map_or(BreakerState::Closed, |b| b.state(now));
        Health {
            status,
            breaker,
            owned_partitions: self.consumer.lock().parts.keys().copied().collect(),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    async fn stop(self: Box<Self>) -> Result<()> {
        let c = &self.consumer;
        c.counters.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        if let Some(mut tasks) = self.take_tasks() {
            // In-flight handlers get one ack timeout to finish; then they are dropped and
            // their messages released for redelivery (`leave` below).
            let grace = c.spec.ack_timeout_value();
            let all = futures::future::join_all(tasks.workers.iter_mut());
            if tokio::time::timeout(grace, all).await.is_err() {
                for w in &tasks.workers {
                    w.abort();
                }
            }
            tasks.coordinator.abort();
            for b in &tasks.batches {
                b.abort();
            }
        }
        let left = c.leave().await;
        c.counters.stopped.store(true, Ordering::SeqCst);
        match left {
            // A closed bus or pool: the leases expire after the ack timeout.
            Err(Error::Closed) => Ok(()),
            Err(_) if c.shared.check_open().is_err() => Ok(()),
            other => other,
        }
    }

    fn abort(self: Box<Self>) {
        // Drop does it.
    }
}

impl Drop for PgSubscription {
    fn drop(&mut self) {
        if let Some(tasks) = self.take_tasks() {
            for w in tasks.workers {
                w.abort();
            }
            tasks.coordinator.abort();
            for b in tasks.batches {
                b.abort();
            }
            self.consumer.counters.stopped.store(true, Ordering::SeqCst);
        }
    }
}
