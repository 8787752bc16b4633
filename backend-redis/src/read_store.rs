//! [`ReadStore`] for [`RedisBackend`].
//!
//! Per collection (all under the read-model hash tag, one slot): a hash of documents
//! (`id -> document JSON`), a hash of each document's index entries, one lexicographic
//! sorted set holding every index entry `field \0 encoded value \0 id`, a hash of index
//! declarations, an expiry sorted set (integer milliseconds) and a revision counter.
//! Integers and times are encoded as sign-flipped big-endian hex, so lexicographic order is
//! numeric order for every `i64` (no floating-point scores). Queries narrow the candidates
//! with one index range and evaluate the portable subset exactly as `Query::run` does.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use async_trait::async_trait;
use cqrs_core::{
    lease::{check_epoch, check_forward},
    read_model::validate_filters,
    validate_name, Change, CheckpointUpdate, Document, Error, FieldType, Filter, Query, QueryPage, ReadStore,
    Result, Value,
};
use redis::Value as RedisValue;

use crate::conn::reply;
use crate::error::unexpected;
use crate::{scripts, RedisBackend};

/// Attempts of an optimistic read-validate-write cycle before giving up.
const MAX_ATTEMPTS: usize = 32;

/// Declared indexes of a collection.
pub(crate) type Indexes = BTreeMap<String, FieldType>;

fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::I64 => "i64",
        FieldType::Str => "str",
        FieldType::Bool => "bool",
        FieldType::Time => "time",
    }
}

fn parse_type(s: &str) -> Result<FieldType> {
    match s {
        "i64" => Ok(FieldType::I64),
        "str" => Ok(FieldType::Str),
        "bool" => Ok(FieldType::Bool),
        "time" => Ok(FieldType::Time),
        other => Err(Error::corrupt(format!("index type {other:?}"))),
    }
}

/// An `i64` as 16 hex digits whose lexicographic order is the numeric order.
fn ordered_hex(i: i64) -> String {
    format!("{:016x}", u64::from_be_bytes(i.to_be_bytes()) ^ (1 << 63))
}

fn encode_value(v: &Value) -> String {
    match v {
        Value::I64(i) => ordered_hex(*i),
        Value::Time(t) => ordered_hex(t.as_millis()),
        Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
        Value::Str(s) => s.clone(),
    }
}

/// The index entry of `id` for `field` holding `v`.
fn member(field: &str, v: &Value, id: &str) -> String {
    format!("{field}\0{}\0{id}", encode_value(v))
}

/// A document's index entries under `indexes`.
fn members(indexes: &Indexes, doc: &Document) -> Vec<String> {
    indexes
        .iter()
        .filter_map(|(field, ty)| doc.value(field, *ty).map(|v| member(field, &v, &doc.id)))
        .collect()
}

/// `ZRANGEBYLEX` bounds that select a superset of the entries passing `filter`.
fn lex_bounds(filter: &Filter, ty: FieldType) -> (Vec<u8>, Vec<u8>) {
    let base = format!("{}\0", filter.field()).into_bytes();
    let cat = |mark: u8, parts: &[&[u8]]| -> Vec<u8> {
        let mut out = vec![mark];
        out.extend_from_slice(&base);
        for p in parts {
            out.extend_from_slice(p);
        }
        out
    };
    let fixed = ty != FieldType::Str;
    let all_max = {
        let mut out = vec![b'('];
        out.extend_from_slice(filter.field().as_bytes());
        out.push(1);
        out
    };
    match filter {
        Filter::Eq { value, .. } => {
            let e = encode_value(value);
            (
                cat(b'[', &[e.as_bytes(), b"\0"]),
                cat(b'[', &[e.as_bytes(), b"\0\xff"]),
            )
        }
        Filter::Prefix { prefix, .. } => (
            cat(b'[', &[prefix.as_bytes()]),
            cat(b'(', &[prefix.as_bytes(), b"\xff"]),
        ),
        Filter::Range { lower, upper, .. } => {
            let min = match lower {
                Bound::Included(v) => cat(b'[', &[encode_value(v).as_bytes()]),
                Bound::Excluded(v) if fixed => cat(b'[', &[encode_value(v).as_bytes(), b"\x01"]),
                Bound::Excluded(v) => cat(b'[', &[encode_value(v).as_bytes()]),
                Bound::Unbounded => cat(b'[', &[]),
            };
            let max = match upper {
                Bound::Included(v) if fixed => cat(b'(', &[encode_value(v).as_bytes(), b"\x01"]),
                Bound::Excluded(v) if fixed => cat(b'(', &[encode_value(v).as_bytes(), b"\0"]),
                Bound::Included(v) | Bound::Excluded(v) => {
                    cat(b'[', &[encode_value(v).as_bytes(), b"\0\xff"])
                }
                Bound::Unbounded => all_max,
            };
            (min, max)
        }
    }
}

fn check_collection(collection: &str) -> Result<()> {
    cqrs_core::validate_collection(collection)
}

fn document_json(doc: &Document) -> Result<String> {
    serde_json::to_string(doc).map_err(|e| Error::codec("read-model document", e))
}

fn check_document(backend: &RedisBackend, indexes: &Indexes, document: &Document) -> Result<()> {
    document.validate(indexes)?;
    let body = serde_json::to_vec(&document.body).map_err(|e| Error::codec("read-model document", e))?;
    backend
        .limits
        .check_document(document.id.len().saturating_add(body.len()))
}

fn parse_document(bytes: &[u8]) -> Result<Document> {
    serde_json::from_slice(bytes).map_err(|e| Error::corrupt(format!("read-model document: {e}")))
}

/// The six keys of a collection, in the order the scripts take them.
pub(crate) fn collection_keys(backend: &RedisBackend, collection: &str) -> [String; 6] {
    ["d", "m", "x", "ix", "exp", "rev"].map(|kind| backend.keys.read(kind, collection))
}

impl RedisBackend {
    pub(crate) async fn indexes(&self, collection: &str) -> Result<Indexes> {
        let [_, _, _, ix, _, _] = collection_keys(self, collection);
        let answer = self.conn.run(redis::cmd("HGETALL").arg(ix)).await?;
        parse_indexes(answer)
    }

    /// Unexpired documents that may pass `filters` (a superset, narrowed by one index).
    async fn candidates(
        &self,
        collection: &str,
        filters: &[Filter],
        indexes: &Indexes,
    ) -> Result<Vec<Document>> {
        let [d, _, x, _, _, _] = collection_keys(self, collection);
        let pick = filters
            .iter()
            .find(|f| !matches!(f, Filter::Eq { .. }))
            .or_else(|| filters.first());
        let raw: Vec<RedisValue> = match pick.and_then(|f| indexes.get(f.field()).map(|t| (f, *t))) {
            None => {
                let all = reply::array(self.conn.run(redis::cmd("HGETALL").arg(&d)).await?)?;
                all.into_iter().skip(1).step_by(2).collect()
            }
            Some((f, ty)) => {
                let (min, max) = lex_bounds(f, ty);
                let entries = reply::array(
                    self.conn
                        .run(redis::cmd("ZRANGEBYLEX").arg(&x).arg(min).arg(max))
                        .await?,
                )?;
                let mut ids = BTreeSet::new();
                for e in entries {
                    let e = reply::bytes(e)?;
                    let at = e.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
                    ids.insert(e[at..].to_vec());
                }
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut hmget = redis::cmd("HMGET");
                hmget.arg(&d);
                for id in &ids {
                    hmget.arg(id.as_slice());
                }
                reply::array(self.conn.run(&hmget).await?)?
            }
        };
        let now = self.clock.now();
        let mut docs = Vec::with_capacity(raw.len());
        for v in raw {
            if let Some(bytes) = reply::opt_bytes(v)? {
                let doc = parse_document(&bytes)?;
                if !doc.is_expired(now) {
                    docs.push(doc);
                }
            }
        }
        Ok(docs)
    }

    /// Applies read-model changes and, if given, the checkpoint write, atomically; returns
    /// how many deleted documents existed (unexpired).
    pub(crate) async fn apply(
        &self,
        changes: &[Change],
        checkpoint: Option<&CheckpointUpdate>,
    ) -> Result<u64> {
        let mut collections: Vec<&str> = Vec::new();
        for change in changes {
            let (Change::Upsert { collection, .. } | Change::Delete { collection, .. }) = change;
            if !collections.contains(&collection.as_str()) {
                collections.push(collection);
            }
        }
        let cp_key = self.keys.read_global("cp");
        let epoch_key = self.keys.read_global("le");
        for _ in 0..MAX_ATTEMPTS {
            // Read what the checks need, in one round trip (one slot).
            let mut pipe = redis::pipe();
            for c in &collections {
                pipe.cmd("HGETALL").arg(self.keys.read("ix", c));
            }
            if let Some(cp) = checkpoint {
                pipe.cmd("HGET").arg(&cp_key).arg(&cp.name);
                pipe.cmd("HGET").arg(&epoch_key).arg(&cp.name);
            }
            let mut answers = if collections.is_empty() && checkpoint.is_none() {
                Vec::new().into_iter()
            } else {
                self.conn.run_pipe(&pipe).await?.into_iter()
            };
            let mut indexes = Vec::with_capacity(collections.len());
            for _ in &collections {
                indexes.push(parse_indexes(answers.next().unwrap_or(RedisValue::Nil))?);
            }
            let mut stored_cp = String::new();
            let mut epoch = 0u64;
            if let Some(cp) = checkpoint {
                stored_cp = reply::opt_string(answers.next().unwrap_or(RedisValue::Nil))?.unwrap_or_default();
                epoch = reply::opt_string(answers.next().unwrap_or(RedisValue::Nil))?
                    .map(|e| e.parse().map_err(|_| Error::corrupt("a lease epoch")))
                    .transpose()?
                    .unwrap_or(0);
                check_epoch(&cp.name, cp.lease_epoch, epoch)?;
                if !stored_cp.is_empty() {
                    let stored = cqrs_core::Checkpoint::from_json(&stored_cp)?;
                    check_forward(&cp.name, Some(&stored), &cp.checkpoint)?;
                }
            }
            // Validate every change before anything is sent.
            for change in changes {
                match change {
                    Change::Upsert { collection, document } => {
                        check_collection(collection)?;
                        let i = collections.iter().position(|c| c == collection).unwrap_or(0);
                        let none = Indexes::new();
                        check_document(self, indexes.get(i).unwrap_or(&none), document)?;
                    }
                    Change::Delete { collection, id } => {
                        check_collection(collection)?;
                        validate_name("document id", id)?;
                    }
                }
            }
            let mut inv = scripts::RM_APPLY.prepare_invoke();
            inv.key(&cp_key).key(&epoch_key);
            for c in &collections {
                for k in collection_keys(self, c) {
                    inv.key(k);
                }
            }
            match checkpoint {
                Some(cp) => inv
                    .arg(&cp.name)
                    .arg(&stored_cp)
                    .arg(epoch)
                    .arg(cp.checkpoint.to_json()),
                None => inv.arg("").arg("*").arg(0).arg(""),
            };
            inv.arg(self.clock.now().as_millis()).arg(collections.len());
            for ix in &indexes {
                inv.arg(ix.len());
                for (field, ty) in ix {
                    inv.arg(field).arg(type_name(*ty));
                }
            }
            inv.arg(changes.len());
            for change in changes {
                match change {
                    Change::Upsert { collection, document } => {
                        let i = collections.iter().position(|c| c == collection).unwrap_or(0);
                        let none = Indexes::new();
                        let list = members(indexes.get(i).unwrap_or(&none), document);
                        let list =
                            serde_json::to_string(&list).map_err(|e| Error::codec("index entries", e))?;
                        inv.arg(i + 1)
                            .arg("u")
                            .arg(&document.id)
                            .arg(document_json(document)?)
                            .arg(
                                document
                                    .expires_at
                                    .map(|t| t.as_millis().to_string())
                                    .unwrap_or_default(),
                            )
                            .arg(list);
                    }
                    Change::Delete { collection, id } => {
                        let i = collections.iter().position(|c| c == collection).unwrap_or(0);
                        inv.arg(i + 1).arg("d").arg(id).arg("").arg("").arg("[]");
                    }
                }
            }
            let (status, mut items) = reply::status(self.conn.script(&inv).await?)?;
            match status.as_str() {
                "ok" => return reply::next_u64(&mut items),
                "retry" => continue,
                other => return Err(unexpected(&format!("read-model commit answered {other:?}"))),
            }
        }
        Err(Error::backend(
            "redis",
            "read-model write kept racing with concurrent index or checkpoint changes",
        ))
    }
}

fn parse_indexes(v: RedisValue) -> Result<Indexes> {
    let mut out = Indexes::new();
    let items: Vec<RedisValue> = match v {
        RedisValue::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => reply::array(other)?,
    };
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.insert(reply::string(k)?, parse_type(&reply::string(v)?)?);
    }
    Ok(out)
}

#[async_trait]
impl ReadStore for RedisBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", collection = %collection, field = %field, ty = ?ty))]
    async fn ensure_index(&self, collection: &str, field: &str, ty: FieldType) -> Result<()> {
        let _call = self.begin()?;
        check_collection(collection)?;
        cqrs_core::validate_field(field)?;
        let [d, m, x, ix, _, rev] = collection_keys(self, collection);
        for _ in 0..MAX_ATTEMPTS {
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(&rev);
            pipe.cmd("HGETALL").arg(&ix);
            pipe.cmd("HGETALL").arg(&d);
            let mut answers = self.conn.run_pipe(&pipe).await?.into_iter();
            let revision = reply::opt_string(answers.next().unwrap_or(RedisValue::Nil))?.unwrap_or_default();
            let indexes = parse_indexes(answers.next().unwrap_or(RedisValue::Nil))?;
            match indexes.get(field) {
                Some(&declared) if declared == ty => return Ok(()),
                Some(&declared) => {
                    return Err(Error::invalid(format!(
                        "field {field:?} of collection {collection:?} is already indexed as {declared:?}, not {ty:?}"
                    )))
                }
                None => {}
            }
            let now = self.clock.now();
            let all = reply::array(answers.next().unwrap_or(RedisValue::Nil))?;
            let mut entries = Vec::new();
            for raw in all.into_iter().skip(1).step_by(2) {
                let doc = parse_document(&reply::bytes(raw)?)?;
                if doc.is_expired(now) {
                    continue;
                }
                if let Some(v) = Value::from_json(field, doc.field(field), ty)? {
                    entries.push((doc.id.clone(), member(field, &v, &doc.id)));
                }
            }
            let mut inv = scripts::RM_INDEX.prepare_invoke();
            inv.key(&d)
                .key(&m)
                .key(&x)
                .key(&ix)
                .key(&rev)
                .arg(&revision)
                .arg(field)
                .arg(type_name(ty));
            for (id, mbr) in &entries {
                inv.arg(id).arg(mbr);
            }
            let (status, mut items) = reply::status(self.conn.script(&inv).await?)?;
            match status.as_str() {
                "ok" => return Ok(()),
                "retry" => continue,
                "conflict" => {
                    let declared = reply::next_string(&mut items)?;
                    return Err(Error::invalid(format!(
                        "field {field:?} of collection {collection:?} is already indexed as {declared}, not {ty:?}"
                    )));
                }
                other => return Err(unexpected(&format!("ensure_index answered {other:?}"))),
            }
        }
        Err(Error::backend(
            "redis",
            "ensure_index kept racing with concurrent writes to the collection",
        ))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", collection = %collection, id = %document.id))]
    async fn upsert(&self, collection: &str, document: Document) -> Result<()> {
        let _call = self.begin()?;
        check_collection(collection)?;
        let change = Change::Upsert {
            collection: collection.to_owned(),
            document,
        };
        self.apply(std::slice::from_ref(&change), None).await.map(|_| ())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", collection = %collection, documents = documents.len()))]
    async fn upsert_batch(&self, collection: &str, documents: Vec<Document>) -> Result<()> {
        let _call = self.begin()?;
        check_collection(collection)?;
        let changes: Vec<Change> = documents
            .into_iter()
            .map(|document| Change::Upsert {
                collection: collection.to_owned(),
                document,
            })
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        self.apply(&changes, None).await.map(|_| ())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", collection = %collection, id = %id))]
    async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>> {
        let _call = self.begin()?;
        check_collection(collection)?;
        validate_name("document id", id)?;
        let [d, ..] = collection_keys(self, collection);
        let raw = reply::opt_bytes(self.conn.run(redis::cmd("HGET").arg(d).arg(id)).await?)?;
        let now = self.clock.now();
        Ok(raw
            .map(|b| parse_document(&b))
            .transpose()?
            .filter(|doc| !doc.is_expired(now)))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", collection = %collection, id = %id))]
    async fn delete(&self, collection: &str, id: &str) -> Result<bool> {
        let _call = self.begin()?;
        check_collection(collection)?;
        validate_name("document id", id)?;
        let change = Change::Delete {
            collection: collection.to_owned(),
            id: id.to_owned(),
        };
        Ok(self.apply(std::slice::from_ref(&change), None).await? > 0)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", collection = %collection))]
    async fn query(&self, collection: &str, query: &Query) -> Result<QueryPage> {
        let _call = self.begin()?;
        check_collection(collection)?;
        let indexes = self.indexes(collection).await?;
        query.validate(&indexes)?;
        let docs = self.candidates(collection, &query.filters, &indexes).await?;
        let (documents, next) = query.run(&indexes, docs.iter())?;
        Ok(QueryPage { documents, next })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", collection = %collection))]
    async fn count(&self, collection: &str, filters: &[Filter]) -> Result<u64> {
        let _call = self.begin()?;
        check_collection(collection)?;
        let indexes = self.indexes(collection).await?;
        validate_filters(filters, &indexes)?;
        let docs = self.candidates(collection, filters, &indexes).await?;
        let n = docs
            .iter()
            .filter(|d| {
                filters
                    .iter()
                    .all(|f| indexes.get(f.field()).is_some_and(|&ty| f.matches(d, ty)))
            })
            .count();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", name = %checkpoint.name, epoch = checkpoint.lease_epoch, changes = changes.len()))]
    async fn commit(&self, changes: Vec<Change>, checkpoint: CheckpointUpdate) -> Result<()> {
        let _call = self.begin()?;
        validate_name("checkpoint name", &checkpoint.name)?;
        self.apply(&changes, Some(&checkpoint)).await.map(|_| ())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", collection = %collection))]
    async fn sweep_expired(&self, collection: &str) -> Result<u64> {
        let _call = self.begin()?;
        check_collection(collection)?;
        let [d, m, x, _, exp, rev] = collection_keys(self, collection);
        let answer = self
            .conn
            .script(
                scripts::RM_SWEEP
                    .key(d)
                    .key(m)
                    .key(x)
                    .key(exp)
                    .key(rev)
                    .arg(self.clock.now().as_millis()),
            )
            .await?;
        reply::u64(answer)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", collection = %collection))]
    async fn drop_collection(&self, collection: &str) -> Result<()> {
        let _call = self.begin()?;
        check_collection(collection)?;
        let mut del = redis::cmd("UNLINK");
        for k in collection_keys(self, collection) {
            del.arg(k);
        }
        self.conn.run(&del).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_hex_keeps_numeric_order_beyond_doubles() {
        let values = [
            i64::MIN,
            -(1 << 53) - 1,
            -1,
            0,
            1,
            (1 << 53) + 1,
            (1 << 53) + 2,
            i64::MAX,
        ];
        for w in values.windows(2) {
            assert!(ordered_hex(w[0]) < ordered_hex(w[1]), "{} vs {}", w[0], w[1]);
        }
    }

    #[test]
    fn members_end_with_the_id() {
        let m = member("name", &Value::Str("a\0b".into()), "doc-1");
        let at = m.rfind('\0').unwrap();
        assert_eq!(&m[at + 1..], "doc-1");
    }
}
