//! When to take a snapshot: evaluated after a successful commit, never on a failed command.

use std::time::Duration;

use crate::Timestamp;

/// What a policy sees after a commit.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotContext<'a> {
    /// The stream's version after the commit.
    pub version: u64,
    /// Version of the latest snapshot the aggregate was loaded from (0 if none).
    pub snapshot_version: u64,
    /// When that snapshot was taken, if there was one.
    pub snapshot_taken_at: Option<Timestamp>,
    /// Now, from the repository's [`crate::Clock`].
    pub now: Timestamp,
    /// Types of the events just committed.
    pub committed_types: &'a [String],
}

impl SnapshotContext<'_> {
    /// Events appended since the latest snapshot.
    pub fn events_since_snapshot(&self) -> u64 {
        self.version.saturating_sub(self.snapshot_version)
    }
}

/// A rule deciding whether to snapshot after a commit.
///
/// ```
/// use std::time::Duration;
/// use cqrs_core::snapshot_policy::SnapshotPolicy;
/// // Every 100 events, or when an order is closed, but at most... any of them:
/// let policy = SnapshotPolicy::any([
///     SnapshotPolicy::EveryEvents(100),
///     SnapshotPolicy::on_event_types(["OrderClosed"]),
///     SnapshotPolicy::Every(Duration::from_secs(3600)),
/// ]);
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SnapshotPolicy {
    /// Never snapshot.
    #[default]
    Never,
    /// Once at least this many events were appended since the latest snapshot (so it fires
    /// once per N events and resets when a snapshot is taken). `EveryEvents(0)` never fires.
    EveryEvents(u64),
    /// Once this much time has passed since the latest snapshot (or when there is none yet).
    Every(Duration),
    /// When the commit holds an event of one of these types.
    OnEventTypes(Vec<String>),
    /// When any inner policy fires.
    Any(Vec<SnapshotPolicy>),
    /// When every inner policy fires (an empty list never fires).
    All(Vec<SnapshotPolicy>),
}

impl SnapshotPolicy {
    /// [`SnapshotPolicy::OnEventTypes`] from names.
    pub fn on_event_types<I: IntoIterator<Item = S>, S: Into<String>>(types: I) -> Self {
        SnapshotPolicy::OnEventTypes(types.into_iter().map(Into::into).collect())
    }

    /// [`SnapshotPolicy::Any`].
    pub fn any(policies: impl IntoIterator<Item = SnapshotPolicy>) -> Self {
        SnapshotPolicy::Any(policies.into_iter().collect())
    }

    /// [`SnapshotPolicy::All`].
    pub fn all(policies: impl IntoIterator<Item = SnapshotPolicy>) -> Self {
        SnapshotPolicy::All(policies.into_iter().collect())
    }

    /// Whether to snapshot now. Nothing committed means nothing to snapshot.
    pub fn should_snapshot(&self, ctx: &SnapshotContext<'_>) -> bool {
        if ctx.committed_types.is_empty() {
            return false;
        }
        match self {
            SnapshotPolicy::Never => false,
            SnapshotPolicy::EveryEvents(n) => *n > 0 && ctx.events_since_snapshot() >= *n,
            SnapshotPolicy::Every(d) => ctx
                .snapshot_taken_at
                .is_none_or(|at| u128::from(ctx.now.millis_since(at)) >= d.as_millis()),
            SnapshotPolicy::OnEventTypes(types) => ctx.committed_types.iter().any(|t| types.contains(t)),
            SnapshotPolicy::Any(ps) => ps.iter().any(|p| p.should_snapshot(ctx)),
            SnapshotPolicy::All(ps) => !ps.is_empty() && ps.iter().all(|p| p.should_snapshot(ctx)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(
        version: u64,
        snap: u64,
        at: Option<i64>,
        now: i64,
        types: &'a [String],
    ) -> SnapshotContext<'a> {
        SnapshotContext {
            version,
            snapshot_version: snap,
            snapshot_taken_at: at.map(Timestamp::from_millis),
            now: Timestamp::from_millis(now),
            committed_types: types,
        }
    }

    #[test]
    fn every_n_fires_once_per_n_and_resets() {
        let t = vec!["E".to_owned()];
        let p = SnapshotPolicy::EveryEvents(3);
        let mut snap = 0;
        let mut fired = Vec::new();
        for v in 1..=10 {
            if p.should_snapshot(&ctx(v, snap, None, 0, &t)) {
                fired.push(v);
                snap = v;
            }
        }
        assert_eq!(fired, vec![3, 6, 9]);
        assert!(!SnapshotPolicy::EveryEvents(0).should_snapshot(&ctx(5, 0, None, 0, &t)));
    }

    #[test]
    fn every_duration_uses_the_clock() {
        let t = vec!["E".to_owned()];
        let p = SnapshotPolicy::Every(Duration::from_secs(60));
        assert!(p.should_snapshot(&ctx(1, 0, None, 0, &t)), "no snapshot yet");
        assert!(!p.should_snapshot(&ctx(2, 1, Some(0), 59_999, &t)));
        assert!(p.should_snapshot(&ctx(2, 1, Some(0), 60_000, &t)));
    }

    #[test]
    fn event_types_never_and_combinators() {
        let closed = vec!["Closed".to_owned()];
        let other = vec!["Opened".to_owned()];
        let on = SnapshotPolicy::on_event_types(["Closed"]);
        assert!(on.should_snapshot(&ctx(1, 0, None, 0, &closed)));
        assert!(!on.should_snapshot(&ctx(1, 0, None, 0, &other)));
        assert!(!SnapshotPolicy::Never.should_snapshot(&ctx(100, 0, None, 0, &closed)));
        let any = SnapshotPolicy::any([SnapshotPolicy::EveryEvents(10), on.clone()]);
        let all = SnapshotPolicy::all([SnapshotPolicy::EveryEvents(10), on]);
        assert!(any.should_snapshot(&ctx(1, 0, None, 0, &closed)));
        assert!(!all.should_snapshot(&ctx(1, 0, None, 0, &closed)));
        assert!(all.should_snapshot(&ctx(10, 0, None, 0, &closed)));
        assert!(!SnapshotPolicy::all([]).should_snapshot(&ctx(10, 0, None, 0, &closed)));
    }

    #[test]
    fn nothing_committed_never_fires() {
        assert!(!SnapshotPolicy::EveryEvents(1).should_snapshot(&ctx(5, 0, None, 0, &[])));
    }
}
