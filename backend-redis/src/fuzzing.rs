//! The decoders of bytes this backend stores, for the fuzz targets in `fuzz/` (feature
//! `fuzzing`). Not a stable API: it exists so the targets call the very functions the
//! stores call, instead of copies of them.

use cqrs_core::{EventData, RecordedEvent, Result, Snapshot, StreamId};
use redis::Value;

pub use crate::bus::fuzzing::{decode_dead_letter, decode_entry, pack_message};
pub use redis;

/// The packed bytes an append stores for `e`.
///
/// # Errors
/// An event the format cannot hold.
pub fn pack_event(e: &EventData) -> Result<Vec<u8>> {
    crate::packed::pack(e)
}

/// One entry of a stream's events, as `read_stream` decodes it.
///
/// # Errors
/// [`cqrs_core::Error::Corrupt`] for an entry that is not an event.
pub fn decode_event(stream: &StreamId, partition: u32, entry: Value) -> Result<RecordedEvent> {
    crate::packed::decode_event(stream, partition, entry)
}

/// One entry of a partition log, as `read_all` decodes it: `(entry id, stream, from, to)`.
///
/// # Errors
/// [`cqrs_core::Error::Corrupt`] for an entry that is not a commit pointer.
pub fn decode_commit(entry: Value) -> Result<([u64; 2], String, u64, u64)> {
    crate::log::commit_parts(entry)
}

/// The bytes a snapshot save stores.
pub fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    crate::snapshot_store::encode(s)
}

/// A stored snapshot as `load_latest` decodes it.
///
/// # Errors
/// [`cqrs_core::Error::Corrupt`] for bytes that are not a snapshot.
pub fn decode_snapshot(stream: &StreamId, version: u64, bytes: Vec<u8>) -> Result<Snapshot> {
    crate::snapshot_store::decode(stream, version, bytes)
}
