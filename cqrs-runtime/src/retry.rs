//! Retry with exponential backoff.

use std::time::Duration;

/// How often and how patiently a failed handler call is retried.
///
/// The first attempt runs at once; attempt `n` (from 2) waits `initial * 2^(n-2)`, capped at
/// `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub const fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// `attempts` attempts with backoff starting at `initial` and capped at `max`.
    pub const fn exponential(attempts: u32, initial: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts: attempts,
            initial_backoff: initial,
            max_backoff: max,
        }
    }

    /// The wait before attempt `attempt` (1-based): zero for the first.
    pub fn backoff(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(attempt - 2);
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

impl Default for RetryPolicy {
    /// 5 attempts, from 50 ms up to 5 s.
    fn default() -> Self {
        RetryPolicy::exponential(5, Duration::from_millis(50), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_exponential_and_capped() {
        let p = RetryPolicy::exponential(10, Duration::from_millis(10), Duration::from_millis(50));
        let waits: Vec<u128> = (1..=6).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(waits, vec![0, 10, 20, 40, 50, 50]);
        assert_eq!(RetryPolicy::none().max_attempts, 1);
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(50), "no overflow");
    }
}
