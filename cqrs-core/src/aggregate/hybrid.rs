//! The hybrid repository: events are the truth, a state row is a fast path to it.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

use super::{retry_conflicts, Aggregate, EventSourcedRepository, Executed, Loaded, RepositoryError};
use crate::{
    codec::{Codec, Json},
    Error, Metadata, Result, StateExpectation, StateStore,
};

/// How many lost compare-and-set races a row write tolerates before giving up.
const ROW_WRITE_ATTEMPTS: usize = 8;

#[derive(Serialize, Deserialize)]
struct Row<A> {
    /// [`Aggregate::SNAPSHOT_REVISION`] of the state's format.
    revision: u32,
    /// The stream version the state reflects.
    version: u64,
    state: A,
}

/// A stored row as read: its content when it is usable, and its compare-and-set version.
struct StoredRow<A> {
    row: Option<Row<A>>,
    cas: Option<u64>,
}

/// Events are the source of truth; after each append the state row (kind
/// [`Aggregate::KIND`]) is written under a version guard, and a load that finds the row
/// behind the stream applies the missing events and repairs the row.
///
/// A current row costs one state read and one (empty) event read, with no replay. The row
/// is the snapshot: configure no snapshot policy on the inner repository. A row of another
/// [`Aggregate::SNAPSHOT_REVISION`], or one that no longer decodes, is ignored and rebuilt
/// from the events.
pub struct HybridRepository<A: Aggregate> {
    events: EventSourcedRepository<A>,
    states: Arc<dyn StateStore>,
}

impl<A: Aggregate> fmt::Debug for HybridRepository<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HybridRepository")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> HybridRepository<A> {
    /// Combines an event-sourced repository (its event store, upcasters and conflict
    /// retries) with a state store for the rows.
    pub fn new(events: EventSourcedRepository<A>, states: Arc<dyn StateStore>) -> Self {
        HybridRepository { events, states }
    }

    /// Loads from the row plus any events after it. A lagging row is repaired; a failed
    /// repair does not fail the load (the row is only a fast path, the next load retries).
    ///
    /// # Errors
    /// Store and codec errors while reading.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>> {
        let stored = self.read_row(id).await?;
        let mut loaded = match stored.row {
            Some(r) => Loaded {
                state: r.state,
                version: r.version,
                snapshot_version: r.version,
                snapshot_taken_at: None,
                events_replayed: 0,
            },
            None => Loaded {
                state: A::default(),
                version: 0,
                snapshot_version: 0,
                snapshot_taken_at: None,
                events_replayed: 0,
            },
        };
        let applied = self.events.load_after(id, &mut loaded).await?;
        if applied > 0 {
            // Best effort: the events are the truth and are already applied.
            let _ = self.write_row(id, &loaded.state, loaded.version).await;
        }
        Ok(loaded)
    }

    /// [`HybridRepository::execute_with`] with no metadata.
    ///
    /// # Errors
    /// As [`HybridRepository::execute_with`].
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
    ) -> std::result::Result<Executed, RepositoryError<A::Error>> {
        self.execute_with(id, command, &Metadata::default()).await
    }

    /// Loads, decides, appends (every event carrying `metadata`), then writes the row.
    ///
    /// # Errors
    /// As [`EventSourcedRepository::execute_with`]. Once the events are committed the call
    /// succeeds: a row that fails to save is reported in [`Executed::row_error`], so a
    /// caller never re-runs a command whose events are already in the stream.
    pub async fn execute_with(
        &self,
        id: &str,
        command: A::Command,
        metadata: &Metadata,
    ) -> std::result::Result<Executed, RepositoryError<A::Error>> {
        retry_conflicts(self.events.retry(), command, |command| async move {
            let mut loaded = self.load(id).await?;
            let events = loaded.state.handle(command).map_err(RepositoryError::Domain)?;
            let mut done = self.events.commit(id, &loaded, &events, metadata).await?;
            events.iter().for_each(|e| loaded.state.apply(e));
            done.row_error = self.write_row(id, &loaded.state, done.version).await.err();
            Ok(done)
        })
        .await
    }

    async fn read_row(&self, id: &str) -> Result<StoredRow<A>> {
        Ok(match self.states.get(A::KIND, id).await? {
            Some(v) => StoredRow {
                row: Json::decode::<Row<A>>(&v.value)
                    .ok()
                    .filter(|r| r.revision == A::SNAPSHOT_REVISION),
                cas: Some(v.version),
            },
            None => StoredRow { row: None, cas: None },
        })
    }

    /// Writes the row for stream version `version` unless the stored row already reflects
    /// that version or a later one: a slower writer never moves the row backwards.
    async fn write_row(&self, id: &str, state: &A, version: u64) -> Result<()> {
        let bytes = Json::encode(&Row {
            revision: A::SNAPSHOT_REVISION,
            version,
            state,
        })?;
        for _ in 0..ROW_WRITE_ATTEMPTS {
            let stored = self.read_row(id).await?;
            if stored.row.as_ref().is_some_and(|r| r.version >= version) {
                return Ok(());
            }
            let expected = stored
                .cas
                .map_or(StateExpectation::New, StateExpectation::Version);
            match self.states.put(A::KIND, id, expected, bytes.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::StateConflict {
            kind: A::KIND.to_owned(),
            id: id.to_owned(),
            expected: StateExpectation::Any,
            actual: None,
        })
    }
}
