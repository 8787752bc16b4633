//! The circuit breaker middleware over core's [`Breaker`] state machine.

use std::{
    fmt,
    sync::{Mutex, PoisonError},
};

use async_trait::async_trait;
use cqrs_core::{
    bus::{Breaker, BreakerState, CircuitBreakerSettings, Delivery, HandlerError, MessageHandler},
    Timestamp,
};
use tokio::time::Instant;

/// Calls the inner handler unless the breaker is open.
///
/// After `failure_threshold` consecutive failures the breaker opens: calls fail at once
/// with a retryable error and the inner handler is not called. After `open_for` one trial
/// call goes through (half-open); its success closes the breaker, its failure reopens it.
/// Time comes from tokio's clock.
pub struct CircuitBreaker<H> {
    inner: H,
    breaker: Mutex<Breaker>,
    epoch: Instant,
}

impl<H> CircuitBreaker<H> {
    /// Wraps `inner` in a closed breaker.
    pub fn new(inner: H, settings: CircuitBreakerSettings) -> Self {
        CircuitBreaker {
            inner,
            breaker: Mutex::new(Breaker::new(settings)),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> Timestamp {
        let ms = i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX);
        Timestamp::from_millis(ms)
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        let now = self.now();
        self.breaker().state(now)
    }
}

impl<H> fmt::Debug for CircuitBreaker<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("breaker", &*self.breaker())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<H: MessageHandler> MessageHandler for CircuitBreaker<H> {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let now = self.now();
        if let Err(wait) = self.breaker().try_acquire(now) {
            return Err(HandlerError::retryable(format!(
                "circuit breaker open; next trial in {} ms",
                wait.as_millis()
            )));
        }
        let result = self.inner.handle(delivery).await;
        let now = self.now();
        match &result {
            Ok(()) => self.breaker().on_success(),
            Err(_) => self.breaker().on_failure(now),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicBool, AtomicU32, Ordering},
            Arc,
        },
        time::Duration,
    };

    use cqrs_core::{ContentType, Message};

    use super::*;

    #[derive(Default)]
    struct Flaky {
        failing: AtomicBool,
        calls: AtomicU32,
    }

    #[async_trait]
    impl MessageHandler for Flaky {
        async fn handle(&self, _d: &Delivery) -> Result<(), HandlerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                Err(HandlerError::retryable("down"))
            } else {
                Ok(())
            }
        }
    }

    fn delivery() -> Delivery {
        Delivery {
            message: Message::new("k", ContentType::Json, "{}"),
            topic: "t".into(),
            group: "g".into(),
            consumer: "c".into(),
            partition: 0,
            entry: "p0-0".into(),
            attempt: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_rejects_fast_half_opens_and_closes() {
        let inner = Arc::new(Flaky::default());
        inner.failing.store(true, Ordering::SeqCst);
        let cb = CircuitBreaker::new(
            inner.clone(),
            CircuitBreakerSettings::new(3, Duration::from_secs(10)),
        );
        let d = delivery();
        for _ in 0..3 {
            assert!(cb.handle(&d).await.is_err());
        }
        assert_eq!(cb.state(), BreakerState::Open);
        let rejected = cb.handle(&d).await.unwrap_err();
        assert!(rejected.is_retryable(), "{rejected}");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3, "not called while open");

        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(cb.handle(&d).await.is_err());
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3, "still open after 9 s");

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cb.state(), BreakerState::HalfOpen);
        assert!(cb.handle(&d).await.is_err(), "the trial fails");
        assert_eq!(inner.calls.load(Ordering::SeqCst), 4);
        assert_eq!(cb.state(), BreakerState::Open, "a failed trial reopens");

        inner.failing.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(10)).await;
        cb.handle(&d).await.unwrap();
        assert_eq!(cb.state(), BreakerState::Closed);
        cb.handle(&d).await.unwrap();
        assert_eq!(inner.calls.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn composes_with_retry() {
        use crate::middleware::HandlerExt;
        use cqrs_core::bus::RetryPolicy;

        let inner = Arc::new(Flaky::default());
        inner.failing.store(true, Ordering::SeqCst);
        let h = inner
            .clone()
            .with_circuit_breaker(CircuitBreakerSettings::new(2, Duration::from_millis(500)))
            .with_retry(RetryPolicy::fixed(4, Duration::from_millis(100)));
        assert!(h.handle(&delivery()).await.is_err());
        // Two real failures open the breaker; the two later attempts are rejected fast.
        assert_eq!(inner.calls.load(Ordering::SeqCst), 2);
    }
}
