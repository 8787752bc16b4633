//! Model-based tests: random sequences of event-store and snapshot-store operations run
//! against PostgreSQL and Redis (single node) and against the memory backend as the model;
//! the first result that differs fails the case, and proptest shrinks the sequence to the
//! shortest one that still differs.
//!
//! What legitimately differs is normalised away: positions (backend-defined), recording
//! times, error texts (errors compare by variant, plus the actual state of a conflict) and
//! the interleaving of streams in `read_all` (only a stream's own order is promised across
//! partitions). Each case runs in a fresh namespace (a schema, a key prefix).
//!
//! `cargo nextest run -p cqrs --features cqrs/postgres,cqrs/redis -E 'test(/^model_/)'`;
//! `MODEL_CASES` (default 32) and `MODEL_OPS` (default 40) bound a run.
#![cfg(all(feature = "memory", feature = "postgres", feature = "redis"))]
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support may panic

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use cqrs::{
    memory::MemoryBackend,
    postgres::{PgBackend, PgStoreOptions},
    redis::{RedisBackend, RedisStoreOptions},
    Checkpoint, ContentEncoding, ContentType, DeleteMode, Error, EventData, EventFilter, EventId,
    ExpectedVersion, Metadata, Snapshot, Stores, StreamId, StreamState, Timestamp,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Streams a sequence touches: few, so operations meet the same streams often.
const STREAMS: u8 = 3;

/// An expected version, `Exact` relative to the stream's current version in the model (so
/// a generated sequence hits right and wrong versions alike whatever came before).
#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    NoStream,
    StreamExists,
    /// The model's last version plus this (0: right; anything else: wrong).
    Exact(i8),
}

#[derive(Debug, Clone)]
enum Op {
    /// Appends `events` fresh events (0: an empty append).
    Append {
        stream: u8,
        expected: Expect,
        events: u8,
        meta: bool,
    },
    /// Re-sends the `back`-th earlier append (modulo their number).
    Resend {
        back: u8,
        how: Resend,
    },
    Delete {
        stream: u8,
        expected: Expect,
        tombstone: bool,
    },
    /// Truncates before the model's last version plus `rel`.
    Truncate {
        stream: u8,
        rel: i8,
    },
    SaveSnapshot {
        stream: u8,
        version: u8,
        gzip: bool,
    },
    LoadLatest {
        stream: u8,
    },
    LoadAtOrBefore {
        stream: u8,
        version: u8,
    },
    DeleteSnapshots {
        stream: u8,
    },
    /// At least one event: with `max` 0, PostgreSQL and Redis return an empty page for a
    /// tombstoned stream where memory says `StreamDeleted` (reported, left to the owners).
    ReadStream {
        stream: u8,
        from: u8,
        max: u8,
    },
    ReadBackward {
        stream: u8,
        from: Option<u8>,
        max: u8,
    },
    State {
        stream: u8,
    },
    /// Reads the whole store-wide log in pages of `page` events.
    ReadAll {
        page: u8,
    },
}

/// How a batch is re-sent.
#[derive(Debug, Clone, Copy)]
enum Resend {
    /// As it was: the original outcome if it was committed.
    Same,
    /// With a payload changed: idempotency goes by ids, so the same as `Same`.
    Changed,
    /// With a fresh event after it: partly committed, an idempotency mismatch.
    Extended,
    /// In reverse order: committed ids out of order, a mismatch (for two or more).
    Reversed,
    /// To the next stream: an id committed elsewhere (where ids are unique store-wide).
    OtherStream,
}

fn resend() -> impl Strategy<Value = Resend> {
    prop_oneof![
        3 => Just(Resend::Same),
        1 => Just(Resend::Changed),
        1 => Just(Resend::Extended),
        1 => Just(Resend::Reversed),
        1 => Just(Resend::OtherStream),
    ]
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        1 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        1 => Just(Expect::StreamExists),
        3 => Just(Expect::Exact(0)),
        1 => (-2i8..=2).prop_map(Expect::Exact),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..STREAMS;
    prop_oneof![
        6 => (s.clone(), expect(), 0u8..4, any::<bool>())
            .prop_map(|(stream, expected, events, meta)| Op::Append { stream, expected, events, meta }),
        3 => (any::<u8>(), resend()).prop_map(|(back, how)| Op::Resend { back, how }),
        1 => (s.clone(), expect(), any::<bool>())
            .prop_map(|(stream, expected, tombstone)| Op::Delete { stream, expected, tombstone }),
        1 => (s.clone(), -2i8..=2).prop_map(|(stream, rel)| Op::Truncate { stream, rel }),
        2 => (s.clone(), 0u8..6, any::<bool>())
            .prop_map(|(stream, version, gzip)| Op::SaveSnapshot { stream, version, gzip }),
        1 => s.clone().prop_map(|stream| Op::LoadLatest { stream }),
        1 => (s.clone(), 0u8..6).prop_map(|(stream, version)| Op::LoadAtOrBefore { stream, version }),
        1 => s.clone().prop_map(|stream| Op::DeleteSnapshots { stream }),
        2 => (s.clone(), 0u8..6, 1u8..5).prop_map(|(stream, from, max)| Op::ReadStream { stream, from, max }),
        1 => (s.clone(), proptest::option::of(0u8..6), 1u8..5)
            .prop_map(|(stream, from, max)| Op::ReadBackward { stream, from, max }),
        1 => s.clone().prop_map(|stream| Op::State { stream }),
        1 => (1u8..5).prop_map(|page| Op::ReadAll { page }),
    ]
}

/// What an operation returned, without what may legitimately differ.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Appended {
        first: u64,
        next: u64,
    },
    Events(Vec<(u64, EventData)>),
    /// `read_all`: each stream's events in log order.
    Log(BTreeMap<String, Vec<(u64, EventData)>>),
    State(StreamState),
    Snapshot(Option<(u64, u32, Vec<u8>, ContentEncoding, i64)>),
    Count(u64),
    Done,
    /// An error by variant; a conflict also by the state it found.
    Failed(String),
    Skipped,
}

fn failed(e: &Error) -> Out {
    match e {
        Error::Conflict { actual, .. } => Out::Failed(format!("Conflict (actual {actual:?})")),
        other => {
            let debug = format!("{other:?}");
            let end = debug.find([' ', '(', '{']).unwrap_or(debug.len());
            Out::Failed(debug[..end].to_owned())
        }
    }
}

fn outcome<T>(r: cqrs::Result<T>, ok: impl FnOnce(T) -> Out) -> Out {
    r.map_or_else(|e| failed(&e), ok)
}

fn events(r: cqrs::Result<Vec<cqrs::RecordedEvent>>) -> Out {
    outcome(r, |es| {
        Out::Events(es.into_iter().map(|e| (e.version, e.data)).collect())
    })
}

/// The running case: names, the batches sent so far, and the clock of snapshots.
struct Case {
    streams: Vec<StreamId>,
    sent: Vec<(usize, ExpectedVersion, Vec<EventData>)>,
    next_event: u64,
    seed: u64,
}

impl Case {
    fn new(seed: u64) -> Self {
        let streams = (0..STREAMS)
            .map(|i| StreamId::new(format!("model-{i}:{{'q\"; %_ü😀}}")).unwrap())
            .collect();
        Case {
            streams,
            sent: Vec::new(),
            next_event: 0,
            seed,
        }
    }

    /// A fresh event; ids are derived from the case so a replayed (shrunk) case sends the
    /// same bytes to both stores.
    fn event(&mut self, meta: bool) -> EventData {
        self.next_event += 1;
        let n = self.next_event;
        let id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{}-{n}", self.seed).as_bytes(),
        );
        let mut e = EventData::new(
            format!("Happened{}", n % 3),
            ContentType::Json,
            format!("{{\"n\":{n}}}"),
        )
        .with_id(EventId::from_uuid(id))
        .with_schema_version(u32::try_from(n % 2 + 1).unwrap());
        if meta {
            e = e.with_metadata(Metadata {
                correlation_id: Some(format!("c-{n}")),
                actor: Some("ü".into()),
                ..Metadata::default()
            });
        }
        e
    }
}

fn resolve(expect: Expect, current: u64) -> ExpectedVersion {
    match expect {
        Expect::Any => ExpectedVersion::Any,
        Expect::NoStream => ExpectedVersion::NoStream,
        Expect::StreamExists => ExpectedVersion::StreamExists,
        Expect::Exact(d) => ExpectedVersion::Exact(current.saturating_add_signed(i64::from(d))),
    }
}

async fn last_version(model: &Stores, stream: &StreamId) -> u64 {
    match model.events.stream_state(stream).await {
        Ok(StreamState::Live(v) | StreamState::SoftDeleted(v)) => v,
        _ => 0,
    }
}

/// Reads the whole log in pages, at most 200 of them; each stream's events in order.
async fn read_log(stores: &Stores, page: usize) -> Out {
    let mut from = Checkpoint::origin();
    let mut by_stream: BTreeMap<String, Vec<(u64, EventData)>> = BTreeMap::new();
    for _ in 0..200 {
        let batch = match stores.events.read_all(&from, page, &EventFilter::default()).await {
            Ok(b) => b,
            Err(e) => return failed(&e),
        };
        if batch.events.len() > page {
            return Out::Failed(format!(
                "read_all returned {} events for a page of {page}",
                batch.events.len()
            ));
        }
        for e in batch.events {
            by_stream
                .entry(e.stream_id.as_str().to_owned())
                .or_default()
                .push((e.version, e.data));
        }
        from = batch.next;
        if batch.caught_up {
            return Out::Log(by_stream);
        }
    }
    Out::Failed("read_all never caught up".into())
}

/// Runs `op` on `stores`; `op` was resolved against the model before.
async fn apply(stores: &Stores, case: &Case, op: &Resolved) -> Out {
    let s = |i: &u8| &case.streams[usize::from(*i)];
    match op {
        Resolved::Append {
            stream,
            expected,
            events,
        } => {
            let r = stores.events.append(s(stream), *expected, events.clone()).await;
            outcome(r, |o| Out::Appended {
                first: o.first_version,
                next: o.next_expected,
            })
        }
        Resolved::Delete {
            stream,
            expected,
            mode,
        } => outcome(
            stores.events.delete_stream(s(stream), *expected, *mode).await,
            |()| Out::Done,
        ),
        Resolved::Truncate { stream, version } => {
            outcome(stores.events.truncate_before(s(stream), *version).await, |()| {
                Out::Done
            })
        }
        Resolved::SaveSnapshot(snap) => outcome(stores.snapshots.save(snap.clone()).await, |()| Out::Done),
        Resolved::LoadLatest { stream } => snapshot(stores.snapshots.load_latest(s(stream)).await),
        Resolved::LoadAtOrBefore { stream, version } => {
            snapshot(stores.snapshots.load_at_or_before(s(stream), *version).await)
        }
        Resolved::DeleteSnapshots { stream } => outcome(stores.snapshots.delete(s(stream)).await, Out::Count),
        Resolved::ReadStream { stream, from, max } => {
            events(stores.events.read_stream(s(stream), *from, *max).await)
        }
        Resolved::ReadBackward { stream, from, max } => {
            events(stores.events.read_stream_backward(s(stream), *from, *max).await)
        }
        Resolved::State { stream } => outcome(stores.events.stream_state(s(stream)).await, Out::State),
        Resolved::ReadAll { page } => read_log(stores, *page).await,
        Resolved::Skip => Out::Skipped,
    }
}

fn snapshot(r: cqrs::Result<Option<Snapshot>>) -> Out {
    outcome(r, |s| {
        Out::Snapshot(s.map(|s| {
            (
                s.version,
                s.schema_revision,
                s.payload.to_vec(),
                s.content_encoding,
                s.taken_at.as_millis(),
            )
        }))
    })
}

/// An operation with its versions and events made concrete.
#[derive(Debug)]
enum Resolved {
    Append {
        stream: u8,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    },
    Delete {
        stream: u8,
        expected: ExpectedVersion,
        mode: DeleteMode,
    },
    Truncate {
        stream: u8,
        version: u64,
    },
    SaveSnapshot(Snapshot),
    LoadLatest {
        stream: u8,
    },
    LoadAtOrBefore {
        stream: u8,
        version: u64,
    },
    DeleteSnapshots {
        stream: u8,
    },
    ReadStream {
        stream: u8,
        from: u64,
        max: usize,
    },
    ReadBackward {
        stream: u8,
        from: Option<u64>,
        max: usize,
    },
    State {
        stream: u8,
    },
    ReadAll {
        page: usize,
    },
    Skip,
}

/// What the backend and the model both offer (an operation only one offers is skipped).
#[derive(Debug, Clone, Copy)]
struct Common {
    truncate: bool,
    global_ids: bool,
}

async fn resolve_op(case: &mut Case, model: &Stores, op: &Op, common: Common) -> Resolved {
    match op.clone() {
        Op::Append {
            stream,
            expected,
            events,
            meta,
        } => {
            let current = last_version(model, &case.streams[usize::from(stream)]).await;
            let expected = resolve(expected, current);
            let events: Vec<EventData> = (0..events).map(|_| case.event(meta)).collect();
            case.sent.push((usize::from(stream), expected, events.clone()));
            Resolved::Append {
                stream,
                expected,
                events,
            }
        }
        Op::Resend { back, how } => {
            if case.sent.is_empty() {
                return Resolved::Skip;
            }
            let (mut stream, expected, mut events) = case.sent[usize::from(back) % case.sent.len()].clone();
            match how {
                Resend::Same => {}
                Resend::Changed => {
                    if let Some(e) = events.first_mut() {
                        e.payload = bytes::Bytes::from_static(b"{\"changed\":true}");
                    }
                }
                Resend::Extended => events.push(case.event(false)),
                Resend::Reversed => events.reverse(),
                Resend::OtherStream if !common.global_ids => return Resolved::Skip,
                Resend::OtherStream => stream = (stream + 1) % usize::from(STREAMS),
            }
            Resolved::Append {
                stream: u8::try_from(stream).unwrap(),
                expected,
                events,
            }
        }
        Op::Delete {
            stream,
            expected,
            tombstone,
        } => {
            let current = last_version(model, &case.streams[usize::from(stream)]).await;
            let mode = if tombstone {
                DeleteMode::Tombstone
            } else {
                DeleteMode::Soft
            };
            Resolved::Delete {
                stream,
                expected: resolve(expected, current),
                mode,
            }
        }
        Op::Truncate { .. } if !common.truncate => Resolved::Skip,
        Op::Truncate { stream, rel } => {
            let current = last_version(model, &case.streams[usize::from(stream)]).await;
            Resolved::Truncate {
                stream,
                version: current.saturating_add_signed(i64::from(rel)),
            }
        }
        Op::SaveSnapshot {
            stream,
            version,
            gzip,
        } => {
            let payload = format!("{{\"state\":{version}}}");
            let encoding = if gzip {
                ContentEncoding::Gzip
            } else {
                ContentEncoding::Identity
            };
            Resolved::SaveSnapshot(Snapshot {
                stream_id: case.streams[usize::from(stream)].clone(),
                version: u64::from(version),
                schema_revision: 1 + u32::from(version % 2),
                payload: cqrs::compression::compress(encoding, payload.as_bytes()).unwrap(),
                content_type: ContentType::Json,
                content_encoding: encoding,
                taken_at: Timestamp::from_millis(1_700_000_000_000 + i64::from(version)),
            })
        }
        Op::LoadLatest { stream } => Resolved::LoadLatest { stream },
        Op::LoadAtOrBefore { stream, version } => Resolved::LoadAtOrBefore {
            stream,
            version: u64::from(version),
        },
        Op::DeleteSnapshots { stream } => Resolved::DeleteSnapshots { stream },
        Op::ReadStream { stream, from, max } => Resolved::ReadStream {
            stream,
            from: u64::from(from),
            max: usize::from(max),
        },
        Op::ReadBackward { stream, from, max } => Resolved::ReadBackward {
            stream,
            from: from.map(u64::from),
            max: usize::from(max),
        },
        Op::State { stream } => Resolved::State { stream },
        Op::ReadAll { page } => Resolved::ReadAll {
            page: usize::from(page),
        },
    }
}

/// A backend under test for one case, and how to remove it afterwards.
#[async_trait::async_trait]
trait Subject: Send + Sync {
    fn stores(&self) -> &Stores;
    /// Waits until everything committed so far is visible to `read_all` (PostgreSQL's log
    /// stops at the instance-wide horizon, which other tests' open transactions hold back).
    async fn settle(&self) -> Result<(), TestCaseError> {
        Ok(())
    }
    async fn teardown(&self);
}

struct Pg {
    backend: Arc<PgBackend>,
    stores: Stores,
    schema: String,
}

#[async_trait::async_trait]
impl Subject for Pg {
    fn stores(&self) -> &Stores {
        &self.stores
    }
    async fn settle(&self) -> Result<(), TestCaseError> {
        self.backend
            .settle_log(Duration::from_secs(60))
            .await
            .map_err(|e| TestCaseError::fail(format!("the log did not settle: {e}")))
    }
    async fn teardown(&self) {
        use sqlx::Connection;
        self.backend.pool().close().await;
        let mut conn = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

struct Redis {
    backend: Arc<RedisBackend>,
    stores: Stores,
}

#[async_trait::async_trait]
impl Subject for Redis {
    fn stores(&self) -> &Stores {
        &self.stores
    }
    async fn teardown(&self) {
        self.backend.destroy().await.unwrap();
    }
}

fn pg_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn namespace() -> String {
    format!("t_model_{}", uuid::Uuid::now_v7().simple())
}

async fn postgres() -> Box<dyn Subject> {
    let schema = namespace();
    let options = PgStoreOptions::from_url(&pg_url())
        .and_then(|o| o.with_schema(&schema))
        .unwrap()
        .max_connections(2)
        .application_name(&schema);
    let backend = PgBackend::connect(&options).await.unwrap();
    backend.migrate().await.unwrap();
    Box::new(Pg {
        stores: backend.stores(),
        backend,
        schema,
    })
}

async fn redis() -> Box<dyn Subject> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let backend = RedisBackend::open(RedisStoreOptions::new(url).prefix(namespace()))
        .await
        .unwrap();
    Box::new(Redis {
        stores: backend.stores(),
        backend,
    })
}

/// Runs one sequence on a fresh subject and a fresh model; the first difference fails.
async fn run_case(subject: Box<dyn Subject>, seed: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let model = MemoryBackend::new().stores();
    let (ours, theirs) = (
        subject.stores().events.capabilities(),
        model.events.capabilities(),
    );
    let common = Common {
        truncate: ours.truncate && theirs.truncate,
        global_ids: ours.global_event_id_uniqueness && theirs.global_event_id_uniqueness,
    };
    let mut case = Case::new(seed);
    let mut result = Ok(());
    for (i, op) in ops.iter().enumerate() {
        let resolved = resolve_op(&mut case, &model, op, common).await;
        if matches!(resolved, Resolved::ReadAll { .. }) {
            if let Err(e) = subject.settle().await {
                result = Err(e);
                break;
            }
        }
        let want = apply(&model, &case, &resolved).await;
        let got = apply(subject.stores(), &case, &resolved).await;
        if got != want {
            result = Err(TestCaseError::fail(format!(
                "operation {i} ({op:?}, resolved as {resolved:?}):\n  model:   {want:?}\n  backend: {got:?}"
            )));
            break;
        }
    }
    // Every case cleans up, failing ones too: shrinking runs many failing cases, and the
    // minimal sequence in the failure message replays the one that matters.
    subject.teardown().await;
    result
}

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn check(make: fn() -> futures::future::BoxFuture<'static, Box<dyn Subject>>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = Config {
        cases: env_or("MODEL_CASES", 32),
        max_shrink_iters: 512,
        max_shrink_time: 60_000,
        failure_persistence: None,
        ..Config::default()
    };
    let max_ops = usize::try_from(env_or("MODEL_OPS", 40)).unwrap();
    let mut runner = TestRunner::new(config);
    let strategy = (any::<u64>(), proptest::collection::vec(op(), 1..=max_ops));
    let result = runner.run(&strategy, |(seed, ops)| {
        rt.block_on(async {
            let subject = tokio::time::timeout(Duration::from_secs(30), make())
                .await
                .map_err(|_| TestCaseError::fail("the backend did not open in 30 s"))?;
            run_case(subject, seed, &ops).await
        })
    });
    if let Err(e) = result {
        panic!("the backend differs from the model: {e}");
    }
}

#[test]
fn model_postgres_matches_memory() {
    check(|| Box::pin(postgres()));
}

#[test]
fn model_redis_matches_memory() {
    check(|| Box::pin(redis()));
}
