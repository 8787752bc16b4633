//! [`ReadStore`] for [`MemoryBackend`]: documents by collection, queried with the reference
//! semantics of [`Query::run`].

use std::collections::BTreeMap;

use async_trait::async_trait;
use cqrs_core::{
    read_model::validate_filters, validate_name, Change, CheckpointUpdate, Document, Error, FieldType,
    Filter, Limits, Query, QueryPage, ReadStore, Result, Value,
};

use crate::state::{count, Collection, Inner};
use crate::MemoryBackend;

/// Validates a collection name (the portable subset every backend accepts).
fn check_collection(collection: &str) -> Result<()> {
    cqrs_core::validate_collection(collection)
}

/// Validates a document against a collection's indexes and the document size limit.
fn check_document(limits: &Limits, indexes: &BTreeMap<String, FieldType>, document: &Document) -> Result<()> {
    document.validate(indexes)?;
    let body = serde_json::to_vec(&document.body).map_err(|e| Error::codec("read-model document", e))?;
    limits.check_document(document.id.len().saturating_add(body.len()))
}

/// The indexes of a collection (none if it does not exist).
fn indexes_of<'a>(inner: &'a Inner, collection: &str) -> Option<&'a BTreeMap<String, FieldType>> {
    inner.collections.get(collection).map(|c| &c.indexes)
}

impl Inner {
    /// Validates every change (names, documents against their collection's indexes, sizes)
    /// without applying any.
    fn check_changes(&self, limits: &Limits, changes: &[Change]) -> Result<()> {
        let none = BTreeMap::new();
        for change in changes {
            match change {
                Change::Upsert { collection, document } => {
                    check_collection(collection)?;
                    let indexes = indexes_of(self, collection).unwrap_or(&none);
                    check_document(limits, indexes, document)?;
                }
                Change::Delete { collection, id } => {
                    check_collection(collection)?;
                    validate_name("document id", id)?;
                }
            }
        }
        Ok(())
    }

    /// Applies changes already checked by [`Inner::check_changes`].
    fn apply_changes(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Upsert { collection, document } => {
                    self.collections
                        .entry(collection)
                        .or_default()
                        .documents
                        .insert(document.id.clone(), document);
                }
                Change::Delete { collection, id } => {
                    if let Some(c) = self.collections.get_mut(&collection) {
                        c.documents.remove(&id);
                    }
                }
            }
        }
    }
}

#[async_trait]
impl ReadStore for MemoryBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", collection = %collection, field = %field, ty = ?ty))]
    async fn ensure_index(&self, collection: &str, field: &str, ty: FieldType) -> Result<()> {
        self.begin().await?;
        check_collection(collection)?;
        cqrs_core::validate_field(field)?;
        let now = self.clock.now();
        let mut inner = self.lock()?;
        let c = inner.collections.entry(collection.to_owned()).or_default();
        match c.indexes.get(field) {
            Some(&declared) if declared == ty => return Ok(()),
            Some(&declared) => {
                return Err(Error::invalid(format!(
                "field {field:?} of collection {collection:?} is already indexed as {declared:?}, not {ty:?}"
            )))
            }
            None => {}
        }
        for document in c.documents.values().filter(|d| !d.is_expired(now)) {
            Value::from_json(field, document.field(field), ty)?;
        }
        c.indexes.insert(field.to_owned(), ty);
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", collection = %collection, id = %document.id))]
    async fn upsert(&self, collection: &str, document: Document) -> Result<()> {
        self.begin().await?;
        check_collection(collection)?;
        let mut inner = self.lock()?;
        let none = BTreeMap::new();
        check_document(
            &self.limits,
            indexes_of(&inner, collection).unwrap_or(&none),
            &document,
        )?;
        let c = inner.collections.entry(collection.to_owned()).or_default();
        c.documents.insert(document.id.clone(), document);
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", collection = %collection, documents = documents.len()))]
    async fn upsert_batch(&self, collection: &str, documents: Vec<Document>) -> Result<()> {
        self.begin().await?;
        check_collection(collection)?;
        let mut inner = self.lock()?;
        let none = BTreeMap::new();
        let indexes = indexes_of(&inner, collection).unwrap_or(&none);
        for document in &documents {
            check_document(&self.limits, indexes, document)?;
        }
        let c = inner.collections.entry(collection.to_owned()).or_default();
        for document in documents {
            c.documents.insert(document.id.clone(), document);
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", collection = %collection, id = %id))]
    async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>> {
        self.begin().await?;
        check_collection(collection)?;
        validate_name("document id", id)?;
        let now = self.clock.now();
        let inner = self.lock()?;
        Ok(inner
            .collections
            .get(collection)
            .and_then(|c| c.documents.get(id))
            .filter(|d| !d.is_expired(now))
            .cloned())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", collection = %collection, id = %id))]
    async fn delete(&self, collection: &str, id: &str) -> Result<bool> {
        self.begin().await?;
        check_collection(collection)?;
        validate_name("document id", id)?;
        let now = self.clock.now();
        let mut inner = self.lock()?;
        let removed = inner
            .collections
            .get_mut(collection)
            .and_then(|c| c.documents.remove(id));
        Ok(removed.is_some_and(|d| !d.is_expired(now)))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", collection = %collection))]
    async fn query(&self, collection: &str, query: &Query) -> Result<QueryPage> {
        self.begin().await?;
        check_collection(collection)?;
        let now = self.clock.now();
        let inner = self.lock()?;
        let none = Collection::default();
        let c = inner.collections.get(collection).unwrap_or(&none);
        let live = c.documents.values().filter(|d| !d.is_expired(now));
        let (documents, next) = query.run(&c.indexes, live)?;
        Ok(QueryPage { documents, next })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", collection = %collection))]
    async fn count(&self, collection: &str, filters: &[Filter]) -> Result<u64> {
        self.begin().await?;
        check_collection(collection)?;
        let now = self.clock.now();
        let inner = self.lock()?;
        let none = Collection::default();
        let c = inner.collections.get(collection).unwrap_or(&none);
        validate_filters(filters, &c.indexes)?;
        let n = c
            .documents
            .values()
            .filter(|d| !d.is_expired(now))
            .filter(|d| {
                filters
                    .iter()
                    .all(|f| c.indexes.get(f.field()).is_some_and(|&ty| f.matches(d, ty)))
            })
            .count();
        Ok(count(n))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", name = %checkpoint.name, epoch = checkpoint.lease_epoch, changes = changes.len()))]
    async fn commit(&self, changes: Vec<Change>, checkpoint: CheckpointUpdate) -> Result<()> {
        self.begin().await?;
        let mut inner = self.lock()?;
        inner.check_checkpoint_write(&checkpoint.name, &checkpoint.checkpoint, checkpoint.lease_epoch)?;
        inner.check_changes(&self.limits, &changes)?;
        inner.apply_changes(changes);
        inner.checkpoints.insert(checkpoint.name, checkpoint.checkpoint);
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", collection = %collection))]
    async fn sweep_expired(&self, collection: &str) -> Result<u64> {
        self.begin().await?;
        check_collection(collection)?;
        let now = self.clock.now();
        let mut inner = self.lock()?;
        let Some(c) = inner.collections.get_mut(collection) else {
            return Ok(0);
        };
        let before = c.documents.len();
        c.documents.retain(|_, d| !d.is_expired(now));
        Ok(count(before - c.documents.len()))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", collection = %collection))]
    async fn drop_collection(&self, collection: &str) -> Result<()> {
        self.begin().await?;
        check_collection(collection)?;
        self.lock()?.collections.remove(collection);
        Ok(())
    }
}
