//! Behaviours: lifecycle. Closing, isolation of names, concurrent first use, a second
//! client, calls dropped part-way, and round-trip budgets (`docs/CONFORMANCE.md` items 96-98 and
//! 100).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use cqrs_core::{
    Change, Checkpoint, CheckpointUpdate, ContentEncoding, ContentType, DeleteMode, Document, Error,
    EventFilter, ExpectedVersion, FieldType, Snapshot, StateExpectation, StreamId, StreamState,
};
use tokio::sync::Barrier;

use crate::{
    batch_ids, ensure, ensure_eq, ensure_err, events, join_task, not_run, read_stream_to_end, recorded_ids,
    wall_clock_now, Ctx, Failure, Harness, Namespace, Outcome, Verdict,
};

/// After the event store's `close()` every call of every store (events, snapshots, states,
/// read models, checkpoints and leases, admin) returns Closed (96).
pub async fn every_store_refuses_calls_after_close(h: Arc<dyn Harness>) -> Outcome {
    let st = h.stores();
    let ns = h.namespace();
    let s = ns.stream("closed");
    st.events
        .append(&s, ExpectedVersion::NoStream, events(0, 1))
        .await
        .ctx("append before close")?;
    st.events.close().await.ctx("close")?;

    let es = &*st.events;
    ensure_err!(
        es.append(&s, ExpectedVersion::Any, events(1, 1)).await,
        Error::Closed,
        "events.append"
    );
    ensure_err!(
        es.append(&s, ExpectedVersion::Any, Vec::new()).await,
        Error::Closed,
        "events.append (empty)"
    );
    ensure_err!(
        es.read_stream(&s, 1, 10).await,
        Error::Closed,
        "events.read_stream"
    );
    ensure_err!(
        es.read_stream_backward(&s, None, 10).await,
        Error::Closed,
        "events.read_stream_backward"
    );
    ensure_err!(es.stream_state(&s).await, Error::Closed, "events.stream_state");
    ensure_err!(
        es.read_all(&Checkpoint::origin(), 10, &EventFilter::all()).await,
        Error::Closed,
        "events.read_all"
    );
    ensure_err!(
        es.delete_stream(&s, ExpectedVersion::Any, DeleteMode::Soft).await,
        Error::Closed,
        "events.delete_stream"
    );
    ensure_err!(
        es.truncate_before(&s, 1).await,
        Error::Closed,
        "events.truncate_before"
    );
    ensure_err!(
        es.list_streams(None, 10).await,
        Error::Closed,
        "events.list_streams"
    );

    let snapshot = Snapshot {
        stream_id: s.clone(),
        version: 1,
        schema_revision: 1,
        payload: Bytes::from_static(b"{}"),
        content_type: ContentType::Json,
        content_encoding: ContentEncoding::Identity,
        taken_at: wall_clock_now(),
    };
    ensure_err!(st.snapshots.save(snapshot).await, Error::Closed, "snapshots.save");
    ensure_err!(
        st.snapshots.load_latest(&s).await,
        Error::Closed,
        "snapshots.load_latest"
    );
    ensure_err!(st.snapshots.list(None, 10).await, Error::Closed, "snapshots.list");

    let kind = ns.name("kind");
    ensure_err!(st.states.get(&kind, "id").await, Error::Closed, "states.get");
    ensure_err!(
        st.states
            .put(&kind, "id", StateExpectation::New, Bytes::from_static(b"v"))
            .await,
        Error::Closed,
        "states.put"
    );
    ensure_err!(
        st.states.list(&kind, None, 10).await,
        Error::Closed,
        "states.list"
    );

    let coll = ns.name("coll");
    ensure_err!(st.reads.get(&coll, "id").await, Error::Closed, "reads.get");
    ensure_err!(
        st.reads
            .upsert(&coll, Document::new("id", serde_json::json!({"a": 1})))
            .await,
        Error::Closed,
        "reads.upsert"
    );
    ensure_err!(
        st.reads.ensure_index(&coll, "a", FieldType::I64).await,
        Error::Closed,
        "reads.ensure_index"
    );

    let name = ns.name("projection");
    ensure_err!(
        st.checkpoints.load(&name).await,
        Error::Closed,
        "checkpoints.load"
    );
    ensure_err!(
        st.checkpoints.save(&name, &Checkpoint::origin(), 0).await,
        Error::Closed,
        "checkpoints.save"
    );
    ensure_err!(
        st.checkpoints
            .acquire(&name, "owner", Duration::from_secs(30))
            .await,
        Error::Closed,
        "checkpoints.acquire"
    );

    ensure_err!(
        st.admin.list_all_streams(None, 10).await,
        Error::Closed,
        "admin.list_all_streams"
    );
    ensure_err!(
        st.admin.read_raw(&s, 1, 10).await,
        Error::Closed,
        "admin.read_raw"
    );
    ensure_err!(
        st.admin.set_stream_state(&s, StreamState::Tombstoned).await,
        Error::Closed,
        "admin.set_stream_state"
    );
    Ok(Verdict::Passed)
}

/// Closing twice (and concurrently) is Ok, and calls stay refused with Closed (96).
pub async fn closing_twice_is_safe(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    let s = h.namespace().stream("close-twice");
    es.append(&s, ExpectedVersion::NoStream, events(0, 1))
        .await
        .ctx("append before close")?;
    let (a, b) = tokio::join!(es.close(), es.close());
    a.ctx("first of two concurrent closes")?;
    b.ctx("second of two concurrent closes")?;
    es.close().await.ctx("close again")?;
    ensure_err!(
        es.stream_state(&s).await,
        Error::Closed,
        "stream_state after closes"
    );
    ensure_err!(
        es.append(&s, ExpectedVersion::Any, events(1, 1)).await,
        Error::Closed,
        "append after closes"
    );
    Ok(Verdict::Passed)
}

/// Appends in flight while the store closes either succeed or return Closed, never another
/// error, and once close has returned every append is refused with Closed (96).
pub async fn close_during_appends_is_clean(h: Arc<dyn Harness>) -> Outcome {
    const TASKS: usize = 4;
    let started = Arc::new(Barrier::new(TASKS + 1));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let es = h.stores().events.clone();
        let s = h.namespace().stream(&format!("closing-{t}"));
        let started = started.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for _ in 0..1_000_000 {
                match es.append(&s, ExpectedVersion::Any, events(ok, 1)).await {
                    Ok(_) => {
                        ok += 1;
                        if ok == 1 {
                            started.wait().await;
                        }
                    }
                    Err(Error::Closed) if ok > 0 => return Ok(ok),
                    Err(e) => {
                        return Err(Failure(format!(
                            "append {ok} of task {t} while closing: expected Ok or Closed, got {e:?}"
                        )))
                    }
                }
                tokio::task::yield_now().await;
            }
            Err(Failure(format!("task {t}: appends kept succeeding after close")))
        }));
    }
    started.wait().await;
    h.stores().events.close().await.ctx("close")?;
    ensure_err!(
        h.stores()
            .events
            .append(&h.namespace().stream("after"), ExpectedVersion::Any, events(0, 1))
            .await,
        Error::Closed,
        "an append after close returned"
    );
    for task in tasks {
        let ok = join_task(task).await?;
        ensure!(ok > 0, "each task appended before the close");
    }
    Ok(Verdict::Passed)
}

/// Streams are isolated by name: one whose name is a prefix of another's, different
/// labels, and the same label in another namespace never see each other's events (98).
pub async fn streams_are_isolated_by_name(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let base = h.namespace().stream("iso");
    let longer = StreamId::new(format!("{base}x"))
        .map_err(|e| Failure(format!("the harness built an invalid stream id: {e}")))?;
    let other_label = h.namespace().stream("iso2");
    let other_ns = Namespace::for_test("conformance::lifecycle::other").stream("iso");
    ensure!(
        other_ns != base,
        "two namespaces give the same label different ids"
    );
    let streams = [&base, &longer, &other_label, &other_ns];
    let mut sent = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let batch = events(0, u64::try_from(i + 1).unwrap_or(1));
        es.append(s, ExpectedVersion::NoStream, batch.clone())
            .await
            .ctx(&format!("append to {s}"))?;
        sent.push(batch_ids(&batch));
    }
    for (s, ids) in streams.iter().zip(&sent) {
        let read = read_stream_to_end(es, s, 100).await?;
        ensure_eq!(recorded_ids(&read), *ids, "events of {s}");
        ensure_eq!(
            es.stream_state(s).await.ctx("stream_state")?,
            StreamState::Live(u64::try_from(ids.len()).unwrap_or(0)),
            "state of {s}"
        );
    }
    es.delete_stream(&base, ExpectedVersion::Any, DeleteMode::Tombstone)
        .await
        .ctx("tombstone the shortest")?;
    for (s, ids) in streams.iter().zip(&sent).skip(1) {
        let read = read_stream_to_end(es, s, 100).await?;
        ensure_eq!(
            recorded_ids(&read),
            *ids,
            "events of {s} after a neighbour was deleted"
        );
    }
    Ok(Verdict::Passed)
}

/// The first calls of every store, made concurrently on a fresh namespace (schema or group
/// creation racing), all succeed, and ensure_index raced 4 times is idempotent (97).
pub async fn concurrent_first_use_is_safe(h: Arc<dyn Harness>) -> Outcome {
    const TASKS: usize = 12;
    let barrier = Arc::new(Barrier::new(TASKS));
    let ns = h.namespace().clone();
    let coll = ns.name("first_use");
    let kind = ns.name("kind");
    let mut tasks: Vec<tokio::task::JoinHandle<Result<(), Failure>>> = Vec::new();
    for t in 0..4u64 {
        let (es, b, s) = (
            h.stores().events.clone(),
            barrier.clone(),
            ns.stream(&format!("first-{t}")),
        );
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            es.append(&s, ExpectedVersion::NoStream, events(t, 1))
                .await
                .ctx("events.append")
                .map(drop)
        }));
    }
    for _ in 0..4 {
        let (reads, b, coll) = (h.stores().reads.clone(), barrier.clone(), coll.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            reads
                .ensure_index(&coll, "n", FieldType::I64)
                .await
                .ctx("reads.ensure_index")
        }));
    }
    let (snaps, b, s) = (
        h.stores().snapshots.clone(),
        barrier.clone(),
        ns.stream("first-snap"),
    );
    tasks.push(tokio::spawn(async move {
        b.wait().await;
        snaps.load_latest(&s).await.ctx("snapshots.load_latest").map(drop)
    }));
    let (states, b, k) = (h.stores().states.clone(), barrier.clone(), kind.clone());
    tasks.push(tokio::spawn(async move {
        b.wait().await;
        states
            .put(&k, "id", StateExpectation::New, Bytes::from_static(b"v1"))
            .await
            .ctx("states.put")
            .map(drop)
    }));
    let (cps, b, name) = (h.stores().checkpoints.clone(), barrier.clone(), ns.name("cp"));
    tasks.push(tokio::spawn(async move {
        b.wait().await;
        cps.load(&name).await.ctx("checkpoints.load").map(drop)
    }));
    let (admin, b) = (h.stores().admin.clone(), barrier.clone());
    tasks.push(tokio::spawn(async move {
        b.wait().await;
        admin
            .list_all_streams(None, 10)
            .await
            .ctx("admin.list_all_streams")
            .map(drop)
    }));
    for task in tasks {
        join_task(task).await?;
    }
    h.stores()
        .reads
        .ensure_index(&coll, "n", FieldType::I64)
        .await
        .ctx("ensure_index again")?;
    ensure_err!(
        h.stores().reads.ensure_index(&coll, "n", FieldType::Str).await,
        Error::InvalidInput { .. },
        "the raced index keeps its type"
    );
    let got = h.stores().states.get(&kind, "id").await.ctx("states.get")?;
    ensure_eq!(
        got.map(|v| (v.value, v.version)),
        Some((Bytes::from_static(b"v1"), 1)),
        "the state written on first use"
    );
    for t in 0..4u64 {
        let s = ns.stream(&format!("first-{t}"));
        ensure_eq!(
            h.stores().events.stream_state(&s).await.ctx("stream_state")?,
            StreamState::Live(1),
            "stream {t} written on first use"
        );
    }
    Ok(Verdict::Passed)
}

/// A second client from `ConformanceHooks::reconnect` sees the same store: same identity,
/// same events and states both ways, and conflicts across clients (97).
pub async fn second_client_sees_the_same_data(h: Arc<dyn Harness>) -> Outcome {
    let Some(hooks) = h.hooks() else {
        not_run!("needs ConformanceHooks::reconnect (no hooks)");
    };
    let Some(second) = hooks.reconnect().await else {
        not_run!("needs ConformanceHooks::reconnect");
    };
    let second = second.ctx("reconnect")?;
    let first = h.stores();
    ensure_eq!(
        second.events.identity(),
        first.events.identity(),
        "a second client of the same store has the same identity"
    );
    let s = h.namespace().stream("two-clients");
    let a = events(0, 2);
    first
        .events
        .append(&s, ExpectedVersion::NoStream, a.clone())
        .await
        .ctx("append via the first client")?;
    let read = read_stream_to_end(&*second.events, &s, 100).await?;
    ensure_eq!(
        recorded_ids(&read),
        batch_ids(&a),
        "the second client reads the first's events"
    );
    let r = second
        .events
        .append(&s, ExpectedVersion::NoStream, events(2, 1))
        .await;
    ensure_err!(
        r,
        Error::Conflict {
            actual: StreamState::Live(2),
            ..
        },
        "NoStream via the second client"
    );
    let again = second
        .events
        .append(&s, ExpectedVersion::NoStream, a.clone())
        .await
        .ctx("re-send via the second client")?;
    ensure_eq!(
        (again.first_version, again.next_expected),
        (1, 2),
        "a re-send via the second client is idempotent"
    );
    let b = events(2, 1);
    second
        .events
        .append(&s, ExpectedVersion::Exact(2), b.clone())
        .await
        .ctx("append via the second client")?;
    let read = read_stream_to_end(&*first.events, &s, 100).await?;
    let mut all = batch_ids(&a);
    all.extend(batch_ids(&b));
    ensure_eq!(
        recorded_ids(&read),
        all,
        "the first client reads the second's events"
    );
    let kind = h.namespace().name("kind");
    second
        .states
        .put(&kind, "id", StateExpectation::New, Bytes::from_static(b"x"))
        .await
        .ctx("states.put via the second client")?;
    ensure_eq!(
        first
            .states
            .get(&kind, "id")
            .await
            .ctx("states.get")?
            .map(|v| v.version),
        Some(1),
        "the first client reads the second's state"
    );
    Ok(Verdict::Passed)
}

/// Polls `call` at most `polls` times, yielding between polls, then drops it: a task aborted
/// at one of its await points, with whatever it had sent still on its way.
async fn abandon<F: std::future::Future>(call: F, polls: usize) {
    let mut call = std::pin::pin!(call);
    for _ in 0..polls {
        if futures::poll!(call.as_mut()).is_ready() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Calls dropped part-way (an aborted task, a timeout, a client that went away) leave nothing
/// on the client that later calls inherit: every append acknowledged afterwards is committed,
/// as a second client reads it. Each transactional call is abandoned after 1 to 8 polls, so
/// one of them stops between a request and its answer. A pooled client that handed on a
/// connection still inside the abandoned call's transaction lost appends this way (sqlx's
/// `Pool::begin`, found by the relay behaviour under load).
pub async fn dropped_calls_leave_nothing_behind(h: Arc<dyn Harness>) -> Outcome {
    let Some(hooks) = h.hooks() else {
        not_run!("needs ConformanceHooks::reconnect (no hooks)");
    };
    let Some(second) = hooks.reconnect().await else {
        not_run!("needs ConformanceHooks::reconnect");
    };
    let second = second.ctx("reconnect")?;
    let (st, ns) = (h.stores(), h.namespace());
    let (name, kind, coll) = (ns.name("dropped"), ns.name("kind"), ns.name("coll"));
    let lease = st
        .checkpoints
        .acquire(&name, "owner", Duration::from_secs(60))
        .await
        .ctx("acquire")?;
    let origin = Checkpoint::origin();
    let mut appended = Vec::new();
    for polls in 1..=8 {
        abandon(st.checkpoints.save(&name, &origin, lease.epoch), polls).await;
        abandon(
            st.checkpoints.acquire(&name, "owner", Duration::from_secs(60)),
            polls,
        )
        .await;
        abandon(
            st.states
                .put(&kind, "id", StateExpectation::Any, Bytes::from_static(b"x")),
            polls,
        )
        .await;
        abandon(
            st.reads.commit(
                vec![Change::Upsert {
                    collection: coll.clone(),
                    document: Document::new("doc", serde_json::json!({ "n": polls })),
                }],
                CheckpointUpdate {
                    name: name.clone(),
                    checkpoint: origin.clone(),
                    lease_epoch: lease.epoch,
                },
            ),
            polls,
        )
        .await;
        // Several appends, so each of the client's connections serves one.
        for k in 0..4 {
            let s = ns.stream(&format!("after-{polls}-{k}"));
            let batch = events(0, 1);
            st.events
                .append(&s, ExpectedVersion::NoStream, batch.clone())
                .await
                .ctx("append after the dropped calls")?;
            appended.push((s, batch, polls));
        }
    }
    for (s, batch, polls) in &appended {
        let read = read_stream_to_end(&*second.events, s, 10).await?;
        ensure_eq!(
            recorded_ids(&read),
            batch_ids(batch),
            "a second client reads {s}, appended after calls dropped after {polls} polls"
        );
    }
    Ok(Verdict::Passed)
}

/// Round-trip budget where `ConformanceHooks::round_trips` counts them: appending a
/// 10-event batch (new stream, then with a warm Exact), appending one event (with Exact, and
/// with Any to a new stream) and reading 10 events each take exactly one round trip (100).
pub async fn round_trip_budget(h: Arc<dyn Harness>) -> Outcome {
    let Some(hooks) = h.hooks() else {
        not_run!("needs ConformanceHooks::round_trips (no hooks)");
    };
    if hooks.round_trips().is_none() {
        not_run!("needs ConformanceHooks::round_trips");
    }
    let trips = || hooks.round_trips().unwrap_or(0);
    let es = &*h.stores().events;
    let s = h.namespace().stream("budget");
    let measure = |what: &'static str, before: u64, after: u64| -> Result<(), Failure> {
        let used = after.saturating_sub(before);
        ensure!(
            used >= 1,
            "{what} reached the server without a counted round trip"
        );
        ensure!(used <= 1, "{what} took {used} round trips; the budget is 1");
        Ok(())
    };
    let before = trips();
    es.append(&s, ExpectedVersion::NoStream, events(0, 10))
        .await
        .ctx("append")?;
    measure("a 10-event append to a new stream", before, trips())?;
    let before = trips();
    es.append(&s, ExpectedVersion::Exact(10), events(10, 10))
        .await
        .ctx("append")?;
    measure("a 10-event append with Exact", before, trips())?;
    let before = trips();
    es.append(&s, ExpectedVersion::Exact(20), events(20, 1))
        .await
        .ctx("append")?;
    measure("a 1-event append with Exact", before, trips())?;
    let fresh = h.namespace().stream("budget-any");
    let before = trips();
    es.append(&fresh, ExpectedVersion::Any, events(0, 1))
        .await
        .ctx("append")?;
    measure("a 1-event append with Any to a new stream", before, trips())?;
    let before = trips();
    let read = es.read_stream(&s, 1, 10).await.ctx("read_stream")?;
    measure("a read_stream of 10 events", before, trips())?;
    ensure_eq!(read.len(), 10, "events read");
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lifecycle_tests {
    ($factory:expr) => {
        $crate::__tests!(
            $factory,
            lifecycle,
            [
                every_store_refuses_calls_after_close,
                closing_twice_is_safe,
                close_during_appends_is_clean,
                streams_are_isolated_by_name,
                concurrent_first_use_is_safe,
                second_client_sees_the_same_data,
                dropped_calls_leave_nothing_behind,
                round_trip_budget,
            ]
        );
    };
}
