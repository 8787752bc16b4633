//! [`CheckpointStore`] for [`MemoryBackend`]: checkpoints and leases by name, fenced by
//! lease epochs.

use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{
    lease::{check_epoch, check_forward, check_ttl},
    validate_name, Checkpoint, CheckpointStore, Error, Lease, Result,
};

use crate::state::Inner;
use crate::MemoryBackend;

impl Inner {
    /// Refuses a write under `lease_epoch` unless it is the current epoch of `name` (the
    /// epoch of its lease record, 0 if it was never leased).
    fn check_fence(&self, name: &str, lease_epoch: u64) -> Result<()> {
        check_epoch(name, lease_epoch, self.leases.get(name).map_or(0, |l| l.epoch))
    }

    /// Checks a checkpoint write (`save` or a read-model `commit`): a valid name, the current
    /// lease epoch, and a checkpoint not behind the stored one in any partition.
    pub(crate) fn check_checkpoint_write(
        &self,
        name: &str,
        checkpoint: &Checkpoint,
        lease_epoch: u64,
    ) -> Result<()> {
        validate_name("checkpoint name", name)?;
        self.check_fence(name, lease_epoch)?;
        check_forward(name, self.checkpoints.get(name), checkpoint)
    }
}

#[async_trait]
impl CheckpointStore for MemoryBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", name = %name))]
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>> {
        self.begin().await?;
        validate_name("checkpoint name", name)?;
        Ok(self.lock()?.checkpoints.get(name).cloned())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", name = %name, epoch = lease_epoch))]
    async fn save(&self, name: &str, checkpoint: &Checkpoint, lease_epoch: u64) -> Result<()> {
        self.begin().await?;
        let mut inner = self.lock()?;
        inner.check_checkpoint_write(name, checkpoint, lease_epoch)?;
        inner.checkpoints.insert(name.to_owned(), checkpoint.clone());
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", name = %name, epoch = lease_epoch))]
    async fn reset(&self, name: &str, lease_epoch: u64) -> Result<()> {
        self.begin().await?;
        validate_name("checkpoint name", name)?;
        let mut inner = self.lock()?;
        inner.check_fence(name, lease_epoch)?;
        inner.checkpoints.remove(name);
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", name = %name, owner = %owner, ttl = ?ttl))]
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Lease> {
        self.begin().await?;
        validate_name("lease name", name)?;
        validate_name("lease owner", owner)?;
        check_ttl(ttl)?;
        let now = self.clock.now();
        let mut inner = self.lock()?;
        let epoch = match inner.leases.get(name) {
            Some(l) if l.expires_at > now && l.owner != owner => {
                return Err(Error::LeaseHeld {
                    name: name.to_owned(),
                    owner: l.owner.clone(),
                })
            }
            Some(l) if l.expires_at > now => l.epoch,
            Some(l) => l.epoch.saturating_add(1),
            None => 1,
        };
        let lease = Lease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            epoch,
            expires_at: now.saturating_add(ttl),
        };
        inner.leases.insert(name.to_owned(), lease.clone());
        Ok(lease)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", name = %lease.name, owner = %lease.owner, epoch = lease.epoch, ttl = ?ttl))]
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.begin().await?;
        check_ttl(ttl)?;
        let now = self.clock.now();
        let mut inner = self.lock()?;
        match inner.leases.get_mut(&lease.name) {
            Some(held) if held.owner == lease.owner && held.epoch == lease.epoch => {
                held.expires_at = now.saturating_add(ttl);
                Ok(held.clone())
            }
            other => Err(Error::Fenced {
                name: lease.name.clone(),
                epoch: lease.epoch,
                current: other.map_or(0, |l| l.epoch),
            }),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", name = %lease.name, owner = %lease.owner, epoch = lease.epoch))]
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.begin().await?;
        let now = self.clock.now();
        let mut inner = self.lock()?;
        if let Some(held) = inner.leases.get_mut(&lease.name) {
            if held.owner == lease.owner && held.epoch == lease.epoch {
                held.expires_at = held.expires_at.min(now);
            }
        }
        Ok(())
    }
}
