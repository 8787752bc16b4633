//! Stream heads corrupted at rest: a `streams` row changed directly in the database (an
//! operator's mistake, a bad restore). Every write to such a stream refuses with `Corrupt`
//! (not retryable, so a client that re-sends on `Unavailable` stops), writes nothing, and the
//! log stays readable; `Admin::set_stream_state` is how an operator repairs the head.
//!
//! Each test damages a stream of three events (versions 1 to 3) in a schema of its own.
//!
//! An event row corrupted at rest makes `read_all` fail with `Corrupt` for every reader from
//! before it; the text names the row's log position, which `Admin::quarantine` takes so
//! readers skip the row (and are told so) until it is released.

mod common;

use std::{sync::Arc, time::Duration};

use backend_postgres::PgBackend;
use cqrs_core::{
    Admin, Checkpoint, ContentType, DeleteMode, Error, EventData, EventFilter, EventStore, ExpectedVersion,
    ImportedEvent, Position, StreamId, StreamState, Timestamp,
};

/// A damage done to the head of a stream whose events are versions 1 to 3.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// `streams.version` negative.
    NegativeVersion,
    /// `streams.state` not a state code (0 to 3).
    UnknownState,
    /// `streams.version` behind the stream's last stored event.
    VersionBehind,
    /// The `streams` row deleted, the events left.
    RowDeleted,
    /// `streams.state` 0 (no stream), which only an operator sets, and only without events.
    MissingOverEvents,
}

impl Damage {
    const ALL: [Damage; 5] = [
        Damage::NegativeVersion,
        Damage::UnknownState,
        Damage::VersionBehind,
        Damage::RowDeleted,
        Damage::MissingOverEvents,
    ];

    /// The direct update that does the damage (`{}` is the quoted schema).
    fn update(self) -> &'static str {
        match self {
            Damage::NegativeVersion => "UPDATE {}.streams SET version = -5 WHERE stream_id = $1",
            Damage::UnknownState => "UPDATE {}.streams SET state = 7 WHERE stream_id = $1",
            Damage::VersionBehind => "UPDATE {}.streams SET version = 1 WHERE stream_id = $1",
            Damage::RowDeleted => "DELETE FROM {}.streams WHERE stream_id = $1",
            Damage::MissingOverEvents => "UPDATE {}.streams SET state = 0 WHERE stream_id = $1",
        }
    }

    /// How many of the three events `read_all` delivers: a stream in state 0 or an unknown
    /// state is not live, so the log hides its events as it hides a deleted stream's.
    fn visible_in_log(self) -> usize {
        match self {
            Damage::UnknownState | Damage::MissingOverEvents => 0,
            Damage::NegativeVersion | Damage::VersionBehind | Damage::RowDeleted => 3,
        }
    }
}

/// A stream's `streams` row as stored: state, version, visible_from, bytes.
type Head = (i16, i64, i64, Option<i64>);

/// A backend in a fresh schema with one damaged stream.
struct Damaged {
    ns: String,
    damage: Damage,
    backend: Arc<PgBackend>,
    stream: StreamId,
    /// The head right after the damage.
    head: Option<Head>,
}

fn schema() -> String {
    format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

fn event(n: u32) -> EventData {
    EventData::new("Corrupted", ContentType::Json, format!("{{\"n\":{n}}}"))
}

fn batch(n: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| event(u32::try_from(i).unwrap_or(0) + 10))
        .collect()
}

#[allow(clippy::unwrap_used)] // test support
async fn damaged(damage: Damage) -> Damaged {
    let ns = schema();
    let backend = common::fresh(&ns).await.unwrap();
    let stream = StreamId::new(format!("order-{damage:?}")).unwrap();
    backend
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![event(1), event(2), event(3)],
        )
        .await
        .unwrap();
    let done = sqlx::query(&damage.update().replace("{}", backend.schema().quoted()))
        .bind(stream.as_str())
        .execute(backend.pool())
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
    let head = head(&backend, &stream).await;
    Damaged {
        ns,
        damage,
        backend,
        stream,
        head,
    }
}

#[allow(clippy::unwrap_used)] // test support
async fn head(backend: &PgBackend, stream: &StreamId) -> Option<Head> {
    sqlx::query_as(&format!(
        "SELECT state, version, visible_from, bytes FROM {}.streams WHERE stream_id = $1",
        backend.schema().quoted()
    ))
    .bind(stream.as_str())
    .fetch_optional(backend.pool())
    .await
    .unwrap()
}

#[allow(clippy::unwrap_used)] // test support
async fn stored_events(backend: &PgBackend) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.events",
        backend.schema().quoted()
    ))
    .fetch_one(backend.pool())
    .await
    .unwrap()
}

/// `err` is `Corrupt` and its text names the stream.
fn assert_corrupt(d: &Damaged, err: &Error, call: &str) {
    match err {
        Error::Corrupt { what } => assert!(
            what.contains(d.stream.as_str()),
            "{:?}, {call}: the text names the stream: {what}",
            d.damage
        ),
        other => panic!("{:?}, {call}: expected Corrupt, got {other:?}", d.damage),
    }
}

/// Nothing was written: three events stored, the head as damaged, and `read_all` from the
/// origin reads the log.
#[allow(clippy::unwrap_used)] // test support
async fn assert_nothing_written(d: &Damaged) {
    assert_eq!(
        stored_events(&d.backend).await,
        3,
        "{:?}: no event row added",
        d.damage
    );
    assert_eq!(
        head(&d.backend, &d.stream).await,
        d.head,
        "{:?}: head unchanged",
        d.damage
    );
    d.backend.settle_log(Duration::from_secs(30)).await.unwrap();
    let read = d
        .backend
        .read_all(&Checkpoint::origin(), 100, &EventFilter::all())
        .await
        .unwrap_or_else(|e| panic!("{:?}: read_all from the origin fails: {e:?}", d.damage));
    let versions: Vec<u64> = read.events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3][..d.damage.visible_in_log()], "{:?}", d.damage);
}

/// Every expectation, single events and batches (they take different paths: the statement
/// of append_one.sql and the function), refuses with `Corrupt`.
#[allow(clippy::unwrap_used)] // test support
async fn every_append_refused(damage: Damage) {
    let d = damaged(damage).await;
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(3),
    ] {
        for n in [1, 2] {
            let result = d.backend.append(&d.stream, expected, batch(n)).await;
            let err = result.unwrap_err();
            assert_corrupt(&d, &err, &format!("append of {n} with {expected}"));
        }
    }
    assert_nothing_written(&d).await;
    common::drop_schema(&d.ns).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_negative_version_refuses_every_append_and_writes_nothing() {
    every_append_refused(Damage::NegativeVersion).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_unknown_state_refuses_every_append_and_writes_nothing() {
    every_append_refused(Damage::UnknownState).await;
}

/// Not `Unavailable`: the version an append would take is taken for good, so a re-send
/// would fail forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_version_behind_its_events_refuses_every_append_and_writes_nothing() {
    every_append_refused(Damage::VersionBehind).await;
}

/// Events without a head: the first version an append gives is stored already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_missing_head_over_stored_events_refuses_every_append_and_writes_nothing() {
    every_append_refused(Damage::RowDeleted).await;
}

/// State 0 over events: appended after, the stream would take `NoStream` appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_missing_state_over_stored_events_refuses_every_append_and_writes_nothing() {
    every_append_refused(Damage::MissingOverEvents).await;
}

/// Imports (after the last stored event, and after the damaged head), deletes of both
/// kinds and truncations refuse too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::unwrap_used)] // test support
async fn corrupt_heads_refuse_imports_deletes_and_truncations() {
    for damage in Damage::ALL {
        let d = damaged(damage).await;
        for version in [2, 4] {
            let imported = ImportedEvent {
                version,
                recorded_at: Timestamp::from_millis(1_700_000_000_000),
                data: event(40),
            };
            let err = d
                .backend
                .import_commit(&d.stream, vec![imported])
                .await
                .unwrap_err();
            assert_corrupt(&d, &err, &format!("import at {version}"));
        }
        for mode in [DeleteMode::Soft, DeleteMode::Tombstone] {
            let err = d
                .backend
                .delete_stream(&d.stream, ExpectedVersion::Any, mode)
                .await
                .unwrap_err();
            assert_corrupt(&d, &err, &format!("{mode:?} delete"));
        }
        let err = d.backend.truncate_before(&d.stream, 2).await.unwrap_err();
        assert_corrupt(&d, &err, "truncate_before");
        assert_nothing_written(&d).await;
        common::drop_schema(&d.ns).await.unwrap();
    }
}

/// The operator's repair: setting the head to the last stored version makes the stream
/// take appends again, numbered after its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::unwrap_used)] // test support
async fn corrupt_head_repaired_by_set_stream_state_takes_appends_again() {
    for damage in Damage::ALL {
        let d = damaged(damage).await;
        d.backend
            .set_stream_state(&d.stream, StreamState::Live(3))
            .await
            .unwrap();
        assert_eq!(
            d.backend.stream_state(&d.stream).await.unwrap(),
            StreamState::Live(3)
        );
        let one = d
            .backend
            .append(&d.stream, ExpectedVersion::Exact(3), batch(1))
            .await
            .unwrap();
        assert_eq!(one.first_version, 4, "{damage:?}");
        let two = d
            .backend
            .append(&d.stream, ExpectedVersion::Exact(4), batch(2))
            .await
            .unwrap();
        assert_eq!((two.first_version, two.next_expected), (5, 6), "{damage:?}");
        common::drop_schema(&d.ns).await.unwrap();
    }
}

/// Damages done at rest to one event row, each a value the row decoder refuses, with what
/// the error text says about it.
const ROW_DAMAGES: [(&str, &str); 5] = [
    ("schema_version = -1", "schema version -1"),
    ("version = -1", "version -1"),
    ("content_type = 'no-such-type'", "unknown content type"),
    ("metadata = 'not json'", "event metadata"),
    ("stream_id = ''", "stored stream id"),
];

/// `read_all` from the origin, which must fail with `Corrupt` naming `at` and `says`.
#[allow(clippy::unwrap_used)] // test support
async fn assert_read_all_corrupt(backend: &PgBackend, at: Position, says: &str, when: &str) {
    match backend
        .read_all(&Checkpoint::origin(), 100, &EventFilter::all())
        .await
    {
        Err(Error::Corrupt { what }) => {
            assert!(
                what.contains(&at.to_string()),
                "{says}, {when}: the text names the position {at}: {what}"
            );
            assert!(
                what.contains(says),
                "{says}, {when}: the text says what is wrong: {what}"
            );
        }
        other => panic!("{says}, {when}: expected Corrupt, got {other:?}"),
    }
}

/// The operator's way out of a corrupt event row: the error names its position, the
/// quarantine of that position lets every reader from the origin pass it (and tells it),
/// and the release brings the failure back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::unwrap_used)] // test support
async fn corrupt_event_row_fails_read_all_until_quarantined_and_again_after_release() {
    for (set, says) in ROW_DAMAGES {
        let ns = schema();
        let backend = common::fresh(&ns).await.unwrap();
        let stream = StreamId::new("order-row").unwrap();
        backend
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![event(1), event(2), event(3)],
            )
            .await
            .unwrap();
        backend.settle_log(Duration::from_secs(30)).await.unwrap();
        // The position comes from a read before the damage, as an operator's would from the
        // error text (which is the Display form `Position` parses).
        let before = backend
            .read_all(&Checkpoint::origin(), 100, &EventFilter::all())
            .await
            .unwrap();
        assert_eq!(before.events.len(), 3);
        let target = before.events[1].position;
        assert_eq!(target.to_string().parse::<Position>().unwrap(), target);
        let done = sqlx::query(&format!(
            "UPDATE {}.events SET {set} WHERE tx_id = $1::text::xid8 AND seq = $2",
            backend.schema().quoted()
        ))
        .bind(target.offset[0].to_string())
        .bind(i64::try_from(target.offset[1]).unwrap())
        .execute(backend.pool())
        .await
        .unwrap();
        assert_eq!(done.rows_affected(), 1, "{set}");
        assert_read_all_corrupt(&backend, target, says, "before the quarantine").await;

        backend.quarantine(target, "test: corrupt row").await.unwrap();
        let read = backend
            .read_all(&Checkpoint::origin(), 100, &EventFilter::all())
            .await
            .unwrap_or_else(|e| panic!("{says}: read_all after the quarantine: {e:?}"));
        let versions: Vec<u64> = read.events.iter().map(|e| e.version).collect();
        assert_eq!(versions, [1, 3], "{says}: the quarantined event is skipped");
        assert_eq!(read.quarantined, [target], "{says}: and reported");
        assert!(read.caught_up, "{says}");

        assert!(backend.release(target).await.unwrap(), "{says}: released");
        assert_read_all_corrupt(&backend, target, says, "after the release").await;
        common::drop_schema(&ns).await.unwrap();
    }
}
