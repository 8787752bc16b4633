//! Handler middleware: wrappers around a [`MessageHandler`] that are handlers too.
//!
//! - [`Retry`]: retries a failed call in place with backoff ([`RetryPolicy`]): no delay
//!   before the first attempt, waits growing (fixed, linear or exponential) up to the cap, an
//!   optional limit on the total time, a should-retry predicate; permanent and undecodable
//!   errors are never retried.
//! - [`CircuitBreaker`]: after N consecutive failures the inner handler is not called while
//!   the breaker is open (calls fail fast with a retryable error); after its timeout one trial
//!   call goes through (half-open); success closes it, failure reopens it.
//!
//! Both keep time with tokio's clock, so tests can pause and advance it. Compose them with
//! [`HandlerExt`]:
//!
//! ```
//! use std::time::Duration;
//! use cqrs_core::bus::{handler_fn, CircuitBreakerSettings, Delivery, RetryPolicy};
//! use cqrs_runtime::middleware::HandlerExt;
//!
//! let handler = handler_fn(|_d: Delivery| async { Ok(()) })
//!     .with_circuit_breaker(CircuitBreakerSettings::new(5, Duration::from_secs(10)))
//!     .with_retry(RetryPolicy::exponential(3, Duration::from_millis(10), Duration::from_secs(1)));
//! # let _ = handler;
//! ```
//!
//! [`MessageHandler`]: cqrs_core::bus::MessageHandler
//! [`RetryPolicy`]: cqrs_core::bus::RetryPolicy

mod circuit_breaker;
mod retry;

pub use circuit_breaker::CircuitBreaker;
pub use retry::Retry;

use cqrs_core::bus::{CircuitBreakerSettings, MessageHandler, RetryPolicy};

/// Wraps handlers in middleware.
pub trait HandlerExt: MessageHandler + Sized {
    /// Retries failed calls under `policy`.
    fn with_retry(self, policy: RetryPolicy) -> Retry<Self> {
        Retry::new(self, policy)
    }

    /// Guards calls with a circuit breaker.
    fn with_circuit_breaker(self, settings: CircuitBreakerSettings) -> CircuitBreaker<Self> {
        CircuitBreaker::new(self, settings)
    }
}

impl<H: MessageHandler + Sized> HandlerExt for H {}
