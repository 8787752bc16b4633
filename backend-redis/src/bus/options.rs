//! [`RedisBusOptions`]: how a [`RedisBus`](super::RedisBus) splits topics and reads.

use std::time::Duration;

use cqrs_core::{Error, Result};

/// How a [`RedisBus`](super::RedisBus) splits topics and reads them. Setters take and
/// return `Self`.
///
/// ```
/// use std::time::Duration;
/// use backend_redis::RedisBusOptions;
/// let options = RedisBusOptions::new()
///     .partitions(16)
///     .read_batch(200)
///     .block(Duration::from_millis(50));
/// assert_eq!(options.partition_count(), 16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisBusOptions {
    pub(super) partitions: u32,
    pub(super) read_batch: usize,
    pub(super) block: Duration,
    pub(super) priority_bypass: u32,
}

impl RedisBusOptions {
    /// Default partitions per topic.
    pub const DEFAULT_PARTITIONS: u32 = 8;
    /// Default entries read (and held) per owned partition.
    pub const DEFAULT_READ_BATCH: usize = 100;
    /// Default wait of an idle consumer before it polls again.
    pub const DEFAULT_BLOCK: Duration = Duration::from_millis(100);

    /// The defaults: 8 partitions, batches of 100, 100 ms block, strict priority.
    pub fn new() -> Self {
        RedisBusOptions {
            partitions: Self::DEFAULT_PARTITIONS,
            read_batch: Self::DEFAULT_READ_BATCH,
            block: Self::DEFAULT_BLOCK,
            priority_bypass: 0,
        }
    }

    /// Partitions per topic (1 to 1024). Every process using a topic must agree: the
    /// partition of a key is [`partition_for`](cqrs_core::bus::partition_for) of it.
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Entries a consumer reads at once and holds at most per owned partition (its window
    /// for priorities and per-key order).
    #[must_use]
    pub fn read_batch(mut self, n: usize) -> Self {
        self.read_batch = n;
        self
    }

    /// How long an idle consumer waits before polling Redis again. Publishes through the
    /// same [`RedisBus`](super::RedisBus) value wake its consumers at once; messages from
    /// other processes are seen within this time.
    #[must_use]
    pub fn block(mut self, wait: Duration) -> Self {
        self.block = wait;
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

    /// The partitions per topic.
    pub fn partition_count(&self) -> u32 {
        self.partitions
    }

    /// Checks the values.
    pub(super) fn validate(&self) -> Result<()> {
        if !(1..=1024).contains(&self.partitions) {
            return Err(Error::invalid("bus partitions must be between 1 and 1024"));
        }
        if self.read_batch == 0 {
            return Err(Error::invalid("bus read batch must be at least 1"));
        }
        if self.block < Duration::from_millis(1) {
            return Err(Error::invalid("bus block time must be at least 1 ms"));
        }
        Ok(())
    }
}

impl Default for RedisBusOptions {
    fn default() -> Self {
        RedisBusOptions::new()
    }
}
