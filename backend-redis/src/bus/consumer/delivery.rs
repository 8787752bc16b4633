//! Deliveries: start many with one script, call the handler, settle the outcome (acks many
//! at once with one script, the rarer retries and dead letters one by one).

use std::{
    collections::BTreeMap,
    panic::AssertUnwindSafe,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use cqrs_core::{
    bus::{DeadLetterReason, Delivery, HandlerError, HandlerErrorKind, Message},
    Result,
};
use futures::FutureExt;
use redis::Value;
use tokio::time::Instant;

use super::driver::{JobDone, Outcome};
use super::{lock, Ctx, InFlight};
use crate::bus::{codec, scripts};
use crate::conn::reply;
use crate::error::unexpected;

/// How a delivery is settled.
pub(super) enum Settle {
    Ack,
    Retry(Duration),
    /// Dead letter; with the key and id to park later messages of the key behind.
    Dead(DeadLetterReason, Option<(String, String)>),
    Drop,
}

/// A stream entry id as numbers (ms, seq).
pub(super) type EntryId = (u64, u64);

/// A handled entry waiting for its ack: partition, id, entry id as text.
pub(super) type PendingAck = (u32, EntryId, String);

/// A message the driver picked for delivery.
pub(super) struct Pick {
    pub(super) p: u32,
    pub(super) id: (u64, u64),
    pub(super) entry: String,
    pub(super) message: Message,
    /// Read new by this owner and never started: no attempt record to read.
    pub(super) fresh: bool,
}

/// A delivery started (its attempt counted): the handler may run.
pub(super) struct Started {
    pub(super) pick: Pick,
    attempt: u64,
    /// Milliseconds since the first attempt.
    elapsed: u64,
}

/// What a start job reports per pick.
pub(super) enum Event {
    /// Ended without calling the handler (gone, parked, lost, failed).
    Done(JobDone),
    Start(Started),
}

/// A handler call's result: how to settle the delivery.
pub(super) struct Handled {
    pub(super) p: u32,
    pub(super) id: (u64, u64),
    pub(super) entry: String,
    pub(super) settle: Settle,
}

fn done(p: u32, id: (u64, u64), outcome: Outcome) -> Event {
    Event::Done(JobDone { p, id, outcome })
}

impl Ctx {
    fn release_breaker(&self) {
        if let Some(mut b) = self.breaker() {
            b.release();
        }
    }

    /// Acknowledges the handled entries `acks` and starts the deliveries of `picks` with
    /// `deliver.lua`: one call for all on a single node, one per partition (concurrently) on
    /// a cluster; the partitions in `stats` answer their stats after their acks. A pick
    /// whose start fails, or that turns out gone or parked, is done without a handler call.
    /// Returns the picks' events and the acks' ends.
    pub(super) async fn start(
        self: &Arc<Self>,
        picks: Vec<Pick>,
        acks: Vec<PendingAck>,
        stats: &[u32],
    ) -> (Vec<Event>, Vec<JobDone>) {
        // Per partition the fresh picks first: the script's order (and its answer's).
        let mut by_part: BTreeMap<u32, Vec<Pick>> = BTreeMap::new();
        for pick in picks {
            by_part.entry(pick.p).or_default().push(pick);
        }
        for picks in by_part.values_mut() {
            picks.sort_by_key(|pick| !pick.fresh);
        }
        let mut acks_by_part: BTreeMap<u32, Vec<(EntryId, String)>> = BTreeMap::new();
        for (p, id, entry) in acks {
            by_part.entry(p).or_default();
            acks_by_part.entry(p).or_default().push((id, entry));
        }
        let parts: Vec<u32> = by_part.keys().copied().collect();
        let mut calls = Vec::new();
        for batch in self.shared.batches(&parts) {
            let mut inv = scripts::DELIVER.prepare_invoke();
            for p in &batch {
                match self.part(*p) {
                    Ok(keys) => {
                        for k in keys.settle_keys(self.group()) {
                            inv.key(k);
                        }
                    }
                    Err(_) => return (Vec::new(), Vec::new()),
                }
            }
            inv.arg(self.group()).arg(&self.token).arg(self.ack_ms());
            for p in &batch {
                let acks = acks_by_part.get(p).map_or(&[][..], Vec::as_slice);
                inv.arg(acks.len()).arg(if stats.contains(p) { "1" } else { "0" });
                let picks = by_part.get(p).map_or(&[][..], Vec::as_slice);
                let (fresh, others) = picks.split_at(picks.iter().filter(|pick| pick.fresh).count());
                inv.arg(fresh.len()).arg(others.len());
                for (_, entry) in acks {
                    inv.arg(entry);
                }
                for pick in fresh {
                    inv.arg(&pick.entry);
                }
                for pick in fresh {
                    inv.arg(&pick.message.key);
                }
                for pick in others {
                    inv.arg(&pick.entry).arg(&pick.message.key);
                }
            }
            calls.push((batch, inv));
        }
        let answers =
            futures::future::join_all(calls.iter().map(|(_, inv)| self.shared.conn.script(inv))).await;
        let mut out = Vec::new();
        let mut acked = Vec::new();
        for ((batch, _), answer) in calls.into_iter().zip(answers) {
            let answer = answer.and_then(reply::array);
            let mut answers = match answer {
                Ok(a) => a.into_iter(),
                Err(e) => {
                    self.counters.note_error(e);
                    Vec::new().into_iter()
                }
            };
            for p in batch {
                let picks = by_part.remove(&p).unwrap_or_default();
                let acks = acks_by_part.remove(&p).unwrap_or_default();
                let part = answers.next().map(|v| self.started_part(p, v));
                let ack_outcome = match &part {
                    Some(Ok(Some(_))) => {
                        self.counters
                            .handled
                            .fetch_add(acks.len() as u64, Ordering::SeqCst);
                        Outcome::Done
                    }
                    Some(Ok(None)) => Outcome::Lost,
                    _ => Outcome::Failed,
                };
                for (id, _) in acks {
                    acked.push(JobDone {
                        p,
                        id,
                        outcome: ack_outcome,
                    });
                }
                match part {
                    Some(Ok(Some(results))) => {
                        // Results for every pick, or for the others only (the fresh ones
                        // all started as attempt 1).
                        let implicit = if results.len() == 3 * picks.len() {
                            0
                        } else {
                            picks.iter().filter(|pick| pick.fresh).count()
                        };
                        let mut results = results.into_iter();
                        for (i, pick) in picks.into_iter().enumerate() {
                            if i < implicit {
                                out.push(Event::Start(Started {
                                    pick,
                                    attempt: 1,
                                    elapsed: 0,
                                }));
                                continue;
                            }
                            let r = [results.next(), results.next(), results.next()];
                            out.push(self.started_one(pick, r));
                        }
                    }
                    Some(Ok(None)) => {
                        for pick in picks {
                            self.release_breaker();
                            out.push(done(p, pick.id, Outcome::Lost));
                        }
                    }
                    failed => {
                        if let Some(Err(e)) = failed {
                            self.counters.note_error(e);
                        }
                        for pick in picks {
                            self.release_breaker();
                            out.push(done(p, pick.id, Outcome::Failed));
                        }
                    }
                }
            }
        }
        (out, acked)
    }

    /// One partition's answer of `deliver.lua`: its results, or `None` when the lease is lost.
    fn started_part(&self, p: u32, v: Value) -> Result<Option<Vec<Value>>> {
        let (status, mut items) = reply::status(v)?;
        if status != "ok" {
            return Ok(None);
        }
        let results = reply::array(items.next().unwrap_or(Value::Nil))?;
        self.counters.update_stats(p, items.next());
        Ok(Some(results))
    }

    /// One entry's result: three items, `ok` with the attempt and the ms since the first
    /// attempt, `gone`, or `parked` with the id it is parked behind.
    fn started_one(&self, pick: Pick, r: [Option<Value>; 3]) -> Event {
        let (p, id) = (pick.p, pick.id);
        let [status, a, b] = r;
        let status = match status.map(reply::string) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                self.counters.note_error(e);
                self.release_breaker();
                return done(p, id, Outcome::Failed);
            }
            None => {
                self.counters.note_error(unexpected("a short start answer"));
                self.release_breaker();
                return done(p, id, Outcome::Failed);
            }
        };
        match status.as_str() {
            "ok" => {
                let attempt = a.map_or(Ok(1), reply::u64).unwrap_or(1);
                let elapsed = b.map_or(Ok(0), reply::u64).unwrap_or(0);
                Event::Start(Started {
                    pick,
                    attempt,
                    elapsed,
                })
            }
            other => {
                if other == "parked" {
                    self.counters.dead_lettered.fetch_add(1, Ordering::SeqCst);
                }
                self.release_breaker();
                done(p, id, Outcome::Done)
            }
        }
    }

    /// Calls the handler on a started delivery and decides how to settle it.
    pub(super) async fn handle(&self, started: Started) -> Handled {
        let Started {
            pick,
            attempt,
            elapsed,
        } = started;
        let Pick {
            p,
            id,
            entry,
            message,
            fresh: _,
        } = pick;
        let delivery = Delivery {
            message,
            topic: self.spec.topic().to_owned(),
            group: self.group().to_owned(),
            consumer: self.consumer().to_owned(),
            partition: p,
            entry,
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
        Handled {
            p,
            id,
            entry: delivery.entry,
            settle,
        }
    }

    /// Acknowledges handled entries with `ack.lua`: one call for all on a single node, one
    /// per partition (concurrently) on a cluster. The partitions in `stats` answer their
    /// stats too.
    pub(super) async fn ack(&self, acks: Vec<PendingAck>, stats: &[u32]) -> Vec<Event> {
        let mut by_part: BTreeMap<u32, Vec<(EntryId, String)>> = BTreeMap::new();
        for (p, id, entry) in acks {
            by_part.entry(p).or_default().push((id, entry));
        }
        let parts: Vec<u32> = by_part.keys().copied().collect();
        let mut calls = Vec::new();
        for batch in self.shared.batches(&parts) {
            let mut inv = scripts::ACK.prepare_invoke();
            for p in &batch {
                let Ok(keys) = self.part(*p) else {
                    return Vec::new();
                };
                inv.key(keys.stream())
                    .key(keys.lease(self.group()))
                    .key(keys.attempts(self.group()))
                    .key(keys.retry(self.group()));
            }
            inv.arg(self.group()).arg(&self.token);
            for p in &batch {
                let entries = by_part.get(p).map_or(&[][..], Vec::as_slice);
                inv.arg(entries.len())
                    .arg(if stats.contains(p) { "1" } else { "0" });
                for (_, entry) in entries {
                    inv.arg(entry);
                }
            }
            calls.push((batch, inv));
        }
        let answers =
            futures::future::join_all(calls.iter().map(|(_, inv)| self.shared.conn.script(inv))).await;
        let mut out = Vec::new();
        for ((batch, _), answer) in calls.into_iter().zip(answers) {
            let mut answers = match answer.and_then(reply::array) {
                Ok(a) => a.into_iter(),
                Err(e) => {
                    self.counters.note_error(e);
                    Vec::new().into_iter()
                }
            };
            for p in batch {
                let entries = by_part.remove(&p).unwrap_or_default();
                let outcome = match answers.next().map(reply::status) {
                    Some(Ok((status, mut items))) if status == "ok" => {
                        self.counters.update_stats(p, items.next());
                        self.counters
                            .handled
                            .fetch_add(entries.len() as u64, Ordering::SeqCst);
                        Outcome::Done
                    }
                    Some(Ok(_)) => Outcome::Lost,
                    Some(Err(e)) => {
                        self.counters.note_error(e);
                        Outcome::Failed
                    }
                    None => Outcome::Failed,
                };
                for (id, _) in entries {
                    let outcome = match outcome {
                        Outcome::Done => Outcome::Done,
                        Outcome::Lost => Outcome::Lost,
                        _ => Outcome::Failed,
                    };
                    out.push(done(p, id, outcome));
                }
            }
        }
        out
    }

    /// Settles entry `entry` of partition `p` with one script.
    pub(super) async fn settle(&self, p: u32, entry: &str, settle: Settle) -> Outcome {
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
