//! Behaviours: event_store. Expected versions and concurrency, stream names, reads,
//! deletion and truncation, limits, and operator access (`docs/CONFORMANCE.md` items 1-15 and
//! 22-36; idempotency is its own group).

use std::{cmp::Ordering, collections::BTreeSet, fmt::Debug, sync::Arc};

use bytes::Bytes;
use cqrs_core::{
    compression, AppendOutcome, Checkpoint, ContentEncoding, ContentType, DeleteMode, Error, EventData,
    EventFilter, EventStore, EventStoreExt, ExpectedVersion, ImportedEvent, LimitKind, Limits, Metadata,
    RecordedEvent, Snapshot, StreamId, StreamState, Timestamp, MAX_NAME_BYTES, MAX_VERSION,
};
use futures::TryStreamExt;
use tokio::sync::Barrier;

use crate::{
    batch_ids, ensure, ensure_eq, ensure_err, event, events, join_task, list_streams_to_end, not_run,
    of_stream, read_all_to_end, read_stream_to_end, recorded_ids, recorded_versions, rich_event, settle,
    wall_clock_now, Ctx, Failure, Harness, Outcome, Verdict,
};

// ---------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------

fn stream_id(name: String) -> Result<StreamId, Failure> {
    StreamId::new(name).map_err(|e| Failure(format!("the harness built an invalid stream id: {e}")))
}

async fn state(es: &dyn EventStore, s: &StreamId) -> Result<StreamState, Failure> {
    es.stream_state(s).await.ctx("stream_state")
}

/// Fails unless `r` is a `Conflict` naming `stream`, carrying `expected` and reporting
/// `actual`.
fn expect_conflict<T: Debug>(
    r: cqrs_core::Result<T>,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: StreamState,
    what: &str,
) -> Result<(), Failure> {
    match r {
        Err(Error::Conflict {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            ensure_eq!(&s, stream, "{what}: the Conflict names the stream");
            ensure!(
                e.normalized() == expected.normalized(),
                "{what}: the Conflict should carry the expectation {expected:?}, it carries {e:?}"
            );
            ensure_eq!(a, actual, "{what}: the Conflict reports the actual state");
            Ok(())
        }
        other => Err(Failure(format!(
            "{what}: expected Conflict {{ actual: {actual:?} }}, got {other:?}"
        ))),
    }
}

/// Fails unless `r` is `TooLarge { kind, .. }` with `actual` above its limit.
fn expect_too_large<T: Debug>(
    r: cqrs_core::Result<T>,
    kind: LimitKind,
    actual: u64,
    what: &str,
) -> Result<(), Failure> {
    match r {
        Err(Error::TooLarge {
            kind: k,
            limit,
            actual: a,
        }) if k == kind => {
            ensure_eq!(a, actual, "{what}: TooLarge reports the actual value");
            ensure!(
                limit < a,
                "{what}: TooLarge reports limit {limit}, which the actual value {a} does not exceed"
            );
            Ok(())
        }
        other => Err(Failure(format!(
            "{what}: expected TooLarge {{ kind: {kind:?}, actual: {actual} }}, got {other:?}"
        ))),
    }
}

/// Fails unless `events` are in one partition with strictly increasing positions (per-stream
/// order in the log).
fn ensure_positions_ascend(events: &[RecordedEvent], what: &str) -> Result<(), Failure> {
    for w in events.windows(2) {
        ensure!(
            w[0].position.cmp_in_partition(&w[1].position) == Some(Ordering::Less),
            "{what}: version {} at {} must sit before version {} at {} in one partition",
            w[0].version,
            w[0].position,
            w[1].version,
            w[1].position
        );
    }
    Ok(())
}

/// A small snapshot of `stream` at `version`.
fn snapshot(stream: &StreamId, version: u64) -> Snapshot {
    Snapshot {
        stream_id: stream.clone(),
        version,
        schema_revision: 1,
        payload: Bytes::from_static(b"{\"state\":1}"),
        content_type: ContentType::Json,
        content_encoding: ContentEncoding::Identity,
        taken_at: wall_clock_now(),
    }
}

/// An opaque event whose payload is `len` bytes of a repeating, non-trivial pattern.
fn sized_event(len: usize, seed: u8) -> EventData {
    let payload: Vec<u8> = (0..len)
        .map(|i| u8::try_from(i % 251).unwrap_or(0) ^ seed)
        .collect();
    EventData::new("Sized", ContentType::Opaque, payload)
}

fn byte_len(e: &EventData) -> u64 {
    u64::try_from(e.encoded_len()).unwrap_or(u64::MAX)
}

/// Events of `stream` in the store-wide log, if the store has one.
async fn in_log(h: &dyn Harness, stream: &StreamId) -> Result<Option<Vec<RecordedEvent>>, Failure> {
    let es = &*h.stores().events;
    if !es.capabilities().has_store_wide_log() {
        return Ok(None);
    }
    let filter = EventFilter::stream_prefix(stream.as_str());
    let (all, _) = read_all_to_end(h, es, &Checkpoint::origin(), 100, &filter).await?;
    Ok(Some(of_stream(&all, stream).into_iter().cloned().collect()))
}

// ---------------------------------------------------------------------------------------
// Appends and expected versions (1-7, 13, 14)
// ---------------------------------------------------------------------------------------

/// A NoStream append to a new stream starts at version 1 and returns the batch's range and
/// the position of its last event (1).
pub async fn append_no_stream_starts_at_one(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("new");
    let batch = events(0, 3);
    let out = es
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .ctx("append NoStream")?;
    ensure_eq!(out.first_version, 1, "first_version of a new stream");
    ensure_eq!(out.next_expected, 3, "next_expected after 3 events");
    ensure!(
        out.position.is_some(),
        "a non-empty append returns the position of its last event"
    );
    let read = es.read_stream(&s, 1, 10).await.ctx("read_stream")?;
    ensure_eq!(recorded_versions(&read), vec![1, 2, 3], "versions read back");
    ensure_eq!(
        recorded_ids(&read),
        batch_ids(&batch),
        "ids read back, in batch order"
    );
    ensure_eq!(
        read.last().map(|e| e.position),
        out.position,
        "the outcome's position is the last event's"
    );
    ensure_eq!(state(es, &s).await?, StreamState::Live(3), "stream_state");
    Ok(Verdict::Passed)
}

/// A second NoStream append to an existing stream is a Conflict reporting the actual
/// version, and writes nothing (2, 13, 14).
pub async fn no_stream_on_existing_stream_conflicts(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("exists");
    es.append(&s, ExpectedVersion::NoStream, events(0, 2))
        .await
        .ctx("first append")?;
    let r = es.append(&s, ExpectedVersion::NoStream, events(2, 1)).await;
    expect_conflict(
        r,
        &s,
        ExpectedVersion::NoStream,
        StreamState::Live(2),
        "second NoStream append",
    )?;
    ensure_eq!(
        state(es, &s).await?,
        StreamState::Live(2),
        "state after the conflict"
    );
    ensure_eq!(
        es.read_stream(&s, 1, 10).await.ctx("read_stream")?.len(),
        2,
        "events after the conflict"
    );
    Ok(Verdict::Passed)
}

/// Exact(current) succeeds and returns current + n, repeatedly (3).
pub async fn exact_current_version_succeeds(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("exact");
    let mut current = 0u64;
    for n in [1u64, 4, 2] {
        let out = es
            .append(&s, ExpectedVersion::Exact(current), events(current, n))
            .await
            .ctx("append Exact(current)")?;
        ensure_eq!(
            out.first_version,
            current + 1,
            "first_version after Exact({current})"
        );
        ensure_eq!(
            out.next_expected,
            current + n,
            "next_expected after Exact({current}) with {n} events"
        );
        current = out.next_expected;
    }
    ensure_eq!(state(es, &s).await?, StreamState::Live(7), "stream_state");
    Ok(Verdict::Passed)
}

/// Exact lower than the current version (with new ids) conflicts with the actual version
/// and writes nothing (4, 14).
pub async fn exact_lower_version_conflicts(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("lower");
    es.append(&s, ExpectedVersion::NoStream, events(0, 3))
        .await
        .ctx("seed")?;
    for stale in [1u64, 2] {
        let r = es.append(&s, ExpectedVersion::Exact(stale), events(10, 2)).await;
        expect_conflict(
            r,
            &s,
            ExpectedVersion::Exact(stale),
            StreamState::Live(3),
            &format!("Exact({stale}) on a stream at 3"),
        )?;
    }
    ensure_eq!(
        state(es, &s).await?,
        StreamState::Live(3),
        "state after the conflicts"
    );
    Ok(Verdict::Passed)
}

/// Exact higher than the current version conflicts and creates no sparse stream, on a
/// missing and on an existing stream (5).
pub async fn exact_higher_version_conflicts_without_gap(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let missing = h.namespace().stream("higher-missing");
    let r = es.append(&missing, ExpectedVersion::Exact(3), events(0, 1)).await;
    expect_conflict(
        r,
        &missing,
        ExpectedVersion::Exact(3),
        StreamState::Missing,
        "Exact(3) on a missing stream",
    )?;
    ensure_eq!(
        state(es, &missing).await?,
        StreamState::Missing,
        "state after the conflict"
    );
    ensure!(
        es.read_stream(&missing, 0, 10)
            .await
            .ctx("read_stream")?
            .is_empty(),
        "a refused append must not create the stream"
    );

    let s = h.namespace().stream("higher");
    es.append(&s, ExpectedVersion::NoStream, events(0, 2))
        .await
        .ctx("seed")?;
    let r = es.append(&s, ExpectedVersion::Exact(5), events(2, 1)).await;
    expect_conflict(
        r,
        &s,
        ExpectedVersion::Exact(5),
        StreamState::Live(2),
        "Exact(5) on a stream at 2",
    )?;
    let out = es
        .append(&s, ExpectedVersion::Exact(2), events(2, 1))
        .await
        .ctx("append Exact(2)")?;
    ensure_eq!(out.first_version, 3, "the next event fills version 3, no gap");
    let read = es.read_stream(&s, 0, 10).await.ctx("read_stream")?;
    ensure_eq!(recorded_versions(&read), vec![1, 2, 3], "versions are dense");
    Ok(Verdict::Passed)
}

/// Exact(0) behaves exactly as NoStream: it creates a missing stream and conflicts on an
/// existing one (1, 2).
pub async fn exact_zero_means_no_stream(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("exact-zero");
    let out = es
        .append(&s, ExpectedVersion::Exact(0), events(0, 2))
        .await
        .ctx("append Exact(0) to a missing stream")?;
    ensure_eq!(
        (out.first_version, out.next_expected),
        (1, 2),
        "Exact(0) on a missing stream"
    );
    let r = es.append(&s, ExpectedVersion::Exact(0), events(2, 1)).await;
    expect_conflict(
        r,
        &s,
        ExpectedVersion::NoStream,
        StreamState::Live(2),
        "Exact(0) on an existing stream",
    )?;
    ensure_eq!(state(es, &s).await?, StreamState::Live(2), "state");
    Ok(Verdict::Passed)
}

/// Any appends to a missing stream and to an existing one (6).
pub async fn any_appends_to_missing_and_existing(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("any");
    let out = es
        .append(&s, ExpectedVersion::Any, events(0, 2))
        .await
        .ctx("Any on a missing stream")?;
    ensure_eq!(
        (out.first_version, out.next_expected),
        (1, 2),
        "Any on a missing stream"
    );
    let out = es
        .append(&s, ExpectedVersion::Any, events(2, 3))
        .await
        .ctx("Any on an existing stream")?;
    ensure_eq!(
        (out.first_version, out.next_expected),
        (3, 5),
        "Any on an existing stream"
    );
    let read = es.read_stream(&s, 1, 10).await.ctx("read_stream")?;
    ensure_eq!(recorded_versions(&read), vec![1, 2, 3, 4, 5], "versions");
    Ok(Verdict::Passed)
}

/// StreamExists fails with Conflict (actual Missing) on a missing stream and succeeds on an
/// existing one (7).
pub async fn stream_exists_requires_an_existing_stream(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("stream-exists");
    let r = es.append(&s, ExpectedVersion::StreamExists, events(0, 1)).await;
    expect_conflict(
        r,
        &s,
        ExpectedVersion::StreamExists,
        StreamState::Missing,
        "StreamExists on a missing stream",
    )?;
    ensure_eq!(
        state(es, &s).await?,
        StreamState::Missing,
        "state after the conflict"
    );
    es.append(&s, ExpectedVersion::NoStream, events(0, 1))
        .await
        .ctx("create")?;
    let out = es
        .append(&s, ExpectedVersion::StreamExists, events(1, 2))
        .await
        .ctx("StreamExists on an existing stream")?;
    ensure_eq!(
        (out.first_version, out.next_expected),
        (2, 3),
        "StreamExists on an existing stream"
    );
    Ok(Verdict::Passed)
}

/// Every Conflict carries the stream, the expectation and the actual state: Missing, Live
/// and SoftDeleted (14).
pub async fn conflict_reports_actual_state(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("actual");
    for expected in [ExpectedVersion::StreamExists, ExpectedVersion::Exact(4)] {
        let r = es.append(&s, expected, events(0, 1)).await;
        expect_conflict(r, &s, expected, StreamState::Missing, "on a missing stream")?;
    }
    es.append(&s, ExpectedVersion::NoStream, events(0, 3))
        .await
        .ctx("seed")?;
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(2),
        ExpectedVersion::Exact(4),
    ] {
        let r = es.append(&s, expected, events(10, 1)).await;
        expect_conflict(r, &s, expected, StreamState::Live(3), "on a stream at 3")?;
    }
    es.delete_stream(&s, ExpectedVersion::Exact(3), DeleteMode::Soft)
        .await
        .ctx("soft delete")?;
    for expected in [ExpectedVersion::StreamExists, ExpectedVersion::Exact(2)] {
        let r = es.append(&s, expected, events(20, 1)).await;
        expect_conflict(
            r,
            &s,
            expected,
            StreamState::SoftDeleted(3),
            "on a stream soft-deleted at 3",
        )?;
    }
    Ok(Verdict::Passed)
}

/// A batch is all or nothing: one oversized or malformed event anywhere in it fails the
/// whole append and the stream stays Missing (8).
pub async fn batch_with_one_bad_event_writes_nothing(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("atomic");
    let big = sized_event(Limits::DEFAULT_MAX_EVENT_BYTES + 1, 7);
    let big_len = byte_len(&big);
    let batch = vec![event("Ok", 1), event("Ok", 2), big, event("Ok", 3)];
    let r = es.append(&s, ExpectedVersion::NoStream, batch).await;
    expect_too_large(r, LimitKind::EventBytes, big_len, "an oversized third event")?;

    let mut bad_type = event("Ok", 4);
    bad_type.event_type = "bad\ntype".into();
    let r = es
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![event("Ok", 5), bad_type, event("Ok", 6)],
        )
        .await;
    ensure_err!(
        r,
        Error::InvalidInput { .. },
        "a control character in the second event's type"
    );

    let r = es
        .append(
            &s,
            ExpectedVersion::Any,
            vec![event("Ok", 7), event("Ok", 8).with_schema_version(0)],
        )
        .await;
    ensure_err!(
        r,
        Error::InvalidInput { .. },
        "schema version 0 in the last event"
    );

    ensure_eq!(
        state(es, &s).await?,
        StreamState::Missing,
        "state after refused batches"
    );
    ensure!(
        es.read_stream(&s, 0, 10).await.ctx("read_stream")?.is_empty(),
        "refused batches must write nothing"
    );
    if let Some(logged) = in_log(&*h, &s).await? {
        ensure!(
            logged.is_empty(),
            "refused batches must not reach read_all: {logged:?}"
        );
    }
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------------------
// Concurrency (9-11)
// ---------------------------------------------------------------------------------------

/// 8 concurrent writers x 10 batches of 3 with Any on one stream: every batch gets
/// contiguous versions, none interleave, all 240 land once, and read_all keeps stream order
/// (9).
pub async fn concurrent_writers_never_interleave(h: Arc<dyn Harness>) -> Outcome {
    const TASKS: u64 = 8;
    const BATCHES: u64 = 10;
    const SIZE: u64 = 3;
    let s = h.namespace().stream("interleave");
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let es = h.stores().events.clone();
        let s = s.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut done = Vec::new();
            for b in 0..BATCHES {
                let batch = events(t * 1000 + b * 10, SIZE);
                let out = es
                    .append(&s, ExpectedVersion::Any, batch.clone())
                    .await
                    .ctx("concurrent append with Any")?;
                done.push((out, batch_ids(&batch)));
            }
            Ok::<_, Failure>(done)
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(join_task(task).await?);
    }
    let es = &*h.stores().events;
    let read = read_stream_to_end(es, &s, 1000).await?;
    let total = TASKS * BATCHES * SIZE;
    ensure_eq!(
        recorded_versions(&read),
        (1..=total).collect::<Vec<_>>(),
        "versions after concurrent appends"
    );
    for (out, ids) in &outcomes {
        ensure_eq!(
            out.next_expected,
            out.first_version + SIZE - 1,
            "a batch of {SIZE} gets a contiguous range"
        );
        let lo = usize::try_from(out.first_version - 1).unwrap_or(usize::MAX);
        let slice = read.get(lo..lo + ids.len()).unwrap_or_default();
        ensure_eq!(
            recorded_ids(slice),
            *ids,
            "events at versions {}..={} are exactly one batch, in order",
            out.first_version,
            out.next_expected
        );
        ensure_eq!(
            slice.last().map(|e| e.position),
            out.position,
            "the outcome's position is its last event's"
        );
    }
    ensure_positions_ascend(&read, "positions of one stream")?;
    if let Some(logged) = in_log(&*h, &s).await? {
        ensure_eq!(
            recorded_versions(&logged),
            (1..=total).collect::<Vec<_>>(),
            "read_all keeps the stream's order"
        );
    }
    Ok(Verdict::Passed)
}

/// Runs `n` concurrent appends at `expected`, each with its own 2-event batch; returns each
/// batch's ids with its result.
async fn race(
    h: &Arc<dyn Harness>,
    s: &StreamId,
    expected: ExpectedVersion,
    n: usize,
) -> Result<Vec<(Vec<cqrs_core::EventId>, cqrs_core::Result<AppendOutcome>)>, Failure> {
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let es = h.stores().events.clone();
        let s = s.clone();
        let barrier = barrier.clone();
        let batch = events(u64::try_from(i).unwrap_or(0) * 10, 2);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let ids = batch_ids(&batch);
            Ok::<_, Failure>((ids, es.append(&s, expected, batch).await))
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(join_task(task).await?);
    }
    Ok(results)
}

/// 8 concurrent appenders at the same expectation (NoStream, then Exact): exactly one wins,
/// the 7 others get Conflict with the winner's version, and only the winner's events are
/// stored (10).
pub async fn exactly_one_of_concurrent_appenders_wins(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    let s = h.namespace().stream("race");
    let mut stored = Vec::new();
    for (round, expected) in [ExpectedVersion::NoStream, ExpectedVersion::Exact(2)]
        .into_iter()
        .enumerate()
    {
        let results = race(&h, &s, expected, 8).await?;
        let after = StreamState::Live(u64::try_from(round + 1).unwrap_or(0) * 2);
        let mut winners = 0;
        for (ids, result) in results {
            match result {
                Ok(out) => {
                    winners += 1;
                    ensure_eq!(
                        out.next_expected,
                        after.last_version().unwrap_or(0),
                        "the winner's next_expected"
                    );
                    stored.extend(ids);
                }
                r @ Err(_) => expect_conflict(r, &s, expected, after, "a losing concurrent appender")?,
            }
        }
        ensure_eq!(winners, 1, "winners among 8 appenders at {expected:?}");
        ensure_eq!(state(&*es, &s).await?, after, "state after round {round}");
    }
    let read = es.read_stream(&s, 1, 100).await.ctx("read_stream")?;
    ensure_eq!(recorded_ids(&read), stored, "only the winners' events are stored");
    Ok(Verdict::Passed)
}

/// 8 tasks appending concurrently to 8 different streams (10 appends each, Exact chain)
/// all succeed (11).
pub async fn concurrent_appends_to_different_streams_succeed(h: Arc<dyn Harness>) -> Outcome {
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let es = h.stores().events.clone();
        let s = h.namespace().stream(&format!("parallel-{t}"));
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut expected = ExpectedVersion::NoStream;
            for i in 0..10u64 {
                let out = es
                    .append(&s, expected, events(i, 1))
                    .await
                    .ctx(&format!("append {i} to stream {t}"))?;
                ensure_eq!(out.first_version, i + 1, "version of append {i} to stream {t}");
                expected = ExpectedVersion::Exact(out.next_expected);
            }
            Ok::<_, Failure>(s)
        }));
    }
    for task in tasks {
        let s = join_task(task).await?;
        ensure_eq!(
            state(&*h.stores().events, &s).await?,
            StreamState::Live(10),
            "state of {s}"
        );
    }
    Ok(Verdict::Passed)
}

/// An empty append checks the expectation (Conflict if it fails), writes nothing, returns
/// first_version = current + 1, next_expected = current, no position, and leaves a missing
/// stream Missing (12).
pub async fn empty_append_checks_expectation_and_writes_nothing(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("empty");
    let empty_on_missing = AppendOutcome {
        first_version: 1,
        next_expected: 0,
        position: None,
    };
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        ExpectedVersion::Exact(0),
    ] {
        let out = es
            .append(&s, expected, Vec::new())
            .await
            .ctx(&format!("empty append {expected:?} to a missing stream"))?;
        ensure_eq!(
            out,
            empty_on_missing,
            "empty append {expected:?} to a missing stream"
        );
    }
    for expected in [ExpectedVersion::StreamExists, ExpectedVersion::Exact(2)] {
        let r = es.append(&s, expected, Vec::new()).await;
        expect_conflict(
            r,
            &s,
            expected,
            StreamState::Missing,
            "empty append to a missing stream",
        )?;
    }
    ensure_eq!(
        state(es, &s).await?,
        StreamState::Missing,
        "a missing stream stays Missing"
    );
    ensure!(
        list_streams_to_end(es, 100).await?.iter().all(|l| l != &s),
        "an empty append must not list the stream"
    );

    es.append(&s, ExpectedVersion::NoStream, events(0, 2))
        .await
        .ctx("seed")?;
    let on_live = AppendOutcome {
        first_version: 3,
        next_expected: 2,
        position: None,
    };
    for expected in [
        ExpectedVersion::Exact(2),
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
    ] {
        let out = es
            .append(&s, expected, Vec::new())
            .await
            .ctx(&format!("empty append {expected:?} to a stream at 2"))?;
        ensure_eq!(out, on_live, "empty append {expected:?} to a stream at 2");
    }
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(1)] {
        let r = es.append(&s, expected, Vec::new()).await;
        expect_conflict(
            r,
            &s,
            expected,
            StreamState::Live(2),
            "empty append to a stream at 2",
        )?;
    }
    ensure_eq!(
        state(es, &s).await?,
        StreamState::Live(2),
        "state after empty appends"
    );
    ensure_eq!(
        es.read_stream(&s, 0, 10).await.ctx("read_stream")?.len(),
        2,
        "events after empty appends"
    );
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------------------
// Stream names (15)
// ---------------------------------------------------------------------------------------

/// Stream names with `/ % _ { } * ? [ ] \ ' "`, spaces, 4-byte and combining Unicode
/// round-trip as distinct streams (no normalisation), list once each, and prefix filters
/// treat them literally (15).
pub async fn hostile_stream_names_round_trip(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let ns = h.namespace().as_str();
    let hostile = [
        "/",
        "a/b",
        "%",
        "%2F",
        "_",
        "%_",
        "{",
        "}",
        "{tag}",
        "}{",
        " ",
        "two  spaces",
        "😀",
        "ü",
        "e\u{301}",
        "\u{e9}",
        "*",
        "?",
        "[a]",
        "[",
        "\\",
        "'",
        "\"",
        "';--",
        "$1",
        ".",
        "..",
        ":",
        "::",
        "\u{202e}rtl",
        "\u{200b}",
        "#",
        "&=+",
    ];
    let mut names = Vec::new();
    for (i, tail) in hostile.iter().enumerate() {
        let s = stream_id(format!("{ns}|{tail}"))?;
        let n = u64::try_from(i).unwrap_or(0);
        let out = es
            .append(&s, ExpectedVersion::NoStream, vec![event("Named", n)])
            .await
            .ctx(&format!("append to {s:?}"))?;
        ensure_eq!(out.first_version, 1, "first version of {s:?}");
        names.push((s, n));
    }
    for (s, n) in &names {
        let read = es.read_stream(s, 1, 10).await.ctx("read_stream")?;
        ensure_eq!(
            read.len(),
            1,
            "events in {s:?} (a normalising or escaping store merges names)"
        );
        ensure_eq!(&read[0].stream_id, s, "stream id read back");
        ensure_eq!(
            read[0].data.payload,
            event("Named", *n).payload,
            "payload of {s:?}"
        );
        ensure_eq!(state(es, s).await?, StreamState::Live(1), "state of {s:?}");
    }
    let listed = list_streams_to_end(es, 7).await?;
    for (s, _) in &names {
        ensure_eq!(
            listed.iter().filter(|l| *l == s).count(),
            1,
            "times {s:?} is listed"
        );
    }
    if es.capabilities().has_store_wide_log() {
        for p in ["%", "_", "*", "?", "[", "\\", "{", "e"] {
            let prefix = format!("{ns}|{p}");
            let (got, _) = read_all_to_end(
                &*h,
                es,
                &Checkpoint::origin(),
                100,
                &EventFilter::stream_prefix(&*prefix),
            )
            .await?;
            let got: BTreeSet<&str> = got.iter().map(|e| e.stream_id.as_str()).collect();
            let want: BTreeSet<&str> = names
                .iter()
                .map(|(s, _)| s.as_str())
                .filter(|s| s.starts_with(&prefix))
                .collect();
            ensure_eq!(got, want, "streams matched by the literal prefix {prefix:?}");
        }
    }
    Ok(Verdict::Passed)
}

/// A 1024-byte stream id of 4-byte characters works end to end, and a 1025-byte one is
/// InvalidInput (15).
pub async fn stream_id_length_limit_is_in_bytes(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let ns = h.namespace().as_str();
    let pad = MAX_NAME_BYTES - ns.len() - 2;
    let name = format!("{ns}/{}{}", "_".repeat(1 + pad % 4), "😀".repeat(pad / 4));
    ensure_eq!(name.len(), MAX_NAME_BYTES, "length of the test name");
    let s = stream_id(name.clone())?;
    es.append(&s, ExpectedVersion::NoStream, events(0, 2))
        .await
        .ctx("append to a 1024-byte stream id")?;
    let read = es.read_stream(&s, 1, 10).await.ctx("read_stream")?;
    ensure_eq!(read.len(), 2, "events of the 1024-byte stream");
    ensure_eq!(
        read[0].stream_id.as_str(),
        name.as_str(),
        "the long id round-trips"
    );
    ensure_eq!(state(es, &s).await?, StreamState::Live(2), "state");
    ensure!(
        list_streams_to_end(es, 100).await?.contains(&s),
        "the 1024-byte stream is listed"
    );
    ensure_err!(
        StreamId::new(format!("{name}x")),
        Error::InvalidInput { .. },
        "a 1025-byte stream id"
    );
    ensure_err!(
        StreamId::new(""),
        Error::InvalidInput { .. },
        "an empty stream id"
    );
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------------------
// Reads (22-29)
// ---------------------------------------------------------------------------------------

/// Every field round-trips byte for byte (id, type, schema version, payload, content type
/// and encoding, metadata); versions and positions are set; recorded_at falls in the
/// test's wall-clock window +/- 1 s (stores run on the system clock in the harness); the
/// same record comes back forward, backward and from read_all (22).
pub async fn event_fields_round_trip(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("fields");
    let gzip_json = compression::compress(ContentEncoding::Gzip, br#"{"zipped":true}"#).ctx("gzip")?;
    let zlib = compression::compress(ContentEncoding::Zlib, &[0u8, 1, 2, 3, 255]).ctx("zlib")?;
    // {"a": 1} as BSON.
    let bson: &[u8] = &[12, 0, 0, 0, 0x10, b'a', 0, 1, 0, 0, 0, 0];
    let sent = vec![
        rich_event(),
        EventData::new("Plain", ContentType::Json, r#"{ "b":1,  "a":[2, 1.0] }"#),
        EventData::new("Zipped", ContentType::Json, gzip_json).with_encoding(ContentEncoding::Gzip),
        EventData::new("Bson", ContentType::Bson, Bytes::copy_from_slice(bson)),
        EventData::new("Zlib", ContentType::Opaque, zlib).with_encoding(ContentEncoding::Zlib),
        EventData::new("Empty", ContentType::Opaque, Bytes::new()),
    ];
    let start = wall_clock_now();
    let out = es
        .append(&s, ExpectedVersion::NoStream, sent.clone())
        .await
        .ctx("append")?;
    let end = wall_clock_now();
    let read = es.read_stream(&s, 1, 100).await.ctx("read_stream")?;
    ensure_eq!(read.len(), sent.len(), "events read back");
    for (i, (r, d)) in read.iter().zip(&sent).enumerate() {
        ensure_eq!(&r.data, d, "event {i} read back (every EventData field)");
        ensure_eq!(&r.stream_id, &s, "stream_id of event {i}");
        ensure_eq!(
            r.version,
            u64::try_from(i + 1).unwrap_or(0),
            "version of event {i}"
        );
        let lo = start.as_millis() - 1000;
        let hi = end.as_millis() + 1000;
        ensure!(
            (lo..=hi).contains(&r.recorded_at.as_millis()),
            "recorded_at {} of event {i} is outside the append's wall-clock window {}..={} ms",
            r.recorded_at,
            start.as_millis(),
            end.as_millis()
        );
    }
    ensure_eq!(
        read.last().map(|e| e.position),
        out.position,
        "the outcome's position"
    );
    ensure_positions_ascend(&read, "positions of one batch")?;
    let mut backward = es
        .read_stream_backward(&s, None, 100)
        .await
        .ctx("read_stream_backward")?;
    backward.reverse();
    ensure_eq!(backward, read, "read backward, reversed, equals the forward read");
    if let Some(logged) = in_log(&*h, &s).await? {
        ensure_eq!(logged, read, "read_all returns the same records");
    }
    Ok(Verdict::Passed)
}

/// Forward reads: from the head, from N, with a count, from 0, at and past the end (23).
pub async fn read_forward_ranges(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("forward");
    let mut sent = events(0, 4);
    es.append(&s, ExpectedVersion::NoStream, sent.clone())
        .await
        .ctx("append")?;
    let more = events(4, 6);
    es.append(&s, ExpectedVersion::Exact(4), more.clone())
        .await
        .ctx("append")?;
    sent.extend(more);
    let cases: [(u64, usize, Vec<u64>); 7] = [
        (1, 100, (1..=10).collect()),
        (0, 100, (1..=10).collect()),
        (1, 3, vec![1, 2, 3]),
        (4, 3, vec![4, 5, 6]),
        (9, 5, vec![9, 10]),
        (10, 5, vec![10]),
        (11, 5, vec![]),
    ];
    for (from, max, want) in cases {
        let read = es.read_stream(&s, from, max).await.ctx("read_stream")?;
        ensure_eq!(
            recorded_versions(&read),
            want,
            "read_stream(from {from}, max {max})"
        );
        for r in &read {
            let i = usize::try_from(r.version - 1).unwrap_or(usize::MAX);
            ensure_eq!(
                Some(r.event_id()),
                sent.get(i).map(|e| e.event_id),
                "id at version {}",
                r.version
            );
        }
    }
    Ok(Verdict::Passed)
}

/// Backward reads: from the end, from N, with a count, past the end, and from 0 (24).
pub async fn read_backward_ranges(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("backward");
    let sent = events(0, 10);
    es.append(&s, ExpectedVersion::NoStream, sent.clone())
        .await
        .ctx("append")?;
    let cases: [(Option<u64>, usize, Vec<u64>); 7] = [
        (None, 100, (1..=10).rev().collect()),
        (None, 3, vec![10, 9, 8]),
        (Some(5), 2, vec![5, 4]),
        (Some(10), 1, vec![10]),
        (Some(100), 3, vec![10, 9, 8]),
        (Some(1), 5, vec![1]),
        (Some(0), 5, vec![]),
    ];
    for (from, max, want) in cases {
        let read = es
            .read_stream_backward(&s, from, max)
            .await
            .ctx("read_stream_backward")?;
        ensure_eq!(
            recorded_versions(&read),
            want,
            "read_stream_backward(from {from:?}, max {max})"
        );
        for r in &read {
            let i = usize::try_from(r.version - 1).unwrap_or(usize::MAX);
            ensure_eq!(
                Some(r.event_id()),
                sent.get(i).map(|e| e.event_id),
                "id at version {}",
                r.version
            );
        }
    }
    Ok(Verdict::Passed)
}

/// Paging over more than one page (manual pages forward and backward, and
/// `EventStoreExt::stream_events` with small pages) returns every event once, in order (25).
pub async fn paging_returns_everything_once(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("paging");
    let mut sent = Vec::new();
    let mut expected = ExpectedVersion::NoStream;
    for (start, n) in [(0u64, 10u64), (10, 10), (20, 5)] {
        let batch = events(start, n);
        let out = es.append(&s, expected, batch.clone()).await.ctx("append")?;
        expected = ExpectedVersion::Exact(out.next_expected);
        sent.extend(batch_ids(&batch));
    }
    let forward = read_stream_to_end(es, &s, 7).await?;
    ensure_eq!(recorded_ids(&forward), sent, "pages of 7, forward");

    let mut backward = Vec::new();
    let mut from = None;
    for _ in 0..100 {
        let page = es
            .read_stream_backward(&s, from, 4)
            .await
            .ctx("read_stream_backward")?;
        let Some(last) = page.last().map(|e| e.version) else {
            break;
        };
        ensure!(page.len() <= 4, "a backward page of max 4 holds {}", page.len());
        backward.extend(page);
        if last == 1 {
            break;
        }
        from = Some(last - 1);
    }
    backward.reverse();
    ensure_eq!(recorded_ids(&backward), sent, "pages of 4, backward");

    let all: Vec<RecordedEvent> = es
        .stream_events(&s, 1, 4)
        .try_collect()
        .await
        .ctx("stream_events")?;
    ensure_eq!(recorded_ids(&all), sent, "stream_events with pages of 4");
    let tail: Vec<RecordedEvent> = es
        .stream_events(&s, 11, 3)
        .try_collect()
        .await
        .ctx("stream_events")?;
    ensure_eq!(recorded_ids(&tail), sent[10..].to_vec(), "stream_events from 11");
    Ok(Verdict::Passed)
}

/// Pages stop at the read byte limit but always hold at least one event: three 6 MiB
/// events (over the default 16 MiB page) come back complete, once each, forward and
/// backward (25).
pub async fn pages_respect_the_byte_limit(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("byte-pages");
    let sent: Vec<EventData> = (0..3u8).map(|i| sized_event(6 * 1024 * 1024, i)).collect();
    let mut expected = ExpectedVersion::NoStream;
    for e in &sent {
        let out = es
            .append(&s, expected, vec![e.clone()])
            .await
            .ctx("append a 6 MiB event")?;
        expected = ExpectedVersion::Exact(out.next_expected);
    }
    // Three 6 MiB events against the default 16 MiB page limit: a page holds the two that
    // fit and never exceeds the limit.
    let first = es.read_stream(&s, 1, 10).await.ctx("read_stream")?;
    ensure_eq!(
        recorded_versions(&first),
        vec![1, 2],
        "first forward page under the byte limit"
    );
    let last = es
        .read_stream_backward(&s, None, 10)
        .await
        .ctx("read_stream_backward")?;
    ensure_eq!(
        recorded_versions(&last),
        vec![3, 2],
        "first backward page under the byte limit"
    );
    let one = es.read_stream(&s, 3, 10).await.ctx("read_stream")?;
    ensure_eq!(recorded_versions(&one), vec![3], "a page of one event at the end");
    if es.capabilities().has_store_wide_log() {
        settle(&*h).await?;
        let filter = EventFilter::stream_prefix(s.as_str());
        let page = es
            .read_all(&Checkpoint::origin(), 10, &filter)
            .await
            .ctx("read_all")?;
        let bytes: usize = page.events.iter().map(|e| e.data.encoded_len()).sum();
        ensure!(
            page.events.len() == 1 || bytes <= cqrs_core::Limits::DEFAULT_MAX_READ_BYTES,
            "a read_all page of {} events holds {bytes} bytes, over the limit",
            page.events.len()
        );
    }
    let all: Vec<RecordedEvent> = es
        .stream_events(&s, 1, 10)
        .try_collect()
        .await
        .ctx("stream_events")?;
    ensure_eq!(all.len(), 3, "events paged forward");
    for (r, d) in all.iter().zip(&sent) {
        ensure!(r.data == *d, "a 6 MiB event (version {}) round-trips", r.version);
    }
    let mut from = None;
    let mut back = Vec::new();
    for _ in 0..10 {
        let page = es
            .read_stream_backward(&s, from, 10)
            .await
            .ctx("read_stream_backward")?;
        let Some(last) = page.last().map(|e| e.version) else {
            break;
        };
        back.extend(recorded_versions(&page));
        if last == 1 {
            break;
        }
        from = Some(last - 1);
    }
    ensure_eq!(back, vec![3, 2, 1], "versions paged backward");
    Ok(Verdict::Passed)
}

/// A missing stream reads empty (forward and backward), is Missing, and is not listed
/// (26, 27).
pub async fn missing_stream_reads_empty(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("never-written");
    ensure!(
        es.read_stream(&s, 0, 10).await.ctx("read_stream")?.is_empty(),
        "read_stream of a missing stream"
    );
    ensure!(
        es.read_stream_backward(&s, None, 10)
            .await
            .ctx("read_stream_backward")?
            .is_empty(),
        "read_stream_backward(None) of a missing stream"
    );
    ensure!(
        es.read_stream_backward(&s, Some(5), 10)
            .await
            .ctx("read_stream_backward")?
            .is_empty(),
        "read_stream_backward(Some(5)) of a missing stream"
    );
    ensure_eq!(state(es, &s).await?, StreamState::Missing, "stream_state");
    ensure!(
        !list_streams_to_end(es, 100).await?.contains(&s),
        "a missing stream is not listed"
    );
    Ok(Verdict::Passed)
}

/// stream_state follows a stream's life: Missing, Missing after an empty append, Live(n),
/// SoftDeleted(n), Live again with numbering continued, Tombstoned (27).
pub async fn stream_state_follows_the_lifecycle(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("life");
    ensure_eq!(state(es, &s).await?, StreamState::Missing, "before any append");
    es.append(&s, ExpectedVersion::Any, Vec::new())
        .await
        .ctx("empty append")?;
    ensure_eq!(
        state(es, &s).await?,
        StreamState::Missing,
        "after an empty append"
    );
    es.append(&s, ExpectedVersion::NoStream, events(0, 2))
        .await
        .ctx("append")?;
    ensure_eq!(state(es, &s).await?, StreamState::Live(2), "after 2 events");
    es.delete_stream(&s, ExpectedVersion::Exact(2), DeleteMode::Soft)
        .await
        .ctx("soft delete")?;
    ensure_eq!(
        state(es, &s).await?,
        StreamState::SoftDeleted(2),
        "after a soft delete"
    );
    es.append(&s, ExpectedVersion::Any, Vec::new())
        .await
        .ctx("empty append")?;
    ensure_eq!(
        state(es, &s).await?,
        StreamState::SoftDeleted(2),
        "after an empty append to a soft-deleted stream"
    );
    es.append(&s, ExpectedVersion::Any, events(2, 1))
        .await
        .ctx("append after soft delete")?;
    ensure_eq!(state(es, &s).await?, StreamState::Live(3), "after re-append");
    es.delete_stream(&s, ExpectedVersion::Any, DeleteMode::Tombstone)
        .await
        .ctx("tombstone")?;
    ensure_eq!(state(es, &s).await?, StreamState::Tombstoned, "after a tombstone");
    Ok(Verdict::Passed)
}

/// read_stream_backward(None, 1) returns just the last event, and follows later appends
/// (28).
pub async fn read_last_event_only(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("last");
    let batch = events(0, 5);
    es.append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .ctx("append")?;
    let last = es
        .read_stream_backward(&s, None, 1)
        .await
        .ctx("read_stream_backward")?;
    ensure_eq!(recorded_versions(&last), vec![5], "the last event's version");
    ensure_eq!(recorded_ids(&last), batch_ids(&batch[4..]), "the last event's id");
    let next = event("Later", 6);
    es.append(&s, ExpectedVersion::Exact(5), vec![next.clone()])
        .await
        .ctx("append")?;
    let last = es
        .read_stream_backward(&s, None, 1)
        .await
        .ctx("read_stream_backward")?;
    ensure_eq!(recorded_versions(&last), vec![6], "the new last version");
    ensure_eq!(last.first().map(|e| &e.data), Some(&next), "the new last event");
    Ok(Verdict::Passed)
}

/// A payload of 256 KiB (every byte value) and metadata and type names in 4-byte,
/// right-to-left, combining and quoted Unicode round-trip exactly (29).
pub async fn large_payload_and_unicode_metadata_round_trip(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("large");
    let mut md = Metadata {
        correlation_id: Some("相関-😀-ü".into()),
        causation_id: Some("\u{5d0}\u{5d1}\u{5d2} עברית".into()),
        actor: Some("عامل 'x' \"y\" \\z".into()),
        ..Metadata::default()
    };
    md.extra
        .insert("ключ 🔑".into(), "значение 👩\u{200d}👩\u{200d}👧".into());
    md.extra.insert("e\u{301}".into(), "combining".into());
    md.extra.insert("\u{e9}".into(), "precomposed".into());
    md.extra
        .insert("json-ish".into(), "{\"a\": [1, 2]} ${x} %s".into());
    let big = sized_event(256 * 1024, 0x5a).with_metadata(md.clone());
    let mut json_big = String::from("{\"items\":[");
    for i in 0..5000 {
        json_big.push_str(&format!("{{\"i\":{i},\"s\":\"😀ü\"}},"));
    }
    json_big.push_str("null]}");
    let typed = EventData::new("Größe.Änderung😀", ContentType::Json, json_big).with_metadata(md);
    ensure!(
        typed.payload.len() >= 100 * 1024,
        "the JSON payload is at least 100 KB"
    );
    let sent = vec![big, typed];
    es.append(&s, ExpectedVersion::NoStream, sent.clone())
        .await
        .ctx("append")?;
    let read = es.read_stream(&s, 1, 10).await.ctx("read_stream")?;
    ensure_eq!(read.len(), 2, "events read back");
    for (r, d) in read.iter().zip(&sent) {
        ensure!(
            r.data == *d,
            "event {} does not round-trip: type {:?}, payload {} bytes (sent {}), metadata {:?}",
            r.version,
            r.data.event_type,
            r.data.payload.len(),
            d.payload.len(),
            r.data.metadata
        );
    }
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------------------
// Deletion and truncation (31-36)
// ---------------------------------------------------------------------------------------

/// Soft delete: state SoftDeleted(v), reads empty, hidden from read_all and list_streams,
/// snapshots deleted; StreamExists then conflicts, while NoStream, Any and Exact(v)
/// recreate the stream with numbering from v + 1 and only the new events visible (31, 36,
/// 55).
pub async fn soft_delete_hides_and_numbering_continues(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let snaps = &*h.stores().snapshots;
    for (label, expected) in [
        ("soft-nostream", ExpectedVersion::NoStream),
        ("soft-any", ExpectedVersion::Any),
        ("soft-exact", ExpectedVersion::Exact(3)),
    ] {
        let s = h.namespace().stream(label);
        es.append(&s, ExpectedVersion::NoStream, events(0, 3))
            .await
            .ctx("seed")?;
        snaps.save(snapshot(&s, 3)).await.ctx("snapshot save")?;
        es.delete_stream(&s, ExpectedVersion::Exact(3), DeleteMode::Soft)
            .await
            .ctx("soft delete")?;
        ensure_eq!(
            state(es, &s).await?,
            StreamState::SoftDeleted(3),
            "state after soft delete"
        );
        ensure!(
            es.read_stream(&s, 0, 10).await.ctx("read_stream")?.is_empty(),
            "read_stream of a soft-deleted stream is empty"
        );
        ensure!(
            es.read_stream_backward(&s, None, 10)
                .await
                .ctx("read_stream_backward")?
                .is_empty(),
            "read_stream_backward of a soft-deleted stream is empty"
        );
        ensure!(
            !list_streams_to_end(es, 100).await?.contains(&s),
            "a soft-deleted stream is not listed"
        );
        if let Some(logged) = in_log(&*h, &s).await? {
            ensure!(
                logged.is_empty(),
                "read_all hides a soft-deleted stream's events: {logged:?}"
            );
        }
        ensure_eq!(
            snaps.load_latest(&s).await.ctx("snapshot load_latest")?,
            None,
            "snapshots of a soft-deleted stream"
        );
        let r = es.append(&s, ExpectedVersion::StreamExists, events(10, 1)).await;
        expect_conflict(
            r,
            &s,
            ExpectedVersion::StreamExists,
            StreamState::SoftDeleted(3),
            "StreamExists on a soft-deleted stream",
        )?;

        let again = events(20, 2);
        let out = es
            .append(&s, expected, again.clone())
            .await
            .ctx(&format!("re-append with {expected:?}"))?;
        ensure_eq!(
            (out.first_version, out.next_expected),
            (4, 5),
            "numbering after re-append with {expected:?}"
        );
        ensure_eq!(
            state(es, &s).await?,
            StreamState::Live(5),
            "state after re-append"
        );
        let read = es.read_stream(&s, 0, 10).await.ctx("read_stream")?;
        ensure_eq!(
            recorded_versions(&read),
            vec![4, 5],
            "only the new events are visible"
        );
        ensure_eq!(recorded_ids(&read), batch_ids(&again), "ids of the new events");
        let back = es
            .read_stream_backward(&s, None, 10)
            .await
            .ctx("read_stream_backward")?;
        ensure_eq!(recorded_versions(&back), vec![5, 4], "backward after re-append");
        if let Some(logged) = in_log(&*h, &s).await? {
            ensure_eq!(
                recorded_versions(&logged),
                vec![4, 5],
                "read_all after re-append shows only the new events"
            );
        }
        ensure!(
            list_streams_to_end(es, 100).await?.contains(&s),
            "a re-created stream is listed again"
        );
    }
    Ok(Verdict::Passed)
}

/// Tombstone: state Tombstoned; reads, appends (including empty ones) and a second delete
/// fail with StreamDeleted; events leave read_all and list_streams; snapshots are deleted
/// (32, 36, 55).
pub async fn tombstone_refuses_reads_and_writes(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let snaps = &*h.stores().snapshots;
    let s = h.namespace().stream("tomb");
    let batch = events(0, 2);
    es.append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .ctx("seed")?;
    snaps.save(snapshot(&s, 2)).await.ctx("snapshot save")?;
    es.delete_stream(&s, ExpectedVersion::Exact(2), DeleteMode::Tombstone)
        .await
        .ctx("tombstone")?;
    ensure_eq!(state(es, &s).await?, StreamState::Tombstoned, "stream_state");
    ensure_err!(
        es.read_stream(&s, 0, 10).await,
        Error::StreamDeleted { .. },
        "read_stream of a tombstoned stream"
    );
    ensure_err!(
        es.read_stream_backward(&s, None, 10).await,
        Error::StreamDeleted { .. },
        "read_stream_backward of a tombstoned stream"
    );
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(2),
    ] {
        ensure_err!(
            es.append(&s, expected, events(5, 1)).await,
            Error::StreamDeleted { .. },
            "append {expected:?} to a tombstoned stream"
        );
        ensure_err!(
            es.append(&s, expected, Vec::new()).await,
            Error::StreamDeleted { .. },
            "empty append {expected:?} to a tombstoned stream"
        );
    }
    ensure_err!(
        es.append(&s, ExpectedVersion::Any, batch).await,
        Error::StreamDeleted { .. },
        "re-sending the committed batch to a tombstoned stream"
    );
    for mode in [DeleteMode::Soft, DeleteMode::Tombstone] {
        ensure_err!(
            es.delete_stream(&s, ExpectedVersion::Any, mode).await,
            Error::StreamDeleted { .. },
            "deleting a tombstoned stream again ({mode:?})"
        );
    }
    ensure_eq!(
        state(es, &s).await?,
        StreamState::Tombstoned,
        "state stays Tombstoned"
    );
    ensure!(
        !list_streams_to_end(es, 100).await?.contains(&s),
        "a tombstoned stream is not listed"
    );
    if let Some(logged) = in_log(&*h, &s).await? {
        ensure!(
            logged.is_empty(),
            "read_all drops a tombstoned stream's events: {logged:?}"
        );
    }
    ensure_eq!(
        snaps.load_latest(&s).await.ctx("snapshot load_latest")?,
        None,
        "snapshots of a tombstoned stream"
    );
    Ok(Verdict::Passed)
}

/// Deleting a missing stream with an expectation that holds is a no-op (it stays Missing,
/// even for a tombstone); a delete whose expectation fails is a Conflict and deletes
/// nothing (33).
pub async fn delete_missing_is_noop_and_wrong_expectation_conflicts(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let missing = h.namespace().stream("delete-missing");
    for (expected, mode) in [
        (ExpectedVersion::Any, DeleteMode::Soft),
        (ExpectedVersion::NoStream, DeleteMode::Soft),
        (ExpectedVersion::Any, DeleteMode::Tombstone),
        (ExpectedVersion::Exact(0), DeleteMode::Tombstone),
    ] {
        es.delete_stream(&missing, expected, mode)
            .await
            .ctx(&format!("delete a missing stream ({expected:?}, {mode:?})"))?;
        ensure_eq!(
            state(es, &missing).await?,
            StreamState::Missing,
            "a missing stream after delete ({expected:?}, {mode:?})"
        );
    }
    for expected in [ExpectedVersion::StreamExists, ExpectedVersion::Exact(3)] {
        let r = es.delete_stream(&missing, expected, DeleteMode::Soft).await;
        expect_conflict(
            r,
            &missing,
            expected,
            StreamState::Missing,
            "delete a missing stream",
        )?;
    }
    let out = es
        .append(&missing, ExpectedVersion::NoStream, events(0, 1))
        .await
        .ctx("append after no-op deletes")?;
    ensure_eq!(out.first_version, 1, "a no-op delete leaves numbering alone");

    let s = h.namespace().stream("delete-wrong");
    es.append(&s, ExpectedVersion::NoStream, events(0, 2))
        .await
        .ctx("seed")?;
    for mode in [DeleteMode::Soft, DeleteMode::Tombstone] {
        for expected in [
            ExpectedVersion::Exact(1),
            ExpectedVersion::Exact(3),
            ExpectedVersion::NoStream,
        ] {
            let r = es.delete_stream(&s, expected, mode).await;
            expect_conflict(
                r,
                &s,
                expected,
                StreamState::Live(2),
                &format!("delete ({mode:?}) with a wrong expectation"),
            )?;
        }
    }
    ensure_eq!(
        state(es, &s).await?,
        StreamState::Live(2),
        "state after refused deletes"
    );
    ensure_eq!(
        es.read_stream(&s, 0, 10).await.ctx("read_stream")?.len(),
        2,
        "events after refused deletes"
    );
    Ok(Verdict::Passed)
}

/// truncate_before(n) hides versions < n from forward, backward and read_all reads while
/// stream_state and numbering are unchanged; Unsupported where `Capabilities::truncate` is
/// not declared (34).
pub async fn truncate_before_hides_and_keeps_the_version(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("truncate");
    let batch = events(0, 5);
    es.append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .ctx("seed")?;
    if !es.capabilities().truncate {
        ensure_err!(
            es.truncate_before(&s, 3).await,
            Error::Unsupported { .. },
            "truncate_before without the truncate capability"
        );
        not_run!("needs Capabilities::truncate (truncate_before returned Unsupported as it should)");
    }
    es.truncate_before(&s, 3).await.ctx("truncate_before")?;
    ensure_eq!(
        state(es, &s).await?,
        StreamState::Live(5),
        "stream_state after truncation"
    );
    let read = es.read_stream(&s, 0, 10).await.ctx("read_stream")?;
    ensure_eq!(recorded_versions(&read), vec![3, 4, 5], "visible versions");
    ensure_eq!(recorded_ids(&read), batch_ids(&batch[2..]), "visible ids");
    let read = es.read_stream(&s, 2, 1).await.ctx("read_stream")?;
    ensure_eq!(recorded_versions(&read), vec![3], "read_stream(from 2, max 1)");
    let back = es
        .read_stream_backward(&s, None, 10)
        .await
        .ctx("read_stream_backward")?;
    ensure_eq!(
        recorded_versions(&back),
        vec![5, 4, 3],
        "backward after truncation"
    );
    let back = es
        .read_stream_backward(&s, Some(2), 10)
        .await
        .ctx("read_stream_backward")?;
    ensure!(back.is_empty(), "backward from a truncated version: {back:?}");
    if let Some(logged) = in_log(&*h, &s).await? {
        ensure_eq!(
            recorded_versions(&logged),
            vec![3, 4, 5],
            "read_all after truncation"
        );
    }
    let out = es
        .append(&s, ExpectedVersion::Exact(5), events(5, 1))
        .await
        .ctx("append after truncation")?;
    ensure_eq!(out.first_version, 6, "numbering continues after truncation");
    Ok(Verdict::Passed)
}

/// Soft-deleted and tombstoned streams are left out of list_streams and read_all while a
/// live stream stays; Admin::list_all_streams still shows all three with their states and
/// read_raw still holds the soft-deleted events (36).
pub async fn deleted_streams_leave_listing_and_global_read(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let live = h.namespace().stream("keep");
    let soft = h.namespace().stream("soft");
    let tomb = h.namespace().stream("tomb");
    let mut soft_batch = Vec::new();
    for s in [&live, &soft, &tomb] {
        let batch = events(0, 2);
        es.append(s, ExpectedVersion::NoStream, batch.clone())
            .await
            .ctx("seed")?;
        if s == &soft {
            soft_batch = batch;
        }
    }
    es.delete_stream(&soft, ExpectedVersion::Any, DeleteMode::Soft)
        .await
        .ctx("soft delete")?;
    es.delete_stream(&tomb, ExpectedVersion::Any, DeleteMode::Tombstone)
        .await
        .ctx("tombstone")?;
    let listed = list_streams_to_end(es, 2).await?;
    ensure!(listed.contains(&live), "the live stream is listed");
    ensure!(!listed.contains(&soft), "the soft-deleted stream is not listed");
    ensure!(!listed.contains(&tomb), "the tombstoned stream is not listed");
    if es.capabilities().has_store_wide_log() {
        let (all, _) = read_all_to_end(&*h, es, &Checkpoint::origin(), 3, &EventFilter::all()).await?;
        ensure_eq!(
            of_stream(&all, &live).len(),
            2,
            "the live stream's events in read_all"
        );
        ensure!(
            of_stream(&all, &soft).is_empty(),
            "soft-deleted events in read_all"
        );
        ensure!(of_stream(&all, &tomb).is_empty(), "tombstoned events in read_all");
    }
    let admin = &*h.stores().admin;
    let mut everything = Vec::new();
    let mut after: Option<StreamId> = None;
    for _ in 0..10_000 {
        let page = admin
            .list_all_streams(after.as_ref(), 50)
            .await
            .ctx("list_all_streams")?;
        let Some(last) = page.last().map(|(s, _)| s.clone()) else {
            break;
        };
        everything.extend(page);
        after = Some(last);
    }
    for (s, want) in [
        (&live, StreamState::Live(2)),
        (&soft, StreamState::SoftDeleted(2)),
        (&tomb, StreamState::Tombstoned),
    ] {
        let got: Vec<StreamState> = everything
            .iter()
            .filter(|(id, _)| id == s)
            .map(|(_, st)| *st)
            .collect();
        ensure_eq!(got, vec![want], "list_all_streams entry for {s}");
    }
    let raw = admin.read_raw(&soft, 1, 10).await.ctx("read_raw")?;
    ensure_eq!(
        recorded_ids(&raw),
        batch_ids(&soft_batch),
        "read_raw of a soft-deleted stream"
    );
    Ok(Verdict::Passed)
}

/// list_streams pages bytewise (ASCII case, digits, punctuation, 2- and 4-byte UTF-8) with
/// no duplicates or skips, and `after` resumes strictly after a name (36).
pub async fn list_streams_pages_bytewise(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let labels = [
        "a", "b", "B", "0", "~", "ü", "😀", "{", "a a", "aa", "Z", "_", "a-",
    ];
    let mut mine = Vec::new();
    for label in labels {
        let s = h.namespace().stream(label);
        es.append(&s, ExpectedVersion::NoStream, events(0, 1))
            .await
            .ctx("append")?;
        mine.push(s);
    }
    let whole = list_streams_to_end(es, 1000).await?;
    for limit in [1usize, 3, 5] {
        let paged = list_streams_to_end(es, limit).await?;
        ensure_eq!(paged, whole, "listing in pages of {limit} equals one big page");
    }
    let listed_mine: Vec<&StreamId> = whole.iter().filter(|s| mine.contains(s)).collect();
    let mut want: Vec<&StreamId> = mine.iter().collect();
    want.sort_by(|a, b| a.as_str().as_bytes().cmp(b.as_str().as_bytes()));
    ensure_eq!(listed_mine, want, "my streams, in bytewise order, once each");
    let pivot = want[want.len() / 2];
    let page = es.list_streams(Some(pivot), 1000).await.ctx("list_streams")?;
    ensure!(
        page.streams
            .iter()
            .all(|s| s.as_str().as_bytes() > pivot.as_str().as_bytes()),
        "list_streams(after {pivot:?}) must list only names after it"
    );
    let later: Vec<&StreamId> = page.streams.iter().filter(|s| mine.contains(s)).collect();
    ensure_eq!(
        later,
        want[want.len() / 2 + 1..].to_vec(),
        "my streams after {pivot:?}"
    );
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------------------
// Limits (8, `docs/DESIGN.md` section 2)
// ---------------------------------------------------------------------------------------

/// Oversized event, batch bytes and batch count are TooLarge with kind, limit and actual,
/// checked before anything else (even a failing expectation), and write nothing (8).
pub async fn oversized_input_is_refused_before_writing(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("limits");

    let count = Limits::DEFAULT_MAX_BATCH_COUNT + 1;
    let many = events(0, u64::try_from(count).unwrap_or(0));
    let r = es.append(&s, ExpectedVersion::Exact(7), many).await;
    expect_too_large(
        r,
        LimitKind::BatchCount,
        u64::try_from(count).unwrap_or(0),
        "a batch over the count limit (with a failing Exact(7))",
    )?;

    let big = sized_event(Limits::DEFAULT_MAX_EVENT_BYTES + 1, 1);
    let big_len = byte_len(&big);
    let r = es.append(&s, ExpectedVersion::NoStream, vec![big]).await;
    expect_too_large(r, LimitKind::EventBytes, big_len, "an event over the size limit")?;

    let half = Limits::DEFAULT_MAX_BATCH_BYTES / 2 + 1024;
    let pair = vec![sized_event(half, 2), sized_event(half, 3)];
    let pair_len: u64 = pair.iter().map(byte_len).sum();
    let r = es.append(&s, ExpectedVersion::Any, pair).await;
    expect_too_large(r, LimitKind::BatchBytes, pair_len, "a batch over the byte limit")?;

    ensure_eq!(
        state(es, &s).await?,
        StreamState::Missing,
        "state after refused appends"
    );
    ensure!(
        es.read_stream(&s, 0, 10).await.ctx("read_stream")?.is_empty(),
        "refused appends write nothing"
    );
    Ok(Verdict::Passed)
}

/// Versions above i64::MAX never panic: as an expectation they are Conflict or TooLarge,
/// as a read bound they read correctly or are refused, and an import at such a version is
/// TooLarge or InvalidInput with nothing written (`docs/DESIGN.md` section 2).
pub async fn versions_above_i64_are_refused(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let missing = h.namespace().stream("huge-missing");
    let s = h.namespace().stream("huge");
    es.append(&s, ExpectedVersion::NoStream, events(0, 2))
        .await
        .ctx("seed")?;
    for target in [&missing, &s] {
        for v in [u64::MAX, MAX_VERSION + 1] {
            ensure_err!(
                es.append(target, ExpectedVersion::Exact(v), events(10, 1)).await,
                Error::Conflict { .. } | Error::TooLarge { .. },
                "append with Exact({v})"
            );
            ensure_err!(
                es.delete_stream(target, ExpectedVersion::Exact(v), DeleteMode::Soft)
                    .await,
                Error::Conflict { .. } | Error::TooLarge { .. },
                "delete_stream with Exact({v})"
            );
        }
    }
    ensure_eq!(
        state(es, &missing).await?,
        StreamState::Missing,
        "the missing stream"
    );
    ensure_eq!(state(es, &s).await?, StreamState::Live(2), "the existing stream");
    match es.read_stream(&s, u64::MAX, 10).await {
        Ok(read) => ensure!(read.is_empty(), "read_stream from u64::MAX: {read:?}"),
        Err(Error::TooLarge { .. } | Error::InvalidInput { .. }) => {}
        Err(e) => return Err(Failure(format!("read_stream from u64::MAX: {e:?}"))),
    }
    match es.read_stream_backward(&s, Some(u64::MAX), 10).await {
        Ok(read) => ensure_eq!(
            recorded_versions(&read),
            vec![2, 1],
            "read_stream_backward from u64::MAX"
        ),
        Err(Error::TooLarge { .. } | Error::InvalidInput { .. }) => {}
        Err(e) => return Err(Failure(format!("read_stream_backward from u64::MAX: {e:?}"))),
    }
    let admin = &*h.stores().admin;
    let imported = h.namespace().stream("huge-import");
    for v in [MAX_VERSION + 1, u64::MAX] {
        let r = admin
            .import_commit(
                &imported,
                vec![ImportedEvent {
                    version: v,
                    recorded_at: Timestamp::from_millis(1_000),
                    data: event("Imported", 1),
                }],
            )
            .await;
        ensure_err!(
            r,
            Error::TooLarge { .. } | Error::InvalidInput { .. },
            "import_commit at version {v}"
        );
    }
    ensure!(
        admin.read_raw(&imported, 0, 10).await.ctx("read_raw")?.is_empty(),
        "a refused import writes nothing"
    );
    ensure_eq!(
        state(es, &imported).await?,
        StreamState::Missing,
        "after refused imports"
    );
    Ok(Verdict::Passed)
}

// ---------------------------------------------------------------------------------------
// Operator access (migrations)
// ---------------------------------------------------------------------------------------

/// Admin::import_commit keeps explicit versions, ids and recorded_at; re-importing the same
/// commit is a no-op; a gap is a Conflict; an overlap with other ids is refused; normal
/// appends continue after the imported version.
pub async fn admin_import_keeps_versions_ids_and_timestamps(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let admin = &*h.stores().admin;
    let s = h.namespace().stream("import");
    let commit = |from: u64, data: Vec<EventData>| -> Vec<ImportedEvent> {
        data.into_iter()
            .zip(from..)
            .map(|(data, version)| ImportedEvent {
                version,
                recorded_at: Timestamp::from_millis(1_600_000_000_000 + i64::try_from(version).unwrap_or(0)),
                data,
            })
            .collect()
    };
    let first = commit(1, vec![rich_event(), event("Imported", 2)]);
    admin
        .import_commit(&s, first.clone())
        .await
        .ctx("import_commit")?;
    admin
        .import_commit(&s, first.clone())
        .await
        .ctx("re-import of the same commit")?;
    let read = es.read_stream(&s, 0, 10).await.ctx("read_stream")?;
    ensure_eq!(read.len(), 2, "events after import and re-import");
    for (r, i) in read.iter().zip(&first) {
        ensure_eq!(r.version, i.version, "imported version");
        ensure_eq!(r.recorded_at, i.recorded_at, "imported recorded_at");
        ensure_eq!(&r.data, &i.data, "imported event");
    }
    ensure_eq!(state(es, &s).await?, StreamState::Live(2), "state after import");
    let r = admin.import_commit(&s, commit(4, vec![event("Gap", 4)])).await;
    ensure_err!(r, Error::Conflict { .. }, "import with a version gap");
    let r = admin
        .import_commit(&s, commit(2, vec![event("Overlap", 2)]))
        .await;
    ensure_err!(
        r,
        Error::Conflict { .. } | Error::IdempotencyMismatch { .. },
        "import overlapping other events"
    );
    admin
        .import_commit(&s, commit(3, vec![event("Next", 3)]))
        .await
        .ctx("import at current + 1")?;
    let out = es
        .append(&s, ExpectedVersion::Exact(3), events(0, 1))
        .await
        .ctx("append after import")?;
    ensure_eq!(out.first_version, 4, "append after import continues numbering");
    ensure_eq!(
        es.read_stream(&s, 0, 10).await.ctx("read_stream")?.len(),
        4,
        "events after import and append"
    );
    Ok(Verdict::Passed)
}

/// Admin::set_stream_state sets SoftDeleted(v) and Tombstoned with the same effect as a
/// delete, accepts Live(v) at the last version, and refuses a version that is not the last
/// with InvalidInput.
pub async fn admin_set_stream_state(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let admin = &*h.stores().admin;
    let soft = h.namespace().stream("set-soft");
    let tomb = h.namespace().stream("set-tomb");
    for s in [&soft, &tomb] {
        es.append(s, ExpectedVersion::NoStream, events(0, 3))
            .await
            .ctx("seed")?;
    }
    for bad in [
        StreamState::SoftDeleted(2),
        StreamState::Live(5),
        StreamState::SoftDeleted(4),
    ] {
        ensure_err!(
            admin.set_stream_state(&soft, bad).await,
            Error::InvalidInput { .. },
            "set_stream_state({bad:?}) on a stream at 3"
        );
    }
    admin
        .set_stream_state(&soft, StreamState::Live(3))
        .await
        .ctx("set Live(3) on a stream at 3")?;
    ensure_eq!(state(es, &soft).await?, StreamState::Live(3), "after set Live(3)");
    admin
        .set_stream_state(&soft, StreamState::SoftDeleted(3))
        .await
        .ctx("set SoftDeleted(3)")?;
    ensure_eq!(
        state(es, &soft).await?,
        StreamState::SoftDeleted(3),
        "after set SoftDeleted(3)"
    );
    ensure!(
        es.read_stream(&soft, 0, 10).await.ctx("read_stream")?.is_empty(),
        "reads after set SoftDeleted"
    );
    ensure_eq!(
        admin.read_raw(&soft, 1, 10).await.ctx("read_raw")?.len(),
        3,
        "read_raw after set SoftDeleted"
    );
    let out = es
        .append(&soft, ExpectedVersion::NoStream, events(3, 1))
        .await
        .ctx("append after set SoftDeleted")?;
    ensure_eq!(out.first_version, 4, "numbering continues after set SoftDeleted");

    admin
        .set_stream_state(&tomb, StreamState::Tombstoned)
        .await
        .ctx("set Tombstoned")?;
    ensure_eq!(
        state(es, &tomb).await?,
        StreamState::Tombstoned,
        "after set Tombstoned"
    );
    ensure_err!(
        es.read_stream(&tomb, 0, 10).await,
        Error::StreamDeleted { .. },
        "read after set Tombstoned"
    );
    ensure_err!(
        es.append(&tomb, ExpectedVersion::Any, events(3, 1)).await,
        Error::StreamDeleted { .. },
        "append after set Tombstoned"
    );
    Ok(Verdict::Passed)
}

/// Metadata holding a NUL character is refused before any write (PostgreSQL text cannot
/// hold it, so no backend accepts it), and the stream stays Missing.
pub async fn metadata_with_nul_is_refused(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("nul");
    let mut md = cqrs_core::Metadata {
        actor: Some("a\u{0}b".into()),
        ..Default::default()
    };
    let bad = event("Tested", 1).with_metadata(md.clone());
    ensure_err!(
        es.append(&s, ExpectedVersion::Any, vec![bad]).await,
        Error::InvalidInput { .. },
        "actor with NUL"
    );
    md.actor = None;
    md.extra.insert("k\u{0}".into(), "v".into());
    let bad = event("Tested", 1).with_metadata(md);
    ensure_err!(
        es.append(&s, ExpectedVersion::Any, vec![bad]).await,
        Error::InvalidInput { .. },
        "extra key with NUL"
    );
    ensure_eq!(
        state(es, &s).await?,
        StreamState::Missing,
        "stream after refused appends"
    );
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __event_store_tests {
    ($factory:expr) => {
        $crate::__tests!(
            $factory,
            event_store,
            [
                append_no_stream_starts_at_one,
                no_stream_on_existing_stream_conflicts,
                exact_current_version_succeeds,
                exact_lower_version_conflicts,
                exact_higher_version_conflicts_without_gap,
                exact_zero_means_no_stream,
                any_appends_to_missing_and_existing,
                stream_exists_requires_an_existing_stream,
                conflict_reports_actual_state,
                batch_with_one_bad_event_writes_nothing,
                concurrent_writers_never_interleave,
                exactly_one_of_concurrent_appenders_wins,
                concurrent_appends_to_different_streams_succeed,
                empty_append_checks_expectation_and_writes_nothing,
                hostile_stream_names_round_trip,
                stream_id_length_limit_is_in_bytes,
                event_fields_round_trip,
                read_forward_ranges,
                read_backward_ranges,
                paging_returns_everything_once,
                pages_respect_the_byte_limit,
                missing_stream_reads_empty,
                stream_state_follows_the_lifecycle,
                read_last_event_only,
                large_payload_and_unicode_metadata_round_trip,
                soft_delete_hides_and_numbering_continues,
                tombstone_refuses_reads_and_writes,
                delete_missing_is_noop_and_wrong_expectation_conflicts,
                truncate_before_hides_and_keeps_the_version,
                deleted_streams_leave_listing_and_global_read,
                list_streams_pages_bytewise,
                oversized_input_is_refused_before_writing,
                versions_above_i64_are_refused,
                admin_import_keeps_versions_ids_and_timestamps,
                admin_set_stream_state,
                metadata_with_nul_is_refused,
            ]
        );
    };
}
