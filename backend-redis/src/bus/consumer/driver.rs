//! The driver task of a subscription: ownership of partitions, the windows of read
//! entries, and which ready message is handled next.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use super::delivery::{Event, Handled, PendingAck, Pick, Settle};

use cqrs_core::{
    bus::{DeadLetterReason, IntSet, Priority, PriorityScheduler},
    Result,
};
use futures::{stream::FuturesUnordered, FutureExt, StreamExt};
use redis::Value;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::Instant,
};

use super::{lock, Ctx};
use crate::bus::codec::{self, entry_id, Body, Entry};
use crate::bus::scripts;
use crate::conn::reply;

/// [`cqrs_core::bus::key_hash`] of an entry's message key (an undecodable entry has none):
/// dispatch rounds compare keys by it.
fn key_hash(entry: &Entry) -> u64 {
    match &entry.body {
        Body::Message(m) => cqrs_core::bus::key_hash(&m.key),
        _ => cqrs_core::bus::key_hash(""),
    }
}

/// How often an ack flush asks for the stats of a partition whose window it does not empty.
const STATS_EVERY: Duration = Duration::from_millis(20);

/// How a job ended, for the driver's window.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome {
    /// Settled: the entry leaves the window.
    Done,
    /// Failed, retried at this time.
    Retry(Instant),
    /// The partition's lease is gone: drop the partition.
    Lost,
    /// A transport error: try the entry again later.
    Failed,
}

/// A delivery's end (settled, or given back to the window).
pub(super) struct JobDone {
    pub(super) p: u32,
    pub(super) id: (u64, u64),
    pub(super) outcome: Outcome,
}

/// One partition's read.
struct PartRead {
    p: u32,
    /// The room asked for.
    room: usize,
    entries: Vec<Entry>,
    /// Another Redis consumer holds pending entries of the partition (a stray read).
    strays: bool,
}

/// What a delivery task tells the driver.
enum Msg {
    /// The start script answered: the picks that ended without a handler call, and the
    /// ends of the acks it carried (`None`: it carried no ack flush).
    Started(Vec<JobDone>, Option<Vec<JobDone>>),
    /// Handlers returned (all those that had when the delivery task looked: one message,
    /// and one wake-up of the driver, for a batch of quick handlers).
    Handled(Vec<Handled>),
}

/// Which work a job did.
enum Kind {
    /// Read new entries.
    Read(Result<Vec<PartRead>>),
    /// Flushed acks.
    Flush,
    /// Settled one delivery.
    Settle,
}

/// What a job answers: the events of its deliveries.
struct JobResult {
    kind: Kind,
    events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Ready,
    Due(Instant),
    Busy,
}

struct Slot {
    entry: Entry,
    /// The hash of the message's key ([`key_hash`]), computed once.
    key: u64,
    state: SlotState,
    /// Read new (`XREADGROUP '>'`) by this owner and never started: it has no attempt
    /// record, so its start writes one without reading.
    fresh: bool,
}

/// An owned partition.
struct Part {
    /// While taking over pending entries: the XAUTOCLAIM cursor.
    claiming: Option<String>,
    /// Taking over entries another consumer read by mistake (a stray read after it lost
    /// the lease): nothing of the partition starts until they are in the window, since
    /// they may be older than entries of their keys already there.
    sweep: bool,
    window: BTreeMap<(u64, u64), Slot>,
    in_flight: usize,
    releasing: bool,
    /// The last read filled the window: more may be waiting.
    more: bool,
    /// When an ack flush last asked for the partition's stats.
    stats_at: Instant,
    /// The window may hold a slot waiting for a retry (false: it holds none), so the
    /// driver's loop looks through this window only, and only while there may be one.
    may_be_due: bool,
    /// The window may hold an undecodable entry not yet sent to the dead letter.
    may_be_undecodable: bool,
}

impl Part {
    fn new() -> Self {
        Part {
            claiming: Some("0-0".to_owned()),
            sweep: false,
            window: BTreeMap::new(),
            in_flight: 0,
            releasing: false,
            more: false,
            stats_at: Instant::now(),
            may_be_due: false,
            may_be_undecodable: false,
        }
    }
}

pub(super) struct Driver {
    ctx: Arc<Ctx>,
    owned: BTreeMap<u32, Part>,
    /// Redis work: starting deliveries, settling them, flushing acks.
    jobs: JoinSet<JobResult>,
    /// Deliveries: one task per batch of picks starts them (one script call), answers
    /// which did not start, then calls their handlers and answers each result as it
    /// returns (no-op handlers of a batch all answer in one poll).
    handlers: JoinSet<()>,
    msg_tx: mpsc::UnboundedSender<Msg>,
    msg_rx: mpsc::UnboundedReceiver<Msg>,
    /// Picked messages whose handler has not returned yet: those whose handler runs (at
    /// most the concurrency, by the subscription's permits) and those started ahead.
    running: usize,
    /// How many deliveries may be started ahead of a free handler permit: one
    /// concurrency's worth, so the next start is on its way (and carries twice as many
    /// deliveries) while the handlers of the last one run, instead of a start's round trip
    /// between one handler call and the next. None with a circuit breaker: a delivery
    /// started ahead would be handled after the breaker opened (or have its attempt
    /// counted twice if given back).
    ahead: usize,
    /// Handled entries waiting for the next ack flush: one flush runs at a time, and the
    /// acks that come in meanwhile go together in the next (one script call for many).
    acks: Vec<PendingAck>,
    flushing: bool,
    /// A start job runs: the next one waits for it and takes every slot freed meanwhile
    /// (one script call for many deliveries instead of one per freed slot).
    starting: bool,
    /// A read job runs.
    reading: bool,
    scheduler: PriorityScheduler,
    /// The key hashes a dispatch round has met in a window (kept to reuse its memory).
    seen: IntSet<u64>,
}

impl Driver {
    pub(super) fn new(ctx: Arc<Ctx>) -> Self {
        let bypass = ctx.shared.options.priority_bypass;
        let ahead = if ctx.counters.breaker.is_some() {
            0
        } else {
            ctx.spec.concurrency_limit()
        };
        let (msg_tx, msg_rx) = mpsc::unbounded_channel();
        Driver {
            ctx,
            owned: BTreeMap::new(),
            jobs: JoinSet::new(),
            handlers: JoinSet::new(),
            msg_tx,
            msg_rx,
            running: 0,
            ahead,
            acks: Vec::new(),
            flushing: false,
            starting: false,
            reading: false,
            scheduler: PriorityScheduler::new(bypass),
            seen: IntSet::default(),
        }
    }

    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let ctx = self.ctx.clone();
        let block = ctx.shared.options.block;
        let mut next_maint = Instant::now();
        let mut next_poll = Instant::now();
        let mut read_now = true;
        // `notify_waiters` wakes only the waiters registered when it runs: these stay
        // registered from one iteration to the next (the next one is registered before the
        // last one is looked at), so a publish while the loop works, or while `select!`
        // takes another ready branch, is not lost (it was: a read then waited for the poll).
        let mut published = Box::pin(ctx.shared.published.notified());
        let mut rebalance = Box::pin(ctx.shared.rebalance.notified());
        published.as_mut().enable();
        rebalance.as_mut().enable();
        loop {
            if *stop.borrow() || ctx.shared.check_open().is_err() {
                break;
            }

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
            // A read asked for while one runs waits for it: what it missed is read next.
            if (read_now || Instant::now() >= next_poll) && !self.reading {
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
            self.flush_acks();

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
                    if self.job_done(done) | self.drain() {
                        read_now = true;
                    }
                    if self.owned.values().any(|p| p.releasing && p.in_flight == 0) {
                        next_maint = Instant::now();
                    }
                }
                Some(msg) = self.msg_rx.recv() => {
                    if self.message(msg) | self.drain() {
                        read_now = true;
                    }
                }
                Some(_) = self.handlers.join_next(), if !self.handlers.is_empty() => {}
                () = published.as_mut() => read_now = true,
                () = rebalance.as_mut() => next_maint = Instant::now(),
                () = ctx.wake.notified() => {}
                () = tokio::time::sleep_until(until) => {}
                _ = stop.changed() => {}
            }
            let mut next = Box::pin(ctx.shared.published.notified());
            next.as_mut().enable();
            let last = std::mem::replace(&mut published, next);
            // Notified (by the branch above or meanwhile) or not: a completed one answers
            // ready again, so this never blocks.
            if last.now_or_never().is_some() {
                read_now = true;
            }
            let mut next = Box::pin(ctx.shared.rebalance.notified());
            next.as_mut().enable();
            if std::mem::replace(&mut rebalance, next).now_or_never().is_some() {
                next_maint = Instant::now();
            }
        }
        self.shutdown().await
    }

    /// Graceful end: in-flight handlers get one ack timeout to finish (then are dropped,
    /// their entries staying pending), leases are released and the consumer leaves, so
    /// another consumer takes the partitions over at once.
    async fn shutdown(mut self) -> Result<()> {
        let deadline = Instant::now() + self.ctx.spec.ack_timeout_value();
        loop {
            self.drain();
            self.flush_acks();
            if self.jobs.is_empty() && self.handlers.is_empty() {
                break;
            }
            tokio::select! {
                Some(done) = self.jobs.join_next(), if !self.jobs.is_empty() => { self.job_done(done); }
                Some(msg) = self.msg_rx.recv() => { self.message(msg); }
                Some(_) = self.handlers.join_next(), if !self.handlers.is_empty() => {}
                () = tokio::time::sleep_until(deadline) => {
                    self.handlers.abort_all();
                    self.jobs.abort_all();
                    while self.handlers.join_next().await.is_some() {}
                    while self.jobs.join_next().await.is_some() {}
                    break;
                }
            }
        }
        // Handlers that returned Ok before the grace ran out are acknowledged still.
        if !self.acks.is_empty() {
            let acks = std::mem::take(&mut self.acks);
            let all: Vec<u32> = self.owned.keys().copied().collect();
            let _ = self.ctx.ack(acks, &all).await;
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
    /// order, here), then new entries (by a read job, so the driver goes on dispatching
    /// and settling meanwhile). Returns how many pending entries came in.
    async fn read(&mut self) -> Result<usize> {
        let ctx = self.ctx.clone();
        let batch = ctx.shared.options.read_batch;
        let mut got = 0;
        // A sweep pages through the whole pending list (the window's own entries are
        // skipped) whatever the room: it blocks the partition until done.
        let claiming: Vec<(u32, String, usize)> = self
            .owned
            .iter()
            .filter(|(_, part)| !part.releasing && (part.sweep || part.window.len() < batch))
            .filter_map(|(p, part)| {
                let room = if part.sweep {
                    batch
                } else {
                    batch - part.window.len()
                };
                part.claiming.clone().map(|c| (*p, c, room))
            })
            .collect();
        for (p, cursor, room) in claiming {
            got += self.claim(p, &cursor, room).await?;
        }
        // A partition is read when half its window is free, or when its last read did not
        // fill it (caught up: what comes in is new and wanted at once).
        let reading: Vec<(u32, usize)> = self
            .owned
            .iter()
            .filter(|(_, part)| {
                !part.releasing
                    && part.claiming.is_none()
                    && part.window.len() < batch
                    && (!part.more || part.window.len() * 2 <= batch)
            })
            .map(|(p, part)| (*p, batch - part.window.len()))
            .collect();
        if !reading.is_empty() {
            self.reading = true;
            self.jobs.spawn(async move {
                let reads = read_new(&ctx, &reading).await;
                JobResult {
                    kind: Kind::Read(reads),
                    events: Vec::new(),
                }
            });
        }
        Ok(got)
    }

    /// Applies a read job's answer: entries into the windows, lost partitions dropped.
    /// Returns how many entries came in.
    fn apply_read(&mut self, reads: Result<Vec<PartRead>>) -> usize {
        self.reading = false;
        let reads = match reads {
            Ok(r) => r,
            Err(e) => {
                self.ctx.counters.note_error(e);
                // The read may have run on the server with its answer lost (a dropped
                // connection, a killed server restarted from its AOF): its entries then sit
                // in this subscription's own pending list, in no window. A sweep takes the
                // whole pending list back (the window's entries stay as they are).
                for part in self.owned.values_mut() {
                    if !part.releasing && part.claiming.is_none() {
                        part.sweep = true;
                        part.claiming = Some("0-0".to_owned());
                    }
                }
                return 0;
            }
        };
        let mut got = 0;
        for PartRead {
            p,
            room,
            entries,
            strays,
        } in reads
        {
            got += entries.len();
            // A partition released meanwhile: its new owner sweeps what was read.
            let Some(part) = self.owned.get_mut(&p) else {
                continue;
            };
            if strays && part.claiming.is_none() {
                part.sweep = true;
                part.claiming = Some("0-0".to_owned());
                got += 1;
            }
            part.more = entries.len() >= room;
            for entry in entries {
                part.may_be_undecodable |= matches!(entry.body, Body::Undecodable(_));
                if let Some(id) = entry_id(&entry.id) {
                    part.window.insert(
                        id,
                        Slot {
                            key: key_hash(&entry),
                            entry,
                            state: SlotState::Ready,
                            fresh: true,
                        },
                    );
                }
            }
        }
        got
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
                    .arg(&ctx.token)
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
            part.may_be_due |= matches!(state, SlotState::Due(_));
            part.may_be_undecodable |= matches!(entry.body, Body::Undecodable(_));
            // A sweep meets the window's own entries again: they stay as they are.
            if let Some(id) = entry_id(&entry.id) {
                part.window.entry(id).or_insert(Slot {
                    key: key_hash(&entry),
                    entry,
                    state,
                    fresh: false,
                });
            }
        }
        part.claiming = (next != "0-0").then_some(next);
        if part.claiming.is_none() {
            part.sweep = false;
        }
        part.more = part.claiming.is_some();
        Ok(n)
    }

    /// The earliest retry due in an owned window.
    fn next_due(&mut self) -> Option<Instant> {
        let mut first: Option<Instant> = None;
        for part in self.owned.values_mut() {
            if part.releasing || !part.may_be_due {
                continue;
            }
            let due = part
                .window
                .values()
                .filter_map(|s| match s.state {
                    SlotState::Due(t) => Some(t),
                    _ => None,
                })
                .min();
            part.may_be_due = due.is_some();
            first = match (first, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        first
    }

    /// Starts jobs: undecodable entries go to the dead letter at once; then ready messages
    /// (the oldest unsettled of each key) up to the concurrency, most urgent first. Returns
    /// how long the circuit breaker keeps the handler closed off, if it does.
    fn dispatch(&mut self) -> Option<Duration> {
        let ctx = self.ctx.clone();
        let now = Instant::now();
        let mut undecodable = Vec::new();
        for (p, part) in &mut self.owned {
            if part.releasing || !part.may_be_undecodable {
                continue;
            }
            part.may_be_undecodable = false;
            for (id, slot) in &mut part.window {
                let Body::Undecodable(why) = &slot.entry.body else {
                    continue;
                };
                match slot.state {
                    SlotState::Ready => {}
                    // A dead letter that failed to write is tried again when due.
                    SlotState::Due(t) if t <= now => {}
                    SlotState::Due(_) => {
                        part.may_be_undecodable = true;
                        continue;
                    }
                    SlotState::Busy => continue,
                }
                slot.state = SlotState::Busy;
                part.in_flight += 1;
                undecodable.push((*p, *id, slot.entry.id.clone(), why.clone()));
            }
        }
        for (p, id, entry, why) in undecodable {
            let c = ctx.clone();
            self.jobs.spawn(async move {
                let reason = DeadLetterReason::Undecodable { error: why };
                let outcome = c.settle(p, &entry, Settle::Dead(reason, None)).await;
                JobResult {
                    kind: Kind::Settle,
                    events: vec![Event::Done(JobDone { p, id, outcome })],
                }
            });
        }
        let free = ctx
            .spec
            .concurrency_limit()
            .saturating_add(self.ahead)
            .saturating_sub(self.running);
        if free == 0 || self.starting {
            return None;
        }
        // The ready messages (the oldest unsettled of each key), once per round: a pick
        // makes no other message ready (its key's next one waits for it).
        let mut ready: Vec<(Priority, (u64, u64), u32)> = Vec::new();
        for (p, part) in &self.owned {
            if part.releasing || part.sweep {
                continue;
            }
            self.seen.clear();
            for (id, slot) in &part.window {
                let Body::Message(m) = &slot.entry.body else {
                    continue;
                };
                if !self.seen.insert(slot.key) {
                    continue;
                }
                match slot.state {
                    SlotState::Ready => ready.push((m.priority, *id, *p)),
                    SlotState::Due(t) if t <= now => ready.push((m.priority, *id, *p)),
                    _ => {}
                }
            }
        }
        // Publish order across partitions, approximated by entry id (server time).
        ready.sort_by_key(|(_, id, p)| (*id, *p));
        // The ready messages by priority, each queue in publish order: the scheduler's
        // answer over all of them is always the front of one queue (the most urgent is the
        // front of its queue, the oldest the first of the fronts), so it is asked about the
        // fronts only: a pick costs the number of priorities, not of ready messages.
        let mut queues: Vec<(Priority, std::collections::VecDeque<u64>)> = Vec::new();
        for ((pr, _, _), i) in ready.iter().zip(0u64..) {
            match queues.iter_mut().find(|(q, _)| q == pr) {
                Some((_, queue)) => queue.push_back(i),
                None => queues.push((*pr, std::collections::VecDeque::from([i]))),
            }
        }
        let mut picks = Vec::new();
        let mut breaker_wait = None;
        while picks.len() < free {
            let fronts = queues
                .iter()
                .filter_map(|(pr, queue)| queue.front().map(|i| (*pr, *i)));
            if fronts.clone().next().is_none() {
                break;
            }
            if let Some(mut b) = ctx.breaker() {
                if let Err(wait) = b.try_acquire(ctx.now_ts()) {
                    breaker_wait = Some(wait);
                    break;
                }
            }
            let Some(seq) = self.scheduler.pick(fronts) else {
                break;
            };
            let Some((_, queue)) = queues.iter_mut().find(|(_, queue)| queue.front() == Some(&seq)) else {
                break;
            };
            queue.pop_front();
            let Some(&(_, id, p)) = usize::try_from(seq).ok().and_then(|i| ready.get(i)) else {
                break;
            };
            let Some(part) = self.owned.get_mut(&p) else {
                continue;
            };
            let Some(slot) = part.window.get_mut(&id) else {
                continue;
            };
            let Body::Message(message) = &slot.entry.body else {
                continue;
            };
            slot.state = SlotState::Busy;
            part.in_flight += 1;
            picks.push(Pick {
                p,
                id,
                entry: slot.entry.id.clone(),
                message: message.clone(),
                fresh: std::mem::take(&mut slot.fresh),
            });
        }
        if !picks.is_empty() {
            self.running += picks.len();
            self.starting = true;
            // The acks waiting go with the start: one script call instead of two.
            let (acks, stats) = self.take_acks();
            let flush = !acks.is_empty();
            let (c, tx) = (ctx.clone(), self.msg_tx.clone());
            // The driver holds the receiver as long as it runs: sends cannot fail before.
            self.handlers.spawn(async move {
                let mut started = Vec::new();
                let mut ended = Vec::new();
                let (events, acked) = c.start(picks, acks, &stats).await;
                for event in events {
                    match event {
                        Event::Start(s) => started.push(s),
                        Event::Done(d) => ended.push(d),
                    }
                }
                let _ = tx.send(Msg::Started(ended, flush.then_some(acked)));
                let mut calls: FuturesUnordered<_> = started
                    .into_iter()
                    .map(|s| {
                        let c = &c;
                        async move {
                            // The semaphore is never closed: an error cannot happen.
                            let _permit = c.permits.acquire().await.ok();
                            c.handle(s).await
                        }
                    })
                    .collect();
                while let Some(h) = calls.next().await {
                    let mut done = vec![h];
                    while let Some(Some(h)) = calls.next().now_or_never() {
                        done.push(h);
                    }
                    let _ = tx.send(Msg::Handled(done));
                }
            });
        }
        breaker_wait
    }

    /// Applies every job and handler already finished, so the next dispatch and flush
    /// take them all at once. True when a read may find more.
    fn drain(&mut self) -> bool {
        let mut more = false;
        loop {
            let mut any = false;
            while let Ok(msg) = self.msg_rx.try_recv() {
                more |= self.message(msg);
                any = true;
            }
            while self.handlers.try_join_next().is_some() {}
            while let Some(done) = self.jobs.try_join_next() {
                more |= self.job_done(done);
                any = true;
            }
            if !any {
                return more;
            }
        }
    }

    /// Starts an ack flush unless one runs or nothing waits. While a start runs, the acks
    /// wait for the next one, which takes them along (or for its end, when it picks nothing).
    fn flush_acks(&mut self) {
        if self.starting {
            return;
        }
        let (acks, stats) = self.take_acks();
        if acks.is_empty() {
            return;
        }
        let c = self.ctx.clone();
        self.jobs.spawn(async move {
            JobResult {
                kind: Kind::Flush,
                events: c.ack(acks, &stats).await,
            }
        });
    }

    /// The acks waiting, for a flush, unless one runs; and the partitions whose stats it
    /// asks for.
    fn take_acks(&mut self) -> (Vec<PendingAck>, Vec<u32>) {
        if self.flushing || self.acks.is_empty() {
            return (Vec::new(), Vec::new());
        }
        self.flushing = true;
        let acks = std::mem::take(&mut self.acks);
        // Stats (for lag and published) where this flush empties the window, and at most
        // every STATS_EVERY elsewhere: exact once caught up, close meanwhile.
        let now = Instant::now();
        let mut stats = Vec::new();
        for (p, part) in &mut self.owned {
            let n = acks.iter().filter(|(q, _, _)| q == p).count();
            if n > 0 && (part.window.len() <= n || now >= part.stats_at + STATS_EVERY) {
                part.stats_at = now;
                stats.push(*p);
            }
        }
        (acks, stats)
    }

    /// A handler returned: an Ok waits for the next ack flush, anything else is settled
    /// by its own script.
    fn handled(&mut self, handled: Handled) {
        self.running = self.running.saturating_sub(1);
        let Handled { p, id, entry, settle } = handled;
        if matches!(settle, Settle::Ack) {
            self.acks.push((p, id, entry));
            return;
        }
        let c = self.ctx.clone();
        self.jobs.spawn(async move {
            let outcome = c.settle(p, &entry, settle).await;
            JobResult {
                kind: Kind::Settle,
                events: vec![Event::Done(JobDone { p, id, outcome })],
            }
        });
    }

    /// Applies a finished job: starts the handlers of started deliveries and applies the
    /// ends to the windows. True when a read may find more.
    fn job_done(&mut self, done: std::result::Result<JobResult, tokio::task::JoinError>) -> bool {
        let Ok(JobResult { kind, events }) = done else {
            // A job only ends this way when aborted at shutdown.
            return false;
        };
        let mut more = false;
        match kind {
            Kind::Flush => self.flushing = false,
            Kind::Read(reads) => more |= self.apply_read(reads) > 0,
            Kind::Settle => {}
        }
        for event in events {
            if let Event::Done(d) = event {
                more |= self.finish(d);
            }
        }
        more
    }

    /// Applies a delivery task's message. True when a read may find more.
    fn message(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Started(ended, acked) => {
                self.starting = false;
                let mut more = false;
                for d in ended {
                    // Ended without a handler call: its slot is free again.
                    self.running = self.running.saturating_sub(1);
                    more |= self.finish(d);
                }
                if let Some(acked) = acked {
                    self.flushing = false;
                    for d in acked {
                        more |= self.finish(d);
                    }
                }
                more
            }
            Msg::Handled(all) => {
                for h in all {
                    self.handled(h);
                }
                false
            }
        }
    }

    /// Applies a finished job to the window; true when a read may find more.
    fn finish(&mut self, done: JobDone) -> bool {
        let JobDone { p, id, outcome } = done;
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
                    part.may_be_due = true;
                }
            }
            Outcome::Failed => {
                if let Some(s) = part.window.get_mut(&id) {
                    s.state = SlotState::Due(Instant::now() + block);
                    part.may_be_due = true;
                    part.may_be_undecodable |= matches!(s.entry.body, Body::Undecodable(_));
                }
            }
            Outcome::Lost => {}
        }
        // Refill once half the window is free: one read for many entries, not one per
        // settled entry (the poll and publishes through this bus read anyway).
        part.more && part.window.len() * 2 <= self.ctx.shared.options.read_batch
    }
}

/// Reads up to `room` new entries of each partition with plain `XREADGROUP` (no script:
/// the entries do not pass through Lua), each followed in the same pipeline by the
/// partition's `XPENDING` summary. One pipeline on a single node, one per partition
/// (concurrently) on a cluster.
///
/// Fencing: a consumer that lost a partition's lease may still read it once (a read sent
/// before it noticed). Such a stray read can only move entries into the pending list of
/// another Redis consumer (each subscription reads as its own token), and the owner sees it
/// in the summary that follows its own next read at the latest: a partition whose summary
/// shows another consumer's pending entries is answered `strays`, and the driver takes them
/// over (`claim.lua`, lease checked) before it starts anything more of that partition, so
/// per-key order holds. Nothing read this way is handled before the start script checked
/// the lease.
async fn read_new(ctx: &Ctx, reading: &[(u32, usize)]) -> Result<Vec<PartRead>> {
    let parts: Vec<u32> = reading.iter().map(|(p, _)| *p).collect();
    let room = |p: u32| reading.iter().find(|(q, _)| *q == p).map_or(1, |(_, r)| *r);
    let mut calls = Vec::new();
    for chunk in ctx.shared.batches(&parts) {
        let mut pipe = redis::pipe();
        for p in &chunk {
            let stream = ctx.part(*p)?.stream();
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(ctx.group())
                .arg(&ctx.token)
                .arg("COUNT")
                .arg(room(*p).max(1))
                .arg("STREAMS")
                .arg(&stream)
                .arg(">");
            pipe.cmd("XPENDING").arg(&stream).arg(ctx.group());
        }
        calls.push((chunk, pipe));
    }
    let answers =
        futures::future::join_all(calls.iter().map(|(_, pipe)| ctx.shared.conn.run_pipe(pipe))).await;
    let mut out = Vec::new();
    for ((chunk, _), answer) in calls.iter().zip(answers) {
        let mut answer = answer?.into_iter();
        for p in chunk {
            let entries = read_entries(answer.next().unwrap_or(Value::Nil))?;
            let strays = foreign_pending(answer.next().unwrap_or(Value::Nil), &ctx.token)?;
            let entries = entries
                .into_iter()
                .map(codec::entry)
                .collect::<Result<Vec<_>>>()?;
            out.push(PartRead {
                p: *p,
                room: room(*p),
                entries,
                strays,
            });
        }
    }
    Ok(out)
}

/// The entries of a one-stream `XREADGROUP` reply (RESP2 `[[stream, entries]]`, RESP3
/// `{stream: entries}`, nil when none).
fn read_entries(v: Value) -> Result<Vec<Value>> {
    let stream = match v {
        Value::Map(mut m) => m.pop().map(|(_, entries)| entries),
        other => reply::array(other)?
            .pop()
            .map(|s| reply::array(s).map(|mut kv| kv.pop()))
            .transpose()?
            .flatten(),
    };
    reply::array(stream.unwrap_or(Value::Nil))
}

/// True when an `XPENDING` summary shows pending entries of a Redis consumer other than
/// `me`.
fn foreign_pending(v: Value, me: &str) -> Result<bool> {
    let mut items = reply::array(v)?.into_iter();
    let total = reply::u64(items.next().unwrap_or(Value::Int(0)))?;
    if total == 0 {
        return Ok(false);
    }
    let consumers = items.nth(2).unwrap_or(Value::Nil);
    for c in reply::array(consumers)? {
        let mut c = reply::array(c)?.into_iter();
        let name = reply::bytes(c.next().unwrap_or(Value::Nil))?;
        let n = reply::u64(c.next().unwrap_or(Value::Int(0)))?;
        if n > 0 && name != me.as_bytes() {
            return Ok(true);
        }
    }
    Ok(false)
}
