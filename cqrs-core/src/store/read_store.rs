//! The read-model store trait.

use async_trait::async_trait;

use crate::{Change, Checkpoint, Cursor, Document, FieldType, Filter, Query, Result};

/// One page of query results.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryPage {
    /// The documents, in query order.
    pub documents: Vec<Document>,
    /// Pass as [`Query::after`] for the next page; `None` on the last.
    pub next: Option<Cursor>,
}

/// A checkpoint write that goes with a read-model commit, fenced by a lease epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointUpdate {
    /// The projection's name (the checkpoint's key).
    pub name: String,
    /// The new checkpoint: never behind the stored one.
    pub checkpoint: Checkpoint,
    /// The epoch of the caller's lease (0 when the projection runs without a lease).
    pub lease_epoch: u64,
}

/// Stores read-model documents in collections and serves the portable query subset (see
/// [`crate::read_model`]).
#[async_trait]
pub trait ReadStore: Send + Sync + std::fmt::Debug {
    /// Declares a typed index on a top-level field; idempotent. Existing documents are
    /// indexed.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] if the field is already indexed with another type or an
    /// existing document holds a value of another type.
    async fn ensure_index(&self, collection: &str, field: &str, ty: FieldType) -> Result<()>;

    /// Inserts or replaces a document.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a bad document or a mistyped indexed field;
    /// [`crate::Error::TooLarge`].
    async fn upsert(&self, collection: &str, document: Document) -> Result<()>;

    /// Inserts or replaces several documents, all or nothing.
    ///
    /// # Errors
    /// As [`ReadStore::upsert`].
    async fn upsert_batch(&self, collection: &str, documents: Vec<Document>) -> Result<()>;

    /// Reads a document; expired documents read as `None`.
    ///
    /// # Errors
    /// Backend errors only.
    async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>>;

    /// Deletes a document; returns whether it existed (and had not expired).
    ///
    /// # Errors
    /// Backend errors only.
    async fn delete(&self, collection: &str, id: &str) -> Result<bool>;

    /// Runs a query of the portable subset.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a query outside the subset or on a field without
    /// an index (the message names `ensure_index`).
    async fn query(&self, collection: &str, query: &Query) -> Result<QueryPage>;

    /// Counts the unexpired documents passing `filters`.
    ///
    /// # Errors
    /// As [`ReadStore::query`].
    async fn count(&self, collection: &str, filters: &[Filter]) -> Result<u64>;

    /// Applies `changes` and saves `checkpoint` in one atomic write, refused as a whole with
    /// [`crate::Error::Fenced`] when a newer lease epoch exists.
    ///
    /// # Errors
    /// [`crate::Error::Fenced`]; [`crate::Error::InvalidInput`] for a checkpoint that would
    /// move backwards or a bad change.
    async fn commit(&self, changes: Vec<Change>, checkpoint: CheckpointUpdate) -> Result<()>;

    /// Removes expired documents of a collection with their index entries; returns how many.
    ///
    /// # Errors
    /// Backend errors only.
    async fn sweep_expired(&self, collection: &str) -> Result<u64>;

    /// Removes a collection: its documents and indexes (for rebuilds).
    ///
    /// # Errors
    /// Backend errors only.
    async fn drop_collection(&self, collection: &str) -> Result<()>;
}
