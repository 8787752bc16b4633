//! The projection runner: keeps a read model current from the store-wide log.
//!
//! A runner reads [`EventStore::read_all`] from its checkpoint, feeds each event to its
//! [`Projection`], and commits the resulting model changes together with the new checkpoint
//! through [`ReadStore::commit`], under the epoch of a lease on the projection's name. The
//! commit is atomic, so a replay never applies an event twice; the lease epoch fences a
//! paused former leader, so of several instances of one projection exactly one commits.
//!
//! ```
//! use std::sync::Arc;
//! use cqrs_core::{BoxError, Change, Document, EventData, ExpectedVersion, RecordedEvent};
//! use cqrs_runtime::{Projection, ProjectionRunner, RunnerOptions};
//!
//! struct Titles;
//!
//! #[async_trait::async_trait]
//! impl Projection for Titles {
//!     fn name(&self) -> &str { "titles" }
//!     fn collections(&self) -> Vec<String> { vec!["titles".into()] }
//!     async fn handle(&self, e: &RecordedEvent) -> Result<Vec<Change>, BoxError> {
//!         let doc = Document::new(e.stream_id.as_str(), serde_json::json!({ "type": e.data.event_type }));
//!         Ok(vec![Change::Upsert { collection: "titles".into(), document: doc }])
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let stores = backend_memory::MemoryBackend::new().stores();
//! stores.events.append(&"book-1".parse()?, ExpectedVersion::NoStream,
//!     vec![EventData::json("Published", &serde_json::json!({}))?]).await?;
//! let runner = ProjectionRunner::new(&stores, Arc::new(Titles)).start();
//! runner.wait_until(|s| s.handled >= 1, std::time::Duration::from_secs(5)).await?;
//! assert!(stores.reads.get("titles", "book-1").await?.is_some());
//! runner.stop().await?;
//! # Ok(()) }
//! ```

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use cqrs_core::{
    Batch, BoxError, Change, Checkpoint, CheckpointStore, CheckpointUpdate, Clock, Error, EventFilter,
    EventStore, Lease, ReadStore, RecordedEvent, Result, Stores, SystemClock,
};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use crate::{
    task::{pause, Handle},
    RetryPolicy,
};

/// A read model fed from the store-wide log.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The projection's name: the key of its checkpoint and lease.
    fn name(&self) -> &str;

    /// Which events it sees (all by default).
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    /// The collections it writes: cleared by a rebuild.
    fn collections(&self) -> Vec<String>;

    /// Prepares the read store (typically `ensure_index` on its collections). Called each
    /// time the runner takes the lease, and after a rebuild cleared the collections, so it
    /// must be idempotent.
    ///
    /// # Errors
    /// Store errors; the runner reports them and tries again.
    async fn init(&self, _reads: &dyn ReadStore) -> Result<()> {
        Ok(())
    }

    /// Turns one event into model changes. It should depend only on the event (and data it
    /// owns), so a rebuild gives the same model. The changes of a whole batch are committed
    /// together at its end: a handler that reads its own model sees it as of the last
    /// commit, not the changes of earlier events of the same batch, so such a projection
    /// runs with [`RunnerOptions::batch_size`] 1. An error is retried under the runner's
    /// [`RetryPolicy`]; once attempts run out the runner stops as [`RunnerState::Faulted`]
    /// with its checkpoint before this event.
    async fn handle(&self, event: &RecordedEvent) -> std::result::Result<Vec<Change>, BoxError>;
}

/// Where a runner is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunnerState {
    /// Not running (before start, after stop).
    Stopped,
    /// Waiting for the lease another instance holds.
    Standby,
    /// Holding the lease, behind the head of the log.
    CatchingUp,
    /// Holding the lease, caught up, waiting for new events.
    Running,
    /// Clearing its model and checkpoint before replaying from the start.
    Rebuilding,
    /// Stopped by a handler error that outlived its retries (see [`RunnerStatus::last_error`]).
    Faulted,
}

/// What a runner reports: its state and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerStatus {
    /// The state.
    pub state: RunnerState,
    /// Events handled and committed.
    pub handled: u64,
    /// Commits made.
    pub commits: u64,
    /// Handler calls retried.
    pub retries: u64,
    /// Errors seen (handler, store, lost leases).
    pub errors: u64,
    /// The last committed checkpoint.
    pub checkpoint: Checkpoint,
    /// Milliseconds between the last handled event's `recorded_at` and its commit.
    pub lag_ms: u64,
    /// The epoch of the lease held, if any.
    pub lease_epoch: Option<u64>,
    /// The last error, as text.
    pub last_error: Option<String>,
}

impl RunnerStatus {
    fn new() -> Self {
        RunnerStatus {
            state: RunnerState::Stopped,
            handled: 0,
            commits: 0,
            retries: 0,
            errors: 0,
            checkpoint: Checkpoint::origin(),
            lag_ms: 0,
            lease_epoch: None,
            last_error: None,
        }
    }
}

/// How a runner works.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    owner: String,
    lease_ttl: Duration,
    batch_size: usize,
    idle_poll: Duration,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            owner: format!("runner-{}", uuid::Uuid::now_v7()),
            lease_ttl: Duration::from_secs(10),
            batch_size: 500,
            idle_poll: Duration::from_millis(100),
            retry: RetryPolicy::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl RunnerOptions {
    /// Defaults: a unique owner name, a 10 s lease, batches of 500, a 100 ms idle poll, the
    /// default retry policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lease owner name (unique per instance).
    #[must_use]
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// How long the lease lasts unless renewed; it is renewed every third of it.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Events read and committed per batch (at least 1).
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// The pause between reads once caught up (and between lease attempts in standby).
    #[must_use]
    pub fn idle_poll(mut self, d: Duration) -> Self {
        self.idle_poll = d;
        self
    }

    /// The retry policy for handler errors.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The clock lag is measured with.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Runs one [`Projection`] over one backend's stores.
pub struct ProjectionRunner {
    events: Arc<dyn EventStore>,
    reads: Arc<dyn ReadStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    projection: Arc<dyn Projection>,
    options: RunnerOptions,
}

impl fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projection", &self.projection.name())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ProjectionRunner {
    /// A runner of `projection` over `stores` with default options.
    pub fn new(stores: &Stores, projection: Arc<dyn Projection>) -> Self {
        ProjectionRunner {
            events: stores.events.clone(),
            reads: stores.reads.clone(),
            checkpoints: stores.checkpoints.clone(),
            projection,
            options: RunnerOptions::default(),
        }
    }

    /// Replaces the options.
    #[must_use]
    pub fn options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// Starts the runner on the current tokio runtime: it takes the lease (or stands by
    /// until it can), then catches up from its checkpoint and follows the log.
    pub fn start(self) -> RunnerHandle {
        self.spawn(false)
    }

    /// Starts the runner as [`ProjectionRunner::start`] does, but once it holds the lease it
    /// first clears the projection's collections and checkpoint, then replays from the start.
    pub fn rebuild(self) -> RunnerHandle {
        self.spawn(true)
    }

    fn spawn(self, rebuild: bool) -> RunnerHandle {
        let name = self.projection.name().to_owned();
        Handle::spawn("projection", name, RunnerStatus::new(), move |status, stop| {
            Worker {
                runner: self,
                status,
                stop,
                rebuild,
                ahead: None,
            }
            .run()
        })
    }
}

/// A started runner: watch it, wait on it, stop it.
pub type RunnerHandle = Handle<RunnerStatus>;

impl Handle<RunnerStatus> {
    /// The current state.
    pub fn state(&self) -> RunnerState {
        self.status().state
    }
}

/// Why the inner loop gave up its lease.
enum Exit {
    Stop,
    LeaseLost,
    Faulted,
}

struct Worker {
    runner: ProjectionRunner,
    status: watch::Sender<RunnerStatus>,
    stop: watch::Receiver<bool>,
    rebuild: bool,
    /// The next page, read while the current one is handled and committed (reading the log
    /// and writing the model overlap instead of taking turns); keyed by where it starts.
    ahead: Option<(Checkpoint, JoinHandle<Result<Batch>>)>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.drop_ahead();
    }
}

impl Worker {
    fn name(&self) -> &str {
        self.runner.projection.name()
    }

    fn set(&self, f: impl FnOnce(&mut RunnerStatus)) {
        self.status.send_modify(f);
    }

    fn note_error(&self, e: &dyn fmt::Display) {
        let text = e.to_string();
        tracing::warn!(projection = %self.name(), error = %text, "projection runner error");
        metrics::counter!("cqrs_projection_errors_total", "projection" => self.name().to_owned())
            .increment(1);
        self.set(|s| {
            s.errors += 1;
            s.last_error = Some(text);
        });
    }

    /// Sleeps `d` unless a stop is requested first; returns true when stopping.
    async fn pause(&mut self, d: Duration) -> bool {
        pause(&mut self.stop, d).await
    }

    async fn run(mut self) {
        loop {
            let Some(lease) = self.acquire().await else { break };
            self.set(|s| s.lease_epoch = Some(lease.epoch));
            let exit = self.lead(lease).await;
            self.set(|s| s.lease_epoch = None);
            match exit {
                Exit::Stop => break,
                Exit::Faulted => {
                    self.set(|s| s.state = RunnerState::Faulted);
                    return;
                }
                Exit::LeaseLost => {
                    // Whatever took the lease or broke the store, do not hammer it.
                    let idle = self.runner.options.idle_poll;
                    if self.pause(idle).await {
                        break;
                    }
                }
            }
        }
        self.set(|s| s.state = RunnerState::Stopped);
    }

    /// Takes the lease, standing by while another instance holds it; `None` when stopping.
    async fn acquire(&mut self) -> Option<Lease> {
        let (name, owner, ttl, idle) = (
            self.name().to_owned(),
            self.runner.options.owner.clone(),
            self.runner.options.lease_ttl,
            self.runner.options.idle_poll,
        );
        loop {
            if *self.stop.borrow() {
                return None;
            }
            match self.runner.checkpoints.acquire(&name, &owner, ttl).await {
                Ok(lease) => return Some(lease),
                Err(Error::LeaseHeld { .. }) => self.set(|s| s.state = RunnerState::Standby),
                Err(e) => self.note_error(&e),
            }
            if self.pause(idle).await {
                return None;
            }
        }
    }

    /// Works while holding `lease`.
    async fn lead(&mut self, mut lease: Lease) -> Exit {
        // A page read ahead under an earlier lease may predate a reset or another leader.
        self.drop_ahead();
        let ttl = self.runner.options.lease_ttl;
        let mut renewed = Instant::now();
        if self.rebuild {
            self.set(|s| s.state = RunnerState::Rebuilding);
            if let Err(e) = self.clear(&lease).await {
                self.note_error(&e);
                return if matches!(e, Error::Fenced { .. }) {
                    Exit::LeaseLost
                } else {
                    Exit::Faulted
                };
            }
            self.rebuild = false;
        }
        if let Err(e) = self.runner.projection.init(&*self.runner.reads).await {
            self.note_error(&e);
            return self.release(&lease, Exit::LeaseLost).await;
        }
        let mut cp = match self.runner.checkpoints.load(self.name()).await {
            Ok(cp) => cp.unwrap_or_default(),
            Err(e) => {
                self.note_error(&e);
                return self.release(&lease, Exit::LeaseLost).await;
            }
        };
        self.set(|s| s.checkpoint = cp.clone());
        loop {
            if *self.stop.borrow() {
                return self.release(&lease, Exit::Stop).await;
            }
            if renewed.elapsed() >= ttl / 3 {
                match self.runner.checkpoints.renew(&lease, ttl).await {
                    Ok(l) => {
                        lease = l;
                        renewed = Instant::now();
                    }
                    Err(e) => {
                        self.note_error(&e);
                        return Exit::LeaseLost;
                    }
                }
            }
            match self.step(&lease, &mut cp).await {
                Ok(true) => {
                    if self.pause(self.runner.options.idle_poll).await {
                        return self.release(&lease, Exit::Stop).await;
                    }
                }
                Ok(false) => {}
                // A faulted runner gives its lease up so another instance can carry on.
                Err(Exit::Faulted) => return self.release(&lease, Exit::Faulted).await,
                Err(exit) => return exit,
            }
        }
    }

    fn drop_ahead(&mut self) {
        if let Some((_, read)) = self.ahead.take() {
            read.abort();
        }
    }

    /// The page at `cp`: the one read ahead when it starts there, else a fresh read.
    async fn read_page(&mut self, cp: &Checkpoint) -> Result<Batch> {
        match self.ahead.take() {
            Some((from, read)) if from == *cp => match read.await {
                Ok(page) => page,
                Err(e) => Err(Error::backend("runtime", e)),
            },
            other => {
                if let Some((_, read)) = other {
                    read.abort();
                }
                let filter = self.runner.projection.filter();
                self.runner
                    .events
                    .read_all(cp, self.runner.options.batch_size, &filter)
                    .await
            }
        }
    }

    /// Starts reading the page after `batch` while it is handled and committed. Reading
    /// ahead is safe: the log does not depend on the model, and a page read for a
    /// checkpoint that is never committed is dropped.
    fn read_ahead(&mut self, batch: &Batch) {
        self.drop_ahead();
        if batch.caught_up {
            return;
        }
        let (events, from, max, filter) = (
            self.runner.events.clone(),
            batch.next.clone(),
            self.runner.options.batch_size,
            self.runner.projection.filter(),
        );
        let at = from.clone();
        let read = tokio::spawn(async move { events.read_all(&from, max, &filter).await });
        self.ahead = Some((at, read));
    }

    /// Reads, handles and commits one batch. `Ok(true)` when caught up.
    async fn step(&mut self, lease: &Lease, cp: &mut Checkpoint) -> std::result::Result<bool, Exit> {
        let batch = match self.read_page(cp).await {
            Ok(b) => b,
            Err(e) => {
                self.note_error(&e);
                // A foreign checkpoint or lost data needs an operator (rebuild), not a retry.
                if matches!(e, Error::CheckpointMismatch { .. } | Error::DataLoss { .. }) {
                    return Err(Exit::Faulted);
                }
                return Ok(true);
            }
        };
        crate::task::report_quarantined("projection", self.name(), &batch);
        self.read_ahead(&batch);
        let mut changes = Vec::new();
        let mut handled_to = cp.clone();
        let mut handled = 0u64;
        let mut last_recorded = None;
        for event in &batch.events {
            match self.handle(event).await {
                Ok(mut c) => {
                    changes.append(&mut c);
                    handled_to.advance(&event.position);
                    handled += 1;
                    last_recorded = Some(event.recorded_at);
                }
                Err(()) => {
                    // Commit what was handled before the failing event, then stop: the
                    // checkpoint never passes an event that was not applied.
                    if handled > 0 {
                        let _ = self
                            .commit(lease, changes, &handled_to, handled, last_recorded)
                            .await;
                    }
                    return Err(Exit::Faulted);
                }
            }
        }
        if batch.next != *cp {
            self.commit(lease, changes, &batch.next, handled, last_recorded)
                .await?;
            *cp = batch.next;
        }
        let state = if batch.caught_up {
            RunnerState::Running
        } else {
            RunnerState::CatchingUp
        };
        self.set(|s| s.state = state);
        Ok(batch.caught_up)
    }

    /// Calls the handler under the retry policy; `Err(())` once attempts run out.
    async fn handle(&mut self, event: &RecordedEvent) -> std::result::Result<Vec<Change>, ()> {
        let policy = self.runner.options.retry;
        let mut attempt = 1;
        loop {
            match self.runner.projection.handle(event).await {
                Ok(changes) => return Ok(changes),
                Err(e) => {
                    self.note_error(&format!(
                        "handler failed on {}@{}: {e}",
                        event.stream_id, event.version
                    ));
                    if attempt >= policy.max_attempts.max(1) {
                        return Err(());
                    }
                    attempt += 1;
                    self.set(|s| s.retries += 1);
                    if self.pause(policy.backoff(attempt)).await {
                        return Err(());
                    }
                }
            }
        }
    }

    async fn commit(
        &mut self,
        lease: &Lease,
        changes: Vec<Change>,
        checkpoint: &Checkpoint,
        handled: u64,
        last_recorded: Option<cqrs_core::Timestamp>,
    ) -> std::result::Result<(), Exit> {
        let update = CheckpointUpdate {
            name: self.name().to_owned(),
            checkpoint: checkpoint.clone(),
            lease_epoch: lease.epoch,
        };
        match self.runner.reads.commit(changes, update).await {
            Ok(()) => {
                let lag = last_recorded.map_or(0, |t| self.runner.options.clock.now().millis_since(t));
                metrics::counter!("cqrs_projection_events_handled_total", "projection" => self.name().to_owned())
                    .increment(handled);
                metrics::gauge!("cqrs_projection_lag_ms", "projection" => self.name().to_owned())
                    .set(lag as f64);
                self.set(|s| {
                    s.handled += handled;
                    s.commits += 1;
                    s.checkpoint = checkpoint.clone();
                    if last_recorded.is_some() {
                        s.lag_ms = lag;
                    }
                });
                Ok(())
            }
            Err(e) => {
                self.note_error(&e);
                Err(Exit::LeaseLost)
            }
        }
    }

    /// Clears the model and the checkpoint under the lease (rebuild).
    async fn clear(&self, lease: &Lease) -> Result<()> {
        self.runner.checkpoints.reset(self.name(), lease.epoch).await?;
        for collection in self.runner.projection.collections() {
            self.runner.reads.drop_collection(&collection).await?;
        }
        self.set(|s| s.checkpoint = Checkpoint::origin());
        Ok(())
    }

    async fn release(&self, lease: &Lease, exit: Exit) -> Exit {
        if let Err(e) = self.runner.checkpoints.release(lease).await {
            self.note_error(&e);
        }
        exit
    }
}
