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
                ("22021" | "22P02" | "22003" | "22008" | "54000", _, _) => {
                    Error::invalid(format!("refused by PostgreSQL: {}", db.message()))
                }
                (c, _, _) => match classify(c) {
                    Class::Retry(Sent::No) => Error::unavailable(Outcome::NotSent, sqlx::Error::Database(db)),
                    Class::Retry(Sent::Maybe) => Error::unavailable(outcome, sqlx::Error::Database(db)),
                    Class::Permanent(hint) => Error::permanent("postgres", sqlx::Error::Database(db), hint),
                    Class::Other => Error::backend("postgres", sqlx::Error::Database(db)),
                },
            }
        }
        sqlx::Error::PoolClosed => Error::Closed,
        // The pool gave up waiting for a connection (none free, or the server not answering
        // connects): the driver's own bounded wait on the way to the server, so retryable.
        e @ sqlx::Error::PoolTimedOut => Error::unavailable(Outcome::NotSent, e),
        // sqlx raises `Tls` only while building the TLS set-up (root certificate, client key,
        // host name), before any byte goes out: the same options fail the same way forever.
        e @ sqlx::Error::Tls(_) => Error::permanent(
            "postgres",
            e,
            "fix the TLS options of the URL (sslmode, sslrootcert, sslcert, sslkey)",
        ),
        e @ (sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_)) => {
            Error::unavailable(outcome, e)
        }
        e @ (sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)) => {
            Error::corrupt(format!("unreadable stored value: {e}"))
        }
        e => Error::backend("postgres", e),
    }
}

/// How a SQLSTATE without a meaning of its own to this backend is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Retryable ([`Error::Unavailable`]); `Sent::No` when the server says it did nothing,
    /// `Sent::Maybe` when the outcome is the statement's (it may have run).
    Retry(Sent),
    /// Refused for good: [`Error::Backend`] with what to do about it.
    Permanent(&'static str),
    /// Any other server error: [`Error::Backend`] with the server's text.
    Other,
}

/// What to do when the schema lacks a table, function or column this release uses.
pub(crate) const RUN_MIGRATE: &str =
    "the schema is missing or older than this release: run migrate() (PgBackend::migrate or backend_postgres::migrate) before using the stores";

/// Classifies a SQLSTATE this module does not map to a variant of its own. Pure, so the
/// table is unit-tested; codes are from the PostgreSQL manual, appendix A.
pub(crate) fn classify(code: &str) -> Class {
    match code {
        // Serialization failure, deadlock: the transaction was rolled back.
        "40001" | "40P01" => Class::Retry(Sent::No),
        // Too many connections, cannot connect now (starting up).
        "53300" | "57P03" => Class::Retry(Sent::No),
        "28P01" | "28000" => Class::Permanent(
            "PostgreSQL refused the login: check the user and password of the URL (and pg_hba.conf)",
        ),
        "3D000" => Class::Permanent("the database named in the URL does not exist: create it or fix the URL"),
        "57P04" => {
            Class::Permanent("the database was dropped while connected: recreate it and run migrate()")
        }
        "42501" => Class::Permanent(
            "the user lacks a privilege on the schema: grant it, or connect as the schema's owner",
        ),
        // Undefined table, function, column, schema: a schema not migrated to this release.
        "42P01" | "42883" | "42703" | "3F000" => Class::Permanent(RUN_MIGRATE),
        // Syntax error, wrong object type: this release's SQL does not fit the schema.
        "42601" | "42809" => Class::Permanent(RUN_MIGRATE),
        // Statement timeout or cancel, terminated backend, shutdown, connection errors.
        c if c == "57014" || c.starts_with("57P") || c.starts_with("08") => Class::Retry(Sent::Maybe),
        _ => Class::Other,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_retryable_and_permanent_ones_say_what_to_do() {
        for code in ["40001", "40P01", "53300", "57P03"] {
            assert_eq!(classify(code), Class::Retry(Sent::No), "{code}");
        }
        for code in ["57014", "57P01", "57P02", "08006", "08001"] {
            assert_eq!(classify(code), Class::Retry(Sent::Maybe), "{code}");
        }
        for code in ["42P01", "42883", "42703", "3F000", "42601"] {
            assert_eq!(classify(code), Class::Permanent(RUN_MIGRATE), "{code}");
        }
        for code in ["28P01", "28000", "3D000", "57P04", "42501"] {
            assert!(matches!(classify(code), Class::Permanent(_)), "{code}");
        }
        assert_eq!(classify("XX000"), Class::Other);
    }

    #[test]
    fn tls_set_up_errors_are_permanent_and_say_what_to_fix() {
        let e = map(
            sqlx::Error::Tls("Invalid certificate /nowhere.pem".into()),
            Sent::No,
            None,
        );
        assert!(matches!(e, Error::Backend { .. }) && !e.is_retryable(), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("Invalid certificate") && text.contains("sslrootcert"),
            "{text}"
        );
    }

    #[test]
    fn a_timed_out_pool_is_retryable_and_a_closed_one_is_closed() {
        assert!(map(sqlx::Error::PoolTimedOut, Sent::No, None).is_retryable());
        assert!(matches!(
            map(sqlx::Error::PoolClosed, Sent::No, None),
            Error::Closed
        ));
    }

    /// The text a caller logs says why the connect failed, and never quotes the password of
    /// the URL (sqlx's errors name neither the URL nor its credentials; this pins it).
    #[tokio::test]
    async fn a_refused_connect_says_why_without_the_password() {
        let options = crate::PgStoreOptions::from_url(
            "postgres://cqrs:hunter2secret@127.0.0.1:1/test?connect_timeout=2",
        )
        .unwrap();
        let err = crate::PgBackend::connect(&options).await.unwrap_err();
        let text = format!("{err} | {err:?}");
        assert!(
            matches!(
                err,
                Error::Unavailable {
                    outcome: Outcome::NotSent,
                    ..
                }
            ),
            "{text}"
        );
        assert!(!text.contains("hunter2secret"), "{text}");
        // The cause's text is in `Display` (not only behind `source()`), and it is the
        // refusal, not the pool's "timed out" that hides it.
        let shown = err.to_string();
        assert!(shown.contains("refused"), "{shown}");
    }

    /// The server named in `DATABASE_URL` with `path_and_query` in place of its database.
    fn url_with(path_and_query: &str) -> String {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let base = url.split(['?']).next().unwrap_or(&url);
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        format!("{server}/{path_and_query}")
    }

    /// A database that does not exist will not appear on a retry: permanent, and it says so.
    #[tokio::test]
    async fn an_unknown_database_is_permanent_and_says_what_to_do() {
        let options =
            crate::PgStoreOptions::from_url(&url_with("cqrs_no_such_database_18?connect_timeout=5")).unwrap();
        let err = crate::PgBackend::connect(&options).await.unwrap_err();
        assert!(
            matches!(err, Error::Backend { .. }) && !err.is_retryable(),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("does not exist: create it or fix the URL"),
            "{err}"
        );
    }

    /// A schema nobody migrated answers "undefined table": permanent, and it names migrate().
    #[tokio::test]
    async fn an_unmigrated_schema_is_permanent_and_names_migrate() {
        let options =
            crate::PgStoreOptions::from_url(&url_with("test?schema=cqrs_never_migrated_18")).unwrap();
        let backend = crate::PgBackend::connect(&options).await.unwrap();
        let stream: StreamId = "s".parse().unwrap();
        let err = cqrs_core::EventStore::stream_state(backend.as_ref(), &stream)
            .await
            .unwrap_err();
        backend.pool().close().await;
        assert!(
            matches!(err, Error::Backend { .. }) && !err.is_retryable(),
            "{err:?}"
        );
        assert!(err.to_string().contains("run migrate()"), "{err}");
    }
}
