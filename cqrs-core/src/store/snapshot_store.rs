//! The snapshot store trait.

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ContentEncoding, ContentType, Result, StreamId, Timestamp};

/// An aggregate's state at a version of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream the state was folded from.
    pub stream_id: StreamId,
    /// The last event version folded in.
    pub version: u64,
    /// The schema revision of the state's encoding: a loader ignores a snapshot whose
    /// revision is not the current one and replays the stream instead.
    pub schema_revision: u32,
    /// The encoded state (often compressed; see `content_encoding`).
    pub payload: Bytes,
    /// How to read the payload once decompressed.
    pub content_type: ContentType,
    /// How the payload is compressed.
    pub content_encoding: ContentEncoding,
    /// When it was taken.
    pub taken_at: Timestamp,
}

/// A stream and a snapshot version, as listed by [`SnapshotStore::list`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotKey {
    /// The stream.
    pub stream_id: StreamId,
    /// The snapshot's version.
    pub version: u64,
}

/// Stores snapshots, several per stream, keyed by version.
#[async_trait]
pub trait SnapshotStore: Send + Sync + std::fmt::Debug {
    /// Saves a snapshot; one at an existing version replaces it.
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] over the document limit; backend errors.
    async fn save(&self, snapshot: Snapshot) -> Result<()>;

    /// The snapshot with the highest version, if any.
    ///
    /// # Errors
    /// Backend errors only.
    async fn load_latest(&self, stream: &StreamId) -> Result<Option<Snapshot>>;

    /// The snapshot with the highest version `<= version`, if any.
    ///
    /// # Errors
    /// Backend errors only.
    async fn load_at_or_before(&self, stream: &StreamId, version: u64) -> Result<Option<Snapshot>>;

    /// Deletes every snapshot of a stream; returns how many there were.
    ///
    /// # Errors
    /// Backend errors only.
    async fn delete(&self, stream: &StreamId) -> Result<u64>;

    /// Lists snapshot keys after `after`, ordered by stream then version, at most `limit`.
    ///
    /// # Errors
    /// Backend errors only.
    async fn list(&self, after: Option<&SnapshotKey>, limit: usize) -> Result<Vec<SnapshotKey>>;
}
