//! Migration between real backends (issue 7): 100,000 events PostgreSQL -> Redis ->
//! PostgreSQL, each copy verified equal, and a copy interrupted mid-run then resumed.
//!
//! Needs PostgreSQL at `DATABASE_URL` and Redis at `REDIS_URL` (the standard local ports by
//! default); each test works in schemas and key prefixes of its own and removes them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed setup should panic with its cause

use cqrs::{
    runtime::{Migration, MigrationOptions},
    ContentType, EventData, ExpectedVersion, Metadata, Stores, StreamId,
};

mod common;

use common::{drop_prefix, drop_schema, postgres, redis, unique};

/// `streams` streams of `per_stream` events with metadata and 200-byte payloads.
async fn seed(stores: &Stores, streams: u64, per_stream: u64) {
    for s in 0..streams {
        let id = StreamId::new(format!("game-{s}:{{ü😀}}")).unwrap();
        let mut version = 0;
        while version < per_stream {
            let n = (per_stream - version).min(500);
            let batch = (version..version + n)
                .map(|i| {
                    let mut md = Metadata {
                        correlation_id: Some(format!("c-{s}-{i}")),
                        ..Metadata::default()
                    };
                    md.extra.insert("tower".into(), format!("{}", i % 7));
                    let payload = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(180));
                    EventData::new("TowerPlaced", ContentType::Json, payload).with_metadata(md)
                })
                .collect();
            stores
                .events
                .append(&id, ExpectedVersion::Exact(version), batch)
                .await
                .unwrap();
            version += n;
        }
    }
}

fn options() -> MigrationOptions {
    MigrationOptions {
        page: 1000,
        ..MigrationOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_events_postgres_to_redis_and_back() {
    let (pg_a, prefix, pg_b) = (unique("mig_src"), unique("mig"), unique("mig_back"));
    let source = postgres(&pg_a).await;
    seed(&source, 100, 1000).await;
    let middle = redis(&prefix).await;
    let there = Migration::new(source.clone(), middle.clone(), options());
    let copied = there.run(&|_| {}).await.unwrap();
    assert_eq!(copied.events, 100_000);
    let v1 = there.verify().await.unwrap();
    assert!(v1.is_equal(), "PostgreSQL -> Redis: {v1:?}");
    assert_eq!((v1.streams, v1.events), (100, 100_000));

    let back_store = postgres(&pg_b).await;
    let back = Migration::new(middle.clone(), back_store.clone(), options());
    assert_eq!(back.run(&|_| {}).await.unwrap().events, 100_000);
    let v2 = back.verify().await.unwrap();
    assert!(v2.is_equal(), "Redis -> PostgreSQL: {v2:?}");
    assert_eq!(
        v1.source_checksum, v2.target_checksum,
        "the round trip is byte-identical"
    );
    assert_eq!(
        back.run(&|_| {}).await.unwrap().events,
        0,
        "a second run copies nothing"
    );

    drop_schema(&pg_a).await;
    drop_schema(&pg_b).await;
    drop_prefix(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes() {
    let (schema, prefix) = (unique("mig_int"), unique("mig_int"));
    let source = redis(&prefix).await;
    seed(&source, 20, 500).await;
    let target = postgres(&schema).await;
    let migration = Migration::new(
        source.clone(),
        target.clone(),
        MigrationOptions {
            page: 100,
            ..options()
        },
    );

    // Interrupt the first run once it has copied 3,000 events, as a killed process would:
    // the run's future is dropped mid-flight.
    let (tx, mut rx) = tokio::sync::watch::channel(0u64);
    let report = move |p: cqrs::runtime::Progress| {
        let _ = tx.send(p.events);
    };
    let interrupted = tokio::select! {
        r = migration.run(&report) => panic!("the copy finished before the interruption: {r:?}"),
        _ = rx.wait_for(|&n| n >= 3_000) => true,
    };
    assert!(interrupted);
    let partial = migration.verify().await.unwrap();
    assert!(!partial.is_equal(), "the interrupted copy is incomplete");

    let rest = migration.run(&|_| {}).await.unwrap();
    assert!(
        rest.events > 0 && rest.events < 10_000,
        "the resumed run copies the rest only: {}",
        rest.events
    );
    let v = migration.verify().await.unwrap();
    assert!(v.is_equal(), "{v:?}");
    assert_eq!(v.events, 10_000);

    drop_schema(&schema).await;
    drop_prefix(&prefix).await;
}
