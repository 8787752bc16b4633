//! The state store: one document per (kind, id) with a version, updated conditionally.

use std::collections::HashSet;

use async_trait::async_trait;
use bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use bytes::Bytes;
use cqrs_core::{validate_name, Conditional, Error, Result, StateExpectation, StateWrite, Versioned};

use crate::{
    backend::{unit_of_work, MongoBackend, Tx},
    error::{self, is_duplicate_key},
    indexes::Coll,
    mapping::{i64_of, payload_from_bson, str_of, u64_of},
};

fn check_key(kind: &str, id: &str) -> Result<()> {
    validate_name("state kind", kind)?;
    validate_name("state id", id)
}

fn key(kind: &str, id: &str) -> Document {
    doc! { "k": kind, "i": id }
}

fn binary(value: &Bytes) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: value.to_vec(),
    })
}

fn versioned(d: &Document) -> Result<Versioned<Bytes>> {
    Ok(Versioned {
        value: payload_from_bson(d.get("val"))?,
        version: u64_of(d, "ver")?,
    })
}

impl MongoBackend {
    async fn state_version(&self, tx: &mut Tx, kind: &str, id: &str) -> Result<Option<u64>> {
        tx.find_one(&self.coll(Coll::States), key(kind, id), None)
            .await
            .map_err(error::map)?
            .map(|d| u64_of(&d, "ver"))
            .transpose()
    }

    async fn put_in(
        &self,
        tx: &mut Tx,
        kind: &str,
        id: &str,
        expected: StateExpectation,
        value: &Bytes,
    ) -> Result<u64> {
        let coll = self.coll(Coll::States);
        let conflict = |actual: Option<u64>| Error::StateConflict {
            kind: kind.to_owned(),
            id: id.to_owned(),
            expected,
            actual,
        };
        match expected {
            StateExpectation::New => {
                let mut d = key(kind, id);
                d.insert("val", binary(value));
                d.insert("ver", 1_i64);
                match tx.insert_one(&coll, d).await {
                    Ok(()) => Ok(1),
                    Err(e) if is_duplicate_key(&e) => {
                        let actual = self.state_version(&mut Tx::plain(), kind, id).await?;
                        Err(conflict(actual))
                    }
                    Err(e) => Err(error::map(e)),
                }
            }
            StateExpectation::Version(v) => {
                let mut filter = key(kind, id);
                filter.insert("ver", i64_of(v)?);
                let r = tx
                    .update_one(
                        &coll,
                        filter,
                        doc! { "$set": { "val": binary(value) }, "$inc": { "ver": 1_i64 } },
                        false,
                    )
                    .await
                    .map_err(error::map)?;
                if r.matched_count == 1 {
                    Ok(v + 1)
                } else {
                    let actual = self.state_version(tx, kind, id).await?;
                    Err(conflict(actual))
                }
            }
            StateExpectation::Any => {
                for _ in 0..3 {
                    match tx
                        .find_one_and_update(
                            &coll,
                            key(kind, id),
                            doc! { "$set": { "val": binary(value) }, "$inc": { "ver": 1_i64 } },
                            true,
                        )
                        .await
                    {
                        Ok(Some(d)) => return u64_of(&d, "ver"),
                        Ok(None) => return Err(Error::corrupt("an upsert returned no document")),
                        // Two first writes at once: the loser retries as an update.
                        Err(e) if is_duplicate_key(&e) && !tx.is_transaction() => {}
                        Err(e) => return Err(error::map(e)),
                    }
                }
                Err(Error::unavailable(
                    cqrs_core::Outcome::NotSent,
                    "state write kept racing with another writer",
                ))
            }
        }
    }

    async fn put_batch_in(&self, tx: &mut Tx, kind: &str, writes: &[StateWrite]) -> Result<Vec<u64>> {
        if !tx.is_transaction() {
            // No transactions on a standalone server: check every expectation first, so a
            // batch that fails its checks writes nothing (a concurrent writer can still
            // interleave; documented in the README).
            for w in writes {
                let actual = self.state_version(tx, kind, &w.id).await?;
                let ok = match w.expected {
                    StateExpectation::New => actual.is_none(),
                    StateExpectation::Version(v) => actual == Some(v),
                    StateExpectation::Any => true,
                };
                if !ok {
                    return Err(Error::StateConflict {
                        kind: kind.to_owned(),
                        id: w.id.clone(),
                        expected: w.expected,
                        actual,
                    });
                }
            }
        }
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            out.push(self.put_in(tx, kind, &w.id, w.expected, &w.value).await?);
        }
        Ok(out)
    }
}

#[async_trait]
impl cqrs_core::StateStore for MongoBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", kind, id))]
    async fn get(&self, kind: &str, id: &str) -> Result<Option<Versioned<Bytes>>> {
        self.open()?;
        check_key(kind, id)?;
        Tx::plain()
            .find_one(&self.coll(Coll::States), key(kind, id), None)
            .await
            .map_err(error::map)?
            .as_ref()
            .map(versioned)
            .transpose()
    }

    #[tracing::instrument(
        skip_all,
        err(level = "debug"),
        fields(store = "mongo", kind, id, known_version)
    )]
    async fn get_if_changed(
        &self,
        kind: &str,
        id: &str,
        known_version: u64,
    ) -> Result<Conditional<Versioned<Bytes>>> {
        self.open()?;
        check_key(kind, id)?;
        let found = Tx::plain()
            .find_one(&self.coll(Coll::States), key(kind, id), None)
            .await
            .map_err(error::map)?;
        match found {
            Some(d) if u64_of(&d, "ver")? == known_version => Ok(Conditional::NotModified),
            Some(d) => Ok(Conditional::Changed(Some(versioned(&d)?))),
            None => Ok(Conditional::Changed(None)),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", kind, id, ?expected))]
    async fn put(&self, kind: &str, id: &str, expected: StateExpectation, value: Bytes) -> Result<u64> {
        self.open()?;
        check_key(kind, id)?;
        self.inner.limits.check_document(value.len())?;
        self.put_in(&mut Tx::plain(), kind, id, expected, &value).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", kind, count = writes.len()))]
    async fn put_batch(&self, kind: &str, writes: Vec<StateWrite>) -> Result<Vec<u64>> {
        self.open()?;
        let mut ids = HashSet::new();
        let mut total = 0usize;
        for w in &writes {
            check_key(kind, &w.id)?;
            self.inner.limits.check_document(w.value.len())?;
            total = total.saturating_add(w.value.len());
            if !ids.insert(w.id.as_str()) {
                return Err(Error::invalid(format!(
                    "state id {:?} appears twice in one batch",
                    w.id
                )));
            }
        }
        self.inner.limits.check_document(total)?;
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        unit_of_work!(self, |tx| self.put_batch_in(&mut tx, kind, &writes).await)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", kind, id, ?expected))]
    async fn delete(&self, kind: &str, id: &str, expected: Option<u64>) -> Result<()> {
        self.open()?;
        check_key(kind, id)?;
        let mut filter = key(kind, id);
        if let Some(v) = expected {
            filter.insert("ver", i64_of(v)?);
        }
        let r = self
            .coll(Coll::States)
            .delete_one(filter)
            .await
            .map_err(error::map)?;
        match expected {
            Some(v) if r.deleted_count == 0 => Err(Error::StateConflict {
                kind: kind.to_owned(),
                id: id.to_owned(),
                expected: StateExpectation::Version(v),
                actual: self.state_version(&mut Tx::plain(), kind, id).await?,
            }),
            _ => Ok(()),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", kind, limit))]
    async fn list(&self, kind: &str, after: Option<&str>, limit: usize) -> Result<Vec<(String, u64)>> {
        self.open()?;
        validate_name("state kind", kind)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = match after {
            Some(a) => doc! { "k": kind, "i": { "$gt": a } },
            None => doc! { "k": kind },
        };
        Tx::plain()
            .find(
                &self.coll(Coll::States),
                filter,
                Some(doc! { "i": 1 }),
                Some(i64::try_from(limit).unwrap_or(i64::MAX)),
            )
            .await
            .map_err(error::map)?
            .iter()
            .map(|d| Ok((str_of(d, "i")?.to_owned(), u64_of(d, "ver")?)))
            .collect()
    }
}
