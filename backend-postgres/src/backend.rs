//! [`PgBackend`]: one pool, every store trait.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        OnceLock,
    },
};

use cqrs_core::{
    Capabilities, ContentEncoding, ContentType, Error, EventData, EventId, Limits, Metadata, Position,
    RecordedEvent, Result, StoreIdentity, Stores, StreamId, StreamState, Timestamp,
};
use sqlx::{
    pool::PoolConnection,
    postgres::{PgRow, PgTypeInfo, PgValueFormat, PgValueRef},
    Column, PgPool, Postgres, Row, TypeInfo,
};

use crate::{error, schema::SchemaName, PgStoreOptions};

/// The partition of the PostgreSQL log (there is one: a total order).
pub(crate) const PARTITION: u32 = 0;

/// The PostgreSQL backend: one [`PgPool`] implementing every store trait of `cqrs-core`.
///
/// Create it with [`PgBackend::connect`], then run [`PgBackend::migrate`] once (it is
/// idempotent and safe under concurrent first use).
pub struct PgBackend {
    pub(crate) pool: PgPool,
    pub(crate) schema: SchemaName,
    pub(crate) limits: Limits,
    identity: OnceLock<StoreIdentity>,
    closed: AtomicBool,
    trips: AtomicU64,
}

/// The pool retries a refused connect until its timeout and then reports only that it timed
/// out, hiding why. One direct connect (bounded by the same timeout) recovers the reason, so
/// the error says "connection refused" or "password authentication failed" (the latter
/// permanent, not retryable), never just "pool timed out".
async fn why_not_connected(options: &PgStoreOptions) -> Error {
    use sqlx::{ConnectOptions, Connection};
    let timeout = options.get_connect_timeout();
    match tokio::time::timeout(timeout, options.connect_options().connect()).await {
        Ok(Err(e)) => error::not_sent(e),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Error::unavailable(
                cqrs_core::Outcome::NotSent,
                format!("no connection to PostgreSQL within {timeout:?}, though one direct connect then succeeded: retry"),
            )
        }
        Err(_) => error::not_sent(sqlx::Error::PoolTimedOut),
    }
}

impl PgBackend {
    /// The capabilities every PostgreSQL backend declares.
    pub(crate) const CAPABILITIES: Capabilities = Capabilities {
        partitions: 1,
        total_order: true,
        global_event_id_uniqueness: true,
        truncate: true,
    };

    /// Connects a pool (lazily: the first call opens the first connection) and, if the
    /// schema is already migrated, loads the store identity.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the server cannot be reached (the text says why, e.g.
    /// connection refused); [`Error::Backend`], not retryable, if it refuses the login or
    /// the database does not exist.
    pub async fn connect(options: &PgStoreOptions) -> Result<std::sync::Arc<Self>> {
        let pool = match options
            .pool_options()
            .connect_with(options.connect_options())
            .await
        {
            Ok(pool) => pool,
            Err(sqlx::Error::PoolTimedOut) => return Err(why_not_connected(options).await),
            Err(e) => return Err(error::not_sent(e)),
        };
        let backend = std::sync::Arc::new(PgBackend {
            pool,
            schema: options.schema().clone(),
            limits: options.get_limits(),
            identity: OnceLock::new(),
            closed: AtomicBool::new(false),
            trips: AtomicU64::new(0),
        });
        // Not migrated yet is fine: `migrate` loads the identity.
        let _ = backend.load_identity().await;
        Ok(backend)
    }

    /// Every store of this backend as trait objects sharing its pool.
    pub fn stores(self: &std::sync::Arc<Self>) -> Stores {
        Stores::from_backend(std::sync::Arc::clone(self))
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema this backend uses.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// Statements sent to the server so far (the "round trips").
    pub fn round_trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// Refuses calls after `close`.
    pub(crate) fn begin(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Counts one statement sent.
    pub(crate) fn trip(&self) {
        self.trips.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the backend closed and closes the pool (waiting for connections in use).
    pub(crate) async fn shut(&self) {
        self.closed.store(true, Ordering::Release);
        self.pool.close().await;
    }

    /// A pooled connection; failing here means nothing was sent.
    pub(crate) async fn conn(&self) -> Result<PoolConnection<Postgres>> {
        self.pool.acquire().await.map_err(error::not_sent)
    }

    /// `template` with the schema substituted.
    pub(crate) fn sql(&self, template: &str) -> String {
        self.schema.sql(template)
    }

    /// The store identity (a placeholder before the schema is migrated).
    pub(crate) fn identity_value(&self) -> StoreIdentity {
        self.identity.get().cloned().unwrap_or_else(|| StoreIdentity {
            id: format!("unmigrated:{}", self.schema.as_str()),
            epoch: 0,
        })
    }

    /// Reads the identity row written by the first migration.
    pub(crate) async fn load_identity(&self) -> Result<StoreIdentity> {
        if let Some(id) = self.identity.get() {
            return Ok(id.clone());
        }
        self.trip();
        let row = sqlx::query(&self.sql("SELECT store_id::text AS id, epoch FROM __SCHEMA__.meta"))
            .fetch_one(&self.pool)
            .await
            .map_err(error::sent)?;
        let identity = StoreIdentity {
            id: row.try_get("id").map_err(error::sent)?,
            epoch: to_u64(row.try_get("epoch").map_err(error::sent)?)?,
        };
        Ok(self.identity.get_or_init(|| identity).clone())
    }
}

impl fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBackend")
            .field("schema", &self.schema.as_str())
            .field("identity", &self.identity.get())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// An `i64` from the database as `u64`.
pub(crate) fn to_u64(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::corrupt(format!("negative stored number {v}")))
}

/// A `u64` as `i64`, saturating (for bounds that may exceed every stored value).
pub(crate) fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A count as `i64`, saturating.
pub(crate) fn count_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The log position of a row.
pub(crate) fn position(tx: i64, seq: i64) -> Result<Position> {
    Ok(Position::new(PARTITION, [to_u64(tx)?, to_u64(seq)?, 0]))
}

/// A stream state from the `streams` columns.
pub(crate) fn stream_state(state: Option<i16>, version: i64) -> Result<StreamState> {
    Ok(match state {
        None | Some(0) => StreamState::Missing,
        Some(1) => StreamState::Live(to_u64(version)?),
        Some(2) => StreamState::SoftDeleted(to_u64(version)?),
        Some(3) => StreamState::Tombstoned,
        Some(other) => return Err(Error::corrupt(format!("unknown stream state {other}"))),
    })
}

/// The state of a stream head read with `last`, the last version stored in its events, for
/// a call about to write to it: a head no write stores (a state that is no state, a negative
/// version, a version behind its events, events without a head or under state 0) is
/// [`Error::Corrupt`], and
/// nothing may be written until an operator repairs it with `Admin::set_stream_state`. A
/// tombstone is never written to, whatever its version.
pub(crate) fn checked_head(
    stream: &StreamId,
    state: Option<i16>,
    version: i64,
    last: i64,
) -> Result<StreamState> {
    let corrupt = |what: String| Err(Error::corrupt(format!("stream {stream}: its head {what}")));
    match state {
        Some(3) => Ok(StreamState::Tombstoned),
        Some(code @ (..=-1 | 4..)) => corrupt(format!("has state {code}, which is no stream state (0 to 3)")),
        // Only an operator sets state 0, and only on a stream without events.
        Some(0) if version != 0 || last != 0 => corrupt(format!(
            "has state 0 (no stream) at version {version}, over events up to version {last}"
        )),
        None if last > 0 => corrupt(format!("is missing, yet events up to version {last} are stored")),
        _ if version < 0 => corrupt(format!("has version {version}, below 0")),
        _ if version < last => corrupt(format!(
            "is at version {version}, behind its last stored event (version {last})"
        )),
        _ => stream_state(state, version),
    }
}

/// Where the event columns are in a result set, found once per page: looking each column up
/// by name and re-checking its type on every row was half the client time of a 10,000-event
/// load. The types are checked here, once, so rows can be read without the per-row check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventColumns {
    /// Absent from the reads of one stream, whose id the caller has.
    stream_id: Option<usize>,
    version: usize,
    tx: usize,
    seq: usize,
    event_id: usize,
    event_type: usize,
    schema_version: usize,
    content_type: usize,
    content_encoding: usize,
    metadata: usize,
    payload: usize,
    recorded_at: usize,
}

impl EventColumns {
    /// The columns of `row`'s result set.
    pub(crate) fn of(row: &PgRow) -> Result<Self> {
        let at = |name, ty| column_at(row, name, ty);
        Ok(EventColumns {
            stream_id: match row.try_column("stream_id") {
                Ok(_) => Some(at("stream_id", "TEXT")?),
                Err(_) => None,
            },
            version: at("version", "INT8")?,
            tx: at("tx", "xid8")?,
            seq: at("seq", "INT8")?,
            event_id: at("event_id", "UUID")?,
            event_type: at("event_type", "TEXT")?,
            schema_version: at("schema_version", "INT8")?,
            content_type: at("content_type", "TEXT")?,
            content_encoding: at("content_encoding", "TEXT")?,
            metadata: at("metadata", "TEXT")?,
            payload: at("payload", "BYTEA")?,
            recorded_at: at("recorded_at", "TIMESTAMPTZ")?,
        })
    }

    /// Reads an event row; `known` is the stream when the query was for one (saves
    /// re-validating its id on every row).
    ///
    /// A row that does not decode is [`Error::Corrupt`] naming its log position in the
    /// [`Position`] display form (`p0:<tx>-<seq>-0`), which an operator can pass to
    /// `Admin::quarantine` as it is.
    pub(crate) fn event(&self, row: &PgRow, known: Option<&StreamId>) -> Result<RecordedEvent> {
        let get = |e: sqlx::Error| Error::corrupt(format!("event row: {e}"));
        let Xid8(tx) = row.try_get_unchecked(self.tx).map_err(get)?;
        let seq: i64 = row.try_get_unchecked(self.seq).map_err(get)?;
        let at = position(tx, seq)?;
        self.decode(row, known, at).map_err(|e| match e {
            Error::Corrupt { what } => Error::corrupt(format!("event at log position {at}: {what}")),
            other => other,
        })
    }

    /// [`EventColumns::event`] once the row's position is known.
    fn decode(&self, row: &PgRow, known: Option<&StreamId>, at: Position) -> Result<RecordedEvent> {
        let get = |e: sqlx::Error| Error::corrupt(format!("column: {e}"));
        let stream_id = match (known, self.stream_id) {
            (Some(s), _) => s.clone(),
            (None, Some(column)) => {
                let stream: String = row.try_get_unchecked(column).map_err(get)?;
                StreamId::new(stream).map_err(|e| Error::corrupt(format!("stored stream id: {e}")))?
            }
            (None, None) => return Err(Error::corrupt("event row without its stream id")),
        };
        let metadata: &str = row.try_get_unchecked(self.metadata).map_err(get)?;
        let content_type: &str = row.try_get_unchecked(self.content_type).map_err(get)?;
        let content_encoding: &str = row.try_get_unchecked(self.content_encoding).map_err(get)?;
        let schema_version: i64 = row.try_get_unchecked(self.schema_version).map_err(get)?;
        let payload: Vec<u8> = row.try_get_unchecked(self.payload).map_err(get)?;
        let version: i64 = row.try_get_unchecked(self.version).map_err(get)?;
        Ok(RecordedEvent {
            stream_id,
            version: u64::try_from(version).map_err(|_| Error::corrupt(format!("version {version}")))?,
            position: at,
            recorded_at: row
                .try_get_unchecked::<MillisTz, _>(self.recorded_at)
                .map_err(get)?
                .0,
            data: EventData {
                event_id: EventId::from_uuid(row.try_get_unchecked(self.event_id).map_err(get)?),
                event_type: row.try_get_unchecked(self.event_type).map_err(get)?,
                schema_version: u32::try_from(schema_version)
                    .map_err(|_| Error::corrupt(format!("schema version {schema_version}")))?,
                payload: payload.into(),
                content_type: content_type.parse::<ContentType>()?,
                content_encoding: content_encoding.parse::<ContentEncoding>()?,
                metadata: Metadata::from_json(metadata)?,
            },
        })
    }
}

/// The ordinal of column `name` in `row`'s result set, checked to be of type `ty`.
pub(crate) fn column_at(row: &PgRow, name: &str, ty: &str) -> Result<usize> {
    let column = row
        .try_column(name)
        .map_err(|e| Error::corrupt(format!("result row: {e}")))?;
    let found = column.type_info().name();
    if found != ty {
        return Err(Error::corrupt(format!("column {name} is {found}, expected {ty}")));
    }
    Ok(column.ordinal())
}

/// A transaction id (`xid8`) read in PostgreSQL's binary form (8 bytes, big-endian): the
/// server sends the column as stored instead of converting every row to text and back
/// (`tx_id::text::bigint` was a tenth of a 10,000-event load's server time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Xid8(pub(crate) i64);

impl sqlx::Type<Postgres> for Xid8 {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("xid8")
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for Xid8 {
    fn decode(value: PgValueRef<'r>) -> std::result::Result<Self, sqlx::error::BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => {
                let bytes: [u8; 8] = value.as_bytes()?.try_into()?;
                Ok(Xid8(i64::from_be_bytes(bytes)))
            }
            PgValueFormat::Text => Ok(Xid8(value.as_str()?.parse()?)),
        }
    }
}

/// A `timestamptz` read in binary form (microseconds since 2000-01-01 UTC) as a millisecond
/// [`Timestamp`], rounded down like every backend (and without a date library).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MillisTz(pub(crate) Timestamp);

/// Milliseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MS: i64 = 946_684_800_000;

impl sqlx::Type<Postgres> for MillisTz {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_name("timestamptz")
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for MillisTz {
    fn decode(value: PgValueRef<'r>) -> std::result::Result<Self, sqlx::error::BoxDynError> {
        match value.format() {
            PgValueFormat::Binary => {
                let bytes: [u8; 8] = value.as_bytes()?.try_into()?;
                let micros = i64::from_be_bytes(bytes);
                Ok(MillisTz(Timestamp::from_millis(
                    micros.div_euclid(1000).saturating_add(PG_EPOCH_MS),
                )))
            }
            PgValueFormat::Text => Err("timestamptz in text form".into()),
        }
    }
}

/// Reads every row of `rows` as an event (columns found once).
pub(crate) fn events_from_rows(rows: &[PgRow], known: Option<&StreamId>) -> Result<Vec<RecordedEvent>> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let columns = EventColumns::of(first)?;
    rows.iter().map(|row| columns.event(row, known)).collect()
}

/// Takes events in order until `max_bytes` (at least one event).
pub(crate) fn cut_bytes(events: Vec<RecordedEvent>, max_bytes: usize) -> Vec<RecordedEvent> {
    let mut bytes = 0usize;
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let len = event.data.encoded_len();
        if !out.is_empty() && bytes.saturating_add(len) > max_bytes {
            break;
        }
        bytes = bytes.saturating_add(len);
        out.push(event);
    }
    out
}
