//! A snapshot the repository cannot trust is ignored, counted and logged: the load replays.

use std::sync::Arc;

use backend_memory::MemoryBackend;
use conformance::policies::{Counter, CounterCommand};
use cqrs_core::aggregate::{EventSourcedRepository, SNAPSHOTS_REJECTED};
use cqrs_core::snapshot_policy::SnapshotPolicy;
use cqrs_core::{ContentEncoding, Snapshot, SnapshotStore};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// `cqrs_snapshots_rejected_total` by `reason`, as the recorder saw it.
fn rejected(snapshot: &metrics_util::debugging::Snapshotter, reason: &str) -> u64 {
    snapshot
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key().name() == SNAPSHOTS_REJECTED
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "reason" && l.value() == reason)
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

#[test]
fn a_corrupt_snapshot_is_counted_and_the_stream_replayed() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        futures::executor::block_on(async {
            let stores = MemoryBackend::new().stores();
            let snaps: Arc<dyn SnapshotStore> = stores.snapshots.clone();
            let repo = EventSourcedRepository::<Counter>::new(stores.events.clone())
                .with_snapshots(snaps.clone(), SnapshotPolicy::EveryEvents(3))
                .snapshot_encoding(ContentEncoding::Identity);
            for i in 1..=3 {
                repo.execute("c", CounterCommand::Add(i)).await.unwrap();
            }
            let stream = repo.stream_id("c").unwrap();
            assert_eq!(repo.load("c").await.unwrap().snapshot_version, 3);
            assert_eq!(rejected(&snapshotter, "corrupt"), 0);

            let good = snaps.load_latest(&stream).await.unwrap().unwrap();
            let at_rest = Snapshot { version: 2, ..good };
            snaps.delete(&stream).await.unwrap();
            snaps.save(at_rest).await.unwrap();
            let loaded = repo.load("c").await.unwrap();
            assert_eq!(
                (
                    loaded.state.value,
                    loaded.snapshot_version,
                    loaded.events_replayed
                ),
                (6, 0, 3)
            );
            assert_eq!(rejected(&snapshotter, "corrupt"), 1, "one rejection counted");
        });
    });
}
