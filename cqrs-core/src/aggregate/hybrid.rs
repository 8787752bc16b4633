//! The hybrid repository: events are the truth, a state row is a fast path to it.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

use super::Aggregate;
use super::{retry_conflicts, EventSourcedRepository, Executed, Loaded, RepositoryError};
use crate::{
    codec::{Codec, Json},
    Result, StateExpectation, StateStore,
};

#[derive(Serialize, Deserialize)]
struct Row<A> {
    /// The stream version the state reflects.
    version: u64,
    state: A,
}

/// Events are the source of truth; after each append the state row (kind
/// [`Aggregate::KIND`]) is written under a version guard, and a load that finds the row
/// behind the stream applies the missing events and repairs the row.
///
/// Reading the row and the events after it costs two reads; a row that is current costs no
/// replay at all.
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

    /// Loads from the row plus any events after it, repairing a lagging row.
    ///
    /// # Errors
    /// Store and codec errors.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>> {
        let (row, row_version) = self.read_row(id).await?;
        let mut loaded = match row {
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
        let from = loaded.version;
        let tail = self.events.load_after(id, &mut loaded).await?;
        if tail > 0 || (row_version.is_none() && from == 0 && loaded.version > 0) {
            self.write_row(id, &loaded.state, loaded.version, row_version)
                .await?;
        }
        Ok(loaded)
    }

    /// Loads, decides, appends, then writes the row.
    ///
    /// # Errors
    /// As [`EventSourcedRepository::execute`]; a failed row write after a successful append
    /// is reported as the store error (the events are committed and the next load repairs
    /// the row).
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
    ) -> std::result::Result<Executed, RepositoryError<A::Error>>
    where
        A::Command: Clone,
    {
        retry_conflicts(self.events.conflict_retries(), || async {
            let mut loaded = self.load(id).await?;
            let events = loaded
                .state
                .handle(command.clone())
                .map_err(RepositoryError::Domain)?;
            let done = self.events.commit(id, &loaded, &events).await?;
            events.iter().for_each(|e| loaded.state.apply(e));
            let (_, row_version) = self.read_row(id).await?;
            self.write_row(id, &loaded.state, done.version, row_version)
                .await?;
            Ok(done)
        })
        .await
    }

    async fn read_row(&self, id: &str) -> Result<(Option<Row<A>>, Option<u64>)> {
        match self.states.get(A::KIND, id).await? {
            Some(v) => Ok((Some(Json::decode(&v.value)?), Some(v.version))),
            None => Ok((None, None)),
        }
    }

    /// Writes the row unless a newer one is already there (the version guard): on a CAS
    /// conflict the row is re-read and only replaced while it is behind `version`.
    async fn write_row(&self, id: &str, state: &A, version: u64, mut row_version: Option<u64>) -> Result<()> {
        let bytes = Json::encode(&Row { version, state })?;
        for _ in 0..8 {
            let expected = row_version.map_or(StateExpectation::New, StateExpectation::Version);
            match self.states.put(A::KIND, id, expected, bytes.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => {
                    let (row, rv) = self.read_row(id).await?;
                    if row.is_some_and(|r| r.version >= version) {
                        return Ok(());
                    }
                    row_version = rv;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
