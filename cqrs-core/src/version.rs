//! Expected versions, stream states and what an append returns.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Error, LimitKind, Position, Result};

/// Largest version or position component a store accepts: backends store signed 64-bit
/// integers.
pub const MAX_VERSION: u64 = i64::MAX as u64;

/// Checks that a version fits the signed 64-bit integers backends store.
///
/// # Errors
/// [`Error::TooLarge`] with [`LimitKind::Version`].
pub fn check_version(v: u64) -> Result<u64> {
    if v > MAX_VERSION {
        return Err(Error::TooLarge {
            kind: LimitKind::Version,
            limit: MAX_VERSION,
            actual: v,
        });
    }
    Ok(v)
}

/// What the caller believes about a stream before appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream has no events (missing, or never written). Same as `Exact(0)`.
    NoStream,
    /// The stream has at least one event and is not deleted.
    StreamExists,
    /// The stream's last version is exactly this.
    Exact(u64),
}

impl ExpectedVersion {
    /// `Exact(0)` becomes `NoStream`; everything else is unchanged.
    pub const fn normalized(self) -> Self {
        match self {
            ExpectedVersion::Exact(0) => ExpectedVersion::NoStream,
            other => other,
        }
    }

    /// Whether a stream in `state` satisfies this expectation.
    ///
    /// A soft-deleted stream counts as having no events for `NoStream` (it may be appended
    /// to again, numbering continuing) and as its last version for `Exact`.
    pub fn is_satisfied_by(self, state: StreamState) -> bool {
        match (self.normalized(), state) {
            (_, StreamState::Tombstoned) => false,
            (ExpectedVersion::Any, _) => true,
            (ExpectedVersion::NoStream, StreamState::Missing | StreamState::SoftDeleted(_)) => true,
            (ExpectedVersion::NoStream, StreamState::Live(_)) => false,
            (ExpectedVersion::StreamExists, StreamState::Live(_)) => true,
            (ExpectedVersion::StreamExists, _) => false,
            (ExpectedVersion::Exact(n), StreamState::Live(v) | StreamState::SoftDeleted(v)) => n == v,
            (ExpectedVersion::Exact(_), StreamState::Missing) => false,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(n) => write!(f, "version {n}"),
        }
    }
}

/// The state of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamState {
    /// Never written (or an empty append only).
    Missing,
    /// Holds events up to this version.
    Live(u64),
    /// Deleted softly at this version: reads are empty, appends continue numbering.
    SoftDeleted(u64),
    /// Deleted for ever: reads and writes fail with [`Error::StreamDeleted`].
    Tombstoned,
}

impl StreamState {
    /// The last version written (0 for missing; none for tombstoned).
    pub const fn last_version(self) -> Option<u64> {
        match self {
            StreamState::Missing => Some(0),
            StreamState::Live(v) | StreamState::SoftDeleted(v) => Some(v),
            StreamState::Tombstoned => None,
        }
    }

    /// True for a stream a reader can see events in.
    pub const fn is_live(self) -> bool {
        matches!(self, StreamState::Live(_))
    }
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamState::Missing => f.write_str("missing"),
            StreamState::Live(v) => write!(f, "version {v}"),
            StreamState::SoftDeleted(v) => write!(f, "soft-deleted at version {v}"),
            StreamState::Tombstoned => f.write_str("tombstoned"),
        }
    }
}

/// How [`crate::EventStore::delete_stream`] deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeleteMode {
    /// Hide the events; a later append recreates the stream and continues numbering.
    Soft,
    /// Delete for ever: later reads and writes fail with [`Error::StreamDeleted`].
    Tombstone,
}

/// What a successful append returns. A re-send of a committed batch returns the same value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Version of the first event written; for an empty append, the version the next event
    /// would get.
    pub first_version: u64,
    /// The stream's last version after the append: pass it as `Exact` next time.
    pub next_expected: u64,
    /// Log position of the last event written; `None` for an empty append.
    pub position: Option<Position>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExpectedVersion::*;
    use StreamState::*;

    #[test]
    fn expectation_matrix() {
        let states = [Missing, Live(3), SoftDeleted(3), Tombstoned];
        let cases: [(ExpectedVersion, [bool; 4]); 7] = [
            (Any, [true, true, true, false]),
            (NoStream, [true, false, true, false]),
            (Exact(0), [true, false, true, false]),
            (StreamExists, [false, true, false, false]),
            (Exact(3), [false, true, true, false]),
            (Exact(2), [false, false, false, false]),
            (Exact(4), [false, false, false, false]),
        ];
        for (expected, row) in cases {
            for (state, want) in states.iter().zip(row) {
                assert_eq!(
                    expected.is_satisfied_by(*state),
                    want,
                    "{expected:?} vs {state:?}"
                );
            }
        }
    }

    #[test]
    fn versions_must_fit_i64() {
        assert!(check_version(MAX_VERSION).is_ok());
        assert!(matches!(
            check_version(MAX_VERSION + 1),
            Err(Error::TooLarge {
                kind: LimitKind::Version,
                ..
            })
        ));
    }
}
