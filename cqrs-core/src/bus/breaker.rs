//! The circuit breaker's state machine.

use std::time::Duration;

use crate::Timestamp;

/// When a circuit breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitBreakerSettings {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting one trial call through (half-open).
    pub open_for: Duration,
}

impl CircuitBreakerSettings {
    /// Opens after `failure_threshold` consecutive failures, for `open_for`.
    pub const fn new(failure_threshold: u32, open_for: Duration) -> Self {
        CircuitBreakerSettings {
            failure_threshold,
            open_for,
        }
    }
}

impl Default for CircuitBreakerSettings {
    /// 5 failures, open for 30 s.
    fn default() -> Self {
        CircuitBreakerSettings::new(5, Duration::from_secs(30))
    }
}

/// Where a circuit breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BreakerState {
    /// Calls go through.
    #[default]
    Closed,
    /// Calls are rejected without calling the handler.
    Open,
    /// One trial call goes through; success closes, failure reopens.
    HalfOpen,
}

/// The circuit breaker's state machine, pure: the caller passes the time (from a [`crate::Clock`]
/// or a monotonic clock expressed as a [`Timestamp`]).
///
/// ```
/// use std::time::Duration;
/// use cqrs_core::{bus::{Breaker, BreakerState, CircuitBreakerSettings}, Timestamp};
/// let mut b = Breaker::new(CircuitBreakerSettings::new(2, Duration::from_millis(100)));
/// let t = Timestamp::from_millis;
/// b.on_failure(t(0));
/// b.on_failure(t(1));
/// assert!(b.try_acquire(t(50)).is_err(), "open: rejected fast");
/// assert!(b.try_acquire(t(101)).is_ok(), "half-open: one trial");
/// b.on_success();
/// assert_eq!(b.state(t(102)), BreakerState::Closed);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    settings: CircuitBreakerSettings,
    failures: u32,
    opened_at: Option<Timestamp>,
    trial: bool,
}

impl Breaker {
    /// A closed breaker.
    pub const fn new(settings: CircuitBreakerSettings) -> Self {
        Breaker {
            settings,
            failures: 0,
            opened_at: None,
            trial: false,
        }
    }

    /// The settings.
    pub const fn settings(&self) -> CircuitBreakerSettings {
        self.settings
    }

    fn open_until(&self) -> Option<Timestamp> {
        let opened = self.opened_at?;
        let ms = i64::try_from(self.settings.open_for.as_millis()).unwrap_or(i64::MAX);
        Some(Timestamp::from_millis(opened.as_millis().saturating_add(ms)))
    }

    /// The state at `now`.
    pub fn state(&self, now: Timestamp) -> BreakerState {
        match self.open_until() {
            None => BreakerState::Closed,
            Some(until) if now < until && !self.trial => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call at `now`. Closed: yes. Open: no, with how long until half-open.
    /// Half-open: yes for one trial call at a time (the others wait `open_for`).
    ///
    /// # Errors
    /// The time to wait before asking again.
    pub fn try_acquire(&mut self, now: Timestamp) -> std::result::Result<(), Duration> {
        let Some(until) = self.open_until() else {
            return Ok(());
        };
        if self.trial {
            return Err(self.settings.open_for.max(Duration::from_millis(1)));
        }
        if now < until {
            let ms = until.as_millis().saturating_sub(now.as_millis());
            return Err(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        }
        self.trial = true;
        Ok(())
    }

    /// Records a successful call: closes the breaker.
    pub fn on_success(&mut self) {
        self.failures = 0;
        self.opened_at = None;
        self.trial = false;
    }

    /// Records a failed call at `now`: a failed trial reopens; in the closed state the
    /// breaker opens once `failure_threshold` failures happened in a row.
    pub fn on_failure(&mut self, now: Timestamp) {
        if self.opened_at.is_some() {
            self.trial = false;
            self.opened_at = Some(now);
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.settings.failure_threshold.max(1) {
            self.opened_at = Some(now);
            self.failures = 0;
        }
    }

    /// Gives back a permit that made no call (the work went away): a trial is released.
    pub fn release(&mut self) {
        self.trial = false;
    }
}
