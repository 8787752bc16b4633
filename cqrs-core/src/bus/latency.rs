//! Handler latency percentiles.

use std::{collections::VecDeque, time::Duration};

/// Handler latency percentiles over the recent window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencyPercentiles {
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// The last `capacity` handler latencies, for nearest-rank percentiles.
///
/// ```
/// use std::time::Duration;
/// use cqrs_core::bus::LatencyWindow;
/// let mut w = LatencyWindow::new(100);
/// for ms in 1..=100 { w.record(Duration::from_millis(ms)); }
/// let p = w.percentiles();
/// assert_eq!((p.p50.as_millis(), p.p95.as_millis(), p.p99.as_millis()), (50, 95, 99));
/// ```
#[derive(Debug, Clone)]
pub struct LatencyWindow {
    capacity: usize,
    samples: VecDeque<Duration>,
}

impl Default for LatencyWindow {
    /// A window of [`LatencyWindow::DEFAULT_CAPACITY`] samples. (A derived default had
    /// capacity 0, which kept one sample: every percentile was the last latency.)
    fn default() -> Self {
        LatencyWindow::new(Self::DEFAULT_CAPACITY)
    }
}

impl LatencyWindow {
    /// Default window size.
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// A window of the last `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        LatencyWindow {
            capacity: capacity.max(1),
            samples: VecDeque::new(),
        }
    }

    /// Adds a sample, dropping the oldest when full.
    pub fn record(&mut self, latency: Duration) {
        if self.samples.len() >= self.capacity.max(1) {
            self.samples.pop_front();
        }
        self.samples.push_back(latency);
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Nearest-rank p50, p95 and p99 (zeros when empty).
    pub fn percentiles(&self) -> LatencyPercentiles {
        if self.samples.is_empty() {
            return LatencyPercentiles::default();
        }
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let n = sorted.len();
        let rank = |pct: usize| {
            // ceil(pct/100 * n), 1-based, clamped to [1, n].
            let r = (pct * n).div_ceil(100).clamp(1, n);
            sorted[r - 1]
        };
        LatencyPercentiles {
            p50: rank(50),
            p95: rank(95),
            p99: rank(99),
        }
    }
}
