//! [`StateStore`] for [`MemoryBackend`]: versioned entries by kind, then id.

use std::{collections::HashMap, ops::Bound};

use async_trait::async_trait;
use bytes::Bytes;
use cqrs_core::{
    check_state_batch, check_version, validate_name, validate_state_key, Conditional, Error, Result,
    StateExpectation, StateStore, StateWrite, Versioned,
};

use crate::MemoryBackend;

/// The version a write at `current` gets if `expected` holds.
fn next_version(kind: &str, id: &str, expected: StateExpectation, current: Option<u64>) -> Result<u64> {
    let holds = match expected {
        StateExpectation::New => current.is_none(),
        StateExpectation::Version(v) => current == Some(v),
        StateExpectation::Any => true,
    };
    if !holds {
        return Err(Error::StateConflict {
            kind: kind.to_owned(),
            id: id.to_owned(),
            expected,
            actual: current,
        });
    }
    check_version(current.map_or(1, |v| v.saturating_add(1)))
}

#[async_trait]
impl StateStore for MemoryBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", kind = %kind, id = %id))]
    async fn get(&self, kind: &str, id: &str) -> Result<Option<Versioned<Bytes>>> {
        self.begin().await?;
        validate_state_key(kind, id)?;
        let inner = self.lock()?;
        Ok(inner
            .states
            .get(kind)
            .and_then(|entries| entries.get(id))
            .cloned())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", kind = %kind, id = %id, known = known_version))]
    async fn get_if_changed(
        &self,
        kind: &str,
        id: &str,
        known_version: u64,
    ) -> Result<Conditional<Versioned<Bytes>>> {
        self.begin().await?;
        validate_state_key(kind, id)?;
        let inner = self.lock()?;
        let entry = inner.states.get(kind).and_then(|entries| entries.get(id));
        Ok(match entry {
            Some(e) if e.version == known_version => Conditional::NotModified,
            other => Conditional::Changed(other.cloned()),
        })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", kind = %kind, id = %id, expected = ?expected))]
    async fn put(&self, kind: &str, id: &str, expected: StateExpectation, value: Bytes) -> Result<u64> {
        self.begin().await?;
        validate_state_key(kind, id)?;
        self.limits.check_document(value.len())?;
        let mut inner = self.lock()?;
        let current = inner
            .states
            .get(kind)
            .and_then(|entries| entries.get(id))
            .map(|e| e.version);
        let version = next_version(kind, id, expected, current)?;
        inner
            .states
            .entry(kind.to_owned())
            .or_default()
            .insert(id.to_owned(), Versioned { value, version });
        Ok(version)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", kind = %kind, writes = writes.len()))]
    async fn put_batch(&self, kind: &str, writes: Vec<StateWrite>) -> Result<Vec<u64>> {
        self.begin().await?;
        check_state_batch(&self.limits, kind, &writes)?;
        let mut inner = self.lock()?;
        // Decide every write first, then apply: one failed check leaves everything as it was.
        let mut planned: HashMap<&str, u64> = HashMap::new();
        let mut versions = Vec::with_capacity(writes.len());
        {
            let stored = inner.states.get(kind);
            for w in &writes {
                let current = planned
                    .get(w.id.as_str())
                    .copied()
                    .or_else(|| stored.and_then(|e| e.get(&w.id)).map(|e| e.version));
                let version = next_version(kind, &w.id, w.expected, current)?;
                planned.insert(&w.id, version);
                versions.push(version);
            }
        }
        if !writes.is_empty() {
            let entries = inner.states.entry(kind.to_owned()).or_default();
            for (w, &version) in writes.iter().zip(&versions) {
                entries.insert(
                    w.id.clone(),
                    Versioned {
                        value: w.value.clone(),
                        version,
                    },
                );
            }
        }
        Ok(versions)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", kind = %kind, id = %id, expected = ?expected))]
    async fn delete(&self, kind: &str, id: &str, expected: Option<u64>) -> Result<()> {
        self.begin().await?;
        validate_state_key(kind, id)?;
        let mut inner = self.lock()?;
        let Some(entries) = inner.states.get_mut(kind) else {
            return match expected {
                None => Ok(()),
                Some(v) => Err(stale(kind, id, v, None)),
            };
        };
        let current = entries.get(id).map(|e| e.version);
        match (expected, current) {
            (Some(v), actual) if actual != Some(v) => return Err(stale(kind, id, v, actual)),
            _ => {}
        }
        entries.remove(id);
        if entries.is_empty() {
            inner.states.remove(kind);
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", kind = %kind, limit = limit))]
    async fn list(&self, kind: &str, after: Option<&str>, limit: usize) -> Result<Vec<(String, u64)>> {
        self.begin().await?;
        validate_name("state kind", kind)?;
        let inner = self.lock()?;
        let Some(entries) = inner.states.get(kind) else {
            return Ok(Vec::new());
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(entries
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .map(|(id, e)| (id.clone(), e.version))
            .collect())
    }
}

/// The conflict of a delete at version `expected` when the entry is at `actual`.
fn stale(kind: &str, id: &str, expected: u64, actual: Option<u64>) -> Error {
    Error::StateConflict {
        kind: kind.to_owned(),
        id: id.to_owned(),
        expected: StateExpectation::Version(expected),
        actual,
    }
}
