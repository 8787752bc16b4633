//! Options of a [`crate::MemoryBackend`].

use std::sync::Arc;

use cqrs_core::{Clock, Limits, SystemClock};

/// How a [`crate::MemoryBackend`] is built: its limits and its clock.
///
/// Setters take and return `Self`:
///
/// ```
/// use std::sync::Arc;
/// use backend_memory::{MemoryBackend, MemoryOptions};
/// use cqrs_core::{Limits, ManualClock, Timestamp};
///
/// let clock = ManualClock::new(Timestamp::from_millis(1_000));
/// let backend = MemoryBackend::with_options(
///     MemoryOptions::new()
///         .limits(Limits { max_batch_count: 100, ..Limits::default() })
///         .clock(Arc::new(clock.clone())),
/// );
/// # let _ = backend;
/// ```
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<dyn Clock>,
}

impl MemoryOptions {
    /// The defaults: [`Limits::default`] and the [`SystemClock`].
    pub fn new() -> Self {
        MemoryOptions::default()
    }

    /// Sets the size and count limits checked before every write and read page.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the store's clock: it stamps `recorded_at`, times leases and expires documents.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
        }
    }
}
