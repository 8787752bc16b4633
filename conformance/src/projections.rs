//! Behaviours: the projection runner over the backend (`docs/CONFORMANCE.md` items 64-68, 70, and the
//! runner guarantees of `docs/DESIGN.md` section 3): every event applied once, resume after a
//! restart without re-handling, rebuild to the same model, a failing handler never lets the
//! checkpoint pass its event, one active instance, a paused former leader fenced.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use cqrs_core::{BoxError, Change, Document, EventFilter, ExpectedVersion, Query, RecordedEvent, StreamId};
use cqrs_runtime::{Projection, ProjectionRunner, RetryPolicy, RunnerHandle, RunnerOptions, RunnerState};
use serde_json::json;

use crate::{ensure, ensure_eq, events, Ctx, Failure, Harness, Outcome, Verdict};

/// How long a behaviour waits for a runner to reach a state.
const WAIT: Duration = Duration::from_secs(20);

/// A projection writing one document per event (`<stream>#<version>`), counting handler
/// calls per event, optionally failing on chosen events.
struct Recorder {
    name: String,
    collection: String,
    prefix: String,
    calls: Mutex<BTreeMap<String, u64>>,
    /// Event key -> number of calls that fail before one succeeds (`u64::MAX`: always).
    failures: Mutex<BTreeMap<String, u64>>,
    /// Calls for an event key in here wait until the gate opens.
    gate: Option<(String, Arc<tokio::sync::Notify>)>,
    total: AtomicU64,
}

impl Recorder {
    fn new(h: &dyn Harness, prefix: &str) -> Self {
        Recorder {
            name: h.namespace().name("proj"),
            collection: h.namespace().name("model"),
            prefix: prefix.to_owned(),
            calls: Mutex::new(BTreeMap::new()),
            failures: Mutex::new(BTreeMap::new()),
            gate: None,
            total: AtomicU64::new(0),
        }
    }

    fn key(stream: &StreamId, version: u64) -> String {
        format!("{stream}#{version}")
    }

    fn fail(self, stream: &StreamId, version: u64, times: u64) -> Self {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Self::key(stream, version), times);
        self
    }

    fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl Projection for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> EventFilter {
        EventFilter::stream_prefix(self.prefix.clone())
    }

    fn collections(&self) -> Vec<String> {
        vec![self.collection.clone()]
    }

    async fn handle(&self, e: &RecordedEvent) -> Result<Vec<Change>, BoxError> {
        let key = Self::key(&e.stream_id, e.version);
        if let Some((gated, notify)) = &self.gate {
            if *gated == key {
                notify.notified().await;
            }
        }
        self.total.fetch_add(1, Ordering::SeqCst);
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_insert(0) += 1;
        {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(left) = failures.get_mut(&key) {
                if *left > 0 {
                    if *left != u64::MAX {
                        *left -= 1;
                    }
                    return Err(format!("injected failure on {key}").into());
                }
            }
        }
        let body = json!({ "stream": e.stream_id.as_str(), "version": e.version, "type": e.data.event_type });
        Ok(vec![Change::Upsert {
            collection: self.collection.clone(),
            document: Document::new(key, body),
        }])
    }
}

fn options(h: &dyn Harness, owner: &str) -> RunnerOptions {
    RunnerOptions::new()
        .owner(h.namespace().name(owner))
        .batch_size(7)
        .idle_poll(Duration::from_millis(5))
        .retry(RetryPolicy::exponential(
            3,
            Duration::from_millis(1),
            Duration::from_millis(5),
        ))
}

/// Appends `count` events to each of `streams` (named `<label>-<i>` under the prefix).
async fn seed(h: &dyn Harness, prefix: &str, streams: usize, count: u64) -> Result<Vec<StreamId>, Failure> {
    let mut ids = Vec::new();
    for i in 0..streams {
        let s = h.namespace().stream(&format!("{prefix}{i}"));
        h.stores()
            .events
            .append(&s, ExpectedVersion::Any, events(0, count))
            .await
            .ctx("seed")?;
        ids.push(s);
    }
    Ok(ids)
}

async fn model_ids(h: &dyn Harness, collection: &str) -> Result<Vec<String>, Failure> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = h
            .stores()
            .reads
            .query(collection, &Query::new().limit(100).after(after))
            .await
            .ctx("query model")?;
        out.extend(page.documents.into_iter().map(|d| d.id));
        match page.next {
            Some(c) => after = Some(c),
            None => return Ok(out),
        }
    }
}

async fn wait_handled(r: &RunnerHandle, n: u64) -> Result<(), Failure> {
    r.wait_until(|s| s.handled >= n && s.state == RunnerState::Running, WAIT)
        .await
        .map(|_| ())
        .map_err(|e| Failure(format!("waiting for {n} handled events: {e}")))
}

fn require_log(h: &dyn Harness) -> Option<Outcome> {
    (!h.stores().events.capabilities().has_store_wide_log()).then(|| {
        Ok(Verdict::NotRun(
            "needs a store-wide log (Capabilities::partitions > 0)".into(),
        ))
    })
}

/// Every matching event is applied exactly once and the checkpoint is committed (64, 65).
pub async fn runner_applies_every_event_once(h: Arc<dyn Harness>) -> Outcome {
    if let Some(v) = require_log(&*h) {
        return v;
    }
    seed(&*h, "proj-", 3, 10).await?;
    seed(&*h, "other-", 1, 5).await?;
    let p = Arc::new(Recorder::new(&*h, "proj-"));
    let r = ProjectionRunner::new(h.stores(), p.clone())
        .options(options(&*h, "a"))
        .start();
    wait_handled(&r, 30).await?;
    let status = r.stop().await.ctx("stop")?;
    ensure_eq!(status.handled, 30, "events handled");
    ensure!(
        p.calls().values().all(|&n| n == 1),
        "each event handled once: {:?}",
        p.calls()
    );
    ensure_eq!(
        model_ids(&*h, &p.collection).await?.len(),
        30,
        "documents in the model"
    );
    let saved = h
        .stores()
        .checkpoints
        .load(&p.name)
        .await
        .ctx("load checkpoint")?;
    ensure_eq!(
        saved,
        Some(status.checkpoint),
        "the committed checkpoint is the one saved"
    );
    Ok(Verdict::Passed)
}

/// A restarted runner resumes from its checkpoint and handles nothing before it again (66).
pub async fn restart_resumes_without_rehandling(h: Arc<dyn Harness>) -> Outcome {
    if let Some(v) = require_log(&*h) {
        return v;
    }
    let streams = seed(&*h, "proj-", 2, 10).await?;
    let first = Arc::new(Recorder::new(&*h, "proj-"));
    let r = ProjectionRunner::new(h.stores(), first.clone())
        .options(options(&*h, "a"))
        .start();
    wait_handled(&r, 20).await?;
    r.stop().await.ctx("stop")?;
    for s in &streams {
        h.stores()
            .events
            .append(s, ExpectedVersion::Exact(10), events(10, 5))
            .await
            .ctx("append more")?;
    }
    let second = Arc::new(Recorder::new(&*h, "proj-"));
    let r = ProjectionRunner::new(h.stores(), second.clone())
        .options(options(&*h, "b"))
        .start();
    wait_handled(&r, 10).await?;
    r.stop().await.ctx("stop")?;
    ensure_eq!(
        second.total.load(Ordering::SeqCst),
        10,
        "events handled after the restart"
    );
    ensure!(
        second.calls().keys().all(|k| !k.ends_with("#1")),
        "nothing before the checkpoint re-handled"
    );
    ensure_eq!(
        model_ids(&*h, &first.collection).await?.len(),
        30,
        "documents in the model"
    );
    Ok(Verdict::Passed)
}

/// With the checkpoint already at the end, a runner handles nothing (67).
pub async fn checkpoint_at_end_handles_nothing(h: Arc<dyn Harness>) -> Outcome {
    if let Some(v) = require_log(&*h) {
        return v;
    }
    seed(&*h, "proj-", 2, 6).await?;
    let first = Arc::new(Recorder::new(&*h, "proj-"));
    let r = ProjectionRunner::new(h.stores(), first)
        .options(options(&*h, "a"))
        .start();
    wait_handled(&r, 12).await?;
    r.stop().await.ctx("stop")?;
    let again = Arc::new(Recorder::new(&*h, "proj-"));
    let r = ProjectionRunner::new(h.stores(), again.clone())
        .options(options(&*h, "b"))
        .start();
    r.wait_until(|s| s.state == RunnerState::Running, WAIT)
        .await
        .ctx("caught up")?;
    let status = r.stop().await.ctx("stop")?;
    ensure_eq!(
        (status.handled, again.total.load(Ordering::SeqCst)),
        (0, 0),
        "events handled from the end"
    );
    Ok(Verdict::Passed)
}

/// A rebuild clears model and checkpoint and replays to the same model (70).
pub async fn rebuild_gives_the_same_model(h: Arc<dyn Harness>) -> Outcome {
    if let Some(v) = require_log(&*h) {
        return v;
    }
    seed(&*h, "proj-", 3, 7).await?;
    let p = Arc::new(Recorder::new(&*h, "proj-"));
    let r = ProjectionRunner::new(h.stores(), p.clone())
        .options(options(&*h, "a"))
        .start();
    wait_handled(&r, 21).await?;
    r.stop().await.ctx("stop")?;
    let before = model_ids(&*h, &p.collection).await?;
    // A stray document the events never produced must not survive the rebuild.
    let stray = Document::new("stray", json!({}));
    h.stores()
        .reads
        .upsert(&p.collection, stray)
        .await
        .ctx("upsert stray")?;
    let again = Arc::new(Recorder::new(&*h, "proj-"));
    let r = ProjectionRunner::new(h.stores(), again.clone())
        .options(options(&*h, "b"))
        .rebuild();
    wait_handled(&r, 21).await?;
    r.stop().await.ctx("stop")?;
    ensure_eq!(
        model_ids(&*h, &p.collection).await?,
        before,
        "model after rebuild"
    );
    ensure_eq!(
        again.total.load(Ordering::SeqCst),
        21,
        "events replayed by the rebuild"
    );
    Ok(Verdict::Passed)
}

/// A handler that keeps failing stops the runner as Faulted with its checkpoint before the
/// failing event; events before it are applied, none after; a fixed runner carries on from
/// there (68).
pub async fn failing_handler_never_passes_its_event(h: Arc<dyn Harness>) -> Outcome {
    if let Some(v) = require_log(&*h) {
        return v;
    }
    let streams = seed(&*h, "proj-", 1, 20).await?;
    let p = Arc::new(Recorder::new(&*h, "proj-").fail(&streams[0], 12, u64::MAX));
    let r = ProjectionRunner::new(h.stores(), p.clone())
        .options(options(&*h, "a"))
        .start();
    let status = r
        .wait_until(|s| s.state == RunnerState::Faulted, WAIT)
        .await
        .ctx("faulted")?;
    // Batches of 7: the failure sits mid-batch, after 8..=11 were handled in that batch.
    ensure_eq!(status.handled, 11, "events committed before the failing one");
    let ids = model_ids(&*h, &p.collection).await?;
    ensure_eq!(ids.len(), 11, "documents before the failing event");
    ensure!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("injected failure")),
        "the error is reported: {status:?}"
    );
    let saved = h
        .stores()
        .checkpoints
        .load(&p.name)
        .await
        .ctx("load")?
        .unwrap_or_default();
    let read = h
        .stores()
        .events
        .read_stream(&streams[0], 15, 1)
        .await
        .ctx("read event 15")?;
    let failing = read.first().ok_or_else(|| Failure("event 12 missing".into()))?;
    ensure!(
        !saved.covers(&failing.position),
        "the checkpoint does not pass the failing event"
    );
    let fixed = Arc::new(Recorder::new(&*h, "proj-"));
    let r = ProjectionRunner::new(h.stores(), fixed.clone())
        .options(options(&*h, "b"))
        .start();
    wait_handled(&r, 9).await?;
    r.stop().await.ctx("stop")?;
    ensure_eq!(
        fixed.total.load(Ordering::SeqCst),
        9,
        "the fixed runner handles 12..=20 only"
    );
    ensure_eq!(model_ids(&*h, &p.collection).await?.len(), 20, "documents");
    Ok(Verdict::Passed)
}

/// A handler error that clears within the retry policy is retried, nothing skipped.
pub async fn transient_handler_errors_are_retried(h: Arc<dyn Harness>) -> Outcome {
    if let Some(v) = require_log(&*h) {
        return v;
    }
    let streams = seed(&*h, "proj-", 1, 8).await?;
    let p = Arc::new(Recorder::new(&*h, "proj-").fail(&streams[0], 4, 2));
    let r = ProjectionRunner::new(h.stores(), p.clone())
        .options(options(&*h, "a"))
        .start();
    wait_handled(&r, 8).await?;
    let status = r.stop().await.ctx("stop")?;
    ensure_eq!(status.retries, 2, "retries");
    ensure_eq!(
        p.calls().get(&Recorder::key(&streams[0], 4)).copied(),
        Some(3),
        "calls for the flaky event"
    );
    ensure_eq!(model_ids(&*h, &p.collection).await?.len(), 8, "documents");
    Ok(Verdict::Passed)
}

/// Of two instances one holds the lease and the other stands by; when the first stops the
/// second takes over, and every event is committed once.
pub async fn second_instance_stands_by_then_takes_over(h: Arc<dyn Harness>) -> Outcome {
    if let Some(v) = require_log(&*h) {
        return v;
    }
    let streams = seed(&*h, "proj-", 1, 5).await?;
    let a = Arc::new(Recorder::new(&*h, "proj-"));
    let b = Arc::new(Recorder::new(&*h, "proj-"));
    let ra = ProjectionRunner::new(h.stores(), a.clone())
        .options(options(&*h, "a"))
        .start();
    wait_handled(&ra, 5).await?;
    let rb = ProjectionRunner::new(h.stores(), b.clone())
        .options(options(&*h, "b"))
        .start();
    rb.wait_until(|s| s.state == RunnerState::Standby, WAIT)
        .await
        .ctx("second instance in standby")?;
    ra.stop().await.ctx("stop first")?;
    h.stores()
        .events
        .append(&streams[0], ExpectedVersion::Exact(5), events(5, 3))
        .await
        .ctx("append")?;
    wait_handled(&rb, 3).await?;
    rb.stop().await.ctx("stop second")?;
    ensure_eq!(
        (a.total.load(Ordering::SeqCst), b.total.load(Ordering::SeqCst)),
        (5, 3),
        "events handled by each"
    );
    ensure_eq!(model_ids(&*h, &a.collection).await?.len(), 8, "documents");
    Ok(Verdict::Passed)
}

/// A leader paused inside its handler past its lease is fenced: another instance takes over
/// and the paused one's late commit is refused, so every document is written once and the
/// checkpoint never moves back (68).
pub async fn paused_leader_is_fenced(h: Arc<dyn Harness>) -> Outcome {
    if let Some(v) = require_log(&*h) {
        return v;
    }
    let streams = seed(&*h, "proj-", 1, 6).await?;
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut slow = Recorder::new(&*h, "proj-");
    slow.gate = Some((Recorder::key(&streams[0], 1), gate.clone()));
    let slow = Arc::new(slow);
    let short = options(&*h, "slow").lease_ttl(Duration::from_millis(300));
    let ra = ProjectionRunner::new(h.stores(), slow.clone())
        .options(short)
        .start();
    ra.wait_until(|s| s.lease_epoch.is_some(), WAIT)
        .await
        .ctx("first instance leads")?;
    // The first instance is stuck in its handler; its lease lapses and a second takes over.
    let fast = Arc::new(Recorder::new(&*h, "proj-"));
    let rb = ProjectionRunner::new(h.stores(), fast.clone())
        .options(options(&*h, "fast"))
        .start();
    wait_handled(&rb, 6).await?;
    let taken = rb.status().checkpoint;
    gate.notify_one();
    ra.wait_until(|s| s.errors > 0, WAIT)
        .await
        .ctx("the paused leader notices it was fenced")?;
    let stale = ra.stop().await.ctx("stop paused")?;
    rb.stop().await.ctx("stop second")?;
    ensure_eq!(stale.handled, 0, "the paused leader committed nothing");
    ensure_eq!(model_ids(&*h, &slow.collection).await?.len(), 6, "documents");
    let saved = h
        .stores()
        .checkpoints
        .load(&slow.name)
        .await
        .ctx("load")?
        .unwrap_or_default();
    ensure!(
        saved.is_at_or_after(&taken),
        "the checkpoint did not move back: {saved:?} vs {taken:?}"
    );
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __projections_tests {
    ($factory:expr) => {
        $crate::__tests!(
            $factory,
            projections,
            [
                runner_applies_every_event_once,
                restart_resumes_without_rehandling,
                checkpoint_at_end_handles_nothing,
                rebuild_gives_the_same_model,
                failing_handler_never_passes_its_event,
                transient_handler_errors_are_retried,
                second_instance_stands_by_then_takes_over,
                paused_leader_is_fenced,
            ]
        );
    };
}
