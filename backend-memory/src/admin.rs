//! [`Admin`] for [`MemoryBackend`]: raw reads, imports and state changes for operators.

use std::ops::Bound;

use async_trait::async_trait;
use cqrs_core::{
    decide_import, Admin, Error, EventData, ImportedEvent, Position, Quarantined, RecordedEvent, Result,
    StreamId, StreamState,
};

use crate::event_store::PARTITION;
use crate::state::{count, page, EventLog};
use crate::MemoryBackend;

impl EventLog {
    /// Imports a commit with explicit versions, ids and timestamps (limits already checked).
    fn import(&mut self, stream: &StreamId, events: Vec<ImportedEvent>) -> Result<()> {
        let Some(first) = events.first().map(|e| e.version) else {
            return Ok(());
        };
        let state = self.state_of(stream);
        if !decide_import(stream, state, &events, |id| self.committed_in(stream, id))? {
            return Ok(());
        }
        self.check_globally_new(stream, events.iter().map(|e| &e.data.event_id))?;
        self.write(
            stream,
            first,
            events.into_iter().map(|e| (e.recorded_at, e.data)).collect(),
        )?;
        Ok(())
    }

    /// The log sequence `position` names, if the log holds an entry there.
    fn sequence_at(&self, position: &Position) -> Option<u64> {
        let [seq, 0, 0] = position.offset else {
            return None;
        };
        (position.partition == PARTITION && seq >= 1 && seq <= count(self.entries.len())).then_some(seq)
    }

    /// Sets a stream's state if it agrees with the stored events. Hiding is never undone:
    /// setting `Live` on a soft-deleted stream keeps its old events hidden.
    fn set_state(&mut self, stream: &StreamId, state: StreamState) -> Result<()> {
        let last = self.record(stream).map_or(0, |r| r.last_version());
        let contradicts = |what: &str| {
            Err(Error::invalid(format!(
                "cannot set {stream} to {state}: {what} (its last stored version is {last})"
            )))
        };
        match state {
            StreamState::Missing if last > 0 => return contradicts("it holds events"),
            StreamState::Missing if self.record(stream).is_none() => return Ok(()),
            StreamState::Live(v) | StreamState::SoftDeleted(v) if v == 0 || v != last => {
                return contradicts("the version must be its last stored version")
            }
            _ => {}
        }
        let i = self.index_or_create(stream);
        if let Some(record) = self.streams.get_mut(i) {
            record.state = state;
            if let StreamState::SoftDeleted(v) = state {
                record.visible_from = record.visible_from.max(v.saturating_add(1));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Admin for MemoryBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", limit = limit))]
    async fn list_all_streams(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, StreamState)>> {
        self.begin().await?;
        let inner = self.lock()?;
        let log = &inner.log;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(log
            .by_name
            .range::<StreamId, _>((lower, Bound::Unbounded))
            .filter_map(|(id, &i)| log.streams.get(i).map(|r| (id.clone(), r.state)))
            .take(limit)
            .collect())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream, from = from, max = max))]
    async fn read_raw(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.begin().await?;
        let inner = self.lock()?;
        let Some(record) = inner.log.record(stream) else {
            return Ok(Vec::new());
        };
        let events = record.events_between(from, record.last_version()).iter();
        Ok(page(events, max, self.limits.max_read_bytes))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream, events = events.len()))]
    async fn import_commit(&self, stream: &StreamId, events: Vec<ImportedEvent>) -> Result<()> {
        self.begin().await?;
        let data: Vec<EventData> = events.iter().map(|e| e.data.clone()).collect();
        self.limits.check_batch(&data)?;
        self.lock()?.log.import(stream, events)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream, state = %state))]
    async fn set_stream_state(&self, stream: &StreamId, state: StreamState) -> Result<()> {
        self.begin().await?;
        self.lock()?.log.set_state(stream, state)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", position = %position))]
    async fn quarantine(&self, position: Position, reason: &str) -> Result<()> {
        self.begin().await?;
        let now = self.clock.now();
        let mut inner = self.lock()?;
        let log = &mut inner.log;
        let seq = log.sequence_at(&position).ok_or_else(|| Error::NotFound {
            what: format!("log entry at {position}"),
        })?;
        log.quarantined
            .entry(seq)
            .or_insert_with(|| Quarantined::new(position, reason, now));
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory"))]
    async fn quarantined(&self) -> Result<Vec<Quarantined>> {
        self.begin().await?;
        Ok(self.lock()?.log.quarantined.values().cloned().collect())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", position = %position))]
    async fn release(&self, position: Position) -> Result<bool> {
        self.begin().await?;
        let mut inner = self.lock()?;
        let log = &mut inner.log;
        Ok(log
            .sequence_at(&position)
            .is_some_and(|seq| log.quarantined.remove(&seq).is_some()))
    }
}
