//! A backward read from version 0, which has nothing to return, still refuses a
//! tombstoned stream (the contract's `StreamDeleted`), as the memory and PostgreSQL
//! backends do; it used to return an empty page. Found by the model test
//! (`cqrs/tests/model.rs`). Uses the shared server under its own key prefix.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test support may panic

use backend_redis::{RedisBackend, RedisStoreOptions};
use cqrs_core::{ContentType, DeleteMode, Error, EventData, EventStore, ExpectedVersion, StreamId};

fn one() -> Vec<EventData> {
    vec![EventData::new("T", ContentType::Json, "{}")]
}

#[tokio::test]
async fn a_backward_read_from_zero_of_a_tombstoned_stream_is_stream_deleted() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| backend_redis::DEFAULT_URL.to_owned());
    let prefix = format!("t_tombstone_reads_{}", uuid::Uuid::now_v7().simple());
    let backend = RedisBackend::open(RedisStoreOptions::new(url).prefix(prefix))
        .await
        .expect("Redis at REDIS_URL");
    let (gone, live) = (StreamId::new("gone-1").unwrap(), StreamId::new("live-1").unwrap());
    backend
        .append(&gone, ExpectedVersion::NoStream, one())
        .await
        .unwrap();
    backend
        .append(&live, ExpectedVersion::NoStream, one())
        .await
        .unwrap();
    backend
        .delete_stream(&gone, ExpectedVersion::Any, DeleteMode::Tombstone)
        .await
        .unwrap();

    let read = backend.read_stream_backward(&gone, Some(0), 5).await;
    let live_read = backend.read_stream_backward(&live, Some(0), 5).await;
    // Clean up before asserting, so a failure leaves nothing on the shared server.
    backend.destroy().await.unwrap();
    assert!(matches!(read, Err(Error::StreamDeleted { .. })), "{read:?}");
    assert!(
        live_read.unwrap().is_empty(),
        "a live stream's read from 0 stays empty"
    );
}
