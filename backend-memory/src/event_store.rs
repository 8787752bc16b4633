//! [`EventStore`] for [`MemoryBackend`]: the append decision from core, one log partition.

use async_trait::async_trait;
use cqrs_core::{
    check_version, decide_append, AppendDecision, AppendOutcome, Batch, Capabilities, Checkpoint, DeleteMode,
    Error, EventData, EventFilter, EventId, EventStore, ExpectedVersion, Position, RecordedEvent, Result,
    StoreIdentity, StreamId, StreamPage, StreamState, Timestamp,
};

use crate::state::{count, page, EventLog, StreamRecord};
use crate::MemoryBackend;

/// The partition of the memory log.
pub(crate) const PARTITION: u32 = 0;

/// Most log entries one `read_all` call scans, matching or not, so a filtered read of a long
/// log does not hold the lock for long. `next` moves past what was scanned.
const MAX_SCAN: usize = 65_536;

/// The position of the event at sequence `seq`.
pub(crate) fn position(seq: u64) -> Position {
    Position::new(PARTITION, [seq, 0, 0])
}

impl EventLog {
    /// The stream's record, if it was ever written (or tombstoned by an operator).
    pub(crate) fn record(&self, stream: &StreamId) -> Option<&StreamRecord> {
        self.by_name.get(stream).and_then(|&i| self.streams.get(i))
    }

    /// The stream's state; `Missing` when never written.
    pub(crate) fn state_of(&self, stream: &StreamId) -> StreamState {
        self.record(stream).map_or(StreamState::Missing, |r| r.state)
    }

    /// The stream's index, creating an empty record when it has none.
    pub(crate) fn index_or_create(&mut self, stream: &StreamId) -> usize {
        if let Some(&i) = self.by_name.get(stream) {
            return i;
        }
        let i = self.streams.len();
        self.streams.push(StreamRecord {
            state: StreamState::Missing,
            visible_from: 1,
            events: Vec::new(),
        });
        self.by_name.insert(stream.clone(), i);
        i
    }

    /// The version at which `id` is committed in `stream`, if it is.
    pub(crate) fn committed_in(&self, stream: &StreamId, id: &EventId) -> Option<u64> {
        let &(i, version) = self.ids.get(id)?;
        (self.by_name.get(stream) == Some(&i)).then_some(version)
    }

    /// Refuses a batch holding an id committed in another stream (ids are unique store-wide).
    /// Call once idempotency has been decided: ids of this stream are then known to be absent.
    pub(crate) fn check_globally_new<'a>(
        &self,
        stream: &StreamId,
        ids: impl IntoIterator<Item = &'a EventId>,
    ) -> Result<()> {
        let own = self.by_name.get(stream).copied();
        for id in ids {
            if let Some(&(i, _)) = self.ids.get(id) {
                if Some(i) != own {
                    return Err(Error::AlreadyExists {
                        what: format!("event id {id} (committed in another stream)"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes `events` at versions from `first_version` on (the caller has checked that this
    /// follows the stream's last version and that the ids are new) and marks the stream live.
    /// Returns the position of the last event. Checks every number before changing anything.
    pub(crate) fn write(
        &mut self,
        stream: &StreamId,
        first_version: u64,
        events: Vec<(Timestamp, EventData)>,
    ) -> Result<Option<Position>> {
        let n = count(events.len());
        if n == 0 {
            return Ok(None);
        }
        check_version(first_version.saturating_add(n - 1))?;
        check_version(count(self.entries.len()).saturating_add(n))?;
        let i = self.index_or_create(stream);
        let mut last = None;
        for ((recorded_at, data), version) in events.into_iter().zip(first_version..) {
            let seq = count(self.entries.len()) + 1;
            self.entries.push((i, version));
            self.ids.insert(data.event_id, (i, version));
            let at = position(seq);
            last = Some(at);
            if let Some(record) = self.streams.get_mut(i) {
                record.events.push(RecordedEvent {
                    stream_id: stream.clone(),
                    version,
                    position: at,
                    recorded_at,
                    data,
                });
            }
        }
        if let Some(record) = self.streams.get_mut(i) {
            record.state = StreamState::Live(record.last_version());
        }
        Ok(last)
    }

    /// The append itself, under the lock: idempotency and expectation through
    /// [`decide_append`], then store-wide id uniqueness, then the write.
    fn append(
        &mut self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        now: Timestamp,
    ) -> Result<AppendOutcome> {
        let state = self.state_of(stream);
        let decision = decide_append(stream, expected, state, &events, |id| {
            self.committed_in(stream, id)
        })?;
        match decision {
            AppendDecision::Empty { current } => Ok(AppendOutcome {
                first_version: current + 1,
                next_expected: current,
                position: None,
            }),
            AppendDecision::AlreadyCommitted {
                first_version,
                last_version,
            } => {
                let position = self
                    .record(stream)
                    .and_then(|r| r.event(last_version))
                    .map(|e| e.position);
                Ok(AppendOutcome {
                    first_version,
                    next_expected: last_version,
                    position,
                })
            }
            AppendDecision::Write { first_version } => {
                self.check_globally_new(stream, events.iter().map(|e| &e.event_id))?;
                let n = count(events.len());
                let position = self.write(
                    stream,
                    first_version,
                    events.into_iter().map(|e| (now, e)).collect(),
                )?;
                Ok(AppendOutcome {
                    first_version,
                    next_expected: first_version + n - 1,
                    position,
                })
            }
        }
    }

    /// Reads the log after `from`: matching visible events up to `max` and `max_bytes`.
    fn read_all(
        &self,
        identity: &StoreIdentity,
        from: &Checkpoint,
        max: usize,
        max_bytes: usize,
        filter: &EventFilter,
    ) -> Result<Batch> {
        from.check_store(identity)?;
        let head = count(self.entries.len());
        let mut seen = 0u64;
        for (&partition, offset) in &from.partitions {
            if partition != PARTITION || *offset > position(head).offset {
                return Err(Error::DataLoss { partition });
            }
            seen = offset[0];
        }
        let mut events = Vec::new();
        let mut quarantined = Vec::new();
        let mut bytes = 0usize;
        let mut scanned = 0usize;
        let mut seq = seen;
        while seq < head && events.len() < max && scanned < MAX_SCAN {
            // Entry `seq` (0-based) is the event at sequence `seq + 1`.
            if self.quarantined.contains_key(&(seq + 1)) {
                quarantined.push(position(seq + 1));
                seq += 1;
                scanned += 1;
                continue;
            }
            let entry = usize::try_from(seq)
                .ok()
                .and_then(|i| self.entries.get(i))
                .and_then(|&(i, version)| {
                    let record = self.streams.get(i)?;
                    record
                        .is_visible(version)
                        .then(|| record.event(version))
                        .flatten()
                });
            if let Some(event) = entry.filter(|e| filter.matches(e)) {
                let len = event.data.encoded_len();
                if !events.is_empty() && bytes.saturating_add(len) > max_bytes {
                    break;
                }
                bytes = bytes.saturating_add(len);
                events.push(event.clone());
            }
            seq += 1;
            scanned += 1;
        }
        let mut next = from.clone();
        next.store = Some(identity.clone());
        if seq > seen {
            next.advance(&position(seq));
        }
        Ok(Batch {
            events,
            next,
            caught_up: seq >= head,
            quarantined,
        })
    }

    /// Deletes a stream softly or for ever if `expected` holds.
    fn delete(&mut self, stream: &StreamId, expected: ExpectedVersion, mode: DeleteMode) -> Result<bool> {
        let state = self.state_of(stream);
        if state == StreamState::Tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        if !expected.is_satisfied_by(state) {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: state,
            });
        }
        let Some(record) = self.by_name.get(stream).and_then(|&i| self.streams.get_mut(i)) else {
            return Ok(false);
        };
        match (mode, state) {
            (_, StreamState::Missing) => return Ok(false),
            (DeleteMode::Soft, StreamState::Live(v) | StreamState::SoftDeleted(v)) => {
                record.state = StreamState::SoftDeleted(v);
                record.visible_from = record.visible_from.max(v.saturating_add(1));
            }
            (DeleteMode::Tombstone, _) | (DeleteMode::Soft, StreamState::Tombstoned) => {
                record.state = StreamState::Tombstoned;
            }
        }
        Ok(true)
    }

    /// Hides versions below `version`.
    fn truncate(&mut self, stream: &StreamId, version: u64) -> Result<()> {
        let Some(record) = self.by_name.get(stream).and_then(|&i| self.streams.get_mut(i)) else {
            return Ok(());
        };
        if record.state == StreamState::Tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        record.visible_from = record.visible_from.max(version);
        Ok(())
    }

    /// The record of a stream a caller may read: `None` when missing, an error when
    /// tombstoned.
    fn readable(&self, stream: &StreamId) -> Result<Option<&StreamRecord>> {
        match self.record(stream) {
            Some(r) if r.state == StreamState::Tombstoned => Err(Error::StreamDeleted {
                stream: stream.clone(),
            }),
            other => Ok(other),
        }
    }
}

#[async_trait]
impl EventStore for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        MemoryBackend::CAPABILITIES
    }

    fn limits(&self) -> cqrs_core::Limits {
        self.limits
    }

    fn identity(&self) -> StoreIdentity {
        self.identity.clone()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream, expected = %expected, events = events.len()))]
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendOutcome> {
        self.begin().await?;
        self.limits.check_batch(&events)?;
        let now = self.clock.now();
        self.lock()?.log.append(stream, expected, events, now)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream, from = from, max = max))]
    async fn read_stream(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.begin().await?;
        let inner = self.lock()?;
        let Some(record) = inner.log.readable(stream)? else {
            return Ok(Vec::new());
        };
        let events = record
            .events_between(from.max(record.visible_from), record.last_version())
            .iter()
            .filter(|e| record.is_visible(e.version));
        Ok(page(events, max, self.limits.max_read_bytes))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream, from = ?from, max = max))]
    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        from: Option<u64>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.begin().await?;
        let inner = self.lock()?;
        let Some(record) = inner.log.readable(stream)? else {
            return Ok(Vec::new());
        };
        let top = from.map_or(record.last_version(), |v| v.min(record.last_version()));
        let events = record
            .events_between(record.visible_from, top)
            .iter()
            .rev()
            .filter(|e| record.is_visible(e.version));
        Ok(page(events, max, self.limits.max_read_bytes))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream))]
    async fn stream_state(&self, stream: &StreamId) -> Result<StreamState> {
        self.begin().await?;
        Ok(self.lock()?.log.state_of(stream))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", max = max))]
    async fn read_all(&self, from: &Checkpoint, max: usize, filter: &EventFilter) -> Result<Batch> {
        self.begin().await?;
        self.lock()?
            .log
            .read_all(&self.identity, from, max, self.limits.max_read_bytes, filter)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream, expected = %expected, mode = ?mode))]
    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()> {
        self.begin().await?;
        let mut inner = self.lock()?;
        if inner.log.delete(stream, expected, mode)? {
            inner.snapshots.remove(stream);
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream, version = version))]
    async fn truncate_before(&self, stream: &StreamId, version: u64) -> Result<()> {
        self.begin().await?;
        self.lock()?.log.truncate(stream, version)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", limit = limit))]
    async fn list_streams(&self, after: Option<&StreamId>, limit: usize) -> Result<StreamPage> {
        self.begin().await?;
        if limit == 0 {
            return Err(Error::invalid("list_streams limit must be at least 1"));
        }
        let inner = self.lock()?;
        let log = &inner.log;
        let lower = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        let mut live = log
            .by_name
            .range::<StreamId, _>((lower, std::ops::Bound::Unbounded))
            .filter(|(_, &i)| log.streams.get(i).is_some_and(|r| r.state.is_live()))
            .map(|(id, _)| id);
        let streams: Vec<StreamId> = live.by_ref().take(limit).cloned().collect();
        let next = if live.next().is_some() {
            streams.last().cloned()
        } else {
            None
        };
        Ok(StreamPage { streams, next })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory"))]
    async fn close(&self) -> Result<()> {
        // `begin` counts the call; its `Closed` answer is ignored: closing twice is fine.
        let _ = self.begin().await;
        self.shut();
        Ok(())
    }
}
