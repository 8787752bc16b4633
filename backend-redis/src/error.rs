//! Mapping redis-rs errors and script answers to the core [`Error`].

use cqrs_core::{Error, Outcome, StreamId, StreamState, MAX_VERSION};
use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

/// Maps a driver error: a refused connection or a server that refuses commands while it
/// loads or fails over is [`Outcome::NotSent`]; a timeout or a dropped connection may have
/// applied the command, so it is [`Outcome::Unknown`]; a refusal that a retry cannot change
/// (a wrong password, a missing ACL permission, a TLS set-up, a key of another type) is a
/// backend error whose text says what to change; anything else is a backend error.
pub(crate) fn redis_error(e: RedisError) -> Error {
    if e.is_connection_refusal() {
        return Error::unavailable(Outcome::NotSent, e);
    }
    let io = io_kind(&e);
    match classify(e.kind(), e.code(), io) {
        Class::Retry(outcome) => Error::unavailable(outcome, e),
        Class::Permanent(hint) => Error::permanent("redis", e, hint),
        Class::Other => {
            if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                Error::unavailable(Outcome::Unknown, e)
            } else {
                Error::backend("redis", e)
            }
        }
    }
}

/// The kind of the I/O error behind a driver error. redis-rs keeps it behind an `Arc` (and
/// its own accessor is private), so both shapes are tried.
fn io_kind(e: &RedisError) -> Option<std::io::ErrorKind> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let source = std::error::Error::source(e)?;
    source
        .downcast_ref::<std::io::Error>()
        .or_else(|| source.downcast_ref::<Shared>()?.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
}

/// How a driver error is reported, decided before the driver's own broad retry hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Retryable ([`Error::Unavailable`]) with this outcome.
    Retry(Outcome),
    /// Refused for good: [`Error::Backend`] with what to do about it.
    Permanent(&'static str),
    /// Decided by the driver's timeout / I/O / connection predicates.
    Other,
}

/// Classifies a driver error by its kind, its server error code and the kind of its I/O
/// cause. Pure, so the table is unit-tested. redis-rs calls a failed `AUTH` "reconnect and
/// retry"; a retry with the same password fails the same way, so it is permanent here.
pub(crate) fn classify(kind: ErrorKind, code: Option<&str>, io: Option<std::io::ErrorKind>) -> Class {
    use std::io::ErrorKind as Io;
    match (kind, code, io) {
        (_, _, Some(Io::ConnectionRefused)) => Class::Retry(Outcome::NotSent),
        (
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown,
            )
            | ErrorKind::ClusterConnectionNotFound,
            _,
            _,
        ) => Class::Retry(Outcome::NotSent),
        (ErrorKind::AuthenticationFailed, _, _) | (_, Some("WRONGPASS" | "NOAUTH"), _) => Class::Permanent(
            "Redis refused the login: check the user and password of the URL (redis://user:password@host)",
        ),
        (ErrorKind::Server(ServerErrorKind::NoPerm), _, _) => Class::Permanent(
            "the Redis ACL user lacks a permission this backend needs (EVALSHA, SCRIPT LOAD, streams, keys under the prefix): grant it",
        ),
        // Reached only when the script was just loaded and the server still does not know it
        // (`Conn` and redis-rs load on the first NOSCRIPT): its script cache is being flushed
        // or a proxy sends EVALSHA to another server than SCRIPT LOAD.
        (ErrorKind::Server(ServerErrorKind::NoScript), _, _) => Class::Permanent(
            "the server lost a script right after loading it: check for SCRIPT FLUSH or a proxy that splits SCRIPT LOAD and EVALSHA",
        ),
        (_, Some("WRONGTYPE"), _) => Class::Permanent(
            "a key under this store's prefix holds another type: another program writes under the prefix; give the store a prefix of its own",
        ),
        (ErrorKind::InvalidClientConfig, _, _) => {
            Class::Permanent("fix the Redis URL or its TLS options (rediss://, CA certificate)")
        }
        // rustls reports a refused certificate as `InvalidData`; a socket the OS refuses
        // as `PermissionDenied`: the same set-up fails the same way on every retry.
        (ErrorKind::Io, _, Some(Io::InvalidData)) => Class::Permanent(
            "the TLS handshake failed (certificate or protocol): fix the TLS set-up of the URL (rediss://, CA certificate)",
        ),
        (ErrorKind::Io, _, Some(Io::PermissionDenied)) => {
            Class::Permanent("the operating system refused the connection: check the socket's permissions")
        }
        _ => Class::Other,
    }
}

/// An answer of one of our scripts that does not have the expected shape.
pub(crate) fn unexpected(what: &str) -> Error {
    Error::backend("redis", format!("unexpected reply from Redis: {what}"))
}

/// A script's `{'corrupt', field, value}` answer (`damaged` in `common.lua`): a head field of
/// `stream` holds what no script writes, so the script wrote nothing.
pub(crate) fn damaged_head(stream: &StreamId, mut items: std::vec::IntoIter<Value>) -> Error {
    let mut text = || match items.next() {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => format!("{other:?}"),
    };
    let (field, value) = (text(), text());
    Error::corrupt(format!(
        "the head of stream {stream} holds {value:?} in field `{field}`, which no write of this \
         store makes; the call wrote nothing"
    ))
}

/// Parses a stream state as the scripts report it: `M`, `L:<v>`, `S:<v>`, `T`. A version
/// reads exactly as the scripts write it (decimal, no sign or leading zero, at most
/// [`MAX_VERSION`]), so a head the append script refuses never reads as a state.
pub(crate) fn parse_state(s: &str) -> Result<StreamState, Error> {
    let version = |v: &str| {
        v.parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_VERSION && n.to_string() == v)
            .ok_or_else(|| Error::corrupt(format!("stream state {s:?}")))
    };
    match s.split_once(':') {
        None if s == "M" => Ok(StreamState::Missing),
        None if s == "T" => Ok(StreamState::Tombstoned),
        Some(("L", v)) => Ok(StreamState::Live(version(v)?)),
        Some(("S", v)) => Ok(StreamState::SoftDeleted(version(v)?)),
        _ => Err(Error::corrupt(format!("stream state {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse() {
        assert_eq!(parse_state("M").unwrap(), StreamState::Missing);
        assert_eq!(parse_state("L:4").unwrap(), StreamState::Live(4));
        assert_eq!(parse_state("S:2").unwrap(), StreamState::SoftDeleted(2));
        assert_eq!(parse_state("T").unwrap(), StreamState::Tombstoned);
        for bad in ["X:1", "L:-5", "L:007", "L:+1", "S:", "L:9223372036854775808"] {
            assert!(parse_state(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn permanent_refusals_are_not_retryable_and_say_what_to_do() {
        let permanent = [
            RedisError::from((ErrorKind::AuthenticationFailed, "Password authentication failed")),
            RedisError::from((ErrorKind::Server(ServerErrorKind::NoPerm), "NOPERM")),
            RedisError::from((ErrorKind::Server(ServerErrorKind::NoScript), "NOSCRIPT")),
            RedisError::from((ErrorKind::InvalidClientConfig, "bad URL")),
            RedisError::from(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "invalid peer certificate",
            )),
        ];
        for e in permanent {
            let mapped = redis_error(e);
            assert!(matches!(mapped, Error::Backend { .. }), "{mapped:?}");
            assert!(!mapped.is_retryable(), "{mapped}");
            assert!(mapped.to_string().contains(": "), "{mapped}");
        }
        assert!(
            redis_error(RedisError::from((ErrorKind::AuthenticationFailed, "x")))
                .to_string()
                .contains("check the user and password")
        );
        // Server errors outside redis-rs's kinds arrive as `Extension` with their code.
        assert!(matches!(
            classify(ErrorKind::Extension, Some("WRONGTYPE"), None),
            Class::Permanent(h) if h.contains("prefix of its own")
        ));
        assert!(matches!(
            classify(ErrorKind::Extension, Some("WRONGPASS"), None),
            Class::Permanent(_)
        ));
        assert_eq!(
            classify(
                ErrorKind::Server(ServerErrorKind::BusyLoading),
                Some("LOADING"),
                None
            ),
            Class::Retry(Outcome::NotSent)
        );
        assert_eq!(
            classify(ErrorKind::Io, None, Some(std::io::ErrorKind::ConnectionReset)),
            Class::Other
        );
    }

    #[test]
    fn io_errors_are_unavailable() {
        let e = RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset"));
        assert!(matches!(
            redis_error(e),
            Error::Unavailable {
                outcome: Outcome::Unknown,
                ..
            }
        ));
        let e = RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no"));
        assert!(matches!(
            redis_error(e),
            Error::Unavailable {
                outcome: Outcome::NotSent,
                ..
            }
        ));
    }

    /// The text a caller logs says why the connect failed, and never quotes the password of
    /// the URL (redis-rs's errors name neither the URL nor its credentials; this pins it).
    #[tokio::test]
    async fn a_refused_connect_says_why_without_the_password() {
        let options = crate::RedisStoreOptions::from_url("redis://cqrs:hunter2secret@127.0.0.1:1/").unwrap();
        let err = crate::RedisBackend::open(options).await.unwrap_err();
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
        // The cause's text is in `Display`, not only behind `source()`.
        let shown = err.to_string();
        assert!(shown.contains("refused"), "{shown}");
    }
}
