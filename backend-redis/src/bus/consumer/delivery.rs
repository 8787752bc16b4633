//! One delivery: start it, call the handler, settle the outcome with one script.

use std::{
    panic::AssertUnwindSafe,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use cqrs_core::bus::{DeadLetterReason, Delivery, HandlerError, HandlerErrorKind, Message};
use futures::FutureExt;
use tokio::time::Instant;

use super::driver::Outcome;
use super::{lock, Ctx, InFlight};
use crate::bus::{codec, scripts};
use crate::conn::reply;

/// How a delivery is settled.
pub(super) enum Settle {
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
    pub(super) async fn deliver(self: &Arc<Self>, p: u32, entry: String, message: Message) -> Outcome {
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
