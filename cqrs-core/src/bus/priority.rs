//! Which ready message goes first.

use super::Priority;

/// Picks which ready message a consumer takes next.
///
/// The rule every transport follows: only *ready* messages compete (a message is ready when
/// no earlier message of its key is un-acknowledged, so priorities never reorder a key); the
/// most urgent goes first, the oldest first within one priority. So that low priority is not
/// starved, after `bypass_limit` picks in a row that passed over an older ready message, the
/// oldest ready message is taken instead (0: strict priority).
///
/// ```
/// use cqrs_core::bus::{Priority, PriorityScheduler};
/// let mut s = PriorityScheduler::new(0);
/// let ready = [(Priority::Low, 1), (Priority::Critical, 2), (Priority::Normal, 3)];
/// assert_eq!(s.pick(ready), Some(2));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriorityScheduler {
    bypass_limit: u32,
    bypassed: u32,
}

impl PriorityScheduler {
    /// A scheduler that serves the oldest ready message after `bypass_limit` consecutive
    /// bypasses (0: never, strict priority).
    pub const fn new(bypass_limit: u32) -> Self {
        PriorityScheduler {
            bypass_limit,
            bypassed: 0,
        }
    }

    /// Among ready messages given as `(priority, sequence)` (sequence: publish order), the
    /// sequence of the one to take next; `None` when nothing is ready.
    pub fn pick(&mut self, ready: impl IntoIterator<Item = (Priority, u64)>) -> Option<u64> {
        let mut best: Option<(Priority, u64)> = None;
        let mut oldest: Option<u64> = None;
        for (priority, seq) in ready {
            if best.is_none_or(|b| (priority, seq) < b) {
                best = Some((priority, seq));
            }
            if oldest.is_none_or(|o| seq < o) {
                oldest = Some(seq);
            }
        }
        let (_, best_seq) = best?;
        let oldest = oldest.unwrap_or(best_seq);
        if best_seq == oldest {
            self.bypassed = 0;
            return Some(best_seq);
        }
        if self.bypass_limit > 0 && self.bypassed >= self.bypass_limit {
            self.bypassed = 0;
            return Some(oldest);
        }
        self.bypassed = self.bypassed.saturating_add(1);
        Some(best_seq)
    }
}
