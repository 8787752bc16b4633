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

/// Decides an [`crate::Admin::import_commit`]: versions must be contiguous from at least 1
/// and fit `i64`; the same ids already at the same versions make the import a no-op
/// (`Ok(false)`, so an interrupted import can be re-run); ids committed elsewhere in the
/// stream, or a partial match, are a mismatch; otherwise the commit must follow the stream's
/// last version (`Ok(true)`: write it).
///
/// `committed_version(id)` returns the version at which `id` is committed in `stream`.
///
/// # Errors
/// [`Error::InvalidInput`] for bad versions, [`Error::TooLarge`] beyond `i64`,
/// [`Error::StreamDeleted`], [`Error::IdempotencyMismatch`], [`Error::Conflict`].
pub fn decide_import(
    stream: &StreamId,
    state: StreamState,
    events: &[crate::ImportedEvent],
    committed_version: impl Fn(&EventId) -> Option<u64>,
) -> Result<bool> {
    let Some(first) = events.first().map(|e| e.version) else {
        return Ok(false);
    };
    if first == 0 {
        return Err(Error::invalid("imported versions start at 1"));
    }
    let len = u64::try_from(events.len()).unwrap_or(u64::MAX);
    crate::check_version(first.saturating_add(len - 1))?;
    let contiguous = events.iter().zip(first..).all(|(e, want)| e.version == want);
    if !contiguous {
        return Err(Error::invalid(format!(
            "imported versions of {stream} must be contiguous from {first}"
        )));
    }
    let Some(current) = state.last_version() else {
        return Err(Error::StreamDeleted {
            stream: stream.clone(),
        });
    };
    let mut hits = 0;
    for e in events {
        match committed_version(&e.data.event_id) {
            Some(v) if v == e.version => hits += 1,
            Some(v) => {
                return Err(Error::IdempotencyMismatch {
                    stream: stream.clone(),
                    reason: format!(
                        "event id {} is committed at version {v}, the import puts it at {}",
                        e.data.event_id, e.version
                    ),
                })
            }
            None => {}
        }
    }
    if hits == events.len() {
        return Ok(false);
    }
    if hits > 0 {
        return Err(Error::IdempotencyMismatch {
            stream: stream.clone(),
            reason: format!(
                "{hits} of {} imported event ids are already committed",
                events.len()
            ),
        });
    }
    if first != current + 1 {
        return Err(Error::Conflict {
            stream: stream.clone(),
            expected: ExpectedVersion::Exact(first - 1).normalized(),
            actual: state,
        });
    }
    Ok(true)
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

    fn imported(events: &[EventData], first: u64) -> Vec<crate::ImportedEvent> {
        events
            .iter()
            .zip(0u64..)
            .map(|(e, i)| crate::ImportedEvent {
                version: first.saturating_add(i),
                recorded_at: crate::Timestamp::from_millis(0),
                data: e.clone(),
            })
            .collect()
    }

    #[test]
    fn imports_follow_the_stream_and_rerun_idempotently() {
        let b = batch(3);
        let at: HashMap<EventId, u64> = b
            .iter()
            .enumerate()
            .map(|(i, e)| (e.event_id, i as u64 + 1))
            .collect();
        assert_eq!(
            decide_import(&sid(), StreamState::Missing, &imported(&b, 1), |_| None).ok(),
            Some(true)
        );
        assert_eq!(
            decide_import(&sid(), StreamState::Live(3), &imported(&b, 1), |id| at
                .get(id)
                .copied())
            .ok(),
            Some(false)
        );
        assert!(matches!(
            decide_import(&sid(), StreamState::Live(3), &imported(&batch(1), 5), |_| None),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            decide_import(&sid(), StreamState::Live(3), &imported(&b, 2), |id| at
                .get(id)
                .copied()),
            Err(Error::IdempotencyMismatch { .. })
        ));
        assert!(matches!(
            decide_import(&sid(), StreamState::Missing, &imported(&b, 0), |_| None),
            Err(Error::InvalidInput { .. })
        ));
        let mut gap = imported(&b, 1);
        gap[2].version = 9;
        assert!(matches!(
            decide_import(&sid(), StreamState::Missing, &gap, |_| None),
            Err(Error::InvalidInput { .. })
        ));
        assert!(
            decide_import(&sid(), StreamState::Missing, &imported(&b, u64::MAX), |_| None).is_err(),
            "no overflow"
        );
        assert!(matches!(
            decide_import(&sid(), StreamState::Tombstoned, &imported(&b, 1), |_| None),
            Err(Error::StreamDeleted { .. })
        ));
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
