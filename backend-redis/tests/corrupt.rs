//! Damage the store must name instead of building on it, on a single node (`REDIS_URL`) and
//! on a Redis Cluster (`REDIS_CLUSTER_URL`, started by `scripts/redis-cluster`):
//!
//! - a stream head whose fields no script writes (set here with a direct `HSET`) refuses
//!   appends, imports, deletions and truncations with `Error::Corrupt` naming the stream and
//!   the field, and writes nothing: the log partitions, the stream and the head are as they
//!   were, and `read_all` from the origin still succeeds;
//! - a checkpoint whose position the log does not hold (ahead of it, beyond any entry id, or
//!   an entry that vanished under it) is `DataLoss` for its partition, while a stream that was
//!   deleted or truncated under a checkpoint is no loss.
//!
//! Each test uses its own key prefix on the shared servers, deleted afterwards.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test support may panic

use std::collections::BTreeMap;
use std::sync::Arc;

use backend_redis::{RedisBackend, RedisStoreOptions};
use cqrs_core::{
    Admin, Checkpoint, ContentType, DeleteMode, Error, EventData, EventFilter, EventStore, ExpectedVersion,
    ImportedEvent, StreamId, StreamState, Timestamp,
};
use redis::Value;

mod common;

/// Where the test runs: a single node or a cluster.
#[derive(Clone, Copy, Debug)]
enum Target {
    Single,
    Cluster,
}

/// A connection of our own beside the store, to damage its keys and to look at them.
enum Raw {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// A store under its own prefix, a raw connection, and a plain connection to every seed node
/// (for `SCAN`, which a cluster connection does not fan out).
struct Fixture {
    store: Arc<RedisBackend>,
    raw: Raw,
    nodes: Vec<redis::aio::MultiplexedConnection>,
    prefix: String,
}

impl Fixture {
    async fn open(target: Target, name: &str) -> Fixture {
        let url = match target {
            Target::Single => common::single_url(),
            Target::Cluster => common::cluster_url(),
        }
        .unwrap();
        let prefix = format!("t_corrupt_{name}_{}", uuid::Uuid::now_v7().simple());
        let store = RedisBackend::open(RedisStoreOptions::new(&url).prefix(&prefix))
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} is required: {e}"));
        let seeds: Vec<String> = match target {
            Target::Single => vec![url.clone()],
            Target::Cluster => url
                .split_once("://")
                .unwrap()
                .1
                .split(',')
                .map(|node| format!("redis://{node}"))
                .collect(),
        };
        let mut nodes = Vec::new();
        for seed in &seeds {
            let client = redis::Client::open(seed.as_str()).unwrap();
            nodes.push(client.get_multiplexed_async_connection().await.unwrap());
        }
        let raw = match target {
            Target::Single => Raw::Single(nodes[0].clone()),
            Target::Cluster => Raw::Cluster(
                redis::cluster::ClusterClient::new(seeds)
                    .unwrap()
                    .get_async_connection()
                    .await
                    .unwrap(),
            ),
        };
        Fixture {
            store,
            raw,
            nodes,
            prefix,
        }
    }

    async fn run(&mut self, cmd: &redis::Cmd) -> Value {
        match &mut self.raw {
            Raw::Single(c) => cmd.query_async(c).await,
            Raw::Cluster(c) => cmd.query_async(c).await,
        }
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
    }

    /// Every key of this store matching `<prefix>:*<tail>`, from every node.
    async fn keys(&mut self, tail: &str) -> Vec<String> {
        let pattern = format!("{}:*{tail}", self.prefix);
        let mut out = std::collections::BTreeSet::new();
        for node in &mut self.nodes {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(node)
                    .await
                    .unwrap();
                out.extend(keys);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        out.into_iter().collect()
    }

    /// The one key of `kind` of `stream` (head `h`, events `e`).
    async fn key_of(&mut self, kind: &str, stream: &StreamId) -> String {
        let keys = self.keys(&format!("}}:{kind}:{}", stream.as_str())).await;
        assert_eq!(keys.len(), 1, "one {kind} key of {stream}: {keys:?}");
        keys.into_iter().next().unwrap()
    }

    /// What a failed call must leave as it was: the length of every log partition, the
    /// stream's length and its head.
    async fn written(&mut self, stream: &StreamId) -> (BTreeMap<String, u64>, u64, Value) {
        let mut logs = BTreeMap::new();
        for log in self.keys(":log").await {
            let Value::Int(n) = self.run(redis::cmd("XLEN").arg(&log)).await else {
                panic!("XLEN {log}");
            };
            logs.insert(log, u64::try_from(n).unwrap());
        }
        assert!(!logs.is_empty(), "the store has log partitions");
        let events = self.key_of("e", stream).await;
        let Value::Int(len) = self.run(redis::cmd("XLEN").arg(&events)).await else {
            panic!("XLEN {events}");
        };
        let head = self.key_of("h", stream).await;
        let fields = self.run(redis::cmd("HGETALL").arg(&head)).await;
        (logs, u64::try_from(len).unwrap(), fields)
    }

    async fn set_head(&mut self, stream: &StreamId, field: &str, value: &str) {
        let head = self.key_of("h", stream).await;
        self.run(redis::cmd("HSET").arg(&head).arg(field).arg(value))
            .await;
    }

    /// Every event of the log, from the origin.
    async fn read_everything(&self) -> usize {
        let mut checkpoint = Checkpoint::origin();
        let mut n = 0;
        loop {
            let batch = self
                .store
                .read_all(&checkpoint, 1000, &EventFilter::all())
                .await
                .expect("read_all from the origin despite a damaged head");
            n += batch.events.len();
            checkpoint = batch.next;
            if batch.caught_up {
                return n;
            }
        }
    }
}

fn event() -> EventData {
    EventData::new("Counted", ContentType::Json, b"{}".to_vec())
}

/// Two events whose ids descend: the append path that sends its ids apart.
fn descending() -> Vec<EventData> {
    let mut out = vec![event(), event()];
    out.sort_by(|a, b| {
        b.event_id
            .as_uuid()
            .as_bytes()
            .cmp(a.event_id.as_uuid().as_bytes())
    });
    out
}

fn imported(version: u64) -> Vec<ImportedEvent> {
    vec![ImportedEvent {
        version,
        recorded_at: Timestamp::from_millis(1),
        data: event(),
    }]
}

/// `Error::Corrupt` naming the stream and the field.
fn assert_corrupt<T: std::fmt::Debug>(
    answer: cqrs_core::Result<T>,
    stream: &StreamId,
    field: &str,
    what: &str,
) {
    match answer {
        Err(Error::Corrupt { what: text }) => assert!(
            text.contains(stream.as_str()) && text.contains(&format!("`{field}`")),
            "{what}: Corrupt must name {stream} and `{field}`: {text}"
        ),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

/// A head field holding a value no script writes: every writing call refuses with
/// `Corrupt` and writes nothing, and the log stays readable.
async fn damaged_head_refuses_every_write(target: Target) {
    let mut f = Fixture::open(target, "head").await;
    let cases: &[(&str, &str)] = &[
        ("v", "-5"),
        ("v", "zz"),
        ("v", "1.5"),
        ("v", "007"),
        ("v", ""),
        ("v", "9223372036854775808"),
        ("st", "zz"),
        ("st", ""),
        ("vf", "x"),
        ("vf", "-1"),
        ("vf", "18446744073709551616"),
        ("g", "short"),
    ];
    // Events read_all hands out: a stream whose `st` is not `L` is not live, its events hidden.
    let mut visible = 0;
    for (i, &(field, value)) in cases.iter().enumerate() {
        let stream = StreamId::new(format!("s{i}-{{{i}}}")).unwrap();
        f.store
            .append(&stream, ExpectedVersion::NoStream, vec![event(), event()])
            .await
            .unwrap();
        if field != "st" {
            visible += 2;
        }
        f.set_head(&stream, field, value).await;
        let before = f.written(&stream).await;
        let case = format!("{target:?}, head `{field}` = {value:?}");

        // The fields each script relies on: append and import every one but `vf`; delete
        // and truncate `v`, `st` and `vf`.
        if field != "vf" {
            for (how, batch) in [("single", vec![event()]), ("batch", descending())] {
                for expected in [ExpectedVersion::Any, ExpectedVersion::Exact(2)] {
                    let answer = f.store.append(&stream, expected, batch.clone()).await;
                    assert_corrupt(
                        answer,
                        &stream,
                        field,
                        &format!("{case}: {how} append {expected}"),
                    );
                }
            }
            let answer = f.store.import_commit(&stream, imported(3)).await;
            assert_corrupt(answer, &stream, field, &format!("{case}: import"));
        }
        if field != "g" {
            for mode in [DeleteMode::Soft, DeleteMode::Tombstone] {
                let answer = f.store.delete_stream(&stream, ExpectedVersion::Any, mode).await;
                assert_corrupt(answer, &stream, field, &format!("{case}: delete {mode:?}"));
            }
            let answer = f.store.truncate_before(&stream, 2).await;
            assert_corrupt(answer, &stream, field, &format!("{case}: truncate"));
        }
        assert_eq!(f.written(&stream).await, before, "{case}: a refused call wrote");
        assert_eq!(
            f.read_everything().await,
            visible,
            "{case}: read_all from the origin"
        );
    }
    f.store.destroy().await.unwrap();
}

#[tokio::test]
async fn damaged_head_refuses_every_write_single() {
    damaged_head_refuses_every_write(Target::Single).await;
}

#[tokio::test]
async fn damaged_head_refuses_every_write_cluster() {
    damaged_head_refuses_every_write(Target::Cluster).await;
}

/// A head whose `v` is well formed but behind its stream's events (damage no field check can
/// see): the append and the import fail on the event entry that exists already, after the
/// commit pointer was added, and must still leave nothing behind.
async fn head_version_behind_its_events_writes_nothing(target: Target) {
    let mut f = Fixture::open(target, "behind").await;
    let mut visible = 0;
    for (i, v) in ["0", "1"].into_iter().enumerate() {
        let stream = StreamId::new(format!("s{i}")).unwrap();
        f.store
            .append(&stream, ExpectedVersion::NoStream, vec![event(), event()])
            .await
            .unwrap();
        visible += 2;
        f.set_head(&stream, "v", v).await;
        let before = f.written(&stream).await;
        let case = format!("{target:?}, head `v` = {v} over 2 events");
        for (how, batch) in [("single", vec![event()]), ("batch", descending())] {
            let answer = f.store.append(&stream, ExpectedVersion::Any, batch).await;
            assert_corrupt(answer, &stream, "v", &format!("{case}: {how} append"));
        }
        let next = v.parse::<u64>().unwrap() + 1;
        let answer = f.store.import_commit(&stream, imported(next)).await;
        assert_corrupt(answer, &stream, "v", &format!("{case}: import"));
        assert_eq!(f.written(&stream).await, before, "{case}: a refused call wrote");
        assert_eq!(
            f.read_everything().await,
            visible,
            "{case}: read_all from the origin"
        );
    }
    // Events that are no stream: the server's error, and the log as it was.
    let stream = StreamId::new("not-a-stream").unwrap();
    f.store
        .append(&stream, ExpectedVersion::NoStream, vec![event()])
        .await
        .unwrap();
    let events = f.key_of("e", &stream).await;
    f.run(redis::cmd("DEL").arg(&events)).await;
    f.run(redis::cmd("SET").arg(&events).arg("x")).await;
    let logs = f.written(&StreamId::new("s0").unwrap()).await.0;
    let answer = f.store.append(&stream, ExpectedVersion::Any, vec![event()]).await;
    assert!(
        matches!(&answer, Err(Error::Backend { source, .. }) if source.to_string().contains("WRONGTYPE")),
        "{target:?}: append to events that are no stream: {answer:?}"
    );
    assert_eq!(
        f.written(&StreamId::new("s0").unwrap()).await.0,
        logs,
        "{target:?}: the failed append left a commit pointer"
    );
    f.store.destroy().await.unwrap();
}

#[tokio::test]
async fn head_version_behind_its_events_writes_nothing_single() {
    head_version_behind_its_events_writes_nothing(Target::Single).await;
}

#[tokio::test]
async fn head_version_behind_its_events_writes_nothing_cluster() {
    head_version_behind_its_events_writes_nothing(Target::Cluster).await;
}

/// What the store itself writes is never damage: truncating before `u64::MAX` stores the
/// greatest `vf` there is, and the stream can still be truncated, deleted and read.
async fn extreme_values_the_store_writes_are_not_damage(target: Target) {
    let f = Fixture::open(target, "extreme").await;
    let stream = StreamId::new("s").unwrap();
    f.store
        .append(&stream, ExpectedVersion::NoStream, vec![event(), event()])
        .await
        .unwrap();
    f.store.truncate_before(&stream, u64::MAX).await.unwrap();
    f.store.truncate_before(&stream, 1).await.unwrap();
    assert!(f.store.read_stream(&stream, 1, 10).await.unwrap().is_empty());
    f.store
        .append(&stream, ExpectedVersion::Exact(2), vec![event()])
        .await
        .unwrap();
    f.store
        .delete_stream(&stream, ExpectedVersion::Exact(3), DeleteMode::Soft)
        .await
        .unwrap();
    assert_eq!(
        f.store.stream_state(&stream).await.unwrap(),
        StreamState::SoftDeleted(3)
    );
    f.store.destroy().await.unwrap();
}

#[tokio::test]
async fn extreme_values_the_store_writes_are_not_damage_single() {
    extreme_values_the_store_writes_are_not_damage(Target::Single).await;
}

#[tokio::test]
async fn extreme_values_the_store_writes_are_not_damage_cluster() {
    extreme_values_the_store_writes_are_not_damage(Target::Cluster).await;
}

/// A head whose state `stream_state` calls corrupt refuses appends the same way, and the
/// stream keeps its events.
async fn corrupt_state_refuses_appends(target: Target) {
    let mut f = Fixture::open(target, "state").await;
    let stream = StreamId::new("order-{7}").unwrap();
    f.store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![event(), event(), event()],
        )
        .await
        .unwrap();
    f.set_head(&stream, "st", "zz").await;
    assert!(
        matches!(f.store.stream_state(&stream).await, Err(Error::Corrupt { .. })),
        "{target:?}: stream_state of a head with st = zz"
    );
    let before = f.written(&stream).await;
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::NoStream,
        ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(3),
    ] {
        let answer = f.store.append(&stream, expected, vec![event()]).await;
        assert_corrupt(answer, &stream, "st", &format!("{target:?}: append {expected}"));
    }
    assert_eq!(
        f.written(&stream).await,
        before,
        "{target:?}: a refused append wrote"
    );
    assert_eq!(
        f.read_everything().await,
        0,
        "{target:?}: read_all from the origin (a stream that is not live hands out no events)"
    );
    // Repaired by an operator, the stream shows its events and takes appends again.
    f.store
        .set_stream_state(&stream, StreamState::Live(3))
        .await
        .unwrap();
    assert_eq!(
        f.read_everything().await,
        3,
        "{target:?}: read_all after the repair"
    );
    let out = f
        .store
        .append(&stream, ExpectedVersion::Exact(3), vec![event()])
        .await
        .unwrap();
    assert_eq!(out.first_version, 4);
    f.store.destroy().await.unwrap();
}

#[tokio::test]
async fn corrupt_state_refuses_appends_single() {
    corrupt_state_refuses_appends(Target::Single).await;
}

#[tokio::test]
async fn corrupt_state_refuses_appends_cluster() {
    corrupt_state_refuses_appends(Target::Cluster).await;
}

/// One event in every partition, and the checkpoint after all of them.
async fn one_event_per_partition(f: &Fixture) -> (Vec<StreamId>, Checkpoint) {
    let partitions = f.store.capabilities().partitions;
    let mut streams = BTreeMap::new();
    for i in 0.. {
        let stream = StreamId::new(format!("s{i}")).unwrap();
        let out = f
            .store
            .append(&stream, ExpectedVersion::NoStream, vec![event()])
            .await
            .unwrap();
        let p = out.position.unwrap().partition;
        streams.entry(p).or_insert(stream);
        if u32::try_from(streams.len()).unwrap() == partitions {
            break;
        }
    }
    let mut checkpoint = Checkpoint::origin();
    loop {
        let batch = f
            .store
            .read_all(&checkpoint, 1000, &EventFilter::all())
            .await
            .unwrap();
        checkpoint = batch.next;
        if batch.caught_up {
            break;
        }
    }
    (streams.into_values().collect(), checkpoint)
}

/// A checkpoint past any entry id Redis can hold is DataLoss for that partition, as on the
/// other backends, not a server error.
async fn checkpoint_beyond_any_entry_is_data_loss(target: Target) {
    let f = Fixture::open(target, "max").await;
    let (_, seen) = one_event_per_partition(&f).await;
    for p in 0..f.store.capabilities().partitions {
        for offset in [[u64::MAX; 3], [u64::MAX, u64::MAX, 0], [u64::MAX, 0, 0]] {
            let mut checkpoint = seen.clone();
            checkpoint.partitions.insert(p, offset);
            let answer = f.store.read_all(&checkpoint, 10, &EventFilter::all()).await;
            assert!(
                matches!(answer, Err(Error::DataLoss { partition }) if partition == p),
                "{target:?}: partition {p} at {offset:?}: {answer:?}"
            );
        }
    }
    f.store.destroy().await.unwrap();
}

#[tokio::test]
async fn checkpoint_beyond_any_entry_is_data_loss_single() {
    checkpoint_beyond_any_entry_is_data_loss(Target::Single).await;
}

#[tokio::test]
async fn checkpoint_beyond_any_entry_is_data_loss_cluster() {
    checkpoint_beyond_any_entry_is_data_loss(Target::Cluster).await;
}

/// The log entry a checkpoint names vanished (here by `XDEL`, as a lost AOF tail or a
/// failover loses it) while later appends moved the log past it: DataLoss for that
/// partition, not a silent resume. Deleting or truncating the stream under a checkpoint
/// removes nothing from the log: no DataLoss.
async fn vanished_checkpoint_entry_is_data_loss(target: Target) {
    let mut f = Fixture::open(target, "vanished").await;
    let (streams, seen) = one_event_per_partition(&f).await;

    for (i, stream) in streams.iter().enumerate() {
        let mode = if i % 2 == 0 {
            DeleteMode::Soft
        } else {
            DeleteMode::Tombstone
        };
        f.store.truncate_before(stream, 2).await.unwrap();
        f.store
            .delete_stream(stream, ExpectedVersion::Any, mode)
            .await
            .unwrap();
    }
    let batch = f
        .store
        .read_all(&seen, 10, &EventFilter::all())
        .await
        .expect("a checkpoint on deleted and truncated streams resumes");
    assert!(
        batch.events.is_empty() && batch.caught_up,
        "{target:?}: {batch:?}"
    );

    // The last partition's log: tag `p<k>` or `p<k>.<j>` (see the README's layout).
    let p = f.store.capabilities().partitions - 1;
    let [ms, seq, _] = seen.partitions[&p];
    let tag = [format!(":{{p{p}}}:"), format!(":{{p{p}.")];
    let logs = f.keys(":log").await;
    let log = logs.iter().find(|k| tag.iter().any(|t| k.contains(t))).unwrap();
    let answer = f
        .run(redis::cmd("XDEL").arg(log).arg(format!("{ms}-{seq}")))
        .await;
    assert_eq!(
        answer,
        Value::Int(1),
        "{target:?}: the checkpoint's log entry is removed"
    );
    // Three appends to that partition move its log past the checkpoint again.
    let mut moved = 0;
    for i in 0.. {
        let stream = StreamId::new(format!("after-{i}")).unwrap();
        let out = f
            .store
            .append(&stream, ExpectedVersion::NoStream, vec![event()])
            .await
            .unwrap();
        moved += usize::from(out.position.unwrap().partition == p);
        if moved == 3 {
            break;
        }
    }
    let answer = f.store.read_all(&seen, 10, &EventFilter::all()).await;
    assert!(
        matches!(answer, Err(Error::DataLoss { partition }) if partition == p),
        "{target:?}: a checkpoint whose log entry vanished: {answer:?}"
    );
    // A checkpoint that has not reached that partition yet lost nothing.
    let mut before = seen.clone();
    before.partitions.remove(&p);
    f.store
        .read_all(&before, 10, &EventFilter::all())
        .await
        .expect("a checkpoint behind the lost entry resumes");
    f.store.destroy().await.unwrap();
}

#[tokio::test]
async fn vanished_checkpoint_entry_is_data_loss_single() {
    vanished_checkpoint_entry_is_data_loss(Target::Single).await;
}

#[tokio::test]
async fn vanished_checkpoint_entry_is_data_loss_cluster() {
    vanished_checkpoint_entry_is_data_loss(Target::Cluster).await;
}
