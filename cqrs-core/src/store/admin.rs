//! Operator access: everything a migration needs, including what normal reads hide.

use async_trait::async_trait;

use crate::{EventData, RecordedEvent, Result, StreamId, StreamState, Timestamp};

/// An event with the version and timestamp it had in its source store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedEvent {
    /// Its version in the stream.
    pub version: u64,
    /// When the source recorded it.
    pub recorded_at: Timestamp,
    /// The event itself (id, type, schema version, payload, encodings, metadata).
    pub data: EventData,
}

/// Operator access to a store, for migrations and repairs.
#[async_trait]
pub trait Admin: Send + Sync + std::fmt::Debug {
    /// Lists every stream, deleted ones included, with its state, after `after`, ordered
    /// bytewise, at most `limit`.
    ///
    /// # Errors
    /// Backend errors only.
    async fn list_all_streams(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, StreamState)>>;

    /// Reads stored events whatever the stream's state (soft-deleted or truncated events
    /// included), ascending from `from`.
    ///
    /// # Errors
    /// Backend errors only.
    async fn read_raw(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>>;

    /// Imports a commit with explicit ids, versions and timestamps. Versions must be
    /// contiguous and follow the stream's current version; importing a commit that is already
    /// there (same ids at the same versions) is a no-op, so an interrupted import can be
    /// re-run.
    ///
    /// # Errors
    /// [`crate::Error::Conflict`] for a version gap or overlap with other events;
    /// [`crate::Error::IdempotencyMismatch`]; the append limits.
    async fn import_commit(&self, stream: &StreamId, events: Vec<ImportedEvent>) -> Result<()>;

    /// Sets a stream's state (for example soft-deleted at its version) after an import.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a state that contradicts the stored events.
    async fn set_stream_state(&self, stream: &StreamId, state: StreamState) -> Result<()>;
}
