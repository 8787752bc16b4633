//! [`Admin`] for [`RedisBackend`]: raw reads, imports and state changes for operators.

use async_trait::async_trait;
use cqrs_core::{
    check_version, Admin, Error, EventData, ExpectedVersion, ImportedEvent, RecordedEvent, Result, StreamId,
    StreamState,
};

use crate::conn::reply;
use crate::error::{damaged_head, parse_state, unexpected};
use crate::event_store::{ALL, EVENTS, HEAD, IDS, LIVE, LOG};
use crate::packed::pack;
use crate::{scripts, RedisBackend};

#[async_trait]
impl Admin for RedisBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", limit = limit))]
    async fn list_all_streams(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, StreamState)>> {
        let _call = self.begin()?;
        let mut names = self.merged_names(ALL, after.map(StreamId::as_str), limit).await?;
        names.truncate(limit);
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let stream = StreamId::new(name)?;
            let state = self.state_of(&stream).await?;
            out.push((stream, state));
        }
        Ok(out)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream, from = from, max = max))]
    async fn read_raw(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        let _call = self.begin()?;
        self.read_page(stream, Some(from), max, true, true).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream, events = events.len()))]
    async fn import_commit(&self, stream: &StreamId, events: Vec<ImportedEvent>) -> Result<()> {
        let _call = self.begin()?;
        let data: Vec<EventData> = events.iter().map(|e| e.data.clone()).collect();
        self.limits.check_batch(&data)?;
        let Some(first) = events.first().map(|e| e.version) else {
            return Ok(());
        };
        if first == 0 {
            return Err(Error::invalid("imported versions start at 1"));
        }
        let n = u64::try_from(events.len()).unwrap_or(u64::MAX);
        check_version(first.saturating_add(n - 1))?;
        if events
            .iter()
            .zip(0u64..)
            .any(|(e, i)| first.checked_add(i) != Some(e.version))
        {
            return Err(Error::invalid(format!(
                "imported versions of {stream} must be contiguous from {first}"
            )));
        }
        let p = self.keys.partition_of(stream.as_str());
        let name = stream.as_str();
        let mut inv = scripts::IMPORT.prepare_invoke();
        inv.key(self.keys.named(p, HEAD, name))
            .key(self.keys.named(p, EVENTS, name))
            .key(self.keys.named(p, IDS, name))
            .key(self.keys.partition(p, LOG))
            .key(self.keys.partition(p, LIVE))
            .key(self.keys.partition(p, ALL))
            .arg(name)
            .arg(events.len());
        for e in &events {
            inv.arg(e.version)
                .arg(e.recorded_at.as_millis())
                .arg(pack(&e.data)?);
        }
        let (status, mut items) = reply::status(self.conn.script(&inv).await?)?;
        match status.as_str() {
            "ok" => Ok(()),
            "mismatch" => Err(Error::IdempotencyMismatch {
                stream: stream.clone(),
                reason: reply::next_string(&mut items)?,
            }),
            "conflict" => Err(Error::Conflict {
                stream: stream.clone(),
                expected: ExpectedVersion::Exact(first - 1).normalized(),
                actual: parse_state(&reply::next_string(&mut items)?)?,
            }),
            "deleted" => Err(Error::StreamDeleted {
                stream: stream.clone(),
            }),
            "corrupt" => Err(damaged_head(stream, items)),
            other => Err(unexpected(&format!("import answered {other:?}"))),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream, state = %state))]
    async fn set_stream_state(&self, stream: &StreamId, state: StreamState) -> Result<()> {
        let _call = self.begin()?;
        let (kind, v) = match state {
            StreamState::Missing => ("M", 0),
            StreamState::Live(v) => ("L", v),
            StreamState::SoftDeleted(v) => ("S", v),
            StreamState::Tombstoned => ("T", 0),
        };
        let p = self.keys.partition_of(stream.as_str());
        let name = stream.as_str();
        let answer = self
            .conn
            .script(
                scripts::SET_STATE
                    .key(self.keys.named(p, HEAD, name))
                    .key(self.keys.partition(p, LIVE))
                    .key(self.keys.partition(p, ALL))
                    .arg(name)
                    .arg(kind)
                    .arg(v),
            )
            .await?;
        let (status, mut items) = reply::status(answer)?;
        match status.as_str() {
            "ok" => Ok(()),
            "invalid" => {
                let what = reply::next_string(&mut items)?;
                let last = self.state_of(stream).await?.last_version().unwrap_or(0);
                Err(Error::invalid(format!(
                    "cannot set {stream} to {state}: {what} (its last stored version is {last})"
                )))
            }
            other => Err(unexpected(&format!("set_stream_state answered {other:?}"))),
        }
    }
}
