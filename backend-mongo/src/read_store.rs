//! The read-model store: one MongoDB collection per read-model collection
//! (`<prefix>rm_<name>`), typed copies of indexed fields under `f` (see [`crate::query`]),
//! expiry by a TTL index plus filtering on read, and the field registry in the meta
//! collection.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use bson::{doc, Bson, DateTime, Document as BsonDocument};
use cqrs_core::{
    read_model::{validate_collection, validate_field},
    Change, CheckpointUpdate, Cursor, Document, Error, FieldType, Filter, Query, QueryPage, Result,
    Timestamp, Value,
};

use crate::{
    backend::{unit_of_work, MongoBackend, Tx},
    error,
    indexes::{self, Coll},
    mapping::keys_allowed,
    query::{self, path, value_bson, value_of},
};

fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::I64 => "i64",
        FieldType::Str => "str",
        FieldType::Bool => "bool",
        FieldType::Time => "time",
    }
}

fn type_of(name: &str) -> Result<FieldType> {
    match name {
        "i64" => Ok(FieldType::I64),
        "str" => Ok(FieldType::Str),
        "bool" => Ok(FieldType::Bool),
        "time" => Ok(FieldType::Time),
        other => Err(Error::corrupt(format!(
            "unknown field type {other:?} in the index registry"
        ))),
    }
}

fn registry_id(collection: &str) -> String {
    format!("rm:{collection}")
}

/// The body as an embedded document when that round-trips exactly, else as JSON text.
pub(crate) fn body_to_bson(body: &serde_json::Value) -> (&'static str, Bson) {
    if let Ok(Bson::Document(d)) = bson::to_bson(body) {
        if keys_allowed(&d) && Bson::Document(d.clone()).into_relaxed_extjson() == *body {
            return ("b", Bson::Document(d));
        }
    }
    ("bs", Bson::String(body.to_string()))
}

/// The stored form of a document: body, expiry and typed copies of its indexed fields.
///
/// # Errors
/// [`Error::InvalidInput`] for a document [`Document::validate`] refuses.
pub(crate) fn stored(document: &Document, indexes: &BTreeMap<String, FieldType>) -> Result<BsonDocument> {
    document.validate(indexes)?;
    let (key, body) = body_to_bson(&document.body);
    let mut typed = BsonDocument::new();
    for (field, ty) in indexes {
        if let Some(v) = Value::from_json(field, document.field(field), *ty)? {
            typed.insert(field.clone(), value_bson(&v));
        }
    }
    let mut d = doc! { "_id": document.id.as_str(), key: body, "f": typed };
    if let Some(at) = document.expires_at {
        d.insert("x", DateTime::from_millis(at.as_millis()));
    }
    Ok(d)
}

/// A document from its stored form.
pub(crate) fn document_from(d: &BsonDocument) -> Result<Document> {
    let id = d
        .get_str("_id")
        .map_err(|_| Error::corrupt("read-model document without a string id"))?
        .to_owned();
    let body = if let Ok(b) = d.get_document("b") {
        Bson::Document(b.clone()).into_relaxed_extjson()
    } else {
        let text = d
            .get_str("bs")
            .map_err(|_| Error::corrupt(format!("read-model document {id:?} has no body")))?;
        serde_json::from_str(text).map_err(|e| Error::corrupt(format!("read-model document {id:?}: {e}")))?
    };
    let expires_at = d
        .get_datetime("x")
        .ok()
        .map(|t| Timestamp::from_millis(t.timestamp_millis()));
    Ok(Document { id, body, expires_at })
}

impl MongoBackend {
    /// The typed indexes of a collection.
    pub(crate) async fn indexes_of(
        &self,
        tx: &mut Tx,
        collection: &str,
    ) -> Result<BTreeMap<String, FieldType>> {
        let d = tx
            .find_one(
                &self.coll(Coll::Meta),
                doc! { "_id": registry_id(collection) },
                None,
            )
            .await
            .map_err(error::map)?;
        let mut out = BTreeMap::new();
        if let Some(fields) = d.as_ref().and_then(|d| d.get_document("fields").ok()) {
            for (k, v) in fields {
                let ty = v.as_str().ok_or_else(|| Error::corrupt("index registry"))?;
                out.insert(k.clone(), type_of(ty)?);
            }
        }
        Ok(out)
    }

    /// Creates the TTL index of a read-model collection once per process.
    async fn ensure_ttl(&self, collection: &str) -> Result<()> {
        let known = self
            .inner
            .ttl_ready
            .lock()
            .map(|s| s.contains(collection))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        self.read_model(collection)
            .create_index(indexes::read_model_ttl())
            .await
            .map_err(error::map)?;
        if let Ok(mut s) = self.inner.ttl_ready.lock() {
            s.insert(collection.to_owned());
        }
        Ok(())
    }

    async fn apply_in(&self, tx: &mut Tx, change: &Change) -> Result<()> {
        match change {
            Change::Upsert { collection, document } => {
                validate_collection(collection)?;
                let indexes = self.indexes_of(tx, collection).await?;
                let d = stored(document, &indexes)?;
                self.check_size(&d)?;
                tx.replace_one(
                    &self.read_model(collection),
                    doc! { "_id": document.id.as_str() },
                    d,
                )
                .await
                .map_err(error::map)?;
            }
            Change::Delete { collection, id } => {
                validate_collection(collection)?;
                tx.delete_many(&self.read_model(collection), doc! { "_id": id.as_str() })
                    .await
                    .map_err(error::map)?;
            }
        }
        Ok(())
    }

    fn check_size(&self, d: &BsonDocument) -> Result<()> {
        let mut buf = Vec::new();
        d.to_writer(&mut buf)
            .map_err(|e| Error::invalid(format!("document cannot be encoded as BSON: {e}")))?;
        self.inner.limits.check_document(buf.len())
    }

    async fn commit_in(&self, tx: &mut Tx, changes: &[Change], cp: &CheckpointUpdate) -> Result<()> {
        // Touch the checkpoint record first: a concurrent acquire or save of this name
        // then conflicts with this transaction, so the epoch checked here is the epoch at
        // commit time.
        let applied = self.save_in(tx, &cp.name, &cp.checkpoint, cp.lease_epoch).await?;
        if !applied {
            return Err(Error::unavailable(
                cqrs_core::Outcome::NotSent,
                "the checkpoint changed concurrently; retrying",
            ));
        }
        for c in changes {
            self.apply_in(tx, c).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl cqrs_core::ReadStore for MongoBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", collection, field, ?ty))]
    async fn ensure_index(&self, collection: &str, field: &str, ty: FieldType) -> Result<()> {
        self.open()?;
        validate_collection(collection)?;
        validate_field(field)?;
        let mut tx = Tx::plain();
        let existing = self.indexes_of(&mut tx, collection).await?;
        match existing.get(field) {
            Some(t) if *t != ty => {
                return Err(Error::invalid(format!(
                    "field {field:?} of {collection:?} is already indexed as {t:?}, not {ty:?}"
                )))
            }
            Some(_) => {}
            None => {
                let coll = self.read_model(collection);
                let docs = tx.find(&coll, doc! {}, None, None).await.map_err(error::map)?;
                let mut typed = Vec::new();
                for d in &docs {
                    let document = document_from(d)?;
                    let v = Value::from_json(field, document.field(field), ty)?;
                    typed.push((document.id, v));
                }
                let set = doc! { "$set": { format!("fields.{field}"): type_name(ty) } };
                let r = self
                    .coll(Coll::Meta)
                    .update_one(
                        doc! { "_id": registry_id(collection), format!("fields.{field}"): { "$exists": false } },
                        set,
                    )
                    .upsert(true)
                    .await;
                if let Err(e) = r {
                    if !error::is_duplicate_key(&e) {
                        return Err(error::map(e));
                    }
                    // Registered concurrently: the registry decides.
                    let now = self.indexes_of(&mut tx, collection).await?;
                    if now.get(field) != Some(&ty) {
                        return Err(Error::invalid(format!(
                            "field {field:?} of {collection:?} was indexed concurrently with another type"
                        )));
                    }
                }
                for (id, v) in typed {
                    if let Some(v) = v {
                        coll.update_one(
                            doc! { "_id": id },
                            doc! { "$set": { path(field): value_bson(&v) } },
                        )
                        .await
                        .map_err(error::map)?;
                    }
                }
            }
        }
        self.read_model(collection)
            .create_index(indexes::read_model_field(field))
            .await
            .map_err(error::map)?;
        self.ensure_ttl(collection).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", collection, id = %document.id))]
    async fn upsert(&self, collection: &str, document: Document) -> Result<()> {
        self.open()?;
        validate_collection(collection)?;
        self.ensure_ttl(collection).await?;
        self.apply_in(
            &mut Tx::plain(),
            &Change::Upsert {
                collection: collection.to_owned(),
                document,
            },
        )
        .await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", collection, count = documents.len()))]
    async fn upsert_batch(&self, collection: &str, documents: Vec<Document>) -> Result<()> {
        self.open()?;
        validate_collection(collection)?;
        self.ensure_ttl(collection).await?;
        let indexes = self.indexes_of(&mut Tx::plain(), collection).await?;
        for d in &documents {
            self.check_size(&stored(d, &indexes)?)?;
        }
        let changes: Vec<Change> = documents
            .into_iter()
            .map(|document| Change::Upsert {
                collection: collection.to_owned(),
                document,
            })
            .collect();
        unit_of_work!(self, |tx| {
            let mut result = Ok(());
            for c in &changes {
                if let Err(e) = self.apply_in(&mut tx, c).await {
                    result = Err(e);
                    break;
                }
            }
            result
        })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", collection, id))]
    async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>> {
        self.open()?;
        validate_collection(collection)?;
        let now = self.inner.clock.now();
        let mut filter = query::unexpired(now);
        filter.insert("_id", id);
        Tx::plain()
            .find_one(&self.read_model(collection), filter, None)
            .await
            .map_err(error::map)?
            .as_ref()
            .map(document_from)
            .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", collection, id))]
    async fn delete(&self, collection: &str, id: &str) -> Result<bool> {
        self.open()?;
        validate_collection(collection)?;
        let now = self.inner.clock.now();
        let removed = self
            .read_model(collection)
            .find_one_and_delete(doc! { "_id": id })
            .await
            .map_err(error::map)?;
        Ok(match removed {
            Some(d) => !document_from(&d)?.is_expired(now),
            None => false,
        })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", collection))]
    async fn query(&self, collection: &str, query: &Query) -> Result<QueryPage> {
        self.open()?;
        validate_collection(collection)?;
        let mut tx = Tx::plain();
        let indexes = self.indexes_of(&mut tx, collection).await?;
        let t = query::translate(query, &indexes, self.inner.clock.now())?;
        let docs = tx
            .find(
                &self.read_model(collection),
                t.filter,
                Some(t.sort),
                Some(t.fetch),
            )
            .await
            .map_err(error::map)?;
        let more = docs.len() > query.limit;
        let mut documents = Vec::with_capacity(docs.len().min(query.limit));
        let mut last_value = None;
        for d in docs.iter().take(query.limit) {
            last_value = t.sort_field.as_ref().and_then(|(field, ty)| {
                d.get_document("f")
                    .ok()
                    .and_then(|f| f.get(field))
                    .and_then(|b| value_of(b, *ty))
            });
            documents.push(document_from(d)?);
        }
        let next = if more {
            documents.last().map(|d| Cursor {
                value: last_value.clone(),
                id: d.id.clone(),
            })
        } else {
            None
        };
        Ok(QueryPage { documents, next })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", collection))]
    async fn count(&self, collection: &str, filters: &[Filter]) -> Result<u64> {
        self.open()?;
        validate_collection(collection)?;
        let indexes = self.indexes_of(&mut Tx::plain(), collection).await?;
        let filter = query::count_filter(filters, &indexes, self.inner.clock.now())?;
        self.read_model(collection)
            .count_documents(filter)
            .await
            .map_err(error::map)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", name = %checkpoint.name, epoch = checkpoint.lease_epoch, count = changes.len()))]
    async fn commit(&self, changes: Vec<Change>, checkpoint: CheckpointUpdate) -> Result<()> {
        self.open()?;
        if !self.inner.replica_set {
            return Err(Error::Unsupported {
                capability: "ReadStore::commit needs a MongoDB replica set (transactions)",
            });
        }
        let mut collections = HashSet::new();
        for c in &changes {
            let (Change::Upsert { collection, .. } | Change::Delete { collection, .. }) = c;
            validate_collection(collection)?;
            collections.insert(collection.clone());
        }
        // Collections (and their TTL index) are created outside the transaction.
        for c in &collections {
            self.ensure_ttl(c).await?;
        }
        unit_of_work!(self, |tx| self.commit_in(&mut tx, &changes, &checkpoint).await)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", collection))]
    async fn sweep_expired(&self, collection: &str) -> Result<u64> {
        self.open()?;
        validate_collection(collection)?;
        let now = DateTime::from_millis(self.inner.clock.now().as_millis());
        self.read_model(collection)
            .delete_many(doc! { "x": { "$lte": now } })
            .await
            .map(|r| r.deleted_count)
            .map_err(error::map)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", collection))]
    async fn drop_collection(&self, collection: &str) -> Result<()> {
        self.open()?;
        validate_collection(collection)?;
        self.read_model(collection).drop().await.map_err(error::map)?;
        self.coll(Coll::Meta)
            .delete_one(doc! { "_id": registry_id(collection) })
            .await
            .map_err(error::map)?;
        if let Ok(mut s) = self.inner.ttl_ready.lock() {
            s.remove(collection);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn idx() -> BTreeMap<String, FieldType> {
        BTreeMap::from([
            ("age".to_owned(), FieldType::I64),
            ("name".to_owned(), FieldType::Str),
        ])
    }

    #[test]
    fn documents_store_typed_copies_and_round_trip() {
        let d = Document::new(
            "u1",
            json!({ "age": 30, "name": "ann", "n": null, "x": [1.5, true] }),
        )
        .expires_at(Timestamp::from_millis(99));
        let s = stored(&d, &idx()).unwrap();
        assert_eq!(
            s.get_document("f").unwrap(),
            &doc! { "age": 30_i64, "name": "ann" }
        );
        assert!(s.contains_key("b"));
        assert_eq!(s.get_datetime("x").unwrap().timestamp_millis(), 99);
        assert_eq!(document_from(&s).unwrap(), d);
    }

    #[test]
    fn missing_or_null_fields_are_not_indexed_and_odd_bodies_are_text() {
        let d = Document::new("u2", json!({ "name": null, "$odd.key": 1, "big": u64::MAX }));
        let s = stored(&d, &idx()).unwrap();
        assert_eq!(s.get_document("f").unwrap(), &doc! {});
        assert!(s.contains_key("bs"));
        assert_eq!(document_from(&s).unwrap(), d);
    }

    #[test]
    fn mistyped_indexed_fields_are_refused() {
        let d = Document::new("u3", json!({ "age": "old" }));
        assert!(matches!(stored(&d, &idx()), Err(Error::InvalidInput { .. })));
        assert_eq!(type_of(type_name(FieldType::Time)).unwrap(), FieldType::Time);
    }
}
