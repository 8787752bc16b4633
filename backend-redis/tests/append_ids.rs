//! Idempotency when event ids do not grow: the append script skips its per-id lookup only
//! when the batch's smallest id is above every id the stream holds, so batches with lower,
//! interleaved or repeated ids must still be told apart exactly (new, re-send, partial
//! overlap). Runs on the single node at `REDIS_URL` (default `redis://127.0.0.1:6379`) and
//! on the cluster of `REDIS_CLUSTER_URL`, under its own key prefix, deleted afterwards.

use backend_redis::{RedisBackend, RedisStoreOptions};
use cqrs_core::{ContentType, Error, EventData, EventId, EventStore, ExpectedVersion, StreamId};

mod common;

fn events(ids: &[u128]) -> Vec<EventData> {
    ids.iter()
        .map(|&id| {
            let mut e = EventData::new("Placed", ContentType::Json, b"{}".to_vec());
            e.event_id = EventId::from_uuid(uuid::Uuid::from_u128(id));
            e
        })
        .collect()
}

#[tokio::test]
async fn ids_below_the_greatest_are_still_looked_up() {
    lower_ids(common::single_url().unwrap()).await.unwrap();
}

#[tokio::test]
async fn ids_below_the_greatest_are_still_looked_up_on_a_cluster() {
    lower_ids(common::cluster_url().unwrap()).await.unwrap();
}

async fn lower_ids(url: String) -> cqrs_core::Result<()> {
    let prefix = format!("t_ids_{}", uuid::Uuid::now_v7().simple());
    let store = RedisBackend::open(RedisStoreOptions::new(url).prefix(&prefix)).await?;
    let s = StreamId::new("s")?;
    let hi = 0x50u128 << 120;
    let lo = 0x10u128 << 120;
    // Growing ids: the lookup is skipped.
    let a = store
        .append(&s, ExpectedVersion::NoStream, events(&[hi, hi + 1]))
        .await?;
    assert_eq!((a.first_version, a.next_expected), (1, 2));
    // Lower ids, none committed: appended.
    let b = store
        .append(&s, ExpectedVersion::Exact(2), events(&[lo, lo + 1]))
        .await?;
    assert_eq!((b.first_version, b.next_expected), (3, 4));
    // A re-send of either batch returns its original outcome.
    let again = store
        .append(&s, ExpectedVersion::Exact(4), events(&[lo, lo + 1]))
        .await?;
    assert_eq!((again.first_version, again.next_expected), (3, 4));
    assert_eq!(again.position, b.position);
    let again = store
        .append(&s, ExpectedVersion::Any, events(&[hi, hi + 1]))
        .await?;
    assert_eq!((again.first_version, again.next_expected), (1, 2));
    assert_eq!(again.position, a.position);
    // An id between committed ones, not committed itself: appended.
    let c = store
        .append(&s, ExpectedVersion::Exact(4), events(&[lo + 5]))
        .await?;
    assert_eq!(c.first_version, 5);
    // A batch overlapping a committed one at its top, or below it: a mismatch.
    for ids in [[hi + 1, hi + 2], [lo + 1, hi + 3]] {
        let err = store
            .append(&s, ExpectedVersion::Exact(5), events(&ids))
            .await
            .err();
        assert!(
            matches!(err, Some(Error::IdempotencyMismatch { .. })),
            "{ids:x?}: {err:?}"
        );
    }
    // Above everything again: appended, and the batch before it is still a re-send.
    let d = store
        .append(&s, ExpectedVersion::Exact(5), events(&[hi + 9]))
        .await?;
    assert_eq!(d.first_version, 6);
    let again = store.append(&s, ExpectedVersion::Any, events(&[lo + 5])).await?;
    assert_eq!(again.first_version, 5);
    // The same batch re-sent in another order is a mismatch, not a re-send.
    let err = store
        .append(&s, ExpectedVersion::Any, events(&[lo + 1, lo]))
        .await
        .err();
    assert!(matches!(err, Some(Error::IdempotencyMismatch { .. })), "{err:?}");
    let read = store.read_stream(&s, 1, 100).await?;
    let ids: Vec<u128> = read.iter().map(|e| e.data.event_id.as_uuid().as_u128()).collect();
    assert_eq!(ids, [hi, hi + 1, lo, lo + 1, lo + 5, hi + 9]);
    store.destroy().await?;
    Ok(())
}
