//! Snapshot values changed at rest, or that the store cannot parse, are ignored by the
//! repository: the load replays the stream in full instead of failing or loading wrong state.
//!
//! `cargo nextest run -p backend-redis --test snapshot_integrity`

use backend_redis::{RedisBackend, RedisStoreOptions};
use conformance::policies::{ensure_snapshot_ignored, snapshotted_counter};
use redis::AsyncCommands;

#[allow(dead_code)] // the cluster half is not used here
mod common;

/// How a case changes the stored value.
type Change = fn(Vec<u8>) -> Vec<u8>;

#[allow(clippy::unwrap_used)] // test support
/// The snapshot hash of `stream` (its only hash holding the field of version 12).
async fn snapshot_hash(conn: &mut redis::aio::MultiplexedConnection, prefix: &str, stream: &str) -> String {
    let keys: Vec<String> = conn.keys(format!("{prefix}:*{stream}*")).await.unwrap();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(conn).await.unwrap();
        if kind == "hash" && conn.hexists(&key, format!("{:020}", 12)).await.unwrap() {
            return key;
        }
    }
    panic!("no snapshot hash for {stream} under {prefix}");
}

#[tokio::test]
async fn snapshot_values_changed_at_rest_fall_back_to_replay() {
    let url = common::single_url().unwrap();
    let prefix = format!("snapshot-integrity-{}", uuid::Uuid::now_v7());
    let backend = RedisBackend::open(RedisStoreOptions::new(url.clone()).prefix(&prefix))
        .await
        .unwrap();
    let stores = backend.stores();
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let field = format!("{:020}", 12);
    let cases: [(&str, Change); 4] = [
        ("a digit of the identity-encoded payload", |v| {
            String::from_utf8_lossy(&v).replace("78", "88").into_bytes()
        }),
        ("the whole value", |_| b"garbage".to_vec()),
        ("the schema revision", |v| {
            [
                b"zz".as_slice(),
                &v[v.iter().position(|&b| b == b'\n').unwrap()..],
            ]
            .concat()
        }),
        ("the content type", |v| {
            String::from_utf8_lossy(&v)
                .replacen("json", "jsno", 1)
                .into_bytes()
        }),
    ];
    for (n, (what, change)) in cases.into_iter().enumerate() {
        let id = format!("c{n}");
        let (repo, stream) = snapshotted_counter(&stores, &id).await.unwrap();
        let key = snapshot_hash(&mut conn, &prefix, stream.as_str()).await;
        let value: Vec<u8> = conn.hget(&key, &field).await.unwrap();
        let changed = change(value.clone());
        assert_ne!(changed, value, "{what}: the value changed");
        let () = conn.hset(&key, &field, changed).await.unwrap();
        ensure_snapshot_ignored(&repo, &id, what).await.unwrap();
    }
    backend.destroy().await.unwrap();
}
