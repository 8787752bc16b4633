//! The event store trait.

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

use crate::{
    AppendOutcome, Batch, Capabilities, Checkpoint, DeleteMode, EventData, EventFilter, ExpectedVersion,
    RecordedEvent, Result, StoreIdentity, StreamId, StreamState,
};

/// One page of stream names, ordered bytewise.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamPage {
    /// Stream ids on this page.
    pub streams: Vec<StreamId>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next: Option<StreamId>,
}

/// Stores events in streams, with optimistic concurrency, idempotent appends and a
/// store-wide log.
///
/// # Contract
/// Every implementation passes the conformance harness. The pinned edge cases: an empty
/// append checks the expectation, writes nothing and returns the current version; reading a
/// missing stream returns an empty list; a soft-deleted stream reads empty and can be
/// appended to again with numbering continuing; a tombstoned stream refuses reads and writes
/// with [`crate::Error::StreamDeleted`].
#[async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// The store's identity, carried by the checkpoints it returns.
    fn identity(&self) -> StoreIdentity;

    /// The limits this store enforces. Readers use them to tell a page cut by the byte limit
    /// from the end of a stream without another round trip (see [`EventStoreExt::stream_events`]).
    fn limits(&self) -> crate::Limits {
        crate::Limits::default()
    }

    /// Appends `events` to `stream` if its state satisfies `expected`, all or nothing.
    ///
    /// Events keep the order of the `Vec`: versions and positions follow it. Idempotency is
    /// checked first (see [`crate::decide_append`]): re-sending a committed batch returns the
    /// original outcome.
    ///
    /// # Errors
    /// [`crate::Error::Conflict`] if the expectation does not hold,
    /// [`crate::Error::IdempotencyMismatch`], [`crate::Error::StreamDeleted`],
    /// [`crate::Error::AlreadyExists`] for an id committed in another stream (where
    /// [`Capabilities::global_event_id_uniqueness`] is declared),
    /// [`crate::Error::TooLarge`] and [`crate::Error::InvalidInput`] (checked before any
    /// I/O), [`crate::Error::Unavailable`].
    ///
    /// # Cancel safety
    /// Not cancel safe: once sent, the batch may commit even if this future is dropped.
    /// Re-send the same batch (same ids) to learn the outcome.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendOutcome>;

    /// Reads up to `max` events of `stream` with version `>= from`, ascending. A page never
    /// holds more than [`crate::Limits::max_read_bytes`] of events (by
    /// [`EventData::encoded_len`]), except a page of a single event. A missing or
    /// soft-deleted stream reads empty.
    ///
    /// # Errors
    /// [`crate::Error::StreamDeleted`] for a tombstoned stream.
    async fn read_stream(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>>;

    /// Reads up to `max` events of `stream` with version `<= from` (`None`: from the end),
    /// descending.
    ///
    /// # Errors
    /// [`crate::Error::StreamDeleted`] for a tombstoned stream.
    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        from: Option<u64>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// The stream's state.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`], [`crate::Error::Closed`] and backend errors only.
    async fn stream_state(&self, stream: &StreamId) -> Result<StreamState>;

    /// Reads up to `max` matching events of the store-wide log after `from`, in log order
    /// within each partition. `next` moves past every entry scanned, matching or not.
    ///
    /// # Errors
    /// [`crate::Error::CheckpointMismatch`] for a checkpoint of another store or epoch,
    /// [`crate::Error::DataLoss`] for a checkpoint ahead of the store,
    /// [`crate::Error::Unsupported`] where there is no store-wide log.
    async fn read_all(&self, from: &Checkpoint, max: usize, filter: &EventFilter) -> Result<Batch>;

    /// Deletes a stream softly or for ever, if its state satisfies `expected`. Deleting a
    /// missing stream whose expectation holds (`Any`, `NoStream`) is a no-op. A soft delete
    /// also deletes the stream's snapshots, as does a tombstone.
    ///
    /// # Errors
    /// [`crate::Error::Conflict`] for a wrong expectation; [`crate::Error::StreamDeleted`]
    /// for a tombstoned stream.
    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()>;

    /// Hides events below `version` from reads; the stream's version is unchanged.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] unless [`Capabilities::truncate`] is declared;
    /// [`crate::Error::StreamDeleted`] for a tombstoned stream.
    async fn truncate_before(&self, stream: &StreamId, version: u64) -> Result<()>;

    /// Lists live streams (not deleted) after `after`, at most `limit`, ordered bytewise.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a `limit` of 0.
    async fn list_streams(&self, after: Option<&StreamId>, limit: usize) -> Result<StreamPage>;

    /// Drains in-flight calls and refuses new ones with [`crate::Error::Closed`]. Closing
    /// twice is safe.
    ///
    /// # Errors
    /// Backend errors while draining.
    async fn close(&self) -> Result<()>;
}

/// Conveniences over any [`EventStore`].
pub trait EventStoreExt: EventStore {
    /// Every event of a stream from `from` on, paged `page` events at a time. A short page
    /// that the byte limit cannot have cut ends the stream without a further read.
    fn stream_events<'a>(
        &'a self,
        stream: &'a StreamId,
        from: u64,
        page: usize,
    ) -> BoxStream<'a, Result<RecordedEvent>> {
        let page = page.max(1);
        stream::try_unfold(Some(from), move |next| async move {
            let Some(from) = next else { return Ok(None) };
            let events = self.read_stream(stream, from, page).await?;
            let next = match events.last() {
                Some(last) if !is_last_page(self.limits(), &events, page) => Some(last.version + 1),
                _ => None,
            };
            Ok(Some((stream::iter(events.into_iter().map(Ok)), next)))
        })
        .map(|r| match r {
            Ok(s) => s.left_stream(),
            Err(e) => stream::iter([Err(e)]).right_stream(),
        })
        .flatten()
        .boxed()
    }
}

impl<T: EventStore + ?Sized> EventStoreExt for T {}

/// True when a forward page of `max` events is known to end its stream: it is shorter than
/// asked, and so small that the byte limit cannot have cut it (a page never exceeds
/// `max_read_bytes` unless it holds one event, and no event exceeds `max_event_bytes`, so a
/// cut page holds more than their difference). Saves the empty read that would otherwise
/// confirm the end.
pub fn is_last_page(limits: crate::Limits, events: &[RecordedEvent], max: usize) -> bool {
    if events.len() >= max {
        return false;
    }
    let bytes: usize = events.iter().map(|e| e.data.encoded_len()).sum();
    bytes.saturating_add(limits.max_event_bytes) <= limits.max_read_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContentType, EventData, Limits, Position, Timestamp};

    fn recorded(len: usize) -> RecordedEvent {
        RecordedEvent {
            stream_id: "s".parse().unwrap(),
            version: 1,
            position: Position::new(0, [1, 0, 0]),
            recorded_at: Timestamp::from_millis(0),
            data: EventData::new("T", ContentType::Opaque, vec![0u8; len]),
        }
    }

    #[test]
    fn a_short_small_page_ends_the_stream_but_a_cut_one_does_not() {
        let limits = Limits {
            max_event_bytes: 100,
            max_read_bytes: 1000,
            ..Limits::default()
        };
        assert!(
            is_last_page(limits, &[recorded(10), recorded(10)], 5),
            "short and small"
        );
        assert!(
            !is_last_page(limits, &vec![recorded(10); 5], 5),
            "full: there may be more"
        );
        // 950 bytes: the next event (up to 100 bytes) may have been cut by the 1000-byte limit.
        assert!(!is_last_page(limits, &[recorded(470), recorded(470)], 5));
        assert!(is_last_page(limits, &[], 5), "empty");
    }
}
