//! Operator access: everything a migration needs, including what normal reads hide.

use async_trait::async_trait;

use crate::{EventData, Position, RecordedEvent, Result, StreamId, StreamState, Timestamp};

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

/// An entry of the store-wide log set aside by an operator, as listed by
/// [`Admin::quarantined`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Quarantined {
    /// The entry's position in the log.
    pub position: Position,
    /// Why it was quarantined, as the operator said.
    pub reason: String,
    /// When (the store's clock).
    pub at: Timestamp,
}

impl Quarantined {
    /// A record of the entry at `position`, for backends listing what they hold.
    pub fn new(position: Position, reason: impl Into<String>, at: Timestamp) -> Self {
        Quarantined {
            position,
            reason: reason.into(),
            at,
        }
    }
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

    /// Sets the log entry at `position` aside: from now on every [`crate::EventStore::read_all`]
    /// skips it and reports its position in [`crate::Batch::quarantined`].
    ///
    /// The way out when one corrupt event makes `read_all` fail with
    /// [`crate::Error::Corrupt`] (whose text names the position) for every reader from before
    /// it: by default nothing is ever skipped silently. The event stays stored and its stream
    /// reads as before (a stream read still fails on a corrupt event: an aggregate is never
    /// loaded with a hole); repair or remove it, then [`Admin::release`] it. Quarantining an
    /// entry again keeps the first record.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when the log has no entry at `position`;
    /// [`crate::Error::Unsupported`] from a backend that cannot quarantine (the default, which
    /// the conformance suite reports as NOT RUN).
    async fn quarantine(&self, position: Position, reason: &str) -> Result<()> {
        let _ = (position, reason);
        Err(crate::Error::Unsupported {
            capability: "quarantine",
        })
    }

    /// Every quarantined entry, in log order within each partition.
    ///
    /// # Errors
    /// Backend errors; [`crate::Error::Unsupported`] as for [`Admin::quarantine`].
    async fn quarantined(&self) -> Result<Vec<Quarantined>> {
        Err(crate::Error::Unsupported {
            capability: "quarantine",
        })
    }

    /// Ends the quarantine of the entry at `position`, so readers see it again; `false` when it
    /// was not quarantined.
    ///
    /// # Errors
    /// Backend errors; [`crate::Error::Unsupported`] as for [`Admin::quarantine`].
    async fn release(&self, position: Position) -> Result<bool> {
        let _ = position;
        Err(crate::Error::Unsupported {
            capability: "quarantine",
        })
    }
}
