//! A consumer's in-memory view of the partitions it owns: the window of rows after each
//! partition's offset, their attempts and retry times, parked keys, and the pick rule
//! (the memory bus's: the oldest unsettled message of a key is ready, the scheduler picks
//! among ready ones, parked and undecodable rows go to the dead letter).

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    fmt,
    time::Duration,
};

use cqrs_core::bus::{DeadLetterReason, Message, MessageId, Priority, PriorityScheduler};
use tokio::time::Instant;
use uuid::Uuid;

/// A row's place in its partition: `(tx_id, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(super) struct Pos {
    pub(super) tx: u64,
    pub(super) seq: i64,
}

impl Pos {
    /// From the text form of an `xid8` and a seq.
    pub(super) fn parse(tx: &str, seq: i64) -> Option<Pos> {
        Some(Pos {
            tx: tx.parse().ok()?,
            seq,
        })
    }

    /// The `xid8` as text, for binding (`$n::text::xid8`).
    pub(super) fn tx_text(self) -> String {
        self.tx.to_string()
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tx, self.seq)
    }
}

/// A row as read: a message, or why it does not decode.
pub(super) enum Body {
    Message(Message),
    Undecodable(String),
}

/// One row of the window.
pub(super) struct Entry {
    pub(super) pos: Pos,
    pub(super) key: String,
    pub(super) priority: Priority,
    pub(super) body: Body,
    pub(super) attempts: u32,
    pub(super) due: Option<Instant>,
    pub(super) first_at: Option<Instant>,
    pub(super) in_flight: bool,
    pub(super) done: bool,
}

/// What the pending table says about a row not loaded yet.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Known {
    pub(super) attempts: u32,
    pub(super) due_in: Option<Duration>,
    pub(super) first_ago: Option<Duration>,
    pub(super) done: bool,
}

/// An owned partition.
pub(super) struct Part {
    pub(super) epoch: i64,
    /// Being handed back: nothing is picked from it.
    pub(super) releasing: bool,
    /// The offset known to be stored.
    pub(super) floor: Pos,
    /// The end of the settled prefix (at or after `floor`).
    pub(super) done_to: Pos,
    /// The last row loaded.
    pub(super) read: Pos,
    pub(super) entries: VecDeque<Entry>,
    pub(super) known: HashMap<Pos, Known>,
    pub(super) parked: HashMap<String, Uuid>,
    /// The last load filled its page: more rows may follow.
    pub(super) more: bool,
}

impl Part {
    pub(super) fn new(epoch: i64, floor: Pos) -> Self {
        Part {
            epoch,
            releasing: false,
            floor,
            done_to: floor,
            read: floor,
            entries: VecDeque::new(),
            known: HashMap::new(),
            parked: HashMap::new(),
            more: true,
        }
    }

    fn in_flight(&self) -> bool {
        self.entries.iter().any(|e| e.in_flight)
    }

    /// Drops settled rows from the front, moving the end of the settled prefix.
    pub(super) fn pop_done(&mut self) {
        while self.entries.front().is_some_and(|e| e.done) {
            if let Some(e) = self.entries.pop_front() {
                self.done_to = self.done_to.max(e.pos);
            }
        }
    }

    fn find(&mut self, pos: Pos) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.pos == pos)
    }
}

/// A message to hand to the handler.
pub(super) struct Ticket {
    pub(super) part: u32,
    pub(super) epoch: i64,
    pub(super) pos: Pos,
    pub(super) message: Message,
}

/// A row to dead-letter without calling the handler (parked or undecodable).
pub(super) struct DeadTicket {
    pub(super) part: u32,
    pub(super) epoch: i64,
    pub(super) pos: Pos,
    pub(super) reason: DeadLetterReason,
    pub(super) attempts: u32,
}

/// What a worker does next.
pub(super) enum Pick {
    Deliver(Box<Ticket>),
    DeadLetter(Vec<DeadTicket>),
    Wait(Option<Instant>),
}

/// Every owned partition of one consumer.
pub(super) struct Window {
    pub(super) parts: BTreeMap<u32, Part>,
    scheduler: PriorityScheduler,
    /// False until the first load: nothing is picked from a half-loaded view (priorities).
    pub(super) open: bool,
}

impl Window {
    pub(super) fn new(bypass_limit: u32) -> Self {
        Window {
            parts: BTreeMap::new(),
            scheduler: PriorityScheduler::new(bypass_limit),
            open: false,
        }
    }

    /// Picks the next thing to do at `now`, marking what it hands out in flight.
    pub(super) fn pick(&mut self, now: Instant) -> Pick {
        if !self.open {
            return Pick::Wait(None);
        }
        let mut ready: Vec<(Priority, u64, u32, usize)> = Vec::new();
        let mut dead: Vec<(u32, usize, DeadLetterReason)> = Vec::new();
        let mut wake: Option<Instant> = None;
        for (&p, part) in &self.parts {
            if part.releasing {
                continue;
            }
            let mut blocked: HashSet<&str> = HashSet::new();
            for (i, e) in part.entries.iter().enumerate() {
                if e.done {
                    continue;
                }
                if let Body::Undecodable(error) = &e.body {
                    // No message to order by: dead-lettered as soon as seen, never blocks.
                    if !e.in_flight {
                        let reason = DeadLetterReason::Undecodable { error: error.clone() };
                        dead.push((p, i, reason));
                    }
                    continue;
                }
                if let Some(behind) = part.parked.get(&e.key) {
                    if !e.in_flight {
                        let reason = DeadLetterReason::Parked {
                            behind: MessageId::from_uuid(*behind),
                        };
                        dead.push((p, i, reason));
                    }
                    continue;
                }
                if !blocked.insert(e.key.as_str()) || e.in_flight {
                    continue;
                }
                if let Some(due) = e.due.filter(|d| *d > now) {
                    wake = Some(wake.map_or(due, |w| w.min(due)));
                    continue;
                }
                ready.push((e.priority, u64::try_from(e.pos.seq).unwrap_or(0), p, i));
            }
        }
        if !dead.is_empty() {
            let mut out = Vec::with_capacity(dead.len());
            for (p, i, reason) in dead {
                if let Some(part) = self.parts.get_mut(&p) {
                    let epoch = part.epoch;
                    if let Some(e) = part.entries.get_mut(i) {
                        e.in_flight = true;
                        out.push(DeadTicket {
                            part: p,
                            epoch,
                            pos: e.pos,
                            reason,
                            attempts: e.attempts,
                        });
                    }
                }
            }
            return Pick::DeadLetter(out);
        }
        let picked = self.scheduler.pick(ready.iter().map(|r| (r.0, r.1)));
        let Some(&(_, _, p, i)) = picked.and_then(|seq| ready.iter().find(|r| r.1 == seq)) else {
            return Pick::Wait(wake);
        };
        let Some(part) = self.parts.get_mut(&p) else {
            return Pick::Wait(wake);
        };
        let epoch = part.epoch;
        let Some(e) = part.entries.get_mut(i) else {
            return Pick::Wait(wake);
        };
        let Body::Message(message) = &e.body else {
            return Pick::Wait(wake);
        };
        e.in_flight = true;
        Pick::Deliver(Box::new(Ticket {
            part: p,
            epoch,
            pos: e.pos,
            message: message.clone(),
        }))
    }

    /// The part if still owned under `epoch`.
    pub(super) fn part(&mut self, part: u32, epoch: i64) -> Option<&mut Part> {
        self.parts.get_mut(&part).filter(|p| p.epoch == epoch)
    }

    /// The new offset if settling `pos` completes the settled prefix: `pos` is the first
    /// unsettled row, and the run continues over the rows settled after it.
    pub(super) fn floor_after(&mut self, part: u32, epoch: i64, pos: Pos) -> Option<Pos> {
        let p = self.part(part, epoch)?;
        let mut it = p.entries.iter();
        if it.next()?.pos != pos {
            return None;
        }
        let mut end = pos;
        for e in it {
            if !e.done {
                break;
            }
            end = e.pos;
        }
        Some(end)
    }

    /// Records a delivery's attempt number and first-attempt time.
    pub(super) fn delivered(&mut self, part: u32, epoch: i64, pos: Pos, attempts: u32, now: Instant) {
        if let Some(e) = self.part(part, epoch).and_then(|p| p.find(pos)) {
            e.attempts = attempts;
            e.first_at.get_or_insert(now);
        }
    }

    /// When the row was first attempted.
    pub(super) fn first_at(&mut self, part: u32, epoch: i64, pos: Pos) -> Option<Instant> {
        self.part(part, epoch)
            .and_then(|p| p.find(pos))
            .and_then(|e| e.first_at)
    }

    /// A settle committed: the row is done; the offset moved to `floor` if given.
    pub(super) fn settled(&mut self, part: u32, epoch: i64, pos: Pos, floor: Option<Pos>) {
        let Some(p) = self.part(part, epoch) else {
            return;
        };
        if let Some(e) = p.find(pos) {
            e.done = true;
            e.in_flight = false;
        }
        if let Some(f) = floor {
            p.floor = p.floor.max(f);
        }
        p.pop_done();
    }

    /// A retry committed: the row is due again at `due`.
    pub(super) fn retry(&mut self, part: u32, epoch: i64, pos: Pos, due: Instant) {
        if let Some(e) = self.part(part, epoch).and_then(|p| p.find(pos)) {
            e.in_flight = false;
            e.due = Some(due);
        }
    }

    /// The row goes back to the window untouched (its settle did not reach the database).
    pub(super) fn release(&mut self, part: u32, epoch: i64, pos: Pos) {
        if let Some(e) = self.part(part, epoch).and_then(|p| p.find(pos)) {
            e.in_flight = false;
        }
    }

    /// A dead letter parks `key` behind `behind` (memory side of the committed park).
    pub(super) fn park(&mut self, part: u32, epoch: i64, key: &str, behind: Uuid) {
        if let Some(p) = self.part(part, epoch) {
            p.parked.entry(key.to_owned()).or_insert(behind);
        }
    }

    /// Drops a partition whose lease was lost.
    pub(super) fn lose(&mut self, part: u32, epoch: i64) {
        if self.parts.get(&part).is_some_and(|p| p.epoch == epoch) {
            self.parts.remove(&part);
        }
    }

    /// Owned partitions with nothing in flight among `candidates`, now marked releasing.
    pub(super) fn begin_release(&mut self, candidates: &[u32]) -> Vec<u32> {
        let mut out = Vec::new();
        for p in candidates {
            if let Some(part) = self.parts.get_mut(p) {
                if !part.in_flight() {
                    part.releasing = true;
                    out.push(*p);
                }
            }
        }
        out
    }

    /// Unsettled rows held (for deciding whether settles count the lag).
    pub(super) fn backlog(&self) -> usize {
        self.parts
            .values()
            .map(|p| p.entries.iter().filter(|e| !e.done).count())
            .sum()
    }
}
