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
    /// Read models: offset paging in addition to keyset paging.
    pub offset_paging: bool,
    /// Read models: `ne`, `in` and several ranges in one query.
    pub rich_filters: bool,
    /// Read-model changes and the checkpoint commit in one atomic write.
    pub atomic_read_model_commit: bool,
    /// `recorded_at` comes from the server's clock rather than the client's.
    pub server_clock: bool,
}

impl Capabilities {
    /// True when `read_all` is available.
    pub const fn has_store_wide_log(&self) -> bool {
        self.partitions > 0
    }
}
