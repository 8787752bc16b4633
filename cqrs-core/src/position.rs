//! The store-wide log: partitions, positions, checkpoints and filters.
//!
//! A backend's log has one or more partitions; events are totally ordered within a
//! partition, and a stream's events always stay in one partition in version order. A
//! [`Checkpoint`] remembers, per partition, the last position a consumer has seen, and which
//! store (and epoch of that store) it came from, so a checkpoint from a restored or migrated
//! store forces a rebuild instead of silently skipping events.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use crate::{Error, RecordedEvent, Result};

/// A place in one partition of the store-wide log.
///
/// The offset is a backend-defined triple compared lexicographically: PostgreSQL uses
/// `(transaction id, sequence, 0)`, Redis `(entry ms, entry seq, index in commit)`, memory
/// `(sequence, 0, 0)`. Positions of different partitions are not comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// The offset within it.
    pub offset: [u64; 3],
}

impl Position {
    /// A position in `partition` at `offset`.
    pub const fn new(partition: u32, offset: [u64; 3]) -> Self {
        Position { partition, offset }
    }

    /// Compares two positions of the same partition; `None` across partitions.
    pub fn cmp_in_partition(&self, other: &Position) -> Option<std::cmp::Ordering> {
        (self.partition == other.partition).then(|| self.offset.cmp(&other.offset))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.offset;
        write!(f, "p{}:{a}-{b}-{c}", self.partition)
    }
}

/// Parses the [`Display`](fmt::Display) form `p<partition>:<a>-<b>-<c>`, the form errors
/// name positions in, so an operator can pass one to [`crate::Admin::quarantine`].
///
/// ```
/// # use cqrs_core::Position;
/// let p: Position = "p3:17-2-0".parse()?;
/// assert_eq!(p, Position::new(3, [17, 2, 0]));
/// assert_eq!(p.to_string(), "p3:17-2-0");
/// assert!("p3:17-2".parse::<Position>().is_err());
/// # Ok::<(), cqrs_core::Error>(())
/// ```
impl std::str::FromStr for Position {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "{s:?} is not a log position (expected p<partition>:<a>-<b>-<c>)"
            ))
        };
        let (partition, offset) = s
            .strip_prefix('p')
            .and_then(|r| r.split_once(':'))
            .ok_or_else(bad)?;
        let mut parts = offset.split('-').map(str::parse::<u64>);
        let mut next = || parts.next().and_then(std::result::Result::ok).ok_or_else(bad);
        let offset = [next()?, next()?, next()?];
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Position::new(partition.parse().map_err(|_| bad())?, offset))
    }
}

/// Which store, and which life of it, a checkpoint belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreIdentity {
    /// Stable id of the store (a UUID written when the store is initialised).
    pub id: String,
    /// Bumped when the store is restored or migrated: older checkpoints are foreign.
    pub epoch: u64,
}

impl fmt::Display for StoreIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.epoch)
    }
}

/// Where a consumer of the store-wide log is: the last position seen in each partition.
///
/// Serialisable, so projections store it beside their models. [`Checkpoint::origin`] is
/// accepted by every store and means "from the beginning".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The store this checkpoint was taken from; `None` for the origin.
    pub store: Option<StoreIdentity>,
    /// Last position seen per partition; a missing partition means "from its start".
    pub partitions: BTreeMap<u32, [u64; 3]>,
}

impl Checkpoint {
    /// The start of every partition of any store.
    pub fn origin() -> Self {
        Checkpoint::default()
    }

    /// The last position seen in `partition`, if any.
    pub fn get(&self, partition: u32) -> Option<Position> {
        self.partitions
            .get(&partition)
            .map(|offset| Position::new(partition, *offset))
    }

    /// True if `position` was already seen (it is at or before this checkpoint).
    pub fn covers(&self, position: &Position) -> bool {
        self.partitions
            .get(&position.partition)
            .is_some_and(|seen| position.offset <= *seen)
    }

    /// Moves past `position`; never moves backwards.
    pub fn advance(&mut self, position: &Position) {
        let seen = self
            .partitions
            .entry(position.partition)
            .or_insert(position.offset);
        if position.offset > *seen {
            *seen = position.offset;
        }
    }

    /// True if this checkpoint is at or past `other` in every partition `other` has seen.
    pub fn is_at_or_after(&self, other: &Checkpoint) -> bool {
        other
            .partitions
            .iter()
            .all(|(p, theirs)| self.partitions.get(p).is_some_and(|ours| ours >= theirs))
    }

    /// Checks that this checkpoint may be used against `store`: the origin always may; any
    /// other must come from the same store id and epoch.
    ///
    /// # Errors
    /// [`Error::CheckpointMismatch`] for a foreign checkpoint.
    pub fn check_store(&self, store: &StoreIdentity) -> Result<()> {
        match &self.store {
            Some(ours) if ours != store => Err(Error::CheckpointMismatch {
                expected: store.to_string(),
                found: ours.to_string(),
            }),
            Some(_) => Ok(()),
            None if self.partitions.is_empty() => Ok(()),
            None => Err(Error::CheckpointMismatch {
                expected: store.to_string(),
                found: "a checkpoint without store identity".into(),
            }),
        }
    }

    /// Serialises to compact JSON, the format checkpoint stores keep.
    pub fn to_json(&self) -> String {
        // A struct of strings and integer maps always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses [`Checkpoint::to_json`] output.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the text is not a checkpoint.
    pub fn from_json(s: &str) -> Result<Self> {
        serde_json::from_str(s).map_err(|e| Error::corrupt(format!("checkpoint: {e}")))
    }
}

/// Which events a filtered [`crate::EventStore::read_all`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only streams whose id starts with this (a category such as `"order-"`).
    pub stream_prefix: Option<String>,
    /// Only these event types (empty: every type).
    pub event_types: Vec<String>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        EventFilter::default()
    }

    /// Events of streams starting with `prefix`.
    pub fn stream_prefix(prefix: impl Into<String>) -> Self {
        EventFilter {
            stream_prefix: Some(prefix.into()),
            event_types: Vec::new(),
        }
    }

    /// Adds an event type to match.
    #[must_use]
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_types.push(event_type.into());
        self
    }

    /// True if `event` passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.matches_parts(event.stream_id.as_str(), &event.data.event_type)
    }

    /// True if an event of `event_type` in `stream` passes the filter.
    pub fn matches_parts(&self, stream: &str, event_type: &str) -> bool {
        self.stream_prefix
            .as_deref()
            .is_none_or(|p| stream.starts_with(p))
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

/// One page of the store-wide log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Matching events, in log order within each partition.
    pub events: Vec<RecordedEvent>,
    /// Where to resume: past every entry scanned, matching or not.
    pub next: Checkpoint,
    /// True when nothing after `next` was visible at the time of the read.
    pub caught_up: bool,
    /// Positions of the entries this page skipped because an operator quarantined them
    /// ([`crate::Admin::quarantine`]), in log order, whether or not they match the filter:
    /// a reader logs them so the gap in its model is never silent.
    pub quarantined: Vec<Position>,
}

/// A point in time in milliseconds since the Unix epoch: the precision every backend keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest time every backend stores: 0001-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp(-62_135_596_800_000);
    /// The latest time every backend stores: 9999-12-31T23:59:59.999Z.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// True when every backend can store this time (between [`Timestamp::MIN`] and
    /// [`Timestamp::MAX`]).
    pub const fn is_storable(self) -> bool {
        self.0 >= Self::MIN.0 && self.0 <= Self::MAX.0
    }

    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// From a system time, truncated to milliseconds (saturating outside the i64 range).
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// This time plus a duration, saturating at [`Timestamp::MAX`].
    #[must_use]
    pub fn saturating_add(self, d: std::time::Duration) -> Self {
        let t = self
            .0
            .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp(t.min(Self::MAX.0))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_advances_but_never_backwards() {
        let mut c = Checkpoint::origin();
        c.advance(&Position::new(0, [5, 0, 0]));
        c.advance(&Position::new(0, [3, 0, 0]));
        c.advance(&Position::new(1, [1, 2, 3]));
        assert_eq!(c.get(0), Some(Position::new(0, [5, 0, 0])));
        assert!(c.covers(&Position::new(0, [5, 0, 0])));
        assert!(!c.covers(&Position::new(0, [5, 0, 1])));
        assert!(!c.covers(&Position::new(2, [0, 0, 0])));
        let json = c.to_json();
        assert_eq!(Checkpoint::from_json(&json).ok(), Some(c));
    }

    #[test]
    fn foreign_checkpoints_are_refused() {
        let a = StoreIdentity {
            id: "a".into(),
            epoch: 1,
        };
        let b = StoreIdentity {
            id: "a".into(),
            epoch: 2,
        };
        let mut c = Checkpoint {
            store: Some(a.clone()),
            ..Checkpoint::origin()
        };
        assert!(c.check_store(&a).is_ok());
        assert!(matches!(c.check_store(&b), Err(Error::CheckpointMismatch { .. })));
        c.store = None;
        assert!(c.check_store(&b).is_ok(), "the origin fits every store");
    }

    #[test]
    fn filter_matches_prefix_and_types() {
        let f = EventFilter::stream_prefix("order-").event_type("Placed");
        assert!(f.matches_parts("order-1", "Placed"));
        assert!(!f.matches_parts("order-1", "Paid"));
        assert!(!f.matches_parts("cart-1", "Placed"));
        assert!(EventFilter::all().matches_parts("x", "y"));
    }
}
