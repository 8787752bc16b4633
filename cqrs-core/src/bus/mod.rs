//! The event bus: messages published to topics and handled by consumer groups.
//!
//! One object-safe trait, [`EventBus`], that every transport implements (in memory, Redis
//! Streams, Redis Pub/Sub, a PostgreSQL outbox), and the plain types around it: [`Message`],
//! [`SubscriptionSpec`], [`MessageHandler`], [`Subscription`], [`DeadLetter`] and
//! [`BusCapabilities`]. A transport declares what it guarantees in [`BusCapabilities`]; the
//! `conformance` bus suite tests every claimed capability.
//!
//! The pure rules every transport shares live here too, so they agree exactly:
//! [`partition_for`] (which partition a key belongs to), [`RetryPolicy::backoff`] (how long
//! to wait before a retry), [`PriorityScheduler`] (which ready message goes first),
//! [`Breaker`] (the circuit breaker's state machine) and [`LatencyWindow`] (handler latency
//! percentiles).
//!
//! # Delivery contract
//! - A topic is split into [`BusCapabilities::partitions`] partitions by [`partition_for`] of
//!   the message key. Within a group each partition is owned by one consumer at a time, so a
//!   key is never handled by two consumers at once and, where
//!   [`BusCapabilities::ordered_per_key`] is declared, a key's next message is not delivered
//!   while an earlier one is un-acknowledged (retries included).
//! - Durable transports ([`BusCapabilities::durable`]) deliver at least once: handlers must
//!   be idempotent (de-duplicate by [`Message::id`]).
//! - A handler error is retried under the subscription's [`RetryPolicy`] with our own attempt
//!   counter ([`Delivery::attempt`]); after the last attempt, or on a permanent error, the
//!   message goes to the dead letter of its group together with its acknowledgement. On
//!   ordered topics later messages of that key are parked behind it
//!   ([`DeadLetterReason::Parked`]).
//! - Priorities never reorder one key's messages: only ready messages (the oldest
//!   un-acknowledged message of their key) compete, and the highest priority goes first.

mod breaker;
mod dead_letter;
mod handler;
mod latency;
mod message;
mod partition;
mod priority;
mod retry;
mod subscription;
#[cfg(test)]
mod tests;

pub use breaker::{Breaker, BreakerState, CircuitBreakerSettings};
pub use dead_letter::{DeadLetter, DeadLetterReason};
pub use handler::{handler_fn, HandlerError, HandlerErrorKind, HandlerFn, MessageHandler};
pub use latency::{LatencyPercentiles, LatencyWindow};
pub use message::{headers, Delivery, Message, MessageId, Priority};
pub use partition::{key_hash, partition_for, IntHasher, IntMap, IntSet};
pub use priority::PriorityScheduler;
pub use retry::{Backoff, RetryPolicy};
pub use subscription::{
    Health, HealthStatus, StartFrom, Subscription, SubscriptionMetrics, SubscriptionSpec,
};

use std::{fmt, sync::Arc};

use async_trait::async_trait;

use crate::Result;

/// What a transport guarantees. Build with struct update syntax:
/// `BusCapabilities { durable: true, ..BusCapabilities::default() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BusCapabilities {
    /// Partitions per topic (messages are spread by [`partition_for`]).
    pub partitions: u32,
    /// At-least-once: published messages survive until every group acknowledged them, and a
    /// new group can read earlier ones. `false`: at-most-once (Pub/Sub).
    pub durable: bool,
    /// A key's messages are handled in publish order, one at a time, retries included.
    pub ordered_per_key: bool,
    /// Exhausted messages go to a per-group dead letter readable with
    /// [`EventBus::dead_letters`].
    pub dead_letter: bool,
    /// Retries wait for the retry policy's delay.
    pub delayed_retry: bool,
    /// Under backlog, urgent messages are handled first ([`PriorityScheduler`]).
    pub priorities: bool,
    /// A dead consumer's messages are claimed by another after the ack timeout.
    pub claim: bool,
    /// [`EventBus::trim`] removes entries every group acknowledged, never others.
    pub retention: bool,
}

impl BusCapabilities {
    /// Every capability, with `partitions` partitions per topic: what a durable, ordered
    /// transport (memory, Redis Streams, the PostgreSQL outbox) declares.
    pub const fn all(partitions: u32) -> Self {
        BusCapabilities {
            partitions,
            durable: true,
            ordered_per_key: true,
            dead_letter: true,
            delayed_retry: true,
            priorities: true,
            claim: true,
            retention: true,
        }
    }
}

/// Checks what every transport refuses before any I/O: a bad topic name and any bad message
/// ([`Message::validate`]).
///
/// # Errors
/// [`crate::Error::InvalidInput`].
pub fn validate_publish(topic: &str, messages: &[Message]) -> Result<()> {
    crate::validate_name("topic", topic)?;
    messages.iter().try_for_each(Message::validate)
}

/// A message bus: publish to topics, subscribe with consumer groups.
///
/// Object safe: applications hold `Arc<dyn EventBus>`.
///
/// # Contract
/// Every transport passes the `conformance` bus suite for the capabilities it declares.
#[async_trait]
pub trait EventBus: Send + Sync + fmt::Debug {
    /// What this transport guarantees.
    fn capabilities(&self) -> BusCapabilities;

    /// Publishes `messages` to `topic`, in order, all or nothing.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a bad topic name or message (checked before any I/O),
    /// [`Error::Unavailable`](crate::Error::Unavailable), [`Error::Closed`](crate::Error::Closed).
    ///
    /// # Cancel safety
    /// Not cancel safe: the messages may be published even if this future is dropped.
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()>;

    /// Starts handling `spec.topic()` as `spec.consumer_name()` of `spec.group()`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`](crate::Error::InvalidInput) for a bad spec, [`Error::AlreadyExists`](crate::Error::AlreadyExists) for a consumer name
    /// that is live in the group, [`Error::Unavailable`](crate::Error::Unavailable), [`Error::Closed`](crate::Error::Closed).
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may leave the consumer registered (without anyone
    /// handling its partitions) until its ack timeout lapses.
    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<Box<dyn Subscription>>;

    /// Up to `max` dead letters of `group` on `topic`, oldest first.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) without [`BusCapabilities::dead_letter`], [`Error::Closed`](crate::Error::Closed).
    async fn dead_letters(&self, topic: &str, group: &str, max: usize) -> Result<Vec<DeadLetter>>;

    /// Removes the entries of `topic` every existing group has acknowledged; returns how
    /// many. Never removes an entry some group has not acknowledged.
    ///
    /// # Errors
    /// [`Error::Unsupported`](crate::Error::Unsupported) without [`BusCapabilities::retention`], [`Error::Closed`](crate::Error::Closed).
    async fn trim(&self, topic: &str) -> Result<u64>;

    /// Closes the bus: subscriptions stop being fed, later calls return [`Error::Closed`](crate::Error::Closed).
    /// Closing twice is fine.
    ///
    /// # Errors
    /// [`Error::Unavailable`](crate::Error::Unavailable).
    async fn close(&self) -> Result<()>;
}
