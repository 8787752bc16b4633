//! Snapshot rows changed at rest, or with fields the store cannot read, are ignored by the
//! repository: the load replays the stream in full instead of failing or loading wrong state.
//!
//! `cargo nextest run -p backend-postgres --test snapshot_integrity`

use conformance::policies::{Counter, CounterCommand};
use cqrs_core::aggregate::EventSourcedRepository;
use cqrs_core::snapshot_policy::SnapshotPolicy;
use cqrs_core::ContentEncoding;
use sqlx::Connection;

mod common;

#[tokio::test]
async fn snapshot_rows_changed_at_rest_fall_back_to_replay() {
    let schema = "snapshot_integrity";
    common::drop_schema(schema).await.unwrap();
    let backend = common::fresh(schema).await.unwrap();
    let stores = backend.stores();
    let repo = EventSourcedRepository::<Counter>::new(stores.events.clone())
        .with_snapshots(stores.snapshots.clone(), SnapshotPolicy::EveryEvents(12))
        .snapshot_encoding(ContentEncoding::Identity);
    let mut conn = sqlx::PgConnection::connect(&common::url()).await.unwrap();
    let cases = [
        (
            "a digit of the identity-encoded payload",
            // The first `78` (0x37 0x38) of the payload becomes `88`.
            r"payload = overlay(payload placing '\x38'::bytea from position('\x3738'::bytea in payload) for 1)",
        ),
        ("the content type", "content_type = 'garbage'"),
        ("the content encoding", "content_encoding = 'zz'"),
        ("the schema revision", "schema_revision = -3"),
        ("the version", "version = 11"),
    ];
    for (n, (what, set)) in cases.into_iter().enumerate() {
        let id = format!("c{n}");
        for i in 1..=12 {
            repo.execute(&id, CounterCommand::Add(i)).await.unwrap();
        }
        assert_eq!(
            repo.load(&id).await.unwrap().snapshot_version,
            12,
            "{what}: snapshot used before the change"
        );
        let stream = repo.stream_id(&id).unwrap();
        let changed = sqlx::query(&format!(
            "UPDATE \"{schema}\".snapshots SET {set} WHERE stream_id = $1"
        ))
        .bind(stream.as_str())
        .execute(&mut conn)
        .await
        .unwrap();
        assert_eq!(changed.rows_affected(), 1, "{what}: one snapshot row changed");
        let loaded = repo
            .load(&id)
            .await
            .unwrap_or_else(|e| panic!("load with {what} changed at rest: {e}"));
        assert_eq!(
            (
                loaded.state.value,
                loaded.snapshot_version,
                loaded.events_replayed
            ),
            (78, 0, 12),
            "{what} changed at rest: the stream is replayed"
        );
    }
    conn.close().await.unwrap();
    stores.events.close().await.unwrap();
    common::drop_schema(schema).await.unwrap();
}
