//! [`EventStore`] for [`PgBackend`]: appends in one round trip (a batch through the PL/pgSQL
//! function, a single event through plain statements where it can), reads by stream.

use async_trait::async_trait;
use cqrs_core::{
    AppendOutcome, Batch, Capabilities, Checkpoint, DeleteMode, Error, EventData, EventFilter, EventStore,
    ExpectedVersion, RecordedEvent, Result, StoreIdentity, StreamId, StreamPage, StreamState,
};
use futures::TryStreamExt as _;
use sqlx::{postgres::PgRow, Row};

use crate::backend::{
    checked_head, clamp_i64, count_i64, cut_bytes, events_from_rows, position, stream_state, to_u64,
    EventColumns,
};
use crate::error::{self, Sent};
use crate::PgBackend;

/// The append statement (the function of the eighth migration): a plain expression, one
/// bigint[] back.
pub(crate) const APPEND: &str =
    "SELECT __SCHEMA__.append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// The append function's arguments for an expectation: kind and version.
fn expected_args(expected: ExpectedVersion) -> (i16, i64) {
    match expected.normalized() {
        ExpectedVersion::Any => (0, 0),
        ExpectedVersion::NoStream => (1, 0),
        ExpectedVersion::StreamExists => (2, 0),
        // A version beyond i64 never matches a stored one: -1 never does either.
        ExpectedVersion::Exact(v) => (3, i64::try_from(v).unwrap_or(-1)),
    }
}

/// A single event, in one round trip (see the file): plain statements when the stream
/// exists and the expectation holds, the append function otherwise.
const APPEND_ONE: &str = include_str!("sql/append_one.sql");

/// Runs [`APPEND_ONE`] for `event` on `executor` and turns its row into the outcome; fails
/// like [`run_append`] (a committed id whose expectation still holds is
/// [`Error::AlreadyExists`]).
pub(crate) async fn run_append_one<'e, E>(
    executor: E,
    sql: &str,
    stream: &StreamId,
    expected: ExpectedVersion,
    event: &EventData,
) -> Result<AppendOutcome>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let (kind, version) = expected_args(expected);
    let bytes = i64::try_from(event.payload.len()).unwrap_or(i64::MAX);
    let row: Vec<Option<i64>> = sqlx::query_scalar(sql)
        .bind(stream.as_str())
        .bind(kind)
        .bind(version)
        .bind(event.event_id.as_uuid())
        .bind(event.event_type.as_str())
        .bind(i64::from(event.schema_version))
        .bind(event.content_type.as_str())
        .bind(event.content_encoding.as_str())
        .bind(event.metadata.to_json())
        .bind(event.payload.as_ref())
        .bind(bytes)
        .fetch_one(executor)
        .await
        .map_err(|e| error::map(e, Sent::Maybe, Some(stream)))?;
    Reply::from_array(&row)?.outcome(stream, expected)
}

/// Asks whether `events` are already committed in `stream`, in order (see the sixth migration).
const RESEND: &str = "SELECT * FROM __SCHEMA__.append_resend($1, $2)";

/// Runs the append function on `executor` and turns its row into the outcome.
///
/// A batch whose event ids are already committed fails here with [`Error::AlreadyExists`]
/// when its expectation still holds: the function leaves the probe of every id off the common
/// path. The caller then decides with [`PgBackend::resolve_duplicate`], on a connection whose
/// transaction did not abort.
pub(crate) async fn run_append<'e, E>(
    executor: E,
    sql: &str,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[EventData],
) -> Result<AppendOutcome>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let (kind, version) = expected_args(expected);
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| *e.event_id.as_uuid()).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let schema_versions: Vec<i64> = events.iter().map(|e| i64::from(e.schema_version)).collect();
    let content_types: Vec<&str> = events.iter().map(|e| e.content_type.as_str()).collect();
    let encodings: Vec<&str> = events.iter().map(|e| e.content_encoding.as_str()).collect();
    let metadata: Vec<String> = events.iter().map(|e| e.metadata.to_json()).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_ref()).collect();
    // The stream's running payload total (see the sixth migration): lets a read that fits
    // the byte limit skip finding the cut.
    let bytes = payloads.iter().fold(0i64, |sum, p| {
        sum.saturating_add(i64::try_from(p.len()).unwrap_or(i64::MAX))
    });
    let row: Vec<Option<i64>> = sqlx::query_scalar(sql)
        .bind(stream.as_str())
        .bind(kind)
        .bind(version)
        .bind(ids)
        .bind(types)
        .bind(schema_versions)
        .bind(content_types)
        .bind(encodings)
        .bind(metadata)
        .bind(payloads)
        .bind(bytes)
        .fetch_one(executor)
        .await
        .map_err(|e| error::map(e, Sent::Maybe, Some(stream)))?;
    Reply::from_array(&row)?.outcome(stream, expected)
}

impl PgBackend {
    /// After an append failed with `failed` (a duplicate event id), decides on `executor`
    /// (not the aborted transaction) whether the batch was a re-send of a commit of
    /// `stream`: its outcome if so, `failed` if no id is in `stream` (the ids belong to
    /// another stream), an idempotency mismatch if only some are.
    pub(crate) async fn resolve_duplicate<'e, E>(
        &self,
        executor: E,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[EventData],
        failed: Error,
    ) -> Result<AppendOutcome>
    where
        E: sqlx::Executor<'e, Database = sqlx::Postgres>,
    {
        self.trip();
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| *e.event_id.as_uuid()).collect();
        let row = sqlx::query(&self.sql(RESEND))
            .bind(stream.as_str())
            .bind(ids)
            .fetch_one(executor)
            .await
            .map_err(|e| error::map(e, Sent::Maybe, Some(stream)))?;
        match Reply::from_resend(&row)? {
            None => Err(failed),
            Some(reply) => reply.outcome(stream, expected),
        }
    }
}

/// What the append function decided (see the eighth migration).
#[derive(Debug)]
struct Reply {
    /// 0 written, 1 already committed (an idempotent re-send), 2 empty, 3 conflict.
    outcome: i64,
    state: Option<i64>,
    current: Option<i64>,
    first: Option<i64>,
    last: Option<i64>,
    tx: Option<i64>,
    seq: Option<i64>,
}

impl Reply {
    /// `append_events`' array: outcome, state, current, first and last version, tx_id, seq.
    fn from_array(values: &[Option<i64>]) -> Result<Self> {
        let &[Some(outcome), state, current, first, last, tx, seq] = values else {
            return Err(Error::corrupt(format!("append result: {values:?}")));
        };
        Ok(Reply {
            outcome,
            state,
            current,
            first,
            last,
            tx,
            seq,
        })
    }

    /// `append_resend`'s row: `None` when no id of the batch is in the stream.
    fn from_resend(row: &PgRow) -> Result<Option<Self>> {
        let get = |e: sqlx::Error| Error::corrupt(format!("re-send result: {e}"));
        let outcome: Option<i16> = row.try_get("outcome").map_err(get)?;
        let Some(outcome) = outcome else {
            return Ok(None);
        };
        let state: Option<i16> = row.try_get("state").map_err(get)?;
        Ok(Some(Reply {
            outcome: outcome.into(),
            state: state.map(i64::from),
            current: row.try_get("current_version").map_err(get)?,
            first: row.try_get("first_version").map_err(get)?,
            last: row.try_get("last_version").map_err(get)?,
            tx: row.try_get("tx_id").map_err(get)?,
            seq: row.try_get("seq").map_err(get)?,
        }))
    }

    /// The outcome, or the conflict.
    fn outcome(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<AppendOutcome> {
        let need = |v: Option<i64>, what: &str| {
            v.ok_or_else(|| Error::corrupt(format!("append result without its {what}: {self:?}")))
        };
        let current = need(self.current, "current version")?;
        match self.outcome {
            0 | 1 => Ok(AppendOutcome {
                first_version: to_u64(need(self.first, "first version")?)?,
                next_expected: to_u64(need(self.last, "last version")?)?,
                position: Some(position(need(self.tx, "tx_id")?, need(self.seq, "seq")?)?),
            }),
            2 => {
                let current = to_u64(current)?;
                Ok(AppendOutcome {
                    first_version: current + 1,
                    next_expected: current,
                    position: None,
                })
            }
            3 => {
                let state = i16::try_from(need(self.state, "state")?)
                    .map_err(|_| Error::corrupt(format!("append result: {self:?}")))?;
                Err(Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual: stream_state(Some(state), current)?,
                })
            }
            other => Err(Error::corrupt(format!("append outcome {other}"))),
        }
    }
}

impl PgBackend {
    /// A stream page statement `sql` (schema substituted) with its arguments bound: `$1`
    /// stream, `$2` bound, `$3` at most `max` events, `$4` the read byte limit.
    fn page_query<'q>(
        &self,
        sql: &'q str,
        stream: &'q StreamId,
        bound: i64,
        max: usize,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        self.trip();
        sqlx::query(sql)
            .bind(stream.as_str())
            .bind(bound)
            .bind(count_i64(max))
            .bind(count_i64(self.limits.max_read_bytes))
    }

    /// Runs a stream page statement (see [`PgBackend::page_query`]) and collects its rows.
    pub(crate) async fn page_rows(
        &self,
        template: &str,
        stream: &StreamId,
        bound: i64,
        max: usize,
    ) -> Result<Vec<PgRow>> {
        let sql = self.sql(template);
        self.page_query(&sql, stream, bound, max)
            .fetch_all(&self.pool)
            .await
            .map_err(error::sent)
    }

    /// Reads a page of a stream with `template` (forward or backward); one round trip, tombstoned streams
    /// included.
    async fn read_page(
        &self,
        template: &str,
        stream: &StreamId,
        bound: i64,
        max: usize,
        backward: bool,
    ) -> Result<Vec<RecordedEvent>> {
        self.begin()?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let rows = self.page_rows(template, stream, bound, max).await?;
        // A tombstone is one row of state 3; it comes alone (the stream has no live events).
        if let Some(first) = rows.first() {
            let state: i16 = first
                .try_get("state")
                .map_err(|e| Error::corrupt(format!("stream row: {e}")))?;
            if state == 3 {
                return Err(Error::StreamDeleted {
                    stream: stream.clone(),
                });
            }
        }
        Ok(self.order_page(events_from_rows(&rows, Some(stream))?, backward))
    }

    /// A stream page's events in page order, cut at the read byte limit. The statements
    /// need not order their rows: sorting here keeps the page ordered whatever plan runs.
    fn order_page(&self, mut events: Vec<RecordedEvent>, backward: bool) -> Vec<RecordedEvent> {
        if backward {
            events.sort_by_key(|e| std::cmp::Reverse(e.version));
        } else {
            events.sort_by_key(|e| e.version);
        }
        cut_bytes(events, self.limits.max_read_bytes)
    }

    /// The state of a stream.
    pub(crate) async fn state_of(&self, stream: &StreamId) -> Result<StreamState> {
        self.trip();
        let row =
            sqlx::query(&self.sql("SELECT state, version FROM __SCHEMA__.streams WHERE stream_id = $1"))
                .bind(stream.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(error::sent)?;
        match row {
            None => Ok(StreamState::Missing),
            Some(row) => stream_state(
                Some(row.try_get("state").map_err(error::sent)?),
                row.try_get("version").map_err(error::sent)?,
            ),
        }
    }

    async fn delete_in_tx(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()> {
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        let state = self.lock_stream(&mut tx, stream).await?.state(stream)?;
        if state == StreamState::Tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        if !expected.is_satisfied_by(state) {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: state,
            });
        }
        if state == StreamState::Missing {
            return Ok(());
        }
        let update = match mode {
            DeleteMode::Soft => {
                "UPDATE __SCHEMA__.streams SET state = 2, visible_from = greatest(visible_from, version + 1) WHERE stream_id = $1"
            }
            DeleteMode::Tombstone => "UPDATE __SCHEMA__.streams SET state = 3 WHERE stream_id = $1",
        };
        self.trip();
        sqlx::query(&self.sql(update))
            .bind(stream.as_str())
            .execute(&mut *tx)
            .await
            .map_err(error::sent)?;
        self.trip();
        sqlx::query(&self.sql("DELETE FROM __SCHEMA__.snapshots WHERE stream_id = $1"))
            .bind(stream.as_str())
            .execute(&mut *tx)
            .await
            .map_err(error::sent)?;
        self.trip();
        tx.commit().await.map_err(error::sent)
    }
}

#[async_trait]
impl EventStore for PgBackend {
    fn capabilities(&self) -> Capabilities {
        PgBackend::CAPABILITIES
    }

    fn limits(&self) -> cqrs_core::Limits {
        self.limits
    }

    fn identity(&self) -> StoreIdentity {
        self.identity_value()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream, expected = %expected, events = events.len()))]
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendOutcome> {
        self.begin()?;
        self.limits.check_batch(&events)?;
        let mut conn = self.conn().await?;
        self.trip();
        let result = match events.as_slice() {
            [event] => run_append_one(&mut *conn, &self.sql(APPEND_ONE), stream, expected, event).await,
            _ => run_append(&mut *conn, &self.sql(APPEND), stream, expected, &events).await,
        };
        match result {
            Err(failed @ Error::AlreadyExists { .. }) => {
                self.resolve_duplicate(&mut *conn, stream, expected, &events, failed)
                    .await
            }
            result => result,
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream, from = from, max = max))]
    async fn read_stream(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.begin()?;
        if max == 0 {
            return Ok(Vec::new());
        }
        // Streamed, not collected: each row is decoded while the server still sends the
        // rest, so on two cores the decode of a long page overlaps the server's work.
        let sql = self.sql(include_str!("sql/read_stream.sql"));
        let mut rows = self
            .page_query(&sql, stream, clamp_i64(from), max)
            .fetch(&self.pool);
        let Some(first) = rows.try_next().await.map_err(error::sent)? else {
            return Ok(Vec::new());
        };
        let get = |e: sqlx::Error| Error::corrupt(format!("stream row: {e}"));
        let state: i16 = first.try_get("state").map_err(get)?;
        let fits: bool = first.try_get("fits").map_err(get)?;
        let version: Option<i64> = first.try_get("version").map_err(get)?;
        if state == 3 {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        if state == 1 && !fits {
            // Over the byte limit, or of unknown size: the statement that finds the cut.
            drop(rows);
            return self
                .read_page(
                    include_str!("sql/read_stream_cut.sql"),
                    stream,
                    clamp_i64(from),
                    max,
                    false,
                )
                .await;
        }
        if version.is_none() {
            // Nothing to give (a NULL version only ever comes alone).
            return Ok(Vec::new());
        }
        let columns = EventColumns::of(&first)?;
        let mut events = Vec::with_capacity(max.min(1024));
        events.push(columns.event(&first, Some(stream))?);
        while let Some(row) = rows.try_next().await.map_err(error::sent)? {
            events.push(columns.event(&row, Some(stream))?);
        }
        Ok(self.order_page(events, false))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream, from = ?from, max = max))]
    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        from: Option<u64>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let bound = from.map_or(i64::MAX, clamp_i64);
        self.read_page(
            include_str!("sql/read_stream_backward.sql"),
            stream,
            bound,
            max,
            true,
        )
        .await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream))]
    async fn stream_state(&self, stream: &StreamId) -> Result<StreamState> {
        self.begin()?;
        self.state_of(stream).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", max = max))]
    async fn read_all(&self, from: &Checkpoint, max: usize, filter: &EventFilter) -> Result<Batch> {
        self.begin()?;
        self.read_log(from, max, filter).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream, expected = %expected, mode = ?mode))]
    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()> {
        self.begin()?;
        self.delete_in_tx(stream, expected, mode).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", stream = %stream, version = version))]
    async fn truncate_before(&self, stream: &StreamId, version: u64) -> Result<()> {
        self.begin()?;
        self.trip();
        let row = sqlx::query(&self.sql(include_str!("sql/truncate.sql")))
            .bind(stream.as_str())
            .bind(clamp_i64(version))
            .fetch_one(&self.pool)
            .await
            .map_err(error::sent)?;
        let state: Option<i16> = row.try_get("state").map_err(error::sent)?;
        let stored: Option<i64> = row.try_get("version").map_err(error::sent)?;
        let last: i64 = row.try_get("last").map_err(error::sent)?;
        // The statement wrote nothing if this fails or finds a tombstone.
        if checked_head(stream, state, stored.unwrap_or(0), last)? == StreamState::Tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", limit = limit))]
    async fn list_streams(&self, after: Option<&StreamId>, limit: usize) -> Result<StreamPage> {
        self.begin()?;
        if limit == 0 {
            return Err(Error::invalid("list_streams limit must be at least 1"));
        }
        self.trip();
        let names: Vec<String> = sqlx::query_scalar(&self.sql(
            "SELECT stream_id FROM __SCHEMA__.streams
             WHERE state = 1 AND ($1::text IS NULL OR stream_id > $1::text COLLATE \"C\")
             ORDER BY stream_id LIMIT $2",
        ))
        .bind(after.map(StreamId::as_str))
        .bind(count_i64(limit).saturating_add(1))
        .fetch_all(&self.pool)
        .await
        .map_err(error::sent)?;
        let more = names.len() > limit;
        let streams = names
            .into_iter()
            .take(limit)
            .map(|n| StreamId::new(n).map_err(|e| Error::corrupt(format!("stored stream id: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        let next = if more { streams.last().cloned() } else { None };
        Ok(StreamPage { streams, next })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres"))]
    async fn close(&self) -> Result<()> {
        self.shut().await;
        Ok(())
    }
}
