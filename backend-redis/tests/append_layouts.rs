//! The layouts of a stream's event-id index during a rolling upgrade (see `append.lua`). New
//! streams are ordered (no index while their ids ascend, then the ids in the head hash);
//! streams created by the release before keep their ids in the head hash (`m`), and streams
//! older still the ids hash. `fixtures/append_ids_in_head.lua` and
//! `fixtures/append_previous.lua` are those releases' append scripts (their `common.lua` and
//! `append.lua`), run by SHA as an old client would run them beside this one. Single node at
//! `REDIS_URL` (default `redis://127.0.0.1:6379`), own key prefix, deleted afterwards.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test support may panic

use backend_redis::{RedisBackend, RedisStoreOptions};
use cqrs_core::{
    Admin, ContentType, EventData, EventId, EventStore, ExpectedVersion, ImportedEvent, StreamId, Timestamp,
};

#[allow(dead_code)] // the cluster half is not used here
mod common;

const PREVIOUS: &str = include_str!("fixtures/append_previous.lua");
const IDS_IN_HEAD: &str = include_str!("fixtures/append_ids_in_head.lua");

fn event(id: u128) -> EventData {
    let mut e = EventData::new("Placed", ContentType::Json, b"{}".to_vec());
    e.event_id = EventId::from_uuid(uuid::Uuid::from_u128(id));
    e
}

/// The packed form the previous release stored (format 1; see `Packed` in event_store.rs).
fn packed(id: u128) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&6u16.to_be_bytes());
    out.extend_from_slice(b"Placed");
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(b"{}");
    out
}

/// The six keys every release's append script takes, on the single node's one partition:
/// head, events, ids (or marker), log, live streams, all streams.
fn append_keys(prefix: &str, stream: &str) -> [String; 6] {
    let key = |kind: &str| format!("{prefix}:{{p0}}:{kind}:{stream}");
    let part = |kind: &str| format!("{prefix}:{{p0}}:{kind}");
    [
        key("h"),
        key("e"),
        key("i"),
        part("log"),
        part("live"),
        part("all"),
    ]
}

/// An append by the previous release's script: its keys and its 14-argument form.
async fn previous_append(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    stream: &str,
    expected: &str,
    ids: &[u128],
) -> redis::RedisResult<redis::Value> {
    let bytes: Vec<[u8; 16]> = ids.iter().map(|i| i.to_be_bytes()).collect();
    let script = redis::Script::new(PREVIOUS);
    let mut inv = script.prepare_invoke();
    for key in append_keys(prefix, stream) {
        inv.key(key);
    }
    inv.arg(stream)
        .arg(expected)
        .arg(0)
        .arg(ids.len())
        .arg(&bytes.iter().min().unwrap()[..])
        .arg(&bytes.iter().max().unwrap()[..]);
    for b in &bytes {
        inv.arg(&b[..]);
    }
    for &i in ids {
        inv.arg(packed(i));
    }
    inv.invoke_async(conn).await
}

fn ok_first(v: &redis::Value) -> u64 {
    let redis::Value::SimpleString(s) = v else {
        panic!("previous script answered {v:?}")
    };
    let mut words = s.split(' ');
    assert!(matches!(words.next(), Some("ok" | "dup")), "{s}");
    words.next().unwrap().parse().unwrap()
}

/// A store under its own prefix on the single node, and a raw connection beside it.
async fn open() -> (
    String,
    std::sync::Arc<RedisBackend>,
    redis::aio::MultiplexedConnection,
) {
    let url = common::single_url().unwrap();
    let prefix = format!("t_layout_{}", uuid::Uuid::now_v7().simple());
    let store = RedisBackend::open(RedisStoreOptions::new(&url).prefix(&prefix))
        .await
        .unwrap();
    let conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (prefix, store, conn)
}

#[tokio::test]
async fn streams_of_the_previous_layout_keep_it_and_old_scripts_cannot_skip_new_ids() {
    let (prefix, store, mut conn) = open().await;
    let hi = 0x50u128 << 120;

    // A stream created by the previous release: a batch and a single event.
    let old = StreamId::new("old").unwrap();
    assert_eq!(
        ok_first(
            &previous_append(&mut conn, &prefix, "old", "any", &[hi, hi + 1])
                .await
                .unwrap()
        ),
        1
    );
    assert_eq!(
        ok_first(
            &previous_append(&mut conn, &prefix, "old", "any", &[hi + 2])
                .await
                .unwrap()
        ),
        3
    );
    // This release finds both in the ids hash: re-sends return the original outcome.
    let again = store
        .append(&old, ExpectedVersion::Any, vec![event(hi), event(hi + 1)])
        .await
        .unwrap();
    assert_eq!((again.first_version, again.next_expected), (1, 2));
    let again = store
        .append(&old, ExpectedVersion::Any, vec![event(hi + 2)])
        .await
        .unwrap();
    assert_eq!(again.first_version, 3);
    // A new event on it stays in that layout, so the previous script finds its re-send.
    let c = store
        .append(&old, ExpectedVersion::Exact(3), vec![event(hi + 3)])
        .await
        .unwrap();
    assert_eq!(c.first_version, 4);
    assert_eq!(
        ok_first(
            &previous_append(&mut conn, &prefix, "old", "any", &[hi + 3])
                .await
                .unwrap()
        ),
        4
    );
    // And a lower id, committed by neither, is appended by both.
    let d = store
        .append(&old, ExpectedVersion::Exact(4), vec![event(5)])
        .await
        .unwrap();
    assert_eq!(d.first_version, 5);
    assert_eq!(
        ok_first(
            &previous_append(&mut conn, &prefix, "old", "any", &[6])
                .await
                .unwrap()
        ),
        6
    );
    let again = store
        .append(&old, ExpectedVersion::Any, vec![event(6)])
        .await
        .unwrap();
    assert_eq!(again.first_version, 6);
    // A batch too, in both directions.
    let e = store
        .append(
            &old,
            ExpectedVersion::Exact(6),
            vec![event(hi + 4), event(hi + 5)],
        )
        .await
        .unwrap();
    assert_eq!((e.first_version, e.next_expected), (7, 8));
    assert_eq!(
        ok_first(
            &previous_append(&mut conn, &prefix, "old", "any", &[hi + 4, hi + 5])
                .await
                .unwrap()
        ),
        7
    );
    assert_eq!(
        ok_first(
            &previous_append(&mut conn, &prefix, "old", "any", &[hi + 6, hi + 7])
                .await
                .unwrap()
        ),
        9
    );
    let again = store
        .append(&old, ExpectedVersion::Any, vec![event(hi + 6), event(hi + 7)])
        .await
        .unwrap();
    assert_eq!((again.first_version, again.next_expected), (9, 10));
    let head: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(format!("{prefix}:{{p0}}:h:old"))
        .arg("m")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(head, [None, Some("10".to_owned())]);

    // A stream created by this release: the previous script fails before writing, for a
    // re-send (which it could not see) and for a new event alike.
    let new = StreamId::new("new").unwrap();
    store
        .append(&new, ExpectedVersion::NoStream, vec![event(hi)])
        .await
        .unwrap();
    for ids in [&[hi][..], &[hi + 1][..], &[hi + 2, hi + 3][..]] {
        let err = previous_append(&mut conn, &prefix, "new", "any", ids).await;
        assert!(
            err.as_ref().is_err_and(|e| e.to_string().contains("WRONGTYPE")),
            "{ids:x?}: {err:?}"
        );
    }
    let read = store.read_stream(&new, 1, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    let again = store
        .append(&new, ExpectedVersion::Any, vec![event(hi)])
        .await
        .unwrap();
    assert_eq!(again.first_version, 1);

    // An import creates the ordered layout too (with an empty prefix: imported ids need not
    // ascend) and keeps `g`, the greatest id, exact: a re-send of the imported event is
    // found, an id below `g` is looked up, not skipped.
    let imp = StreamId::new("imp").unwrap();
    store
        .import_commit(
            &imp,
            vec![ImportedEvent {
                version: 1,
                recorded_at: Timestamp::from_millis(1_000),
                data: event(hi + 10),
            }],
        )
        .await
        .unwrap();
    let again = store
        .append(&imp, ExpectedVersion::Any, vec![event(hi + 10)])
        .await
        .unwrap();
    assert_eq!(again.first_version, 1);
    let lower = store
        .append(&imp, ExpectedVersion::Exact(1), vec![event(hi + 5)])
        .await
        .unwrap();
    assert_eq!(lower.first_version, 2);
    let again = store
        .append(&imp, ExpectedVersion::Any, vec![event(hi + 5)])
        .await
        .unwrap();
    assert_eq!(again.first_version, 2);
    let g: Vec<u8> = redis::cmd("HGET")
        .arg(format!("{prefix}:{{p0}}:h:imp"))
        .arg("g")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(g, (hi + 10).to_be_bytes());
    let err = previous_append(&mut conn, &prefix, "imp", "any", &[hi + 20]).await;
    assert!(err.is_err_and(|e| e.to_string().contains("WRONGTYPE")));
    store.destroy().await.unwrap();
}

/// An append by the script of the release that kept every id in the head hash: the same
/// keys, a single event as its packed form alone, a batch as its smallest and greatest ids,
/// the ids, then the packed events.
async fn ids_in_head_append(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    stream: &str,
    expected: &str,
    ids: &[u128],
) -> redis::RedisResult<redis::Value> {
    let bytes: Vec<[u8; 16]> = ids.iter().map(|i| i.to_be_bytes()).collect();
    let script = redis::Script::new(IDS_IN_HEAD);
    let mut inv = script.prepare_invoke();
    for key in append_keys(prefix, stream) {
        inv.key(key);
    }
    inv.arg(stream).arg(expected);
    if ids.len() > 1 {
        inv.arg(&bytes.iter().min().unwrap()[..])
            .arg(&bytes.iter().max().unwrap()[..]);
        for b in &bytes {
            inv.arg(&b[..]);
        }
    }
    for &i in ids {
        inv.arg(packed(i));
    }
    inv.invoke_async(conn).await
}

#[tokio::test]
async fn streams_with_ids_in_the_head_keep_it_and_its_scripts_cannot_miss_prefix_ids() {
    let (prefix, store, mut conn) = open().await;
    let hi = 0x50u128 << 120;
    let head = |stream: &str| format!("{prefix}:{{p0}}:h:{stream}");

    // A stream created by that release, ids ascending.
    let old = StreamId::new("old").unwrap();
    for (ids, first) in [(&[hi, hi + 1][..], 1), (&[hi + 2][..], 3)] {
        let answer = ids_in_head_append(&mut conn, &prefix, "old", "any", ids)
            .await
            .unwrap();
        assert_eq!(ok_first(&answer), first);
    }
    // This release finds its re-sends, and appends to it in its layout, ascending ids
    // included, so that release's script finds the re-sends of this one's events.
    let again = store
        .append(&old, ExpectedVersion::Any, vec![event(hi), event(hi + 1)])
        .await
        .unwrap();
    assert_eq!((again.first_version, again.next_expected), (1, 2));
    let c = store
        .append(
            &old,
            ExpectedVersion::Exact(3),
            vec![event(hi + 3), event(hi + 4)],
        )
        .await
        .unwrap();
    assert_eq!(c.first_version, 4);
    let d = store
        .append(&old, ExpectedVersion::Exact(5), vec![event(hi + 5)])
        .await
        .unwrap();
    assert_eq!(d.first_version, 6);
    for (ids, first) in [(&[hi + 3, hi + 4][..], 4), (&[hi + 5][..], 6)] {
        let answer = ids_in_head_append(&mut conn, &prefix, "old", "any", ids)
            .await
            .unwrap();
        assert_eq!(ok_first(&answer), first, "{ids:x?}");
    }
    let fields: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
        .arg(head("old"))
        .arg("m")
        .arg("g")
        .arg(&(hi + 4).to_be_bytes()[..])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        fields,
        [Some((hi + 5).to_be_bytes().to_vec()), None, Some(b"0-5".to_vec())]
    );

    // An ordered stream of this release, its ids in its prefix and not in the head: that
    // release's script fails before writing, for a re-send (which it could not see) and for
    // a new event alike.
    let new = StreamId::new("new").unwrap();
    store
        .append(&new, ExpectedVersion::NoStream, vec![event(hi), event(hi + 1)])
        .await
        .unwrap();
    store
        .append(&new, ExpectedVersion::Exact(2), vec![event(hi + 2)])
        .await
        .unwrap();
    let in_head: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(head("new"))
        .arg(&(hi + 2).to_be_bytes()[..])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(in_head, None, "an ascending stream indexes nothing");
    for ids in [&[hi][..], &[hi + 3][..], &[hi + 1, hi + 2][..]] {
        let err = ids_in_head_append(&mut conn, &prefix, "new", "any", ids).await;
        assert!(
            err.as_ref().is_err_and(|e| e.to_string().contains("WRONGTYPE")),
            "{ids:x?}: {err:?}"
        );
    }
    assert_eq!(store.read_stream(&new, 1, 10).await.unwrap().len(), 3);
    store.destroy().await.unwrap();
}
