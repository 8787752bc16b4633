//! [`CheckpointStore`] for [`PgBackend`]: checkpoints and leases in tables, fenced by lease
//! epochs, leases timed by the database clock.

use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{
    lease::{check_epoch, check_forward, check_ttl},
    validate_name, Checkpoint, CheckpointStore, Error, Lease, Result, Timestamp,
};
use sqlx::{PgConnection, Row};

use crate::backend::to_u64;
use crate::{error, PgBackend};

/// The database clock in milliseconds since the epoch.
pub(crate) const NOW_MS: &str = "floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Milliseconds of a duration, saturating.
/// A TTL in milliseconds; [`check_ttl`] has bounded it far below `i64::MAX`.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgBackend {
    /// Serialises writes to one checkpoint or lease name within the transaction.
    pub(crate) async fn lock_name(&self, conn: &mut PgConnection, name: &str) -> Result<()> {
        self.trip();
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 1))")
            .bind(format!("cqrs-lease:{}:{name}", self.schema.as_str()))
            .execute(&mut *conn)
            .await
            .map_err(error::sent)?;
        Ok(())
    }

    /// Refuses a write under `lease_epoch` unless it is the current epoch of `name`; call
    /// with the name locked.
    pub(crate) async fn check_fence(
        &self,
        conn: &mut PgConnection,
        name: &str,
        lease_epoch: u64,
    ) -> Result<()> {
        self.trip();
        let current: Option<i64> =
            sqlx::query_scalar(&self.sql("SELECT epoch FROM __SCHEMA__.leases WHERE name = $1 FOR UPDATE"))
                .bind(name)
                .fetch_optional(&mut *conn)
                .await
                .map_err(error::sent)?;
        let current = current.map(to_u64).transpose()?.unwrap_or(0);
        check_epoch(name, lease_epoch, current)
    }

    /// Checks and writes a checkpoint inside a transaction holding the name's lock.
    pub(crate) async fn write_checkpoint(
        &self,
        conn: &mut PgConnection,
        name: &str,
        checkpoint: &Checkpoint,
        lease_epoch: u64,
    ) -> Result<()> {
        validate_name("checkpoint name", name)?;
        self.lock_name(conn, name).await?;
        self.check_fence(conn, name, lease_epoch).await?;
        let stored = self.load_checkpoint(conn, name).await?;
        check_forward(name, stored.as_ref(), checkpoint)?;
        self.trip();
        sqlx::query(&self.sql(
            "INSERT INTO __SCHEMA__.checkpoints (name, checkpoint) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET checkpoint = excluded.checkpoint",
        ))
        .bind(name)
        .bind(checkpoint.to_json())
        .execute(&mut *conn)
        .await
        .map_err(error::sent)?;
        Ok(())
    }

    async fn load_checkpoint(&self, conn: &mut PgConnection, name: &str) -> Result<Option<Checkpoint>> {
        self.trip();
        let stored: Option<String> =
            sqlx::query_scalar(&self.sql("SELECT checkpoint FROM __SCHEMA__.checkpoints WHERE name = $1"))
                .bind(name)
                .fetch_optional(&mut *conn)
                .await
                .map_err(error::sent)?;
        stored.as_deref().map(Checkpoint::from_json).transpose()
    }
}

/// A lease from its row.
fn lease_from_row(row: &sqlx::postgres::PgRow) -> Result<Lease> {
    Ok(Lease {
        name: row.try_get("name").map_err(error::sent)?,
        owner: row.try_get("owner").map_err(error::sent)?,
        epoch: to_u64(row.try_get("epoch").map_err(error::sent)?)?,
        expires_at: Timestamp::from_millis(row.try_get("expires_at").map_err(error::sent)?),
    })
}

#[async_trait]
impl CheckpointStore for PgBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", name = %name))]
    async fn load(&self, name: &str) -> Result<Option<Checkpoint>> {
        self.begin()?;
        validate_name("checkpoint name", name)?;
        let mut conn = self.conn().await?;
        self.load_checkpoint(&mut conn, name).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", name = %name, epoch = lease_epoch))]
    async fn save(&self, name: &str, checkpoint: &Checkpoint, lease_epoch: u64) -> Result<()> {
        self.begin()?;
        validate_name("checkpoint name", name)?;
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        self.write_checkpoint(&mut tx, name, checkpoint, lease_epoch)
            .await?;
        self.trip();
        tx.commit().await.map_err(error::sent)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", name = %name, epoch = lease_epoch))]
    async fn reset(&self, name: &str, lease_epoch: u64) -> Result<()> {
        self.begin()?;
        validate_name("checkpoint name", name)?;
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        self.lock_name(&mut tx, name).await?;
        self.check_fence(&mut tx, name, lease_epoch).await?;
        self.trip();
        sqlx::query(&self.sql("DELETE FROM __SCHEMA__.checkpoints WHERE name = $1"))
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(error::sent)?;
        self.trip();
        tx.commit().await.map_err(error::sent)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", name = %name, owner = %owner, ttl = ?ttl))]
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> Result<Lease> {
        self.begin()?;
        validate_name("lease name", name)?;
        validate_name("lease owner", owner)?;
        check_ttl(ttl)?;
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        self.lock_name(&mut tx, name).await?;
        self.trip();
        let row = sqlx::query(&self.sql(&format!(
            "SELECT owner, epoch, expires_at, {NOW_MS} AS now FROM __SCHEMA__.leases WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(error::sent)?;
        let epoch: i64 = match &row {
            Some(row) => {
                let held_by: String = row.try_get("owner").map_err(error::sent)?;
                let epoch: i64 = row.try_get("epoch").map_err(error::sent)?;
                let expires: i64 = row.try_get("expires_at").map_err(error::sent)?;
                let now: i64 = row.try_get("now").map_err(error::sent)?;
                match (expires > now, held_by == owner) {
                    (true, false) => {
                        return Err(Error::LeaseHeld {
                            name: name.to_owned(),
                            owner: held_by,
                        })
                    }
                    (true, true) => epoch,
                    (false, _) => epoch.saturating_add(1),
                }
            }
            None => 1,
        };
        self.trip();
        let row = sqlx::query(&self.sql(&format!(
            "INSERT INTO __SCHEMA__.leases (name, owner, epoch, expires_at) VALUES ($1, $2, $3, {NOW_MS} + $4)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, epoch = excluded.epoch,
                 expires_at = excluded.expires_at
             RETURNING name, owner, epoch, expires_at"
        )))
        .bind(name)
        .bind(owner)
        .bind(epoch)
        .bind(millis(ttl))
        .fetch_one(&mut *tx)
        .await
        .map_err(error::sent)?;
        let lease = lease_from_row(&row)?;
        self.trip();
        tx.commit().await.map_err(error::sent)?;
        Ok(lease)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", name = %lease.name, owner = %lease.owner, epoch = lease.epoch, ttl = ?ttl))]
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.begin()?;
        check_ttl(ttl)?;
        self.trip();
        let row = sqlx::query(&self.sql(&format!(
            "WITH cur AS (SELECT epoch FROM __SCHEMA__.leases WHERE name = $1),
             upd AS (UPDATE __SCHEMA__.leases SET expires_at = {NOW_MS} + $4
                     WHERE name = $1 AND owner = $2 AND epoch = $3
                     RETURNING name, owner, epoch, expires_at)
             SELECT upd.*, (SELECT epoch FROM cur) AS current FROM (SELECT 1) one LEFT JOIN upd ON true"
        )))
        .bind(&lease.name)
        .bind(&lease.owner)
        .bind(i64::try_from(lease.epoch).unwrap_or(-1))
        .bind(millis(ttl))
        .fetch_one(&self.pool)
        .await
        .map_err(error::sent)?;
        let renewed: Option<String> = row.try_get("name").map_err(error::sent)?;
        if renewed.is_some() {
            return lease_from_row(&row);
        }
        let current: Option<i64> = row.try_get("current").map_err(error::sent)?;
        Err(Error::Fenced {
            name: lease.name.clone(),
            epoch: lease.epoch,
            current: current.map(to_u64).transpose()?.unwrap_or(0),
        })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", name = %lease.name, owner = %lease.owner, epoch = lease.epoch))]
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.begin()?;
        self.trip();
        sqlx::query(&self.sql(&format!(
            "UPDATE __SCHEMA__.leases SET expires_at = least(expires_at, {NOW_MS})
             WHERE name = $1 AND owner = $2 AND epoch = $3"
        )))
        .bind(&lease.name)
        .bind(&lease.owner)
        .bind(i64::try_from(lease.epoch).unwrap_or(-1))
        .execute(&self.pool)
        .await
        .map_err(error::sent)?;
        Ok(())
    }
}
