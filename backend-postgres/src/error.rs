//! One function maps sqlx errors to core errors, by SQLSTATE and constraint name (never by
//! message text).

use cqrs_core::{Error, LimitKind, Outcome, StreamId, MAX_VERSION};

/// SQLSTATE raised by the append function for an idempotency mismatch.
pub(crate) const IDEMPOTENCY_MISMATCH: &str = "CQ002";
/// SQLSTATE raised by the append function for a tombstoned stream.
pub(crate) const STREAM_DELETED: &str = "CQ003";
/// SQLSTATE raised by the append function when the last version would exceed `i64`.
pub(crate) const VERSION_OVERFLOW: &str = "CQ004";
/// SQLSTATE raised by the append function for a corrupt stream head (tenth migration).
pub(crate) const HEAD_CORRUPT: &str = "CQ005";
/// The unique constraint on event ids.
pub(crate) const EVENT_ID_KEY: &str = "events_event_id_key";
/// The unique constraint on (stream, version).
pub(crate) const STREAM_VERSION_KEY: &str = "events_stream_version_key";

/// Whether the statement may have reached the server when the error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Failed while getting a connection: nothing was sent.
    No,
    /// Failed while a statement was in flight: it may have run.
    Maybe,
}

/// Maps a sqlx error to the core error a caller can act on.
pub(crate) fn map(err: sqlx::Error, sent: Sent, stream: Option<&StreamId>) -> Error {
    let outcome = match sent {
        Sent::No => Outcome::NotSent,
        Sent::Maybe => Outcome::Unknown,
    };
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let constraint = db.constraint().map(str::to_owned);
            match (code.as_str(), constraint.as_deref(), stream) {
                (IDEMPOTENCY_MISMATCH, _, Some(s)) => Error::IdempotencyMismatch {
                    stream: s.clone(),
                    reason: db.message().to_owned(),
                },
                (STREAM_DELETED, _, Some(s)) => Error::StreamDeleted { stream: s.clone() },
                (HEAD_CORRUPT, _, _) => Error::corrupt(format!("{}: {}", named(stream), db.message())),
                (VERSION_OVERFLOW, _, _) => Error::TooLarge {
                    kind: LimitKind::Version,
                    limit: MAX_VERSION,
                    actual: MAX_VERSION.saturating_add(1),
                },
                ("23505", Some(EVENT_ID_KEY), _) => Error::AlreadyExists {
                    what: "event id (committed in another stream)".into(),
                },
                // Not a race: every writer of events holds the stream's lock and reads the
                // head after taking it (the append function's statements, the update of
                // append_one.sql re-checking the newest row, the import), so the version the
                // head gives was stored before: the head is behind its events. A re-send would
                // fail the same way forever. (Imports of releases before the ninth migration
                // take another lock key: that migration says to run them after the upgrade.)
                ("23505", Some(STREAM_VERSION_KEY), _) => Error::corrupt(format!(
                    "{}: its head is behind its stored events (the next version it gives is already stored)",
                    named(stream)
                )),
                // Serialization failure, deadlock: the transaction was rolled back.
                ("40001" | "40P01", _, _) => Error::unavailable(Outcome::NotSent, sqlx::Error::Database(db)),
                // Too many connections, cannot connect now.
                ("53300" | "57P03", _, _) => Error::unavailable(Outcome::NotSent, sqlx::Error::Database(db)),
                // Statement timeout or cancel, terminated backend, shutdown, connection errors.
                (c, _, _) if c == "57014" || c.starts_with("57P") || c.starts_with("08") => {
                    Error::unavailable(outcome, sqlx::Error::Database(db))
                }
                ("22021" | "22P02" | "22003" | "22008" | "54000", _, _) => {
                    Error::invalid(format!("refused by PostgreSQL: {}", db.message()))
                }
                _ => Error::backend("postgres", sqlx::Error::Database(db)),
            }
        }
        sqlx::Error::PoolClosed => Error::Closed,
        e @ (sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)) => Error::unavailable(Outcome::NotSent, e),
        e @ (sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_)) => {
            Error::unavailable(outcome, e)
        }
        e @ (sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)) => {
            Error::corrupt(format!("unreadable stored value: {e}"))
        }
        e => Error::backend("postgres", e),
    }
}

/// "stream `s`" for an error's text, or "a stream" when the caller did not say which.
fn named(stream: Option<&StreamId>) -> String {
    stream.map_or_else(|| "a stream".to_owned(), |s| format!("stream {s}"))
}

/// Maps an error of a statement in flight (it may have run).
pub(crate) fn sent(err: sqlx::Error) -> Error {
    map(err, Sent::Maybe, None)
}

/// Maps an error of getting a connection or beginning (nothing sent).
pub(crate) fn not_sent(err: sqlx::Error) -> Error {
    map(err, Sent::No, None)
}
