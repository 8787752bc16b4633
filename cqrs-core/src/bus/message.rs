//! Messages, their ids and priorities, and deliveries.

use std::{fmt, str::FromStr};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{validate_name, ContentType, Error, EventId, Metadata, Result};

/// A message's id: a UUID v7 (ids sort by creation time). Handlers de-duplicate by it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A fresh UUID v7.
    pub fn new() -> Self {
        MessageId(Uuid::now_v7())
    }

    /// Wraps an existing UUID.
    pub const fn from_uuid(id: Uuid) -> Self {
        MessageId(id)
    }

    /// The UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for MessageId {
    fn default() -> Self {
        MessageId::new()
    }
}

impl From<EventId> for MessageId {
    /// A message relayed from the event store keeps the event's id.
    fn from(id: EventId) -> Self {
        MessageId(*id.as_uuid())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for MessageId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(MessageId)
            .map_err(|e| Error::invalid(format!("message id {s:?} is not a UUID: {e}")))
    }
}

/// How urgently a message is handled when consumers are backlogged.
///
/// Ordered from the most urgent: `Critical < High < Normal < Low` in `Ord`, so sorting
/// ascending gives drain order. Priorities never reorder one key's messages (see
/// [`PriorityScheduler`](crate::bus::PriorityScheduler)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Drains first.
    Critical,
    /// Before normal traffic.
    High,
    /// The default.
    #[default]
    Normal,
    /// Only when nothing more urgent is ready (within the scheduler's bypass limit).
    Low,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The stable name transports store.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    /// 0 for critical up to 3 for low: an index into per-priority lanes.
    pub const fn rank(self) -> usize {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Normal => 2,
            Priority::Low => 3,
        }
    }
}

impl FromStr for Priority {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "critical" => Ok(Priority::Critical),
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            other => Err(Error::corrupt(format!("unknown priority {other:?}"))),
        }
    }
}

/// One message on a topic.
///
/// Headers reuse [`Metadata`]: correlation id, causation id, actor and free key/values.
///
/// ```
/// use cqrs_core::{bus::{Message, Priority}, ContentType};
/// let m = Message::new("order-1", ContentType::Json, r#"{"n":1}"#)
///     .with_priority(Priority::High)
///     .with_correlation_id("req-7")
///     .with_header("tenant", "acme");
/// assert_eq!(m.key, "order-1");
/// assert_eq!(m.headers.extra["tenant"], "acme");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique id (UUID v7 by default).
    pub id: MessageId,
    /// The partition key: messages of one key keep their order.
    pub key: String,
    /// Urgency under backlog.
    pub priority: Priority,
    /// Correlation and causation ids and free headers.
    pub headers: Metadata,
    /// How to read the payload.
    pub content_type: ContentType,
    /// The payload, delivered byte for byte.
    pub payload: Bytes,
}

impl Message {
    /// A normal-priority message with a fresh id and no headers.
    pub fn new(key: impl Into<String>, content_type: ContentType, payload: impl Into<Bytes>) -> Self {
        Message {
            id: MessageId::new(),
            key: key.into(),
            priority: Priority::Normal,
            headers: Metadata::default(),
            content_type,
            payload: payload.into(),
        }
    }

    /// Sets the id.
    #[must_use]
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = id;
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.headers.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    #[must_use]
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.headers.causation_id = Some(id.into());
        self
    }

    /// Adds a free header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.extra.insert(name.into(), value.into());
        self
    }

    /// Checks what every transport refuses: an empty or oversized key, bad header names.
    ///
    /// # Errors
    /// [`Error::InvalidInput`].
    pub fn validate(&self) -> Result<()> {
        validate_name("partition key", &self.key)?;
        for name in self.headers.extra.keys() {
            validate_name("header name", name)?;
        }
        Ok(())
    }
}

/// The headers the relay (`cqrs_runtime::Relay`) adds to a relayed event's own metadata,
/// in [`Metadata::extra`]; [`Delivery::metadata`] leaves them out.
pub mod headers {
    /// The event type.
    pub const EVENT_TYPE: &str = "event-type";
    /// The event's schema version.
    pub const SCHEMA_VERSION: &str = "schema-version";
    /// The event's version in its stream.
    pub const STREAM_VERSION: &str = "stream-version";
    /// The payload's content encoding, when it is not `identity`.
    pub const CONTENT_ENCODING: &str = "content-encoding";
    /// When the event was recorded, in milliseconds since the Unix epoch.
    pub const RECORDED_AT: &str = "recorded-at";
    /// All of the above.
    pub const ALL: [&str; 5] = [
        EVENT_TYPE,
        SCHEMA_VERSION,
        STREAM_VERSION,
        CONTENT_ENCODING,
        RECORDED_AT,
    ];
}

/// A message handed to a handler, with where it came from and how often it was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// Its topic.
    pub topic: String,
    /// The consumer group handling it.
    pub group: String,
    /// The consumer handling it.
    pub consumer: String,
    /// Its partition ([`partition_for`](crate::bus::partition_for) of its key).
    pub partition: u32,
    /// The transport's id of the entry (a Redis stream id, an outbox row id, `p<k>-<offset>`).
    pub entry: String,
    /// 1 on the first delivery, counted by the bus itself (claims after a crash count too).
    pub attempt: u32,
}

impl Delivery {
    /// The metadata the message carries: for a relayed event, the metadata of the command
    /// that produced it (correlation, causation, actor, free key/values) without the relay's
    /// own [`headers`].
    ///
    /// ```
    /// use cqrs_core::{bus::{headers, Delivery, Message}, ContentType, Metadata};
    /// let message = Message::new("order-1", ContentType::Json, "{}")
    ///     .with_correlation_id("req-7")
    ///     .with_header(headers::EVENT_TYPE, "Placed");
    /// let delivery = Delivery {
    ///     message, topic: "orders".into(), group: "mailer".into(), consumer: "c1".into(),
    ///     partition: 0, entry: "1-0".into(), attempt: 1,
    /// };
    /// assert_eq!(delivery.metadata(), Metadata::new().with_correlation_id("req-7"));
    /// ```
    pub fn metadata(&self) -> Metadata {
        let mut metadata = self.message.headers.clone();
        for header in headers::ALL {
            metadata.extra.remove(header);
        }
        metadata
    }

    /// The metadata of a command this message leads to: caused by the message (for a
    /// relayed event, by the event: the message id is the event id), in its correlation, by
    /// its actor. See [`Metadata::follow_up`].
    pub fn follow_up(&self) -> Metadata {
        self.message.headers.follow_up(self.message.id)
    }
}
