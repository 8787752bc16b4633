//! The harness a backend provides, the hooks it may implement, and the test runner.

use std::{fmt, future::Future, io::Write, sync::Arc};

use async_trait::async_trait;
use cqrs_core::{AppendOutcome, BoxError, EventData, ExpectedVersion, Result, Stores, StreamId};

/// A unique, isolated namespace for one test: a schema, a key prefix or a fresh instance,
/// as the backend chooses. Names built from it carry awkward characters on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// A fresh namespace for `test`: `t_` and 16 hex characters, unique per call.
    pub fn for_test(test: &str) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        test.hash(&mut h);
        uuid::Uuid::now_v7().hash(&mut h);
        Namespace(format!("t_{:016x}", h.finish()))
    }

    /// The namespace name: lowercase ASCII letters, digits and `_`, safe as an SQL
    /// identifier or key prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A stream id unique to this namespace with hostile characters (`:{}'";%_`, spaces,
    /// 4-byte Unicode) so key building by concatenation is caught.
    pub fn stream(&self, label: &str) -> StreamId {
        StreamId::new(format!("{label}:{{'q\"; %_ü😀}}:{}", self.0))
            .unwrap_or_else(|e| panic!("harness built an invalid stream id: {e}"))
    }

    /// A plain name (kind, collection, checkpoint, owner) unique to this namespace.
    pub fn name(&self, label: &str) -> String {
        format!("{label}_{}", self.0)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An append begun and held uncommitted (a PostgreSQL transaction left open), provided by
/// [`ConformanceHooks::hold_append`].
#[async_trait]
pub trait HeldAppend: Send {
    /// Commits the held append.
    async fn commit(self: Box<Self>) -> Result<AppendOutcome>;
    /// Rolls it back.
    async fn rollback(self: Box<Self>) -> Result<()>;
}

/// What only a backend can do to provoke a situation. Every method defaults to "not
/// provided" (`None`), and behaviours needing it report themselves as not run.
#[async_trait]
pub trait ConformanceHooks: Send + Sync {
    /// Begins an append and holds it open, uncommitted, until the handle is committed or
    /// rolled back. The append must have taken whatever it takes to be ordered (its lock or
    /// transaction id) when this returns.
    async fn hold_append(
        &self,
        _stream: &StreamId,
        _expected: ExpectedVersion,
        _events: Vec<EventData>,
    ) -> Option<Result<Box<dyn HeldAppend>>> {
        None
    }

    /// Waits until every write committed before the call is visible to `read_all`. Backends
    /// whose log has a visibility horizon (PostgreSQL: the instance-wide xmin, which any
    /// concurrent transaction of another test holds back) implement it so behaviours that
    /// want "everything written so far" are not flaky under parallel tests.
    async fn settle_log(&self) -> Option<Result<()>> {
        None
    }

    /// Kills the backend's connections (the next call must reconnect or fail retryably).
    async fn drop_connections(&self) -> Option<Result<()>> {
        None
    }

    /// Restarts the backend's server (its own instance, never a shared one).
    async fn restart_server(&self) -> Option<Result<()>> {
        None
    }

    /// Round trips to the server so far.
    fn round_trips(&self) -> Option<u64> {
        None
    }

    /// A second, independent client of the same namespace (as another process would open).
    async fn reconnect(&self) -> Option<Result<Stores>> {
        None
    }
}

/// What a backend gives the harness for one test.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// The stores, all in this test's namespace.
    fn stores(&self) -> &Stores;

    /// This test's namespace.
    fn namespace(&self) -> &Namespace;

    /// The backend's hooks, if any.
    fn hooks(&self) -> Option<&dyn ConformanceHooks> {
        None
    }

    /// Removes what the test created. Called only when the behaviour passed, so a failure
    /// leaves its data to inspect.
    async fn teardown(&self) -> std::result::Result<(), BoxError> {
        Ok(())
    }
}

/// A [`Harness`] over ready-made [`Stores`], with optional hooks.
pub struct StoresHarness {
    ns: Namespace,
    stores: Stores,
    hooks: Option<Box<dyn ConformanceHooks>>,
}

impl StoresHarness {
    /// Wraps stores created in `ns`.
    pub fn new(ns: Namespace, stores: Stores) -> Self {
        StoresHarness {
            ns,
            stores,
            hooks: None,
        }
    }

    /// Adds hooks.
    #[must_use]
    pub fn with_hooks(mut self, hooks: impl ConformanceHooks + 'static) -> Self {
        self.hooks = Some(Box::new(hooks));
        self
    }
}

impl fmt::Debug for StoresHarness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoresHarness")
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Harness for StoresHarness {
    fn stores(&self) -> &Stores {
        &self.stores
    }
    fn namespace(&self) -> &Namespace {
        &self.ns
    }
    fn hooks(&self) -> Option<&dyn ConformanceHooks> {
        self.hooks.as_deref()
    }
}

/// How a behaviour ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every assertion held.
    Passed,
    /// A hook or capability it needs is absent; the reason names it.
    NotRun(String),
}

/// Why a behaviour failed: what was checked and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<cqrs_core::Error> for Failure {
    fn from(e: cqrs_core::Error) -> Self {
        Failure(format!("unexpected store error: {e} ({e:?})"))
    }
}

/// The result of a behaviour.
pub type Outcome = std::result::Result<Verdict, Failure>;

/// Runs one behaviour against a fresh harness on a multi-threaded runtime; panics (fails
/// the test) with the behaviour's name on failure. Used by [`crate::suite!`].
pub fn run<F, Fut, H, B, BF>(name: &'static str, factory: F, behaviour: B)
where
    F: FnOnce(Namespace) -> Fut,
    Fut: Future<Output = std::result::Result<H, BoxError>>,
    H: Harness,
    B: FnOnce(Arc<dyn Harness>) -> BF,
    BF: Future<Output = Outcome> + Send + 'static,
{
    run_behaviour(
        name,
        |ns| async move { factory(ns).await.map(|h| Arc::new(h) as Arc<dyn Harness>) },
        behaviour,
        |h| async move { h.teardown().await },
    );
}

/// The runner behind every suite: builds the harness in a fresh namespace, runs the
/// behaviour on a spawned task (so a panic is caught and named), tears down only after a
/// pass, and reports NOT RUN verdicts.
pub(crate) fn run_behaviour<D, M, MF, B, BF, T, TF>(name: &'static str, make: M, behaviour: B, teardown: T)
where
    D: ?Sized + Send + Sync + 'static,
    M: FnOnce(Namespace) -> MF,
    MF: Future<Output = std::result::Result<Arc<D>, BoxError>>,
    B: FnOnce(Arc<D>) -> BF,
    BF: Future<Output = Outcome> + Send + 'static,
    T: FnOnce(Arc<D>) -> TF,
    TF: Future<Output = std::result::Result<(), BoxError>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{name}: cannot build a tokio runtime: {e}"));
    let verdict = rt.block_on(async move {
        let harness = match make(Namespace::for_test(name)).await {
            Ok(h) => h,
            Err(e) => {
                return Err(Failure(format!(
                    "the backend's harness could not be created: {e}"
                )))
            }
        };
        let outcome = match tokio::spawn(behaviour(harness.clone())).await {
            Ok(outcome) => outcome,
            Err(join) => Err(Failure(format!("the behaviour panicked: {join}"))),
        };
        if outcome.is_ok() {
            if let Err(e) = teardown(harness).await {
                return Err(Failure(format!("teardown failed: {e}")));
            }
        }
        outcome
    });
    match verdict {
        Ok(Verdict::Passed) => {}
        Ok(Verdict::NotRun(reason)) => report_not_run(name, &reason),
        Err(failure) => panic!("behaviour {name} failed: {failure}"),
    }
}

fn report_not_run(name: &str, reason: &str) {
    let line = format!("NOT RUN: {name}: {reason}");
    eprintln!("{line}");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("conformance-not-run.txt"))
    {
        let _ = writeln!(
            f,
            "{}: {line}",
            std::env::var("CARGO_PKG_NAME").unwrap_or_default()
        );
    }
}
