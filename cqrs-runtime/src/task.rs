//! What the projection runner and the relay share: a handle on a background task that
//! publishes its status, and a pause a stop request cuts short.

use std::{fmt, time::Duration};

use cqrs_core::{Error, Outcome, Result};
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
    /// [`Error::Unavailable`] naming the worker when the timeout passes first, or when its
    /// task ended.
    pub async fn wait_until(&self, condition: impl Fn(&S) -> bool, timeout: Duration) -> Result<S> {
        let mut rx = self.status.clone();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|s| condition(s))).await;
        match waited {
            Ok(Ok(status)) => Ok(status.clone()),
            Ok(Err(_)) => Err(Error::unavailable(
                Outcome::NotSent,
                format!("{} {}: its task ended", self.kind, self.name),
            )),
            Err(_) => Err(Error::unavailable(
                Outcome::NotSent,
                format!(
                    "{} {}: condition not reached within {timeout:?}; status {:?}",
                    self.kind,
                    self.name,
                    self.status()
                ),
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
