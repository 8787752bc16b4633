//! The checkpoint store trait: consumer positions and leases with fencing epochs.

use std::time::Duration;

use async_trait::async_trait;

use crate::{Checkpoint, Result, Timestamp};

/// A lease on a name, held by one owner at a time.
///
/// Every acquisition by a new owner (or after expiry) bumps the epoch; writes carry the
/// epoch and are refused when a newer one exists, so a paused former leader can never apply
/// events twice or move a checkpoint back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The leased name (a projection or relay).
    pub name: String,
    /// Who holds it.
    pub owner: String,
    /// The fencing epoch.
    pub epoch: u64,
    /// When it lapses unless renewed.
    pub expires_at: Timestamp,
}

/// Stores checkpoints and leases by name.
#[async_trait]
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// The stored checkpoint, if any.
    ///
    /// # Errors
    /// [`crate::Error::Corrupt`] for an unreadable stored value; backend errors.
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>>;

    /// Saves a checkpoint under the caller's lease epoch (0 without a lease).
    ///
    /// # Errors
    /// [`crate::Error::Fenced`] if a newer epoch exists; [`crate::Error::InvalidInput`] if the
    /// checkpoint would move backwards or the epoch was never handed out.
    async fn save(&self, name: &str, checkpoint: &Checkpoint, lease_epoch: u64) -> Result<()>;

    /// Deletes the checkpoint so the consumer starts over (rebuild), under the lease epoch.
    ///
    /// # Errors
    /// [`crate::Error::Fenced`] if a newer epoch exists.
    async fn reset(&self, name: &str, lease_epoch: u64) -> Result<()>;

    /// Takes the lease for `owner` for `ttl`. Re-acquiring a lease one already holds renews
    /// it and keeps the epoch; taking it from another owner (after expiry) bumps the epoch.
    ///
    /// # Errors
    /// [`crate::Error::LeaseHeld`] while another owner's lease is live.
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Lease>;

    /// Extends a held lease.
    ///
    /// # Errors
    /// [`crate::Error::Fenced`] if the lease was taken over meanwhile.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;

    /// Gives a lease up (the epoch stays, so the old holder remains fenced once another
    /// owner takes it).
    ///
    /// # Errors
    /// Backend errors only; releasing a lease held by someone else does nothing.
    async fn release(&self, lease: &Lease) -> Result<()>;
}
