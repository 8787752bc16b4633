//! Behaviours: read_store (read-model documents, the portable query subset, expiry and atomic
//! commits with checkpoints), `docs/CONFORMANCE.md` items 63, 65, 69 and 70 (store parts).
//!
//! Query results are held to [`cqrs_core::Query::run`], the reference semantics: documents
//! lacking a field (or holding null) are not in that field's index, strings compare bytewise,
//! ties are broken by id bytewise, and pages are keyset pages.

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::Arc,
    time::{Duration, SystemTime},
};

use cqrs_core::{
    Change, Checkpoint, CheckpointUpdate, Cursor, Direction, Document, Error, FieldType, Filter, Query,
    ReadStore, StoreIdentity, Timestamp, Value,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::json;

use crate::{ensure, ensure_eq, ensure_err, Ctx, Failure, Harness, Outcome, Verdict};

/// Declares the indexes of `fields` on `collection`.
async fn indexes(
    store: &dyn ReadStore,
    collection: &str,
    fields: &[(&str, FieldType)],
) -> Result<BTreeMap<String, FieldType>, Failure> {
    for (field, ty) in fields {
        store
            .ensure_index(collection, field, *ty)
            .await
            .ctx("ensure_index")?;
    }
    Ok(fields.iter().map(|(f, t)| ((*f).to_owned(), *t)).collect())
}

/// Runs `query` page by page (following the store's cursors) and returns every document,
/// checking page sizes and that the last page has no cursor.
async fn query_all(store: &dyn ReadStore, collection: &str, query: &Query) -> Result<Vec<Document>, Failure> {
    let mut q = query.clone();
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let page = store.query(collection, &q).await.ctx("query")?;
        ensure!(
            page.documents.len() <= q.limit,
            "query returned {} documents for limit {}",
            page.documents.len(),
            q.limit
        );
        let empty = page.documents.is_empty();
        out.extend(page.documents);
        match page.next {
            Some(c) => {
                ensure!(!empty, "query returned an empty page with a next cursor {c:?}");
                q.after = Some(c);
            }
            None => return Ok(out),
        }
    }
    Err(Failure("query never returned a last page".into()))
}

/// The ids of `docs`, in order.
fn ids(docs: &[Document]) -> Vec<String> {
    docs.iter().map(|d| d.id.clone()).collect()
}

/// The reference answer: every document `query` selects, in order (limit ignored).
fn reference(
    indexes: &BTreeMap<String, FieldType>,
    docs: &[Document],
    query: &Query,
) -> Result<Vec<Document>, Failure> {
    let q = Query {
        limit: usize::MAX,
        after: None,
        ..query.clone()
    };
    q.run(indexes, docs.iter())
        .map(|(page, _)| page)
        .map_err(|e| Failure(format!("the reference refused query {query:?}: {e}")))
}

/// A checkpoint of a made-up store, `n` far along.
fn checkpoint(n: u64) -> Checkpoint {
    Checkpoint {
        store: Some(StoreIdentity {
            id: "read-model-conformance".into(),
            epoch: 1,
        }),
        partitions: [(0u32, [n, 0, 0]), (3, [n / 2, 1, 0])].into_iter().collect(),
    }
}

/// Now plus (or minus) `secs` seconds, as a timestamp.
fn now_plus(secs: i64) -> Timestamp {
    let now = Timestamp::from_system_time(SystemTime::now());
    Timestamp::from_millis(now.as_millis() + secs * 1000)
}

/// Upserting the same document twice leaves one document with that content (item 63).
pub async fn upsert_is_idempotent(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("idem");
    indexes(&*store, &coll, &[("n", FieldType::I64)]).await?;
    let doc = Document::new(
        "d-1",
        json!({"n": 5, "name": "ü😀", "nested": {"a": [1, 2, null]}}),
    );
    store.upsert(&coll, doc.clone()).await.ctx("upsert")?;
    store.upsert(&coll, doc.clone()).await.ctx("upsert again")?;
    ensure_eq!(
        store.get(&coll, "d-1").await.ctx("get")?,
        Some(doc.clone()),
        "document after two upserts"
    );
    ensure_eq!(
        store.count(&coll, &[]).await.ctx("count")?,
        1,
        "documents after two upserts"
    );
    let q = Query::new().filter(Filter::eq("n", Value::I64(5)));
    ensure_eq!(
        query_all(&*store, &coll, &q).await?,
        vec![doc],
        "query n == 5 after two upserts"
    );
    Ok(Verdict::Passed)
}

/// An upsert replaces the whole document and its index entries: old values and removed fields
/// no longer match (items 63, 69).
pub async fn upsert_replaces_and_reindexes(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("replace");
    indexes(&*store, &coll, &[("n", FieldType::I64), ("s", FieldType::Str)]).await?;
    store
        .upsert(&coll, Document::new("r", json!({"n": 1, "s": "old"})))
        .await
        .ctx("upsert")?;
    let new = Document::new("r", json!({"n": 2}));
    store.upsert(&coll, new.clone()).await.ctx("upsert replacement")?;
    ensure_eq!(
        store.get(&coll, "r").await.ctx("get")?,
        Some(new.clone()),
        "document after replacement"
    );
    let by_n = |n| Query::new().filter(Filter::eq("n", Value::I64(n)));
    ensure_eq!(
        ids(&query_all(&*store, &coll, &by_n(1)).await?),
        Vec::<String>::new(),
        "query by old value"
    );
    ensure_eq!(
        ids(&query_all(&*store, &coll, &by_n(2)).await?),
        vec!["r".to_owned()],
        "query by new value"
    );
    let by_s = Query::new().filter(Filter::prefix("s", "o"));
    ensure_eq!(
        ids(&query_all(&*store, &coll, &by_s).await?),
        Vec::<String>::new(),
        "query on a field the replacement dropped"
    );
    ensure_eq!(
        store
            .count(&coll, &[Filter::eq("s", Value::Str("old".into()))])
            .await
            .ctx("count")?,
        0,
        "count on a field the replacement dropped"
    );
    Ok(Verdict::Passed)
}

/// `get` of a missing document is None; `delete` says whether the document existed, and a
/// deleted document is gone from get, query and count (item 69).
pub async fn get_and_delete(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("getdel");
    indexes(&*store, &coll, &[("n", FieldType::I64)]).await?;
    ensure_eq!(store.get(&coll, "x").await.ctx("get")?, None, "missing document");
    ensure_eq!(
        store.delete(&coll, "x").await.ctx("delete")?,
        false,
        "delete of a missing document"
    );
    let doc = Document::new("{x}:'y\"; %_ ü😀", json!({"n": 1}));
    store.upsert(&coll, doc.clone()).await.ctx("upsert")?;
    store
        .upsert(&coll, Document::new("other", json!({"n": 1})))
        .await
        .ctx("upsert")?;
    ensure_eq!(
        store.get(&coll, &doc.id).await.ctx("get")?,
        Some(doc.clone()),
        "document with a hostile id"
    );
    ensure_eq!(
        store.delete(&coll, &doc.id).await.ctx("delete")?,
        true,
        "delete of an existing document"
    );
    ensure_eq!(
        store.get(&coll, &doc.id).await.ctx("get")?,
        None,
        "document after delete"
    );
    ensure_eq!(
        store.delete(&coll, &doc.id).await.ctx("delete")?,
        false,
        "second delete"
    );
    let q = Query::new().filter(Filter::eq("n", Value::I64(1)));
    ensure_eq!(
        ids(&query_all(&*store, &coll, &q).await?),
        vec!["other".to_owned()],
        "query after delete"
    );
    ensure_eq!(
        store.count(&coll, &[]).await.ctx("count")?,
        1,
        "count after delete"
    );
    Ok(Verdict::Passed)
}

/// `ensure_index` is idempotent; the same field with another type, or a field whose existing
/// documents hold another type, is InvalidInput and creates no index (item 69).
pub async fn ensure_index_is_idempotent_and_typed(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("index");
    store
        .upsert(&coll, Document::new("a", json!({"n": 3, "m": "text"})))
        .await
        .ctx("upsert")?;
    store
        .ensure_index(&coll, "n", FieldType::I64)
        .await
        .ctx("ensure_index")?;
    store
        .ensure_index(&coll, "n", FieldType::I64)
        .await
        .ctx("ensure_index again")?;
    ensure_eq!(
        ids(&query_all(
            &*store,
            &coll,
            &Query::new().filter(Filter::eq("n", Value::I64(3)))
        )
        .await?),
        vec!["a".to_owned()],
        "a document upserted before its index was declared"
    );
    ensure_err!(
        store.ensure_index(&coll, "n", FieldType::Str).await,
        Error::InvalidInput { .. },
        "ensure_index of an I64 field as Str"
    );
    ensure_err!(
        store.ensure_index(&coll, "m", FieldType::I64).await,
        Error::InvalidInput { .. },
        "ensure_index as I64 of a field holding a string"
    );
    ensure_err!(
        store
            .query(&coll, &Query::new().filter(Filter::eq("m", Value::I64(1))))
            .await,
        Error::InvalidInput { .. },
        "query on a field whose ensure_index failed"
    );
    ensure_err!(
        store
            .query(
                &coll,
                &Query::new().filter(Filter::eq("n", Value::Str("3".into())))
            )
            .await,
        Error::InvalidInput { .. },
        "query with a value of another type than the index"
    );
    Ok(Verdict::Passed)
}

/// An upsert whose indexed field holds another JSON type (or whose body is not an object) is
/// InvalidInput and leaves the stored document as it was (item 69; `docs/DESIGN.md` section 2).
pub async fn mistyped_upsert_is_refused(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("mistyped");
    indexes(
        &*store,
        &coll,
        &[
            ("n", FieldType::I64),
            ("s", FieldType::Str),
            ("b", FieldType::Bool),
            ("t", FieldType::Time),
        ],
    )
    .await?;
    let good = Document::new(
        "d",
        json!({"n": 1, "s": "x", "b": true, "t": 1_700_000_000_000i64, "free": [1, "a"]}),
    );
    store.upsert(&coll, good.clone()).await.ctx("upsert")?;
    for body in [
        json!({"n": "1"}),
        json!({"n": 1.5}),
        json!({"n": true}),
        json!({"s": 3}),
        json!({"b": "true"}),
        json!({"t": "2024-01-01"}),
        json!([1, 2]),
        json!("scalar"),
    ] {
        ensure_err!(
            store.upsert(&coll, Document::new("d", body.clone())).await,
            Error::InvalidInput { .. },
            "upsert of body {body}"
        );
        ensure_err!(
            store.upsert(&coll, Document::new("new", body.clone())).await,
            Error::InvalidInput { .. },
            "upsert of a new document with body {body}"
        );
    }
    ensure_eq!(
        store.get(&coll, "d").await.ctx("get")?,
        Some(good),
        "document after refused upserts"
    );
    ensure_eq!(
        store.get(&coll, "new").await.ctx("get")?,
        None,
        "new document after refused upserts"
    );
    ensure_eq!(
        store.count(&coll, &[]).await.ctx("count")?,
        1,
        "documents after refused upserts"
    );
    Ok(Verdict::Passed)
}

/// `upsert_batch` with one bad document writes nothing; a good batch writes every document
/// (item 63; `docs/DESIGN.md` section 2: bad input never writes partially).
pub async fn upsert_batch_is_all_or_nothing(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("batch");
    indexes(&*store, &coll, &[("n", FieldType::I64)]).await?;
    let good: Vec<Document> = (0..3)
        .map(|i| Document::new(format!("g{i}"), json!({ "n": i })))
        .collect();
    let mut bad = good.clone();
    bad.insert(1, Document::new("bad", json!({"n": "one"})));
    ensure_err!(
        store.upsert_batch(&coll, bad).await,
        Error::InvalidInput { .. },
        "upsert_batch holding a mistyped document"
    );
    ensure_eq!(
        store.count(&coll, &[]).await.ctx("count")?,
        0,
        "documents after a refused batch"
    );
    ensure_eq!(
        store.get(&coll, "g0").await.ctx("get")?,
        None,
        "first document of a refused batch"
    );
    store
        .upsert_batch(&coll, good.clone())
        .await
        .ctx("upsert_batch")?;
    ensure_eq!(
        query_all(&*store, &coll, &Query::new()).await?,
        good,
        "documents after a good batch"
    );
    Ok(Verdict::Passed)
}

/// A query, count or sort on a field without an index is InvalidInput whose message names
/// `ensure_index`; the store never scans silently (item 69; `docs/DESIGN.md` section 2).
pub async fn unindexed_query_names_ensure_index(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("noindex");
    indexes(&*store, &coll, &[("n", FieldType::I64)]).await?;
    store
        .upsert(&coll, Document::new("a", json!({"n": 1, "color": "red"})))
        .await
        .ctx("upsert")?;
    let check = |r: cqrs_core::Result<()>, what: &str| match r {
        Err(Error::InvalidInput { reason }) if reason.contains("ensure_index") => Ok(()),
        other => Err(Failure(format!(
            "{what}: expected InvalidInput naming ensure_index, got {other:?}"
        ))),
    };
    let eq = Filter::eq("color", Value::Str("red".into()));
    check(
        store
            .query(&coll, &Query::new().filter(eq.clone()))
            .await
            .map(|_| ()),
        "query filtering on an unindexed field",
    )?;
    check(
        store
            .query(&coll, &Query::new().sort_by("color", Direction::Asc))
            .await
            .map(|_| ()),
        "query sorting by an unindexed field",
    )?;
    check(
        store.count(&coll, &[eq]).await.map(|_| ()),
        "count filtering on an unindexed field",
    )?;
    let other = h.namespace().name("noindex-other");
    check(
        store
            .query(&other, &Query::new().filter(Filter::eq("n", Value::I64(1))))
            .await
            .map(|_| ()),
        "query on a field indexed in another collection only",
    )?;
    Ok(Verdict::Passed)
}

/// Equality filters on one and on several indexed fields (I64, Str, Bool, Time) return the
/// matching documents sorted by id (item 69).
pub async fn equality_query(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("eq");
    let idx = indexes(
        &*store,
        &coll,
        &[
            ("status", FieldType::Str),
            ("vip", FieldType::Bool),
            ("n", FieldType::I64),
            ("at", FieldType::Time),
        ],
    )
    .await?;
    let mut docs = Vec::new();
    for i in 0..12i64 {
        let status = ["open", "closed", "Open"][usize::try_from(i % 3).unwrap_or(0)];
        docs.push(Document::new(
            format!("o{:02}", 11 - i),
            json!({"status": status, "vip": i % 2 == 0, "n": i % 4, "at": 1_700_000_000_000i64 + (i % 2) * 1000}),
        ));
    }
    store
        .upsert_batch(&coll, docs.clone())
        .await
        .ctx("upsert_batch")?;
    let queries = [
        Query::new().filter(Filter::eq("status", Value::Str("open".into()))),
        Query::new()
            .filter(Filter::eq("status", Value::Str("open".into())))
            .filter(Filter::eq("vip", Value::Bool(true))),
        Query::new().filter(Filter::eq("n", Value::I64(3))),
        Query::new().filter(Filter::eq(
            "at",
            Value::Time(Timestamp::from_millis(1_700_000_001_000)),
        )),
        Query::new().filter(Filter::eq("status", Value::Str("missing".into()))),
    ];
    for q in &queries {
        let got = query_all(&*store, &coll, q).await?;
        let want = reference(&idx, &docs, q)?;
        let mut sorted = ids(&want);
        sorted.sort();
        ensure_eq!(ids(&want), sorted, "reference order (by id) for {q:?}");
        ensure_eq!(got, want, "documents for {q:?}");
    }
    ensure_eq!(
        query_all(&*store, &coll, &queries[0]).await?.len(),
        4,
        "documents with status open"
    );
    Ok(Verdict::Passed)
}

/// Range filters with inclusive, exclusive and open bounds return the documents in range,
/// sorted by that field then id, ascending and descending (item 69).
pub async fn range_query_bounds_and_directions(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("range");
    indexes(&*store, &coll, &[("n", FieldType::I64)]).await?;
    let mut docs = Vec::new();
    for i in 0..20i64 {
        docs.push(Document::new(
            format!("r{:02}", (i * 7) % 20),
            json!({ "n": (i % 10) - 4 }),
        ));
    }
    store
        .upsert_batch(&coll, docs.clone())
        .await
        .ctx("upsert_batch")?;
    let v = Value::I64;
    let cases = [
        (Bound::Included(v(-1)), Bound::Excluded(v(3))),
        (Bound::Excluded(v(-1)), Bound::Included(v(3))),
        (Bound::Included(v(-1)), Bound::Included(v(3))),
        (Bound::Excluded(v(-1)), Bound::Excluded(v(3))),
        (Bound::Unbounded, Bound::Included(v(0))),
        (Bound::Excluded(v(2)), Bound::Unbounded),
        (Bound::Unbounded, Bound::Unbounded),
        (Bound::Included(v(4)), Bound::Included(v(-4))),
    ];
    for (lower, upper) in cases {
        let inside = |n: i64| {
            let above = match &lower {
                Bound::Included(Value::I64(b)) => n >= *b,
                Bound::Excluded(Value::I64(b)) => n > *b,
                _ => true,
            };
            let below = match &upper {
                Bound::Included(Value::I64(b)) => n <= *b,
                Bound::Excluded(Value::I64(b)) => n < *b,
                _ => true,
            };
            above && below
        };
        let mut want: Vec<(i64, String)> = docs
            .iter()
            .filter_map(|d| d.body["n"].as_i64().map(|n| (n, d.id.clone())))
            .filter(|(n, _)| inside(*n))
            .collect();
        want.sort();
        for direction in [Direction::Asc, Direction::Desc] {
            let q = Query::new()
                .filter(Filter::range("n", lower.clone(), upper.clone()))
                .sort_by("n", direction)
                .limit(4);
            let got: Vec<(i64, String)> = query_all(&*store, &coll, &q)
                .await?
                .into_iter()
                .map(|d| (d.body["n"].as_i64().unwrap_or(i64::MIN), d.id))
                .collect();
            let mut expected = want.clone();
            if direction == Direction::Desc {
                expected.reverse();
            }
            ensure_eq!(got, expected, "range {lower:?}..{upper:?} sorted {direction:?}");
            let count = store
                .count(&coll, &[Filter::range("n", lower.clone(), upper.clone())])
                .await
                .ctx("count")?;
            ensure_eq!(
                count,
                u64::try_from(want.len()).unwrap_or(0),
                "count of range {lower:?}..{upper:?}"
            );
        }
    }
    Ok(Verdict::Passed)
}

/// Prefix and range filters on strings compare bytewise ("Z" < "a", non-ASCII after ASCII),
/// with no collation or case folding, and prefixes are literal (no pattern syntax) (item 69).
pub async fn string_queries_compare_bytewise(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("bytes");
    indexes(&*store, &coll, &[("s", FieldType::Str)]).await?;
    let values = [
        "alpha",
        "Zeta",
        "alp",
        "Alpha",
        "alphabet",
        "éclair",
        "é-acute",
        "😀",
        "😀smile",
        "e",
        "ê",
        "a b",
        "a",
        "",
        "a.c",
        "aXc",
        "5%off",
        "5Xoff",
        "x_y",
        "xzy",
        "[q]*",
        "[q]+",
    ];
    for (i, s) in values.iter().enumerate() {
        store
            .upsert(&coll, Document::new(format!("s{i:02}"), json!({ "s": s })))
            .await
            .ctx("upsert")?;
    }
    let sorted = |mut v: Vec<&str>| {
        v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        v.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let values_of = |docs: Vec<Document>| -> Vec<String> {
        docs.into_iter()
            .map(|d| d.body["s"].as_str().unwrap_or("<not a string>").to_owned())
            .collect()
    };
    let all = query_all(
        &*store,
        &coll,
        &Query::new().sort_by("s", Direction::Asc).limit(3),
    )
    .await?;
    let want_all = sorted(values.to_vec());
    ensure_eq!(values_of(all), want_all, "every string sorted ascending");
    ensure!(
        want_all.iter().position(|s| s == "Zeta") < want_all.iter().position(|s| s == "a"),
        "bytewise order puts Z before a"
    );
    // `.`, `%`, `_`, `[`, `*` and `+` must be literal, not pattern syntax.
    for prefix in ["al", "a", "A", "é", "😀", "e", "zz", "a.", "5%", "x_", "[q]*"] {
        let q = Query::new()
            .filter(Filter::prefix("s", prefix))
            .sort_by("s", Direction::Asc);
        let want = sorted(values.iter().copied().filter(|s| s.starts_with(prefix)).collect());
        ensure_eq!(
            values_of(query_all(&*store, &coll, &q).await?),
            want,
            "strings with prefix {prefix:?}"
        );
        let desc = Query::new()
            .filter(Filter::prefix("s", prefix))
            .sort_by("s", Direction::Desc)
            .limit(2);
        let mut want_desc = want.clone();
        want_desc.reverse();
        ensure_eq!(
            values_of(query_all(&*store, &coll, &desc).await?),
            want_desc,
            "strings with prefix {prefix:?}, descending"
        );
        let count = store
            .count(&coll, &[Filter::prefix("s", prefix)])
            .await
            .ctx("count")?;
        ensure_eq!(
            count,
            u64::try_from(want.len()).unwrap_or(0),
            "count of strings with prefix {prefix:?}"
        );
    }
    let q = Query::new()
        .filter(Filter::range(
            "s",
            Bound::Included(Value::Str("Z".into())),
            Bound::Excluded(Value::Str("b".into())),
        ))
        .sort_by("s", Direction::Asc);
    let want = sorted(
        values
            .iter()
            .copied()
            .filter(|s| s.as_bytes() >= "Z".as_bytes() && s.as_bytes() < "b".as_bytes())
            .collect(),
    );
    ensure_eq!(
        values_of(query_all(&*store, &coll, &q).await?),
        want,
        "strings in [\"Z\", \"b\")"
    );
    Ok(Verdict::Passed)
}

/// Keyset paging over 50 documents, 7 a page, sorted by a field with ties and by id, in both
/// directions: each document exactly once, in order, with cursors at each page's last
/// document (item 25 for read models).
pub async fn keyset_paging_both_directions(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("paging");
    let idx = indexes(&*store, &coll, &[("n", FieldType::I64)]).await?;
    let docs: Vec<Document> = (0..50i64)
        .map(|i| Document::new(format!("p{:02}", (i * 17) % 50), json!({ "n": i % 6 })))
        .collect();
    store
        .upsert_batch(&coll, docs.clone())
        .await
        .ctx("upsert_batch")?;
    let by_field = |d: &Document| (d.body["n"].as_i64().unwrap_or(i64::MIN), d.id.clone());
    let mut asc_field: Vec<Document> = docs.clone();
    asc_field.sort_by_key(by_field);
    let mut asc_id = docs.clone();
    asc_id.sort_by(|a, b| a.id.as_bytes().cmp(b.id.as_bytes()));
    let queries = [
        (Query::new().sort_by("n", Direction::Asc), asc_field.clone()),
        (
            Query::new().sort_by("n", Direction::Desc),
            asc_field.into_iter().rev().collect(),
        ),
        (Query::new(), asc_id.clone()),
        (
            Query {
                direction: Direction::Desc,
                ..Query::new()
            },
            asc_id.into_iter().rev().collect(),
        ),
    ];
    for (q, want) in queries {
        let q = q.limit(7);
        let mut page_q = q.clone();
        let mut got: Vec<Document> = Vec::new();
        let mut pages = 0;
        loop {
            let page = store.query(&coll, &page_q).await.ctx("query")?;
            pages += 1;
            ensure!(
                pages <= 8,
                "paging {q:?} took more than 8 pages of 7 for 50 documents"
            );
            let (_, ref_next) = page_q.run(&idx, docs.iter()).ctx("reference")?;
            ensure_eq!(page.next, ref_next, "cursor after page {pages} of {q:?}");
            if let (Some(c), Some(last)) = (&page.next, page.documents.last()) {
                ensure_eq!(&c.id, &last.id, "cursor id vs the page's last document");
            }
            got.extend(page.documents);
            match page.next {
                Some(c) => page_q.after = Some(c),
                None => break,
            }
        }
        ensure_eq!(ids(&got), ids(&want), "documents paged through by {q:?}");
        ensure_eq!(pages, 8, "pages of 7 for 50 documents");
    }
    let resumed = Query::new()
        .sort_by("n", Direction::Asc)
        .limit(5)
        .after(Some(Cursor {
            value: Some(Value::I64(2)),
            id: "p99".into(),
        }));
    let got = query_all(&*store, &coll, &resumed).await?;
    ensure!(
        got.iter().all(|d| d.body["n"].as_i64().is_some_and(|n| n > 2)),
        "resuming after (2, \"p99\") returned documents with n <= 2"
    );
    Ok(Verdict::Passed)
}

/// `count` with no filter, equality, range, prefix and combined filters equals the number of
/// documents the same filters select (item 69).
pub async fn count_with_filters(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("count");
    let idx = indexes(
        &*store,
        &coll,
        &[
            ("n", FieldType::I64),
            ("s", FieldType::Str),
            ("b", FieldType::Bool),
        ],
    )
    .await?;
    let docs: Vec<Document> = (0..30i64)
        .map(|i| {
            Document::new(
                format!("c{i:02}"),
                json!({"n": i % 7, "s": format!("k{}", i % 4), "b": i % 3 == 0}),
            )
        })
        .collect();
    store
        .upsert_batch(&coll, docs.clone())
        .await
        .ctx("upsert_batch")?;
    let cases: Vec<Vec<Filter>> = vec![
        vec![],
        vec![Filter::eq("b", Value::Bool(true))],
        vec![Filter::range(
            "n",
            Bound::Included(Value::I64(2)),
            Bound::Excluded(Value::I64(5)),
        )],
        vec![Filter::prefix("s", "k1")],
        vec![
            Filter::eq("b", Value::Bool(false)),
            Filter::range("n", Bound::Excluded(Value::I64(3)), Bound::Unbounded),
        ],
        vec![
            Filter::eq("s", Value::Str("k2".into())),
            Filter::eq("n", Value::I64(2)),
        ],
        vec![Filter::eq("s", Value::Str("none".into()))],
    ];
    for filters in cases {
        let q = Query {
            filters: filters.clone(),
            ..Query::new()
        };
        let want = u64::try_from(reference(&idx, &docs, &q)?.len()).unwrap_or(0);
        ensure_eq!(
            store.count(&coll, &filters).await.ctx("count")?,
            want,
            "count of {filters:?}"
        );
    }
    ensure_eq!(
        store.count(&coll, &[]).await.ctx("count")?,
        30,
        "count of every document"
    );
    Ok(Verdict::Passed)
}

/// Documents lacking an indexed field or holding null there are not in that field's index:
/// filters and sorts on the field leave them out, while queries by id return them (item 69).
pub async fn missing_or_null_fields_are_not_indexed(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("nulls");
    indexes(&*store, &coll, &[("n", FieldType::I64), ("s", FieldType::Str)]).await?;
    let docs = [
        Document::new("has", json!({"n": 1, "s": "a"})),
        Document::new("null", json!({"n": null, "s": null})),
        Document::new("missing", json!({"other": 1})),
        Document::new("zero", json!({"n": 0, "s": ""})),
    ];
    store
        .upsert_batch(&coll, docs.to_vec())
        .await
        .ctx("upsert_batch")?;
    let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let open = Filter::range("n", Bound::Unbounded, Bound::Unbounded);
    for direction in [Direction::Asc, Direction::Desc] {
        let q = Query::new().sort_by("n", direction);
        let mut want = names(&["zero", "has"]);
        if direction == Direction::Desc {
            want.reverse();
        }
        ensure_eq!(
            ids(&query_all(&*store, &coll, &q).await?),
            want,
            "sort by n {direction:?}"
        );
    }
    let q = Query::new().filter(open.clone());
    ensure_eq!(
        ids(&query_all(&*store, &coll, &q).await?),
        names(&["has", "zero"]),
        "open range on n"
    );
    ensure_eq!(
        store.count(&coll, &[open]).await.ctx("count")?,
        2,
        "count of an open range on n"
    );
    let q = Query::new().filter(Filter::prefix("s", ""));
    ensure_eq!(
        ids(&query_all(&*store, &coll, &q).await?),
        names(&["has", "zero"]),
        "empty prefix on s"
    );
    ensure_eq!(
        ids(&query_all(&*store, &coll, &Query::new()).await?),
        names(&["has", "missing", "null", "zero"]),
        "every document by id"
    );
    Ok(Verdict::Passed)
}

/// Generated queries (seeded) over generated documents return exactly the pages, cursors and
/// counts that `Query::run`, the reference semantics, gives for the same documents (item 69).
pub async fn queries_match_the_reference(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("reference");
    let idx = indexes(
        &*store,
        &coll,
        &[
            ("n", FieldType::I64),
            ("s", FieldType::Str),
            ("b", FieldType::Bool),
            ("t", FieldType::Time),
        ],
    )
    .await?;
    let strings = ["", "a", "ab", "abc", "Z", "Za", "é", "éa", "😀", "b", "B", "a b"];
    let t0 = 1_700_000_000_000i64;
    let mut rng = StdRng::seed_from_u64(0x5EED_C0DE);
    let mut docs = Vec::new();
    for i in 0..80usize {
        let id = match i % 4 {
            0 => format!("doc-{i:02}"),
            1 => format!("Z{i}"),
            2 => format!("é{i}"),
            _ => format!("{i}"),
        };
        let mut body = serde_json::Map::new();
        let roll = rng.random_range(0..10);
        if roll > 1 {
            body.insert("n".into(), json!(rng.random_range(-5i64..5)));
        } else if roll == 1 {
            body.insert("n".into(), serde_json::Value::Null);
        }
        if rng.random_bool(0.85) {
            body.insert("s".into(), json!(strings[rng.random_range(0..strings.len())]));
        }
        if rng.random_bool(0.8) {
            body.insert("b".into(), json!(rng.random_bool(0.5)));
        }
        if rng.random_bool(0.9) {
            body.insert("t".into(), json!(t0 + rng.random_range(0i64..5) * 1000));
        }
        body.insert("x".into(), json!(rng.random_range(0..1000)));
        docs.push(Document::new(id, serde_json::Value::Object(body)));
    }
    let (first, rest) = docs.split_at(20);
    for d in first {
        store.upsert(&coll, d.clone()).await.ctx("upsert")?;
    }
    store
        .upsert_batch(&coll, rest.to_vec())
        .await
        .ctx("upsert_batch")?;

    let value = |rng: &mut StdRng, field: &str| match field {
        "n" => Value::I64(rng.random_range(-6i64..6)),
        "s" => Value::Str(strings[rng.random_range(0..strings.len())].to_owned()),
        "b" => Value::Bool(rng.random_bool(0.5)),
        _ => Value::Time(Timestamp::from_millis(t0 + rng.random_range(-1i64..6) * 1000)),
    };
    let bound = |rng: &mut StdRng, field: &str| match rng.random_range(0..3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(value(rng, field)),
        _ => Bound::Excluded(value(rng, field)),
    };
    let fields = ["n", "s", "b", "t"];
    for round in 0..60 {
        let mut q = Query::new().limit(rng.random_range(1..12));
        let mut used: Vec<&str> = Vec::new();
        for _ in 0..rng.random_range(0..3) {
            let f = fields[rng.random_range(0..fields.len())];
            if !used.contains(&f) {
                used.push(f);
                q = q.filter(Filter::eq(f, value(&mut rng, f)));
            }
        }
        let mut range_field = None;
        if rng.random_bool(0.6) {
            let f = ["n", "s", "t", "s"][rng.random_range(0..4)];
            if !used.contains(&f) {
                range_field = Some(f);
                if f == "s" && rng.random_bool(0.5) {
                    let prefixes = ["", "a", "Z", "é", "😀", "ab"];
                    q = q.filter(Filter::prefix(f, prefixes[rng.random_range(0..prefixes.len())]));
                } else {
                    q = q.filter(Filter::range(f, bound(&mut rng, f), bound(&mut rng, f)));
                }
            }
        }
        let direction = if rng.random_bool(0.5) {
            Direction::Asc
        } else {
            Direction::Desc
        };
        q = match (range_field, rng.random_range(0..3)) {
            (_, 0) => Query { direction, ..q },
            (Some(f), _) => q.sort_by(f, direction),
            (None, _) => q.sort_by(fields[rng.random_range(0..fields.len())], direction),
        };
        let mut page_q = q.clone();
        for page_no in 1..=200 {
            let page = store.query(&coll, &page_q).await.ctx("query")?;
            let (want, want_next) = page_q.run(&idx, docs.iter()).ctx("reference")?;
            ensure_eq!(page.documents, want, "query #{round} page {page_no}: {page_q:?}");
            ensure_eq!(
                page.next,
                want_next,
                "query #{round} cursor after page {page_no}: {page_q:?}"
            );
            match page.next {
                Some(c) => page_q.after = Some(c),
                None => break,
            }
        }
        // Count ignores the sort: documents lacking the sort field still count.
        let count_q = Query {
            filters: q.filters.clone(),
            ..Query::new()
        };
        let want_count = u64::try_from(reference(&idx, &docs, &count_q)?.len()).unwrap_or(0);
        ensure_eq!(
            store.count(&coll, &q.filters).await.ctx("count")?,
            want_count,
            "query #{round} count of {:?}",
            q.filters
        );
    }
    Ok(Verdict::Passed)
}

/// A document whose expiry (by the store's clock) has passed is never returned nor counted,
/// and `sweep_expired` removes it and reports how many it removed; unexpired documents stay
/// (`docs/DESIGN.md` section 2, TTL).
pub async fn expired_documents_are_hidden_and_swept(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let coll = h.namespace().name("ttl");
    indexes(&*store, &coll, &[("n", FieldType::I64)]).await?;
    let past = Document::new("past", json!({"n": 1})).expires_at(now_plus(-3600));
    let future = Document::new("future", json!({"n": 1})).expires_at(now_plus(3600));
    let eternal = Document::new("eternal", json!({"n": 1}));
    store
        .upsert_batch(&coll, vec![past.clone(), future.clone(), eternal.clone()])
        .await
        .ctx("upsert_batch")?;
    store
        .upsert(
            &coll,
            Document::new("past-2", json!({"n": 2})).expires_at(now_plus(-3600)),
        )
        .await
        .ctx("upsert")?;
    ensure_eq!(
        store.get(&coll, "past").await.ctx("get")?,
        None,
        "expired document"
    );
    ensure_eq!(
        store.get(&coll, "future").await.ctx("get")?,
        Some(future.clone()),
        "unexpired document"
    );
    let q = Query::new().filter(Filter::range("n", Bound::Unbounded, Bound::Unbounded));
    ensure_eq!(
        ids(&query_all(&*store, &coll, &q).await?),
        vec!["eternal".to_owned(), "future".to_owned()],
        "query over expired and unexpired documents"
    );
    ensure_eq!(
        ids(&query_all(&*store, &coll, &Query::new()).await?),
        vec!["eternal".to_owned(), "future".to_owned()],
        "query by id over expired and unexpired documents"
    );
    ensure_eq!(
        store.count(&coll, &[]).await.ctx("count")?,
        2,
        "count with expired documents"
    );
    ensure_eq!(
        store
            .count(&coll, &[Filter::eq("n", Value::I64(2))])
            .await
            .ctx("count")?,
        0,
        "count of a value only an expired document holds"
    );
    ensure_eq!(
        store.sweep_expired(&coll).await.ctx("sweep_expired")?,
        2,
        "documents swept"
    );
    ensure_eq!(
        store.sweep_expired(&coll).await.ctx("sweep_expired")?,
        0,
        "documents swept again"
    );
    ensure_eq!(
        store.count(&coll, &[]).await.ctx("count")?,
        2,
        "count after the sweep"
    );
    ensure_eq!(
        store.get(&coll, "future").await.ctx("get")?,
        Some(future),
        "unexpired document after the sweep"
    );
    let revived = Document::new("past", json!({"n": 3}));
    store
        .upsert(&coll, revived.clone())
        .await
        .ctx("upsert over a swept id")?;
    ensure_eq!(
        store.get(&coll, "past").await.ctx("get")?,
        Some(revived),
        "document re-created after the sweep"
    );
    Ok(Verdict::Passed)
}

/// `commit` applies upserts and deletes together with the checkpoint, which the checkpoint
/// store then loads (item 65).
pub async fn commit_applies_changes_and_checkpoint(h: Arc<dyn Harness>) -> Outcome {
    let stores = h.stores();
    let ns = h.namespace();
    let (coll, other, name) = (ns.name("commit"), ns.name("commit-other"), ns.name("projection"));
    indexes(&*stores.reads, &coll, &[("n", FieldType::I64)]).await?;
    stores
        .reads
        .upsert(&coll, Document::new("gone", json!({"n": 0})))
        .await
        .ctx("upsert")?;
    let (a, b) = (
        Document::new("a", json!({"n": 1})),
        Document::new("b", json!({"n": 2})),
    );
    let c = Document::new("c", json!({"anything": true}));
    let changes = vec![
        Change::Upsert {
            collection: coll.clone(),
            document: a.clone(),
        },
        Change::Upsert {
            collection: coll.clone(),
            document: b.clone(),
        },
        Change::Delete {
            collection: coll.clone(),
            id: "gone".into(),
        },
        Change::Delete {
            collection: coll.clone(),
            id: "never-existed".into(),
        },
        Change::Upsert {
            collection: other.clone(),
            document: c.clone(),
        },
    ];
    let cp = checkpoint(10);
    stores
        .reads
        .commit(
            changes,
            CheckpointUpdate {
                name: name.clone(),
                checkpoint: cp.clone(),
                lease_epoch: 0,
            },
        )
        .await
        .ctx("commit")?;
    ensure_eq!(
        stores.reads.get(&coll, "a").await.ctx("get")?,
        Some(a),
        "document a after commit"
    );
    ensure_eq!(
        stores.reads.get(&coll, "b").await.ctx("get")?,
        Some(b),
        "document b after commit"
    );
    ensure_eq!(
        stores.reads.get(&coll, "gone").await.ctx("get")?,
        None,
        "deleted document after commit"
    );
    ensure_eq!(
        stores.reads.get(&other, "c").await.ctx("get")?,
        Some(c),
        "document of a second collection"
    );
    let q = Query::new().filter(Filter::eq("n", Value::I64(2)));
    ensure_eq!(
        ids(&query_all(&*stores.reads, &coll, &q).await?),
        vec!["b".to_owned()],
        "index after commit"
    );
    ensure_eq!(
        stores.checkpoints.load(&name).await.ctx("load")?,
        Some(cp.clone()),
        "checkpoint after commit"
    );
    let cp2 = checkpoint(20);
    stores
        .reads
        .commit(
            Vec::new(),
            CheckpointUpdate {
                name: name.clone(),
                checkpoint: cp2.clone(),
                lease_epoch: 0,
            },
        )
        .await
        .ctx("commit without changes")?;
    ensure_eq!(
        stores.checkpoints.load(&name).await.ctx("load")?,
        Some(cp2),
        "checkpoint after an empty commit"
    );
    Ok(Verdict::Passed)
}

/// A commit under a stale lease epoch is Fenced and changes nothing (documents and checkpoint);
/// one under an epoch never handed out is InvalidInput; the current holder's commit succeeds
/// (item 65, fencing).
pub async fn commit_with_stale_epoch_changes_nothing(h: Arc<dyn Harness>) -> Outcome {
    let stores = h.stores();
    let ns = h.namespace();
    let (coll, name) = (ns.name("fenced"), ns.name("fenced-projection"));
    let ttl = Duration::from_secs(60);
    let old = stores
        .checkpoints
        .acquire(&name, "owner-1", ttl)
        .await
        .ctx("acquire")?;
    let doc = |id: &str, n: i64| Change::Upsert {
        collection: coll.clone(),
        document: Document::new(id, json!({ "n": n })),
    };
    let update = |n: u64, epoch: u64| CheckpointUpdate {
        name: name.clone(),
        checkpoint: checkpoint(n),
        lease_epoch: epoch,
    };
    stores
        .reads
        .commit(vec![doc("a", 1)], update(10, old.epoch))
        .await
        .ctx("commit by the lease holder")?;
    stores.checkpoints.release(&old).await.ctx("release")?;
    let new = stores
        .checkpoints
        .acquire(&name, "owner-2", ttl)
        .await
        .ctx("acquire by owner-2")?;
    ensure_eq!(
        new.epoch,
        old.epoch + 1,
        "epoch after another owner takes the lease"
    );
    match stores
        .reads
        .commit(vec![doc("a", 99), doc("z", 1)], update(30, old.epoch))
        .await
    {
        Err(Error::Fenced { current, .. }) => {
            ensure_eq!(current, new.epoch, "current epoch reported by Fenced")
        }
        other => {
            return Err(Failure(format!(
                "commit under a stale epoch: expected Fenced, got {other:?}"
            )))
        }
    }
    ensure_err!(
        stores
            .reads
            .commit(vec![doc("a", 98)], update(40, new.epoch + 1))
            .await,
        Error::InvalidInput { .. },
        "commit under an epoch never handed out"
    );
    ensure_eq!(
        stores.reads.get(&coll, "a").await.ctx("get")?,
        Some(Document::new("a", json!({"n": 1}))),
        "document after refused commits"
    );
    ensure_eq!(
        stores.reads.get(&coll, "z").await.ctx("get")?,
        None,
        "new document of a refused commit"
    );
    ensure_eq!(
        stores.checkpoints.load(&name).await.ctx("load")?,
        Some(checkpoint(10)),
        "checkpoint after refused commits"
    );
    stores
        .reads
        .commit(vec![doc("a", 2)], update(20, new.epoch))
        .await
        .ctx("commit by the new holder")?;
    ensure_eq!(
        stores.checkpoints.load(&name).await.ctx("load")?,
        Some(checkpoint(20)),
        "checkpoint after the new holder's commit"
    );
    Ok(Verdict::Passed)
}

/// A commit holding a bad change, or moving the checkpoint backwards, fails as a whole:
/// no change is applied and the checkpoint stays (item 65).
pub async fn failed_commit_changes_nothing(h: Arc<dyn Harness>) -> Outcome {
    let stores = h.stores();
    let ns = h.namespace();
    let (coll, name) = (ns.name("atomic"), ns.name("atomic-projection"));
    indexes(&*stores.reads, &coll, &[("n", FieldType::I64)]).await?;
    let update = |n: u64| CheckpointUpdate {
        name: name.clone(),
        checkpoint: checkpoint(n),
        lease_epoch: 0,
    };
    let up = |id: &str, body: serde_json::Value| Change::Upsert {
        collection: coll.clone(),
        document: Document::new(id, body),
    };
    stores
        .reads
        .commit(vec![up("keep", json!({"n": 1}))], update(10))
        .await
        .ctx("commit")?;
    ensure_err!(
        stores
            .reads
            .commit(
                vec![
                    up("fresh", json!({"n": 2})),
                    Change::Delete {
                        collection: coll.clone(),
                        id: "keep".into()
                    },
                    up("bad", json!({"n": "two"})),
                ],
                update(20),
            )
            .await,
        Error::InvalidInput { .. },
        "commit holding a mistyped document"
    );
    ensure_err!(
        stores
            .reads
            .commit(vec![up("fresh", json!({"n": 2}))], update(5))
            .await,
        Error::InvalidInput { .. },
        "commit moving the checkpoint backwards"
    );
    ensure_eq!(
        stores.reads.get(&coll, "fresh").await.ctx("get")?,
        None,
        "document of a failed commit"
    );
    ensure_eq!(
        stores.reads.get(&coll, "keep").await.ctx("get")?,
        Some(Document::new("keep", json!({"n": 1}))),
        "document a failed commit tried to delete"
    );
    ensure_eq!(
        stores.checkpoints.load(&name).await.ctx("load")?,
        Some(checkpoint(10)),
        "checkpoint after failed commits"
    );
    Ok(Verdict::Passed)
}

/// `drop_collection` removes the collection's documents and indexes (queries on its fields then
/// name `ensure_index`), leaves other collections alone, and the collection can be rebuilt
/// (item 70).
pub async fn drop_collection_removes_documents_and_indexes(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().reads.clone();
    let ns = h.namespace();
    let (coll, other) = (ns.name("dropped"), ns.name("kept"));
    for c in [&coll, &other] {
        indexes(&*store, c, &[("n", FieldType::I64)]).await?;
        store
            .upsert_batch(
                c,
                (0..5)
                    .map(|i| Document::new(format!("d{i}"), json!({ "n": i })))
                    .collect(),
            )
            .await
            .ctx("upsert_batch")?;
    }
    store.drop_collection(&coll).await.ctx("drop_collection")?;
    ensure_eq!(
        store.get(&coll, "d1").await.ctx("get")?,
        None,
        "document of a dropped collection"
    );
    ensure_eq!(
        store.count(&coll, &[]).await.ctx("count")?,
        0,
        "documents of a dropped collection"
    );
    match store
        .query(&coll, &Query::new().filter(Filter::eq("n", Value::I64(1))))
        .await
    {
        Err(Error::InvalidInput { reason }) if reason.contains("ensure_index") => {}
        other => return Err(Failure(format!(
            "query on a dropped collection's former index: expected InvalidInput naming ensure_index, got {other:?}"
        ))),
    }
    ensure_eq!(
        store.count(&other, &[]).await.ctx("count")?,
        5,
        "documents of another collection"
    );
    store.drop_collection(&coll).await.ctx("drop_collection again")?;
    store
        .ensure_index(&coll, "n", FieldType::Str)
        .await
        .ctx("ensure_index with another type after drop")?;
    store
        .upsert(&coll, Document::new("s", json!({"n": "now a string"})))
        .await
        .ctx("upsert after drop")?;
    let q = Query::new().filter(Filter::prefix("n", "now"));
    ensure_eq!(
        ids(&query_all(&*store, &coll, &q).await?),
        vec!["s".to_owned()],
        "rebuilt collection"
    );
    Ok(Verdict::Passed)
}

/// Collection and field names outside the portable subset (`cqrs_core::validate_collection`,
/// `cqrs_core::validate_field`), bodies holding NUL characters and expiries outside years 1 to
/// 9999 are refused with InvalidInput on every backend, and nothing is stored.
pub async fn unportable_names_and_bodies_are_refused(h: Arc<dyn Harness>) -> Outcome {
    let rs = &*h.stores().reads;
    let col = h.namespace().name("names");
    for bad in ["a.b", "a{b}", "x y", ""] {
        ensure_err!(
            rs.upsert(bad, Document::new("d", json!({}))).await,
            Error::InvalidInput { .. },
            "collection name {bad:?}"
        );
    }
    for bad in ["a.b", "$x", "2x", "a-b", ""] {
        ensure_err!(
            rs.ensure_index(&col, bad, FieldType::I64).await,
            Error::InvalidInput { .. },
            "field name {bad:?}"
        );
    }
    let nul = Document::new("d", json!({ "text": "a\u{0}b" }));
    ensure_err!(
        rs.upsert(&col, nul).await,
        Error::InvalidInput { .. },
        "a body holding a NUL character"
    );
    let far = Document::new("d", json!({})).expires_at(Timestamp::from_millis(i64::MAX));
    ensure_err!(
        rs.upsert(&col, far).await,
        Error::InvalidInput { .. },
        "an expiry after year 9999"
    );
    ensure_eq!(rs.get(&col, "d").await.ctx("get")?, None, "nothing stored");
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __read_store_tests {
    ($factory:expr) => {
        $crate::__tests!(
            $factory,
            read_store,
            [
                upsert_is_idempotent,
                upsert_replaces_and_reindexes,
                get_and_delete,
                ensure_index_is_idempotent_and_typed,
                mistyped_upsert_is_refused,
                upsert_batch_is_all_or_nothing,
                unindexed_query_names_ensure_index,
                equality_query,
                range_query_bounds_and_directions,
                string_queries_compare_bytewise,
                keyset_paging_both_directions,
                count_with_filters,
                missing_or_null_fields_are_not_indexed,
                queries_match_the_reference,
                expired_documents_are_hidden_and_swept,
                commit_applies_changes_and_checkpoint,
                commit_with_stale_epoch_changes_nothing,
                failed_commit_changes_nothing,
                drop_collection_removes_documents_and_indexes,
                unportable_names_and_bodies_are_refused,
            ]
        );
    };
}
