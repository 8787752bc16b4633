//! Assertions and builders shared by the behaviours.

use cqrs_core::{
    Checkpoint, ContentType, EventData, EventFilter, EventStore, Metadata, RecordedEvent, StreamId,
};

use crate::Failure;

/// Fails the behaviour with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure(format!($($fmt)+)));
        }
    };
}

/// Fails the behaviour unless `left == right`, naming what was compared and both values.
#[macro_export]
macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err($crate::Failure(format!(
                        "{}: expected {:?}, got {:?}", format!($($fmt)+), r, l
                    )));
                }
            }
        }
    };
}

/// Fails the behaviour unless `result` is an `Err` matching `pattern`.
#[macro_export]
macro_rules! ensure_err {
    ($result:expr, $pattern:pat, $($fmt:tt)+) => {
        match $result {
            Err($pattern) => {}
            other => {
                return Err($crate::Failure(format!(
                    "{}: expected an error matching `{}`, got {:?}",
                    format!($($fmt)+), stringify!($pattern), other
                )));
            }
        }
    };
}

/// Ends the behaviour as not run, with the reason (name the hook or capability).
#[macro_export]
macro_rules! not_run {
    ($($fmt:tt)+) => {
        return Ok($crate::Verdict::NotRun(format!($($fmt)+)))
    };
}

/// Adds what was being done to a store error.
pub trait Ctx<T> {
    /// Maps the error to a [`Failure`] naming `op`.
    fn ctx(self, op: &str) -> Result<T, Failure>;
}

impl<T> Ctx<T> for cqrs_core::Result<T> {
    fn ctx(self, op: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure(format!("{op}: unexpected store error: {e} ({e:?})")))
    }
}

/// A JSON event of type `ty` whose payload records `n`.
pub fn event(ty: &str, n: u64) -> EventData {
    EventData::new(ty, ContentType::Json, format!("{{\"n\":{n}}}"))
}

/// `count` JSON events of type `"Tested"`, payloads numbered from `start`.
pub fn events(start: u64, count: u64) -> Vec<EventData> {
    (start..start + count).map(|n| event("Tested", n)).collect()
}

/// An event exercising every field: metadata, unicode, opaque bytes.
pub fn rich_event() -> EventData {
    let mut md = Metadata {
        correlation_id: Some("corr-ü😀".into()),
        causation_id: Some("cause-1".into()),
        actor: Some("user:'x\"".into()),
        ..Metadata::default()
    };
    md.extra.insert("key with spaces".into(), "välue {}".into());
    let payload: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe]).collect();
    EventData::new("Rich.Type-ü", ContentType::Opaque, payload)
        .with_schema_version(3)
        .with_metadata(md)
}

/// Waits until every write committed before the call is visible to `read_all`, through
/// [`crate::ConformanceHooks::settle_log`] where the backend has a visibility horizon
/// (PostgreSQL); a no-op elsewhere.
pub async fn settle(h: &dyn crate::Harness) -> Result<(), Failure> {
    if let Some(hooks) = h.hooks() {
        if let Some(r) = hooks.settle_log().await {
            r.ctx("settle_log hook")?;
        }
    }
    Ok(())
}

/// Reads the store-wide log from `from` to the end, page by page, with `filter`, after
/// [`settle`]: "everything written so far". Live-tail behaviours call `read_all` directly so
/// they see the horizon as it moves.
pub async fn read_all_to_end(
    h: &dyn crate::Harness,
    store: &dyn EventStore,
    from: &Checkpoint,
    page: usize,
    filter: &EventFilter,
) -> Result<(Vec<RecordedEvent>, Checkpoint), Failure> {
    settle(h).await?;
    let mut out = Vec::new();
    let mut cp = from.clone();
    for _ in 0..1_000_000 {
        let batch = store.read_all(&cp, page, filter).await.ctx("read_all")?;
        out.extend(batch.events);
        cp = batch.next;
        if batch.caught_up {
            return Ok((out, cp));
        }
    }
    Err(Failure("read_all never reported caught_up".into()))
}

/// Events of `stream` among `events`, in the order given.
pub fn of_stream<'a>(events: &'a [RecordedEvent], stream: &StreamId) -> Vec<&'a RecordedEvent> {
    events.iter().filter(|e| &e.stream_id == stream).collect()
}

// --- part B helpers ---

/// Event ids grouped by log partition, each group in the order given. Two reads of the log
/// agree when these maps are equal: only the order within a partition is defined.
pub fn ids_by_partition(
    events: &[RecordedEvent],
) -> std::collections::BTreeMap<u32, Vec<cqrs_core::EventId>> {
    let mut out = std::collections::BTreeMap::<u32, Vec<cqrs_core::EventId>>::new();
    for e in events {
        out.entry(e.position.partition).or_default().push(e.event_id());
    }
    out
}

/// Fails unless positions strictly increase within each partition, in the order given.
pub fn ensure_log_order(events: &[RecordedEvent], what: &str) -> Result<(), Failure> {
    let mut last = std::collections::BTreeMap::<u32, &RecordedEvent>::new();
    for e in events {
        if let Some(prev) = last.get(&e.position.partition) {
            if prev.position.cmp_in_partition(&e.position) != Some(std::cmp::Ordering::Less) {
                return Err(Failure(format!(
                    "{what}: positions must strictly increase within a partition, but {} (stream {}, \
                     version {}) came after {} (stream {}, version {})",
                    e.position, e.stream_id, e.version, prev.position, prev.stream_id, prev.version
                )));
            }
        }
        last.insert(e.position.partition, e);
    }
    Ok(())
}

/// Fails if an event id appears twice.
pub fn ensure_each_once(events: &[RecordedEvent], what: &str) -> Result<(), Failure> {
    let mut seen = std::collections::HashSet::new();
    for e in events {
        if !seen.insert(e.event_id()) {
            return Err(Failure(format!(
                "{what}: event {} (stream {}, version {}) was delivered twice",
                e.event_id(),
                e.stream_id,
                e.version
            )));
        }
    }
    Ok(())
}

/// A time limit for awaiting a condition by polling (with [`poll_pause`] between
/// attempts): the pause paces the polls, the condition ends the wait.
#[derive(Debug, Clone)]
pub struct Deadline {
    until: tokio::time::Instant,
    limit: std::time::Duration,
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn after(limit: std::time::Duration) -> Self {
        Deadline {
            until: tokio::time::Instant::now() + limit,
            limit,
        }
    }

    /// Fails, naming `waiting_for`, once the deadline has passed.
    pub fn check(&self, waiting_for: &str) -> Result<(), Failure> {
        if tokio::time::Instant::now() >= self.until {
            return Err(Failure(format!(
                "gave up after {:?} waiting for {waiting_for}",
                self.limit
            )));
        }
        Ok(())
    }
}

/// The pause between two polls of a condition (an empty tail read, a lease not yet
/// lapsed): short enough to react at once, long enough not to spin a 2-core machine or
/// flood a server with queries. Never used to wait for something to happen by itself.
pub async fn poll_pause() {
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
}

// --- end of part B helpers ---

// --- part A helpers ---

/// Event ids of a batch, in batch order.
pub fn batch_ids(events: &[EventData]) -> Vec<cqrs_core::EventId> {
    events.iter().map(|e| e.event_id).collect()
}

/// Event ids of recorded events, in the order given.
pub fn recorded_ids(events: &[RecordedEvent]) -> Vec<cqrs_core::EventId> {
    events.iter().map(RecordedEvent::event_id).collect()
}

/// Versions of recorded events, in the order given.
pub fn recorded_versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

/// The current time by the system clock, in milliseconds.
pub fn wall_clock_now() -> cqrs_core::Timestamp {
    cqrs_core::Timestamp::from_system_time(std::time::SystemTime::now())
}

/// Every visible event of `stream`, read forward `page` events at a time with
/// `read_stream`; fails if a page is out of order or repeats a version.
pub async fn read_stream_to_end(
    store: &dyn EventStore,
    stream: &StreamId,
    page: usize,
) -> Result<Vec<RecordedEvent>, Failure> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    let mut from = 0u64;
    for _ in 0..1_000_000 {
        let events = store.read_stream(stream, from, page).await.ctx("read_stream")?;
        let Some(last) = events.last().map(|e| e.version) else {
            return Ok(out);
        };
        if events.len() > page {
            return Err(Failure(format!(
                "read_stream({stream}, {from}, {page}) returned {} events",
                events.len()
            )));
        }
        for e in &events {
            let floor = out.last().map_or(from, |prev| prev.version + 1);
            if e.version < floor {
                return Err(Failure(format!(
                    "read_stream({stream}, {from}, {page}) returned version {} out of order \
                     (expected at least {floor})",
                    e.version
                )));
            }
            out.push(e.clone());
        }
        from = last + 1;
    }
    Err(Failure(format!("read_stream({stream}) never reached the end")))
}

/// Every live stream, listed `page` names at a time with `list_streams`; fails if the
/// listing does not strictly ascend bytewise (a duplicate or a step back).
pub async fn list_streams_to_end(store: &dyn EventStore, page: usize) -> Result<Vec<StreamId>, Failure> {
    let mut out: Vec<StreamId> = Vec::new();
    let mut after: Option<StreamId> = None;
    for _ in 0..1_000_000 {
        let listed = store
            .list_streams(after.as_ref(), page)
            .await
            .ctx("list_streams")?;
        if listed.streams.len() > page {
            return Err(Failure(format!(
                "list_streams(limit {page}) returned {} names",
                listed.streams.len()
            )));
        }
        for s in listed.streams {
            let floor = out.last().or(after.as_ref());
            if let Some(prev) = floor {
                if s.as_str().as_bytes() <= prev.as_str().as_bytes() {
                    return Err(Failure(format!(
                        "list_streams is not strictly ascending bytewise: {s:?} came after {prev:?}"
                    )));
                }
            }
            out.push(s);
        }
        match listed.next {
            None => return Ok(out),
            Some(next) => {
                if after
                    .as_ref()
                    .is_some_and(|a| next.as_str().as_bytes() <= a.as_str().as_bytes())
                {
                    return Err(Failure(format!(
                        "list_streams: next {next:?} does not move past {after:?}"
                    )));
                }
                after = Some(next);
            }
        }
    }
    Err(Failure("list_streams never reached the end".into()))
}

/// Awaits a spawned task, turning a panic or cancellation into a [`Failure`].
pub async fn join_task<T>(task: tokio::task::JoinHandle<Result<T, Failure>>) -> Result<T, Failure> {
    match task.await {
        Ok(result) => result,
        Err(e) => Err(Failure(format!("a spawned task failed: {e}"))),
    }
}

// --- end of part A helpers ---
