//! Copying a store from one backend to another through [`Admin`](cqrs_core::Admin), and proving the copy.
//!
//! [`Migration::run`] copies every stream (events with their versions, ids, types, schema
//! versions, payload bytes, content types and encodings, metadata and timestamps, then the
//! stream's state), every snapshot, and the state entries of the kinds named. It works page
//! by page in constant memory, resumes where an interrupted run stopped (each stream
//! continues after the target's last version; finished streams are remembered in the target's
//! state store), and a second run copies nothing. [`Migration::verify`] compares both sides
//! stream by stream and computes a canonical checksum of each.
//!
//! Projection checkpoints do not carry over: the target has another store identity, so a
//! projection pointed at it rebuilds.
//!
//! Moving a live system: run with `follow` until the lag is zero, stop the writers, run once
//! more (final catch-up), verify, switch the application's URL.

use std::fmt;

use cqrs_core::{
    Error, ImportedEvent, RecordedEvent, Result, SnapshotKey, StateExpectation, Stores, StreamId, StreamState,
};
use sha2::{Digest, Sha256};

/// The state kind under which the target remembers a migration's progress.
pub const PROGRESS_KIND: &str = "cqrs-migration";

/// What a migration copies and how.
#[derive(Debug, Clone)]
pub struct MigrationOptions {
    /// Events per read and per imported commit.
    pub page: usize,
    /// Report what would be copied, write nothing.
    pub dry_run: bool,
    /// State kinds to copy (the state store has no listing of kinds).
    pub state_kinds: Vec<String>,
}

impl Default for MigrationOptions {
    fn default() -> Self {
        MigrationOptions {
            page: 500,
            dry_run: false,
            state_kinds: Vec::new(),
        }
    }
}

/// Progress, reported after every page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Streams finished.
    pub streams: u64,
    /// Events copied (or, in a dry run, to copy).
    pub events: u64,
    /// Events already on the target and skipped.
    pub skipped: u64,
    /// Snapshots copied.
    pub snapshots: u64,
    /// State entries copied.
    pub states: u64,
}

/// The outcome of a comparison of both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Streams compared.
    pub streams: u64,
    /// Events compared.
    pub events: u64,
    /// Streams that differ (state, count or content), at most 100 listed.
    pub mismatches: Vec<StreamId>,
    /// Canonical checksum of the source (hex SHA-256).
    pub source_checksum: String,
    /// Canonical checksum of the target.
    pub target_checksum: String,
}

impl Verification {
    /// True when both sides hold the same streams, states and events.
    pub fn is_equal(&self) -> bool {
        self.mismatches.is_empty() && self.source_checksum == self.target_checksum
    }
}

/// A copy from one backend's stores to another's.
pub struct Migration {
    source: Stores,
    target: Stores,
    options: MigrationOptions,
}

impl fmt::Debug for Migration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migration")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Migration {
    /// A migration from `source` to `target`.
    pub fn new(source: Stores, target: Stores, options: MigrationOptions) -> Self {
        Migration {
            source,
            target,
            options,
        }
    }

    /// The number of events the source's streams have versions for: the length of a
    /// progress bar. Tombstoned streams count as 0, though a backend may still hold (and the
    /// migration copy) their events.
    ///
    /// # Errors
    /// Store errors.
    pub async fn source_events(&self) -> Result<u64> {
        let mut total = 0;
        let mut after: Option<StreamId> = None;
        loop {
            let streams = self
                .source
                .admin
                .list_all_streams(after.as_ref(), self.page())
                .await?;
            let Some(last) = streams.last().map(|(s, _)| s.clone()) else {
                return Ok(total);
            };
            total += streams
                .iter()
                .map(|(_, st)| st.last_version().unwrap_or(0))
                .sum::<u64>();
            after = Some(last);
        }
    }

    fn page(&self) -> usize {
        self.options.page.max(1)
    }

    fn progress_id(&self) -> String {
        self.source.events.identity().id
    }

    /// Copies everything not yet on the target; `progress` is called after every page.
    ///
    /// # Errors
    /// Store errors of either side; [`Error::IdempotencyMismatch`] or [`Error::Conflict`]
    /// when the target holds other events in a stream than the source.
    pub async fn run(&self, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<Progress> {
        let mut p = Progress::default();
        let mut after = self.load_progress().await?;
        loop {
            let streams = self
                .source
                .admin
                .list_all_streams(after.as_ref(), self.page())
                .await?;
            let Some(last) = streams.last().map(|(s, _)| s.clone()) else {
                break;
            };
            for (stream, state) in streams {
                self.copy_stream(&stream, state, &mut p, progress).await?;
                p.streams += 1;
            }
            if !self.options.dry_run {
                self.save_progress(&last).await?;
            }
            after = Some(last);
            progress(p);
        }
        self.copy_snapshots(&mut p).await?;
        self.copy_states(&mut p).await?;
        if !self.options.dry_run {
            // A finished run forgets its progress, so the next run (follow, final catch-up)
            // looks at every stream again; streams already equal cost one state read each.
            self.clear_progress().await?;
        }
        progress(p);
        Ok(p)
    }

    async fn copy_stream(
        &self,
        stream: &StreamId,
        state: StreamState,
        p: &mut Progress,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<()> {
        let target_state = self.target.events.stream_state(stream).await?;
        if target_state == StreamState::Tombstoned {
            return Ok(());
        }
        let have = target_state.last_version().unwrap_or(0);
        p.skipped += have.min(state.last_version().unwrap_or(have));
        let mut from = have + 1;
        loop {
            let page = self.source.admin.read_raw(stream, from, self.page()).await?;
            let Some(last) = page.last().map(|e| e.version) else {
                break;
            };
            p.events += page.len() as u64;
            if !self.options.dry_run {
                let commit = page.into_iter().map(imported).collect();
                self.target.admin.import_commit(stream, commit).await?;
            }
            progress(*p);
            from = last + 1;
        }
        if !self.options.dry_run && matches!(state, StreamState::SoftDeleted(_) | StreamState::Tombstoned) {
            self.target.admin.set_stream_state(stream, state).await?;
        }
        Ok(())
    }

    async fn copy_snapshots(&self, p: &mut Progress) -> Result<()> {
        let mut after: Option<SnapshotKey> = None;
        loop {
            let keys = self.source.snapshots.list(after.as_ref(), self.page()).await?;
            let Some(last) = keys.last().cloned() else {
                return Ok(());
            };
            for key in keys {
                let snap = self
                    .source
                    .snapshots
                    .load_at_or_before(&key.stream_id, key.version)
                    .await?;
                if let Some(snap) = snap.filter(|s| s.version == key.version) {
                    if !self.options.dry_run {
                        self.target.snapshots.save(snap).await?;
                    }
                    p.snapshots += 1;
                }
            }
            after = Some(last);
        }
    }

    async fn copy_states(&self, p: &mut Progress) -> Result<()> {
        for kind in &self.options.state_kinds {
            let mut after: Option<String> = None;
            loop {
                let ids = self
                    .source
                    .states
                    .list(kind, after.as_deref(), self.page())
                    .await?;
                let Some(last) = ids.last().map(|(id, _)| id.clone()) else {
                    break;
                };
                for (id, _) in ids {
                    let Some(v) = self.source.states.get(kind, &id).await? else {
                        continue;
                    };
                    if !self.options.dry_run {
                        self.target
                            .states
                            .put(kind, &id, StateExpectation::Any, v.value)
                            .await?;
                    }
                    p.states += 1;
                }
                after = Some(last);
            }
        }
        Ok(())
    }

    async fn load_progress(&self) -> Result<Option<StreamId>> {
        match self.target.states.get(PROGRESS_KIND, &self.progress_id()).await? {
            Some(v) => {
                let text = String::from_utf8(v.value.to_vec())
                    .map_err(|e| Error::corrupt(format!("migration progress: {e}")))?;
                StreamId::new(text).map(Some)
            }
            None => Ok(None),
        }
    }

    async fn save_progress(&self, after: &StreamId) -> Result<()> {
        let value = bytes::Bytes::copy_from_slice(after.as_str().as_bytes());
        self.target
            .states
            .put(PROGRESS_KIND, &self.progress_id(), StateExpectation::Any, value)
            .await
            .map(|_| ())
    }

    async fn clear_progress(&self) -> Result<()> {
        self.target
            .states
            .delete(PROGRESS_KIND, &self.progress_id(), None)
            .await
    }

    /// Compares both sides: every stream's state and events (by the canonical form of
    /// [`canonical_event`]), and a checksum of each side.
    ///
    /// # Errors
    /// Store errors of either side.
    pub async fn verify(&self) -> Result<Verification> {
        let mut v = Verification {
            streams: 0,
            events: 0,
            mismatches: Vec::new(),
            source_checksum: String::new(),
            target_checksum: String::new(),
        };
        let (mut src_hash, mut dst_hash) = (Sha256::new(), Sha256::new());
        let mut after: Option<StreamId> = None;
        loop {
            let streams = self
                .source
                .admin
                .list_all_streams(after.as_ref(), self.page())
                .await?;
            let Some(last) = streams.last().map(|(s, _)| s.clone()) else {
                break;
            };
            for (stream, state) in streams {
                v.streams += 1;
                let target_state = self.target.events.stream_state(&stream).await?;
                src_hash.update(format!("stream {stream:?} {state}\n"));
                dst_hash.update(format!("stream {stream:?} {target_state}\n"));
                let mut same = state == target_state;
                // A tombstone may or may not keep the deleted events (backends differ): two
                // tombstones are equal whatever they kept.
                if !(state == StreamState::Tombstoned && same) {
                    let (equal, events) = self.compare_events(&stream, &mut src_hash, &mut dst_hash).await?;
                    same &= equal;
                    v.events += events;
                }
                if !same && v.mismatches.len() < 100 {
                    v.mismatches.push(stream);
                }
            }
            after = Some(last);
        }
        v.source_checksum = hex(&src_hash.finalize());
        v.target_checksum = hex(&dst_hash.finalize());
        Ok(v)
    }
}

impl Migration {
    /// Compares the stored events of one stream on both sides, feeding both checksums;
    /// returns whether they are equal and how many the source holds.
    async fn compare_events(
        &self,
        stream: &StreamId,
        src: &mut Sha256,
        dst: &mut Sha256,
    ) -> Result<(bool, u64)> {
        let (mut same, mut events, mut from) = (true, 0u64, 1u64);
        loop {
            let a = self.source.admin.read_raw(stream, from, self.page()).await?;
            let b = self.target.admin.read_raw(stream, from, self.page()).await?;
            let (ca, cb): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (
                a.iter().map(canonical_event).collect(),
                b.iter().map(canonical_event).collect(),
            );
            ca.iter().for_each(|c| src.update(c));
            cb.iter().for_each(|c| dst.update(c));
            events += a.len() as u64;
            same &= ca == cb;
            match (a.last(), b.last()) {
                (Some(x), _) => from = x.version + 1,
                (None, Some(y)) => from = y.version + 1,
                (None, None) => return Ok((same, events)),
            }
        }
    }
}

/// The canonical form of an event that checksums cover: stream, version, id, type, schema
/// version, content type, encoding, payload bytes, canonical metadata JSON and the
/// millisecond timestamp. The log position is not part of it: it is the store's own.
pub fn canonical_event(e: &RecordedEvent) -> Vec<u8> {
    let d = &e.data;
    let mut out = format!(
        "{:?}|{}|{}|{:?}|{}|{}|{}|{}|{}|",
        e.stream_id.as_str(),
        e.version,
        d.event_id,
        d.event_type,
        d.schema_version,
        d.content_type.as_str(),
        d.content_encoding.as_str(),
        d.metadata.to_json(),
        e.recorded_at.as_millis(),
    )
    .into_bytes();
    out.extend_from_slice(&(d.payload.len() as u64).to_be_bytes());
    out.extend_from_slice(&d.payload);
    out.push(b'\n');
    out
}

fn imported(e: RecordedEvent) -> ImportedEvent {
    ImportedEvent {
        version: e.version,
        recorded_at: e.recorded_at,
        data: e.data,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
