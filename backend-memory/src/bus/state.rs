//! The bus state behind the mutex: topics, partitions, groups, and the rules that pick,
//! settle and rebalance.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::{atomic::Ordering, MutexGuard, PoisonError},
    time::Duration,
};

use cqrs_core::{
    bus::{
        key_hash, partition_for, DeadLetter, DeadLetterReason, Delivery, IntMap, IntSet, Message, MessageId,
        Priority, PriorityScheduler, StartFrom,
    },
    Error, Result,
};
use tokio::time::Instant;

use super::subscription::Counters;
use super::{entry_id, parse_entry, Shared};

#[derive(Default)]
pub(super) struct BusState {
    pub(super) topics: HashMap<String, Topic>,
    pub(super) next_incarnation: u64,
}

pub(super) struct Topic {
    pub(super) parts: Vec<Part>,
    pub(super) next_seq: u64,
    pub(super) published: u64,
    pub(super) groups: HashMap<String, Group>,
}

/// Un-acknowledged entries of a partition one pick looks at; ready ones among them compete
/// by priority.
pub(super) const PICK_WINDOW: usize = 256;

#[derive(Default)]
pub(super) struct Part {
    /// Retained entries; offsets are contiguous from the front's.
    pub(super) entries: VecDeque<Entry>,
    pub(super) next_offset: u64,
}

impl Part {
    pub(super) fn front_offset(&self) -> u64 {
        self.entries.front().map_or(self.next_offset, |e| e.offset)
    }

    pub(super) fn get(&self, offset: u64) -> Option<&Entry> {
        let idx = offset.checked_sub(self.front_offset())?;
        self.entries.get(usize::try_from(idx).ok()?)
    }
}

pub(super) struct Entry {
    pub(super) offset: u64,
    pub(super) seq: u64,
    pub(super) key: String,
    /// [`key_hash`] of `key`, computed once at publish (picks compare keys by it).
    pub(super) key_hash: u64,
    pub(super) priority: Priority,
    pub(super) body: Body,
}

pub(super) enum Body {
    Message(Message),
    Undecodable(String),
}

pub(super) struct Group {
    pub(super) parts: Vec<GroupPart>,
    pub(super) members: BTreeMap<String, Member>,
    pub(super) parked: HashMap<String, MessageId>,
    pub(super) dead: Vec<DeadLetter>,
    pub(super) scheduler: PriorityScheduler,
}

#[derive(Default)]
pub(super) struct GroupPart {
    pub(super) owner: Option<u64>,
    /// Every offset below is acknowledged.
    pub(super) acked_below: u64,
    /// Acknowledged offsets at or above `acked_below`.
    pub(super) acked: BTreeSet<u64>,
    pub(super) pending: IntMap<u64, Pending>,
}

impl GroupPart {
    pub(super) fn is_acked(&self, offset: u64) -> bool {
        offset < self.acked_below || self.acked.contains(&offset)
    }

    pub(super) fn ack(&mut self, offset: u64) {
        self.pending.remove(&offset);
        if offset >= self.acked_below {
            self.acked.insert(offset);
        }
        while self.acked.remove(&self.acked_below) {
            self.acked_below += 1;
        }
    }

    pub(super) fn release_in_flight(&mut self, incarnation: u64) {
        for p in self.pending.values_mut() {
            if p.in_flight == Some(incarnation) {
                p.in_flight = None;
            }
        }
    }

    pub(super) fn in_flight_of(&self, incarnation: u64) -> bool {
        self.pending.values().any(|p| p.in_flight == Some(incarnation))
    }
}

#[derive(Default)]
pub(super) struct Pending {
    pub(super) attempts: u32,
    pub(super) in_flight: Option<u64>,
    pub(super) not_before: Option<Instant>,
    pub(super) first_at: Option<Instant>,
    pub(super) last_error: Option<String>,
}

pub(super) struct Member {
    pub(super) incarnation: u64,
    pub(super) alive_until: Instant,
    pub(super) ack_timeout: Duration,
}

/// What a consumer should do next.
pub(super) enum Next {
    Deliver(Box<Delivery>),
    Wait(Option<Instant>),
    Gone,
}

/// How a delivery ended.
pub(super) enum Settle {
    Ack,
    /// Acknowledged without being handled (dead letter off).
    Drop,
    Retry(Duration, String),
    DeadLetter(DeadLetterReason),
}

impl Topic {
    pub(super) fn new(partitions: u32) -> Self {
        Topic {
            parts: (0..partitions).map(|_| Part::default()).collect(),
            next_seq: 0,
            published: 0,
            groups: HashMap::new(),
        }
    }

    pub(super) fn push(&mut self, key: &str, priority: Priority, body: Body, partitions: u32) {
        let p = partition_for(key, partitions) as usize;
        let Some(part) = self.parts.get_mut(p) else {
            return;
        };
        part.entries.push_back(Entry {
            offset: part.next_offset,
            seq: self.next_seq,
            key: key.to_owned(),
            key_hash: key_hash(key),
            priority,
            body,
        });
        part.next_offset += 1;
        self.next_seq += 1;
        self.published += 1;
    }

    pub(super) fn lag(&self, group: &Group) -> u64 {
        self.parts
            .iter()
            .zip(&group.parts)
            .map(|(part, gp)| {
                let span = part.next_offset.saturating_sub(gp.acked_below);
                span.saturating_sub(u64::try_from(gp.acked.len()).unwrap_or(u64::MAX))
            })
            .sum()
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub(super) fn topic<'a>(&self, state: &'a mut BusState, name: &str) -> &'a mut Topic {
        state
            .topics
            .entry(name.to_owned())
            .or_insert_with(|| Topic::new(self.partitions))
    }

    /// Finds the next delivery for `consumer` (incarnation `inc`), heartbeating it,
    /// expiring dead members and rebalancing partitions on the way.
    pub(super) fn next(
        &self,
        topic: &str,
        group: &str,
        consumer: &str,
        inc: u64,
        counters: &Counters,
    ) -> Next {
        if self.closed.load(Ordering::SeqCst) {
            return Next::Gone;
        }
        let now = Instant::now();
        let at = self.clock.now();
        let mut state = self.lock();
        let Some(t) = state.topics.get_mut(topic) else {
            return Next::Gone;
        };
        let Topic { parts, groups, .. } = t;
        let Some(g) = groups.get_mut(group) else {
            return Next::Gone;
        };
        match g.members.get_mut(consumer) {
            Some(m) if m.incarnation == inc => m.alive_until = now + m.ack_timeout,
            _ => return Next::Gone,
        }
        let changed = g.rebalance(now, consumer, inc);

        let mut ready = Vec::new();
        let mut wake: Option<Instant> = None;
        let mut parked_now = Vec::new();
        for (p, (part, gp)) in parts.iter().zip(&g.parts).enumerate() {
            if gp.owner != Some(inc) {
                continue;
            }
            let mut blocked = IntSet::with_capacity_and_hasher(PICK_WINDOW, Default::default());
            let from = gp.acked_below.max(part.front_offset());
            let skip = usize::try_from(from - part.front_offset())
                .unwrap_or(usize::MAX)
                .min(part.entries.len());
            // A pick looks at a window of un-acknowledged entries, as the Redis bus reads
            // one: scanning the whole backlog on every pick made consuming it quadratic.
            let mut looked = 0usize;
            for entry in part.entries.range(skip..) {
                if gp.is_acked(entry.offset) {
                    continue;
                }
                looked += 1;
                if looked > PICK_WINDOW {
                    break;
                }
                let Body::Message(_) = &entry.body else {
                    // Undecodable: no key to order by; dead-lettered as soon as seen.
                    parked_now.push((p, entry.offset));
                    continue;
                };
                if !g.parked.is_empty() && g.parked.contains_key(&entry.key) {
                    parked_now.push((p, entry.offset));
                    continue;
                }
                if !blocked.insert(entry.key_hash) {
                    continue;
                }
                let pending = gp.pending.get(&entry.offset);
                if pending.is_some_and(|q| q.in_flight.is_some()) {
                    continue;
                }
                if let Some(nb) = pending.and_then(|q| q.not_before) {
                    if nb > now {
                        wake = Some(wake.map_or(nb, |w| w.min(nb)));
                        continue;
                    }
                }
                ready.push((entry.priority, entry.seq, p, entry.offset));
            }
        }

        // Parked and undecodable entries go to the dead letter with their ack, at once.
        for (p, offset) in parked_now {
            let Some(entry) = parts.get(p).and_then(|part| part.get(offset)) else {
                continue;
            };
            let (reason, message) = match &entry.body {
                Body::Undecodable(error) => (DeadLetterReason::Undecodable { error: error.clone() }, None),
                Body::Message(m) => match g.parked.get(&entry.key) {
                    Some(behind) => (DeadLetterReason::Parked { behind: *behind }, Some(m.clone())),
                    None => continue,
                },
            };
            let attempts = g.parts[p].pending.get(&offset).map_or(0, |q| q.attempts);
            g.dead.push(DeadLetter {
                topic: topic.to_owned(),
                group: group.to_owned(),
                original_id: message.as_ref().map(|m| m.id),
                entry: entry_id(p, offset),
                partition: u32::try_from(p).unwrap_or(u32::MAX),
                message,
                reason,
                attempts,
                at,
            });
            g.parts[p].ack(offset);
            counters.dead_lettered.fetch_add(1, Ordering::SeqCst);
        }

        let picked = g.scheduler.pick(ready.iter().map(|(pr, seq, _, _)| (*pr, *seq)));
        let chosen = picked.and_then(|seq| ready.iter().find(|r| r.1 == seq));
        let next = match chosen {
            None => Next::Wait(wake),
            Some(&(_, _, p, offset)) => {
                let message = match parts.get(p).and_then(|part| part.get(offset)).map(|e| &e.body) {
                    Some(Body::Message(m)) => m.clone(),
                    _ => return Next::Wait(wake),
                };
                let pending = g.parts[p].pending.entry(offset).or_default();
                pending.attempts = pending.attempts.saturating_add(1);
                pending.in_flight = Some(inc);
                pending.not_before = None;
                pending.first_at.get_or_insert(now);
                Next::Deliver(Box::new(Delivery {
                    message,
                    topic: topic.to_owned(),
                    group: group.to_owned(),
                    consumer: consumer.to_owned(),
                    partition: u32::try_from(p).unwrap_or(u32::MAX),
                    entry: entry_id(p, offset),
                    attempt: pending.attempts,
                }))
            }
        };
        drop(state);
        if changed {
            self.notify.notify_waiters();
        }
        next
    }

    /// Ends a delivery made to incarnation `inc`; ignored if the claim was lost.
    pub(super) fn settle(&self, d: &Delivery, inc: u64, settle: Settle, counters: &Counters) {
        let Some((p, offset)) = parse_entry(&d.entry) else {
            return;
        };
        let at = self.clock.now();
        let now = Instant::now();
        let mut state = self.lock();
        let Some(g) = state
            .topics
            .get_mut(&d.topic)
            .and_then(|t| t.groups.get_mut(&d.group))
        else {
            return;
        };
        let Some(gp) = g.parts.get_mut(p) else {
            return;
        };
        let Some(pending) = gp.pending.get_mut(&offset) else {
            return;
        };
        if pending.in_flight != Some(inc) {
            return;
        }
        match settle {
            Settle::Ack => {
                gp.ack(offset);
                counters.handled.fetch_add(1, Ordering::SeqCst);
            }
            Settle::Drop => gp.ack(offset),
            Settle::Retry(wait, error) => {
                pending.in_flight = None;
                pending.not_before = Some(now + wait);
                pending.last_error = Some(error);
                counters.retried.fetch_add(1, Ordering::SeqCst);
            }
            Settle::DeadLetter(reason) => {
                let attempts = pending.attempts;
                gp.ack(offset);
                // The memory bus is ordered per key: later messages of the key park behind it.
                let parks = !matches!(reason, DeadLetterReason::Undecodable { .. });
                if parks {
                    g.parked.insert(d.message.key.clone(), d.message.id);
                }
                g.dead.push(DeadLetter {
                    topic: d.topic.clone(),
                    group: d.group.clone(),
                    original_id: Some(d.message.id),
                    entry: d.entry.clone(),
                    partition: d.partition,
                    message: Some(d.message.clone()),
                    reason,
                    attempts,
                    at,
                });
                counters.dead_lettered.fetch_add(1, Ordering::SeqCst);
            }
        }
        drop(state);
        self.notify.notify_waiters();
    }

    /// Renews `consumer`'s liveness; false once it was replaced or removed.
    pub(super) fn heartbeat(&self, topic: &str, group: &str, consumer: &str, inc: u64) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        let Some(g) = state.topics.get_mut(topic).and_then(|t| t.groups.get_mut(group)) else {
            return false;
        };
        match g.members.get_mut(consumer) {
            Some(m) if m.incarnation == inc => {
                m.alive_until = now + m.ack_timeout;
                true
            }
            _ => false,
        }
    }

    /// Removes `consumer` and hands its partitions back (graceful stop).
    pub(super) fn leave(&self, topic: &str, group: &str, consumer: &str, inc: u64) {
        let mut state = self.lock();
        let Some(g) = state.topics.get_mut(topic).and_then(|t| t.groups.get_mut(group)) else {
            return;
        };
        if g.members.get(consumer).is_some_and(|m| m.incarnation == inc) {
            g.members.remove(consumer);
        }
        for gp in &mut g.parts {
            gp.release_in_flight(inc);
            if gp.owner == Some(inc) {
                gp.owner = None;
            }
        }
        drop(state);
        self.notify.notify_waiters();
    }
}

impl Group {
    pub(super) fn new(parts: &[Part], start: StartFrom, bypass_limit: u32) -> Self {
        Group {
            parts: parts
                .iter()
                .map(|part| GroupPart {
                    acked_below: match start {
                        StartFrom::Earliest => part.front_offset(),
                        StartFrom::Latest => part.next_offset,
                    },
                    ..GroupPart::default()
                })
                .collect(),
            members: BTreeMap::new(),
            parked: HashMap::new(),
            dead: Vec::new(),
            scheduler: PriorityScheduler::new(bypass_limit),
        }
    }

    /// Expires dead members (their partitions and claims become free), then lets `consumer`
    /// hand back partitions it should not own (once nothing of them is in flight) and take
    /// free ones assigned to it. True if anything changed.
    pub(super) fn rebalance(&mut self, now: Instant, consumer: &str, inc: u64) -> bool {
        let mut changed = false;
        let dead: Vec<u64> = self
            .members
            .values()
            .filter(|m| m.alive_until <= now)
            .map(|m| m.incarnation)
            .collect();
        if !dead.is_empty() {
            self.members.retain(|_, m| m.alive_until > now);
            for gp in &mut self.parts {
                for d in &dead {
                    gp.release_in_flight(*d);
                    if gp.owner == Some(*d) {
                        gp.owner = None;
                    }
                }
            }
            changed = true;
        }
        let n = self.members.len().max(1);
        let me = self.members.keys().position(|k| k == consumer).unwrap_or(0);
        for (p, gp) in self.parts.iter_mut().enumerate() {
            let mine = p % n == me;
            if gp.owner == Some(inc) && !mine && !gp.in_flight_of(inc) {
                gp.owner = None;
                changed = true;
            } else if gp.owner.is_none() && mine {
                gp.owner = Some(inc);
            }
        }
        changed
    }
}
