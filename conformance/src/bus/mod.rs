//! The bus suite: one behaviour per function, run by [`crate::bus_suite!`] against any
//! [`EventBus`] transport.
//!
//! ```ignore
//! conformance::bus_suite!(memory_bus, |ns| async move {
//!     Ok::<_, cqrs_core::BoxError>(conformance::bus::BusStoresHarness::new(ns, Arc::new(MemoryBus::new())))
//! });
//! // cargo nextest run -E 'test(memory_bus::)'
//! ```
//!
//! Each test gets its own [`Namespace`]: topics and groups are built from it
//! ([`topic`], [`group`]), so tests run in parallel on one server. Timings (ack timeout,
//! retry delay, breaker timeout, how long to wait for a condition) come from one
//! [`BusSettings`], short by default. Behaviours needing a capability the transport does not
//! declare ([`BusCapabilities`]) report themselves as NOT RUN, by name.
//!
//! Groups: [`delivery`] (items 71-73, 79, 80), [`ordering`] (74, 76, 93), [`failure`]
//! (75, 87, 89, 91, 92, undecodable entries), [`lifecycle`] (77, 78, 81, 84, a slow handler,
//! restart, close), [`retention`] (94, metrics and health, 95).

pub mod delivery;
pub mod failure;
pub mod lifecycle;
pub mod ordering;
pub mod retention;

use std::{
    collections::{HashMap, HashSet},
    fmt,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use cqrs_core::{
    bus::{BusCapabilities, Delivery, EventBus, HandlerError, Message, MessageHandler, MessageId},
    BoxError, ContentType, Result,
};
use tokio::{sync::Notify, time::Instant};

use crate::{Failure, Namespace, Outcome, Verdict};

/// Timings of the bus suite: short, so the suite is quick, and shared by every behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusSettings {
    /// Ack timeout of every subscription (a crashed consumer's messages are claimed after it).
    pub ack_timeout: Duration,
    /// The unit delay of retry policies.
    pub retry_delay: Duration,
    /// How long a circuit breaker stays open.
    pub breaker_open_for: Duration,
    /// How long to wait for a condition before failing.
    pub wait: Duration,
}

impl Default for BusSettings {
    /// 400 ms ack timeout, 30 ms retry delay, 200 ms breaker timeout, 20 s to wait.
    fn default() -> Self {
        BusSettings {
            ack_timeout: Duration::from_millis(400),
            retry_delay: Duration::from_millis(30),
            breaker_open_for: Duration::from_millis(200),
            wait: Duration::from_secs(20),
        }
    }
}

/// What a transport gives the bus suite for one test.
#[async_trait]
pub trait BusHarness: Send + Sync + 'static {
    /// The bus.
    fn bus(&self) -> &Arc<dyn EventBus>;

    /// This test's namespace.
    fn namespace(&self) -> &Namespace;

    /// Timings.
    fn settings(&self) -> BusSettings {
        BusSettings::default()
    }

    /// Stores an entry on `topic` under `key` that the transport cannot decode (a corrupt
    /// stream entry or outbox row). `None`: not provided.
    async fn publish_undecodable(&self, _topic: &str, _key: &str) -> Option<Result<()>> {
        None
    }

    /// Removes what the test created. Called only when the behaviour passed.
    async fn teardown(&self) -> std::result::Result<(), BoxError> {
        Ok(())
    }
}

type UndecodableFn =
    Box<dyn Fn(String, String) -> futures::future::BoxFuture<'static, Result<()>> + Send + Sync + 'static>;

/// A [`BusHarness`] over a ready-made bus, with an optional undecodable-entry hook.
pub struct BusStoresHarness {
    ns: Namespace,
    bus: Arc<dyn EventBus>,
    settings: BusSettings,
    undecodable: Option<UndecodableFn>,
}

impl BusStoresHarness {
    /// Wraps a bus created for `ns`.
    pub fn new(ns: Namespace, bus: Arc<dyn EventBus>) -> Self {
        BusStoresHarness {
            ns,
            bus,
            settings: BusSettings::default(),
            undecodable: None,
        }
    }

    /// Sets the timings.
    #[must_use]
    pub fn with_settings(mut self, settings: BusSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Adds the hook that stores an undecodable entry (`topic`, `key`).
    #[must_use]
    pub fn with_undecodable<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(String, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.undecodable = Some(Box::new(move |t, k| Box::pin(f(t, k))));
        self
    }
}

impl fmt::Debug for BusStoresHarness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusStoresHarness")
            .field("ns", &self.ns)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl BusHarness for BusStoresHarness {
    fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }
    fn namespace(&self) -> &Namespace {
        &self.ns
    }
    fn settings(&self) -> BusSettings {
        self.settings
    }
    async fn publish_undecodable(&self, topic: &str, key: &str) -> Option<Result<()>> {
        let f = self.undecodable.as_ref()?;
        Some(f(topic.to_owned(), key.to_owned()).await)
    }
}

/// Runs one bus behaviour against a fresh harness on a multi-threaded runtime; panics with
/// the behaviour's name on failure, reports NOT RUN like [`crate::run`]. Used by
/// [`crate::bus_suite!`].
pub fn run<F, Fut, H, B, BF>(name: &'static str, factory: F, behaviour: B)
where
    F: FnOnce(Namespace) -> Fut,
    Fut: Future<Output = std::result::Result<H, BoxError>>,
    H: BusHarness,
    B: FnOnce(Arc<dyn BusHarness>) -> BF,
    BF: Future<Output = Outcome> + Send + 'static,
{
    crate::harness::run_behaviour(
        name,
        |ns| async move { factory(ns).await.map(|h| Arc::new(h) as Arc<dyn BusHarness>) },
        behaviour,
        |h| async move { h.teardown().await },
    );
}

/// A topic name unique to this test.
pub fn topic(h: &dyn BusHarness, label: &str) -> String {
    h.namespace().name(&format!("topic_{label}"))
}

/// A group name unique to this test.
pub fn group(h: &dyn BusHarness, label: &str) -> String {
    h.namespace().name(&format!("group_{label}"))
}

/// `n` JSON messages for `key`, payload `{"key":..,"n":i}` and header `n`.
pub fn messages(key: &str, n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            Message::new(key, ContentType::Json, format!(r#"{{"key":"{key}","n":{i}}}"#))
                .with_header("n", i.to_string())
        })
        .collect()
}

/// The `n` header of a message built by [`messages`].
pub fn seq_of(m: &Message) -> Option<usize> {
    m.headers.extra.get("n").and_then(|n| n.parse().ok())
}

/// What a [`Probe`] handler does with one call.
#[derive(Debug)]
pub enum Act {
    /// Acknowledge.
    Ok,
    /// Fail.
    Fail(HandlerError),
    /// Take this long, then acknowledge.
    Slow(Duration),
    /// Never return (a hung or crashed consumer).
    Hang,
}

type ScriptFn = Box<dyn Fn(&Delivery, usize) -> Act + Send + Sync>;

/// One handler call seen by a [`Probe`].
#[derive(Debug, Clone)]
pub struct Call {
    /// The delivery.
    pub delivery: Delivery,
    /// When the call began.
    pub at: Instant,
    /// How many calls of the same message came before (0: first).
    pub nth: usize,
}

#[derive(Default)]
struct ProbeLog {
    calls: Vec<Call>,
    acked: Vec<(Delivery, Instant)>,
    per_message: HashMap<MessageId, usize>,
    busy_keys: HashMap<(String, String), usize>,
    overlaps: Vec<String>,
}

/// A recording handler: logs every call and every successful return, notices two
/// deliveries of one key (per group) overlapping, and acts as its script says.
pub struct Probe {
    script: ScriptFn,
    log: Mutex<ProbeLog>,
    notify: Notify,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe").finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe that acknowledges everything.
    pub fn ok() -> Arc<Self> {
        Probe::scripted(|_, _| Act::Ok)
    }

    /// A probe acting as `script(delivery, calls of this message before)` says.
    pub fn scripted(script: impl Fn(&Delivery, usize) -> Act + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Probe {
            script: Box::new(script),
            log: Mutex::new(ProbeLog::default()),
            notify: Notify::new(),
        })
    }

    fn log(&self) -> std::sync::MutexGuard<'_, ProbeLog> {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.log().calls.clone()
    }

    /// Every successful return so far, in order.
    pub fn acked(&self) -> Vec<Delivery> {
        self.log().acked.iter().map(|(d, _)| d.clone()).collect()
    }

    /// Successful returns with their time.
    pub fn acked_at(&self) -> Vec<(Delivery, Instant)> {
        self.log().acked.clone()
    }

    /// Distinct acknowledged message ids.
    pub fn acked_ids(&self) -> HashSet<MessageId> {
        self.log().acked.iter().map(|(d, _)| d.message.id).collect()
    }

    /// Fails if two deliveries of one key in one group ever overlapped.
    pub fn check_no_overlap(&self) -> std::result::Result<(), Failure> {
        let log = self.log();
        match log.overlaps.first() {
            Some(o) => Err(Failure(format!("two deliveries of one key overlapped: {o}"))),
            None => Ok(()),
        }
    }

    /// Waits until `cond` holds over (calls, acked), failing after `limit` naming `what`.
    pub async fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        cond: impl Fn(&[Call], &[(Delivery, Instant)]) -> bool,
    ) -> std::result::Result<(), Failure> {
        let deadline = crate::Deadline::after(limit);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let log = self.log();
                if cond(&log.calls, &log.acked) {
                    return Ok(());
                }
            }
            deadline.check(what)?;
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Waits until `n` distinct messages were acknowledged.
    pub async fn wait_acked(&self, n: usize, limit: Duration) -> std::result::Result<(), Failure> {
        self.wait_until(limit, &format!("{n} messages acknowledged"), |_, acked| {
            acked
                .iter()
                .map(|(d, _)| d.message.id)
                .collect::<HashSet<_>>()
                .len()
                >= n
        })
        .await
    }
}

#[async_trait]
impl MessageHandler for Probe {
    async fn handle(&self, d: &Delivery) -> std::result::Result<(), HandlerError> {
        let key = (d.group.clone(), d.message.key.clone());
        let act = {
            let mut log = self.log();
            let nth = *log.per_message.get(&d.message.id).unwrap_or(&0);
            log.per_message.insert(d.message.id, nth + 1);
            let busy = log.busy_keys.entry(key.clone()).or_insert(0);
            *busy += 1;
            if *busy > 1 {
                let o = format!(
                    "key {:?} in group {:?} (message {})",
                    d.message.key, d.group, d.message.id
                );
                log.overlaps.push(o);
            }
            log.calls.push(Call {
                delivery: d.clone(),
                at: Instant::now(),
                nth,
            });
            (self.script)(d, nth)
        };
        self.notify.notify_waiters();
        let result = match act {
            Act::Ok => Ok(()),
            Act::Fail(e) => Err(e),
            Act::Slow(t) => {
                tokio::time::sleep(t).await;
                Ok(())
            }
            Act::Hang => std::future::pending().await,
        };
        {
            let mut log = self.log();
            if let Some(busy) = log.busy_keys.get_mut(&key) {
                *busy = busy.saturating_sub(1);
            }
            if result.is_ok() {
                log.acked.push((d.clone(), Instant::now()));
            }
        }
        self.notify.notify_waiters();
        result
    }
}

/// Polls `cond` (a metrics or health read) until it holds, failing after `limit`.
pub async fn wait_for(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> std::result::Result<(), Failure> {
    let deadline = crate::Deadline::after(limit);
    while !cond() {
        deadline.check(what)?;
        crate::poll_pause().await;
    }
    Ok(())
}

/// Ends the behaviour as not run unless the transport declares `flag`.
pub fn require(caps: BusCapabilities, flag: bool, name: &str) -> Option<Verdict> {
    (!flag).then(|| {
        Verdict::NotRun(format!(
            "the transport does not declare BusCapabilities::{name} ({caps:?})"
        ))
    })
}

/// Emits the test module of one bus group. Used by [`crate::bus_suite!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __bus_tests {
    ($factory:expr, $group:ident, [$($behaviour:ident),* $(,)?]) => {
        pub mod $group {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $behaviour() {
                    $crate::bus::run(
                        concat!(module_path!(), "::", stringify!($behaviour)),
                        $factory,
                        $crate::bus::$group::$behaviour,
                    );
                }
            )*
        }
    };
}
