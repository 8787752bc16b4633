//! [`SnapshotStore`] for [`PgBackend`]: snapshots by stream, then version.

use async_trait::async_trait;
use cqrs_core::{
    check_version, ContentEncoding, ContentType, Error, Result, Snapshot, SnapshotKey, SnapshotStore,
    StreamId, Timestamp,
};
use sqlx::{postgres::PgRow, Row};

use crate::backend::{clamp_i64, count_i64, to_u64};
use crate::{error, PgBackend};

/// The columns a snapshot read selects.
const COLUMNS: &str =
    "stream_id, version, schema_revision, payload, content_type, content_encoding, taken_at";

fn snapshot_from_row(row: &PgRow) -> Result<Snapshot> {
    let get = |e: sqlx::Error| Error::corrupt(format!("snapshot row: {e}"));
    let stream: String = row.try_get("stream_id").map_err(get)?;
    let revision: i64 = row.try_get("schema_revision").map_err(get)?;
    let payload: Vec<u8> = row.try_get("payload").map_err(get)?;
    let content_type: String = row.try_get("content_type").map_err(get)?;
    let content_encoding: String = row.try_get("content_encoding").map_err(get)?;
    Ok(Snapshot {
        stream_id: StreamId::new(stream).map_err(|e| Error::corrupt(format!("stored stream id: {e}")))?,
        version: to_u64(row.try_get("version").map_err(get)?)?,
        schema_revision: u32::try_from(revision).map_err(|_| Error::corrupt("snapshot schema revision"))?,
        payload: payload.into(),
        content_type: content_type.parse::<ContentType>()?,
        content_encoding: content_encoding.parse::<ContentEncoding>()?,
        taken_at: Timestamp::from_millis(row.try_get("taken_at").map_err(get)?),
    })
}

impl PgBackend {
    async fn load_snapshot(&self, stream: &StreamId, version: i64) -> Result<Option<Snapshot>> {
        self.begin()?;
        self.trip();
        let sql = format!(
            "SELECT {COLUMNS} FROM __SCHEMA__.snapshots WHERE stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT 1"
        );
        let row = sqlx::query(&self.sql(&sql))
            .bind(stream.as_str())
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(error::sent)?;
        row.as_ref().map(snapshot_from_row).transpose()
    }
}

#[async_trait]
impl SnapshotStore for PgBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %snapshot.stream_id, version = snapshot.version))]
    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        self.begin()?;
        self.limits.check_document(snapshot.payload.len())?;
        let version = i64::try_from(check_version(snapshot.version)?)
            .map_err(|_| Error::invalid("snapshot version beyond i64"))?;
        self.trip();
        sqlx::query(&self.sql(
            "INSERT INTO __SCHEMA__.snapshots (stream_id, version, schema_revision, payload, content_type, content_encoding, taken_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (stream_id, version) DO UPDATE SET schema_revision = excluded.schema_revision,
                 payload = excluded.payload, content_type = excluded.content_type,
                 content_encoding = excluded.content_encoding, taken_at = excluded.taken_at",
        ))
        .bind(snapshot.stream_id.as_str())
        .bind(version)
        .bind(i64::from(snapshot.schema_revision))
        .bind(snapshot.payload.as_ref())
        .bind(snapshot.content_type.as_str())
        .bind(snapshot.content_encoding.as_str())
        .bind(snapshot.taken_at.as_millis())
        .execute(&self.pool)
        .await
        .map_err(error::sent)?;
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream))]
    async fn load_latest(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        self.load_snapshot(stream, i64::MAX).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream, version = version))]
    async fn load_at_or_before(&self, stream: &StreamId, version: u64) -> Result<Option<Snapshot>> {
        self.load_snapshot(stream, clamp_i64(version)).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream))]
    async fn delete(&self, stream: &StreamId) -> Result<u64> {
        self.begin()?;
        self.trip();
        let done = sqlx::query(&self.sql("DELETE FROM __SCHEMA__.snapshots WHERE stream_id = $1"))
            .bind(stream.as_str())
            .execute(&self.pool)
            .await
            .map_err(error::sent)?;
        Ok(done.rows_affected())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", limit = limit))]
    async fn list(&self, after: Option<&SnapshotKey>, limit: usize) -> Result<Vec<SnapshotKey>> {
        self.begin()?;
        self.trip();
        let rows = sqlx::query(&self.sql(
            "SELECT stream_id, version FROM __SCHEMA__.snapshots
             WHERE $1::text IS NULL OR (stream_id, version) > ($1::text COLLATE \"C\", $2::bigint)
             ORDER BY stream_id, version LIMIT $3",
        ))
        .bind(after.map(|k| k.stream_id.as_str()))
        .bind(after.map_or(0, |k| clamp_i64(k.version)))
        .bind(count_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(error::sent)?;
        rows.iter()
            .map(|row| {
                let stream: String = row.try_get("stream_id").map_err(error::sent)?;
                Ok(SnapshotKey {
                    stream_id: StreamId::new(stream)
                        .map_err(|e| Error::corrupt(format!("stored stream id: {e}")))?,
                    version: to_u64(row.try_get("version").map_err(error::sent)?)?,
                })
            })
            .collect()
    }
}
