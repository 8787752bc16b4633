//! The offline rewrite: copy a stream into a new one with every event at its latest schema
//! version, so an old upcaster can be retired.
//!
//! History is never changed in place. The rewrite reads the old stream through the
//! upcasters and imports the result into a new stream through [`cqrs_core::Admin`], keeping
//! versions and timestamps. Each new event id is derived from the old one (UUID v5), and the
//! old id is kept as the causation id, so a re-run after an interruption continues where it
//! stopped and never writes a copy twice. Switch readers to the new stream, then delete the
//! old one and the upcaster steps nothing else needs.

use cqrs_core::{upcast::UpcasterChain, EventId, ImportedEvent, Result, Stores, StreamId};
use uuid::Uuid;

/// The UUID v5 namespace of rewritten event ids.
const REWRITE_NAMESPACE: Uuid = Uuid::from_u128(0x6f1b_7c2e_3c4d_4e8f_9a0b_1c2d_3e4f_5a6b);

/// The id a rewritten copy of `old` gets: stable, so re-runs are idempotent.
pub fn rewritten_id(old: EventId) -> EventId {
    EventId::from_uuid(Uuid::new_v5(&REWRITE_NAMESPACE, old.as_uuid().as_bytes()))
}

/// Copies `from` into `to` through `upcasters`, `page` events at a time; returns how many
/// events were written by this call (0 when `to` was already complete).
///
/// # Errors
/// Store errors; [`cqrs_core::Error::NoUpcastPath`] for an event the chain cannot bring to
/// its latest version (nothing after it is written); [`cqrs_core::Error::Conflict`] if `to`
/// holds other events.
pub async fn rewrite_stream(
    stores: &Stores,
    upcasters: &UpcasterChain,
    from: &StreamId,
    to: &StreamId,
    page: usize,
) -> Result<u64> {
    let done = stores.events.stream_state(to).await?.last_version().unwrap_or(0);
    let mut next = done + 1;
    let mut written = 0;
    loop {
        let old = stores.events.read_stream(from, next, page.max(1)).await?;
        let Some(last) = old.last().map(|e| e.version) else {
            return Ok(written);
        };
        let mut commit = Vec::with_capacity(old.len());
        for e in old {
            let mut data = upcasters.upcast(e.data)?;
            data.metadata.causation_id = Some(data.event_id.to_string());
            data.event_id = rewritten_id(data.event_id);
            commit.push(ImportedEvent {
                version: e.version,
                recorded_at: e.recorded_at,
                data,
            });
        }
        written += commit.len() as u64;
        stores.admin.import_commit(to, commit).await?;
        next = last + 1;
    }
}
