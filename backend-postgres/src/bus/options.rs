//! [`PgBusOptions`]: partitions, polling, window size, priority bypass.

use std::time::Duration;

/// How a [`PgBus`](super::PgBus) works. Setters take and return `Self`.
///
/// Every process publishing to or consuming a topic must use the same number of partitions
/// (a key's partition is [`partition_for`](cqrs_core::bus::partition_for) of that number).
///
/// ```
/// use std::time::Duration;
/// use backend_postgres::PgBusOptions;
/// let o = PgBusOptions::new().partitions(4).poll_interval(Duration::from_millis(50));
/// assert_eq!(o.get_partitions(), 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBusOptions {
    partitions: u32,
    poll_interval: Duration,
    window: usize,
    priority_bypass: u32,
}

impl PgBusOptions {
    /// Default partitions per topic.
    pub const DEFAULT_PARTITIONS: u32 = 8;
    /// Default poll interval of the notifier.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
    /// Default rows per partition a consumer holds in memory.
    pub const DEFAULT_WINDOW: usize = 256;

    /// The defaults: 8 partitions, a 100 ms poll, windows of 256 rows, strict priority.
    pub fn new() -> Self {
        PgBusOptions::default()
    }

    /// Partitions per topic (at least 1).
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// How often the notifier looks at the outbox head when no notification came (at least
    /// 1 ms): the delay before a message published by [`PgBus::publish_in`] without
    /// [`PgBus::wake`] is seen, or before a row held above the horizon is.
    ///
    /// [`PgBus::publish_in`]: super::PgBus::publish_in
    /// [`PgBus::wake`]: super::PgBus::wake
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Rows per owned partition a consumer holds in memory (at least 1). Priorities and
    /// per-key readiness are decided within this window.
    #[must_use]
    pub fn window(mut self, rows: usize) -> Self {
        self.window = rows.max(1);
        self
    }

    /// Serve the oldest ready message after this many picks in a row passed over it (see
    /// [`PriorityScheduler::new`](cqrs_core::bus::PriorityScheduler::new); 0, the default:
    /// strict priority).
    #[must_use]
    pub fn priority_bypass(mut self, limit: u32) -> Self {
        self.priority_bypass = limit;
        self
    }

    /// Partitions per topic.
    pub fn get_partitions(&self) -> u32 {
        self.partitions
    }

    /// The notifier's poll interval.
    pub fn get_poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// Rows per partition held in memory.
    pub fn get_window(&self) -> usize {
        self.window
    }

    /// The priority bypass limit.
    pub fn get_priority_bypass(&self) -> u32 {
        self.priority_bypass
    }
}

impl Default for PgBusOptions {
    fn default() -> Self {
        PgBusOptions {
            partitions: Self::DEFAULT_PARTITIONS,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            window: Self::DEFAULT_WINDOW,
            priority_bypass: 0,
        }
    }
}
