//! [`SnapshotStore`] for [`MemoryBackend`]: snapshots by stream, then version.

use std::ops::Bound;

use async_trait::async_trait;
use cqrs_core::{check_version, Result, Snapshot, SnapshotKey, SnapshotStore, StreamId};

use crate::state::count;
use crate::MemoryBackend;

#[async_trait]
impl SnapshotStore for MemoryBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %snapshot.stream_id, version = snapshot.version))]
    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        self.begin().await?;
        self.limits.check_document(snapshot.payload.len())?;
        check_version(snapshot.version)?;
        self.lock()?
            .snapshots
            .entry(snapshot.stream_id.clone())
            .or_default()
            .insert(snapshot.version, snapshot);
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream))]
    async fn load_latest(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        self.begin().await?;
        let inner = self.lock()?;
        Ok(inner
            .snapshots
            .get(stream)
            .and_then(|by_version| by_version.last_key_value())
            .map(|(_, s)| s.clone()))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream, version = version))]
    async fn load_at_or_before(&self, stream: &StreamId, version: u64) -> Result<Option<Snapshot>> {
        self.begin().await?;
        let inner = self.lock()?;
        Ok(inner
            .snapshots
            .get(stream)
            .and_then(|by_version| by_version.range(..=version).next_back())
            .map(|(_, s)| s.clone()))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", stream = %stream))]
    async fn delete(&self, stream: &StreamId) -> Result<u64> {
        self.begin().await?;
        let removed = self.lock()?.snapshots.remove(stream);
        Ok(removed.map_or(0, |by_version| count(by_version.len())))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "memory", limit = limit))]
    async fn list(&self, after: Option<&SnapshotKey>, limit: usize) -> Result<Vec<SnapshotKey>> {
        self.begin().await?;
        let inner = self.lock()?;
        let lower = after.map_or(Bound::Unbounded, |k| Bound::Included(&k.stream_id));
        let keys = inner
            .snapshots
            .range::<StreamId, _>((lower, Bound::Unbounded))
            .flat_map(|(stream, by_version)| {
                by_version.keys().map(move |&version| SnapshotKey {
                    stream_id: stream.clone(),
                    version,
                })
            })
            .filter(|key| after.is_none_or(|a| key > a))
            .take(limit)
            .collect();
        Ok(keys)
    }
}
