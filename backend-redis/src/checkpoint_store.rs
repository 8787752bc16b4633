//! [`CheckpointStore`] for [`RedisBackend`]: checkpoints in one hash, leases in three
//! (epoch, owner, expiry in server milliseconds), all under the read-model hash tag so a
//! read-model commit can write its checkpoint atomically. Lease time is the Redis server's
//! clock (`TIME` inside the scripts).

use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{
    validate_name, Checkpoint, CheckpointStore, CheckpointUpdate, Error, Lease, Result, Timestamp,
};

use crate::conn::reply;
use crate::error::unexpected;
use crate::{scripts, RedisBackend};
use cqrs_core::lease::{check_epoch, check_ttl};

/// A TTL in milliseconds; [`check_ttl`] has bounded it far below `u64::MAX`.
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

impl RedisBackend {
    fn lease_keys(&self) -> [String; 3] {
        ["le", "lo", "lx"].map(|k| self.keys.read_global(k))
    }

    fn lease_answer(
        &self,
        name: &str,
        owner: &str,
        items: &mut std::vec::IntoIter<redis::Value>,
    ) -> Result<Lease> {
        let epoch = reply::next_u64(items)?;
        let until = reply::next_string(items)?
            .parse::<i64>()
            .map_err(|_| unexpected("a lease expiry"))?;
        Ok(Lease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            epoch,
            expires_at: Timestamp::from_millis(until),
        })
    }
}

#[async_trait]
impl CheckpointStore for RedisBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", name = %name))]
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>> {
        let _call = self.begin()?;
        validate_name("checkpoint name", name)?;
        let answer = self
            .conn
            .run(redis::cmd("HGET").arg(self.keys.read_global("cp")).arg(name))
            .await?;
        reply::opt_string(answer)?
            .map(|s| Checkpoint::from_json(&s))
            .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", name = %name, epoch = lease_epoch))]
    async fn save(&self, name: &str, checkpoint: &Checkpoint, lease_epoch: u64) -> Result<()> {
        let _call = self.begin()?;
        validate_name("checkpoint name", name)?;
        let update = CheckpointUpdate {
            name: name.to_owned(),
            checkpoint: checkpoint.clone(),
            lease_epoch,
        };
        self.apply(&[], Some(&update)).await.map(|_| ())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", name = %name, epoch = lease_epoch))]
    async fn reset(&self, name: &str, lease_epoch: u64) -> Result<()> {
        let _call = self.begin()?;
        validate_name("checkpoint name", name)?;
        let [epochs, ..] = self.lease_keys();
        for _ in 0..32 {
            let current = reply::opt_string(self.conn.run(redis::cmd("HGET").arg(&epochs).arg(name)).await?)?
                .map(|e| e.parse::<u64>().map_err(|_| Error::corrupt("a lease epoch")))
                .transpose()?
                .unwrap_or(0);
            check_epoch(name, lease_epoch, current)?;
            let answer = self
                .conn
                .script(
                    scripts::RM_APPLY
                        .key(self.keys.read_global("cp"))
                        .key(&epochs)
                        .arg(name)
                        .arg("*")
                        .arg(current)
                        .arg("")
                        .arg(self.clock.now().as_millis())
                        .arg(0)
                        .arg(0),
                )
                .await?;
            match reply::status(answer)?.0.as_str() {
                "ok" => return Ok(()),
                "retry" => continue,
                other => return Err(unexpected(&format!("checkpoint reset answered {other:?}"))),
            }
        }
        Err(Error::backend(
            "redis",
            "checkpoint reset kept racing with lease changes",
        ))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", name = %name, owner = %owner, ttl = ?ttl))]
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Lease> {
        let _call = self.begin()?;
        validate_name("lease name", name)?;
        validate_name("lease owner", owner)?;
        check_ttl(ttl)?;
        let [epochs, owners, expiries] = self.lease_keys();
        let answer = self
            .conn
            .script(
                scripts::LEASE_ACQUIRE
                    .key(epochs)
                    .key(owners)
                    .key(expiries)
                    .arg(name)
                    .arg(owner)
                    .arg(ttl_ms(ttl)),
            )
            .await?;
        let (status, mut items) = reply::status(answer)?;
        match status.as_str() {
            "ok" => self.lease_answer(name, owner, &mut items),
            "held" => Err(Error::LeaseHeld {
                name: name.to_owned(),
                owner: reply::next_string(&mut items)?,
            }),
            other => Err(unexpected(&format!("lease acquire answered {other:?}"))),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", name = %lease.name, owner = %lease.owner, epoch = lease.epoch, ttl = ?ttl))]
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        let _call = self.begin()?;
        check_ttl(ttl)?;
        let [epochs, owners, expiries] = self.lease_keys();
        let answer = self
            .conn
            .script(
                scripts::LEASE_RENEW
                    .key(epochs)
                    .key(owners)
                    .key(expiries)
                    .arg(&lease.name)
                    .arg(&lease.owner)
                    .arg(lease.epoch)
                    .arg(ttl_ms(ttl)),
            )
            .await?;
        let (status, mut items) = reply::status(answer)?;
        match status.as_str() {
            "ok" => self.lease_answer(&lease.name, &lease.owner, &mut items),
            "fenced" => Err(Error::Fenced {
                name: lease.name.clone(),
                epoch: lease.epoch,
                current: reply::next_u64(&mut items)?,
            }),
            other => Err(unexpected(&format!("lease renew answered {other:?}"))),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", name = %lease.name, owner = %lease.owner, epoch = lease.epoch))]
    async fn release(&self, lease: &Lease) -> Result<()> {
        let _call = self.begin()?;
        let [epochs, owners, expiries] = self.lease_keys();
        self.conn
            .script(
                scripts::LEASE_RENEW
                    .key(epochs)
                    .key(owners)
                    .key(expiries)
                    .arg(&lease.name)
                    .arg(&lease.owner)
                    .arg(lease.epoch)
                    .arg("release"),
            )
            .await?;
        Ok(())
    }
}
