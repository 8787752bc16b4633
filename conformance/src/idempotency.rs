//! Behaviours: idempotency. Re-sent batches, committed prefixes and runs, mismatches,
//! duplicate ids, global id uniqueness, dropped appends and concurrent re-sends
//! (`docs/CONFORMANCE.md` items 16-21).
//!
//! Pinned: idempotency is per stream and checked before the version check, for every
//! expectation; a re-send returns the original outcome (versions of the re-sent events,
//! position of its last event) and writes nothing.

use std::{sync::Arc, task::Poll};

use cqrs_core::{
    AppendOutcome, Error, EventData, EventStore, ExpectedVersion, RecordedEvent, StreamId, StreamState,
};
use tokio::sync::Barrier;

use crate::{
    batch_ids, ensure, ensure_eq, ensure_err, event, events, join_task, not_run, read_stream_to_end,
    recorded_ids, Ctx, Failure, Harness, Outcome, Verdict,
};

/// The original outcome of re-sending `read[lo..=hi]` (1-based versions).
fn outcome_of(read: &[RecordedEvent], first: u64, last: u64) -> Result<AppendOutcome, Failure> {
    let at = |v: u64| {
        usize::try_from(v - 1)
            .ok()
            .and_then(|i| read.get(i))
            .ok_or_else(|| Failure(format!("version {v} was not read back")))
    };
    at(first)?;
    Ok(AppendOutcome {
        first_version: first,
        next_expected: last,
        position: Some(at(last)?.position),
    })
}

/// Fails unless `stream` is still at `state` holding exactly `ids`.
async fn unchanged(
    es: &dyn EventStore,
    stream: &StreamId,
    state: StreamState,
    ids: &[cqrs_core::EventId],
    what: &str,
) -> Result<(), Failure> {
    ensure_eq!(
        es.stream_state(stream).await.ctx("stream_state")?,
        state,
        "{what}: stream_state"
    );
    let read = read_stream_to_end(es, stream, 1000).await?;
    ensure_eq!(recorded_ids(&read), ids.to_vec(), "{what}: the stream's events");
    Ok(())
}

/// A committed batch re-sent returns its original outcome and writes nothing, whatever the
/// expectation of the re-send (NoStream, Exact(0), Exact of then, Exact of now, a wrong
/// Exact, Any, StreamExists), for batches first written under each of those (16, 21).
pub async fn resend_returns_original_outcome_under_every_expectation(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    for (label, seed, expected) in [
        ("resend-nostream", 0u64, ExpectedVersion::NoStream),
        ("resend-exact", 2, ExpectedVersion::Exact(2)),
        ("resend-any", 1, ExpectedVersion::Any),
        ("resend-exists", 1, ExpectedVersion::StreamExists),
    ] {
        let s = h.namespace().stream(label);
        let mut ids = Vec::new();
        if seed > 0 {
            let seed_batch = events(100, seed);
            es.append(&s, ExpectedVersion::NoStream, seed_batch.clone())
                .await
                .ctx("seed")?;
            ids.extend(batch_ids(&seed_batch));
        }
        let batch = events(0, 3);
        let original = es
            .append(&s, expected, batch.clone())
            .await
            .ctx(&format!("append with {expected:?}"))?;
        ids.extend(batch_ids(&batch));
        ensure_eq!(
            (original.first_version, original.next_expected),
            (seed + 1, seed + 3),
            "the original outcome with {expected:?}"
        );
        let after = StreamState::Live(seed + 3);
        for resend in [
            expected,
            ExpectedVersion::NoStream,
            ExpectedVersion::Exact(0),
            ExpectedVersion::Exact(seed),
            ExpectedVersion::Exact(seed + 3),
            ExpectedVersion::Exact(seed + 50),
            ExpectedVersion::Any,
            ExpectedVersion::StreamExists,
        ] {
            let again = es
                .append(&s, resend, batch.clone())
                .await
                .ctx(&format!("re-send (first sent with {expected:?}) with {resend:?}"))?;
            ensure_eq!(
                again,
                original,
                "re-send with {resend:?} of a batch first sent with {expected:?}"
            );
        }
        unchanged(es, &s, after, &ids, &format!("after re-sends ({label})")).await?;
    }
    Ok(Verdict::Passed)
}

/// A committed prefix of a batch re-sent is idempotent: the outcome names the prefix's
/// versions and the original position of its last event (17).
pub async fn committed_prefix_is_idempotent(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("prefix");
    let a = events(0, 4);
    let b = events(10, 3);
    es.append(&s, ExpectedVersion::NoStream, a.clone())
        .await
        .ctx("append a")?;
    es.append(&s, ExpectedVersion::Exact(4), b.clone())
        .await
        .ctx("append b")?;
    let read = es.read_stream(&s, 1, 100).await.ctx("read_stream")?;
    let mut all = batch_ids(&a);
    all.extend(batch_ids(&b));
    for (what, batch, expected, first, last) in [
        ("a[..1]", &a[..1], ExpectedVersion::NoStream, 1u64, 1u64),
        ("a[..2]", &a[..2], ExpectedVersion::Any, 1, 2),
        ("a[..3]", &a[..3], ExpectedVersion::Exact(0), 1, 3),
        ("b[..2]", &b[..2], ExpectedVersion::Exact(4), 5, 6),
        ("b[..1]", &b[..1], ExpectedVersion::StreamExists, 5, 5),
    ] {
        let out = es
            .append(&s, expected, batch.to_vec())
            .await
            .ctx(&format!("re-send of the prefix {what}"))?;
        ensure_eq!(
            out,
            outcome_of(&read, first, last)?,
            "re-send of the prefix {what}"
        );
    }
    unchanged(es, &s, StreamState::Live(7), &all, "after prefix re-sends").await?;
    Ok(Verdict::Passed)
}

/// Any contiguous run of committed events in order (a batch's suffix or middle, or a run
/// across two batches) re-sent is idempotent, with the original outcome of that run (17).
pub async fn committed_contiguous_run_is_idempotent(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("run");
    let a = events(0, 4);
    let b = events(10, 3);
    es.append(&s, ExpectedVersion::NoStream, a.clone())
        .await
        .ctx("append a")?;
    es.append(&s, ExpectedVersion::Any, b.clone())
        .await
        .ctx("append b")?;
    let read = es.read_stream(&s, 1, 100).await.ctx("read_stream")?;
    let mut all: Vec<EventData> = a.clone();
    all.extend(b.iter().cloned());
    for (what, lo, hi) in [
        ("a's suffix", 3usize, 4usize),
        ("a's middle", 2, 3),
        ("a run across a and b", 4, 5),
        ("all of a and b", 1, 7),
    ] {
        let run = all[lo - 1..hi].to_vec();
        let out = es
            .append(&s, ExpectedVersion::Any, run)
            .await
            .ctx(&format!("re-send of {what}"))?;
        let want = outcome_of(
            &read,
            u64::try_from(lo).unwrap_or(0),
            u64::try_from(hi).unwrap_or(0),
        )?;
        ensure_eq!(out, want, "re-send of {what} (versions {lo}..={hi})");
    }
    unchanged(
        es,
        &s,
        StreamState::Live(7),
        &batch_ids(&all),
        "after run re-sends",
    )
    .await?;
    Ok(Verdict::Passed)
}

/// Committed ids re-sent in another order, or with a gap between them, are
/// IdempotencyMismatch and write nothing (18).
pub async fn reordered_or_gapped_ids_are_a_mismatch(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("reorder");
    let batch = events(0, 3);
    es.append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .ctx("append")?;
    let [x, y, z] = [&batch[0], &batch[1], &batch[2]];
    for (what, resend) in [
        ("b, a, c", vec![y.clone(), x.clone(), z.clone()]),
        ("c, b, a", vec![z.clone(), y.clone(), x.clone()]),
        ("b, a", vec![y.clone(), x.clone()]),
        ("a, c (a gap)", vec![x.clone(), z.clone()]),
    ] {
        for expected in [
            ExpectedVersion::Any,
            ExpectedVersion::NoStream,
            ExpectedVersion::Exact(3),
        ] {
            ensure_err!(
                es.append(&s, expected, resend.clone()).await,
                Error::IdempotencyMismatch { .. },
                "re-send of {what} with {expected:?}"
            );
        }
    }
    unchanged(
        es,
        &s,
        StreamState::Live(3),
        &batch_ids(&batch),
        "after mismatched re-sends",
    )
    .await?;
    Ok(Verdict::Passed)
}

/// A committed prefix followed by new events (or new events followed by committed ones) is
/// IdempotencyMismatch even under an expectation that holds, and nothing is written (18).
pub async fn committed_prefix_plus_new_events_is_a_mismatch(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("prefix-plus");
    let batch = events(0, 2);
    es.append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .ctx("append")?;
    let fresh = event("Fresh", 9);
    for (what, resend) in [
        (
            "a, b, new",
            vec![batch[0].clone(), batch[1].clone(), fresh.clone()],
        ),
        ("a, new", vec![batch[0].clone(), fresh.clone()]),
        (
            "new, a, b",
            vec![fresh.clone(), batch[0].clone(), batch[1].clone()],
        ),
        ("b, new", vec![batch[1].clone(), fresh.clone()]),
    ] {
        for expected in [
            ExpectedVersion::Any,
            ExpectedVersion::Exact(2),
            ExpectedVersion::StreamExists,
        ] {
            ensure_err!(
                es.append(&s, expected, resend.clone()).await,
                Error::IdempotencyMismatch { .. },
                "re-send of {what} with {expected:?} (an expectation that holds)"
            );
        }
    }
    unchanged(
        es,
        &s,
        StreamState::Live(2),
        &batch_ids(&batch),
        "after mismatched batches",
    )
    .await?;
    let out = es
        .append(&s, ExpectedVersion::Exact(2), vec![fresh])
        .await
        .ctx("the new event alone")?;
    ensure_eq!(out.first_version, 3, "the new event alone appends normally");
    Ok(Verdict::Passed)
}

/// Duplicate event ids inside one batch are InvalidInput before any I/O, whether or not the
/// id is committed, and nothing is written (19).
pub async fn duplicate_ids_in_one_batch_are_invalid(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("dup");
    let a = event("A", 1);
    let b = event("B", 2);
    for (what, batch) in [
        ("a, a", vec![a.clone(), a.clone()]),
        ("a, b, a", vec![a.clone(), b.clone(), a.clone()]),
        (
            "a, and a copy of a with another payload",
            vec![a.clone(), event("A2", 3).with_id(a.event_id)],
        ),
    ] {
        ensure_err!(
            es.append(&s, ExpectedVersion::NoStream, batch).await,
            Error::InvalidInput { .. },
            "batch {what} on a missing stream"
        );
    }
    unchanged(es, &s, StreamState::Missing, &[], "after refused batches").await?;
    es.append(&s, ExpectedVersion::NoStream, vec![a.clone(), b.clone()])
        .await
        .ctx("append a, b")?;
    ensure_err!(
        es.append(&s, ExpectedVersion::Any, vec![a.clone(), a.clone()])
            .await,
        Error::InvalidInput { .. },
        "batch a, a where a is committed"
    );
    unchanged(
        es,
        &s,
        StreamState::Live(2),
        &[a.event_id, b.event_id],
        "after the refused batch",
    )
    .await?;
    Ok(Verdict::Passed)
}

/// A committed batch re-sent after later batches were appended still returns its own
/// original outcome (not the stream's current version) and never makes a second copy
/// (16, 20).
pub async fn resend_after_later_appends_returns_original_outcome(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    let s = h.namespace().stream("resend-later");
    let batches = [events(0, 2), events(10, 3), events(20, 1)];
    let expectations = [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(2),
        ExpectedVersion::Any,
    ];
    let mut originals = Vec::new();
    for (batch, expected) in batches.iter().zip(expectations) {
        originals.push(es.append(&s, expected, batch.clone()).await.ctx("append")?);
    }
    let mut all = Vec::new();
    for b in &batches {
        all.extend(batch_ids(b));
    }
    for round in 0..2 {
        for ((batch, expected), original) in
            batches.iter().zip(expectations).rev().zip(originals.iter().rev())
        {
            let again = es.append(&s, expected, batch.clone()).await.ctx("re-send")?;
            ensure_eq!(
                &again,
                original,
                "re-send (round {round}) of the batch first sent with {expected:?}"
            );
        }
    }
    unchanged(es, &s, StreamState::Live(6), &all, "after re-sends").await?;
    Ok(Verdict::Passed)
}

/// Where `Capabilities::global_event_id_uniqueness` is declared, an id committed in another
/// stream fails the append with AlreadyExists (alone or inside a batch) and nothing is
/// written (`docs/DESIGN.md` section 2).
pub async fn id_committed_in_another_stream_is_refused(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    if !es.capabilities().global_event_id_uniqueness {
        not_run!("needs Capabilities::global_event_id_uniqueness");
    }
    let first = h.namespace().stream("global-a");
    let other = h.namespace().stream("global-b");
    let taken = event("Taken", 1);
    es.append(&first, ExpectedVersion::NoStream, vec![taken.clone()])
        .await
        .ctx("append to the first stream")?;
    for (what, batch) in [
        ("the id alone", vec![taken.clone()]),
        ("the id after a new event", vec![event("New", 2), taken.clone()]),
    ] {
        for expected in [ExpectedVersion::NoStream, ExpectedVersion::Any] {
            ensure_err!(
                es.append(&other, expected, batch.clone()).await,
                Error::AlreadyExists { .. },
                "{what} in another stream with {expected:?}"
            );
        }
    }
    unchanged(es, &other, StreamState::Missing, &[], "the other stream").await?;
    unchanged(
        es,
        &first,
        StreamState::Live(1),
        &[taken.event_id],
        "the first stream",
    )
    .await?;
    Ok(Verdict::Passed)
}

/// Polls an append k times (k = 0..16), drops it, then re-sends the same batch with the
/// same ids and expectation: the re-send succeeds (with the dropped one's outcome if that
/// had completed) and the stream holds exactly one copy of each event (20, `docs/DESIGN.md` section 2 cancel
/// safety).
pub async fn dropped_append_then_resend_leaves_one_copy(h: Arc<dyn Harness>) -> Outcome {
    let es = &*h.stores().events;
    for k in 0..16usize {
        let s = h.namespace().stream(&format!("cancel-{k}"));
        let mut ids = Vec::new();
        let (expected, seeded) = if k % 2 == 0 {
            (ExpectedVersion::NoStream, 0u64)
        } else {
            let seed = events(100, 1);
            es.append(&s, ExpectedVersion::NoStream, seed.clone())
                .await
                .ctx("seed")?;
            ids.extend(batch_ids(&seed));
            (ExpectedVersion::Exact(1), 1)
        };
        let batch = events(0, 3);
        ids.extend(batch_ids(&batch));
        let mut early = None;
        {
            let mut attempt = es.append(&s, expected, batch.clone());
            for _ in 0..k {
                if let Poll::Ready(r) = futures::poll!(attempt.as_mut()) {
                    early = Some(r);
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        let out = es
            .append(&s, expected, batch.clone())
            .await
            .ctx(&format!("re-send after dropping an append polled {k} times"))?;
        ensure_eq!(
            (out.first_version, out.next_expected),
            (seeded + 1, seeded + 3),
            "re-send after dropping an append polled {k} times"
        );
        if let Some(r) = early {
            let first = r.ctx("the dropped append, which completed")?;
            ensure_eq!(
                out,
                first,
                "the re-send returns the completed append's outcome (k = {k})"
            );
        }
        let read = read_stream_to_end(es, &s, 100).await?;
        ensure_eq!(
            recorded_ids(&read),
            ids,
            "events after drop and re-send (k = {k})"
        );
        ensure_eq!(
            read.last().map(|e| e.position),
            out.position,
            "the re-send's position (k = {k})"
        );
    }
    Ok(Verdict::Passed)
}

/// 8 tasks re-sending one batch concurrently (NoStream on a missing stream, then Any on the
/// existing one) all succeed with identical outcomes, and one copy is stored (20).
pub async fn concurrent_resends_store_one_copy(h: Arc<dyn Harness>) -> Outcome {
    const TASKS: usize = 8;
    let s = h.namespace().stream("concurrent-resend");
    let mut ids = Vec::new();
    for (round, expected) in [ExpectedVersion::NoStream, ExpectedVersion::Any]
        .into_iter()
        .enumerate()
    {
        let batch = events(u64::try_from(round).unwrap_or(0) * 10, 3);
        ids.extend(batch_ids(&batch));
        let barrier = Arc::new(Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let es = h.stores().events.clone();
            let s = s.clone();
            let batch = batch.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                es.append(&s, expected, batch)
                    .await
                    .ctx(&format!("concurrent re-send with {expected:?}"))
            }));
        }
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(join_task(task).await?);
        }
        let first = outcomes[0].clone();
        let base = u64::try_from(round).unwrap_or(0) * 3;
        ensure_eq!(
            (first.first_version, first.next_expected),
            (base + 1, base + 3),
            "versions of the batch (round {round})"
        );
        ensure!(
            outcomes.iter().all(|o| *o == first),
            "every concurrent re-send returns the same outcome (round {round}): {outcomes:?}"
        );
        let read = read_stream_to_end(&*h.stores().events, &s, 100).await?;
        ensure_eq!(recorded_ids(&read), ids, "one copy stored (round {round})");
        ensure_eq!(
            read.last().map(|e| e.position),
            first.position,
            "the outcome's position (round {round})"
        );
    }
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __idempotency_tests {
    ($factory:expr) => {
        $crate::__tests!(
            $factory,
            idempotency,
            [
                resend_returns_original_outcome_under_every_expectation,
                committed_prefix_is_idempotent,
                committed_contiguous_run_is_idempotent,
                reordered_or_gapped_ids_are_a_mismatch,
                committed_prefix_plus_new_events_is_a_mismatch,
                duplicate_ids_in_one_batch_are_invalid,
                resend_after_later_appends_returns_original_outcome,
                id_committed_in_another_stream_is_refused,
                dropped_append_then_resend_leaves_one_copy,
                concurrent_resends_store_one_copy,
            ]
        );
    };
}
