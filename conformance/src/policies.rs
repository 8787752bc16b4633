//! Behaviours: snapshot policies, upcasters and repositories over the backend (`docs/CONFORMANCE.md`
//! items 27, 30, 52-54, 100, and the repository guarantees of `docs/DESIGN.md` section 3).

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use async_trait::async_trait;
use cqrs_core::{
    aggregate::{Aggregate, EventSourcedRepository, HybridRepository, RepositoryError, StateRepository},
    compression,
    snapshot_policy::SnapshotPolicy,
    upcast::UpcasterChain,
    AppendOutcome, Batch, Capabilities, Checkpoint, ContentEncoding, ContentType, DeleteMode, Error,
    EventData, EventFilter, EventStore, ExpectedVersion, Metadata, Outcome as WriteOutcome, RecordedEvent,
    Snapshot, StoreIdentity, StreamId, StreamPage, StreamState, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::{ensure, ensure_eq, ensure_err, not_run, Ctx, Harness, Outcome, Verdict};

/// A counter: the aggregate the repository behaviours drive.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Sum of every `Added`.
    pub value: i64,
    /// Set by `Closed`; a closed counter refuses commands.
    pub closed: bool,
}

/// The counter's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CounterEvent {
    /// The value grew.
    Added {
        /// By how much.
        by: i64,
    },
    /// The counter was closed.
    Closed,
}

/// The counter's commands.
#[derive(Debug, Clone)]
pub enum CounterCommand {
    /// Add to the value.
    Add(i64),
    /// Close the counter.
    Close,
    /// Add each amount: one event per amount.
    AddEach(Vec<i64>),
}

/// Refusal of a command on a closed counter.
#[derive(Debug, thiserror::Error)]
#[error("counter is closed")]
pub struct CounterClosed;

impl Aggregate for Counter {
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterClosed;
    const KIND: &'static str = "counter";

    fn handle(&self, c: CounterCommand) -> Result<Vec<CounterEvent>, CounterClosed> {
        if self.closed {
            return Err(CounterClosed);
        }
        Ok(match c {
            CounterCommand::Add(by) => vec![CounterEvent::Added { by }],
            CounterCommand::Close => vec![CounterEvent::Closed],
            CounterCommand::AddEach(amounts) => {
                amounts.into_iter().map(|by| CounterEvent::Added { by }).collect()
            }
        })
    }

    fn apply(&mut self, e: &CounterEvent) {
        match e {
            CounterEvent::Added { by } => self.value += by,
            CounterEvent::Closed => self.closed = true,
        }
    }
}

fn repo(h: &Arc<dyn Harness>) -> EventSourcedRepository<Counter> {
    EventSourcedRepository::new(h.stores().events.clone())
}

fn snapshotting(h: &Arc<dyn Harness>, policy: SnapshotPolicy) -> EventSourcedRepository<Counter> {
    repo(h).with_snapshots(h.stores().snapshots.clone(), policy)
}

async fn add_n(r: &EventSourcedRepository<Counter>, id: &str, n: i64) -> Result<(), crate::Failure> {
    for i in 1..=n {
        r.execute(id, CounterCommand::Add(i))
            .await
            .map_err(|e| crate::Failure(format!("execute Add({i}): {e}")))?;
    }
    Ok(())
}

/// A snapshot plus the events after it loads the same state as a full replay (53).
pub async fn snapshot_plus_events_equals_full_replay(h: Arc<dyn Harness>) -> Outcome {
    let id = h.namespace().name("c");
    let with = snapshotting(&h, SnapshotPolicy::EveryEvents(4));
    add_n(&with, &id, 10).await?;
    let fast = with.load(&id).await.ctx("load with snapshots")?;
    let full = repo(&h).load(&id).await.ctx("load by full replay")?;
    ensure_eq!(
        fast.state,
        full.state,
        "state from snapshot + tail vs full replay"
    );
    ensure_eq!(fast.version, full.version, "version");
    ensure_eq!(full.state.value, 55, "sum of 1..=10");
    ensure_eq!(
        fast.snapshot_version,
        8,
        "latest snapshot version under EveryEvents(4)"
    );
    ensure_eq!(fast.events_replayed, 2, "events replayed after the snapshot");
    Ok(Verdict::Passed)
}

/// EveryEvents(N) fires once per N committed events and resets after each snapshot (54).
pub async fn snapshot_every_n_fires_once_per_n(h: Arc<dyn Harness>) -> Outcome {
    let id = h.namespace().name("c");
    let r = snapshotting(&h, SnapshotPolicy::EveryEvents(3));
    add_n(&r, &id, 10).await?;
    let stream = r.stream_id(&id).ctx("stream id")?;
    let keys = h.stores().snapshots.list(None, 100).await.ctx("list snapshots")?;
    let versions: Vec<u64> = keys
        .into_iter()
        .filter(|k| k.stream_id == stream)
        .map(|k| k.version)
        .collect();
    ensure_eq!(versions, vec![3, 6, 9], "snapshot versions");
    Ok(Verdict::Passed)
}

/// A refused command or a conflicting commit takes no snapshot (27, 54).
pub async fn failed_commands_take_no_snapshot(h: Arc<dyn Harness>) -> Outcome {
    let id = h.namespace().name("c");
    let r = snapshotting(&h, SnapshotPolicy::on_event_types(["Added", "Closed"]));
    r.execute(&id, CounterCommand::Close)
        .await
        .map_err(|e| crate::Failure(format!("close: {e}")))?;
    let stream = r.stream_id(&id).ctx("stream id")?;
    h.stores()
        .snapshots
        .delete(&stream)
        .await
        .ctx("clear snapshots")?;
    let refused = r.execute(&id, CounterCommand::Add(1)).await;
    ensure!(
        matches!(refused, Err(RepositoryError::Domain(CounterClosed))),
        "a closed counter refuses: {refused:?}"
    );
    let stale = r.load(&id).await.ctx("load")?;
    let mut moved = stale.clone();
    moved.state.closed = false;
    r.commit(
        &id,
        &moved,
        &[CounterEvent::Added { by: 1 }],
        &Metadata::default(),
    )
    .await
    .ctx("first commit at the loaded version")?;
    let conflict = r
        .commit(
            &id,
            &stale,
            &[CounterEvent::Added { by: 1 }],
            &Metadata::default(),
        )
        .await;
    ensure_err!(
        conflict,
        Error::Conflict { .. },
        "second commit at the same loaded version"
    );
    let snaps = h.stores().snapshots.list(None, 100).await.ctx("list")?;
    ensure_eq!(
        snaps.iter().filter(|k| k.stream_id == stream).count(),
        1,
        "only the successful commit snapshotted"
    );
    Ok(Verdict::Passed)
}

/// A snapshot of another schema revision, or a corrupt one, is ignored: full replay (52).
pub async fn stale_or_corrupt_snapshot_falls_back_to_replay(h: Arc<dyn Harness>) -> Outcome {
    let id = h.namespace().name("c");
    let r = snapshotting(&h, SnapshotPolicy::Never);
    add_n(&r, &id, 5).await?;
    let stream = r.stream_id(&id).ctx("stream id")?;
    let bogus = serde_json::to_vec(&Counter {
        value: 999,
        closed: false,
    })
    .map_err(|e| crate::Failure(e.to_string()))?;
    let stale = Snapshot {
        stream_id: stream.clone(),
        version: 4,
        schema_revision: Counter::SNAPSHOT_REVISION + 1,
        payload: bogus.into(),
        content_type: ContentType::Json,
        content_encoding: ContentEncoding::Identity,
        taken_at: Timestamp::from_millis(0),
    }
    .seal();
    h.stores()
        .snapshots
        .save(stale.clone())
        .await
        .ctx("save stale snapshot")?;
    let loaded = r.load(&id).await.ctx("load")?;
    ensure_eq!(
        (
            loaded.state.value,
            loaded.events_replayed,
            loaded.snapshot_version
        ),
        (15, 5, 0),
        "stale revision ignored"
    );
    let mut gz = compression::compress(ContentEncoding::Gzip, b"{\"value\":999,\"closed\":false}")
        .ctx("gzip")?
        .to_vec();
    let mid = gz.len() / 2;
    gz[mid] ^= 0xff;
    // Sealed over the corrupt bytes, so only gzip's own check can refuse it.
    let corrupt = Snapshot {
        version: 4,
        schema_revision: Counter::SNAPSHOT_REVISION,
        payload: gz.into(),
        content_encoding: ContentEncoding::Gzip,
        ..stale
    }
    .seal();
    h.stores()
        .snapshots
        .save(corrupt)
        .await
        .ctx("save corrupt snapshot")?;
    let loaded = r.load(&id).await.ctx("load")?;
    ensure_eq!(
        (loaded.state.value, loaded.events_replayed),
        (15, 5),
        "corrupt snapshot ignored"
    );
    Ok(Verdict::Passed)
}

/// A snapshot changed at rest is detected whatever its encoding and the stream is replayed:
/// one digit of an identity-encoded payload, or the version it claims, or a snapshot written
/// without the integrity frame (`docs/DESIGN.md` section 3: snapshots are a cache, events the truth).
pub async fn snapshot_changed_at_rest_falls_back_to_replay(h: Arc<dyn Harness>) -> Outcome {
    let id = h.namespace().name("c");
    let (r, stream) = snapshotted_counter(h.stores(), &id).await?;
    let snaps = h.stores().snapshots.clone();
    let Some(good) = snaps.load_latest(&stream).await.ctx("load the snapshot")? else {
        return Err(crate::Failure("EveryEvents(12) took no snapshot".into()));
    };
    let body = good.unseal().ctx("unseal the stored snapshot")?;
    let Some(digit) = body.windows(2).position(|w| w == b"78") else {
        return Err(crate::Failure(format!(
            "the identity-encoded body {:?} holds no 78",
            String::from_utf8_lossy(&body)
        )));
    };
    let mut changed = good.payload.to_vec();
    changed[8 + digit] = b'8'; // 8: the frame's header; now the body says 88
    let wrong_version = Snapshot {
        version: 11,
        ..good.clone()
    };
    let unsealed = Snapshot {
        payload: body.clone(),
        ..good.clone()
    };
    for (what, at_rest) in [
        (
            "a digit of the payload",
            Snapshot {
                payload: changed.into(),
                ..good.clone()
            },
        ),
        ("the version", wrong_version),
        ("the integrity frame removed", unsealed),
    ] {
        snaps.delete(&stream).await.ctx("delete snapshots")?;
        snaps.save(at_rest).await.ctx("save the changed snapshot")?;
        ensure_snapshot_ignored(&r, &id, what).await?;
    }
    Ok(Verdict::Passed)
}

/// For a backend's own tests that change a stored snapshot at rest: a counter `id` with 12
/// events (total 78) and an identity-encoded snapshot at version 12 that its load uses.
/// Returns the repository and the counter's stream. Change the snapshot in the backend's own
/// way, then call [`ensure_snapshot_ignored`].
pub async fn snapshotted_counter(
    stores: &cqrs_core::Stores,
    id: &str,
) -> Result<(EventSourcedRepository<Counter>, StreamId), crate::Failure> {
    let repo = EventSourcedRepository::<Counter>::new(stores.events.clone())
        .with_snapshots(stores.snapshots.clone(), SnapshotPolicy::EveryEvents(12))
        .snapshot_encoding(ContentEncoding::Identity);
    add_n(&repo, id, 12).await?;
    ensure_eq!(
        repo.load(id).await.ctx("load")?.snapshot_version,
        12,
        "snapshot version used before the change"
    );
    let stream = repo.stream_id(id).ctx("stream id")?;
    Ok((repo, stream))
}

/// Fails unless loading counter `id` of [`snapshotted_counter`] ignores its snapshot (changed
/// at rest by `what`) and replays all 12 events instead of failing or loading wrong state.
pub async fn ensure_snapshot_ignored(
    repo: &EventSourcedRepository<Counter>,
    id: &str,
    what: &str,
) -> Result<(), crate::Failure> {
    let loaded = repo
        .load(id)
        .await
        .ctx(&format!("load with {what} changed at rest"))?;
    ensure_eq!(
        (
            loaded.state.value,
            loaded.snapshot_version,
            loaded.events_replayed
        ),
        (78, 0, 12),
        "state, snapshot version and events replayed with {what} changed at rest"
    );
    Ok(())
}

fn upcasters() -> Result<Arc<UpcasterChain>, crate::Failure> {
    // v1 `Incremented {}` meant +1; v2 added `amount`; v3 renamed it to `Added { by }`.
    UpcasterChain::builder()
        .json_step("Incremented", 1, "Incremented", |mut v| {
            v["amount"] = serde_json::json!(1);
            Ok(v)
        })
        .json_step("Incremented", 2, "Added", |v| {
            Ok(serde_json::json!({ "by": v["amount"] }))
        })
        .build()
        .map(Arc::new)
        .map_err(|e| crate::Failure(format!("building the upcaster chain: {e}")))
}

/// Old events load through upcasters; the stored bytes and schema versions stay as written (30).
pub async fn upcasting_leaves_stored_bytes_unchanged(h: Arc<dyn Harness>) -> Outcome {
    let id = h.namespace().name("c");
    let r = repo(&h).with_upcasters(upcasters()?);
    let stream = r.stream_id(&id).ctx("stream id")?;
    let old = vec![
        EventData::new("Incremented", ContentType::Json, "{}"),
        EventData::new("Incremented", ContentType::Json, "{\"amount\":5}").with_schema_version(2),
        EventData::new("Added", ContentType::Json, "{\"by\":10}").with_schema_version(3),
    ];
    h.stores()
        .events
        .append(&stream, ExpectedVersion::NoStream, old.clone())
        .await
        .ctx("append old history")?;
    let loaded = r.load(&id).await.ctx("load through upcasters")?;
    ensure_eq!(loaded.state.value, 16, "1 + 5 + 10");
    let done = r
        .execute(&id, CounterCommand::Add(1))
        .await
        .map_err(|e| crate::Failure(format!("execute: {e}")))?;
    ensure_eq!(done.version, 4, "version after one more command");
    let stored = h
        .stores()
        .events
        .read_stream(&stream, 1, 10)
        .await
        .ctx("read back")?;
    for (i, want) in old.iter().enumerate() {
        ensure_eq!(stored[i].data, *want, "stored event {} unchanged", i + 1);
    }
    ensure_eq!(
        (stored[3].data.event_type.as_str(), stored[3].data.schema_version),
        ("Added", 3),
        "new events are written at the latest version"
    );
    Ok(Verdict::Passed)
}

/// An event with no upcaster path fails the load with an error naming type and versions (30).
pub async fn missing_upcast_path_is_a_clear_error(h: Arc<dyn Harness>) -> Outcome {
    let id = h.namespace().name("c");
    let r = repo(&h).with_upcasters(upcasters()?);
    let stream = r.stream_id(&id).ctx("stream id")?;
    let future = EventData::new("Added", ContentType::Json, "{\"by\":1}").with_schema_version(9);
    h.stores()
        .events
        .append(&stream, ExpectedVersion::NoStream, vec![future])
        .await
        .ctx("append")?;
    let err = r.load(&id).await;
    ensure!(
        matches!(&err, Err(Error::NoUpcastPath { event_type, from: 9, to: 3 }) if event_type == "Added"),
        "expected NoUpcastPath for Added v9 -> v3, got {err:?}"
    );
    Ok(Verdict::Passed)
}

/// With retries, 8 concurrent commands on one aggregate all apply exactly once.
pub async fn conflict_retry_applies_every_command_once(h: Arc<dyn Harness>) -> Outcome {
    let id = h.namespace().name("c");
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (h, id, barrier) = (h.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                let r = repo(&h).retry_on_conflict(50);
                barrier.wait().await;
                r.execute(&id, CounterCommand::Add(1))
                    .await
                    .map(|d| d.conflict_retries)
            })
        })
        .collect();
    for t in tasks {
        let res = t.await.map_err(|e| crate::Failure(format!("task: {e}")))?;
        ensure!(res.is_ok(), "every command succeeds with retries: {res:?}");
    }
    let loaded = repo(&h).load(&id).await.ctx("load")?;
    ensure_eq!(
        (loaded.state.value, loaded.version),
        (8, 8),
        "value and version after 8 commands"
    );
    Ok(Verdict::Passed)
}

/// An event store wrapper whose first append goes through but reports an unknown outcome,
/// as a connection dropped after sending would.
#[derive(Debug)]
struct LostAck {
    inner: Arc<dyn EventStore>,
    tripped: AtomicBool,
}

#[async_trait]
impl EventStore for LostAck {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn identity(&self) -> StoreIdentity {
        self.inner.identity()
    }
    async fn append(
        &self,
        s: &StreamId,
        e: ExpectedVersion,
        ev: Vec<EventData>,
    ) -> cqrs_core::Result<AppendOutcome> {
        let out = self.inner.append(s, e, ev).await?;
        if !self.tripped.swap(true, Ordering::SeqCst) {
            return Err(Error::unavailable(
                WriteOutcome::Unknown,
                "connection lost after send (injected)",
            ));
        }
        Ok(out)
    }
    async fn read_stream(
        &self,
        s: &StreamId,
        from: u64,
        max: usize,
    ) -> cqrs_core::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(s, from, max).await
    }
    async fn read_stream_backward(
        &self,
        s: &StreamId,
        from: Option<u64>,
        max: usize,
    ) -> cqrs_core::Result<Vec<RecordedEvent>> {
        self.inner.read_stream_backward(s, from, max).await
    }
    async fn stream_state(&self, s: &StreamId) -> cqrs_core::Result<StreamState> {
        self.inner.stream_state(s).await
    }
    async fn read_all(&self, from: &Checkpoint, max: usize, f: &EventFilter) -> cqrs_core::Result<Batch> {
        self.inner.read_all(from, max, f).await
    }
    async fn delete_stream(&self, s: &StreamId, e: ExpectedVersion, m: DeleteMode) -> cqrs_core::Result<()> {
        self.inner.delete_stream(s, e, m).await
    }
    async fn truncate_before(&self, s: &StreamId, v: u64) -> cqrs_core::Result<()> {
        self.inner.truncate_before(s, v).await
    }
    async fn list_streams(&self, after: Option<&StreamId>, limit: usize) -> cqrs_core::Result<StreamPage> {
        self.inner.list_streams(after, limit).await
    }
    async fn close(&self) -> cqrs_core::Result<()> {
        self.inner.close().await
    }
}

/// After an append whose outcome is unknown, the repository re-sends the same ids and the
/// stream holds exactly one copy.
pub async fn resend_after_unknown_outcome_leaves_one_copy(h: Arc<dyn Harness>) -> Outcome {
    let id = h.namespace().name("c");
    let flaky = Arc::new(LostAck {
        inner: h.stores().events.clone(),
        tripped: AtomicBool::new(false),
    });
    let r = EventSourcedRepository::<Counter>::new(flaky).resend_on_unavailable(2);
    let done = r
        .execute(&id, CounterCommand::Add(7))
        .await
        .map_err(|e| crate::Failure(format!("execute: {e}")))?;
    ensure_eq!(done.version, 1, "the re-send returns the original outcome");
    let stream = r.stream_id(&id).ctx("stream id")?;
    let events = h.stores().events.read_stream(&stream, 1, 10).await.ctx("read")?;
    ensure_eq!(events.len(), 1, "exactly one copy");
    Ok(Verdict::Passed)
}

/// State repository: optimistic concurrency without retries reports a conflict; with
/// retries 8 concurrent commands all apply (56-58).
pub async fn state_repository_concurrency(h: Arc<dyn Harness>) -> Outcome {
    let id = h.namespace().name("s");
    let plain = StateRepository::<Counter>::new(h.stores().states.clone());
    plain
        .execute(&id, CounterCommand::Add(1))
        .await
        .map_err(|e| crate::Failure(format!("first: {e}")))?;
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (h, id, barrier) = (h.clone(), id.clone(), barrier.clone());
            tokio::spawn(async move {
                let r = StateRepository::<Counter>::new(h.stores().states.clone()).retry_on_conflict(50);
                barrier.wait().await;
                r.execute(&id, CounterCommand::Add(1)).await.map(|d| d.version)
            })
        })
        .collect();
    for t in tasks {
        let res = t.await.map_err(|e| crate::Failure(format!("task: {e}")))?;
        ensure!(res.is_ok(), "every command succeeds with retries: {res:?}");
    }
    let (state, version) = plain.load(&id).await.ctx("load")?;
    ensure_eq!((state.value, version), (9, Some(9)), "value and version");
    Ok(Verdict::Passed)
}

/// Hybrid repository: a row behind the stream is caught up from events and repaired on load.
pub async fn hybrid_repository_repairs_a_lagging_row(h: Arc<dyn Harness>) -> Outcome {
    let id = h.namespace().name("hy");
    let hybrid = HybridRepository::new(repo(&h), h.stores().states.clone());
    hybrid
        .execute(&id, CounterCommand::Add(2))
        .await
        .map_err(|e| crate::Failure(format!("execute: {e}")))?;
    let row = h.stores().states.get(Counter::KIND, &id).await.ctx("get row")?;
    ensure!(row.is_some(), "the row is written after the append");
    // Another writer appends without touching the row.
    let stream = repo(&h).stream_id(&id).ctx("stream id")?;
    let ev = EventData::new("Added", ContentType::Json, "{\"by\":40}");
    h.stores()
        .events
        .append(&stream, ExpectedVersion::Exact(1), vec![ev])
        .await
        .ctx("append behind the row")?;
    let loaded = hybrid.load(&id).await.ctx("load")?;
    ensure_eq!(
        (loaded.state.value, loaded.version, loaded.events_replayed),
        (42, 2, 1),
        "caught up from events"
    );
    let row = h
        .stores()
        .states
        .get(Counter::KIND, &id)
        .await
        .ctx("get row")?
        .map(|v| v.value);
    let row: serde_json::Value =
        serde_json::from_slice(&row.unwrap_or_default()).map_err(|e| crate::Failure(format!("row: {e}")))?;
    ensure_eq!(row["version"], serde_json::json!(2), "the row was repaired");
    let again = hybrid.load(&id).await.ctx("load again")?;
    ensure_eq!(again.events_replayed, 0, "a current row needs no replay");
    Ok(Verdict::Passed)
}

/// A command's metadata (correlation, causation, actor, free key/values) is stored on every
/// event it produces, through the event-sourced and the hybrid repository, and reads back
/// unchanged through `read_stream` and `read_all`; a command without metadata stores none,
/// and the follow-up of a stored event is caused by it, in its correlation.
pub async fn command_metadata_is_stored_on_every_event(h: Arc<dyn Harness>) -> Outcome {
    let metadata = Metadata::new()
        .with_correlation_id("req-7")
        .with_causation_id("cmd-3")
        .with_actor("alice \u{e9}")
        .with_extra("tenant", "acme")
        .with_extra("z-last", "1");
    let (id, hybrid_id, plain_id) = (
        h.namespace().name("md"),
        h.namespace().name("mdh"),
        h.namespace().name("mdp"),
    );
    let fail = |what: &str, e: RepositoryError<CounterClosed>| crate::Failure(format!("{what}: {e}"));
    repo(&h)
        .execute_with(&id, CounterCommand::AddEach(vec![1, 2, 3]), &metadata)
        .await
        .map_err(|e| fail("execute_with", e))?;
    HybridRepository::new(repo(&h), h.stores().states.clone())
        .execute_with(&hybrid_id, CounterCommand::AddEach(vec![4, 5]), &metadata)
        .await
        .map_err(|e| fail("hybrid execute_with", e))?;
    repo(&h)
        .execute(&plain_id, CounterCommand::Add(1))
        .await
        .map_err(|e| fail("execute", e))?;
    let mut by_stream = Vec::new();
    for (aggregate, n) in [(&id, 3), (&hybrid_id, 2), (&plain_id, 1)] {
        let stream = repo(&h).stream_id(aggregate).ctx("stream id")?;
        let events = h
            .stores()
            .events
            .read_stream(&stream, 1, 10)
            .await
            .ctx("read_stream")?;
        ensure_eq!(events.len(), n, "events of {stream}");
        by_stream.push((stream, events));
    }
    for (stream, events) in &by_stream[..2] {
        for e in events {
            ensure_eq!(
                e.data.metadata,
                metadata,
                "metadata of {stream} v{} through read_stream",
                e.version
            );
        }
    }
    ensure!(
        by_stream[2].1[0].data.metadata.is_empty(),
        "a command without metadata stores none: {:?}",
        by_stream[2].1[0].data.metadata
    );
    let mut logged = Vec::new();
    let mut from = Checkpoint::origin();
    loop {
        let batch = h
            .stores()
            .events
            .read_all(&from, 100, &EventFilter::all())
            .await
            .ctx("read_all")?;
        logged.extend(batch.events);
        if batch.caught_up {
            break;
        }
        from = batch.next;
    }
    for (stream, events) in &by_stream {
        for e in events {
            let Some(found) = logged.iter().find(|l| l.event_id() == e.event_id()) else {
                return Err(crate::Failure(format!(
                    "{stream} v{} is not in read_all",
                    e.version
                )));
            };
            ensure_eq!(
                found.data.metadata,
                e.data.metadata,
                "metadata of {stream} v{} through read_all",
                e.version
            );
        }
    }
    let first = &by_stream[0].1[0];
    let next = first.follow_up();
    ensure_eq!(
        (next.causation_id, next.correlation_id, next.actor),
        (
            Some(first.event_id().to_string()),
            metadata.correlation_id.clone(),
            metadata.actor.clone()
        ),
        "the follow-up of a stored event"
    );
    Ok(Verdict::Passed)
}

/// Round-trip budget: loading from a snapshot with no later events is one snapshot read plus
/// one event read (100). Needs the `round_trips` hook.
pub async fn snapshot_load_round_trip_budget(h: Arc<dyn Harness>) -> Outcome {
    let Some(hooks) = h.hooks() else {
        not_run!("needs ConformanceHooks::round_trips")
    };
    if hooks.round_trips().is_none() {
        not_run!("needs ConformanceHooks::round_trips");
    }
    let id = h.namespace().name("c");
    let r = snapshotting(&h, SnapshotPolicy::EveryEvents(1));
    add_n(&r, &id, 3).await?;
    let before = hooks.round_trips().unwrap_or(0);
    let loaded = r.load(&id).await.ctx("load")?;
    let used = hooks.round_trips().unwrap_or(0) - before;
    ensure_eq!(loaded.events_replayed, 0, "everything came from the snapshot");
    ensure!(
        used <= 2,
        "load from a snapshot took {used} round trips, budget 2"
    );
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __policies_tests {
    ($factory:expr) => {
        $crate::__tests!(
            $factory,
            policies,
            [
                snapshot_plus_events_equals_full_replay,
                snapshot_every_n_fires_once_per_n,
                failed_commands_take_no_snapshot,
                stale_or_corrupt_snapshot_falls_back_to_replay,
                snapshot_changed_at_rest_falls_back_to_replay,
                upcasting_leaves_stored_bytes_unchanged,
                missing_upcast_path_is_a_clear_error,
                conflict_retry_applies_every_command_once,
                resend_after_unknown_outcome_leaves_one_copy,
                state_repository_concurrency,
                hybrid_repository_repairs_a_lagging_row,
                command_metadata_is_stored_on_every_event,
                snapshot_load_round_trip_budget,
            ]
        );
    };
}
