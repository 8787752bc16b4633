//! Behaviours: snapshot_store, `docs/CONFORMANCE.md` items 49-51 and 55.
//!
//! Snapshots are saved per stream and version; the store never interprets their payload,
//! which must come back byte for byte.

use std::{collections::BTreeSet, sync::Arc, time::SystemTime};

use bytes::Bytes;
use cqrs_core::{
    compression, ContentEncoding, ContentType, DeleteMode, Error, ExpectedVersion, LimitKind, Limits,
    Snapshot, SnapshotKey, SnapshotStore, StreamId, Timestamp,
};

use crate::{ensure, ensure_eq, events, Ctx, Failure, Harness, Outcome, Verdict};

/// A JSON snapshot of `stream` at `version` whose payload names `label`.
fn snap(stream: &StreamId, version: u64, label: &str) -> Snapshot {
    Snapshot {
        stream_id: stream.clone(),
        version,
        schema_revision: 2,
        payload: Bytes::from(format!("{{\"state\":\"{label}\",\"version\":{version}}}")),
        content_type: ContentType::Json,
        content_encoding: ContentEncoding::Identity,
        taken_at: Timestamp::from_system_time(SystemTime::now()),
    }
}

/// Every key listed by the store, paging `page` keys at a time, checking the order.
async fn list_all(store: &dyn SnapshotStore, page: usize) -> Result<Vec<SnapshotKey>, Failure> {
    let mut out: Vec<SnapshotKey> = Vec::new();
    let mut after: Option<SnapshotKey> = None;
    for _ in 0..100_000 {
        let keys = store.list(after.as_ref(), page).await.ctx("snapshot list")?;
        ensure!(
            keys.len() <= page,
            "list returned {} keys for limit {page}",
            keys.len()
        );
        let Some(last) = keys.last().cloned() else {
            return Ok(out);
        };
        for k in keys {
            if let Some(prev) = out.last() {
                ensure!(
                    prev < &k,
                    "list must order keys by (stream, version) without repeats: {k:?} came after {prev:?}"
                );
            }
            out.push(k);
        }
        after = Some(last);
    }
    Err(Failure("snapshot list never ended".into()))
}

/// Saves and loads the latest snapshot field for field; a stream without snapshots loads None
/// (item 49).
pub async fn save_and_load_latest(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().snapshots.clone();
    let ns = h.namespace();
    let (s, other) = (ns.stream("snap"), ns.stream("snap-none"));
    ensure_eq!(
        store.load_latest(&s).await.ctx("load_latest")?,
        None,
        "latest snapshot of a new stream"
    );
    ensure_eq!(
        store.load_at_or_before(&s, 10).await.ctx("load_at_or_before")?,
        None,
        "snapshot at or before 10 of a new stream"
    );
    let (v7, v3) = (snap(&s, 7, "seven"), snap(&s, 3, "three"));
    store.save(v7.clone()).await.ctx("save v7")?;
    store.save(v3.clone()).await.ctx("save v3")?;
    ensure_eq!(
        store.load_latest(&s).await.ctx("load_latest")?,
        Some(v7),
        "latest snapshot (highest version, not last saved)"
    );
    ensure_eq!(
        store.load_latest(&other).await.ctx("load_latest")?,
        None,
        "latest snapshot of another stream"
    );
    Ok(Verdict::Passed)
}

/// `load_at_or_before(v)` returns the snapshot with the highest version <= v, None below the
/// first one (item 50).
pub async fn load_at_or_before_picks_highest_not_above(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().snapshots.clone();
    let s = h.namespace().stream("snap-at");
    for v in [9u64, 2, 5] {
        store.save(snap(&s, v, &format!("v{v}"))).await.ctx("save")?;
    }
    for (at, want) in [
        (1u64, None),
        (2, Some(2u64)),
        (4, Some(2)),
        (5, Some(5)),
        (8, Some(5)),
        (9, Some(9)),
    ] {
        let got = store.load_at_or_before(&s, at).await.ctx("load_at_or_before")?;
        ensure_eq!(
            got.as_ref().map(|x| x.version),
            want,
            "version of the snapshot at or before {at}"
        );
        if let (Some(got), Some(v)) = (got, want) {
            ensure_eq!(
                got.payload,
                snap(&s, v, &format!("v{v}")).payload,
                "payload of snapshot {v}"
            );
        }
    }
    let far = store
        .load_at_or_before(&s, u64::try_from(i64::MAX).unwrap_or(u64::MAX))
        .await
        .ctx("load_at_or_before i64::MAX")?;
    ensure_eq!(far.map(|x| x.version), Some(9), "snapshot at or before i64::MAX");
    Ok(Verdict::Passed)
}

/// Saving twice at one version succeeds and the second replaces the first (item 51).
pub async fn saving_twice_at_one_version_replaces(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().snapshots.clone();
    let s = h.namespace().stream("snap-twice");
    store.save(snap(&s, 4, "first")).await.ctx("first save")?;
    let second = Snapshot {
        schema_revision: 3,
        ..snap(&s, 4, "second")
    };
    store
        .save(second.clone())
        .await
        .ctx("second save at the same version")?;
    ensure_eq!(
        store.load_latest(&s).await.ctx("load_latest")?,
        Some(second.clone()),
        "latest snapshot"
    );
    ensure_eq!(
        store.load_at_or_before(&s, 4).await.ctx("load_at_or_before")?,
        Some(second),
        "snapshot at or before 4"
    );
    let keys: Vec<SnapshotKey> = list_all(&*store, 100)
        .await?
        .into_iter()
        .filter(|k| k.stream_id == s)
        .collect();
    ensure_eq!(
        keys.len(),
        1,
        "snapshots listed for the stream after two saves at one version"
    );
    ensure_eq!(store.delete(&s).await.ctx("delete")?, 1, "snapshots deleted");
    Ok(Verdict::Passed)
}

/// Payload bytes round-trip exactly: gzip- and zlib-compressed JSON (decompressing to the
/// original), every byte value 0..=255, and an empty payload; the other fields too (item 49).
pub async fn payload_bytes_round_trip(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().snapshots.clone();
    let s = h.namespace().stream("snap-bytes");
    let json: Vec<u8> = format!(
        "{{\"items\":[{}],\"name\":\"ü😀\"}}",
        (0..2000).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    )
    .into_bytes();
    let opaque: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let cases = [
        (ContentType::Json, ContentEncoding::Gzip, json.clone()),
        (ContentType::Json, ContentEncoding::Zlib, json.clone()),
        (ContentType::Opaque, ContentEncoding::Identity, opaque.clone()),
        (ContentType::Opaque, ContentEncoding::Gzip, opaque),
        (ContentType::Bson, ContentEncoding::Identity, Vec::new()),
    ];
    let mut saved = Vec::new();
    for (v, (content_type, encoding, plain)) in (1u64..).zip(cases) {
        let payload = compression::compress(encoding, &plain).ctx("compress")?;
        let snapshot = Snapshot {
            stream_id: s.clone(),
            version: v,
            schema_revision: 7,
            payload,
            content_type,
            content_encoding: encoding,
            taken_at: Timestamp::from_millis(1_700_000_000_123 + i64::try_from(v).unwrap_or(0)),
        };
        store.save(snapshot.clone()).await.ctx("save")?;
        saved.push((snapshot, plain));
    }
    for (snapshot, plain) in saved {
        let v = snapshot.version;
        let got = store.load_at_or_before(&s, v).await.ctx("load_at_or_before")?;
        let Some(got) = got else {
            return Err(Failure(format!("snapshot {v} was saved but loads as None")));
        };
        ensure_eq!(
            got,
            snapshot,
            "snapshot {v} as loaded (every field, payload byte for byte)"
        );
        let decoded = compression::decompress(got.content_encoding, &got.payload).ctx("decompress")?;
        ensure!(
            decoded[..] == plain[..],
            "snapshot {v} does not decompress to the original bytes"
        );
    }
    Ok(Verdict::Passed)
}

/// `delete` removes every snapshot of a stream, returns how many, and leaves other streams
/// alone; deleting again returns 0 (item 55).
pub async fn delete_removes_and_counts(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().snapshots.clone();
    let ns = h.namespace();
    let (s, keep) = (ns.stream("snap-del"), ns.stream("snap-keep"));
    for v in [1u64, 2, 3] {
        store.save(snap(&s, v, "x")).await.ctx("save")?;
    }
    store.save(snap(&keep, 1, "kept")).await.ctx("save")?;
    ensure_eq!(store.delete(&s).await.ctx("delete")?, 3, "snapshots deleted");
    ensure_eq!(
        store.load_latest(&s).await.ctx("load_latest")?,
        None,
        "latest snapshot after delete"
    );
    ensure_eq!(
        store.load_at_or_before(&s, 3).await.ctx("load_at_or_before")?,
        None,
        "snapshot at or before 3 after delete"
    );
    ensure_eq!(
        store.delete(&s).await.ctx("delete again")?,
        0,
        "snapshots deleted by a second delete"
    );
    ensure_eq!(
        store
            .load_latest(&keep)
            .await
            .ctx("load_latest")?
            .map(|x| x.version),
        Some(1),
        "snapshot of another stream after delete"
    );
    Ok(Verdict::Passed)
}

/// `list` pages through (stream, version) keys in order (versions numerically) with no
/// duplicates or skips, whatever the page size (item 25 for snapshots; `docs/DESIGN.md` section 2).
pub async fn list_pages_without_gaps(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().snapshots.clone();
    let ns = h.namespace();
    let streams = [
        ns.stream("list-b"),
        ns.stream("list-a"),
        ns.stream("list-B"),
        ns.stream("list-é"),
    ];
    let mut want = BTreeSet::new();
    for s in &streams {
        for v in [10u64, 2, 1, 5] {
            store.save(snap(s, v, "l")).await.ctx("save")?;
            want.insert(SnapshotKey {
                stream_id: s.clone(),
                version: v,
            });
        }
    }
    let want: Vec<SnapshotKey> = want.into_iter().collect();
    for page in [1usize, 3, 1000] {
        let got: Vec<SnapshotKey> = list_all(&*store, page)
            .await?
            .into_iter()
            .filter(|k| streams.contains(&k.stream_id))
            .collect();
        ensure_eq!(got, want, "snapshot keys listed with page size {page}");
    }
    Ok(Verdict::Passed)
}

/// Soft-deleting or tombstoning a stream deletes its snapshots (pinned; item 55).
pub async fn deleting_a_stream_deletes_its_snapshots(h: Arc<dyn Harness>) -> Outcome {
    let stores = h.stores();
    let ns = h.namespace();
    for (label, mode) in [("soft", DeleteMode::Soft), ("tomb", DeleteMode::Tombstone)] {
        let s = ns.stream(&format!("snap-{label}"));
        stores
            .events
            .append(&s, ExpectedVersion::NoStream, events(1, 3))
            .await
            .ctx("append")?;
        for v in [1u64, 3] {
            stores.snapshots.save(snap(&s, v, label)).await.ctx("save")?;
        }
        stores
            .events
            .delete_stream(&s, ExpectedVersion::Exact(3), mode)
            .await
            .ctx("delete_stream")?;
        ensure_eq!(
            stores.snapshots.load_latest(&s).await.ctx("load_latest")?,
            None,
            "latest snapshot after a {mode:?} delete of the stream"
        );
        ensure_eq!(
            stores
                .snapshots
                .load_at_or_before(&s, 1)
                .await
                .ctx("load_at_or_before")?,
            None,
            "snapshot at or before 1 after a {mode:?} delete of the stream"
        );
        let listed = list_all(&*stores.snapshots, 100).await?;
        ensure!(
            !listed.iter().any(|k| k.stream_id == s),
            "snapshots of a {mode:?}-deleted stream are still listed"
        );
    }
    Ok(Verdict::Passed)
}

/// A snapshot over the document size limit is refused with TooLarge and nothing is stored
/// (`docs/DESIGN.md` section 2, limits; pitfall 22).
pub async fn oversize_snapshot_is_too_large(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().snapshots.clone();
    let s = h.namespace().stream("snap-big");
    let limit = Limits::default().max_document_bytes;
    let big = Snapshot {
        payload: Bytes::from(vec![7u8; limit + 1]),
        content_type: ContentType::Opaque,
        ..snap(&s, 1, "big")
    };
    match store.save(big).await {
        Err(Error::TooLarge {
            kind: LimitKind::DocumentBytes,
            limit: l,
            actual,
        }) => {
            ensure!(actual > l, "TooLarge reports actual {actual} not above limit {l}");
        }
        other => {
            return Err(Failure(format!(
                "saving a snapshot of {} bytes: expected TooLarge (DocumentBytes), got {other:?}",
                limit + 1
            )))
        }
    }
    ensure_eq!(
        store.load_latest(&s).await.ctx("load_latest")?,
        None,
        "latest snapshot after a refused save"
    );
    let small = snap(&s, 1, "small");
    store
        .save(small.clone())
        .await
        .ctx("save a small snapshot after a refused one")?;
    ensure_eq!(
        store.load_latest(&s).await.ctx("load_latest")?,
        Some(small),
        "latest snapshot"
    );
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __snapshot_store_tests {
    ($factory:expr) => {
        $crate::__tests!(
            $factory,
            snapshot_store,
            [
                save_and_load_latest,
                load_at_or_before_picks_highest_not_above,
                saving_twice_at_one_version_replaces,
                payload_bytes_round_trip,
                delete_removes_and_counts,
                list_pages_without_gaps,
                deleting_a_stream_deletes_its_snapshots,
                oversize_snapshot_is_too_large,
            ]
        );
    };
}
