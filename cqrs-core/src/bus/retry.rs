//! The retry policy and its backoff computation.

use std::time::Duration;

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backoff {
    /// Always `initial_backoff`.
    Fixed,
    /// `initial_backoff * (n - 1)` before attempt `n`.
    Linear,
    /// `initial_backoff * 2^(n - 2)` before attempt `n`.
    Exponential,
}

/// How often and how patiently a failed handler call is retried. Shared by the bus
/// transports, the handler middleware and the projection runner.
///
/// The first attempt runs at once; before attempt `n` (from 2) the wait is given by
/// [`RetryPolicy::backoff`], capped at `max_backoff`. `max_elapsed`, where set, also stops
/// retrying once that much time has passed since the first attempt.
///
/// ```
/// use std::time::Duration;
/// use cqrs_core::bus::RetryPolicy;
/// let p = RetryPolicy::exponential(5, Duration::from_millis(10), Duration::from_millis(25));
/// let waits: Vec<_> = (1..=5).map(|n| p.backoff(n).as_millis()).collect();
/// assert_eq!(waits, [0, 10, 20, 25, 25]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// How the wait grows.
    pub kind: Backoff,
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// Wait before the second attempt (the step for linear, the wait for fixed).
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Give up once this long has passed since the first attempt (`None`: attempts only).
    pub max_elapsed: Option<Duration>,
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub const fn none() -> Self {
        RetryPolicy {
            kind: Backoff::Fixed,
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            max_elapsed: None,
        }
    }

    /// `attempts` attempts, `delay` apart.
    pub const fn fixed(attempts: u32, delay: Duration) -> Self {
        RetryPolicy {
            kind: Backoff::Fixed,
            max_attempts: attempts,
            initial_backoff: delay,
            max_backoff: delay,
            max_elapsed: None,
        }
    }

    /// `attempts` attempts, waits growing by `step`, capped at `max`.
    pub const fn linear(attempts: u32, step: Duration, max: Duration) -> Self {
        RetryPolicy {
            kind: Backoff::Linear,
            max_attempts: attempts,
            initial_backoff: step,
            max_backoff: max,
            max_elapsed: None,
        }
    }

    /// `attempts` attempts with waits doubling from `initial`, capped at `max`.
    pub const fn exponential(attempts: u32, initial: Duration, max: Duration) -> Self {
        RetryPolicy {
            kind: Backoff::Exponential,
            max_attempts: attempts,
            initial_backoff: initial,
            max_backoff: max,
            max_elapsed: None,
        }
    }

    /// Also gives up once `limit` has passed since the first attempt.
    #[must_use]
    pub const fn with_max_elapsed(mut self, limit: Duration) -> Self {
        self.max_elapsed = Some(limit);
        self
    }

    /// The wait before attempt `attempt` (1-based): zero for the first.
    pub fn backoff(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let wait = match self.kind {
            Backoff::Fixed => self.initial_backoff,
            Backoff::Linear => self.initial_backoff.saturating_mul(attempt - 1),
            Backoff::Exponential => {
                let factor = 2u32.saturating_pow(attempt - 2);
                self.initial_backoff.saturating_mul(factor)
            }
        };
        wait.min(self.max_backoff)
    }

    /// After attempt `failed` (1-based) failed retryably, `elapsed` after the first attempt
    /// began: the wait before the next attempt, or `None` to give up.
    pub fn next_delay(&self, failed: u32, elapsed: Duration) -> Option<Duration> {
        if failed >= self.max_attempts.max(1) {
            return None;
        }
        let wait = self.backoff(failed.saturating_add(1));
        match self.max_elapsed {
            Some(limit) if elapsed.saturating_add(wait) > limit => None,
            _ => Some(wait),
        }
    }
}

impl Default for RetryPolicy {
    /// 5 attempts, exponential from 50 ms up to 5 s.
    fn default() -> Self {
        RetryPolicy::exponential(5, Duration::from_millis(50), Duration::from_secs(5))
    }
}
