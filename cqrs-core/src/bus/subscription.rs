//! Subscription specs, running subscriptions, their metrics and health.

use std::{fmt, time::Duration};

use async_trait::async_trait;
use uuid::Uuid;

use super::{BreakerState, CircuitBreakerSettings, LatencyPercentiles, RetryPolicy};
use crate::{validate_name, Error, Result};

/// Where a new consumer group starts reading a topic. A group that exists resumes after its
/// last acknowledgement whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartFrom {
    /// Every retained message (Redis `0`).
    #[default]
    Earliest,
    /// Only messages published after the group was created (Redis `$`).
    Latest,
}

/// What to subscribe to and how: a typed builder (setters take and return `Self`).
///
/// ```
/// use std::time::Duration;
/// use cqrs_core::bus::{CircuitBreakerSettings, RetryPolicy, StartFrom, SubscriptionSpec};
/// let spec = SubscriptionSpec::new("orders", "billing")
///     .consumer("billing-1")
///     .concurrency(4)
///     .retry(RetryPolicy::exponential(5, Duration::from_millis(100), Duration::from_secs(5)))
///     .ack_timeout(Duration::from_secs(30))
///     .circuit_breaker(CircuitBreakerSettings::new(5, Duration::from_secs(10)))
///     .start_from(StartFrom::Latest);
/// assert!(spec.validate().is_ok());
/// assert_eq!(spec.concurrency_limit(), 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    topic: String,
    group: String,
    consumer: String,
    concurrency: usize,
    retry: RetryPolicy,
    dead_letter: bool,
    ack_timeout: Duration,
    circuit_breaker: Option<CircuitBreakerSettings>,
    start_from: StartFrom,
}

impl SubscriptionSpec {
    /// Default acknowledgement timeout: 30 s.
    pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

    /// Group `group` on `topic`, with a unique consumer name, one message at a time, the
    /// default retry policy, dead letter on, a 30 s ack timeout, no circuit breaker, and
    /// [`StartFrom::Earliest`] for a new group.
    pub fn new(topic: impl Into<String>, group: impl Into<String>) -> Self {
        SubscriptionSpec {
            topic: topic.into(),
            group: group.into(),
            consumer: format!("consumer-{}", Uuid::now_v7().simple()),
            concurrency: 1,
            retry: RetryPolicy::default(),
            dead_letter: true,
            ack_timeout: Self::DEFAULT_ACK_TIMEOUT,
            circuit_breaker: None,
            start_from: StartFrom::Earliest,
        }
    }

    /// Names this consumer (unique within its group while it lives).
    #[must_use]
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = name.into();
        self
    }

    /// Handles up to `n` messages at once (never two of one key).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Sets the retry policy for handler errors.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Dead letter on (default) or off. Off: a message that exhausted its attempts is
    /// acknowledged and dropped (counted as failed).
    #[must_use]
    pub fn dead_letter(mut self, on: bool) -> Self {
        self.dead_letter = on;
        self
    }

    /// How long a claim lives without the consumer's heartbeat; a dead consumer's messages
    /// are claimed by another after it. A live consumer extends its claims.
    #[must_use]
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Adds a circuit breaker around the handler.
    #[must_use]
    pub fn circuit_breaker(mut self, settings: CircuitBreakerSettings) -> Self {
        self.circuit_breaker = Some(settings);
        self
    }

    /// Where a new group starts.
    #[must_use]
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start_from = start;
        self
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The consumer name.
    pub fn consumer_name(&self) -> &str {
        &self.consumer
    }

    /// Messages handled at once.
    pub fn concurrency_limit(&self) -> usize {
        self.concurrency
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Whether exhausted messages go to the dead letter.
    pub fn dead_letter_enabled(&self) -> bool {
        self.dead_letter
    }

    /// The acknowledgement timeout.
    pub fn ack_timeout_value(&self) -> Duration {
        self.ack_timeout
    }

    /// The circuit breaker settings, if any.
    pub fn circuit_breaker_settings(&self) -> Option<CircuitBreakerSettings> {
        self.circuit_breaker
    }

    /// Where a new group starts.
    pub fn start(&self) -> StartFrom {
        self.start_from
    }

    /// Checks names, concurrency (at least 1), attempts (at least 1) and the ack timeout (at
    /// least 1 ms). Transports call it before any I/O.
    ///
    /// # Errors
    /// [`Error::InvalidInput`].
    pub fn validate(&self) -> Result<()> {
        validate_name("topic", &self.topic)?;
        validate_name("consumer group", &self.group)?;
        validate_name("consumer", &self.consumer)?;
        if self.concurrency == 0 {
            return Err(Error::invalid("subscription concurrency must be at least 1"));
        }
        if self.retry.max_attempts == 0 {
            return Err(Error::invalid("retry policy max_attempts must be at least 1"));
        }
        if self.ack_timeout < Duration::from_millis(1) {
            return Err(Error::invalid("ack timeout must be at least 1 ms"));
        }
        Ok(())
    }
}

/// Counters and gauges of one subscription, since it started (`published` and `lag` are the
/// topic's and the group's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionMetrics {
    /// Messages ever published to the topic.
    pub published: u64,
    /// Messages this subscription handled successfully (acknowledged).
    pub handled: u64,
    /// Handler calls that failed.
    pub failed: u64,
    /// Retries scheduled after a failure.
    pub retried: u64,
    /// Messages this subscription sent to the dead letter (parked ones included).
    pub dead_lettered: u64,
    /// Messages being handled now.
    pub in_flight: u64,
    /// Messages of the topic the group has not acknowledged yet.
    pub lag: u64,
    /// Handler latency over the recent window.
    pub latency: LatencyPercentiles,
}

/// Whether a subscription is working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// Consuming.
    Running,
    /// `stop()` was called; in-flight messages are finishing.
    Stopping,
    /// Stopped (or aborted).
    Stopped,
}

/// A subscription's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Running, stopping or stopped.
    pub status: HealthStatus,
    /// The circuit breaker's state ([`BreakerState::Closed`] without a breaker).
    pub breaker: BreakerState,
    /// Partitions this consumer owns now.
    pub owned_partitions: Vec<u32>,
    /// The last handler or transport error.
    pub last_error: Option<String>,
}

/// A running subscription. Dropping it without [`Subscription::stop`] is a crash (as
/// [`Subscription::abort`]).
#[async_trait]
pub trait Subscription: Send + Sync + fmt::Debug {
    /// The consumer's name.
    fn consumer(&self) -> &str;

    /// Counters since the subscription started.
    fn metrics(&self) -> SubscriptionMetrics;

    /// Current health.
    fn health(&self) -> Health;

    /// Stops gracefully: no new deliveries; in-flight messages finish and are acknowledged
    /// (or released for redelivery); partitions are handed back. Nothing is lost.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the transport could not be told; un-acknowledged messages
    /// are then claimed by another consumer after the ack timeout.
    async fn stop(self: Box<Self>) -> Result<()>;

    /// Stops at once as a crashed process would: in-flight handlers are dropped, nothing is
    /// acknowledged or released; another consumer claims the messages after the ack timeout.
    fn abort(self: Box<Self>);
}
