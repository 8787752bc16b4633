//! Aggregates and the repositories that load and save them.
//!
//! - [`EventSourcedRepository`]: events are the state. Load = latest usable snapshot plus
//!   later events through the upcasters; save = append at the loaded version.
//! - [`StateRepository`]: only the current state is stored ([`crate::StateStore`]).
//! - [`HybridRepository`]: events are the source of truth; a state row is written after each
//!   append under a version guard and repaired on load when it lags.
//!
//! Domain events are serde enums. The variant name is the event type and the variant's
//! content is the payload, so `OrderEvent::Placed { qty: 2 }` is stored as type `"Placed"`
//! with payload `{"qty":2}`; [`crate::codec::encode_event`] and [`crate::codec::decode_event`]
//! convert in both directions, outside the repositories too.

mod event_sourced;
mod hybrid;
mod state_based;

use serde::{de::DeserializeOwned, Serialize};

pub use event_sourced::{EventSourcedRepository, Loaded, SNAPSHOTS_REJECTED};
pub use hybrid::HybridRepository;
pub use state_based::StateRepository;

use crate::{
    codec::{encode_event, Codec, Json},
    ContentType, Error, EventData, Metadata, Result,
};

/// A consistency boundary: decides on commands, changes only by applying its events.
///
/// `Serialize`/`Deserialize` of the aggregate itself is its snapshot (and state-row) format;
/// bump [`Aggregate::SNAPSHOT_REVISION`] when it changes so old snapshots are ignored.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What it is asked to do.
    type Command: Send;
    /// What happened: a serde enum (see the module docs).
    type Event: Serialize + DeserializeOwned + Send + Sync;
    /// Why a command was refused.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Prefix of its stream ids (`"order"` gives `"order-<id>"`) and its state kind.
    const KIND: &'static str;

    /// Revision of the snapshot format.
    const SNAPSHOT_REVISION: u32 = 1;

    /// Decides: the events a command causes, or why it is refused. Must not mutate.
    ///
    /// # Errors
    /// The domain's refusal.
    fn handle(&self, command: Self::Command) -> std::result::Result<Vec<Self::Event>, Self::Error>;

    /// Evolves the state by one event. Must not fail: the event already happened.
    fn apply(&mut self, event: &Self::Event);
}

/// Why a repository call failed: the domain refused, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError<E: std::error::Error + 'static> {
    /// The aggregate refused the command; nothing was written.
    #[error("command refused: {0}")]
    Domain(#[source] E),
    /// A store, codec or concurrency error.
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E: std::error::Error + 'static> RepositoryError<E> {
    /// The store error, if that is what this is.
    pub fn store_error(&self) -> Option<&Error> {
        match self {
            RepositoryError::Store(e) => Some(e),
            RepositoryError::Domain(_) => None,
        }
    }
}

/// What executing a command did.
#[derive(Debug)]
pub struct Executed {
    /// The stream (or state) version after the command.
    pub version: u64,
    /// How many events the command produced.
    pub events: usize,
    /// How many times the command was re-run on fresh state after a conflict.
    pub conflict_retries: u32,
    /// Whether a snapshot was taken.
    pub snapshot_taken: bool,
    /// A snapshot that failed to save: the command itself succeeded.
    pub snapshot_error: Option<Error>,
    /// A state row that failed to save after the events were committed (hybrid repository):
    /// the command itself succeeded and the next load repairs the row.
    pub row_error: Option<Error>,
}

/// How a repository re-runs a command after a conflict: up to `max` times, each time on a
/// copy taken before the attempt. Only `retry_on_conflict` builds one, so only a repository
/// that retries needs `Command: Clone`; without it the command is moved into its one
/// attempt.
pub(crate) struct ConflictRetry<C> {
    max: u32,
    copy: fn(&C) -> C,
}

impl<C: Clone> ConflictRetry<C> {
    pub(crate) fn new(max: u32) -> Self {
        ConflictRetry { max, copy: C::clone }
    }
}

impl<C> ConflictRetry<C> {
    pub(crate) fn max(&self) -> u32 {
        self.max
    }
}

/// Runs `attempt` on `command` until it succeeds, fails with anything but a conflict, or
/// `retry` allows no further attempt; the result records how many retries it took.
pub(crate) async fn retry_conflicts<C, E, F, Fut>(
    retry: Option<&ConflictRetry<C>>,
    command: C,
    mut attempt: F,
) -> std::result::Result<Executed, RepositoryError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut(C) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Executed, RepositoryError<E>>>,
{
    let mut command = command;
    let mut retries = 0;
    loop {
        // Copy only while another attempt may follow: the last attempt takes the command.
        let spare = retry.filter(|r| retries < r.max).map(|r| (r.copy)(&command));
        match attempt(command).await {
            Err(RepositoryError::Store(e)) if e.is_conflict() => match spare {
                Some(next) => {
                    command = next;
                    retries += 1;
                }
                None => return Err(RepositoryError::Store(e)),
            },
            Ok(mut done) => {
                done.conflict_retries = retries;
                return Ok(done);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Turns domain events into [`EventData`] (fresh ids, JSON content) at `schema_version`,
/// each carrying `metadata`.
pub(crate) fn to_event_data<E: Serialize>(
    events: &[E],
    schema_version: impl Fn(&str) -> u32,
    metadata: &Metadata,
) -> Result<Vec<EventData>> {
    events
        .iter()
        .map(|e| {
            let (ty, payload) = encode_event(e)?;
            let bytes = Json::encode(&payload)?;
            let v = schema_version(&ty);
            Ok(EventData::new(ty, ContentType::Json, bytes)
                .with_schema_version(v)
                .with_metadata(metadata.clone()))
        })
        .collect()
}

/// Builds `<KIND>-<id>`.
pub(crate) fn stream_of<A: Aggregate>(id: &str) -> Result<crate::StreamId> {
    crate::StreamId::new(format!("{}-{id}", A::KIND))
}
