//! Snapshot rows changed at rest, or with fields the store cannot read, are ignored by the
//! repository: the load replays the stream in full instead of failing or loading wrong state.
//!
//! `cargo nextest run -p backend-postgres --test snapshot_integrity`

use conformance::policies::{ensure_snapshot_ignored, snapshotted_counter};
use sqlx::Connection;

mod common;

#[tokio::test]
async fn snapshot_rows_changed_at_rest_fall_back_to_replay() {
    let schema = "snapshot_integrity";
    common::drop_schema(schema).await.unwrap();
    let backend = common::fresh(schema).await.unwrap();
    let stores = backend.stores();
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
        let (repo, stream) = snapshotted_counter(&stores, &id).await.unwrap();
        let changed = sqlx::query(&format!(
            "UPDATE \"{schema}\".snapshots SET {set} WHERE stream_id = $1"
        ))
        .bind(stream.as_str())
        .execute(&mut conn)
        .await
        .unwrap();
        assert_eq!(changed.rows_affected(), 1, "{what}: one snapshot row changed");
        ensure_snapshot_ignored(&repo, &id, what).await.unwrap();
    }
    conn.close().await.unwrap();
    stores.events.close().await.unwrap();
    common::drop_schema(schema).await.unwrap();
}
