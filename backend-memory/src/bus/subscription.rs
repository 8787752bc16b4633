//! Subscriptions of the memory bus: worker tasks, heartbeat, metrics and health.

use std::{
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
        Breaker, BreakerState, DeadLetterReason, Delivery, HandlerErrorKind, Health, HealthStatus,
        LatencyWindow, MessageHandler, Subscription, SubscriptionMetrics, SubscriptionSpec,
    },
    Result, Timestamp,
};
use futures::FutureExt;
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use super::state::{Next, Settle};
use super::{parse_entry, Shared};

#[derive(Default)]
pub(super) struct Counters {
    pub(super) handled: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) dead_lettered: AtomicU64,
    pub(super) in_flight: AtomicU64,
    pub(super) latency: Mutex<LatencyWindow>,
    pub(super) last_error: Mutex<Option<String>>,
    pub(super) stopping: AtomicBool,
    pub(super) stopped: AtomicBool,
    pub(super) breaker: Option<Mutex<Breaker>>,
}

impl Counters {
    pub(super) fn note_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }
}

/// Counts a handler call in flight until dropped (also when a stop's grace aborts it).
pub(super) struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    pub(super) fn enter(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::SeqCst);
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) struct Worker {
    pub(super) shared: Arc<Shared>,
    pub(super) spec: SubscriptionSpec,
    pub(super) handler: Arc<dyn MessageHandler>,
    pub(super) inc: u64,
    pub(super) counters: Arc<Counters>,
    pub(super) epoch: Instant,
}

impl Worker {
    pub(super) fn now_ts(&self) -> Timestamp {
        Timestamp::from_millis(i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX))
    }

    pub(super) fn breaker(&self) -> Option<MutexGuard<'_, Breaker>> {
        self.counters
            .breaker
            .as_ref()
            .map(|b| b.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(super) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let beat = (self.spec.ack_timeout_value() / 4).max(Duration::from_millis(1));
        loop {
            if *stop.borrow() {
                return;
            }
            // The circuit breaker: while open, take nothing (messages stay pending).
            let wait = self
                .breaker()
                .and_then(|mut b| b.try_acquire(self.now_ts()).err());
            if let Some(wait) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(beat)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = self.shared.next(
                self.spec.topic(),
                self.spec.group(),
                self.spec.consumer_name(),
                self.inc,
                &self.counters,
            );
            match next {
                Next::Gone => {
                    // The bus closed, or this consumer was expired and replaced.
                    self.counters.stopped.store(true, Ordering::SeqCst);
                    return;
                }
                Next::Wait(until) => {
                    if let Some(mut b) = self.breaker() {
                        b.release();
                    }
                    let deadline = until.map_or(Instant::now() + beat, |u| u.min(Instant::now() + beat));
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = stop.changed() => {}
                    }
                }
                Next::Deliver(d) => self.deliver(&d).await,
            }
        }
    }

    pub(super) async fn deliver(&self, d: &Delivery) {
        let gauge = InFlight::enter(&self.counters.in_flight);
        let started = Instant::now();
        let result = AssertUnwindSafe(self.handler.handle(d)).catch_unwind().await;
        let elapsed = started.elapsed();
        drop(gauge);
        self.counters
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(elapsed);
        let result =
            result.unwrap_or_else(|_| Err(cqrs_core::bus::HandlerError::retryable("handler panicked")));
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
                self.decide(d, e)
            }
        };
        let settle = match settle {
            Settle::DeadLetter(_) if !self.spec.dead_letter_enabled() => Settle::Drop,
            other => other,
        };
        self.shared.settle(d, self.inc, settle, &self.counters);
    }

    pub(super) fn decide(&self, d: &Delivery, e: cqrs_core::bus::HandlerError) -> Settle {
        match e.kind() {
            HandlerErrorKind::Permanent => Settle::DeadLetter(DeadLetterReason::Permanent {
                error: e.message().to_owned(),
            }),
            HandlerErrorKind::Undecodable => Settle::DeadLetter(DeadLetterReason::Undecodable {
                error: e.message().to_owned(),
            }),
            HandlerErrorKind::Retryable => {
                let elapsed = self.first_attempt_elapsed(d);
                match self.spec.retry_policy().next_delay(d.attempt, elapsed) {
                    Some(wait) => Settle::Retry(wait, e.message().to_owned()),
                    None => Settle::DeadLetter(DeadLetterReason::MaxAttempts {
                        last_error: e.message().to_owned(),
                    }),
                }
            }
        }
    }

    pub(super) fn first_attempt_elapsed(&self, d: &Delivery) -> Duration {
        let Some((p, offset)) = parse_entry(&d.entry) else {
            return Duration::ZERO;
        };
        let state = self.shared.lock();
        state
            .topics
            .get(&d.topic)
            .and_then(|t| t.groups.get(&d.group))
            .and_then(|g| g.parts.get(p))
            .and_then(|gp| gp.pending.get(&offset))
            .and_then(|q| q.first_at)
            .map_or(Duration::ZERO, |t| t.elapsed())
    }
}

pub(super) struct Tasks {
    pub(super) workers: Vec<JoinHandle<()>>,
    pub(super) heartbeat: JoinHandle<()>,
}

/// A subscription to a [`MemoryBus`](crate::MemoryBus) topic.
pub(super) struct MemorySubscription {
    pub(super) worker: Arc<Worker>,
    pub(super) counters: Arc<Counters>,
    pub(super) stop: watch::Sender<bool>,
    pub(super) tasks: Mutex<Option<Tasks>>,
    pub(super) consumer: String,
}

impl MemorySubscription {
    pub(super) fn take_tasks(&self) -> Option<Tasks> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl fmt::Debug for MemorySubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySubscription")
            .field("topic", &self.worker.spec.topic())
            .field("group", &self.worker.spec.group())
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    fn consumer(&self) -> &str {
        &self.consumer
    }

    fn metrics(&self) -> SubscriptionMetrics {
        let c = &self.counters;
        let (published, lag) = {
            let state = self.worker.shared.lock();
            state.topics.get(self.worker.spec.topic()).map_or((0, 0), |t| {
                let lag = t.groups.get(self.worker.spec.group()).map_or(0, |g| t.lag(g));
                (t.published, lag)
            })
        };
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
        let c = &self.counters;
        let status = if c.stopped.load(Ordering::SeqCst) {
            HealthStatus::Stopped
        } else if c.stopping.load(Ordering::SeqCst) {
            HealthStatus::Stopping
        } else {
            HealthStatus::Running
        };
        let now = self.worker.now_ts();
        let breaker = self
            .worker
            .breaker()
            .map_or(BreakerState::Closed, |b| b.state(now));
        let owned_partitions = {
            let state = self.worker.shared.lock();
            state
                .topics
                .get(self.worker.spec.topic())
                .and_then(|t| t.groups.get(self.worker.spec.group()))
                .map(|g| {
                    g.parts
                        .iter()
                        .enumerate()
                        .filter(|(_, gp)| gp.owner == Some(self.worker.inc))
                        .filter_map(|(p, _)| u32::try_from(p).ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        Health {
            status,
            breaker,
            owned_partitions,
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    async fn stop(self: Box<Self>) -> Result<()> {
        self.counters.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop.send(true);
        if let Some(mut tasks) = self.take_tasks() {
            // In-flight handlers get one ack timeout to finish; then they are dropped and
            // their messages released for redelivery (`leave` below).
            let grace = self.worker.spec.ack_timeout_value();
            let all = futures::future::join_all(tasks.workers.iter_mut());
            if tokio::time::timeout(grace, all).await.is_err() {
                for w in &tasks.workers {
                    w.abort();
                }
            }
            tasks.heartbeat.abort();
        }
        let w = &self.worker;
        w.shared
            .leave(w.spec.topic(), w.spec.group(), w.spec.consumer_name(), w.inc);
        self.counters.stopped.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn abort(self: Box<Self>) {
        // Drop does it.
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        if let Some(tasks) = self.take_tasks() {
            for w in tasks.workers {
                w.abort();
            }
            tasks.heartbeat.abort();
            self.counters.stopped.store(true, Ordering::SeqCst);
        }
    }
}
