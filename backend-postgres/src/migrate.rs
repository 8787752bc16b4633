//! Explicit, embedded, checksummed migrations under an advisory lock.

use cqrs_core::{Error, Result};
use sqlx::{Connection, Row};

use crate::{error, PgBackend};

/// The migrations, in order: version, name, SQL with the schema placeholder.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "events", include_str!("../migrations/0001_events.sql")),
    (2, "stores", include_str!("../migrations/0002_stores.sql")),
    (3, "bus", include_str!("../migrations/0003_bus.sql")),
    (
        4,
        "json_i64 without a subtransaction",
        include_str!("../migrations/0004_json_i64_without_subtransaction.sql"),
    ),
    (
        5,
        "outbox id per topic",
        include_str!("../migrations/0005_outbox_id_per_topic.sql"),
    ),
    (
        6,
        "append fast path",
        include_str!("../migrations/0006_append_fast_path.sql"),
    ),
    (
        7,
        "hidden streams index",
        include_str!("../migrations/0007_hidden_streams_index.sql"),
    ),
    (
        8,
        "append returns an array",
        include_str!("../migrations/0008_append_returns_array.sql"),
    ),
    (
        9,
        "stream lock per schema",
        include_str!("../migrations/0009_stream_lock_per_schema.sql"),
    ),
    (
        10,
        "corrupt head refuses appends",
        include_str!("../migrations/0010_corrupt_head_refuses_appends.sql"),
    ),
    (
        11,
        "quarantine",
        include_str!("../migrations/0011_quarantine.sql"),
    ),
];

/// Creates the schema and its migrations table.
const BOOTSTRAP: &str = "CREATE SCHEMA IF NOT EXISTS __SCHEMA__;
CREATE TABLE IF NOT EXISTS __SCHEMA__._migrations (
    version bigint PRIMARY KEY,
    name text NOT NULL,
    checksum bytea NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);";

impl PgBackend {
    /// Creates the schema and applies every migration not applied yet, each in its own
    /// transaction, under a session advisory lock (so concurrent first use is safe). The
    /// migrations table lives inside the schema.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if an applied migration was edited since (its checksum differs);
    /// [`Error::Unavailable`] and backend errors.
    pub async fn migrate(&self) -> Result<()> {
        self.begin()?;
        let mut conn = self.conn().await?;
        // This session takes a session-level lock and begins transactions: were this future
        // dropped part-way, the connection would go back to the pool holding the lock, or
        // inside a transaction (see `begin`). Closed instead, it releases both.
        conn.close_on_drop();
        let key = format!("cqrs-migrate:{}", self.schema.as_str());
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(&key)
            .execute(&mut *conn)
            .await
            .map_err(error::sent)?;
        let result = self.migrate_locked(&mut conn).await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(&key)
            .execute(&mut *conn)
            .await
            .map_err(error::sent);
        // Returned before the identity is read, which takes a connection of its own: a pool
        // of one would otherwise wait for itself.
        drop(conn);
        result?;
        unlocked?;
        self.load_identity().await?;
        Ok(())
    }

    async fn migrate_locked(&self, conn: &mut sqlx::PgConnection) -> Result<()> {
        let bootstrap = self.sql(BOOTSTRAP);
        sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(&bootstrap))
            .await
            .map_err(error::sent)?;
        let check = self.sql(
            "SELECT checksum = sha256(convert_to($2, 'UTF8')) AS same FROM __SCHEMA__._migrations WHERE version = $1",
        );
        let record = self.sql(
            "INSERT INTO __SCHEMA__._migrations (version, name, checksum) VALUES ($1, $2, sha256(convert_to($3, 'UTF8')))",
        );
        for &(version, name, template) in MIGRATIONS {
            let same: Option<bool> = sqlx::query(&check)
                .bind(version)
                .bind(template)
                .fetch_optional(&mut *conn)
                .await
                .map_err(error::sent)?
                .map(|row| row.try_get("same"))
                .transpose()
                .map_err(error::sent)?;
            match same {
                Some(true) => continue,
                Some(false) => {
                    return Err(Error::corrupt(format!(
                        "migration {version:04}_{name} was edited after it was applied to schema {}",
                        self.schema.as_str()
                    )))
                }
                None => {}
            }
            let mut tx = conn.begin().await.map_err(error::sent)?;
            let body = self.sql(template);
            sqlx::Executor::execute(&mut *tx, sqlx::raw_sql(&body))
                .await
                .map_err(error::sent)?;
            sqlx::query(&record)
                .bind(version)
                .bind(name)
                .bind(template)
                .execute(&mut *tx)
                .await
                .map_err(error::sent)?;
            tx.commit().await.map_err(error::sent)?;
            tracing::info!(schema = self.schema.as_str(), version, name, "applied migration");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// `migrate` can run on a spawned task.
    #[allow(dead_code)]
    fn migrate_is_send(b: &crate::PgBackend) -> impl Send + '_ {
        b.migrate()
    }
}
