//! Retry in place with backoff.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use cqrs_core::bus::{Delivery, HandlerError, MessageHandler, RetryPolicy};

type Predicate = Arc<dyn Fn(&HandlerError) -> bool + Send + Sync>;

/// Calls the inner handler again after a retryable failure, waiting
/// [`RetryPolicy::backoff`] between attempts (nothing before the first), until it succeeds,
/// the attempts or `max_elapsed` run out, the error is permanent, or the should-retry
/// predicate says no. Returns the last error.
pub struct Retry<H> {
    inner: H,
    policy: RetryPolicy,
    should_retry: Option<Predicate>,
}

impl<H> Retry<H> {
    /// Wraps `inner`.
    pub fn new(inner: H, policy: RetryPolicy) -> Self {
        Retry {
            inner,
            policy,
            should_retry: None,
        }
    }

    /// Retries only errors for which `predicate` is true (and which are retryable).
    #[must_use]
    pub fn should_retry(mut self, predicate: impl Fn(&HandlerError) -> bool + Send + Sync + 'static) -> Self {
        self.should_retry = Some(Arc::new(predicate));
        self
    }

    /// The policy.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }
}

impl<H> fmt::Debug for Retry<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("policy", &self.policy)
            .field("should_retry", &self.should_retry.is_some())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<H: MessageHandler> MessageHandler for Retry<H> {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let started = tokio::time::Instant::now();
        let mut attempt = 1u32;
        loop {
            let err = match self.inner.handle(delivery).await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            let wanted = err.is_retryable() && self.should_retry.as_ref().is_none_or(|p| p(&err));
            let next = if wanted {
                self.policy.next_delay(attempt, started.elapsed())
            } else {
                None
            };
            let Some(wait) = next else {
                return Err(err);
            };
            tracing::debug!(attempt, ?wait, error = %err, "handler failed; retrying");
            tokio::time::sleep(wait).await;
            attempt = attempt.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use cqrs_core::{bus::HandlerErrorKind, ContentType, Message};
    use tokio::time::Instant;

    use super::*;

    /// Fails with `errors` in turn, then succeeds; records when each call happened.
    struct Script {
        errors: Mutex<Vec<HandlerError>>,
        calls: Mutex<Vec<Instant>>,
    }

    impl Script {
        fn new(errors: Vec<HandlerError>) -> Arc<Self> {
            Arc::new(Script {
                errors: Mutex::new(errors.into_iter().rev().collect()),
                calls: Mutex::new(Vec::new()),
            })
        }

        fn gaps(&self) -> Vec<u128> {
            let calls = self.calls.lock().unwrap();
            calls.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect()
        }
    }

    #[async_trait]
    impl MessageHandler for Script {
        async fn handle(&self, _d: &Delivery) -> Result<(), HandlerError> {
            self.calls.lock().unwrap().push(Instant::now());
            match self.errors.lock().unwrap().pop() {
                Some(e) => Err(e),
                None => Ok(()),
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

    fn fail(n: usize) -> Vec<HandlerError> {
        (0..n)
            .map(|i| HandlerError::retryable(format!("boom {i}")))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn no_delay_first_then_exponential_capped() {
        let inner = Script::new(fail(5));
        let started = Instant::now();
        let policy = RetryPolicy::exponential(10, Duration::from_millis(100), Duration::from_millis(300));
        Retry::new(inner.clone(), policy)
            .handle(&delivery())
            .await
            .unwrap();
        let first = inner.calls.lock().unwrap()[0];
        assert_eq!(
            first - started,
            Duration::ZERO,
            "no delay before the first attempt"
        );
        assert_eq!(inner.gaps(), vec![100, 200, 300, 300, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_with_the_last_error() {
        let inner = Script::new(fail(10));
        let err = Retry::new(inner.clone(), RetryPolicy::fixed(3, Duration::from_millis(10)))
            .handle(&delivery())
            .await
            .unwrap_err();
        assert_eq!(inner.calls.lock().unwrap().len(), 3);
        assert_eq!(err.message(), "boom 2");
    }

    #[tokio::test(start_paused = true)]
    async fn max_elapsed_stops_early() {
        let inner = Script::new(fail(10));
        let policy =
            RetryPolicy::fixed(100, Duration::from_millis(40)).with_max_elapsed(Duration::from_millis(100));
        Retry::new(inner.clone(), policy)
            .handle(&delivery())
            .await
            .unwrap_err();
        // Calls at 0, 40, 80; a fourth at 120 would pass the limit.
        assert_eq!(inner.calls.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_and_the_predicate_stop_retries() {
        let inner = Script::new(vec![HandlerError::permanent("no")]);
        let err = Retry::new(inner.clone(), RetryPolicy::fixed(5, Duration::from_millis(1)))
            .handle(&delivery())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), HandlerErrorKind::Permanent);
        assert_eq!(inner.calls.lock().unwrap().len(), 1);

        let inner = Script::new(vec![
            HandlerError::retryable("transient"),
            HandlerError::retryable("fatal"),
        ]);
        let err = Retry::new(inner.clone(), RetryPolicy::fixed(5, Duration::from_millis(1)))
            .should_retry(|e| e.message() != "fatal")
            .handle(&delivery())
            .await
            .unwrap_err();
        assert_eq!(err.message(), "fatal");
        assert_eq!(inner.calls.lock().unwrap().len(), 2);
    }
}
