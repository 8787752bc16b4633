//! Migration between two in-memory backends: the copy is complete and verified, a second
//! run copies nothing, an interrupted run resumes without duplicates, a dry run writes
//! nothing. The same library runs PostgreSQL <-> Redis in those backends' tests.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic with its cause

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use async_trait::async_trait;
use backend_memory::MemoryBackend;
use bytes::Bytes;
use cqrs_core::{
    Admin, ContentEncoding, ContentType, DeleteMode, Error, EventData, ExpectedVersion, ImportedEvent,
    Metadata, RecordedEvent, Result, Snapshot, StateExpectation, Stores, StreamId, StreamState, Timestamp,
};
use cqrs_runtime::{Migration, MigrationOptions};

fn event(i: u64) -> EventData {
    let mut md = Metadata {
        correlation_id: Some(format!("c{i}")),
        ..Metadata::default()
    };
    md.extra.insert("k ü".into(), "v {}".into());
    EventData::new("Moved", ContentType::Json, format!("{{\"i\":{i}}}"))
        .with_metadata(md)
        .with_schema_version(2)
}

/// A source with live, soft-deleted and tombstoned streams, opaque and compressed payloads,
/// snapshots and state entries.
async fn seeded() -> Stores {
    let s = MemoryBackend::new().stores();
    for n in 0..12u64 {
        let id = StreamId::new(format!("order-{n}:{{ü😀}}")).unwrap();
        s.events
            .append(&id, ExpectedVersion::NoStream, (0..n + 1).map(event).collect())
            .await
            .unwrap();
    }
    let gz = cqrs_core::compression::compress(ContentEncoding::Gzip, b"{\"big\":true}").unwrap();
    let odd: StreamId = "odd".parse().unwrap();
    s.events
        .append(
            &odd,
            ExpectedVersion::NoStream,
            vec![
                EventData::new("Raw", ContentType::Opaque, vec![0u8, 255, 7]),
                EventData::new("Zip", ContentType::Json, gz).with_encoding(ContentEncoding::Gzip),
            ],
        )
        .await
        .unwrap();
    let soft: StreamId = "order-1:{ü😀}".parse().unwrap();
    s.events
        .delete_stream(&soft, ExpectedVersion::Any, DeleteMode::Soft)
        .await
        .unwrap();
    let tomb: StreamId = "order-2:{ü😀}".parse().unwrap();
    s.events
        .delete_stream(&tomb, ExpectedVersion::Any, DeleteMode::Tombstone)
        .await
        .unwrap();
    for v in [2u64, 4] {
        s.snapshots
            .save(Snapshot {
                stream_id: "order-5:{ü😀}".parse().unwrap(),
                version: v,
                schema_revision: 1,
                payload: Bytes::from(format!("snap{v}")),
                content_type: ContentType::Opaque,
                content_encoding: ContentEncoding::Identity,
                taken_at: Timestamp::from_millis(1_700_000_000_000),
            })
            .await
            .unwrap();
    }
    for id in ["a", "b"] {
        s.states
            .put("account", id, StateExpectation::New, Bytes::from_static(b"{}"))
            .await
            .unwrap();
    }
    s
}

/// Every stored event of every stream, deleted ones included.
async fn raw_total(s: &Stores) -> u64 {
    let mut n = 0;
    for (id, _) in s.admin.list_all_streams(None, 1000).await.unwrap() {
        n += s.admin.read_raw(&id, 1, 10_000).await.unwrap().len() as u64;
    }
    n
}

fn options() -> MigrationOptions {
    MigrationOptions {
        page: 4,
        dry_run: false,
        state_kinds: vec!["account".into()],
    }
}

#[tokio::test]
async fn copies_everything_and_a_second_run_copies_nothing() {
    let source = seeded().await;
    let target = MemoryBackend::new().stores();
    let m = Migration::new(source.clone(), target.clone(), options());
    let total = raw_total(&source).await;
    assert!(m.source_events().await.unwrap() <= total);
    let first = m.run(&|_| {}).await.unwrap();
    assert_eq!(first.events, total, "every stored event copied");
    assert_eq!((first.snapshots, first.states), (2, 2));
    let v = m.verify().await.unwrap();
    assert!(v.is_equal(), "{v:?}");
    assert_eq!(v.source_checksum, v.target_checksum);
    let soft: StreamId = "order-1:{ü😀}".parse().unwrap();
    assert_eq!(
        target.events.stream_state(&soft).await.unwrap(),
        StreamState::SoftDeleted(2)
    );
    let tomb: StreamId = "order-2:{ü😀}".parse().unwrap();
    assert_eq!(
        target.events.stream_state(&tomb).await.unwrap(),
        StreamState::Tombstoned
    );
    let odd: StreamId = "odd".parse().unwrap();
    let (a, b) = (
        source.events.read_stream(&odd, 1, 9).await.unwrap(),
        target.events.read_stream(&odd, 1, 9).await.unwrap(),
    );
    assert_eq!(
        a.iter().map(|e| &e.data).collect::<Vec<_>>(),
        b.iter().map(|e| &e.data).collect::<Vec<_>>()
    );
    assert_eq!(
        a.iter().map(|e| e.recorded_at).collect::<Vec<_>>(),
        b.iter().map(|e| e.recorded_at).collect::<Vec<_>>()
    );

    let second = m.run(&|_| {}).await.unwrap();
    assert_eq!(second.events, 0, "an equal target needs nothing");
    assert!(m.verify().await.unwrap().is_equal());
}

#[tokio::test]
async fn verify_finds_a_difference() {
    let source = seeded().await;
    let target = MemoryBackend::new().stores();
    let m = Migration::new(source.clone(), target.clone(), options());
    m.run(&|_| {}).await.unwrap();
    let s: StreamId = "order-7:{ü😀}".parse().unwrap();
    source
        .events
        .append(&s, ExpectedVersion::Any, vec![event(99)])
        .await
        .unwrap();
    let v = m.verify().await.unwrap();
    assert!(!v.is_equal());
    assert_eq!(v.mismatches, vec![s]);
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let source = seeded().await;
    let target = MemoryBackend::new().stores();
    let m = Migration::new(
        source,
        target.clone(),
        MigrationOptions {
            dry_run: true,
            ..options()
        },
    );
    let p = m.run(&|_| {}).await.unwrap();
    assert!(p.events > 0);
    assert!(target.admin.list_all_streams(None, 10).await.unwrap().is_empty());
    assert_eq!(target.snapshots.list(None, 10).await.unwrap(), vec![]);
}

/// The target's Admin, failing every import after the first `allowed`.
#[derive(Debug)]
struct Interrupting {
    inner: Arc<dyn Admin>,
    allowed: u64,
    imports: AtomicU64,
}

#[async_trait]
impl Admin for Interrupting {
    async fn list_all_streams(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, StreamState)>> {
        self.inner.list_all_streams(after, limit).await
    }
    async fn read_raw(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_raw(stream, from, max).await
    }
    async fn import_commit(&self, stream: &StreamId, events: Vec<ImportedEvent>) -> Result<()> {
        if self.imports.fetch_add(1, Ordering::SeqCst) >= self.allowed {
            return Err(Error::unavailable(
                cqrs_core::Outcome::NotSent,
                "interrupted (injected)",
            ));
        }
        self.inner.import_commit(stream, events).await
    }
    async fn set_stream_state(&self, stream: &StreamId, state: StreamState) -> Result<()> {
        self.inner.set_stream_state(stream, state).await
    }
}

#[tokio::test]
async fn an_interrupted_copy_resumes_without_duplicates() {
    let source = seeded().await;
    let target = MemoryBackend::new().stores();
    let mut flaky = target.clone();
    flaky.admin = Arc::new(Interrupting {
        inner: target.admin.clone(),
        allowed: 9,
        imports: AtomicU64::new(0),
    });
    let first = Migration::new(source.clone(), flaky, options());
    assert!(
        first.run(&|_| {}).await.is_err(),
        "the injected failure stops the first run"
    );
    let partial = raw_total(&target).await;
    assert!(partial > 0, "the first run copied something");
    let total = raw_total(&source).await;
    let m = Migration::new(source, target, options());
    let second = m.run(&|_| {}).await.unwrap();
    assert!(
        second.events < total,
        "the resumed run does not start over: {} of {total}",
        second.events
    );
    assert_eq!(
        second.events + partial,
        total,
        "nothing copied twice, nothing missed"
    );
    assert!(m.verify().await.unwrap().is_equal());
}
