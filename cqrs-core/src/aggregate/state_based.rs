//! The state-based repository: only the current state is stored.

use std::{fmt, marker::PhantomData, sync::Arc};

use super::{retry_conflicts, Aggregate, ConflictRetry, Executed, RepositoryError};
use crate::{
    codec::{Codec, Json},
    validate_name, Result, StateExpectation, StateStore,
};

/// Loads and saves aggregates as state entries of kind [`Aggregate::KIND`], under
/// optimistic concurrency; the events a command produces are applied and dropped.
pub struct StateRepository<A: Aggregate> {
    states: Arc<dyn StateStore>,
    retry: Option<ConflictRetry<A::Command>>,
    aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> fmt::Debug for StateRepository<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateRepository")
            .field("kind", &A::KIND)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> StateRepository<A> {
    /// A repository over `states`, with no conflict retries.
    pub fn new(states: Arc<dyn StateStore>) -> Self {
        StateRepository {
            states,
            retry: None,
            aggregate: PhantomData,
        }
    }

    /// Re-runs a command on fresh state up to `n` times on a version conflict. Each attempt
    /// runs on a clone of the command, which is why only retrying needs `Command: Clone`.
    #[must_use]
    pub fn retry_on_conflict(mut self, n: u32) -> Self
    where
        A::Command: Clone,
    {
        self.retry = Some(ConflictRetry::new(n));
        self
    }

    /// The current state and its version (`None` if never saved: a new aggregate).
    ///
    /// # Errors
    /// Store errors; [`Error::Codec`](crate::Error::Codec) for an unreadable entry.
    pub async fn load(&self, id: &str) -> Result<(A, Option<u64>)> {
        validate_name("aggregate id", id)?;
        match self.states.get(A::KIND, id).await? {
            Some(v) => Ok((Json::decode(&v.value)?, Some(v.version))),
            None => Ok((A::default(), None)),
        }
    }

    /// Loads, decides, applies and saves under the loaded version.
    ///
    /// # Errors
    /// [`RepositoryError::Domain`] when refused; [`Error::StateConflict`](crate::Error::StateConflict) once retries are
    /// exhausted; other store errors.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
    ) -> std::result::Result<Executed, RepositoryError<A::Error>> {
        retry_conflicts(self.retry.as_ref(), command, |command| async move {
            let (mut state, version) = self.load(id).await?;
            let events = state.handle(command).map_err(RepositoryError::Domain)?;
            events.iter().for_each(|e| state.apply(e));
            let expected = version.map_or(StateExpectation::New, StateExpectation::Version);
            let version = self
                .states
                .put(A::KIND, id, expected, Json::encode(&state)?)
                .await?;
            Ok(Executed {
                version,
                events: events.len(),
                conflict_retries: 0,
                snapshot_taken: false,
                snapshot_error: None,
                row_error: None,
            })
        })
        .await
    }
}
