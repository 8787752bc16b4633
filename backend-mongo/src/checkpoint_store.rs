//! Checkpoints and leases: one document per name holds the lease (owner `o`, fencing epoch
//! `e`, expiry `x` in milliseconds) and the checkpoint (`cp`, JSON). Every write is one
//! conditional update on that document (compare-and-set on the epoch and the stored
//! checkpoint), so fencing holds without transactions, on a standalone server too.

use std::time::Duration;

use async_trait::async_trait;
use bson::{doc, Bson, Document};
use cqrs_core::{
    lease::{check_epoch, check_forward, check_ttl},
    Checkpoint, Error, Lease, Result, Timestamp,
};

use crate::{
    backend::{MongoBackend, Tx},
    error::{self, is_duplicate_key},
    indexes::Coll,
    mapping::{i64_of, u64_of},
};

/// How often a compare-and-set is retried after losing to a concurrent writer.
const CAS_ATTEMPTS: u32 = 16;

/// The lease and checkpoint of one name as stored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Record {
    /// Whether the document exists.
    pub(crate) exists: bool,
    pub(crate) owner: String,
    pub(crate) epoch: u64,
    pub(crate) expires_at: Timestamp,
    /// The stored checkpoint JSON (compared verbatim in compare-and-set filters).
    pub(crate) checkpoint_json: Option<String>,
}

impl Record {
    pub(crate) fn from_document(d: Option<&Document>) -> Result<Record> {
        let Some(d) = d else { return Ok(Record::default()) };
        Ok(Record {
            exists: true,
            owner: d.get_str("o").unwrap_or_default().to_owned(),
            epoch: if d.contains_key("e") { u64_of(d, "e")? } else { 0 },
            expires_at: Timestamp::from_millis(d.get_i64("x").unwrap_or(i64::MIN)),
            checkpoint_json: d.get_str("cp").ok().map(str::to_owned),
        })
    }

    pub(crate) fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        self.checkpoint_json
            .as_deref()
            .map(Checkpoint::from_json)
            .transpose()
    }

    /// The filter that matches this exact record (epoch and checkpoint unchanged).
    pub(crate) fn unchanged(&self, name: &str) -> Result<Document> {
        let cp = match &self.checkpoint_json {
            Some(s) => Bson::String(s.clone()),
            None => Bson::Document(doc! { "$exists": false }),
        };
        Ok(doc! { "_id": name, "e": i64_of(self.epoch)?, "cp": cp })
    }
}

fn lease_of(name: &str, owner: &str, epoch: u64, expires_at: Timestamp) -> Lease {
    Lease {
        name: name.to_owned(),
        owner: owner.to_owned(),
        epoch,
        expires_at,
    }
}

impl MongoBackend {
    pub(crate) async fn record(&self, tx: &mut Tx, name: &str) -> Result<Record> {
        let d = tx
            .find_one(&self.coll(Coll::Checkpoints), doc! { "_id": name }, None)
            .await
            .map_err(error::map)?;
        Record::from_document(d.as_ref())
    }

    /// Writes `update` if the record is still `rec`; inserts `fresh` when there was none.
    /// Returns whether it applied (false: lost a race, read again).
    pub(crate) async fn compare_and_set(
        &self,
        tx: &mut Tx,
        name: &str,
        rec: &Record,
        update: Document,
        fresh: Document,
    ) -> Result<bool> {
        let coll = self.coll(Coll::Checkpoints);
        if rec.exists {
            let r = tx
                .update_one(&coll, rec.unchanged(name)?, update, false)
                .await
                .map_err(error::map)?;
            Ok(r.matched_count == 1)
        } else {
            match tx.insert_one(&coll, fresh).await {
                Ok(()) => Ok(true),
                Err(e) if is_duplicate_key(&e) => Ok(false),
                Err(e) => Err(error::map(e)),
            }
        }
    }

    /// Checks the epoch and direction and stages the checkpoint write in `tx`.
    pub(crate) async fn save_in(
        &self,
        tx: &mut Tx,
        name: &str,
        checkpoint: &Checkpoint,
        lease_epoch: u64,
    ) -> Result<bool> {
        let rec = self.record(tx, name).await?;
        check_epoch(name, lease_epoch, rec.epoch)?;
        check_forward(name, rec.checkpoint()?.as_ref(), checkpoint)?;
        let json = checkpoint.to_json();
        self.compare_and_set(
            tx,
            name,
            &rec,
            doc! { "$set": { "cp": json.as_str() } },
            doc! { "_id": name, "e": 0_i64, "cp": json.as_str() },
        )
        .await
    }
}

#[async_trait]
impl cqrs_core::CheckpointStore for MongoBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", name))]
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>> {
        self.open()?;
        self.record(&mut Tx::plain(), name).await?.checkpoint()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", name, lease_epoch))]
    async fn save(&self, name: &str, checkpoint: &Checkpoint, lease_epoch: u64) -> Result<()> {
        self.open()?;
        for _ in 0..CAS_ATTEMPTS {
            if self
                .save_in(&mut Tx::plain(), name, checkpoint, lease_epoch)
                .await?
            {
                return Ok(());
            }
        }
        Err(lost_race(name))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", name, lease_epoch))]
    async fn reset(&self, name: &str, lease_epoch: u64) -> Result<()> {
        self.open()?;
        for _ in 0..CAS_ATTEMPTS {
            let mut tx = Tx::plain();
            let rec = self.record(&mut tx, name).await?;
            check_epoch(name, lease_epoch, rec.epoch)?;
            if !rec.exists || rec.checkpoint_json.is_none() {
                return Ok(());
            }
            let r = self
                .coll(Coll::Checkpoints)
                .update_one(rec.unchanged(name)?, doc! { "$unset": { "cp": "" } })
                .await
                .map_err(error::map)?;
            if r.matched_count == 1 {
                return Ok(());
            }
        }
        Err(lost_race(name))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", name, owner))]
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Lease> {
        self.open()?;
        check_ttl(ttl)?;
        for _ in 0..CAS_ATTEMPTS {
            let now = self.inner.clock.now();
            let until = now.saturating_add(ttl);
            let mut tx = Tx::plain();
            let rec = self.record(&mut tx, name).await?;
            let live = rec.exists && rec.expires_at > now && !rec.owner.is_empty();
            let epoch = if live && rec.owner == owner {
                rec.epoch
            } else if live {
                return Err(Error::LeaseHeld {
                    name: name.to_owned(),
                    owner: rec.owner,
                });
            } else {
                rec.epoch + 1
            };
            let e = i64_of(epoch)?;
            let applied = self
                .compare_and_set(
                    &mut tx,
                    name,
                    &rec,
                    doc! { "$set": { "o": owner, "e": e, "x": until.as_millis() } },
                    doc! { "_id": name, "o": owner, "e": e, "x": until.as_millis() },
                )
                .await?;
            if applied {
                return Ok(lease_of(name, owner, epoch, until));
            }
        }
        Err(lost_race(name))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", name = %lease.name, owner = %lease.owner, epoch = lease.epoch))]
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.open()?;
        check_ttl(ttl)?;
        let until = self.inner.clock.now().saturating_add(ttl);
        let r = self
            .coll(Coll::Checkpoints)
            .update_one(
                doc! { "_id": lease.name.as_str(), "o": lease.owner.as_str(), "e": i64_of(lease.epoch)? },
                doc! { "$set": { "x": until.as_millis() } },
            )
            .await
            .map_err(error::map)?;
        if r.matched_count == 1 {
            return Ok(lease_of(&lease.name, &lease.owner, lease.epoch, until));
        }
        let current = self.record(&mut Tx::plain(), &lease.name).await?.epoch;
        Err(Error::Fenced {
            name: lease.name.clone(),
            epoch: lease.epoch,
            current,
        })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", name = %lease.name, owner = %lease.owner, epoch = lease.epoch))]
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.open()?;
        let now = self.inner.clock.now().as_millis();
        self.coll(Coll::Checkpoints)
            .update_one(
                doc! { "_id": lease.name.as_str(), "o": lease.owner.as_str(), "e": i64_of(lease.epoch)? },
                doc! { "$min": { "x": now } },
            )
            .await
            .map_err(error::map)?;
        Ok(())
    }
}

fn lost_race(name: &str) -> Error {
    Error::unavailable(
        cqrs_core::Outcome::NotSent,
        format!("checkpoint {name:?} kept changing under concurrent writers"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_set_filters_pin_epoch_and_checkpoint() {
        let rec = Record::from_document(Some(
            &doc! { "_id": "p", "o": "a", "e": 3_i64, "x": 10_i64, "cp": "{}" },
        ))
        .unwrap();
        assert_eq!(rec.epoch, 3);
        assert_eq!(rec.owner, "a");
        assert_eq!(
            rec.unchanged("p").unwrap(),
            doc! { "_id": "p", "e": 3_i64, "cp": "{}" }
        );
        let bare = Record::from_document(Some(&doc! { "_id": "p", "e": 0_i64 })).unwrap();
        assert_eq!(
            bare.unchanged("p").unwrap(),
            doc! { "_id": "p", "e": 0_i64, "cp": { "$exists": false } }
        );
        let none = Record::from_document(None).unwrap();
        assert!(!none.exists);
        assert_eq!(none.epoch, 0, "a name never leased is at epoch 0");
    }
}
