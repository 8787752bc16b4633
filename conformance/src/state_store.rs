//! Behaviours: state_store (current state of CRUD aggregates under optimistic concurrency),
//! `docs/CONFORMANCE.md` items 56-62.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bytes::Bytes;
use cqrs_core::{Conditional, Error, LimitKind, Limits, StateExpectation, StateStore, StateWrite, Versioned};
use tokio::sync::Barrier;

use crate::{ensure, ensure_eq, ensure_err, Ctx, Deadline, Failure, Harness, Outcome, Verdict};

/// Bytes of a text.
fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A stored value at a version.
fn at(value: &str, version: u64) -> Option<Versioned<Bytes>> {
    Some(Versioned {
        value: b(value),
        version,
    })
}

/// Lists every id of `kind`, `page` at a time.
async fn list_all(store: &dyn StateStore, kind: &str, page: usize) -> Result<Vec<(String, u64)>, Failure> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for _ in 0..100_000 {
        let after = out.last().map(|(id, _)| id.clone());
        let items = store.list(kind, after.as_deref(), page).await.ctx("state list")?;
        ensure!(
            items.len() <= page,
            "list returned {} entries for limit {page}",
            items.len()
        );
        if items.is_empty() {
            return Ok(out);
        }
        out.extend(items);
    }
    Err(Failure("state list never ended".into()))
}

/// A first write with `New` stores version 1 (bytes round-trip exactly); a second `New` is a
/// StateConflict reporting version 1 and changes nothing (item 56).
pub async fn insert_new_then_second_insert_conflicts(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().states.clone();
    let kind = h.namespace().name("account");
    let bytes: Bytes = (0..=255u8).collect::<Vec<u8>>().into();
    ensure_eq!(
        store.get(&kind, "a-1").await.ctx("get")?,
        None,
        "entry before the first write"
    );
    let v = store
        .put(&kind, "a-1", StateExpectation::New, bytes.clone())
        .await
        .ctx("put New")?;
    ensure_eq!(v, 1, "version of a first write");
    let stored = Some(Versioned {
        value: bytes.clone(),
        version: 1,
    });
    ensure_eq!(
        store.get(&kind, "a-1").await.ctx("get")?,
        stored,
        "entry after the first write"
    );
    match store.put(&kind, "a-1", StateExpectation::New, b("other")).await {
        Err(Error::StateConflict { actual, .. }) => {
            ensure_eq!(
                actual,
                Some(1),
                "actual version reported by the conflicting insert"
            );
        }
        other => {
            return Err(Failure(format!(
                "second put New on an existing entry: expected StateConflict, got {other:?}"
            )))
        }
    }
    ensure_eq!(
        store.get(&kind, "a-1").await.ctx("get")?,
        stored,
        "entry after a refused insert"
    );
    Ok(Verdict::Passed)
}

/// An update at the current version bumps the version by exactly 1 each time (item 57).
pub async fn update_at_current_version_bumps_by_one(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().states.clone();
    let kind = h.namespace().name("counter");
    let mut version = store
        .put(&kind, "c", StateExpectation::New, b("0"))
        .await
        .ctx("put New")?;
    for i in 1..=5u64 {
        let next = store
            .put(&kind, "c", StateExpectation::Version(version), b(&i.to_string()))
            .await
            .ctx("put at the current version")?;
        ensure_eq!(next, version + 1, "version after an update at version {version}");
        version = next;
    }
    ensure_eq!(
        store.get(&kind, "c").await.ctx("get")?,
        at("5", 6),
        "entry after five updates"
    );
    Ok(Verdict::Passed)
}

/// A write at a stale or future version, or at a version of a missing entry, is a StateConflict
/// with the actual version, and the stored value is unchanged (item 57).
pub async fn stale_version_conflicts_and_changes_nothing(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().states.clone();
    let kind = h.namespace().name("stale");
    store
        .put(&kind, "s", StateExpectation::New, b("one"))
        .await
        .ctx("put New")?;
    store
        .put(&kind, "s", StateExpectation::Version(1), b("two"))
        .await
        .ctx("put Version(1)")?;
    for wrong in [1u64, 3] {
        match store
            .put(&kind, "s", StateExpectation::Version(wrong), b("lost"))
            .await
        {
            Err(Error::StateConflict { actual, expected, .. }) => {
                ensure_eq!(
                    actual,
                    Some(2),
                    "actual version reported for a write at version {wrong}"
                );
                ensure_eq!(
                    expected,
                    StateExpectation::Version(wrong),
                    "expectation reported for a write at version {wrong}"
                );
            }
            other => {
                return Err(Failure(format!(
                    "put at version {wrong} of an entry at version 2: expected StateConflict, got {other:?}"
                )))
            }
        }
    }
    ensure_eq!(
        store.get(&kind, "s").await.ctx("get")?,
        at("two", 2),
        "entry after refused writes"
    );
    match store
        .put(&kind, "missing", StateExpectation::Version(1), b("x"))
        .await
    {
        Err(Error::StateConflict { actual, .. }) => {
            ensure_eq!(actual, None, "actual version reported for a missing entry");
        }
        other => {
            return Err(Failure(format!(
                "put at version 1 of a missing entry: expected StateConflict, got {other:?}"
            )))
        }
    }
    ensure_eq!(
        store.get(&kind, "missing").await.ctx("get")?,
        None,
        "missing entry after a refused write"
    );
    Ok(Verdict::Passed)
}

/// Eight concurrent writers at the same version: exactly one wins with version 2, the others
/// get StateConflict, and the winner's value is stored (item 58).
pub async fn concurrent_updates_have_one_winner(h: Arc<dyn Harness>) -> Outcome {
    const WRITERS: usize = 8;
    let store = h.stores().states.clone();
    let kind = h.namespace().name("race");
    store
        .put(&kind, "r", StateExpectation::New, b("start"))
        .await
        .ctx("put New")?;
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, kind, barrier) = (store.clone(), kind.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let value = format!("writer-{w}");
            let r = store
                .put(&kind, "r", StateExpectation::Version(1), b(&value))
                .await;
            (value, r)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (value, r) = t.await.map_err(|e| Failure(format!("writer panicked: {e}")))?;
        match r {
            Ok(v) => winners.push((value, v)),
            Err(Error::StateConflict { actual, .. }) => {
                ensure_eq!(actual, Some(2), "actual version seen by a losing writer");
            }
            Err(e) => return Err(Failure(format!("a losing writer got {e:?}, not StateConflict"))),
        }
    }
    ensure_eq!(winners.len(), 1, "writers that succeeded at version 1");
    let (value, version) = winners.remove(0);
    ensure_eq!(version, 2, "the winner's new version");
    ensure_eq!(
        store.get(&kind, "r").await.ctx("get")?,
        at(&value, 2),
        "entry after the race"
    );
    Ok(Verdict::Passed)
}

/// Eight tasks each incrementing a counter ten times (read, then write at the version read,
/// retrying on conflict) end at 80 with version 81: no update is lost (item 58).
pub async fn concurrent_increments_lose_nothing(h: Arc<dyn Harness>) -> Outcome {
    const TASKS: u64 = 8;
    const EACH: u64 = 10;
    let store = h.stores().states.clone();
    let kind = h.namespace().name("incr");
    store
        .put(&kind, "n", StateExpectation::New, b("0"))
        .await
        .ctx("put New")?;
    let barrier = Arc::new(Barrier::new(usize::try_from(TASKS).unwrap_or(1)));
    let deadline = Deadline::after(Duration::from_secs(20));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, kind, barrier, deadline) =
            (store.clone(), kind.clone(), barrier.clone(), deadline.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut done = 0;
            while done < EACH {
                deadline.check("concurrent increments to succeed")?;
                let Some(cur) = store.get(&kind, "n").await.ctx("get")? else {
                    return Err(Failure("the counter vanished".into()));
                };
                let n: u64 = std::str::from_utf8(&cur.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Failure(format!("the counter holds {:?}", cur.value)))?;
                match store
                    .put(
                        &kind,
                        "n",
                        StateExpectation::Version(cur.version),
                        b(&(n + 1).to_string()),
                    )
                    .await
                {
                    Ok(v) => {
                        ensure_eq!(v, cur.version + 1, "version after an increment");
                        done += 1;
                    }
                    Err(Error::StateConflict { .. }) => tokio::task::yield_now().await,
                    Err(e) => return Err(Failure(format!("increment failed: {e:?}"))),
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Failure(format!("incrementer panicked: {e}")))??;
    }
    let total = TASKS * EACH;
    ensure_eq!(
        store.get(&kind, "n").await.ctx("get")?,
        at(&total.to_string(), total + 1),
        "counter after {total} concurrent increments"
    );
    Ok(Verdict::Passed)
}

/// A `put_batch` with one stale item fails as a whole (nothing written); a batch whose checks
/// all hold writes every item and returns each new version (item 59).
pub async fn put_batch_is_all_or_nothing(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().states.clone();
    let kind = h.namespace().name("batch");
    store
        .put(&kind, "a", StateExpectation::New, b("a1"))
        .await
        .ctx("put a")?;
    store
        .put(&kind, "b", StateExpectation::New, b("b1"))
        .await
        .ctx("put b")?;
    let write = |id: &str, expected, value: &str| StateWrite {
        id: id.into(),
        expected,
        value: b(value),
    };
    let bad_batches = [
        vec![
            write("a", StateExpectation::Version(1), "a2"),
            write("b", StateExpectation::Version(7), "b2"),
            write("c", StateExpectation::New, "c1"),
        ],
        vec![
            write("c", StateExpectation::New, "c1"),
            write("a", StateExpectation::Version(1), "a2"),
            write("b", StateExpectation::New, "b2"),
        ],
    ];
    for batch in bad_batches {
        match store.put_batch(&kind, batch).await {
            Err(Error::StateConflict { id, actual, .. }) => {
                ensure_eq!(id, "b", "entry named by the batch conflict");
                ensure_eq!(actual, Some(1), "actual version named by the batch conflict");
            }
            other => {
                return Err(Failure(format!(
                    "put_batch with a stale item: expected StateConflict, got {other:?}"
                )))
            }
        }
        ensure_eq!(
            store.get(&kind, "a").await.ctx("get a")?,
            at("a1", 1),
            "a after a failed batch"
        );
        ensure_eq!(
            store.get(&kind, "b").await.ctx("get b")?,
            at("b1", 1),
            "b after a failed batch"
        );
        ensure_eq!(
            store.get(&kind, "c").await.ctx("get c")?,
            None,
            "c after a failed batch"
        );
    }
    let versions = store
        .put_batch(
            &kind,
            vec![
                write("a", StateExpectation::Version(1), "a2"),
                write("b", StateExpectation::Any, "b2"),
                write("c", StateExpectation::New, "c1"),
            ],
        )
        .await
        .ctx("put_batch")?;
    ensure_eq!(versions, vec![2, 2, 1], "versions returned by a successful batch");
    ensure_eq!(
        store.get(&kind, "a").await.ctx("get a")?,
        at("a2", 2),
        "a after the batch"
    );
    ensure_eq!(
        store.get(&kind, "b").await.ctx("get b")?,
        at("b2", 2),
        "b after the batch"
    );
    ensure_eq!(
        store.get(&kind, "c").await.ctx("get c")?,
        at("c1", 1),
        "c after the batch"
    );
    Ok(Verdict::Passed)
}

/// A forced overwrite (`Any`) needs no check, creates a missing entry at version 1 and still
/// increments the version each time (item 60).
pub async fn forced_overwrite_increments_version(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().states.clone();
    let kind = h.namespace().name("force");
    for (i, want) in [1u64, 2, 3].into_iter().enumerate() {
        let v = store
            .put(&kind, "f", StateExpectation::Any, b(&format!("v{i}")))
            .await
            .ctx("put Any")?;
        ensure_eq!(v, want, "version after forced overwrite #{i}");
    }
    ensure_eq!(
        store.get(&kind, "f").await.ctx("get")?,
        at("v2", 3),
        "entry after three forced writes"
    );
    Ok(Verdict::Passed)
}

/// Delete with a version check: a stale version is refused and the entry kept; the current
/// version deletes; reads then return None; an unchecked delete of a missing entry is a no-op
/// (item 61).
pub async fn delete_checks_the_version(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().states.clone();
    let kind = h.namespace().name("del");
    store
        .put(&kind, "d", StateExpectation::New, b("1"))
        .await
        .ctx("put")?;
    store
        .put(&kind, "d", StateExpectation::Version(1), b("2"))
        .await
        .ctx("put")?;
    match store.delete(&kind, "d", Some(1)).await {
        Err(Error::StateConflict { actual, .. }) => {
            ensure_eq!(actual, Some(2), "actual version reported by a stale delete");
        }
        other => {
            return Err(Failure(format!(
                "delete at a stale version: expected StateConflict, got {other:?}"
            )))
        }
    }
    ensure_eq!(
        store.get(&kind, "d").await.ctx("get")?,
        at("2", 2),
        "entry after a refused delete"
    );
    store
        .delete(&kind, "d", Some(2))
        .await
        .ctx("delete at the current version")?;
    ensure_eq!(
        store.get(&kind, "d").await.ctx("get")?,
        None,
        "entry after delete"
    );
    store
        .delete(&kind, "d", None)
        .await
        .ctx("unchecked delete of a missing entry")?;
    store
        .delete(&kind, "never", None)
        .await
        .ctx("unchecked delete of a never-written entry")?;
    store
        .put(&kind, "e", StateExpectation::New, b("e"))
        .await
        .ctx("put")?;
    store.delete(&kind, "e", None).await.ctx("unchecked delete")?;
    ensure_eq!(
        store.get(&kind, "e").await.ctx("get")?,
        None,
        "entry after an unchecked delete"
    );
    store
        .put(&kind, "d", StateExpectation::New, b("again"))
        .await
        .ctx("put New after delete")?;
    ensure!(
        store
            .get(&kind, "d")
            .await
            .ctx("get")?
            .is_some_and(|v| v.value == b("again")),
        "an entry re-created after delete does not read back"
    );
    Ok(Verdict::Passed)
}

/// `get_if_changed` answers NotModified when the caller holds the stored version and the
/// current value (or None after delete) otherwise (item 62).
pub async fn get_if_changed_short_circuits(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().states.clone();
    let kind = h.namespace().name("etag");
    store
        .put(&kind, "e", StateExpectation::New, b("one"))
        .await
        .ctx("put")?;
    ensure_eq!(
        store.get_if_changed(&kind, "e", 1).await.ctx("get_if_changed")?,
        Conditional::NotModified,
        "get_if_changed at the stored version"
    );
    ensure_eq!(
        store.get_if_changed(&kind, "e", 7).await.ctx("get_if_changed")?,
        Conditional::Changed(at("one", 1)),
        "get_if_changed at another version"
    );
    store
        .put(&kind, "e", StateExpectation::Version(1), b("two"))
        .await
        .ctx("put")?;
    ensure_eq!(
        store.get_if_changed(&kind, "e", 1).await.ctx("get_if_changed")?,
        Conditional::Changed(at("two", 2)),
        "get_if_changed at the old version after an update"
    );
    ensure_eq!(
        store.get_if_changed(&kind, "e", 2).await.ctx("get_if_changed")?,
        Conditional::NotModified,
        "get_if_changed at the new version"
    );
    store.delete(&kind, "e", Some(2)).await.ctx("delete")?;
    ensure_eq!(
        store.get_if_changed(&kind, "e", 2).await.ctx("get_if_changed")?,
        Conditional::Changed(None),
        "get_if_changed after delete"
    );
    Ok(Verdict::Passed)
}

/// Kinds and ids follow the stream-id rules: empty, over 1024 bytes or with control characters
/// is InvalidInput for every call, and nothing is written; 1024 bytes of 4-byte characters and
/// hostile printable characters work (item 15 for state keys; `docs/DESIGN.md` section 2).
pub async fn invalid_kind_or_id_is_refused(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().states.clone();
    let kind = h.namespace().name("names");
    let long = "x".repeat(1025);
    let bad: [(&str, &str); 5] = [
        ("", "id"),
        (&kind, ""),
        (&kind, "a\nb"),
        (&kind, &long),
        ("k\u{7}", "id"),
    ];
    for (k, id) in bad {
        let what = format!(
            "kind {k:?} / id of {} bytes {:?}",
            id.len(),
            id.get(..10).unwrap_or(id)
        );
        ensure_err!(
            store.put(k, id, StateExpectation::Any, b("v")).await,
            Error::InvalidInput { .. },
            "put with {what}"
        );
        ensure_err!(
            store.get(k, id).await,
            Error::InvalidInput { .. },
            "get with {what}"
        );
        ensure_err!(
            store.get_if_changed(k, id, 1).await,
            Error::InvalidInput { .. },
            "get_if_changed with {what}"
        );
        ensure_err!(
            store.delete(k, id, None).await,
            Error::InvalidInput { .. },
            "delete with {what}"
        );
    }
    let batch = vec![
        StateWrite {
            id: "fine".into(),
            expected: StateExpectation::New,
            value: b("v"),
        },
        StateWrite {
            id: String::new(),
            expected: StateExpectation::New,
            value: b("v"),
        },
    ];
    ensure_err!(
        store.put_batch(&kind, batch).await,
        Error::InvalidInput { .. },
        "put_batch with an empty id"
    );
    ensure_eq!(
        store.get(&kind, "fine").await.ctx("get")?,
        None,
        "valid item of a refused batch"
    );
    for id in ["😀".repeat(256), "{x}:'y\"; %_ ü".to_owned()] {
        store
            .put(&kind, &id, StateExpectation::New, b("ok"))
            .await
            .ctx("put with a long or hostile id")?;
        ensure_eq!(
            store.get(&kind, &id).await.ctx("get")?,
            at("ok", 1),
            "entry {id:?}"
        );
    }
    Ok(Verdict::Passed)
}

/// A value over the document size limit is refused with TooLarge and nothing is written
/// (`docs/DESIGN.md` section 2, limits).
pub async fn oversize_value_is_too_large(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().states.clone();
    let kind = h.namespace().name("big");
    let limit = Limits::default().max_document_bytes;
    ensure_err!(
        store
            .put(
                &kind,
                "big",
                StateExpectation::New,
                Bytes::from(vec![1u8; limit + 1])
            )
            .await,
        Error::TooLarge {
            kind: LimitKind::DocumentBytes,
            ..
        },
        "put of {} bytes",
        limit + 1
    );
    ensure_eq!(
        store.get(&kind, "big").await.ctx("get")?,
        None,
        "entry after a refused put"
    );
    Ok(Verdict::Passed)
}

/// `list` pages through one kind's ids in bytewise order with their versions, without
/// duplicates or skips, leaving out deleted entries and other kinds (items 25, 61).
pub async fn list_pages_bytewise(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().states.clone();
    let ns = h.namespace();
    let (kind, other) = (ns.name("listed"), ns.name("listed-other"));
    let ids = [
        "b", "a", "Z", "é", "😀", "a b", "a/b", "aa", "{x}", "ü", "A", "gone",
    ];
    for id in ids {
        store
            .put(&kind, id, StateExpectation::New, b(id))
            .await
            .ctx("put")?;
    }
    store
        .put(&kind, "aa", StateExpectation::Version(1), b("aa2"))
        .await
        .ctx("put")?;
    store.delete(&kind, "gone", None).await.ctx("delete")?;
    store
        .put(&other, "a0", StateExpectation::New, b("x"))
        .await
        .ctx("put")?;
    let mut want: BTreeMap<Vec<u8>, (String, u64)> = BTreeMap::new();
    for id in ids.into_iter().filter(|id| *id != "gone") {
        let version = if id == "aa" { 2 } else { 1 };
        want.insert(id.as_bytes().to_vec(), (id.to_owned(), version));
    }
    let want: Vec<(String, u64)> = want.into_values().collect();
    for page in [1usize, 4, 100] {
        ensure_eq!(
            list_all(&*store, &kind, page).await?,
            want,
            "ids listed with page size {page}"
        );
    }
    Ok(Verdict::Passed)
}

/// A batch naming one id twice is refused as a whole (InvalidInput), nothing written: every
/// backend must give the same answer, and SQL upserts cannot touch a row twice (59).
pub async fn put_batch_refuses_duplicate_ids(h: Arc<dyn Harness>) -> Outcome {
    let st = &*h.stores().states;
    let kind = h.namespace().name("dup");
    let writes = vec![
        StateWrite {
            id: "a".into(),
            expected: StateExpectation::New,
            value: b("1"),
        },
        StateWrite {
            id: "b".into(),
            expected: StateExpectation::New,
            value: b("2"),
        },
        StateWrite {
            id: "a".into(),
            expected: StateExpectation::Any,
            value: b("3"),
        },
    ];
    ensure_err!(
        st.put_batch(&kind, writes).await,
        Error::InvalidInput { .. },
        "a batch writing id a twice"
    );
    ensure_eq!(
        st.get(&kind, "a").await.ctx("get a")?,
        None,
        "nothing written for a"
    );
    ensure_eq!(
        st.get(&kind, "b").await.ctx("get b")?,
        None,
        "nothing written for b"
    );
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __state_store_tests {
    ($factory:expr) => {
        $crate::__tests!(
            $factory,
            state_store,
            [
                insert_new_then_second_insert_conflicts,
                update_at_current_version_bumps_by_one,
                stale_version_conflicts_and_changes_nothing,
                concurrent_updates_have_one_winner,
                concurrent_increments_lose_nothing,
                put_batch_is_all_or_nothing,
                forced_overwrite_increments_version,
                delete_checks_the_version,
                get_if_changed_short_circuits,
                invalid_kind_or_id_is_refused,
                oversize_value_is_too_large,
                list_pages_bytewise,
                put_batch_refuses_duplicate_ids,
            ]
        );
    };
}
