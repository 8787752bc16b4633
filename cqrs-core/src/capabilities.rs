//! What a backend declares it can do. The conformance harness tests every claimed
//! capability and reports the others as not run, by name.

/// Capabilities of one backend instance.
///
/// Build with struct update syntax so new fields stay additive:
/// `Capabilities { total_order: true, ..Capabilities::default() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Number of partitions of the store-wide log (0: no store-wide log).
    pub partitions: u32,
    /// `read_all` returns one total order (a single partition).
    pub total_order: bool,
    /// Event ids are unique across all streams, not only within one.
    pub global_event_id_uniqueness: bool,
    /// `truncate_before` is supported.
    pub truncate: bool,
}

impl Capabilities {
    /// True when `read_all` is available.
    pub const fn has_store_wide_log(&self) -> bool {
        self.partitions > 0
    }
}
