//! The append decision every backend makes, as pure logic.
//!
//! Idempotency is checked before the version check, for every [`ExpectedVersion`]:
//! re-sending a committed batch (or a committed prefix of it) returns the original outcome;
//! a batch that partly matches committed ids is [`Error::IdempotencyMismatch`], never a
//! partial append. Backends that can run Rust next to their data (memory) call
//! [`decide_append`] directly; the others implement the same rules in SQL or Lua and the
//! conformance harness checks they agree.

use crate::{Error, EventData, EventId, ExpectedVersion, Result, StreamId, StreamState};

/// What an append must do, decided before writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendDecision {
    /// Write the batch at versions `first_version..first_version + len`.
    Write {
        /// Version of the first new event.
        first_version: u64,
    },
    /// Every event is already committed, in order, at these versions: return the original
    /// outcome and write nothing.
    AlreadyCommitted {
        /// Version of the first event of the batch.
        first_version: u64,
        /// Version of its last event.
        last_version: u64,
    },
    /// An empty batch whose expectation holds: write nothing.
    Empty {
        /// The stream's last version (0 if missing).
        current: u64,
    },
}

/// Decides an append from the stream's state and where (if anywhere) each event id of the
/// batch is already committed in this stream.
///
/// `committed_version(id)` returns the version at which `id` was committed in `stream`.
///
/// # Errors
/// [`Error::StreamDeleted`] for a tombstoned stream, [`Error::IdempotencyMismatch`] when the
/// batch partly matches committed events or matches them out of order, and
/// [`Error::Conflict`] when the expectation does not hold.
pub fn decide_append(
    stream: &StreamId,
    expected: ExpectedVersion,
    state: StreamState,
    events: &[EventData],
    committed_version: impl Fn(&EventId) -> Option<u64>,
) -> Result<AppendDecision> {
    let Some(current) = state.last_version() else {
        return Err(Error::StreamDeleted {
            stream: stream.clone(),
        });
    };
    let matched: Vec<Option<u64>> = events.iter().map(|e| committed_version(&e.event_id)).collect();
    let hits = matched.iter().filter(|m| m.is_some()).count();
    if hits > 0 {
        if hits < events.len() {
            return Err(Error::IdempotencyMismatch {
                stream: stream.clone(),
                reason: format!(
                    "{hits} of {} event ids are already committed; the batch is neither new nor a re-send",
                    events.len()
                ),
            });
        }
        let versions: Vec<u64> = matched.into_iter().flatten().collect();
        let contiguous = versions.windows(2).all(|w| w[0].checked_add(1) == Some(w[1]));
        return match (contiguous, versions.first(), versions.last()) {
            (true, Some(&first), Some(&last)) => Ok(AppendDecision::AlreadyCommitted {
                first_version: first,
                last_version: last,
            }),
            _ => Err(Error::IdempotencyMismatch {
                stream: stream.clone(),
                reason: "the event ids are committed, but not in this order".into(),
            }),
        };
    }
    if !expected.is_satisfied_by(state) {
        return Err(Error::Conflict {
            stream: stream.clone(),
            expected,
            actual: state,
        });
    }
    if events.is_empty() {
        return Ok(AppendDecision::Empty { current });
    }
    // Both ends must fit in i64: the last event's version is what backends store last.
    let len = u64::try_from(events.len()).unwrap_or(u64::MAX);
    crate::check_version(current.saturating_add(len))?;
    Ok(AppendDecision::Write {
        first_version: current + 1,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ContentType;

    fn batch(n: usize) -> Vec<EventData> {
        (0..n)
            .map(|_| EventData::new("T", ContentType::Json, "{}"))
            .collect()
    }

    fn sid() -> StreamId {
        StreamId::new("s").unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn new_batch_checks_the_version() {
        let b = batch(2);
        let d = decide_append(
            &sid(),
            ExpectedVersion::NoStream,
            StreamState::Missing,
            &b,
            |_| None,
        );
        assert_eq!(d.ok(), Some(AppendDecision::Write { first_version: 1 }));
        let d = decide_append(
            &sid(),
            ExpectedVersion::NoStream,
            StreamState::Live(2),
            &b,
            |_| None,
        );
        assert!(matches!(
            d,
            Err(Error::Conflict {
                actual: StreamState::Live(2),
                ..
            })
        ));
    }

    #[test]
    fn resend_and_prefix_are_idempotent_under_any_expectation() {
        let b = batch(3);
        let at: HashMap<EventId, u64> = b
            .iter()
            .enumerate()
            .map(|(i, e)| (e.event_id, i as u64 + 1))
            .collect();
        for expected in [
            ExpectedVersion::NoStream,
            ExpectedVersion::Exact(0),
            ExpectedVersion::Any,
            ExpectedVersion::Exact(7),
        ] {
            let d = decide_append(&sid(), expected, StreamState::Live(3), &b, |id| {
                at.get(id).copied()
            });
            assert_eq!(
                d.ok(),
                Some(AppendDecision::AlreadyCommitted {
                    first_version: 1,
                    last_version: 3
                })
            );
            let d = decide_append(&sid(), expected, StreamState::Live(3), &b[..2], |id| {
                at.get(id).copied()
            });
            assert_eq!(
                d.ok(),
                Some(AppendDecision::AlreadyCommitted {
                    first_version: 1,
                    last_version: 2
                })
            );
        }
    }

    #[test]
    fn partial_or_reordered_match_is_a_mismatch() {
        let b = batch(3);
        let at: HashMap<EventId, u64> = b
            .iter()
            .take(2)
            .enumerate()
            .map(|(i, e)| (e.event_id, i as u64 + 1))
            .collect();
        let d = decide_append(&sid(), ExpectedVersion::Any, StreamState::Live(2), &b, |id| {
            at.get(id).copied()
        });
        assert!(matches!(d, Err(Error::IdempotencyMismatch { .. })));
        let reversed = vec![b[1].clone(), b[0].clone()];
        let d = decide_append(
            &sid(),
            ExpectedVersion::Any,
            StreamState::Live(2),
            &reversed,
            |id| at.get(id).copied(),
        );
        assert!(matches!(d, Err(Error::IdempotencyMismatch { .. })));
    }

    #[test]
    fn the_last_version_of_a_batch_must_fit_i64() {
        let d = decide_append(
            &sid(),
            ExpectedVersion::Any,
            StreamState::Live(crate::MAX_VERSION - 1),
            &batch(3),
            |_| None,
        );
        assert!(
            matches!(
                d,
                Err(Error::TooLarge {
                    kind: crate::LimitKind::Version,
                    ..
                })
            ),
            "{d:?}"
        );
        let d = decide_append(
            &sid(),
            ExpectedVersion::Any,
            StreamState::Live(crate::MAX_VERSION - 1),
            &batch(1),
            |_| None,
        );
        assert_eq!(
            d.ok(),
            Some(AppendDecision::Write {
                first_version: crate::MAX_VERSION
            })
        );
    }

    #[test]
    fn empty_batch_checks_expectation_and_tombstone_refuses() {
        let d = decide_append(
            &sid(),
            ExpectedVersion::Exact(4),
            StreamState::Live(4),
            &[],
            |_| None,
        );
        assert_eq!(d.ok(), Some(AppendDecision::Empty { current: 4 }));
        assert!(decide_append(
            &sid(),
            ExpectedVersion::Exact(3),
            StreamState::Live(4),
            &[],
            |_| None
        )
        .is_err());
        let d = decide_append(
            &sid(),
            ExpectedVersion::Any,
            StreamState::Tombstoned,
            &batch(1),
            |_| None,
        );
        assert!(matches!(d, Err(Error::StreamDeleted { .. })));
    }
}
