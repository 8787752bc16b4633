//! The event store: one commit document per append, the store-wide log on replica sets.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use bson::{doc, Bson, Document};
use cqrs_core::{
    AppendOutcome, Batch, Capabilities, Checkpoint, DeleteMode, Error, EventData, EventFilter,
    ExpectedVersion, Outcome, RecordedEvent, Result, StoreIdentity, StreamId, StreamPage, StreamState,
    MAX_VERSION,
};

use crate::{
    backend::{unit_of_work, MongoBackend, Tx, LOG_ID},
    error::{self, is_duplicate_key},
    indexes::Coll,
    mapping::{self, f, i64_of, u64_of, Commit},
    resolve::{resolve, Resolution},
};

/// How often an append re-reads the head after losing a race under `Any`/`StreamExists`.
const APPEND_ATTEMPTS: u32 = 16;

/// What the `streams` collection says about a stream (absent: nothing special).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StreamMeta {
    /// Tombstoned.
    pub(crate) tombstoned: bool,
    /// Soft-deleted at this version (the stream reads as soft-deleted while its head is
    /// still there).
    pub(crate) deleted_at: Option<u64>,
    /// Versions below this are hidden from reads (truncation and soft deletion).
    pub(crate) floor: u64,
}

impl StreamMeta {
    pub(crate) fn from_document(d: Option<&Document>) -> Result<StreamMeta> {
        let Some(d) = d else {
            return Ok(StreamMeta::default());
        };
        // A state this backend never writes is damage at rest: refusing it here refuses the
        // append (which reads the meta first) before anything is written.
        let st = match d.get("st") {
            None => "live",
            Some(Bson::String(st)) if matches!(st.as_str(), "live" | "soft" | "tomb") => st.as_str(),
            Some(other) => {
                return Err(Error::corrupt(format!(
                    "the streams document of {:?} holds state {other} (expected live, soft or tomb)",
                    d.get_str("_id").unwrap_or_default()
                )))
            }
        };
        Ok(StreamMeta {
            tombstoned: st == "tomb",
            deleted_at: if st == "soft" {
                Some(u64_of(d, "dv")?)
            } else {
                None
            },
            floor: if d.contains_key("fl") { u64_of(d, "fl")? } else { 0 },
        })
    }

    /// The stream's state given its last committed version.
    pub(crate) fn state(&self, head: u64) -> StreamState {
        if self.tombstoned {
            return StreamState::Tombstoned;
        }
        match self.deleted_at {
            Some(v) if head <= v => StreamState::SoftDeleted(v),
            _ if head == 0 => StreamState::Missing,
            _ => StreamState::Live(head),
        }
    }
}

impl MongoBackend {
    pub(crate) async fn stream_meta(&self, tx: &mut Tx, stream: &StreamId) -> Result<StreamMeta> {
        let d = tx
            .find_one(&self.coll(Coll::Streams), doc! { "_id": stream.as_str() }, None)
            .await
            .map_err(error::map)?;
        StreamMeta::from_document(d.as_ref())
    }

    pub(crate) async fn head(&self, tx: &mut Tx, stream: &StreamId) -> Result<u64> {
        let d = tx
            .find_one(
                &self.coll(Coll::Commits),
                doc! { f::STREAM: stream.as_str() },
                Some(doc! { f::LAST: -1 }),
            )
            .await
            .map_err(error::map)?;
        d.map_or(Ok(0), |d| u64_of(&d, f::LAST))
    }

    /// The stream's metadata and state: outside a transaction in one round trip (its newest
    /// commit's last version and its `streams` document, through `$unionWith`).
    pub(crate) async fn state_in(&self, tx: &mut Tx, stream: &StreamId) -> Result<(StreamMeta, StreamState)> {
        if tx.is_transaction() {
            // Inside a transaction, two plain reads (no `$unionWith` in transactions).
            let meta = self.stream_meta(tx, stream).await?;
            let head = self.head(tx, stream).await?;
            return Ok((meta, meta.state(head)));
        }
        let pipeline = vec![
            doc! { "$match": { f::STREAM: stream.as_str() } },
            doc! { "$sort": { f::LAST: -1 } },
            doc! { "$limit": 1 },
            doc! { "$project": { "_id": 0, "head": format!("${}", f::LAST) } },
            doc! { "$unionWith": {
                "coll": self.name(Coll::Streams),
                "pipeline": [ { "$match": { "_id": stream.as_str() } } ],
            } },
        ];
        let docs = tx
            .aggregate(&self.coll(Coll::Commits), pipeline)
            .await
            .map_err(error::map)?;
        let head = docs
            .iter()
            .find(|d| d.contains_key("head"))
            .map_or(Ok(0), |d| u64_of(d, "head"))?;
        let meta = StreamMeta::from_document(docs.iter().find(|d| d.contains_key("_id")))?;
        Ok((meta, meta.state(head)))
    }

    pub(crate) async fn state_now(&self, stream: &StreamId) -> Result<(StreamMeta, StreamState)> {
        let mut tx = Tx::plain();
        self.state_in(&mut tx, stream).await
    }

    /// Every stored commit holding one of these event ids (any stream).
    pub(crate) async fn commits_holding(&self, events: &[EventData]) -> Result<Vec<Commit>> {
        let ids: Vec<Bson> = events.iter().map(|e| mapping::uuid_bson(&e.event_id)).collect();
        let docs = Tx::plain()
            .find(
                &self.coll(Coll::Commits),
                doc! { f::EVENT_IDS: { "$in": ids } },
                None,
                None,
            )
            .await
            .map_err(error::map)?;
        docs.iter().map(Commit::from_document).collect()
    }

    /// Inserts one commit; on a replica set, in a transaction with the log counter so
    /// sequence order is commit order. Returns the commit's log sequence (0 without a log).
    async fn insert_commit(
        &self,
        stream: &StreamId,
        first: u64,
        events: &[EventData],
        at: Option<&[cqrs_core::Timestamp]>,
    ) -> std::result::Result<u64, InsertError> {
        let now = self.inner.clock.now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = self.begin().await.map_err(InsertError::Other)?;
            let seq = if tx.is_transaction() {
                let counter = tx
                    .find_one_and_update(
                        &self.coll(Coll::Meta),
                        doc! { "_id": LOG_ID },
                        doc! { "$inc": { "seq": 1_i64 } },
                        true,
                    )
                    .await;
                match counter {
                    Ok(Some(d)) => Some(u64_of(&d, "seq").map_err(InsertError::Other)?),
                    Ok(None) => return Err(InsertError::Other(Error::corrupt("the log counter is missing"))),
                    Err(e) => {
                        tx.abort().await;
                        let e = error::map(e);
                        if attempt < crate::backend::TX_ATTEMPTS && crate::backend::is_transient(&e) {
                            continue;
                        }
                        return Err(InsertError::Other(e));
                    }
                }
            } else {
                None
            };
            let mut d =
                mapping::commit_document(stream, first, events, now, seq).map_err(InsertError::Other)?;
            if let Some(times) = at {
                mapping::set_event_times(&mut d, times);
            }
            match tx.insert_one(&self.coll(Coll::Commits), d).await {
                Ok(()) => {}
                Err(e) if is_duplicate_key(&e) => {
                    tx.abort().await;
                    return Err(InsertError::Duplicate);
                }
                Err(e) => {
                    tx.abort().await;
                    let e = error::map(e);
                    if attempt < crate::backend::TX_ATTEMPTS && crate::backend::is_transient(&e) {
                        continue;
                    }
                    return Err(InsertError::Other(e));
                }
            }
            match tx.commit().await {
                Ok(()) => return Ok(seq.unwrap_or(0)),
                Err(e) if attempt < crate::backend::TX_ATTEMPTS && crate::backend::is_transient(&e) => {}
                Err(e) => return Err(InsertError::Other(e)),
            }
        }
    }

    /// Imports a commit at explicit versions and timestamps (the admin path).
    pub(crate) async fn insert_imported(
        &self,
        stream: &StreamId,
        first: u64,
        events: &[EventData],
        times: &[cqrs_core::Timestamp],
    ) -> Result<()> {
        match self.insert_commit(stream, first, events, Some(times)).await {
            Ok(_) => Ok(()),
            Err(InsertError::Duplicate) => Err(Error::Conflict {
                stream: stream.clone(),
                expected: ExpectedVersion::Exact(first.saturating_sub(1)).normalized(),
                actual: self.state_now(stream).await?.1,
            }),
            Err(InsertError::Other(e)) => Err(e),
        }
    }

    fn capabilities_now(&self) -> Capabilities {
        Capabilities {
            partitions: u32::from(self.inner.replica_set),
            total_order: self.inner.replica_set,
            global_event_id_uniqueness: true,
            truncate: true,
        }
    }

    fn identity_now(&self) -> StoreIdentity {
        self.identity_opt().unwrap_or_else(|| StoreIdentity {
            id: "uninitialised".to_owned(),
            epoch: 0,
        })
    }

    /// Visible events of commits, in order, from version `from` (ascending) within the
    /// read limits.
    fn page_forward(&self, commits: Vec<Commit>, from: u64, max: usize) -> Vec<RecordedEvent> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for c in commits {
            for e in c.into_recorded() {
                if e.version < from {
                    continue;
                }
                if out.len() >= max {
                    return out;
                }
                bytes = bytes.saturating_add(e.data.encoded_len());
                if !out.is_empty() && bytes > self.inner.limits.max_read_bytes {
                    return out;
                }
                out.push(e);
            }
        }
        out
    }
}

/// The inputs of one `read_all` page besides the commits read.
pub(crate) struct LogPage<'a> {
    /// Where the reader is.
    pub(crate) from: &'a Checkpoint,
    /// This store.
    pub(crate) identity: StoreIdentity,
    /// Metadata of the streams of the commits (absent: nothing special).
    pub(crate) metas: &'a BTreeMap<String, StreamMeta>,
    /// Events per page.
    pub(crate) max: usize,
    /// Bytes per page (at least one event).
    pub(crate) max_read_bytes: usize,
    /// The reader's filter.
    pub(crate) filter: &'a EventFilter,
    /// Whether more commits follow the ones read.
    pub(crate) more_commits: bool,
}

/// Builds a `read_all` page from commits read in log order from the checkpoint's commit on:
/// skips what the checkpoint covers, moves `next` past every event scanned (visible and
/// matching or not), hides tombstoned streams and versions below a stream's floor, stops at
/// `max` events or the byte limit.
pub(crate) fn assemble_page(p: &LogPage<'_>, commits: Vec<Commit>) -> Batch {
    let mut next = Checkpoint {
        store: Some(p.identity.clone()),
        partitions: p.from.partitions.clone(),
    };
    let mut events = Vec::new();
    let mut bytes = 0usize;
    let mut stopped = false;
    'commits: for c in commits {
        let meta = p.metas.get(c.stream.as_str()).copied().unwrap_or_default();
        for e in c.into_recorded() {
            if p.from.covers(&e.position) {
                continue;
            }
            if events.len() >= p.max
                || (!events.is_empty() && bytes.saturating_add(e.data.encoded_len()) > p.max_read_bytes)
            {
                stopped = true;
                break 'commits;
            }
            next.advance(&e.position);
            let visible = !meta.tombstoned && e.version >= meta.floor;
            if visible && p.filter.matches(&e) {
                bytes = bytes.saturating_add(e.data.encoded_len());
                events.push(e);
            }
        }
    }
    Batch {
        events,
        next,
        caught_up: !stopped && !p.more_commits,
        quarantined: Vec::new(),
    }
}

/// Why inserting a commit failed.
enum InsertError {
    /// A unique index refused it: read back and resolve.
    Duplicate,
    /// Anything else.
    Other(Error),
}

impl Tx {
    /// Plain operations outside any transaction.
    pub(crate) fn plain() -> Tx {
        Tx::without_session()
    }
}

#[async_trait]
impl cqrs_core::EventStore for MongoBackend {
    fn capabilities(&self) -> Capabilities {
        self.capabilities_now()
    }

    fn identity(&self) -> StoreIdentity {
        self.identity_now()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream, count = events.len()))]
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendOutcome> {
        self.open()?;
        self.inner.limits.check_batch(&events)?;
        mapping::check_commit_size(&events)?;
        for attempt in 1..=APPEND_ATTEMPTS {
            let (_, state) = self.state_now(stream).await?;
            let first = match resolve(stream, expected, state, &events, &[]) {
                Ok(Resolution::Done(outcome)) => return Ok(outcome),
                Ok(Resolution::Write { first_version }) => first_version,
                // Idempotency comes before the version check: a re-send of a committed
                // batch under a now-failing expectation returns its original outcome.
                Err(Error::Conflict { .. }) => {
                    let clashing = self.commits_holding(&events).await?;
                    return match resolve(stream, expected, state, &events, &clashing)? {
                        Resolution::Done(outcome) => Ok(outcome),
                        Resolution::Write { .. } => Err(Error::Conflict {
                            stream: stream.clone(),
                            expected,
                            actual: state,
                        }),
                    };
                }
                Err(e) => return Err(e),
            };
            match self.insert_commit(stream, first, &events, None).await {
                Ok(seq) => {
                    let n = u64::try_from(events.len()).unwrap_or(MAX_VERSION);
                    let index = u64::try_from(events.len().saturating_sub(1)).unwrap_or(0);
                    return Ok(AppendOutcome {
                        first_version: first,
                        next_expected: first + n - 1,
                        position: Some(cqrs_core::Position::new(0, [seq, index, 0])),
                    });
                }
                Err(InsertError::Duplicate) => {
                    // Read the clashing commits back: a re-send, a mismatch, an id of another
                    // stream, or another writer took these versions first.
                    let clashing = self.commits_holding(&events).await?;
                    let (_, now) = self.state_now(stream).await?;
                    match resolve(stream, expected, now, &events, &clashing)? {
                        Resolution::Done(outcome) => return Ok(outcome),
                        Resolution::Write { .. } if attempt < APPEND_ATTEMPTS => {}
                        Resolution::Write { .. } => break,
                    }
                }
                Err(InsertError::Other(e)) => return Err(e),
            }
        }
        Err(Error::unavailable(
            Outcome::NotSent,
            format!("append to {stream} lost the race for the next version {APPEND_ATTEMPTS} times"),
        ))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream, from, max))]
    async fn read_stream(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.open()?;
        if max == 0 {
            // Still refuse a tombstoned stream.
            if self.stream_meta(&mut Tx::plain(), stream).await?.tombstoned {
                return Err(Error::StreamDeleted {
                    stream: stream.clone(),
                });
            }
            return Ok(Vec::new());
        }
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let mut from = from.max(1);
        // One round trip: the commits from `from` on and the stream's metadata document
        // (`$unionWith`). Only when the stream is truncated or soft-deleted beyond `from`
        // does a second query read from its floor.
        let (meta, docs) = {
            let Ok(from_i) = i64::try_from(from) else {
                return Ok(Vec::new());
            };
            let pipeline = vec![
                doc! { "$match": { f::STREAM: stream.as_str(), f::LAST: { "$gte": from_i } } },
                doc! { "$sort": { f::LAST: 1 } },
                doc! { "$limit": limit },
                doc! { "$unionWith": {
                    "coll": self.name(Coll::Streams),
                    "pipeline": [ { "$match": { "_id": stream.as_str() } } ],
                } },
            ];
            let mut all = Tx::plain()
                .aggregate(&self.coll(Coll::Commits), pipeline)
                .await
                .map_err(error::map)?;
            let meta_at = all.iter().position(|d| !d.contains_key(f::EVENTS));
            let meta = StreamMeta::from_document(meta_at.map(|i| &all[i]))?;
            if let Some(i) = meta_at {
                all.remove(i);
            }
            (meta, all)
        };
        if meta.tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        let docs = if meta.floor > from {
            from = meta.floor;
            Tx::plain()
                .find(
                    &self.coll(Coll::Commits),
                    doc! { f::STREAM: stream.as_str(), f::LAST: { "$gte": i64_of(from.min(MAX_VERSION))? } },
                    Some(doc! { f::LAST: 1 }),
                    Some(limit),
                )
                .await
                .map_err(error::map)?
        } else {
            docs
        };
        let commits = docs
            .iter()
            .map(Commit::from_document)
            .collect::<Result<Vec<_>>>()?;
        Ok(self.page_forward(commits, from, max))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream, ?from, max))]
    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        from: Option<u64>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.open()?;
        let mut tx = Tx::plain();
        let meta = self.stream_meta(&mut tx, stream).await?;
        if meta.tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        let upper = from.unwrap_or(MAX_VERSION).min(MAX_VERSION);
        let floor = meta.floor.max(1);
        if upper < floor {
            return Ok(Vec::new());
        }
        let docs = tx
            .find(
                &self.coll(Coll::Commits),
                doc! {
                    f::STREAM: stream.as_str(),
                    f::FIRST: { "$lte": i64_of(upper)? },
                    f::LAST: { "$gte": i64_of(floor)? },
                },
                Some(doc! { f::LAST: -1 }),
                Some(i64::try_from(max).unwrap_or(i64::MAX)),
            )
            .await
            .map_err(error::map)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for d in &docs {
            let commit = Commit::from_document(d)?;
            for e in commit.into_recorded().into_iter().rev() {
                if e.version > upper || e.version < floor {
                    continue;
                }
                if out.len() >= max {
                    return Ok(out);
                }
                bytes = bytes.saturating_add(e.data.encoded_len());
                if !out.is_empty() && bytes > self.inner.limits.max_read_bytes {
                    return Ok(out);
                }
                out.push(e);
            }
        }
        Ok(out)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream))]
    async fn stream_state(&self, stream: &StreamId) -> Result<StreamState> {
        self.open()?;
        Ok(self.state_now(stream).await?.1)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", max))]
    async fn read_all(&self, from: &Checkpoint, max: usize, filter: &EventFilter) -> Result<Batch> {
        self.open()?;
        if !self.inner.replica_set {
            return Err(Error::Unsupported {
                capability: "read_all needs a MongoDB replica set (a one-node replica set is enough)",
            });
        }
        let identity = self.identity_now();
        from.check_store(&identity)?;
        let mut tx = Tx::plain();
        let head = tx
            .find_one(&self.coll(Coll::Meta), doc! { "_id": LOG_ID }, None)
            .await
            .map_err(error::map)?
            .map_or(Ok(0), |d| u64_of(&d, "seq"))?;
        let seen = from.get(0).map(|p| p.offset);
        if let Some([seq, _, _]) = seen {
            if seq > head {
                return Err(Error::DataLoss { partition: 0 });
            }
        }
        let max = max.max(1);
        let start = seen.map_or(1, |[seq, _, _]| seq.max(1));
        let fetch = i64::try_from(max.saturating_add(1)).unwrap_or(i64::MAX);
        let docs = tx
            .find(
                &self.coll(Coll::Commits),
                doc! { f::SEQ: { "$gte": i64_of(start)? } },
                Some(doc! { f::SEQ: 1 }),
                Some(fetch),
            )
            .await
            .map_err(error::map)?;
        let more_commits = docs.len() > max;
        let commits = docs
            .iter()
            .map(Commit::from_document)
            .collect::<Result<Vec<_>>>()?;
        let streams: Vec<&str> = commits
            .iter()
            .map(|c| c.stream.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let metas: BTreeMap<String, StreamMeta> = tx
            .find(
                &self.coll(Coll::Streams),
                doc! { "_id": { "$in": streams } },
                None,
                None,
            )
            .await
            .map_err(error::map)?
            .iter()
            .map(|d| {
                let id = d.get_str("_id").unwrap_or_default().to_owned();
                StreamMeta::from_document(Some(d)).map(|m| (id, m))
            })
            .collect::<Result<_>>()?;
        Ok(assemble_page(
            &LogPage {
                from,
                identity,
                metas: &metas,
                max,
                max_read_bytes: self.inner.limits.max_read_bytes,
                filter,
                more_commits,
            },
            commits,
        ))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream, ?mode))]
    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()> {
        self.open()?;
        unit_of_work!(self, |tx| self.delete_in(&mut tx, stream, expected, mode).await)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream, version))]
    async fn truncate_before(&self, stream: &StreamId, version: u64) -> Result<()> {
        self.open()?;
        let (_, state) = self.state_now(stream).await?;
        match state {
            StreamState::Tombstoned => {
                return Err(Error::StreamDeleted {
                    stream: stream.clone(),
                })
            }
            // Nothing to hide: a floor recorded now would hide the stream's future events.
            StreamState::Missing => return Ok(()),
            StreamState::Live(_) | StreamState::SoftDeleted(_) => {}
        }
        let floor = i64_of(version.min(MAX_VERSION))?;
        self.coll(Coll::Streams)
            .update_one(doc! { "_id": stream.as_str() }, doc! { "$max": { "fl": floor } })
            .upsert(true)
            .await
            .map_err(error::map)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", limit))]
    async fn list_streams(&self, after: Option<&StreamId>, limit: usize) -> Result<StreamPage> {
        self.open()?;
        if limit == 0 {
            return Err(Error::invalid("list_streams: limit must be at least 1"));
        }
        let mut cursor = after.map(|s| s.as_str().to_owned());
        let mut streams = Vec::new();
        loop {
            let page = self.stream_heads(cursor.as_deref(), limit + 1).await?;
            let exhausted = page.len() <= limit;
            cursor = page.last().map(|(s, _)| s.clone());
            let names: Vec<&str> = page.iter().map(|(s, _)| s.as_str()).collect();
            let metas = self.metas_of(&names).await?;
            for (name, head) in &page {
                let meta = metas.get(name).copied().unwrap_or_default();
                if meta.state(*head).is_live() {
                    streams.push(StreamId::new(name.as_str())?);
                }
            }
            if streams.len() > limit || exhausted {
                break;
            }
        }
        let next = if streams.len() > limit {
            streams.truncate(limit);
            streams.last().cloned()
        } else {
            None
        };
        Ok(StreamPage { streams, next })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo"))]
    async fn close(&self) -> Result<()> {
        self.close_now();
        Ok(())
    }
}

impl MongoBackend {
    async fn delete_in(
        &self,
        tx: &mut Tx,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()> {
        let (_, state) = self.state_in(tx, stream).await?;
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
        let id = doc! { "_id": stream.as_str() };
        match (mode, state) {
            (_, StreamState::Missing) => return Ok(()),
            (DeleteMode::Soft, StreamState::SoftDeleted(_)) => return Ok(()),
            (DeleteMode::Soft, StreamState::Live(v)) => {
                let v = i64_of(v)?;
                tx.update_one(
                    &self.coll(Coll::Streams),
                    id,
                    doc! { "$set": { "st": "soft", "dv": v }, "$max": { "fl": v + 1 } },
                    true,
                )
                .await
                .map_err(error::map)?;
            }
            (DeleteMode::Tombstone, _) | (DeleteMode::Soft, StreamState::Tombstoned) => {
                tx.update_one(
                    &self.coll(Coll::Streams),
                    id,
                    doc! { "$set": { "st": "tomb" }, "$unset": { "dv": "" } },
                    true,
                )
                .await
                .map_err(error::map)?;
                tx.delete_many(&self.coll(Coll::Commits), doc! { f::STREAM: stream.as_str() })
                    .await
                    .map_err(error::map)?;
            }
        }
        tx.delete_many(&self.coll(Coll::Snapshots), doc! { "s": stream.as_str() })
            .await
            .map_err(error::map)?;
        Ok(())
    }

    /// Streams that have commits, after `after`, with their last version, ordered bytewise.
    pub(crate) async fn stream_heads(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, u64)>> {
        let mut pipeline = Vec::new();
        if let Some(a) = after {
            pipeline.push(doc! { "$match": { f::STREAM: { "$gt": a } } });
        }
        pipeline.push(doc! { "$group": { "_id": "$s", "l": { "$max": "$l" } } });
        pipeline.push(doc! { "$sort": { "_id": 1 } });
        pipeline.push(doc! { "$limit": i64::try_from(limit).unwrap_or(i64::MAX) });
        let docs: Vec<Document> = futures::TryStreamExt::try_collect(
            self.coll(Coll::Commits)
                .aggregate(pipeline)
                .await
                .map_err(error::map)?,
        )
        .await
        .map_err(error::map)?;
        docs.iter()
            .map(|d| Ok((mapping::str_of(d, "_id")?.to_owned(), u64_of(d, "l")?)))
            .collect()
    }

    /// The stream metadata of these streams.
    pub(crate) async fn metas_of(&self, names: &[&str]) -> Result<BTreeMap<String, StreamMeta>> {
        Tx::plain()
            .find(
                &self.coll(Coll::Streams),
                doc! { "_id": { "$in": names.to_vec() } },
                None,
                None,
            )
            .await
            .map_err(error::map)?
            .iter()
            .map(|d| {
                let id = mapping::str_of(d, "_id")?.to_owned();
                StreamMeta::from_document(Some(d)).map(|m| (id, m))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use cqrs_core::{ContentType, Position, Timestamp};

    use super::*;

    fn commit(stream: &str, first: u64, seq: u64, types: &[&str]) -> Commit {
        let events: Vec<EventData> = types
            .iter()
            .map(|t| EventData::new(*t, ContentType::Json, "{}"))
            .collect();
        Commit {
            stream: StreamId::new(stream).unwrap(),
            first,
            seq,
            at: Timestamp::from_millis(0),
            times: vec![Timestamp::from_millis(0); events.len()],
            events,
        }
    }

    fn log() -> Vec<Commit> {
        vec![
            commit("a", 1, 1, &["A", "A"]),
            commit("b", 1, 2, &["B"]),
            commit("a", 3, 3, &["A", "A", "A"]),
        ]
    }

    fn id() -> StoreIdentity {
        StoreIdentity {
            id: "x".into(),
            epoch: 1,
        }
    }

    fn page(
        from: &Checkpoint,
        metas: &BTreeMap<String, StreamMeta>,
        filter: &EventFilter,
        max: usize,
        commits: Vec<Commit>,
    ) -> Batch {
        assemble_page(
            &LogPage {
                from,
                identity: id(),
                metas,
                max,
                max_read_bytes: usize::MAX,
                filter,
                more_commits: false,
            },
            commits,
        )
    }

    #[test]
    fn pages_resume_mid_commit_without_skips_or_repeats() {
        let none = BTreeMap::new();
        let all = EventFilter::all();
        let mut cp = Checkpoint::origin();
        let mut seen = Vec::new();
        loop {
            // The store re-reads from the checkpoint's commit on, as read_all does.
            let start = cp.get(0).map_or(0, |p| p.offset[0]);
            let commits: Vec<Commit> = log().into_iter().filter(|c| c.seq >= start).collect();
            let b = page(&cp, &none, &all, 2, commits);
            seen.extend(
                b.events
                    .iter()
                    .map(|e| (e.stream_id.as_str().to_owned(), e.version)),
            );
            assert_eq!(b.next.store, Some(id()));
            cp = b.next;
            if b.caught_up {
                break;
            }
        }
        let want: Vec<(String, u64)> = [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("a", 4), ("a", 5)]
            .iter()
            .map(|(s, v)| ((*s).to_owned(), *v))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(cp.get(0), Some(Position::new(0, [3, 2, 0])));
    }

    #[test]
    fn filtered_and_hidden_events_still_move_the_checkpoint() {
        let metas = BTreeMap::from([(
            "a".to_owned(),
            StreamMeta {
                floor: 4,
                ..StreamMeta::default()
            },
        )]);
        let b = page(&Checkpoint::origin(), &metas, &EventFilter::all(), 10, log());
        let versions: Vec<(&str, u64)> = b
            .events
            .iter()
            .map(|e| (e.stream_id.as_str(), e.version))
            .collect();
        assert_eq!(versions, vec![("b", 1), ("a", 4), ("a", 5)]);
        assert!(b.caught_up);
        let none = BTreeMap::new();
        let b = page(
            &Checkpoint::origin(),
            &none,
            &EventFilter::all().event_type("Z"),
            10,
            log(),
        );
        assert!(b.events.is_empty());
        assert_eq!(
            b.next.get(0),
            Some(Position::new(0, [3, 2, 0])),
            "moves past unmatched events"
        );
        let tomb = BTreeMap::from([(
            "b".to_owned(),
            StreamMeta {
                tombstoned: true,
                ..StreamMeta::default()
            },
        )]);
        let b = page(
            &Checkpoint::origin(),
            &tomb,
            &EventFilter::stream_prefix("b"),
            10,
            log(),
        );
        assert!(b.events.is_empty());
    }

    #[test]
    fn stream_state_from_meta_and_head() {
        let none = StreamMeta::default();
        assert_eq!(none.state(0), StreamState::Missing);
        assert_eq!(none.state(3), StreamState::Live(3));
        let soft =
            StreamMeta::from_document(Some(&doc! { "_id": "s", "st": "soft", "dv": 3_i64, "fl": 4_i64 }))
                .unwrap();
        assert_eq!(soft.state(3), StreamState::SoftDeleted(3));
        assert_eq!(
            soft.state(4),
            StreamState::Live(4),
            "an append after a soft delete revives it"
        );
        assert_eq!(soft.floor, 4);
        for damaged in [doc! { "_id": "s", "st": "zz" }, doc! { "_id": "s", "st": 7_i64 }] {
            assert!(
                matches!(
                    StreamMeta::from_document(Some(&damaged)),
                    Err(Error::Corrupt { .. })
                ),
                "{damaged}"
            );
        }
        let tomb = StreamMeta::from_document(Some(&doc! { "_id": "s", "st": "tomb" })).unwrap();
        assert_eq!(tomb.state(0), StreamState::Tombstoned);
        let truncated = StreamMeta::from_document(Some(&doc! { "_id": "s", "fl": 7_i64 })).unwrap();
        assert_eq!(truncated.state(9), StreamState::Live(9));
        assert_eq!(truncated.floor, 7);
    }
}
