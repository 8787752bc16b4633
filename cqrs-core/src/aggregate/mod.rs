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
//! with payload `{"qty":2}`.

mod event_sourced;
mod hybrid;
mod state_based;

use serde::{de::DeserializeOwned, Serialize};

pub use event_sourced::{EventSourcedRepository, Loaded, SNAPSHOTS_REJECTED};
pub use hybrid::HybridRepository;
pub use state_based::StateRepository;

use crate::{codec::Codec, codec::Json, compression, ContentType, Error, EventData, Result};

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

/// Runs `attempt` until it succeeds, fails with anything but a conflict, or has been
/// retried `max` times; the result records how many retries it took.
pub(crate) async fn retry_conflicts<E, F, Fut>(
    max: u32,
    mut attempt: F,
) -> std::result::Result<Executed, RepositoryError<E>>
where
    E: std::error::Error + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Executed, RepositoryError<E>>>,
{
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(RepositoryError::Store(e)) if e.is_conflict() && retries < max => retries += 1,
            Ok(mut done) => {
                done.conflict_retries = retries;
                return Ok(done);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Splits a serde-enum event into its type name and JSON payload.
///
/// # Errors
/// [`Error::Codec`] if the value is not an externally tagged enum variant.
pub fn encode_event<E: Serialize>(event: &E) -> Result<(String, serde_json::Value)> {
    match serde_json::to_value(event).map_err(|e| Error::codec("event encode", e))? {
        serde_json::Value::String(unit) => Ok((unit, serde_json::Value::Null)),
        serde_json::Value::Object(map) if map.len() == 1 => {
            let Some((ty, payload)) = map.into_iter().next() else {
                return Err(Error::codec("event encode", "empty event object"));
            };
            Ok((ty, payload))
        }
        other => Err(Error::codec(
            "event encode",
            format!("domain events must be externally tagged serde enums, got {other}"),
        )),
    }
}

/// Rebuilds a serde-enum event from its type name and JSON payload.
///
/// # Errors
/// [`Error::Codec`] if the type is unknown to `E` or the payload does not fit.
pub fn decode_event<E: DeserializeOwned>(event_type: &str, payload: serde_json::Value) -> Result<E> {
    // The map form works for every variant shape: serde_json reads `{"Closed": null}` as a
    // unit variant and `{"Renamed": null}` as a newtype variant holding `None`.
    serde_json::from_value(serde_json::json!({ event_type: payload }))
        .map_err(|e| Error::codec(format!("event decode of {event_type}"), e))
}

/// Turns domain events into [`EventData`] (fresh ids, JSON content) at `schema_version`.
pub(crate) fn to_event_data<E: Serialize>(
    events: &[E],
    schema_version: impl Fn(&str) -> u32,
) -> Result<Vec<EventData>> {
    events
        .iter()
        .map(|e| {
            let (ty, payload) = encode_event(e)?;
            let bytes = Json::encode(&payload)?;
            let v = schema_version(&ty);
            Ok(EventData::new(ty, ContentType::Json, bytes).with_schema_version(v))
        })
        .collect()
}

/// Decodes a stored (and upcast) event into a domain event.
pub(crate) fn from_event_data<E: DeserializeOwned>(data: &EventData) -> Result<E> {
    let raw = match data.content_encoding {
        crate::ContentEncoding::Identity => data.payload.clone(),
        encoding => compression::decompress(encoding, &data.payload)?,
    };
    if data.content_type == ContentType::Json {
        return decode_json_event(&data.event_type, &raw);
    }
    let payload: serde_json::Value = crate::codec::decode_as(data.content_type, &raw)?;
    decode_event(&data.event_type, payload)
}

/// [`decode_event`] straight from JSON bytes: the enum reads `{event_type: payload}` from a
/// map whose one value is parsed in place. Going through `serde_json::Value` twice (the
/// payload, then the tagged map) was most of a 10,000-event aggregate load.
fn decode_json_event<E: DeserializeOwned>(event_type: &str, json: &[u8]) -> Result<E> {
    let mut payload = serde_json::Deserializer::from_slice(json);
    let decoded = E::deserialize(serde::de::value::MapAccessDeserializer::new(Tagged {
        event_type: Some(event_type),
        payload: &mut payload,
    }))
    .and_then(|event| payload.end().map(|()| event));
    decoded.map_err(|e| Error::codec(format!("event decode of {event_type}"), e))
}

/// A one-entry map: the event type as key, the JSON payload as value.
struct Tagged<'a, 'de> {
    event_type: Option<&'a str>,
    payload: &'a mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
}

impl<'de> serde::de::MapAccess<'de> for Tagged<'_, 'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> std::result::Result<Option<K::Value>, Self::Error> {
        match self.event_type.take() {
            Some(ty) => seed
                .deserialize(serde::de::value::StrDeserializer::<serde_json::Error>::new(ty))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        seed.deserialize(&mut *self.payload)
    }
}

/// Builds `<KIND>-<id>`.
pub(crate) fn stream_of<A: Aggregate>(id: &str) -> Result<crate::StreamId> {
    crate::StreamId::new(format!("{}-{id}", A::KIND))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum CounterEvent {
        Added { by: i64 },
        Closed,
        Renamed(Option<String>),
    }

    #[test]
    fn serde_enum_events_split_and_rebuild() {
        let (ty, payload) = encode_event(&CounterEvent::Added { by: 3 }).unwrap();
        assert_eq!(
            (ty.as_str(), payload.clone()),
            ("Added", serde_json::json!({"by": 3}))
        );
        assert_eq!(
            decode_event::<CounterEvent>(&ty, payload).unwrap(),
            CounterEvent::Added { by: 3 }
        );
        let (ty, payload) = encode_event(&CounterEvent::Closed).unwrap();
        assert_eq!(
            decode_event::<CounterEvent>(&ty, payload).unwrap(),
            CounterEvent::Closed
        );
        assert!(decode_event::<CounterEvent>("Nope", serde_json::json!({})).is_err());
        assert!(encode_event(&5).is_err());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shapes {
        Struct { by: i64, memo: String },
        Unit,
        Newtype(Option<String>),
        Tuple(u8, u8),
    }

    #[test]
    fn json_events_decode_in_place_as_through_values() {
        let events = [
            Shapes::Struct {
                by: -3,
                memo: "m\u{e9}\"".into(),
            },
            Shapes::Unit,
            Shapes::Newtype(None),
            Shapes::Newtype(Some("x".into())),
            Shapes::Tuple(1, 2),
        ];
        for data in to_event_data(&events, |_| 1).unwrap() {
            let in_place: Shapes = from_event_data(&data).unwrap();
            let payload = serde_json::from_slice(&data.payload).unwrap();
            let through_values: Shapes = decode_event(&data.event_type, payload).unwrap();
            assert_eq!(in_place, through_values);
        }
        let data = |ty: &str, json: &str| EventData::new(ty, ContentType::Json, json.as_bytes().to_vec());
        for (ty, json) in [
            ("Nope", "{}"),
            ("Struct", r#"{"by": 1}"#),
            ("Struct", r#"{"by": 1, "memo": "a"} trailing"#),
            ("Unit", "1"),
            ("Tuple", "[1]"),
        ] {
            let err = from_event_data::<Shapes>(&data(ty, json)).unwrap_err();
            assert!(matches!(err, Error::Codec { .. }), "{ty} {json}: {err:?}");
        }
    }
}
