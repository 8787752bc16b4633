//! [`Admin`] for [`PgBackend`]: raw reads, imports and state changes for operators.

use std::collections::HashMap;

use async_trait::async_trait;
use cqrs_core::{
    decide_import, Admin, Error, EventData, ImportedEvent, Position, Quarantined, RecordedEvent, Result,
    StreamId, StreamState,
};
use sqlx::{PgConnection, Row};

use crate::backend::{
    checked_head, clamp_i64, count_i64, cut_bytes, events_from_rows, position, stream_state, to_u64,
    MillisTz, Xid8, PARTITION,
};
use crate::error::{self, Sent};
use crate::PgBackend;

/// A stream's head read under its lock, with the last version stored in its events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockedHead {
    /// The row's state and version; `None` when the stream has no row.
    row: Option<(i16, i64)>,
    /// The last version stored in the stream's events (0 without any).
    last: i64,
}

impl LockedHead {
    /// The head's state, refused as corrupt when no write stores such a head (see
    /// [`checked_head`]): for calls that write to the stream.
    pub(crate) fn state(&self, stream: &StreamId) -> Result<StreamState> {
        let (state, version) = self.row.map_or((None, 0), |(s, v)| (Some(s), v));
        checked_head(stream, state, version, self.last)
    }
}

impl PgBackend {
    /// Takes the stream's append lock and reads its head (see [`LockedHead`]).
    pub(crate) async fn lock_stream(&self, conn: &mut PgConnection, stream: &StreamId) -> Result<LockedHead> {
        self.trip();
        sqlx::query(&self.sql("SELECT pg_advisory_xact_lock(__SCHEMA__.stream_lock_key($1))"))
            .bind(stream.as_str())
            .execute(&mut *conn)
            .await
            .map_err(error::sent)?;
        self.trip();
        let row = sqlx::query(&self.sql(include_str!("sql/stream_head.sql")))
            .bind(stream.as_str())
            .fetch_one(&mut *conn)
            .await
            .map_err(error::sent)?;
        let state: Option<i16> = row.try_get("state").map_err(error::sent)?;
        let version: Option<i64> = row.try_get("version").map_err(error::sent)?;
        Ok(LockedHead {
            // The version column is NOT NULL: both are present or the row is missing.
            row: state.zip(version),
            last: row.try_get("last").map_err(error::sent)?,
        })
    }
}

/// The event row a log position names, as the statements bind it: the transaction id as
/// text (cast to `xid8` there) and the sequence. `None` for a position no row can have:
/// another partition, a third offset other than 0, a sequence past `bigint`.
fn row_of(position: &Position) -> Option<(String, i64)> {
    let [tx, seq, 0] = position.offset else {
        return None;
    };
    if position.partition != PARTITION {
        return None;
    }
    Some((tx.to_string(), i64::try_from(seq).ok()?))
}

/// The number of a stream state in the `streams` table.
fn state_code(state: StreamState) -> i16 {
    match state {
        StreamState::Missing => 0,
        StreamState::Live(_) => 1,
        StreamState::SoftDeleted(_) => 2,
        StreamState::Tombstoned => 3,
    }
}

#[async_trait]
impl Admin for PgBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", limit = limit))]
    async fn list_all_streams(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, StreamState)>> {
        self.begin()?;
        self.trip();
        let rows = sqlx::query(&self.sql(
            "SELECT stream_id, state, version FROM __SCHEMA__.streams
             WHERE $1::text IS NULL OR stream_id > $1::text COLLATE \"C\"
             ORDER BY stream_id LIMIT $2",
        ))
        .bind(after.map(StreamId::as_str))
        .bind(count_i64(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(error::sent)?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("stream_id").map_err(error::sent)?;
                Ok((
                    StreamId::new(name).map_err(|e| Error::corrupt(format!("stored stream id: {e}")))?,
                    stream_state(
                        Some(row.try_get("state").map_err(error::sent)?),
                        row.try_get("version").map_err(error::sent)?,
                    )?,
                ))
            })
            .collect()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream, from = from, max = max))]
    async fn read_raw(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.begin()?;
        let rows = self
            .page_rows(include_str!("sql/read_raw.sql"), stream, clamp_i64(from), max)
            .await?;
        let events = events_from_rows(&rows, None)?;
        Ok(cut_bytes(events, self.limits.max_read_bytes))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream, events = events.len()))]
    async fn import_commit(&self, stream: &StreamId, events: Vec<ImportedEvent>) -> Result<()> {
        self.begin()?;
        let data: Vec<EventData> = events.iter().map(|e| e.data.clone()).collect();
        self.limits.check_batch(&data)?;
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        let state = self.lock_stream(&mut tx, stream).await?.state(stream)?;
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| *e.data.event_id.as_uuid()).collect();
        self.trip();
        let rows = sqlx::query(&self.sql(
            "SELECT event_id, version FROM __SCHEMA__.events WHERE stream_id = $1 AND event_id = ANY($2)",
        ))
        .bind(stream.as_str())
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(error::sent)?;
        let mut committed = HashMap::new();
        for row in &rows {
            let id: uuid::Uuid = row.try_get("event_id").map_err(error::sent)?;
            committed.insert(id, to_u64(row.try_get("version").map_err(error::sent)?)?);
        }
        if !decide_import(stream, state, &events, |id| committed.get(id.as_uuid()).copied())? {
            return Ok(());
        }
        let versions: Vec<i64> = events.iter().map(|e| clamp_i64(e.version)).collect();
        let types: Vec<&str> = events.iter().map(|e| e.data.event_type.as_str()).collect();
        let schema_versions: Vec<i64> = events.iter().map(|e| i64::from(e.data.schema_version)).collect();
        let content_types: Vec<&str> = events.iter().map(|e| e.data.content_type.as_str()).collect();
        let encodings: Vec<&str> = events.iter().map(|e| e.data.content_encoding.as_str()).collect();
        let metadata: Vec<String> = events.iter().map(|e| e.data.metadata.to_json()).collect();
        let payloads: Vec<&[u8]> = events.iter().map(|e| e.data.payload.as_ref()).collect();
        let recorded: Vec<i64> = events.iter().map(|e| e.recorded_at.as_millis()).collect();
        self.trip();
        sqlx::query(&self.sql(include_str!("sql/import.sql")))
            .bind(stream.as_str())
            .bind(versions)
            .bind(&ids)
            .bind(types)
            .bind(schema_versions)
            .bind(content_types)
            .bind(encodings)
            .bind(metadata)
            .bind(payloads)
            .bind(recorded)
            .execute(&mut *tx)
            .await
            .map_err(|e| error::map(e, Sent::Maybe, Some(stream)))?;
        // decide_import checked the versions are contiguous and fit i64.
        let last = events.last().map_or(0, |e| e.version);
        self.trip();
        sqlx::query(&self.sql(
            "INSERT INTO __SCHEMA__.streams AS s (stream_id, state, version, bytes)
             VALUES ($1, 1, $2, (SELECT sum(octet_length(e.payload)) FROM __SCHEMA__.events e
                                 WHERE e.stream_id = $1))
             ON CONFLICT (stream_id) DO UPDATE SET state = 1, version = excluded.version,
                 bytes = excluded.bytes",
        ))
        .bind(stream.as_str())
        .bind(clamp_i64(last))
        .execute(&mut *tx)
        .await
        .map_err(error::sent)?;
        self.trip();
        tx.commit().await.map_err(error::sent)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream, state = %state))]
    async fn set_stream_state(&self, stream: &StreamId, state: StreamState) -> Result<()> {
        self.begin()?;
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        // Not checked: this is how an operator repairs a corrupt head, and the new head is
        // checked against the stored events below.
        let head = self.lock_stream(&mut tx, stream).await?;
        let (exists, last) = (head.row.is_some(), to_u64(head.last)?);
        let contradicts = |what: &str| {
            Err(Error::invalid(format!(
                "cannot set {stream} to {state}: {what} (its last stored version is {last})"
            )))
        };
        match state {
            StreamState::Missing if last > 0 => return contradicts("it holds events"),
            StreamState::Missing if !exists => return Ok(()),
            StreamState::Live(v) | StreamState::SoftDeleted(v) if v == 0 || v != last => {
                return contradicts("the version must be its last stored version")
            }
            _ => {}
        }
        let code = state_code(state);
        self.trip();
        sqlx::query(&self.sql(
            "INSERT INTO __SCHEMA__.streams AS s (stream_id, state, version, visible_from)
             VALUES ($1, $2, $3, CASE WHEN $2 = 2 THEN $3 + 1 ELSE 1 END)
             ON CONFLICT (stream_id) DO UPDATE SET state = $2, version = $3,
                 visible_from = CASE WHEN $2 = 2 THEN greatest(s.visible_from, $3 + 1) ELSE s.visible_from END",
        ))
        .bind(stream.as_str())
        .bind(code)
        .bind(clamp_i64(last))
        .execute(&mut *tx)
        .await
        .map_err(error::sent)?;
        self.trip();
        tx.commit().await.map_err(error::sent)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", position = %position))]
    async fn quarantine(&self, position: Position, reason: &str) -> Result<()> {
        self.begin()?;
        let not_found = || Error::NotFound {
            what: format!("log entry at {position}"),
        };
        let (tx, seq) = row_of(&position).ok_or_else(not_found)?;
        self.trip();
        let found: bool = sqlx::query_scalar(&self.sql(include_str!("sql/quarantine.sql")))
            .bind(tx)
            .bind(seq)
            .bind(reason)
            .fetch_one(&self.pool)
            .await
            .map_err(error::sent)?;
        if !found {
            return Err(not_found());
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres"))]
    async fn quarantined(&self) -> Result<Vec<Quarantined>> {
        self.begin()?;
        self.trip();
        let rows = sqlx::query(&self.sql(include_str!("sql/quarantined.sql")))
            .fetch_all(&self.pool)
            .await
            .map_err(error::sent)?;
        let get = |e: sqlx::Error| Error::corrupt(format!("quarantine row: {e}"));
        rows.iter()
            .map(|row| {
                let Xid8(tx) = row.try_get("tx").map_err(get)?;
                let MillisTz(at) = row.try_get("at").map_err(get)?;
                Ok(Quarantined::new(
                    position(tx, row.try_get("seq").map_err(get)?)?,
                    row.try_get::<String, _>("reason").map_err(get)?,
                    at,
                ))
            })
            .collect()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", position = %position))]
    async fn release(&self, position: Position) -> Result<bool> {
        self.begin()?;
        // No row can be at such a position, so none is quarantined there.
        let Some((tx, seq)) = row_of(&position) else {
            return Ok(false);
        };
        self.trip();
        let done = sqlx::query(&self.sql(include_str!("sql/release.sql")))
            .bind(tx)
            .bind(seq)
            .execute(&self.pool)
            .await
            .map_err(error::sent)?;
        Ok(done.rows_affected() > 0)
    }
}
