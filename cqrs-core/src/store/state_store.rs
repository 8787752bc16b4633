//! The state store trait: current state of CRUD aggregates under optimistic concurrency.

use async_trait::async_trait;
use bytes::Bytes;

use crate::{validate_name, Error, Limits, Result};

/// A value with the version it was stored at (1 for the first write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version.
    pub version: u64,
}

/// The check a state write makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateExpectation {
    /// The entry must not exist.
    New,
    /// The entry must be at exactly this version.
    Version(u64),
    /// No check: an explicit forced overwrite (the version still increments).
    Any,
}

/// One write of a [`StateStore::put_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    /// Entry id within the kind.
    pub id: String,
    /// The check.
    pub expected: StateExpectation,
    /// The new value.
    pub value: Bytes,
}

/// Answer of [`StateStore::get_if_changed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional<T> {
    /// The caller's version is current: nothing transferred.
    NotModified,
    /// The entry changed (or was deleted: `None`).
    Changed(Option<T>),
}

/// Stores the current state of entries (`kind`, `id`), each with a version.
///
/// Kinds and ids follow the stream-id rules (non-empty, at most 1024 bytes, no control
/// characters).
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Reads an entry.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a bad kind or id; backend errors.
    async fn get(&self, kind: &str, id: &str) -> Result<Option<Versioned<Bytes>>>;

    /// Reads an entry unless the caller already holds `known_version`.
    ///
    /// # Errors
    /// As [`StateStore::get`].
    async fn get_if_changed(
        &self,
        kind: &str,
        id: &str,
        known_version: u64,
    ) -> Result<Conditional<Versioned<Bytes>>>;

    /// Writes an entry if `expected` holds; returns the new version.
    ///
    /// # Errors
    /// [`crate::Error::StateConflict`] with the actual version if the check fails (nothing is
    /// written); [`crate::Error::TooLarge`] over the document limit.
    async fn put(&self, kind: &str, id: &str, expected: StateExpectation, value: Bytes) -> Result<u64>;

    /// Writes several entries of one kind, all or nothing; returns their new versions.
    ///
    /// # Errors
    /// As [`StateStore::put`]; one failed check fails the whole batch;
    /// [`crate::Error::InvalidInput`] when an id appears twice.
    async fn put_batch(&self, kind: &str, writes: Vec<StateWrite>) -> Result<Vec<u64>>;

    /// Deletes an entry if it is at `expected` (`None`: no check). Deleting a missing entry
    /// with no check is a no-op.
    ///
    /// # Errors
    /// [`crate::Error::StateConflict`] if the entry is not at `expected`.
    async fn delete(&self, kind: &str, id: &str, expected: Option<u64>) -> Result<()>;

    /// Lists ids and versions of a kind after `after`, ordered bytewise, at most `limit`.
    ///
    /// # Errors
    /// Backend errors only.
    async fn list(&self, kind: &str, after: Option<&str>, limit: usize) -> Result<Vec<(String, u64)>>;
}

/// Checks a state entry's key: kind and id follow the stream-id rules.
///
/// # Errors
/// [`Error::InvalidInput`] naming which part is wrong.
pub fn validate_state_key(kind: &str, id: &str) -> Result<()> {
    validate_name("state kind", kind)?;
    validate_name("state id", id)
}

/// Checks a [`StateStore::put_batch`] before any I/O: every key, every value's size, and no
/// id twice (every backend answers a doubled id the same way, and SQL upserts could not).
///
/// # Errors
/// [`Error::InvalidInput`], [`Error::TooLarge`].
pub fn check_state_batch(limits: &Limits, kind: &str, writes: &[StateWrite]) -> Result<()> {
    let mut ids = std::collections::HashSet::with_capacity(writes.len());
    for w in writes {
        validate_state_key(kind, &w.id)?;
        limits.check_document(w.value.len())?;
        if !ids.insert(w.id.as_str()) {
            return Err(Error::invalid(format!(
                "state id {:?} appears twice in one batch",
                w.id
            )));
        }
    }
    Ok(())
}
