//! Events to append and events read back.

use std::{collections::BTreeMap, fmt, str::FromStr};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Error, Position, Result, StreamId, Timestamp};

/// An event's id: the idempotency key of an append. UUID v7 by default, so ids sort by
/// creation time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh UUID v7.
    pub fn new() -> Self {
        EventId(Uuid::now_v7())
    }

    /// Wraps an existing UUID (for imports and tests).
    pub const fn from_uuid(id: Uuid) -> Self {
        EventId(id)
    }

    /// The UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        EventId::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for EventId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(EventId)
            .map_err(|e| Error::invalid(format!("event id {s:?} is not a UUID: {e}")))
    }
}

/// How a payload's bytes are to be read once decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    /// UTF-8 JSON.
    #[default]
    Json,
    /// A BSON document.
    Bson,
    /// Bytes the store never interprets.
    Opaque,
}

impl ContentType {
    /// The stable name stored by backends.
    pub const fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => "json",
            ContentType::Bson => "bson",
            ContentType::Opaque => "opaque",
        }
    }
}

impl FromStr for ContentType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "json" => Ok(ContentType::Json),
            "bson" => Ok(ContentType::Bson),
            "opaque" => Ok(ContentType::Opaque),
            other => Err(Error::corrupt(format!("unknown content type {other:?}"))),
        }
    }
}

/// How a payload's bytes were compressed (see [`crate::compression`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentEncoding {
    /// Not compressed.
    #[default]
    Identity,
    /// gzip (CRC-32 checked on decode).
    Gzip,
    /// zlib (Adler-32 checked on decode).
    Zlib,
}

impl ContentEncoding {
    /// The stable name stored by backends.
    pub const fn as_str(self) -> &'static str {
        match self {
            ContentEncoding::Identity => "identity",
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Zlib => "zlib",
        }
    }
}

impl FromStr for ContentEncoding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "identity" => Ok(ContentEncoding::Identity),
            "gzip" => Ok(ContentEncoding::Gzip),
            "zlib" => Ok(ContentEncoding::Zlib),
            other => Err(Error::corrupt(format!("unknown content encoding {other:?}"))),
        }
    }
}

/// Who and what caused an event, plus free key/values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties together everything one request caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The message that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// Who acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Anything else, ordered by key so encodings are canonical.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

impl Metadata {
    /// No field set: the same as [`Metadata::default`], the start of a builder chain.
    ///
    /// ```
    /// use cqrs_core::Metadata;
    /// let m = Metadata::new()
    ///     .with_correlation_id("req-7")
    ///     .with_actor("alice")
    ///     .with_extra("tenant", "acme");
    /// assert_eq!(m.actor.as_deref(), Some("alice"));
    /// assert_eq!(m.extra["tenant"], "acme");
    /// ```
    pub fn new() -> Self {
        Metadata::default()
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Sets the actor.
    #[must_use]
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Adds a free key/value.
    #[must_use]
    pub fn with_extra(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// The metadata of a command that `cause` (an event or message id) led to, where
    /// `self` is the cause's metadata: causation is `cause`, the correlation id carries over
    /// (or starts at `cause` when the cause had none, so every follow-up of one cause shares
    /// one), and so does the actor; free key/values do not, they describe one command.
    /// Override a field with the `with_*` setters. [`RecordedEvent::follow_up`] and
    /// `Delivery::follow_up` call this with their ids.
    ///
    /// ```
    /// use cqrs_core::{EventId, Metadata};
    /// let cause = EventId::new();
    /// let request = Metadata::new().with_correlation_id("req-7").with_actor("alice");
    /// let next = request.follow_up(cause).with_actor("mailer");
    /// assert_eq!(next.causation_id, Some(cause.to_string()));
    /// assert_eq!(next.correlation_id.as_deref(), Some("req-7"));
    /// assert_eq!(next.actor.as_deref(), Some("mailer"));
    /// ```
    #[must_use]
    pub fn follow_up(&self, cause: impl fmt::Display) -> Metadata {
        let cause = cause.to_string();
        Metadata {
            correlation_id: Some(self.correlation_id.clone().unwrap_or_else(|| cause.clone())),
            causation_id: Some(cause),
            actor: self.actor.clone(),
            extra: BTreeMap::new(),
        }
    }

    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.correlation_id.is_none()
            && self.causation_id.is_none()
            && self.actor.is_none()
            && self.extra.is_empty()
    }

    /// Bytes counted against the event size limit.
    pub fn encoded_len(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        opt(&self.correlation_id)
            + opt(&self.causation_id)
            + opt(&self.actor)
            + self.extra.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    /// Canonical JSON (keys sorted, absent fields omitted): what backends store and what
    /// checksums cover.
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings and a string map cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses [`Metadata::to_json`] output.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the text is not metadata JSON.
    pub fn from_json(s: &str) -> Result<Self> {
        // Most events carry no metadata; skip the parser for them.
        if s == "{}" {
            return Ok(Metadata::default());
        }
        serde_json::from_str(s).map_err(|e| Error::corrupt(format!("event metadata: {e}")))
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    /// The idempotency key: re-sending a committed id returns the original outcome.
    pub event_id: EventId,
    /// The event's type name, stable across schema versions unless an upcaster renames it.
    pub event_type: String,
    /// The payload's schema version (1-based), for upcasters.
    pub schema_version: u32,
    /// The payload as stored: round-trips byte for byte.
    pub payload: Bytes,
    /// How to read the payload.
    pub content_type: ContentType,
    /// How the payload is compressed.
    pub content_encoding: ContentEncoding,
    /// Correlation, causation, actor and free key/values.
    pub metadata: Metadata,
}

impl EventData {
    /// An event with a fresh id, schema version 1, no compression and no metadata.
    pub fn new(event_type: impl Into<String>, content_type: ContentType, payload: impl Into<Bytes>) -> Self {
        EventData {
            event_id: EventId::new(),
            event_type: event_type.into(),
            schema_version: 1,
            payload: payload.into(),
            content_type,
            content_encoding: ContentEncoding::Identity,
            metadata: Metadata::default(),
        }
    }

    /// A JSON event from a serialisable value.
    ///
    /// # Errors
    /// [`Error::Codec`] if the value cannot be serialised.
    pub fn json<T: Serialize>(event_type: impl Into<String>, value: &T) -> Result<Self> {
        let bytes = <crate::codec::Json as crate::codec::Codec>::encode(value)?;
        Ok(EventData::new(event_type, ContentType::Json, bytes))
    }

    /// Sets the event id.
    #[must_use]
    pub fn with_id(mut self, id: EventId) -> Self {
        self.event_id = id;
        self
    }

    /// Sets the schema version.
    #[must_use]
    pub fn with_schema_version(mut self, v: u32) -> Self {
        self.schema_version = v;
        self
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the content encoding (the payload must already be encoded that way).
    #[must_use]
    pub fn with_encoding(mut self, encoding: ContentEncoding) -> Self {
        self.content_encoding = encoding;
        self
    }

    /// Bytes counted against the event size limit: payload, type and metadata.
    pub fn encoded_len(&self) -> usize {
        self.payload.len() + self.event_type.len() + self.metadata.encoded_len()
    }

    /// True when two events carry the same content (ids aside). Used by idempotency checks
    /// that must tell an honest re-send from a clashing id.
    pub fn same_content(&self, other: &EventData) -> bool {
        self.event_type == other.event_type
            && self.schema_version == other.schema_version
            && self.payload == other.payload
            && self.content_type == other.content_type
            && self.content_encoding == other.content_encoding
            && self.metadata == other.metadata
    }
}

/// An event read back from a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its version within the stream, 1-based.
    pub version: u64,
    /// Its place in the store-wide log.
    pub position: Position,
    /// When the store recorded it (the store's clock where it has one), in milliseconds.
    pub recorded_at: Timestamp,
    /// What was appended, byte for byte.
    pub data: EventData,
}

impl RecordedEvent {
    /// The event id.
    pub fn event_id(&self) -> EventId {
        self.data.event_id
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.data.event_type
    }

    /// The metadata of a command this event leads to (a policy or process manager reacting
    /// to it): caused by this event, in its correlation, by its actor. See
    /// [`Metadata::follow_up`].
    pub fn follow_up(&self) -> Metadata {
        self.data.metadata.follow_up(self.data.event_id)
    }
}
