//! Deciding an append from what is stored: pure functions over the stream's state and the
//! commits that hold the batch's event ids (read back after a duplicate-key error, or
//! before a version check fails), through [`cqrs_core::decide_append`].

use cqrs_core::{
    decide_append, AppendDecision, AppendOutcome, Error, EventData, ExpectedVersion, Result, StreamId,
    StreamState,
};

use crate::mapping::Commit;

/// What to do with an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// Write a commit starting at this version.
    Write {
        /// The first version of the new commit.
        first_version: u64,
    },
    /// Return this outcome without writing (a re-send or an empty append).
    Done(AppendOutcome),
}

/// Decides an append given the stream's `state` and the stored commits that hold any of the
/// batch's ids (`clashing`, from any stream).
///
/// # Errors
/// [`Error::AlreadyExists`] for an id committed in another stream; the errors of
/// [`decide_append`]: `Conflict` (carrying `state`), `IdempotencyMismatch`,
/// `StreamDeleted`, `TooLarge`.
pub(crate) fn resolve(
    stream: &StreamId,
    expected: ExpectedVersion,
    state: StreamState,
    batch: &[EventData],
    clashing: &[Commit],
) -> Result<Resolution> {
    let elsewhere = clashing
        .iter()
        .filter(|c| c.stream != *stream)
        .any(|c| batch.iter().any(|e| c.version_of(&e.event_id).is_some()));
    if elsewhere {
        return Err(Error::AlreadyExists {
            what: "event id (committed in another stream)".into(),
        });
    }
    let ours: Vec<&Commit> = clashing.iter().filter(|c| c.stream == *stream).collect();
    let decision = decide_append(stream, expected, state, batch, |id| {
        ours.iter().find_map(|c| c.version_of(id))
    })?;
    Ok(match decision {
        AppendDecision::Write { first_version } => Resolution::Write { first_version },
        AppendDecision::Empty { current } => Resolution::Done(AppendOutcome {
            first_version: current + 1,
            next_expected: current,
            position: None,
        }),
        AppendDecision::AlreadyCommitted {
            first_version,
            last_version,
        } => {
            let position = ours.iter().find_map(|c| {
                let offset = last_version.checked_sub(c.first)?;
                let index = usize::try_from(offset).ok()?;
                (index < c.events.len()).then(|| c.position(index))
            });
            Resolution::Done(AppendOutcome {
                first_version,
                next_expected: last_version,
                position,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use cqrs_core::{ContentType, Position, Timestamp};

    use super::*;

    fn sid(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    fn batch(n: usize) -> Vec<EventData> {
        (0..n)
            .map(|_| EventData::new("T", ContentType::Json, "{}"))
            .collect()
    }

    fn commit(stream: &str, first: u64, seq: u64, events: &[EventData]) -> Commit {
        Commit {
            stream: sid(stream),
            first,
            seq,
            at: Timestamp::from_millis(0),
            events: events.to_vec(),
            times: vec![Timestamp::from_millis(0); events.len()],
        }
    }

    #[test]
    fn a_resent_commit_returns_the_original_outcome() {
        let b = batch(3);
        let stored = [commit("s", 4, 17, &b)];
        for expected in [
            ExpectedVersion::NoStream,
            ExpectedVersion::Any,
            ExpectedVersion::Exact(3),
        ] {
            let r = resolve(&sid("s"), expected, StreamState::Live(9), &b, &stored).unwrap();
            assert_eq!(
                r,
                Resolution::Done(AppendOutcome {
                    first_version: 4,
                    next_expected: 6,
                    position: Some(Position::new(0, [17, 2, 0])),
                })
            );
        }
        // A committed prefix re-sent is idempotent too.
        let r = resolve(
            &sid("s"),
            ExpectedVersion::Any,
            StreamState::Live(9),
            &b[..2],
            &stored,
        )
        .unwrap();
        assert_eq!(
            r,
            Resolution::Done(AppendOutcome {
                first_version: 4,
                next_expected: 5,
                position: Some(Position::new(0, [17, 1, 0])),
            })
        );
    }

    #[test]
    fn partial_or_reordered_batches_are_mismatches() {
        let b = batch(3);
        let stored = [commit("s", 1, 1, &b[..2])];
        let r = resolve(&sid("s"), ExpectedVersion::Any, StreamState::Live(2), &b, &stored);
        assert!(matches!(r, Err(Error::IdempotencyMismatch { .. })));
        let reordered = vec![b[1].clone(), b[0].clone()];
        let r = resolve(
            &sid("s"),
            ExpectedVersion::Any,
            StreamState::Live(2),
            &reordered,
            &stored,
        );
        assert!(matches!(r, Err(Error::IdempotencyMismatch { .. })));
    }

    #[test]
    fn a_version_clash_without_our_ids_is_a_conflict_with_the_actual_state() {
        let r = resolve(
            &sid("s"),
            ExpectedVersion::Exact(2),
            StreamState::Live(3),
            &batch(1),
            &[],
        );
        assert!(matches!(
            r,
            Err(Error::Conflict {
                actual: StreamState::Live(3),
                ..
            })
        ));
        let r = resolve(
            &sid("s"),
            ExpectedVersion::Any,
            StreamState::Live(3),
            &batch(2),
            &[],
        )
        .unwrap();
        assert_eq!(r, Resolution::Write { first_version: 4 });
    }

    #[test]
    fn ids_of_another_stream_already_exist() {
        let b = batch(1);
        let stored = [commit("other", 1, 1, &b)];
        let r = resolve(&sid("s"), ExpectedVersion::Any, StreamState::Missing, &b, &stored);
        assert!(matches!(r, Err(Error::AlreadyExists { .. })));
    }

    #[test]
    fn empty_and_deleted() {
        let r = resolve(&sid("s"), ExpectedVersion::Any, StreamState::Missing, &[], &[]).unwrap();
        assert_eq!(
            r,
            Resolution::Done(AppendOutcome {
                first_version: 1,
                next_expected: 0,
                position: None
            })
        );
        let r = resolve(
            &sid("s"),
            ExpectedVersion::Any,
            StreamState::Tombstoned,
            &batch(1),
            &[],
        );
        assert!(matches!(r, Err(Error::StreamDeleted { .. })));
    }
}
