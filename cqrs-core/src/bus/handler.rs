//! Message handlers and their errors.

use std::{fmt, sync::Arc};

use async_trait::async_trait;

use super::Delivery;
use crate::{BoxError, Error};

/// How a handler failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerErrorKind {
    /// May succeed later: retried under the retry policy.
    Retryable,
    /// Will never succeed: dead-lettered at once.
    Permanent,
    /// The message could not be decoded: dead-lettered at once, never parks its key.
    Undecodable,
}

/// A handler's failure.
#[derive(Debug)]
pub struct HandlerError {
    kind: HandlerErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Retryable,
            message: message.into(),
            source: None,
        }
    }

    /// A failure no retry can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Permanent,
            message: message.into(),
            source: None,
        }
    }

    /// A message that does not decode.
    pub fn undecodable(message: impl Into<String>) -> Self {
        HandlerError {
            kind: HandlerErrorKind::Undecodable,
            message: message.into(),
            source: None,
        }
    }

    /// Keeps the cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// How it failed.
    pub fn kind(&self) -> HandlerErrorKind {
        self.kind
    }

    /// What failed.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True for [`HandlerErrorKind::Retryable`].
    pub fn is_retryable(&self) -> bool {
        self.kind == HandlerErrorKind::Retryable
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            HandlerErrorKind::Retryable => "retryable",
            HandlerErrorKind::Permanent => "permanent",
            HandlerErrorKind::Undecodable => "undecodable",
        };
        write!(f, "{kind} handler error: {}", self.message)
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for HandlerError {
    /// Codec and corrupt-data errors are undecodable, bad input and unknown handlers are
    /// permanent, everything else (a store conflict, an outage) is retryable.
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Codec { .. } | Error::Corrupt { .. } | Error::NoUpcastPath { .. } => {
                HandlerErrorKind::Undecodable
            }
            Error::InvalidInput { .. } | Error::TooLarge { .. } | Error::NotRegistered { .. } => {
                HandlerErrorKind::Permanent
            }
            _ => HandlerErrorKind::Retryable,
        };
        HandlerError {
            kind,
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

/// Handles the messages of a subscription. Must be idempotent on durable transports
/// (at-least-once delivery).
#[async_trait]
pub trait MessageHandler: Send + Sync {
    /// Handles one delivery. `Ok` acknowledges it.
    ///
    /// # Errors
    /// A [`HandlerError`]: retryable ones are retried under the retry policy, the others go
    /// to the dead letter at once.
    async fn handle(&self, delivery: &Delivery) -> std::result::Result<(), HandlerError>;
}

#[async_trait]
impl<H: MessageHandler + ?Sized> MessageHandler for Arc<H> {
    async fn handle(&self, delivery: &Delivery) -> std::result::Result<(), HandlerError> {
        (**self).handle(delivery).await
    }
}

/// A [`MessageHandler`] from an async closure taking the delivery by value.
pub struct HandlerFn<F>(F);

impl<F> fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerFn")
    }
}

/// Wraps `f` as a [`MessageHandler`].
///
/// ```
/// use cqrs_core::bus::{handler_fn, Delivery, HandlerError};
/// let h = handler_fn(|d: Delivery| async move {
///     if d.message.payload.is_empty() { Err(HandlerError::permanent("empty")) } else { Ok(()) }
/// });
/// # let _ = h;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync,
    Fut: std::future::Future<Output = std::result::Result<(), HandlerError>> + Send,
{
    HandlerFn(f)
}

#[async_trait]
impl<F, Fut> MessageHandler for HandlerFn<F>
where
    F: Fn(Delivery) -> Fut + Send + Sync,
    Fut: std::future::Future<Output = std::result::Result<(), HandlerError>> + Send,
{
    async fn handle(&self, delivery: &Delivery) -> std::result::Result<(), HandlerError> {
        (self.0)(delivery.clone()).await
    }
}
