//! Behaviours: log (the store-wide log read by `read_all`), `docs/CONFORMANCE.md` items 37-48.
//!
//! Nothing here assumes small integer positions or a single partition: positions are only
//! compared within a partition ([`cqrs_core::Position::cmp_in_partition`]), and two reads of
//! the log are compared partition by partition ([`crate::ids_by_partition`]). Every behaviour
//! needs a store-wide log (`Capabilities::partitions > 0`) and reports itself as not run
//! without one.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use cqrs_core::{
    Checkpoint, EventData, EventFilter, EventId, EventStore, ExpectedVersion, Position, RecordedEvent,
    StoreIdentity, StreamId, MAX_VERSION,
};
use tokio::sync::Barrier;

use crate::{
    ensure, ensure_each_once, ensure_eq, ensure_err, ensure_log_order, event, events, ids_by_partition,
    not_run, of_stream, poll_pause, read_all_to_end, Ctx, Deadline, Failure, Harness, Outcome, Verdict,
};

/// Ends the behaviour as not run unless the store declares a store-wide log.
macro_rules! require_log {
    ($es:expr) => {
        if !$es.capabilities().has_store_wide_log() {
            not_run!("needs a store-wide log (Capabilities::partitions > 0)");
        }
    };
}

/// Appends `batch` and returns the ids it carried, failing with `what` on error.
async fn append_ids(
    es: &dyn EventStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    batch: Vec<EventData>,
    what: &str,
) -> Result<(Vec<EventId>, Option<Position>), Failure> {
    let ids = batch.iter().map(|e| e.event_id).collect();
    let out = es.append(stream, expected, batch).await.ctx(what)?;
    Ok((ids, out.position))
}

/// The ids of `events`, in order.
fn ids(events: &[RecordedEvent]) -> Vec<EventId> {
    events.iter().map(RecordedEvent::event_id).collect()
}

/// Writes a mixed history to several streams: `rounds` rounds over `streams`, batches of 1 to
/// 3 events. Returns every id in append order.
async fn mixed_history(
    es: &dyn EventStore,
    streams: &[StreamId],
    rounds: usize,
) -> Result<Vec<EventId>, Failure> {
    let mut all = Vec::new();
    let mut n = 0u64;
    for round in 0..rounds {
        for (i, s) in streams.iter().enumerate() {
            let count = u64::try_from((round + i) % 3 + 1).unwrap_or(1);
            let (batch_ids, _) = append_ids(es, s, ExpectedVersion::Any, events(n, count), "append").await?;
            n += count;
            all.extend(batch_ids);
        }
    }
    Ok(all)
}

/// Reads from `from` to the end, checking that every page that is not caught up moves the
/// checkpoint forward (so a reader can never spin in place).
async fn read_to_end_progressing(
    es: &dyn EventStore,
    from: &Checkpoint,
    page: usize,
    filter: &EventFilter,
) -> Result<(Vec<RecordedEvent>, Checkpoint), Failure> {
    let mut out = Vec::new();
    let mut cp = from.clone();
    for _ in 0..100_000 {
        let batch = es.read_all(&cp, page, filter).await.ctx("read_all")?;
        ensure!(
            batch.events.len() <= page,
            "read_all returned {} events for max {page}",
            batch.events.len()
        );
        ensure!(
            batch.next.is_at_or_after(&cp),
            "read_all moved the checkpoint backwards: from {cp:?} to {:?}",
            batch.next
        );
        for e in &batch.events {
            ensure!(
                !cp.covers(&e.position),
                "read_all returned event at {} that the checkpoint {cp:?} already covers",
                e.position
            );
            ensure!(
                batch.next.covers(&e.position),
                "read_all's next checkpoint {:?} does not cover returned event at {}",
                batch.next,
                e.position
            );
        }
        if batch.caught_up {
            out.extend(batch.events);
            return Ok((out, batch.next));
        }
        ensure!(
            batch.next != cp,
            "read_all returned a page that is not caught up ({} events) without moving the checkpoint \
             {cp:?}: a reader would spin for ever",
            batch.events.len()
        );
        out.extend(batch.events);
        cp = batch.next;
    }
    Err(Failure("read_all never reported caught_up".into()))
}

/// Every appended event appears in `read_all` exactly once, positions strictly increase within
/// each partition, records equal those of `read_stream`, and each append's position is that
/// of its last event (items 37, 23).
pub async fn every_event_once_in_log_order(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let ns = h.namespace();
    let streams: Vec<StreamId> = (0..4).map(|i| ns.stream(&format!("once-{i}"))).collect();
    let mut last_positions: Vec<(EventId, Option<Position>)> = Vec::new();
    let mut appended = Vec::new();
    let mut n = 0u64;
    for round in 0..4usize {
        for (i, s) in streams.iter().enumerate() {
            let count = u64::try_from((round + i) % 3 + 1).unwrap_or(1);
            let (batch_ids, pos) =
                append_ids(&*es, s, ExpectedVersion::Any, events(n, count), "append").await?;
            n += count;
            if let Some(last) = batch_ids.last() {
                last_positions.push((*last, pos));
            }
            appended.extend(batch_ids);
        }
    }
    let (all, _) = read_to_end_progressing(&*es, &Checkpoint::origin(), 4, &EventFilter::all()).await?;
    ensure_each_once(&all, "read_all from the origin")?;
    ensure_log_order(&all, "read_all from the origin")?;
    let read: BTreeSet<EventId> = ids(&all).into_iter().collect();
    let want: BTreeSet<EventId> = appended.iter().copied().collect();
    ensure_eq!(read, want, "event ids read by read_all vs appended");
    let by_id: HashMap<EventId, Position> = all.iter().map(|e| (e.event_id(), e.position)).collect();
    for (id, pos) in last_positions {
        ensure_eq!(
            pos,
            by_id.get(&id).copied(),
            "append outcome position vs read_all position of the batch's last event {id}"
        );
    }
    for s in &streams {
        let in_log: Vec<RecordedEvent> = of_stream(&all, s).into_iter().cloned().collect();
        let direct = es.read_stream(s, 1, 1000).await.ctx("read_stream")?;
        ensure_eq!(
            in_log,
            direct,
            "events of {s} in read_all vs read_stream (records and order)"
        );
        let versions: Vec<u64> = in_log.iter().map(|e| e.version).collect();
        let want: Vec<u64> = (1..=u64::try_from(versions.len()).unwrap_or(0)).collect();
        ensure_eq!(versions, want, "versions of {s} in log order");
    }
    Ok(Verdict::Passed)
}

/// Eight tasks appending concurrently to ONE stream: the log holds its versions 1..N in order,
/// and each batch's events are contiguous (items 37, 9).
pub async fn per_stream_order_under_concurrent_appenders(h: Arc<dyn Harness>) -> Outcome {
    const TASKS: usize = 8;
    const APPENDS: u64 = 10;
    let es = h.stores().events.clone();
    require_log!(es);
    let stream = h.namespace().stream("contended");
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (es, stream, barrier) = (es.clone(), stream.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut outs = Vec::new();
            for i in 0..APPENDS {
                let batch = events(i * 100 + u64::try_from(t).unwrap_or(0), 2);
                let batch_ids: Vec<EventId> = batch.iter().map(|e| e.event_id).collect();
                let out = es.append(&stream, ExpectedVersion::Any, batch).await?;
                outs.push((out, batch_ids));
            }
            Ok::<_, cqrs_core::Error>(outs)
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        let outs = t
            .await
            .map_err(|e| Failure(format!("appender panicked: {e}")))?
            .ctx("concurrent append with Any")?;
        outcomes.extend(outs);
    }
    let (all, _) = read_all_to_end(&*h, &*es, &Checkpoint::origin(), 50, &EventFilter::all()).await?;
    let mine: Vec<RecordedEvent> = of_stream(&all, &stream).into_iter().cloned().collect();
    ensure_each_once(&mine, "read_all")?;
    ensure_log_order(&mine, "read_all of one contended stream")?;
    let versions: Vec<u64> = mine.iter().map(|e| e.version).collect();
    let total = u64::try_from(TASKS).unwrap_or(0) * APPENDS * 2;
    ensure_eq!(
        versions,
        (1..=total).collect::<Vec<u64>>(),
        "versions of the contended stream in log order"
    );
    for (out, batch_ids) in outcomes {
        ensure_eq!(
            out.next_expected,
            out.first_version + 1,
            "last version of a 2-event append starting at {}",
            out.first_version
        );
        let at: Vec<EventId> = mine
            .iter()
            .filter(|e| (out.first_version..=out.next_expected).contains(&e.version))
            .map(RecordedEvent::event_id)
            .collect();
        ensure_eq!(
            at,
            batch_ids,
            "ids at versions {}..={} (the batch must be contiguous, in order)",
            out.first_version,
            out.next_expected
        );
    }
    Ok(Verdict::Passed)
}

/// A live reader started before 8 concurrent writers sees every written (stream, version)
/// exactly once, in log order, once it is caught up after the writers finish (items 39, 45, 46).
pub async fn live_reader_misses_nothing_under_many_writers(h: Arc<dyn Harness>) -> Outcome {
    const WRITERS: usize = 8;
    const APPENDS: u64 = 20;
    let es = h.stores().events.clone();
    require_log!(es);
    let ns = h.namespace();
    let shared = ns.stream("tail-shared");
    let barrier = Arc::new(Barrier::new(WRITERS + 1));
    let done = Arc::new(AtomicBool::new(false));
    let deadline = Deadline::after(Duration::from_secs(20));

    let reader = {
        let (es, barrier, done, deadline) = (es.clone(), barrier.clone(), done.clone(), deadline.clone());
        tokio::spawn(async move {
            let all = EventFilter::all();
            let mut cp = Checkpoint::origin();
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let first = es.read_all(&cp, 50, &all).await.ctx("first read_all")?;
            seen.extend(first.events);
            cp = first.next;
            barrier.wait().await;
            loop {
                deadline.check("the live reader to catch up with the writers")?;
                let finished = done.load(Ordering::SeqCst);
                let batch = es.read_all(&cp, 50, &all).await.ctx("tailing read_all")?;
                let empty = batch.events.is_empty();
                seen.extend(batch.events);
                cp = batch.next;
                if finished && batch.caught_up {
                    return Ok::<_, Failure>(seen);
                }
                if empty {
                    poll_pause().await;
                }
            }
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (es, barrier, shared) = (es.clone(), barrier.clone(), shared.clone());
        let own = ns.stream(&format!("tail-{w}"));
        writers.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut written = Vec::new();
            for i in 0..APPENDS {
                let (stream, count) = if i % 4 == 3 { (&shared, 1) } else { (&own, 2) };
                let out = es.append(stream, ExpectedVersion::Any, events(i, count)).await?;
                for v in out.first_version..=out.next_expected {
                    written.push((stream.clone(), v));
                }
                tokio::task::yield_now().await;
            }
            Ok::<_, cqrs_core::Error>(written)
        }));
    }
    let mut written = BTreeSet::new();
    for w in writers {
        let pairs = w
            .await
            .map_err(|e| Failure(format!("writer panicked: {e}")))?
            .ctx("concurrent append")?;
        written.extend(pairs);
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader
        .await
        .map_err(|e| Failure(format!("reader panicked: {e}")))??;
    ensure_each_once(&seen, "live reader")?;
    ensure_log_order(&seen, "live reader")?;
    let seen_pairs: BTreeSet<(StreamId, u64)> =
        seen.iter().map(|e| (e.stream_id.clone(), e.version)).collect();
    ensure_eq!(
        seen_pairs.len(),
        seen.len(),
        "(stream, version) pairs seen without duplicates"
    );
    let missed: Vec<_> = written.difference(&seen_pairs).take(5).collect();
    ensure!(
        missed.is_empty(),
        "the live reader missed committed events, e.g. {missed:?}"
    );
    let extra: Vec<_> = seen_pairs.difference(&written).take(5).collect();
    ensure!(
        extra.is_empty(),
        "the live reader saw events nobody wrote, e.g. {extra:?}"
    );
    Ok(Verdict::Passed)
}

/// Resuming from every checkpoint a paged read returned (and from the origin) returns exactly
/// the rest of the log, partition by partition (items 44, 25).
pub async fn resume_from_every_checkpoint_returns_the_rest(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let ns = h.namespace();
    let streams: Vec<StreamId> = (0..3).map(|i| ns.stream(&format!("resume-{i}"))).collect();
    mixed_history(&*es, &streams, 5).await?;
    let all = EventFilter::all();
    // (checkpoint, how many events had been read before it)
    let mut checkpoints = vec![(Checkpoint::origin(), 0usize)];
    let mut full: Vec<RecordedEvent> = Vec::new();
    let mut cp = Checkpoint::origin();
    for _ in 0..10_000 {
        let batch = es.read_all(&cp, 3, &all).await.ctx("paged read_all")?;
        full.extend(batch.events);
        cp = batch.next;
        checkpoints.push((cp.clone(), full.len()));
        if batch.caught_up {
            break;
        }
    }
    ensure_each_once(&full, "paged read")?;
    ensure_log_order(&full, "paged read")?;
    ensure!(
        full.len() >= 25,
        "expected the whole history (at least 25 events), read {}",
        full.len()
    );
    for (i, (from, consumed)) in checkpoints.iter().enumerate() {
        let (rest, _) = read_to_end_progressing(&*es, from, 5, &all).await?;
        ensure_eq!(
            ids_by_partition(&rest),
            ids_by_partition(&full[*consumed..]),
            "events read when resuming from checkpoint #{i} {from:?} (after {consumed} events)"
        );
    }
    Ok(Verdict::Passed)
}

/// Reading the log with page sizes 1, 3 and 1000 yields the same events in the same order per
/// partition, with no duplicates or skips (items 25, 37).
pub async fn page_sizes_agree(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let ns = h.namespace();
    let streams: Vec<StreamId> = (0..3).map(|i| ns.stream(&format!("pages-{i}"))).collect();
    let appended = mixed_history(&*es, &streams, 4).await?;
    let mut reads = Vec::new();
    for page in [1usize, 3, 1000] {
        let (evs, _) =
            read_to_end_progressing(&*es, &Checkpoint::origin(), page, &EventFilter::all()).await?;
        ensure_each_once(&evs, &format!("read_all with page size {page}"))?;
        ensure_log_order(&evs, &format!("read_all with page size {page}"))?;
        ensure_eq!(evs.len(), appended.len(), "events read with page size {page}");
        reads.push((page, ids_by_partition(&evs)));
    }
    for (page, read) in &reads[1..] {
        ensure_eq!(read, &reads[0].1, "log read with page size {page} vs page size 1");
    }
    Ok(Verdict::Passed)
}

/// A read filtered by stream prefix returns exactly the matching events, in log order, with
/// `.`, `%` and `_` taken literally (item 43).
pub async fn filter_by_stream_prefix(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let ns = h.namespace();
    // Decoys catch prefixes handled as LIKE patterns (`%`, `_`) or regular expressions (`.`).
    let streams = [
        ns.stream("cat.a-1"),
        ns.stream("dog-1"),
        ns.stream("cat.a-2"),
        ns.stream("catXa-9"),
        ns.stream("cat.b-1"),
        ns.stream("und_1"),
        ns.stream("undX1"),
        ns.stream("pct%1"),
        ns.stream("pctQ1"),
    ];
    mixed_history(&*es, &streams, 3).await?;
    let (everything, _) = read_all_to_end(&*h, &*es, &Checkpoint::origin(), 100, &EventFilter::all()).await?;
    for prefix in ["cat.a-", "cat.", "dog-", "und_", "pct%", "cow-"] {
        let filter = EventFilter::stream_prefix(prefix);
        let want: Vec<RecordedEvent> = everything.iter().filter(|e| filter.matches(e)).cloned().collect();
        for page in [1usize, 2, 100] {
            let (got, _) = read_to_end_progressing(&*es, &Checkpoint::origin(), page, &filter).await?;
            ensure!(
                got.iter().all(|e| e.stream_id.as_str().starts_with(prefix)),
                "prefix {prefix:?} returned an event of another stream"
            );
            ensure_eq!(
                ids_by_partition(&got),
                ids_by_partition(&want),
                "events for stream prefix {prefix:?} with page size {page}"
            );
        }
    }
    Ok(Verdict::Passed)
}

/// A read filtered by event types (alone and with a prefix) returns exactly the matching events
/// in log order (item 43).
pub async fn filter_by_event_type(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let ns = h.namespace();
    let streams = [ns.stream("order-1"), ns.stream("order-2"), ns.stream("cart-1")];
    let types = ["Placed", "Paid", "Shipped", "Placed.v2"];
    let mut n = 0u64;
    for round in 0..5usize {
        for (i, s) in streams.iter().enumerate() {
            let batch: Vec<EventData> = (0..2usize)
                .map(|k| {
                    n += 1;
                    event(types[(round + i + k) % types.len()], n)
                })
                .collect();
            es.append(s, ExpectedVersion::Any, batch).await.ctx("append")?;
        }
    }
    let (everything, _) = read_all_to_end(&*h, &*es, &Checkpoint::origin(), 100, &EventFilter::all()).await?;
    let filters = [
        EventFilter::all().event_type("Placed"),
        EventFilter::all().event_type("Paid").event_type("Shipped"),
        EventFilter::stream_prefix("order-").event_type("Placed"),
        EventFilter::all().event_type("Cancelled"),
    ];
    for filter in &filters {
        let want: Vec<RecordedEvent> = everything.iter().filter(|e| filter.matches(e)).cloned().collect();
        for page in [1usize, 3, 100] {
            let (got, _) = read_to_end_progressing(&*es, &Checkpoint::origin(), page, filter).await?;
            ensure!(
                got.iter().all(|e| filter.matches(e)),
                "filter {filter:?} returned a non-matching event"
            );
            ensure_eq!(
                ids_by_partition(&got),
                ids_by_partition(&want),
                "events for filter {filter:?} with page size {page}"
            );
        }
    }
    Ok(Verdict::Passed)
}

/// A filtered read that matches nothing still moves `next` past every scanned entry: it reaches
/// caught_up, its checkpoint covers the last event, and resuming from it returns only later
/// matching events (items 43, 37).
pub async fn filtered_read_advances_past_unmatched_entries(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let ns = h.namespace();
    let streams: Vec<StreamId> = (0..3).map(|i| ns.stream(&format!("skip-{i}"))).collect();
    mixed_history(&*es, &streams, 4).await?;
    let (everything, _) = read_all_to_end(&*h, &*es, &Checkpoint::origin(), 100, &EventFilter::all()).await?;
    let nothing = EventFilter::all().event_type("NeverWritten");
    let (got, next) = read_to_end_progressing(&*es, &Checkpoint::origin(), 2, &nothing).await?;
    ensure!(
        got.is_empty(),
        "a filter matching nothing returned {} events",
        got.len()
    );
    for e in &everything {
        ensure!(
            next.covers(&e.position),
            "after a filtered read reached caught_up, its checkpoint {next:?} does not cover the scanned \
             event at {}",
            e.position
        );
    }
    // The checkpoint must not overshoot: a later matching event is still delivered.
    let later = ns.stream("skip-later");
    let (later_ids, _) = append_ids(
        &*es,
        &later,
        ExpectedVersion::NoStream,
        vec![
            event("NeverWritten", 1),
            event("Other", 2),
            event("NeverWritten", 3),
        ],
        "append",
    )
    .await?;
    let (after, _) = read_to_end_progressing(&*es, &next, 1, &nothing).await?;
    ensure_eq!(
        ids(&after),
        vec![later_ids[0], later_ids[2]],
        "matching events appended after the filtered reader caught up"
    );
    Ok(Verdict::Passed)
}

/// Reading from the origin of an empty store is caught up with no events, and a reader started
/// then receives events appended later (items 46, 45).
pub async fn origin_of_empty_store_is_caught_up(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let batch = es
        .read_all(&Checkpoint::origin(), 10, &EventFilter::all())
        .await
        .ctx("read_all on an empty store")?;
    ensure!(
        batch.events.is_empty(),
        "an empty store returned {} events",
        batch.events.len()
    );
    ensure!(
        batch.caught_up,
        "read_all on an empty store must report caught_up"
    );
    let again = es
        .read_all(&batch.next, 10, &EventFilter::all())
        .await
        .ctx("read_all from the empty store's next checkpoint")?;
    ensure!(
        again.events.is_empty() && again.caught_up,
        "second read of an empty store: {again:?}"
    );
    let s = h.namespace().stream("first");
    let (written, _) = append_ids(&*es, &s, ExpectedVersion::NoStream, events(1, 3), "append").await?;
    let (got, _) = read_to_end_progressing(&*es, &again.next, 2, &EventFilter::all()).await?;
    ensure_eq!(ids(&got), written, "events appended after an empty-store read");
    Ok(Verdict::Passed)
}

/// A checkpoint taken at the end of the log returns only events appended afterwards (item 44).
pub async fn subscribe_from_end_sees_only_new_events(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let ns = h.namespace();
    let (a, b) = (ns.stream("end-a"), ns.stream("end-b"));
    es.append(&a, ExpectedVersion::NoStream, events(1, 5))
        .await
        .ctx("append")?;
    let (_, end) = read_all_to_end(&*h, &*es, &Checkpoint::origin(), 2, &EventFilter::all()).await?;
    let from_end = es
        .read_all(&end, 10, &EventFilter::all())
        .await
        .ctx("read_all from the end")?;
    ensure!(
        from_end.events.is_empty() && from_end.caught_up,
        "reading from the end returned {} events, caught_up {}",
        from_end.events.len(),
        from_end.caught_up
    );
    let (mut want, _) = append_ids(&*es, &b, ExpectedVersion::NoStream, events(6, 2), "append").await?;
    let (more, _) = append_ids(&*es, &a, ExpectedVersion::Exact(5), events(8, 1), "append").await?;
    want.extend(more);
    let (got, _) = read_to_end_progressing(&*es, &end, 10, &EventFilter::all()).await?;
    let got_set: BTreeSet<EventId> = ids(&got).into_iter().collect();
    ensure_eq!(got.len(), want.len(), "events after the end checkpoint");
    ensure_eq!(
        got_set,
        want.iter().copied().collect::<BTreeSet<_>>(),
        "ids after the end checkpoint"
    );
    ensure_eq!(
        ids(&of_stream(&got, &b).into_iter().cloned().collect::<Vec<_>>()),
        want[..2].to_vec(),
        "new events of stream b in order"
    );
    Ok(Verdict::Passed)
}

/// A checkpoint from another store identity (other id, other epoch, or no identity with
/// positions) is refused with CheckpointMismatch (item 44, `docs/DESIGN.md` section 2).
pub async fn foreign_checkpoint_is_refused(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    es.append(
        &h.namespace().stream("foreign"),
        ExpectedVersion::NoStream,
        events(1, 2),
    )
    .await
    .ctx("append")?;
    let (_, cp) = read_all_to_end(&*h, &*es, &Checkpoint::origin(), 10, &EventFilter::all()).await?;
    let me = es.identity();
    let foreign_id = Checkpoint {
        store: Some(StoreIdentity {
            id: format!("{}-elsewhere", me.id),
            epoch: me.epoch,
        }),
        ..cp.clone()
    };
    let foreign_epoch = Checkpoint {
        store: Some(StoreIdentity {
            id: me.id.clone(),
            epoch: me.epoch + 1,
        }),
        ..cp.clone()
    };
    let anonymous = Checkpoint {
        store: None,
        ..cp.clone()
    };
    let foreign_origin = Checkpoint {
        partitions: Default::default(),
        ..foreign_id.clone()
    };
    for (what, c) in [
        ("another store id", foreign_id),
        ("another epoch of this store", foreign_epoch),
        ("positions without a store identity", anonymous),
        ("another store id without positions", foreign_origin),
    ] {
        ensure_err!(
            es.read_all(&c, 10, &EventFilter::all()).await,
            cqrs_core::Error::CheckpointMismatch { .. },
            "read_all from a checkpoint of {what}"
        );
    }
    Ok(Verdict::Passed)
}

/// A checkpoint of this store that is ahead of a partition's head is refused with DataLoss
/// naming that partition (`docs/DESIGN.md` section 2).
pub async fn checkpoint_ahead_of_head_is_data_loss(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let out = es
        .append(
            &h.namespace().stream("ahead"),
            ExpectedVersion::NoStream,
            events(1, 2),
        )
        .await
        .ctx("append")?;
    let Some(pos) = out.position else {
        return Err(Failure("a non-empty append returned no position".into()));
    };
    let (_, mut cp) = read_all_to_end(&*h, &*es, &Checkpoint::origin(), 10, &EventFilter::all()).await?;
    let head = cp.get(pos.partition).map_or(pos.offset, |p| p.offset);
    let far = head[0].saturating_add(1_000_000_000).min(MAX_VERSION);
    ensure!(
        far > head[0],
        "the head offset {head:?} leaves no room for a checkpoint ahead of it"
    );
    cp.store = Some(es.identity());
    // The largest offset a checkpoint can hold is one more input with one answer everywhere,
    // although no backend can store a position that large.
    for offset in [[far, 0, 0], [u64::MAX; 3]] {
        cp.partitions.insert(pos.partition, offset);
        match es.read_all(&cp, 10, &EventFilter::all()).await {
            Err(cqrs_core::Error::DataLoss { partition }) => {
                ensure_eq!(partition, pos.partition, "partition named by DataLoss");
            }
            other => {
                return Err(Failure(format!(
                "read_all from a checkpoint far ahead of the head ({cp:?}): expected DataLoss, got {other:?}"
            )))
            }
        }
    }
    Ok(Verdict::Passed)
}

/// Every event and quarantined position from `from` to the end of the log.
async fn read_with_quarantine(
    es: &dyn EventStore,
    from: &Checkpoint,
    page: usize,
    filter: &EventFilter,
) -> Result<(Vec<RecordedEvent>, Vec<Position>), Failure> {
    let (mut events, mut skipped, mut cp) = (Vec::new(), Vec::new(), from.clone());
    for _ in 0..100_000 {
        let batch = es.read_all(&cp, page, filter).await.ctx("read_all")?;
        events.extend(batch.events);
        skipped.extend(batch.quarantined);
        cp = batch.next;
        if batch.caught_up {
            return Ok((events, skipped));
        }
    }
    Err(Failure("read_all never reported caught_up".into()))
}

/// An operator quarantines one event of the log (`Admin::quarantine`): every reader from
/// before it skips it and reports its position, whatever its filter; the other events of its
/// commit are delivered; a second quarantine keeps the first record; a position the log does
/// not hold is NotFound; stream reads are unchanged; and a release makes it readable again.
/// The way out when one corrupt event fails `read_all` for every reader.
pub async fn quarantined_event_is_skipped_and_reported(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let admin = h.stores().admin.clone();
    let s = h.namespace().stream("quarantine");
    es.append(&s, ExpectedVersion::NoStream, events(1, 3))
        .await
        .ctx("append a commit of 3")?;
    es.append(&s, ExpectedVersion::Exact(3), events(4, 1))
        .await
        .ctx("append a fourth event")?;
    let (all, _) = read_all_to_end(&*h, &*es, &Checkpoint::origin(), 10, &EventFilter::all()).await?;
    let all: Vec<RecordedEvent> = of_stream(&all, &s).into_iter().cloned().collect();
    ensure_eq!(all.len(), 4, "events in the log before the quarantine");
    let target = all[1].position;
    match admin.quarantine(target, "operator: corrupt payload").await {
        Err(cqrs_core::Error::Unsupported { .. }) => {
            not_run!("the backend cannot quarantine (Admin::quarantine)")
        }
        other => other.ctx("quarantine the second event")?,
    }
    admin
        .quarantine(target, "a second reason")
        .await
        .ctx("quarantine it again")?;
    let listed = admin.quarantined().await.ctx("list the quarantine")?;
    ensure_eq!(
        listed
            .iter()
            .map(|q| (q.position, q.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(target, "operator: corrupt payload")],
        "the quarantine keeps the first record"
    );
    let rest = vec![all[0].event_id(), all[2].event_id(), all[3].event_id()];
    for page in [1, 10] {
        let (seen, skipped) =
            read_with_quarantine(&*es, &Checkpoint::origin(), page, &EventFilter::all()).await?;
        ensure_eq!(ids(&seen), rest, "events read from the origin in pages of {page}");
        ensure_eq!(
            skipped,
            vec![target],
            "quarantined positions reported in pages of {page}"
        );
    }
    let unmatched = EventFilter::all().event_type("NoSuchType");
    let (seen, skipped) = read_with_quarantine(&*es, &Checkpoint::origin(), 10, &unmatched).await?;
    ensure!(
        seen.is_empty(),
        "a filter matching nothing read {} events",
        seen.len()
    );
    ensure_eq!(
        skipped,
        vec![target],
        "quarantined position reported under a filter"
    );
    let mut after_first = Checkpoint::origin();
    after_first.store = Some(es.identity());
    after_first.advance(&all[0].position);
    let (seen, skipped) = read_with_quarantine(&*es, &after_first, 10, &EventFilter::all()).await?;
    ensure_eq!(ids(&seen), rest[1..].to_vec(), "events read after the first");
    ensure_eq!(
        skipped,
        vec![target],
        "quarantined position reported after the first"
    );
    let after_target = {
        let mut cp = after_first.clone();
        cp.advance(&target);
        cp
    };
    let (_, skipped) = read_with_quarantine(&*es, &after_target, 10, &EventFilter::all()).await?;
    ensure!(
        skipped.is_empty(),
        "a reader past the quarantined event was told of it: {skipped:?}"
    );
    ensure_eq!(
        ids(&es.read_stream(&s, 1, 10).await.ctx("read_stream")?),
        ids(&all),
        "stream reads are unchanged by the quarantine"
    );

    let last = all[3].position;
    let mut far = last;
    far.offset[0] = far.offset[0].saturating_add(1_000_000_000);
    let mut beside = last;
    beside.offset[2] = beside.offset[2].saturating_add(1_000);
    for (what, nowhere) in [("far ahead of the head", far), ("beside the last event", beside)] {
        ensure_err!(
            admin.quarantine(nowhere, "nothing there").await,
            cqrs_core::Error::NotFound { .. },
            "quarantine of a position {what} ({nowhere})"
        );
    }
    ensure!(
        admin.release(target).await.ctx("release")?,
        "release of a quarantined event says true"
    );
    ensure!(
        !admin.release(target).await.ctx("release again")?,
        "a second release says false"
    );
    ensure!(
        admin.quarantined().await.ctx("list")?.is_empty(),
        "nothing quarantined after the release"
    );
    let (seen, skipped) = read_with_quarantine(&*es, &Checkpoint::origin(), 10, &EventFilter::all()).await?;
    ensure_eq!(ids(&seen), ids(&all), "events read after the release");
    ensure!(
        skipped.is_empty(),
        "nothing skipped after the release: {skipped:?}"
    );
    Ok(Verdict::Passed)
}

/// The `next` checkpoint of a non-empty read carries the store's identity, survives a JSON round
/// trip, and resuming from the parsed copy works (items 44, 66).
pub async fn next_checkpoint_carries_store_identity(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let s = h.namespace().stream("identity");
    es.append(&s, ExpectedVersion::NoStream, events(1, 3))
        .await
        .ctx("append")?;
    let batch = es
        .read_all(&Checkpoint::origin(), 2, &EventFilter::all())
        .await
        .ctx("read_all")?;
    ensure_eq!(
        batch.next.store,
        Some(es.identity()),
        "store identity of read_all's next checkpoint"
    );
    let parsed = Checkpoint::from_json(&batch.next.to_json()).ctx("Checkpoint::from_json")?;
    ensure_eq!(parsed, batch.next, "checkpoint after a JSON round trip");
    let (rest, end) = read_to_end_progressing(&*es, &parsed, 10, &EventFilter::all()).await?;
    ensure_eq!(
        batch.events.len() + rest.len(),
        3,
        "events read before and after the JSON round trip"
    );
    ensure_eq!(
        end.store,
        Some(es.identity()),
        "store identity of the final checkpoint"
    );
    Ok(Verdict::Passed)
}

/// Appends begun in order A, B, C and finished C (commit), A (commit), B (rollback) reach a
/// tailing reader exactly once each, and the rolled-back one never does; the gap it leaves is
/// passed (items 38, 40). Needs `ConformanceHooks::hold_append`.
pub async fn out_of_order_commits_delivered_exactly_once(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let Some(hooks) = h.hooks() else {
        not_run!("needs ConformanceHooks::hold_append (no hooks provided)");
    };
    let ns = h.namespace();
    let all = EventFilter::all();
    es.append(&ns.stream("ooo-warm"), ExpectedVersion::NoStream, events(0, 1))
        .await
        .ctx("append")?;
    let (_, mut cp) = read_all_to_end(&*h, &*es, &Checkpoint::origin(), 10, &all).await?;
    let (sa, sb, sc) = (ns.stream("ooo-a"), ns.stream("ooo-b"), ns.stream("ooo-c"));
    let (ea, eb, ec) = (events(1, 2), events(3, 2), events(5, 2));
    let ids_of = |b: &[EventData]| b.iter().map(|e| e.event_id).collect::<Vec<_>>();
    let (ia, ib, ic) = (ids_of(&ea), ids_of(&eb), ids_of(&ec));
    let Some(a) = hooks.hold_append(&sa, ExpectedVersion::NoStream, ea).await else {
        not_run!("needs ConformanceHooks::hold_append");
    };
    let a = a.ctx("hold_append A")?;
    let b = match hooks.hold_append(&sb, ExpectedVersion::NoStream, eb).await {
        Some(r) => r.ctx("hold_append B")?,
        None => not_run!("needs ConformanceHooks::hold_append"),
    };
    let c = match hooks.hold_append(&sc, ExpectedVersion::NoStream, ec).await {
        Some(r) => r.ctx("hold_append C")?,
        None => not_run!("needs ConformanceHooks::hold_append"),
    };
    let mut seen: Vec<RecordedEvent> = Vec::new();
    let read = |cp: Checkpoint| {
        let es = es.clone();
        async move { read_to_end_progressing(&*es, &cp, 1, &EventFilter::all()).await }
    };
    let (got, next) = read(cp.clone()).await?;
    seen.extend(got);
    cp = next;
    let c_out = c.commit().await.ctx("commit C")?;
    ensure_eq!(c_out.first_version, 1, "first version of C's commit");
    let (got, next) = read(cp.clone()).await?;
    seen.extend(got);
    cp = next;
    a.commit().await.ctx("commit A")?;
    let (got, next) = read(cp.clone()).await?;
    seen.extend(got);
    cp = next;
    b.rollback().await.ctx("roll back B")?;
    let (got, _) = read(cp.clone()).await?;
    seen.extend(got);
    ensure_each_once(&seen, "tailing reader across out-of-order commits")?;
    ensure_log_order(&seen, "tailing reader across out-of-order commits")?;
    let seen_ids: HashSet<EventId> = ids(&seen).into_iter().collect();
    for (name, batch) in [("A", &ia), ("C", &ic)] {
        ensure!(
            batch.iter().all(|id| seen_ids.contains(id)),
            "the tailing reader never received committed append {name}"
        );
    }
    ensure!(
        !ib.iter().any(|id| seen_ids.contains(id)),
        "the tailing reader received rolled-back append B"
    );
    ensure_eq!(
        seen.len(),
        4,
        "events received by the tailing reader (A and C, two each)"
    );
    ensure_eq!(
        es.stream_state(&sb).await.ctx("stream_state B")?,
        cqrs_core::StreamState::Missing,
        "state of the rolled-back stream"
    );
    let (fresh, _) = read_to_end_progressing(&*es, &Checkpoint::origin(), 3, &all).await?;
    ensure_eq!(
        fresh.len(),
        5,
        "events in a fresh read from the origin (warm-up, A, C)"
    );
    Ok(Verdict::Passed)
}

/// While an append is held open a reader may stall, but it never moves past the held append:
/// once it commits, the reader receives it, and every event exactly once (item 41). Needs
/// `ConformanceHooks::hold_append`.
pub async fn long_open_append_is_not_skipped(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let Some(hooks) = h.hooks() else {
        not_run!("needs ConformanceHooks::hold_append (no hooks provided)");
    };
    let ns = h.namespace();
    let (held_stream, free_stream) = (ns.stream("held"), ns.stream("free"));
    let held_events = events(1, 2);
    let held_ids: Vec<EventId> = held_events.iter().map(|e| e.event_id).collect();
    let held = match hooks
        .hold_append(&held_stream, ExpectedVersion::NoStream, held_events)
        .await
    {
        Some(r) => r.ctx("hold_append")?,
        None => not_run!("needs ConformanceHooks::hold_append"),
    };
    let (free_ids, _) = append_ids(
        &*es,
        &free_stream,
        ExpectedVersion::NoStream,
        events(3, 2),
        "append",
    )
    .await?;
    let (before, cp) = read_to_end_progressing(&*es, &Checkpoint::origin(), 1, &EventFilter::all()).await?;
    ensure!(
        !before.iter().any(|e| held_ids.contains(&e.event_id())),
        "the reader saw events of an append that has not committed"
    );
    held.commit().await.ctx("commit the held append")?;
    let (after, _) = read_to_end_progressing(&*es, &cp, 1, &EventFilter::all()).await?;
    let mut seen = before;
    seen.extend(after);
    ensure_each_once(&seen, "reader across a long-open append")?;
    let got: BTreeSet<EventId> = ids(&seen).into_iter().collect();
    let want: BTreeSet<EventId> = held_ids.iter().chain(&free_ids).copied().collect();
    ensure_eq!(
        got,
        want,
        "events received once the held append committed (none skipped)"
    );
    Ok(Verdict::Passed)
}

/// Positions of commits made through a second, independent client come after those of earlier
/// commits made through the first, and each client reads the other's events (item 42). Needs
/// `ConformanceHooks::reconnect`.
pub async fn positions_from_another_client_are_later(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    let Some(hooks) = h.hooks() else {
        not_run!("needs ConformanceHooks::reconnect (no hooks provided)");
    };
    let other = match hooks.reconnect().await {
        Some(r) => r.ctx("reconnect")?,
        None => not_run!("needs ConformanceHooks::reconnect"),
    };
    let s = h.namespace().stream("two-clients");
    let mut positions = Vec::new();
    for (i, client) in [&es, &other.events, &es, &other.events].into_iter().enumerate() {
        let v = u64::try_from(i).unwrap_or(0);
        let out = client
            .append(&s, ExpectedVersion::Exact(v), events(v, 1))
            .await
            .ctx("append")?;
        let Some(p) = out.position else {
            return Err(Failure("a non-empty append returned no position".into()));
        };
        positions.push(p);
    }
    for w in positions.windows(2) {
        ensure_eq!(
            w[0].cmp_in_partition(&w[1]),
            Some(std::cmp::Ordering::Less),
            "position {} (earlier commit) vs {} (later commit by the other client)",
            w[0],
            w[1]
        );
    }
    let (mine, _) = read_all_to_end(&*h, &*es, &Checkpoint::origin(), 10, &EventFilter::all()).await?;
    let (theirs, _) = read_all_to_end(
        &*h,
        &*other.events,
        &Checkpoint::origin(),
        10,
        &EventFilter::all(),
    )
    .await?;
    ensure_eq!(ids(&mine), ids(&theirs), "the log as read by both clients");
    ensure_eq!(mine.len(), 4, "events in the log");
    Ok(Verdict::Passed)
}

/// Where a total order is declared, every event is in one partition and sequential appends to
/// different streams get strictly increasing positions, read back in append order (item 37).
pub async fn total_order_follows_append_order(h: Arc<dyn Harness>) -> Outcome {
    let es = h.stores().events.clone();
    require_log!(es);
    if !es.capabilities().total_order {
        not_run!("needs Capabilities::total_order");
    }
    ensure_eq!(
        es.capabilities().partitions,
        1,
        "a store claiming a total order has one partition"
    );
    let ns = h.namespace();
    let streams: Vec<StreamId> = (0..4).map(|i| ns.stream(&format!("total-{i}"))).collect();
    let appended = mixed_history(&*es, &streams, 3).await?;
    let (all, _) = read_all_to_end(&*h, &*es, &Checkpoint::origin(), 4, &EventFilter::all()).await?;
    let partitions: BTreeSet<u32> = all.iter().map(|e| e.position.partition).collect();
    ensure_eq!(
        partitions.len(),
        1,
        "partitions used under a declared total order"
    );
    ensure_log_order(&all, "totally ordered log")?;
    ensure_eq!(ids(&all), appended, "log order vs append order");
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_tests {
    ($factory:expr) => {
        $crate::__tests!(
            $factory,
            log,
            [
                every_event_once_in_log_order,
                per_stream_order_under_concurrent_appenders,
                live_reader_misses_nothing_under_many_writers,
                resume_from_every_checkpoint_returns_the_rest,
                page_sizes_agree,
                filter_by_stream_prefix,
                filter_by_event_type,
                filtered_read_advances_past_unmatched_entries,
                origin_of_empty_store_is_caught_up,
                subscribe_from_end_sees_only_new_events,
                foreign_checkpoint_is_refused,
                checkpoint_ahead_of_head_is_data_loss,
                quarantined_event_is_skipped_and_reported,
                next_checkpoint_carries_store_identity,
                out_of_order_commits_delivered_exactly_once,
                long_open_append_is_not_skipped,
                positions_from_another_client_are_later,
                total_order_follows_append_order,
            ]
        );
    };
}
