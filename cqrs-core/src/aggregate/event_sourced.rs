//! The event-sourced repository.

use std::{fmt, marker::PhantomData, sync::Arc};

use futures::TryStreamExt;

use super::{retry_conflicts, stream_of, to_event_data, Aggregate, ConflictRetry, Executed, RepositoryError};
use crate::{
    codec::{decode_event, Codec, Json},
    compression,
    snapshot_policy::{SnapshotContext, SnapshotPolicy},
    upcast::UpcasterChain,
    AppendOutcome, Clock, ContentEncoding, ContentType, Error, EventData, EventStore, EventStoreExt,
    ExpectedVersion, Metadata, Result, Snapshot, SnapshotStore, StreamId, SystemClock, Timestamp,
};

/// An aggregate as loaded, with what its next save needs.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The stream version it reflects (0: no events).
    pub version: u64,
    /// Version of the snapshot it started from (0: none).
    pub snapshot_version: u64,
    /// When that snapshot was taken.
    pub snapshot_taken_at: Option<Timestamp>,
    /// Events read and applied after the snapshot.
    pub events_replayed: u64,
}

/// Loads aggregates from snapshots and events, saves their new events.
///
/// A command runs once unless [`EventSourcedRepository::retry_on_conflict`] is set; only
/// that setting needs the command to be `Clone`, since each retry runs on a fresh copy.
///
/// ```
/// # use std::sync::Arc;
/// # use cqrs_core::aggregate::{Aggregate, EventSourcedRepository};
/// fn retrying<A: Aggregate>(store: Arc<dyn cqrs_core::EventStore>) -> EventSourcedRepository<A>
/// where
///     A::Command: Clone,
/// {
///     EventSourcedRepository::new(store).retry_on_conflict(3)
/// }
/// ```
pub struct EventSourcedRepository<A: Aggregate> {
    events: Arc<dyn EventStore>,
    snapshots: Option<(Arc<dyn SnapshotStore>, SnapshotPolicy)>,
    upcasters: Arc<UpcasterChain>,
    clock: Arc<dyn Clock>,
    retry: Option<ConflictRetry<A::Command>>,
    resends: u32,
    snapshot_encoding: ContentEncoding,
    page_size: usize,
    aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> fmt::Debug for EventSourcedRepository<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSourcedRepository")
            .field("kind", &A::KIND)
            .field("snapshots", &self.snapshots.as_ref().map(|(_, p)| p))
            .field(
                "conflict_retries",
                &self.retry.as_ref().map_or(0, ConflictRetry::max),
            )
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> EventSourcedRepository<A> {
    /// A repository over `events`, without snapshots or upcasters, no conflict retries, up
    /// to 3 re-sends of a batch whose outcome is unknown.
    pub fn new(events: Arc<dyn EventStore>) -> Self {
        EventSourcedRepository {
            events,
            snapshots: None,
            upcasters: Arc::new(UpcasterChain::default()),
            clock: Arc::new(SystemClock),
            retry: None,
            resends: 3,
            snapshot_encoding: ContentEncoding::Gzip,
            page_size: 5_000,
            aggregate: PhantomData,
        }
    }

    /// Takes snapshots into `store` when `policy` says so, and loads from them.
    #[must_use]
    pub fn with_snapshots(mut self, store: Arc<dyn SnapshotStore>, policy: SnapshotPolicy) -> Self {
        self.snapshots = Some((store, policy));
        self
    }

    /// Reads old events through `upcasters`; new events are written at their latest versions.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Arc<UpcasterChain>) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// The clock time-based snapshot policies use.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Re-runs a command on fresh state up to `n` times when its append conflicts. Each
    /// attempt runs on a clone of the command, which is why only retrying needs
    /// `Command: Clone`: without this setting [`EventSourcedRepository::execute`] moves the
    /// command into its one attempt and reports a conflict as [`Error::Conflict`].
    #[must_use]
    pub fn retry_on_conflict(mut self, n: u32) -> Self
    where
        A::Command: Clone,
    {
        self.retry = Some(ConflictRetry::new(n));
        self
    }

    /// Re-sends the same batch (same ids) up to `n` times after [`Error::Unavailable`].
    /// Re-sends are immediate; put backoff in handler middleware if you need it.
    #[must_use]
    pub fn resend_on_unavailable(mut self, n: u32) -> Self {
        self.resends = n;
        self
    }

    /// Events read per round trip while loading (5,000 by default; pages also stop at the
    /// store's byte limit).
    #[must_use]
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// How snapshots are compressed (gzip by default).
    #[must_use]
    pub fn snapshot_encoding(mut self, encoding: ContentEncoding) -> Self {
        self.snapshot_encoding = encoding;
        self
    }

    /// The stream of aggregate `id`: `<KIND>-<id>`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if that is not a valid stream id.
    pub fn stream_id(&self, id: &str) -> Result<StreamId> {
        stream_of::<A>(id)
    }

    /// Loads an aggregate: the latest snapshot of the current revision (a stale or
    /// unreadable one is ignored and the stream replayed in full), then later events through
    /// the upcasters.
    ///
    /// # Errors
    /// Store errors; [`Error::NoUpcastPath`] or [`Error::Codec`] for an unreadable event.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>> {
        let stream = self.stream_id(id)?;
        let mut loaded = Loaded {
            state: A::default(),
            version: 0,
            snapshot_version: 0,
            snapshot_taken_at: None,
            events_replayed: 0,
        };
        if let Some((store, _)) = &self.snapshots {
            let latest = match store.load_latest(&stream).await {
                Ok(latest) => latest,
                // Unreadable fields: the snapshot is a cache, the events are the truth.
                Err(e @ (Error::Corrupt { .. } | Error::Codec { .. })) => {
                    reject_snapshot::<A>(&stream, "unreadable", &e);
                    None
                }
                Err(e) => return Err(e),
            };
            if let Some(snap) = latest {
                if let Some(state) = decode_snapshot::<A>(&snap) {
                    loaded.state = state;
                    loaded.version = snap.version;
                    loaded.snapshot_version = snap.version;
                    loaded.snapshot_taken_at = Some(snap.taken_at);
                }
            }
        }
        self.load_after(id, &mut loaded).await?;
        Ok(loaded)
    }

    /// Applies the events after `loaded.version`; returns how many.
    pub(crate) async fn load_after(&self, id: &str, loaded: &mut Loaded<A>) -> Result<u64> {
        let stream = self.stream_id(id)?;
        let mut events = self
            .events
            .stream_events(&stream, loaded.version + 1, self.page_size);
        let mut applied = 0;
        while let Some(recorded) = events.try_next().await? {
            loaded
                .state
                .apply(&decode_event(&recorded.data, &self.upcasters)?);
            loaded.version = recorded.version;
            applied += 1;
        }
        loaded.events_replayed += applied;
        Ok(applied)
    }

    pub(crate) fn retry(&self) -> Option<&ConflictRetry<A::Command>> {
        self.retry.as_ref()
    }

    /// Loads, decides and saves, with no metadata: [`EventSourcedRepository::execute_with`]
    /// with [`Metadata::default`].
    ///
    /// # Errors
    /// As [`EventSourcedRepository::execute_with`].
    ///
    /// # Cancel safety
    /// Not cancel safe: the append may commit after the future is dropped.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
    ) -> std::result::Result<Executed, RepositoryError<A::Error>> {
        self.execute_with(id, command, &Metadata::default()).await
    }

    /// Loads, decides and saves: the command runs on fresh state, its events are appended at
    /// the loaded version, each carrying `metadata` (correlation, causation, actor, free
    /// key/values), and a snapshot is taken if the policy says so.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use cqrs_core::{aggregate::{Aggregate, EventSourcedRepository}, EventStore, Metadata};
    /// # async fn demo<A: Aggregate>(store: Arc<dyn EventStore>, command: A::Command) -> Result<(), Box<dyn std::error::Error>> {
    /// let repo = EventSourcedRepository::<A>::new(store);
    /// let metadata = Metadata::new().with_correlation_id("req-7").with_actor("alice");
    /// repo.execute_with("ada", command, &metadata).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RepositoryError::Domain`] when the aggregate refuses; [`Error::Conflict`] when the
    /// stream moved on and no retry is left (see
    /// [`EventSourcedRepository::retry_on_conflict`]); other store errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: the append may commit after the future is dropped.
    pub async fn execute_with(
        &self,
        id: &str,
        command: A::Command,
        metadata: &Metadata,
    ) -> std::result::Result<Executed, RepositoryError<A::Error>> {
        retry_conflicts(self.retry.as_ref(), command, |command| async move {
            let loaded = self.load(id).await?;
            let events = loaded.state.handle(command).map_err(RepositoryError::Domain)?;
            Ok(self.commit(id, &loaded, &events, metadata).await?)
        })
        .await
    }

    /// Appends `events` at `loaded.version`, each carrying `metadata`, and snapshots by
    /// policy. Event ids are assigned once here, so the re-sends after
    /// [`Error::Unavailable`] are idempotent.
    ///
    /// # Errors
    /// [`Error::Conflict`] if the stream moved on; other store errors.
    pub async fn commit(
        &self,
        id: &str,
        loaded: &Loaded<A>,
        events: &[A::Event],
        metadata: &Metadata,
    ) -> Result<Executed> {
        let stream = self.stream_id(id)?;
        let batch = to_event_data(events, |ty| self.upcasters.latest_version(ty), metadata)?;
        let types: Vec<String> = batch.iter().map(|e| e.event_type.clone()).collect();
        let outcome = self
            .append_resending(&stream, ExpectedVersion::Exact(loaded.version), batch)
            .await?;
        let mut done = Executed {
            version: outcome.next_expected,
            events: events.len(),
            conflict_retries: 0,
            snapshot_taken: false,
            snapshot_error: None,
            row_error: None,
        };
        if let Some((store, policy)) = &self.snapshots {
            let ctx = SnapshotContext {
                version: outcome.next_expected,
                snapshot_version: loaded.snapshot_version,
                snapshot_taken_at: loaded.snapshot_taken_at,
                now: self.clock.now(),
                committed_types: &types,
            };
            if policy.should_snapshot(&ctx) {
                let mut state = loaded.state.clone_via_serde()?;
                events.iter().for_each(|e| state.apply(e));
                match self.snapshot_of(&stream, &state, outcome.next_expected, ctx.now) {
                    Ok(snap) => match store.save(snap).await {
                        Ok(()) => done.snapshot_taken = true,
                        Err(e) => done.snapshot_error = Some(e),
                    },
                    Err(e) => done.snapshot_error = Some(e),
                }
            }
        }
        Ok(done)
    }

    async fn append_resending(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        batch: Vec<EventData>,
    ) -> Result<AppendOutcome> {
        let mut resends = 0;
        loop {
            match self.events.append(stream, expected, batch.clone()).await {
                Err(Error::Unavailable { .. }) if resends < self.resends => resends += 1,
                other => return other,
            }
        }
    }

    fn snapshot_of(&self, stream: &StreamId, state: &A, version: u64, now: Timestamp) -> Result<Snapshot> {
        let json = Json::encode(state)?;
        Ok(Snapshot {
            stream_id: stream.clone(),
            version,
            schema_revision: A::SNAPSHOT_REVISION,
            payload: compression::compress(self.snapshot_encoding, &json)?,
            content_type: ContentType::Json,
            content_encoding: self.snapshot_encoding,
            taken_at: now,
        }
        .seal())
    }
}

/// Decodes a sealed snapshot of the current revision; `None` for a stale, corrupt or
/// undecodable one, which the loader answers with a full replay.
fn decode_snapshot<A: Aggregate>(snap: &Snapshot) -> Option<A> {
    if snap.schema_revision != A::SNAPSHOT_REVISION {
        // Expected after a schema change: the next snapshot by policy replaces it.
        metrics::counter!(SNAPSHOTS_REJECTED, "aggregate" => A::KIND, "reason" => "stale_revision")
            .increment(1);
        return None;
    }
    let decoded = snap.unseal().and_then(|body| {
        if snap.content_type != ContentType::Json {
            return Err(Error::corrupt(format!(
                "snapshot of {} at version {}: content type {} where the repository writes json",
                snap.stream_id,
                snap.version,
                snap.content_type.as_str()
            )));
        }
        Json::decode(&compression::decompress(snap.content_encoding, &body)?)
    });
    match decoded {
        Ok(state) => Some(state),
        Err(e) => {
            reject_snapshot::<A>(&snap.stream_id, "corrupt", &e);
            None
        }
    }
}

/// The counter of snapshots a load ignored, by aggregate kind and reason (`stale_revision`,
/// `corrupt`: failed its checksum or decoding, `unreadable`: the store could not read its
/// fields).
pub const SNAPSHOTS_REJECTED: &str = "cqrs_snapshots_rejected_total";

/// Counts and logs a snapshot that cannot be trusted: the load replays the stream in full.
fn reject_snapshot<A: Aggregate>(stream: &StreamId, reason: &'static str, error: &Error) {
    metrics::counter!(SNAPSHOTS_REJECTED, "aggregate" => A::KIND, "reason" => reason).increment(1);
    tracing::warn!(%stream, reason, %error, "snapshot ignored: replaying the stream in full");
}

/// Aggregates need not be `Clone`; a snapshot copy goes through their serde format, which
/// they have anyway.
trait CloneViaSerde: Sized {
    fn clone_via_serde(&self) -> Result<Self>;
}

impl<A: Aggregate> CloneViaSerde for A {
    fn clone_via_serde(&self) -> Result<Self> {
        Json::decode(&Json::encode(self)?)
    }
}
