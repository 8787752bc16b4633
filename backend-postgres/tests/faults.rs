//! Faults and bad input against the real server: killed connections, an exhausted pool,
//! an unreachable server, invalid identifiers, oversized input, the longest stream id, and
//! migrations under concurrent first use or edited after being applied.
//!
//! These tests hold transactions open, so nextest runs them alone (`fault_` prefix, see
//! `.config/nextest.toml`).

mod common;

use std::time::{Duration, Instant};

use backend_postgres::{PgBackend, PgStoreOptions, SchemaName};
use cqrs_core::{
    Checkpoint, ContentType, DeleteMode, Error, EventData, EventFilter, EventStore, ExpectedVersion,
    LimitKind, Limits, Outcome, StreamId, StreamState,
};

fn schema() -> String {
    format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

fn event(n: u32) -> EventData {
    EventData::new("Faulted", ContentType::Json, format!("{{\"n\":{n}}}"))
}

/// A backend of `app` that is waiting on a lock, if any.
#[allow(clippy::unwrap_used)] // test support
async fn lock_waiter(backend: &PgBackend, app: &str) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE application_name = $1 AND wait_event_type = 'Lock' AND state = 'active' LIMIT 1",
    )
    .bind(app)
    .fetch_optional(backend.pool())
    .await
    .unwrap()
}

/// Waits (polling, 1 ms apart) until a backend of `app` is waiting on a lock.
async fn wait_for_lock_waiter(backend: &PgBackend, app: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = lock_waiter(backend, app).await {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "the append never waited on the stream lock"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_connection_killed_during_append_is_unknown_and_resend_leaves_one_copy() {
    killed_during_append(vec![event(1), event(2)]).await;
}

/// The same through the single-event statement (append_one.sql): first for a stream that
/// does not exist yet (its call of the append function), then for one that does (its own
/// lock, update and insert).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_connection_killed_during_single_append_is_unknown_and_resend_leaves_one_copy() {
    killed_during_append(vec![event(1)]).await;
}

/// Appends `batch` in a task while another transaction holds the stream's lock, kills that
/// append's connection once it waits, and checks the append's outcome is unknown.
#[allow(clippy::unwrap_used)] // test support
async fn kill_waiting_append(
    backend: &std::sync::Arc<PgBackend>,
    ns: &str,
    s: &StreamId,
    expected: ExpectedVersion,
    batch: &[EventData],
) {
    let appender = {
        let (backend, s, batch) = (backend.clone(), s.clone(), batch.to_vec());
        tokio::spawn(async move { backend.append(&s, expected, batch).await })
    };
    let pid = wait_for_lock_waiter(backend, ns).await;
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(backend.pool())
        .await
        .unwrap();
    assert!(killed);
    let err = appender.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unavailable {
                outcome: Outcome::Unknown,
                ..
            }
        ),
        "a statement in flight when its connection died has an unknown outcome: {err:?}"
    );
}

/// Kills the connection of an append of `batch` (with `Any`) while it waits on the stream
/// lock, then re-sends it twice: an unknown outcome, then exactly one copy.
#[allow(clippy::unwrap_used)] // test support
async fn killed_during_append(batch: Vec<EventData>) {
    let ns = schema();
    let backend = common::fresh(&ns).await.unwrap();
    let s = StreamId::new("killed:{'\"; %_😀}").unwrap();
    // Another transaction holds the stream's lock, so the append is in flight, waiting.
    let blocker = backend
        .hold_append(&s, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    kill_waiting_append(&backend, &ns, &s, ExpectedVersion::Any, &batch).await;
    blocker.rollback().await.unwrap();
    // Re-send the same batch (same ids): idempotency makes it safe, whatever happened.
    let first = backend
        .append(&s, ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    let again = backend
        .append(&s, ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    assert_eq!(first, again, "a second re-send returns the original outcome");
    let read = backend.read_stream(&s, 1, 10).await.unwrap();
    let ids: Vec<_> = read.iter().map(|e| e.data.event_id).collect();
    assert_eq!(
        ids,
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        "exactly one copy"
    );
    let n = u64::try_from(batch.len()).unwrap();
    assert_eq!(backend.stream_state(&s).await.unwrap(), StreamState::Live(n));
    // Once the stream exists, a single event takes the statement's own path: killed while it
    // waits, re-sent, one copy.
    let blocker = backend
        .hold_append(&s, ExpectedVersion::Exact(n), vec![event(7)])
        .await
        .unwrap();
    let one = vec![event(8)];
    kill_waiting_append(&backend, &ns, &s, ExpectedVersion::Exact(n), &one).await;
    blocker.rollback().await.unwrap();
    let first = backend
        .append(&s, ExpectedVersion::Exact(n), one.clone())
        .await
        .unwrap();
    assert_eq!(first.first_version, n + 1);
    let again = backend
        .append(&s, ExpectedVersion::Exact(n), one.clone())
        .await
        .unwrap();
    assert_eq!(first, again, "a re-send returns the original outcome");
    let again = backend.append(&s, ExpectedVersion::Any, one).await.unwrap();
    assert_eq!(first, again, "a re-send with Any too");
    assert_eq!(backend.stream_state(&s).await.unwrap(), StreamState::Live(n + 1));
    common::drop_schema(&ns).await.unwrap();
}

/// Two first appends to a new stream race: the second waits on the stream lock while the
/// first commits. The single-event statement's snapshot predates that commit, so it finds no
/// stream row and falls through to the function, whose statements see the committed head. A
/// race ends as a conflict or as a write after the first, never as the `Corrupt` that a
/// version already stored now means (`events_stream_version_key`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::unwrap_used)] // test support
async fn fault_concurrent_first_appends_to_a_new_stream_conflict_or_follow_never_corrupt() {
    let ns = schema();
    let backend = common::fresh(&ns).await.unwrap();
    for n in [1u32, 2] {
        for expected in [ExpectedVersion::NoStream, ExpectedVersion::Any] {
            let s = StreamId::new(format!("race-{n}-{expected:?}")).unwrap();
            let first = backend
                .hold_append(&s, ExpectedVersion::NoStream, vec![event(0)])
                .await
                .unwrap();
            let second = {
                let (backend, s) = (backend.clone(), s.clone());
                let batch: Vec<EventData> = (1..=n).map(event).collect();
                tokio::spawn(async move { backend.append(&s, expected, batch).await })
            };
            wait_for_lock_waiter(&backend, &ns).await;
            first.commit().await.unwrap();
            let result = second.await.unwrap();
            if expected == ExpectedVersion::NoStream {
                assert!(
                    matches!(
                        result,
                        Err(Error::Conflict {
                            actual: StreamState::Live(1),
                            ..
                        })
                    ),
                    "{n} with {expected}: {result:?}"
                );
                assert_eq!(backend.stream_state(&s).await.unwrap(), StreamState::Live(1));
            } else {
                let out = result.unwrap();
                assert_eq!(out.first_version, 2, "{n} with {expected}");
                let last = 1 + u64::from(n);
                assert_eq!(backend.stream_state(&s).await.unwrap(), StreamState::Live(last));
            }
        }
    }
    common::drop_schema(&ns).await.unwrap();
}

/// Two stores in one database (two schemas) using the same stream id must not share the
/// stream's lock: an append held open in one does not stall appends or deletes in the
/// other, and still serialises appends to that stream within its own schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_stream_locks_are_per_schema() {
    let (ns_a, ns_b) = (schema(), schema());
    let a = common::fresh(&ns_a).await.unwrap();
    let b = common::fresh(&ns_b).await.unwrap();
    let s = StreamId::new("shared-name").unwrap();
    let held = a
        .hold_append(&s, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();

    // In the other schema: each operation either finishes, or is seen waiting on a lock
    // (which fails the test at once, instead of after a timeout).
    let other = {
        let (b, s) = (b.clone(), s.clone());
        tokio::spawn(async move {
            b.append(&s, ExpectedVersion::NoStream, vec![event(1)]).await?;
            b.append(&s, ExpectedVersion::Exact(1), vec![event(2)]).await?;
            b.delete_stream(&s, ExpectedVersion::Exact(2), DeleteMode::Soft)
                .await
        })
    };
    loop {
        if other.is_finished() {
            break;
        }
        assert!(
            lock_waiter(&b, &ns_b).await.is_none(),
            "a store in another schema waited on this schema's stream lock"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    other.await.unwrap().unwrap();
    assert_eq!(b.stream_state(&s).await.unwrap(), StreamState::SoftDeleted(2));

    // In its own schema the lock still holds: a second append waits for the first.
    let same = {
        let (a, s) = (a.clone(), s.clone());
        tokio::spawn(async move { a.append(&s, ExpectedVersion::Any, vec![event(3)]).await })
    };
    wait_for_lock_waiter(&a, &ns_a).await;
    assert!(!same.is_finished());
    held.commit().await.unwrap();
    let outcome = same.await.unwrap().unwrap();
    assert_eq!(outcome.first_version, 2);
    common::drop_schema(&ns_a).await.unwrap();
    common::drop_schema(&ns_b).await.unwrap();
}

/// Connections killed while idle in the pool: with a ping before every use they are
/// replaced (one statement may still meet a backend that has not died yet); by default, a
/// connection used within `ping_after_idle` is not pinged, so each dead one may fail one
/// statement, retryably, and then is gone. Either way the store recovers without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_terminated_idle_connections_are_replaced() {
    const POOL: u32 = 4;
    for (ping_after_idle, most_failures) in [(Duration::ZERO, 1), (Duration::from_secs(3600), POOL)] {
        let ns = schema();
        let backend = PgBackend::connect(
            &common::options(&ns)
                .unwrap()
                .max_connections(POOL)
                .ping_after_idle(ping_after_idle),
        )
        .await
        .unwrap();
        backend.migrate().await.unwrap();
        let s = StreamId::new("idle-killed").unwrap();
        backend
            .append(&s, ExpectedVersion::NoStream, vec![event(1)])
            .await
            .unwrap();
        let other = common::fresh(&ns).await.unwrap();
        let n = other.terminate_connections(&ns).await.unwrap();
        assert!(n >= 1, "the first pool had a connection to kill");
        let batch = vec![event(2)];
        let mut failures = 0;
        let out = loop {
            match backend.append(&s, ExpectedVersion::Exact(1), batch.clone()).await {
                Ok(out) => break out,
                Err(e) => {
                    assert!(e.is_retryable(), "{e:?}");
                    failures += 1;
                    assert!(
                        failures <= most_failures,
                        "{failures} failures with ping_after_idle {ping_after_idle:?}"
                    );
                }
            }
        };
        assert_eq!(out.first_version, 2);
        assert_eq!(backend.read_stream(&s, 1, 10).await.unwrap().len(), 2);
        common::drop_schema(&ns).await.unwrap();
    }
}

/// Whether a connection of `app` is idle inside a transaction, waiting up to `within`.
#[allow(clippy::unwrap_used)] // test support
async fn idle_in_transaction(observer: &sqlx::PgPool, app: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                            WHERE application_name = $1 AND state = 'idle in transaction')",
        )
        .bind(app)
        .fetch_one(observer)
        .await
        .unwrap();
        if found || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A call dropped after its `BEGIN` reached the server but before the answer came back (an
/// aborted task: a relay killed mid-checkpoint) leaves no transaction on the pooled
/// connection. With sqlx's own `Pool::begin` it did: the next append on that connection ran
/// inside the abandoned transaction, reported success, and was never committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_call_dropped_during_begin_leaves_no_transaction_behind() {
    use cqrs_core::CheckpointStore;

    let ns = schema();
    // One connection, so the append below gets whatever the dropped call left on it.
    let backend = PgBackend::connect(&common::options(&ns).unwrap().max_connections(1))
        .await
        .unwrap();
    backend.migrate().await.unwrap();
    let observer = sqlx::PgPool::connect(&common::url()).await.unwrap();
    let lease = backend
        .acquire("relay", "a", Duration::from_secs(60))
        .await
        .unwrap();
    let origin = Checkpoint::origin();
    let mut caught = false;
    'attempts: for _ in 0..20 {
        let save = backend.save("relay", &origin, lease.epoch);
        let mut save = std::pin::pin!(save);
        // Polled step by step until the server has run its BEGIN: the poll that sent it
        // stopped at the answer, and the future is dropped without another.
        for _ in 0..100 {
            if futures::poll!(&mut save).is_ready() {
                continue 'attempts;
            }
            if idle_in_transaction(&observer, &ns, Duration::from_millis(20)).await {
                caught = true;
                break 'attempts;
            }
        }
    }
    assert!(caught, "no save was caught between its BEGIN and the answer");
    let s = StreamId::new("after-dropped-begin").unwrap();
    backend
        .append(&s, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let committed: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.events",
        backend_postgres::SchemaName::new(&ns).unwrap().quoted()
    ))
    .fetch_one(&observer)
    .await
    .unwrap();
    assert_eq!(
        committed, 1,
        "the append ran inside the dropped call's transaction"
    );
    assert!(
        !idle_in_transaction(&observer, &ns, Duration::ZERO).await,
        "the pooled connection is still inside a transaction"
    );
    observer.close().await;
    backend.close().await.unwrap();
    common::drop_schema(&ns).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_exhausted_pool_is_unavailable_not_sent() {
    let ns = schema();
    common::fresh(&ns).await.unwrap();
    let options = common::options(&ns)
        .unwrap()
        .max_connections(1)
        .connect_timeout(Duration::from_millis(300));
    let backend = PgBackend::connect(&options).await.unwrap();
    backend.migrate().await.unwrap();
    let s = StreamId::new("busy").unwrap();
    let held = backend
        .hold_append(&s, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    let err = backend
        .append(
            &StreamId::new("other").unwrap(),
            ExpectedVersion::Any,
            vec![event(1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unavailable {
                outcome: Outcome::NotSent,
                ..
            }
        ),
        "no connection, nothing sent: {err:?}"
    );
    held.rollback().await.unwrap();
    assert_eq!(
        backend
            .stream_state(&StreamId::new("other").unwrap())
            .await
            .unwrap(),
        StreamState::Missing
    );
    common::drop_schema(&ns).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_unreachable_server_is_unavailable_not_sent() {
    let options = PgStoreOptions::from_url("postgres://postgres@127.0.0.1:1/test?connect_timeout=2").unwrap();
    let err = PgBackend::connect(&options).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unavailable {
                outcome: Outcome::NotSent,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn fault_invalid_schema_identifiers_are_refused() {
    for bad in [
        "",
        "Upper",
        "1abc",
        "a-b",
        "a.b",
        "x\"; DROP SCHEMA public; --",
        "pg_temp",
        "spaß",
        &"a".repeat(64),
    ] {
        assert!(
            matches!(SchemaName::new(bad), Err(Error::InvalidInput { .. })),
            "{bad:?}"
        );
        let url = format!("postgres://h/d?schema={bad}");
        assert!(PgStoreOptions::from_url(&url).is_err(), "{url}");
        let opts = PgStoreOptions::from_url("postgres://h/d").unwrap();
        assert!(opts.with_schema(bad).is_err(), "{bad:?}");
    }
    assert_eq!(SchemaName::new("app_1").unwrap().quoted(), "\"app_1\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_payloads_and_batches_over_limits_write_nothing() {
    let ns = schema();
    common::fresh(&ns).await.unwrap();
    let limits = Limits {
        max_event_bytes: 1024,
        max_batch_bytes: 2048,
        max_batch_count: 3,
        ..Limits::default()
    };
    let backend = PgBackend::connect(&common::options(&ns).unwrap().limits(limits))
        .await
        .unwrap();
    backend.migrate().await.unwrap();
    let s = StreamId::new("limits").unwrap();
    let sized = |n: usize| EventData::new("Big", ContentType::Opaque, vec![7u8; n]);
    let cases = [
        (vec![sized(1025)], LimitKind::EventBytes),
        (vec![sized(1000), sized(1000), sized(1000)], LimitKind::BatchBytes),
        (
            vec![sized(1), sized(1), sized(1), sized(1)],
            LimitKind::BatchCount,
        ),
        (vec![sized(1), sized(2000)], LimitKind::EventBytes),
    ];
    for (batch, kind) in cases {
        let err = backend.append(&s, ExpectedVersion::Any, batch).await.unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { kind: k, .. } if k == kind),
            "{kind:?}: {err:?}"
        );
    }
    let before = backend.round_trips();
    let _ = backend.append(&s, ExpectedVersion::Any, vec![sized(5000)]).await;
    assert_eq!(backend.round_trips(), before, "limits are checked before any I/O");
    assert_eq!(backend.stream_state(&s).await.unwrap(), StreamState::Missing);
    // The default limit: 8 MiB per event.
    let default = common::fresh(&format!("{ns}_d")).await.unwrap();
    let err = default
        .append(
            &s,
            ExpectedVersion::Any,
            vec![sized(Limits::DEFAULT_MAX_EVENT_BYTES + 1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                kind: LimitKind::EventBytes,
                ..
            }
        ),
        "{err:?}"
    );
    common::drop_schema(&ns).await.unwrap();
    common::drop_schema(&format!("{ns}_d")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_stream_id_of_1024_bytes_of_4_byte_characters_round_trips() {
    let ns = schema();
    let backend = common::fresh(&ns).await.unwrap();
    let name = "😀".repeat(256);
    assert_eq!(name.len(), 1024);
    let s = StreamId::new(name.clone()).unwrap();
    assert!(
        StreamId::new(format!("{name}a")).is_err(),
        "1025 bytes is over the limit"
    );
    let out = backend
        .append(&s, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    assert_eq!(out.first_version, 1);
    let read = backend.read_stream(&s, 1, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].stream_id.as_str(), name);
    let listed = backend.list_streams(None, 10).await.unwrap();
    assert_eq!(listed.streams, vec![s.clone()]);
    backend.settle_log(Duration::from_secs(30)).await.unwrap();
    let batch = backend
        .read_all(&Checkpoint::origin(), 10, &EventFilter::stream_prefix("😀😀"))
        .await
        .unwrap();
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].stream_id, s);
    common::drop_schema(&ns).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_concurrent_first_migrate_is_safe_and_edited_migrations_are_refused() {
    let ns = schema();
    let options = common::options(&ns).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let backend = PgBackend::connect(&options).await?;
            backend.migrate().await?;
            Ok::<_, Error>(backend.identity())
        }));
    }
    let mut identities = Vec::new();
    for t in tasks {
        identities.push(t.await.unwrap().unwrap());
    }
    identities.dedup();
    assert_eq!(identities.len(), 1, "one schema, one identity: {identities:?}");
    let backend = PgBackend::connect(&options).await.unwrap();
    sqlx::query(&format!(
        "UPDATE {}._migrations SET checksum = '\\x00' WHERE version = 1",
        backend.schema().quoted()
    ))
    .execute(backend.pool())
    .await
    .unwrap();
    let err = backend.migrate().await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    common::drop_schema(&ns).await.unwrap();
}
