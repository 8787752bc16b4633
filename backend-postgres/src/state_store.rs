//! [`StateStore`] for [`PgBackend`]: versioned entries by kind and id.

use async_trait::async_trait;
use bytes::Bytes;
use cqrs_core::{
    check_state_batch, validate_name, validate_state_key, Conditional, Error, Result, StateExpectation,
    StateStore, StateWrite, Versioned,
};
use sqlx::{PgConnection, Row};

use crate::backend::{count_i64, to_u64};
use crate::{error, PgBackend};

impl PgBackend {
    /// Writes one entry on `conn` if `expected` holds; returns the new version.
    async fn put_on(
        &self,
        conn: &mut PgConnection,
        kind: &str,
        id: &str,
        expected: StateExpectation,
        value: &[u8],
    ) -> Result<u64> {
        let sql = match expected {
            StateExpectation::New => {
                "INSERT INTO __SCHEMA__.states (kind, id, version, value) VALUES ($1, $2, 1, $3)
                 ON CONFLICT (kind, id) DO NOTHING RETURNING version"
            }
            StateExpectation::Version(_) => {
                "UPDATE __SCHEMA__.states SET version = version + 1, value = $3
                 WHERE kind = $1 AND id = $2 AND version = $4 RETURNING version"
            }
            StateExpectation::Any => {
                "INSERT INTO __SCHEMA__.states AS s (kind, id, version, value) VALUES ($1, $2, 1, $3)
                 ON CONFLICT (kind, id) DO UPDATE SET version = s.version + 1, value = excluded.value
                 RETURNING version"
            }
        };
        let at = match expected {
            StateExpectation::Version(v) => i64::try_from(v).unwrap_or(-1),
            _ => 0,
        };
        self.trip();
        let sql = self.sql(sql);
        let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(kind).bind(id).bind(value);
        if matches!(expected, StateExpectation::Version(_)) {
            query = query.bind(at);
        }
        let version = query.fetch_optional(&mut *conn).await.map_err(error::sent)?;
        match version {
            Some(v) => to_u64(v),
            None => Err(Error::StateConflict {
                kind: kind.to_owned(),
                id: id.to_owned(),
                expected,
                actual: self.version_on(conn, kind, id).await?,
            }),
        }
    }

    /// The stored version of an entry.
    async fn version_on(&self, conn: &mut PgConnection, kind: &str, id: &str) -> Result<Option<u64>> {
        self.trip();
        let v: Option<i64> = sqlx::query_scalar(
            &self.sql("SELECT version FROM __SCHEMA__.states WHERE kind = $1 AND id = $2"),
        )
        .bind(kind)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(error::sent)?;
        v.map(to_u64).transpose()
    }

    async fn get_entry(&self, kind: &str, id: &str) -> Result<Option<Versioned<Bytes>>> {
        self.trip();
        let row = sqlx::query(
            &self.sql("SELECT version, value FROM __SCHEMA__.states WHERE kind = $1 AND id = $2"),
        )
        .bind(kind)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(error::sent)?;
        row.map(|row| {
            let value: Vec<u8> = row.try_get("value").map_err(error::sent)?;
            Ok(Versioned {
                value: Bytes::from(value),
                version: to_u64(row.try_get("version").map_err(error::sent)?)?,
            })
        })
        .transpose()
    }
}

#[async_trait]
impl StateStore for PgBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", kind = %kind, id = %id))]
    async fn get(&self, kind: &str, id: &str) -> Result<Option<Versioned<Bytes>>> {
        self.begin()?;
        validate_state_key(kind, id)?;
        self.get_entry(kind, id).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", kind = %kind, id = %id, known = known_version))]
    async fn get_if_changed(
        &self,
        kind: &str,
        id: &str,
        known_version: u64,
    ) -> Result<Conditional<Versioned<Bytes>>> {
        self.begin()?;
        validate_state_key(kind, id)?;
        self.trip();
        let row = sqlx::query(&self.sql(
            "SELECT version, CASE WHEN version = $3 THEN NULL ELSE value END AS value
             FROM __SCHEMA__.states WHERE kind = $1 AND id = $2",
        ))
        .bind(kind)
        .bind(id)
        .bind(i64::try_from(known_version).unwrap_or(-1))
        .fetch_optional(&self.pool)
        .await
        .map_err(error::sent)?;
        let Some(row) = row else {
            return Ok(Conditional::Changed(None));
        };
        let version = to_u64(row.try_get("version").map_err(error::sent)?)?;
        let value: Option<Vec<u8>> = row.try_get("value").map_err(error::sent)?;
        Ok(match value {
            None => Conditional::NotModified,
            Some(v) => Conditional::Changed(Some(Versioned {
                value: Bytes::from(v),
                version,
            })),
        })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", kind = %kind, id = %id, expected = ?expected))]
    async fn put(&self, kind: &str, id: &str, expected: StateExpectation, value: Bytes) -> Result<u64> {
        self.begin()?;
        validate_state_key(kind, id)?;
        self.limits.check_document(value.len())?;
        let mut conn = self.conn().await?;
        self.put_on(&mut conn, kind, id, expected, &value).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", kind = %kind, writes = writes.len()))]
    async fn put_batch(&self, kind: &str, writes: Vec<StateWrite>) -> Result<Vec<u64>> {
        self.begin()?;
        check_state_batch(&self.limits, kind, &writes)?;
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        let mut versions = Vec::with_capacity(writes.len());
        for w in &writes {
            versions.push(self.put_on(&mut tx, kind, &w.id, w.expected, &w.value).await?);
        }
        self.trip();
        tx.commit().await.map_err(error::sent)?;
        Ok(versions)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", kind = %kind, id = %id, expected = ?expected))]
    async fn delete(&self, kind: &str, id: &str, expected: Option<u64>) -> Result<()> {
        self.begin()?;
        validate_state_key(kind, id)?;
        let mut conn = self.conn().await?;
        self.trip();
        let deleted = sqlx::query(&self.sql(
            "DELETE FROM __SCHEMA__.states WHERE kind = $1 AND id = $2 AND ($3::bigint IS NULL OR version = $3)",
        ))
        .bind(kind)
        .bind(id)
        .bind(expected.map(|v| i64::try_from(v).unwrap_or(-1)))
        .execute(&mut *conn)
        .await
        .map_err(error::sent)?
        .rows_affected();
        match expected {
            Some(v) if deleted == 0 => Err(Error::StateConflict {
                kind: kind.to_owned(),
                id: id.to_owned(),
                expected: StateExpectation::Version(v),
                actual: self.version_on(&mut conn, kind, id).await?,
            }),
            _ => Ok(()),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", kind = %kind, limit = limit))]
    async fn list(&self, kind: &str, after: Option<&str>, limit: usize) -> Result<Vec<(String, u64)>> {
        self.begin()?;
        validate_name("state kind", kind)?;
        self.trip();
        let rows = sqlx::query(&self.sql(
            "SELECT id, version FROM __SCHEMA__.states
             WHERE kind = $1 AND ($2::text IS NULL OR id > $2::text COLLATE \"C\")
             ORDER BY id LIMIT $3",
        ))
        .bind(kind)
        .bind(after)
        .bind(count_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(error::sent)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id").map_err(error::sent)?,
                    to_u64(row.try_get("version").map_err(error::sent)?)?,
                ))
            })
            .collect()
    }
}
