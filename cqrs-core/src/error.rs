//! The one error type every store returns.
//!
//! Each variant is something a caller can act on: reload and retry ([`Error::Conflict`]),
//! re-send the same batch ([`Error::Unavailable`]), fix the input ([`Error::InvalidInput`],
//! [`Error::TooLarge`]), wait longer or look at what did not happen ([`Error::Timeout`]),
//! rebuild ([`Error::CheckpointMismatch`], [`Error::DataLoss`]) or give up.
//!
//! The `Display` text of every variant carries its cause's text too (a log line that prints
//! only `{err}` says why, not just "backend unavailable"); the cause stays reachable through
//! `source()` for code that inspects it. No text carries credentials: causes are driver errors
//! or texts built by this SDK, neither of which quotes a connection URL.

use std::{fmt, time::Duration};

use crate::{ExpectedVersion, StreamId, StreamState};

/// A boxed error from a driver, codec or caller, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a failed call may nonetheless have taken effect on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The request never reached the server: nothing happened, a retry is safe.
    NotSent,
    /// The request may have been applied (the connection broke after sending). Re-send the
    /// *same* batch with the same event ids: idempotency turns a duplicate into the original
    /// outcome.
    Unknown,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::NotSent => "not sent",
            Outcome::Unknown => "outcome unknown",
        })
    }
}

/// Which limit a [`Error::TooLarge`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Bytes of one event (payload plus metadata).
    EventBytes,
    /// Bytes of one append batch.
    BatchBytes,
    /// Number of events in one append batch.
    BatchCount,
    /// Bytes of one snapshot, state entry or read-model document.
    DocumentBytes,
    /// A version or position that does not fit in a signed 64-bit integer.
    Version,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::EventBytes => "event size in bytes",
            LimitKind::BatchBytes => "batch size in bytes",
            LimitKind::BatchCount => "events per batch",
            LimitKind::DocumentBytes => "document size in bytes",
            LimitKind::Version => "version",
        })
    }
}

/// The error returned by every store, codec and repository in this SDK.
///
/// Bad input never panics and never writes partially: a call that returns an error other
/// than [`Error::Unavailable`] with [`Outcome::Unknown`] wrote nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's current state does not satisfy the expected version; nothing was written.
    /// Reload the aggregate and decide again.
    #[error("conflict on stream {stream}: expected {expected}, actual {actual}")]
    Conflict {
        /// The stream appended to.
        stream: StreamId,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// What the store holds.
        actual: StreamState,
    },

    /// A state entry is not at the expected version; nothing was written.
    #[error("conflict on state {kind}/{id}: expected {expected:?}, actual {actual:?}")]
    StateConflict {
        /// The entry's kind.
        kind: String,
        /// The entry's id.
        id: String,
        /// What the caller expected.
        expected: crate::StateExpectation,
        /// The version stored (`None`: missing).
        actual: Option<u64>,
    },

    /// A batch partly matches events already committed to the stream (same ids at other
    /// positions, or a committed prefix followed by new events); nothing was written.
    #[error("idempotency mismatch on stream {stream}: {reason}")]
    IdempotencyMismatch {
        /// The stream appended to.
        stream: StreamId,
        /// Which event ids clash and how.
        reason: String,
    },

    /// The stream was tombstoned: it refuses reads and writes for ever.
    #[error("stream {stream} is deleted")]
    StreamDeleted {
        /// The deleted stream.
        stream: StreamId,
    },

    /// Something that must be new already exists (a state entry inserted twice, an event id
    /// already used by another stream where ids are globally unique).
    #[error("{what} already exists")]
    AlreadyExists {
        /// What exists.
        what: String,
    },

    /// Something that must exist does not.
    #[error("{what} not found")]
    NotFound {
        /// What is missing.
        what: String,
    },

    /// A size or count limit, checked before any I/O.
    #[error("{kind} too large: limit {limit}, actual {actual}")]
    TooLarge {
        /// Which limit.
        kind: LimitKind,
        /// The configured limit.
        limit: u64,
        /// The offending value.
        actual: u64,
    },

    /// The caller passed something no backend accepts.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// Why it was refused.
        reason: String,
    },

    /// Encoding or decoding a payload failed.
    #[error("codec error ({what}): {source}")]
    Codec {
        /// What was being encoded or decoded.
        what: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },

    /// Stored bytes failed their checksum or could not be parsed.
    #[error("corrupt data: {what}")]
    Corrupt {
        /// What was corrupt.
        what: String,
    },

    /// No upcaster path leads from an event's schema version to the latest one.
    #[error("no upcaster path for event type {event_type} from schema version {from} to {to}")]
    NoUpcastPath {
        /// The event type.
        event_type: String,
        /// The stored schema version.
        from: u32,
        /// The latest known schema version.
        to: u32,
    },

    /// The server could not be reached, or a request to it failed on the way (a dropped
    /// connection, the driver's network timeout, a server shutting down or failing over).
    /// Retryable. A wait of the caller's own that ran out is [`Error::Timeout`] instead, and a
    /// server that refuses for good (authentication, a missing schema) is
    /// [`Error::Backend`].
    #[error("backend unavailable ({outcome}): {source}")]
    Unavailable {
        /// Whether the call may have taken effect.
        outcome: Outcome,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// A checkpoint is ahead of what the store holds: acknowledged writes were lost (for
    /// example a server restarted without its data). Investigate before resuming.
    #[error("data loss in partition {partition}: checkpoint is ahead of the store's head")]
    DataLoss {
        /// The partition whose head is behind the checkpoint.
        partition: u32,
    },

    /// A checkpoint was taken from another store, or from an earlier epoch of this one
    /// (restored or migrated). The consumer must rebuild from the start.
    #[error("checkpoint belongs to store {found}, this store is {expected}")]
    CheckpointMismatch {
        /// This store's identity.
        expected: String,
        /// The checkpoint's.
        found: String,
    },

    /// A lease holder with an older epoch tried to commit; a newer holder exists. The write
    /// was refused atomically.
    #[error("lease {name} fenced: epoch {epoch} is older than the current epoch {current}")]
    Fenced {
        /// Lease (projection) name.
        name: String,
        /// The caller's epoch.
        epoch: u64,
        /// The newest epoch handed out.
        current: u64,
    },

    /// A lease is held by another owner and has not expired.
    #[error("lease {name} is held by {owner}")]
    LeaseHeld {
        /// Lease name.
        name: String,
        /// Its current owner.
        owner: String,
    },

    /// The operation needs a capability this backend does not declare.
    #[error("unsupported by this backend: {capability}")]
    Unsupported {
        /// The missing capability.
        capability: &'static str,
    },

    /// A dispatcher has no handler for a command or query type.
    #[error("no {kind} handler registered for {type_name}")]
    NotRegistered {
        /// `"command"` or `"query"`.
        kind: &'static str,
        /// The unregistered type.
        type_name: &'static str,
    },

    /// The store was closed; no new calls are accepted.
    #[error("store is closed")]
    Closed,

    /// A wait on this side ran out before what it waited for happened (a runner's
    /// `wait_until`, a horizon that did not pass). Nothing failed on the server, so it is not
    /// [`Error::Unavailable`] and not retryable by [`Error::is_retryable`]: wait longer, or
    /// look at the state the text names.
    #[error("timed out after {after:?}: {what}")]
    Timeout {
        /// What was waited for and what was seen instead.
        what: String,
        /// How long the wait lasted.
        after: Duration,
    },

    /// Any other backend error, kept with its cause. Not retryable: the text says what to
    /// change (a missing migration, a refused password, a TLS set-up).
    #[error("{backend} backend error: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Builds [`Error::InvalidInput`].
    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            reason: reason.into(),
        }
    }

    /// Builds [`Error::Codec`].
    pub fn codec(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Codec {
            what: what.into(),
            source: source.into(),
        }
    }

    /// Builds [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt { what: what.into() }
    }

    /// Builds [`Error::Backend`].
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    /// Builds [`Error::Timeout`]: `what` was not reached within `after`.
    pub fn timeout(what: impl Into<String>, after: Duration) -> Self {
        Error::Timeout {
            what: what.into(),
            after,
        }
    }

    /// Builds [`Error::Backend`] for a permanent refusal: `cause` together with `hint`, what
    /// to change, so the text says both what happened and how to fix it (`Display`:
    /// "`<cause>; <hint>`"; `source()` still reaches the driver's error).
    pub fn permanent(backend: &'static str, cause: impl Into<BoxError>, hint: &'static str) -> Self {
        Error::Backend {
            backend,
            source: Box::new(Hinted {
                cause: cause.into(),
                hint,
            }),
        }
    }

    /// Builds [`Error::Unavailable`].
    pub fn unavailable(outcome: Outcome, source: impl Into<BoxError>) -> Self {
        Error::Unavailable {
            outcome,
            source: source.into(),
        }
    }

    /// True where retrying the same call can succeed without the caller changing anything:
    /// [`Error::Unavailable`] only. A [`Error::Conflict`] is not retryable (reload first), nor
    /// is a [`Error::Timeout`] (nothing failed; wait longer) or a [`Error::Backend`] (a
    /// permanent refusal whose text says what to change).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// True for [`Error::Conflict`] and [`Error::StateConflict`]: reload and decide again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::StateConflict { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause that only `source()` knew is useless in a log line that prints `{err}`.
    #[test]
    fn display_carries_the_cause() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let cases = [
            Error::unavailable(Outcome::NotSent, refused()),
            Error::backend("postgres", refused()),
            Error::codec("event payload", refused()),
        ];
        for e in cases {
            let text = e.to_string();
            assert!(text.contains("connection refused"), "{text}");
            assert!(std::error::Error::source(&e).is_some(), "{text}");
        }
        assert_eq!(
            Error::unavailable(Outcome::NotSent, refused()).to_string(),
            "backend unavailable (not sent): connection refused"
        );
    }

    #[test]
    fn a_timeout_says_what_and_how_long_and_is_not_retryable() {
        let e = Error::timeout("projection titles: status handled >= 1", Duration::from_secs(5));
        assert_eq!(
            e.to_string(),
            "timed out after 5s: projection titles: status handled >= 1"
        );
        assert!(!e.is_retryable());
        assert!(!matches!(e, Error::Unavailable { .. }));
        assert!(!Error::backend("redis", "WRONGTYPE").is_retryable());
        assert!(Error::unavailable(Outcome::Unknown, "reset").is_retryable());
    }
}

/// A driver error together with what to do about it: the `source` of an [`Error::Backend`]
/// built by [`Error::permanent`].
#[derive(Debug)]
struct Hinted {
    /// The driver's error.
    cause: BoxError,
    /// What to do.
    hint: &'static str,
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.cause, self.hint)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.cause.as_ref())
    }
}
