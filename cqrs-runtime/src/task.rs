//! What the projection runner and the relay share: a handle on a background task that
//! publishes its status, and a pause a stop request cuts short.

use std::{fmt, time::Duration};

use cqrs_core::{Error, Result};
use tokio::{sync::watch, task::JoinHandle};

/// A started background worker (a [`crate::ProjectionRunner`] or a [`crate::Relay`]):
/// watch its status, wait on it, stop it.
#[derive(Debug)]
pub struct Handle<S> {
    kind: &'static str,
    name: String,
    status: watch::Receiver<S>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl<S: Clone + fmt::Debug> Handle<S> {
    /// Spawns `work(status, stop)` on the current tokio runtime. `kind` and `name` name it
    /// in errors ("projection titles").
    pub(crate) fn spawn<F, Fut>(kind: &'static str, name: String, initial: S, work: F) -> Self
    where
        F: FnOnce(watch::Sender<S>, watch::Receiver<bool>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (status_tx, status_rx) = watch::channel(initial);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(work(status_tx, stop_rx));
        Handle {
            kind,
            name,
            status: status_rx,
            stop: stop_tx,
            task,
        }
    }

    /// The worker's name (the projection's or the relay's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current status.
    pub fn status(&self) -> S {
        self.status.borrow().clone()
    }

    /// Waits until `condition` holds for the status, or `timeout` passes.
    ///
    /// # Errors
    /// [`Error::Timeout`] naming the worker and its last status when the timeout passes
    /// first (a wait of the caller's that ran out, not an outage: it is not retryable);
    /// [`Error::Backend`] when the worker's task ended before the condition held (it stopped
    /// or panicked, so waiting longer cannot help; its status says why).
    pub async fn wait_until(&self, condition: impl Fn(&S) -> bool, timeout: Duration) -> Result<S> {
        let mut rx = self.status.clone();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|s| condition(s))).await;
        match waited {
            Ok(Ok(status)) => Ok(status.clone()),
            Ok(Err(_)) => Err(Error::backend(
                "runtime",
                format!(
                    "{} {}: its task ended before the condition held; last status {:?}",
                    self.kind,
                    self.name,
                    self.status()
                ),
            )),
            Err(_) => Err(Error::timeout(
                format!(
                    "{} {}: condition not reached; status {:?}",
                    self.kind,
                    self.name,
                    self.status()
                ),
                timeout,
            )),
        }
    }

    /// Stops the worker: the batch in hand is finished (committed or published and
    /// checkpointed) or abandoned before its write, the lease is released, and the final
    /// status is returned.
    ///
    /// # Errors
    /// [`Error::Backend`] if the worker's task panicked.
    pub async fn stop(self) -> Result<S> {
        let _ = self.stop.send(true);
        self.task.await.map_err(|e| Error::backend("runtime", e))?;
        Ok(self.status.borrow().clone())
    }

    /// Stops at once as a crashed process would: nothing is released; another instance
    /// takes over once the lease expires and redoes what was not checkpointed.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Sleeps `d` unless a stop is requested first; returns true when stopping.
pub(crate) async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Counts and logs the log entries a page skipped because an operator quarantined them, so
/// the gap they leave in a reader's output is never silent.
pub(crate) fn report_quarantined(reader: &'static str, name: &str, batch: &cqrs_core::Batch) {
    if batch.quarantined.is_empty() {
        return;
    }
    metrics::counter!("cqrs_log_quarantined_skipped_total", "reader" => reader, "name" => name.to_owned())
        .increment(batch.quarantined.len() as u64);
    for position in &batch.quarantined {
        tracing::warn!(reader, name, %position, "skipped a quarantined log entry (Admin::quarantine)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait that ran out is a timeout naming the worker, not an outage a caller retries.
    #[tokio::test]
    async fn wait_until_that_runs_out_is_a_timeout_naming_the_worker() {
        let handle = Handle::spawn(
            "projection",
            "titles".into(),
            0u32,
            |status, mut stop| async move {
                // Keeps the status sender alive: only a stop ends this worker.
                let _status = status;
                let _ = stop.changed().await;
            },
        );
        let err = handle
            .wait_until(|n| *n >= 1, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Timeout { after, .. } if after == Duration::from_millis(20)),
            "{err:?}"
        );
        assert!(!err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("projection titles") && text.contains("status 0"),
            "{text}"
        );
        handle.stop().await.unwrap();
    }

    /// A worker whose task ended can never reach the condition: not retryable either.
    #[tokio::test]
    async fn wait_until_on_an_ended_task_is_not_retryable() {
        let handle = Handle::spawn("relay", "orders".into(), 0u32, |_status, _stop| async move {});
        let err = handle
            .wait_until(|n| *n >= 1, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("relay orders: its task ended"), "{err}");
    }
}
