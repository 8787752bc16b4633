//! The backend and the one state every store of it shares, behind one mutex.
//!
//! The mutex is never held across an `await` (no method awaits while holding it), so a
//! whole store call is one critical section: that is what makes appends, batch writes and
//! read-model commits atomic, and `read_all` free of gaps.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
};

use bytes::Bytes;
use cqrs_core::{
    Capabilities, Checkpoint, Clock, Document, Error, EventId, FieldType, Lease, Limits, Quarantined,
    RecordedEvent, Result, Snapshot, StoreIdentity, Stores, StreamId, StreamState, Versioned,
};

use crate::MemoryOptions;

/// The in-memory backend: one value implementing every store trait of `cqrs-core` over one
/// shared state.
///
/// Cheap to create, so each test can have its own. Every store handed out by
/// [`MemoryBackend::stores`] (and every clone of the `Arc`) sees the same data. Nothing is
/// persisted: the data lives as long as the last handle.
///
/// Capabilities: one partition with a total order, event ids unique across streams,
/// `truncate_before`, atomic read-model commits, `recorded_at` from the store's clock. No
/// offset paging and no rich filters (the portable query subset only).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cqrs_core::Result<()> {
/// use backend_memory::MemoryBackend;
/// use cqrs_core::StateExpectation;
///
/// let stores = MemoryBackend::new().stores();
/// let v = stores.states.put("cart", "c-1", StateExpectation::New, "{}".into()).await?;
/// assert_eq!(v, 1);
/// # Ok(()) }
/// ```
pub struct MemoryBackend {
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) identity: StoreIdentity,
    inner: Mutex<Inner>,
    closed: AtomicBool,
    calls: AtomicU64,
}

impl MemoryBackend {
    /// The capabilities every memory backend declares.
    pub(crate) const CAPABILITIES: Capabilities = Capabilities {
        partitions: 1,
        total_order: true,
        global_event_id_uniqueness: true,
        truncate: true,
    };

    /// An empty backend with the default options.
    pub fn new() -> Arc<Self> {
        MemoryBackend::with_options(MemoryOptions::default())
    }

    /// An empty backend with the given limits and clock.
    pub fn with_options(options: MemoryOptions) -> Arc<Self> {
        Arc::new(MemoryBackend {
            limits: options.limits,
            clock: options.clock,
            identity: StoreIdentity {
                id: uuid::Uuid::now_v7().to_string(),
                epoch: 1,
            },
            inner: Mutex::new(Inner::default()),
            closed: AtomicBool::new(false),
            calls: AtomicU64::new(0),
        })
    }

    /// Every store of this backend as trait objects, all sharing this backend's data.
    pub fn stores(self: &Arc<Self>) -> Stores {
        Stores::from_backend(Arc::clone(self))
    }

    /// How many store calls (async trait methods, `close` included) this backend has served,
    /// refused ones included: the memory backend's "round trips".
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Counts a call and refuses it after `close`. Every trait method starts here, before
    /// validating its input.
    ///
    /// It is also where the embedded store cooperates with the scheduler: nothing in a memory
    /// call waits, so without this a task looping on store calls would never return `Pending`,
    /// a `tokio::time::timeout` around it would never fire and a few such tasks would starve
    /// every worker thread. Tokio's task budget makes the call yield once its budget (128
    /// units per poll) is spent, and costs one thread-local check otherwise. Outside a tokio
    /// runtime the budget is unconstrained and this never yields.
    pub(crate) async fn begin(&self) -> Result<()> {
        tokio::task::coop::consume_budget().await;
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Locks the shared state, checking the closed flag again under the lock so no call
    /// starts after `close` returned. A poisoned lock is recovered: every critical section
    /// validates before it mutates, so a panic cannot leave half a write behind.
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(guard)
    }

    /// Refuses every later call. Taking the lock while setting the flag waits for the call
    /// in progress, if any, to finish (the drain). Idempotent.
    pub(crate) fn shut(&self) {
        let _guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::Release);
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("identity", &self.identity)
            .field("limits", &self.limits)
            .field("clock", &self.clock)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

/// Everything the stores hold.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    /// Streams, their events and the store-wide log.
    pub(crate) log: EventLog,
    /// Snapshots by stream, then version.
    pub(crate) snapshots: BTreeMap<StreamId, BTreeMap<u64, Snapshot>>,
    /// State entries by kind, then id.
    pub(crate) states: BTreeMap<String, BTreeMap<String, Versioned<Bytes>>>,
    /// Read-model collections by name.
    pub(crate) collections: BTreeMap<String, Collection>,
    /// Saved checkpoints by name.
    pub(crate) checkpoints: BTreeMap<String, Checkpoint>,
    /// Lease records by name; a record outlives its expiry so the epoch is kept.
    pub(crate) leases: BTreeMap<String, Lease>,
}

/// Streams and the store-wide log of one partition.
///
/// Events are never removed: deletion and truncation only hide them (as `read_raw` shows),
/// and their ids stay taken.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    /// Streams in creation order; their index is how the log and the id map refer to them.
    pub(crate) streams: Vec<StreamRecord>,
    /// Stream index by name, ordered bytewise for listing.
    pub(crate) by_name: BTreeMap<StreamId, usize>,
    /// The log: entry `i` holds the event at sequence `i + 1` as (stream index, version).
    pub(crate) entries: Vec<(usize, u64)>,
    /// Where each event id is committed: (stream index, version).
    pub(crate) ids: HashMap<EventId, (usize, u64)>,
    /// Quarantined log entries by sequence: `read_all` skips and reports them.
    pub(crate) quarantined: BTreeMap<u64, Quarantined>,
}

/// One stream.
#[derive(Debug)]
pub(crate) struct StreamRecord {
    /// Its state; the version of `Live` and `SoftDeleted` is `events.len()`.
    pub(crate) state: StreamState,
    /// Versions below this are hidden from reads (truncation and soft deletion).
    pub(crate) visible_from: u64,
    /// Every event ever written, at index `version - 1`.
    pub(crate) events: Vec<RecordedEvent>,
}

impl StreamRecord {
    /// The last version stored.
    pub(crate) fn last_version(&self) -> u64 {
        u64::try_from(self.events.len()).unwrap_or(u64::MAX)
    }

    /// The event at `version`, if stored.
    pub(crate) fn event(&self, version: u64) -> Option<&RecordedEvent> {
        let index = usize::try_from(version.checked_sub(1)?).ok()?;
        self.events.get(index)
    }

    /// Stored events with versions in `from..=to` (both 1-based, clamped to what is stored).
    pub(crate) fn events_between(&self, from: u64, to: u64) -> &[RecordedEvent] {
        let lo = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
        let hi = usize::try_from(to).unwrap_or(usize::MAX).min(self.events.len());
        self.events.get(lo..hi).unwrap_or(&[])
    }

    /// True if normal reads may return the event at `version`.
    pub(crate) fn is_visible(&self, version: u64) -> bool {
        self.state.is_live() && version >= self.visible_from
    }
}

/// One read-model collection.
#[derive(Debug, Default)]
pub(crate) struct Collection {
    /// Declared indexes: field and type.
    pub(crate) indexes: BTreeMap<String, FieldType>,
    /// Documents by id (expired ones stay until swept, never returned).
    pub(crate) documents: BTreeMap<String, Document>,
}

/// Converts a count to `u64` (lossless on every supported target).
pub(crate) fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Takes events in order until `max` events or `max_bytes` bytes (at least one event).
pub(crate) fn page<'a>(
    events: impl Iterator<Item = &'a RecordedEvent>,
    max: usize,
    max_bytes: usize,
) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for event in events {
        if out.len() >= max {
            break;
        }
        let len = event.data.encoded_len();
        if !out.is_empty() && bytes.saturating_add(len) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(len);
        out.push(event.clone());
    }
    out
}
