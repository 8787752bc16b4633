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

/// Reads the store-wide log from `from` to the end, page by page, with `filter`.
pub async fn read_all_to_end(
    store: &dyn EventStore,
    from: &Checkpoint,
    page: usize,
    filter: &EventFilter,
) -> Result<(Vec<RecordedEvent>, Checkpoint), Failure> {
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
