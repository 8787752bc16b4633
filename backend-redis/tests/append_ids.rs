//! Idempotency when event ids do not grow: the append script skips its per-id lookup only
//! when the batch's smallest id is above every id the stream holds, so batches with lower,
//! interleaved or repeated ids must still be told apart exactly (new, re-send, partial
//! overlap). And in a stream's ordered prefix, where ids are found by a binary search over
//! the events instead of an index. Runs on the single node at `REDIS_URL` (default `redis://127.0.0.1:6379`) and
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

#[tokio::test]
async fn ids_in_the_ordered_prefix_are_found_without_an_index() {
    let url = common::single_url().unwrap();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    ordered_prefix(url, Some(&mut conn)).await.unwrap();
}

#[tokio::test]
async fn ids_in_the_ordered_prefix_are_found_without_an_index_on_a_cluster() {
    ordered_prefix(common::cluster_url().unwrap(), None)
        .await
        .unwrap();
}

/// 30 batches of 10 ascending ids with gaps (`base + 2i`), then re-sends, overlaps and ids
/// between committed ones, before and after the prefix ends. `conn` (single node) checks
/// that the head holds no index entry while the ids ascend.
#[allow(clippy::unwrap_used)] // test support may panic
async fn ordered_prefix(
    url: String,
    conn: Option<&mut redis::aio::MultiplexedConnection>,
) -> cqrs_core::Result<()> {
    let prefix = format!("t_ids_{}", uuid::Uuid::now_v7().simple());
    let store = RedisBackend::open(RedisStoreOptions::new(url).prefix(&prefix)).await?;
    let s = StreamId::new("s")?;
    let base = 0x40u128 << 120;
    let id = |i: u64| base + 2 * u128::from(i);
    let batch = |k: u64| (10 * k..10 * k + 10).map(id).collect::<Vec<_>>();
    let mut outcomes = Vec::new();
    for k in 0..30 {
        outcomes.push(
            store
                .append(&s, ExpectedVersion::Exact(10 * k), events(&batch(k)))
                .await?,
        );
    }
    if let Some(conn) = conn {
        let fields: usize = redis::cmd("HLEN")
            .arg(format!("{prefix}:{{p0}}:h:s"))
            .query_async(conn)
            .await
            .unwrap();
        assert_eq!(fields, 4, "v, vf, st and g only");
    }
    // Every batch re-sent: its original outcome, found by the search.
    for (k, original) in (0..30).zip(&outcomes) {
        let again = store.append(&s, ExpectedVersion::Any, events(&batch(k))).await?;
        assert_eq!(again.first_version, 10 * k + 1);
        assert_eq!(again.position, original.position);
    }
    // A single event of the middle, the first and the last.
    for i in [0, 137, 299] {
        let again = store.append(&s, ExpectedVersion::Any, events(&[id(i)])).await?;
        assert_eq!(again.first_version, i + 1);
    }
    // Overlaps and reorders are mismatches.
    for ids in [
        vec![id(298), id(299), id(300)],
        vec![id(11), id(10)],
        vec![id(10), id(12)],
        vec![id(5), base + 11],
    ] {
        let err = store.append(&s, ExpectedVersion::Any, events(&ids)).await.err();
        assert!(
            matches!(err, Some(Error::IdempotencyMismatch { .. })),
            "{ids:x?}: {err:?}"
        );
    }
    // Ids between committed ones, below the first, in no order: appended; the prefix ends.
    let between = store
        .append(
            &s,
            ExpectedVersion::Exact(300),
            events(&[base + 101, base - 7, base + 599]),
        )
        .await?;
    assert_eq!(between.first_version, 301);
    let above = store
        .append(&s, ExpectedVersion::Exact(303), events(&[id(400), id(401)]))
        .await?;
    assert_eq!(above.first_version, 304);
    // Re-sends on both sides of the prefix's end.
    for (ids, first) in [
        (vec![base + 101, base - 7, base + 599], 301),
        (vec![id(400), id(401)], 304),
        (batch(17), 171),
        (vec![id(299)], 300),
    ] {
        let again = store.append(&s, ExpectedVersion::Any, events(&ids)).await?;
        assert_eq!(again.first_version, first, "{ids:x?}");
    }
    let err = store
        .append(&s, ExpectedVersion::Any, events(&[base + 599, id(401)]))
        .await
        .err();
    assert!(matches!(err, Some(Error::IdempotencyMismatch { .. })), "{err:?}");
    let read = store.read_stream(&s, 1, 1000).await?;
    let ids: Vec<u128> = read.iter().map(|e| e.data.event_id.as_uuid().as_u128()).collect();
    let mut expected: Vec<u128> = (0..300).map(id).collect();
    expected.extend([base + 101, base - 7, base + 599, id(400), id(401)]);
    assert_eq!(ids, expected);
    store.destroy().await?;
    Ok(())
}
