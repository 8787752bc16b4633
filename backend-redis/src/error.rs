//! Mapping redis-rs errors and script answers to the core [`Error`].

use cqrs_core::{Error, Outcome, StreamId, StreamState, MAX_VERSION};
use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

/// Maps a driver error: a refused connection or a server that refuses commands while it
/// loads or fails over is [`Outcome::NotSent`]; a timeout or a dropped connection may have
/// applied the command, so it is [`Outcome::Unknown`]; anything else is a backend error.
pub(crate) fn redis_error(e: RedisError) -> Error {
    if e.is_connection_refusal() {
        return Error::unavailable(Outcome::NotSent, e);
    }
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown,
        )
        | ErrorKind::ClusterConnectionNotFound => return Error::unavailable(Outcome::NotSent, e),
        _ => {}
    }
    if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        return Error::unavailable(Outcome::Unknown, e);
    }
    Error::backend("redis", e)
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
}
