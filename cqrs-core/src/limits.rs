//! Size and count limits, checked in core before any I/O so every backend refuses the same
//! input the same way.

use crate::{validate_name, Error, EventData, LimitKind, Result};

/// Limits applied to appends, documents and reads.
///
/// The defaults keep a whole batch under MongoDB's 16 MiB document cap, so a batch accepted
/// by one backend is accepted by every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest event (payload, type and metadata) in bytes.
    pub max_event_bytes: usize,
    /// Largest append batch in bytes.
    pub max_batch_bytes: usize,
    /// Most events in one append.
    pub max_batch_count: usize,
    /// Largest snapshot, state entry or read-model document in bytes.
    pub max_document_bytes: usize,
    /// A read page stops once it holds this many bytes (it always holds at least one event),
    /// so memory stays bounded whatever `max` the caller asks for.
    pub max_read_bytes: usize,
}

impl Limits {
    /// Default event size limit: 8 MiB.
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;
    /// Default batch size limit: 15 MiB.
    pub const DEFAULT_MAX_BATCH_BYTES: usize = 15 * 1024 * 1024;
    /// Default batch count limit.
    pub const DEFAULT_MAX_BATCH_COUNT: usize = 10_000;
    /// Default document size limit: 15 MiB.
    pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 15 * 1024 * 1024;
    /// Default read page size limit: 16 MiB.
    pub const DEFAULT_MAX_READ_BYTES: usize = 16 * 1024 * 1024;

    /// Validates an append batch: sizes, count, event types, schema versions and duplicate
    /// ids inside the batch.
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a limit, [`Error::InvalidInput`] for a malformed event or a
    /// duplicate id.
    pub fn check_batch(&self, events: &[EventData]) -> Result<()> {
        too_large(LimitKind::BatchCount, self.max_batch_count, events.len())?;
        let mut total = 0usize;
        for event in events {
            validate_name("event type", &event.event_type)?;
            if event.schema_version == 0 {
                return Err(Error::invalid(format!(
                    "event {} has schema version 0; versions start at 1",
                    event.event_id
                )));
            }
            check_metadata(&event.metadata)?;
            let len = event.encoded_len();
            too_large(LimitKind::EventBytes, self.max_event_bytes, len)?;
            total = total.saturating_add(len);
        }
        // Sorted 128-bit ids, not a SipHash set: a third of the check's time on a batch of 100.
        let mut ids: Vec<u128> = events.iter().map(|e| e.event_id.as_uuid().as_u128()).collect();
        ids.sort_unstable();
        if let Some(twice) = ids.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]) {
            return Err(Error::invalid(format!(
                "event id {} appears twice in one batch",
                crate::EventId::from_uuid(uuid::Uuid::from_u128(twice))
            )));
        }
        too_large(LimitKind::BatchBytes, self.max_batch_bytes, total)
    }

    /// Validates the size of a snapshot, state entry or document.
    ///
    /// # Errors
    /// [`Error::TooLarge`] with [`LimitKind::DocumentBytes`].
    pub fn check_document(&self, len: usize) -> Result<()> {
        too_large(LimitKind::DocumentBytes, self.max_document_bytes, len)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: Self::DEFAULT_MAX_EVENT_BYTES,
            max_batch_bytes: Self::DEFAULT_MAX_BATCH_BYTES,
            max_batch_count: Self::DEFAULT_MAX_BATCH_COUNT,
            max_document_bytes: Self::DEFAULT_MAX_DOCUMENT_BYTES,
            max_read_bytes: Self::DEFAULT_MAX_READ_BYTES,
        }
    }
}

/// Metadata values are text every backend can store: no NUL characters (PostgreSQL `text`
/// and `jsonb` refuse them).
fn check_metadata(md: &crate::Metadata) -> Result<()> {
    let fields = [&md.correlation_id, &md.causation_id, &md.actor];
    let texts = fields.into_iter().flatten().map(String::as_str);
    let extra = md.extra.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]);
    if texts.chain(extra).any(|t| t.contains('\0')) {
        return Err(Error::invalid("event metadata contains a NUL character"));
    }
    Ok(())
}

fn too_large(kind: LimitKind, limit: usize, actual: usize) -> Result<()> {
    if actual > limit {
        return Err(Error::TooLarge {
            kind,
            limit: limit as u64,
            actual: actual as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContentType;

    fn ev(n: usize) -> EventData {
        EventData::new("T", ContentType::Opaque, vec![0u8; n])
    }

    #[test]
    fn refuses_oversized_event_batch_and_count() {
        let limits = Limits {
            max_event_bytes: 10,
            max_batch_bytes: 15,
            max_batch_count: 2,
            ..Limits::default()
        };
        assert!(limits.check_batch(&[ev(5)]).is_ok());
        assert!(matches!(
            limits.check_batch(&[ev(10)]),
            Err(Error::TooLarge {
                kind: LimitKind::EventBytes,
                limit: 10,
                actual: 11
            })
        ));
        assert!(matches!(
            limits.check_batch(&[ev(8), ev(8)]),
            Err(Error::TooLarge {
                kind: LimitKind::BatchBytes,
                ..
            })
        ));
        assert!(matches!(
            limits.check_batch(&[ev(1), ev(1), ev(1)]),
            Err(Error::TooLarge {
                kind: LimitKind::BatchCount,
                limit: 2,
                actual: 3
            })
        ));
    }

    #[test]
    fn refuses_duplicate_ids_and_bad_events() {
        let limits = Limits::default();
        let a = ev(1);
        assert!(matches!(
            limits.check_batch(&[a.clone(), a]),
            Err(Error::InvalidInput { .. })
        ));
        assert!(limits.check_batch(&[ev(1).with_schema_version(0)]).is_err());
        let mut md = crate::Metadata::default();
        md.extra.insert("k".into(), "a\0b".into());
        assert!(matches!(
            limits.check_batch(&[ev(1).with_metadata(md)]),
            Err(Error::InvalidInput { .. })
        ));
        let mut empty_type = ev(1);
        empty_type.event_type.clear();
        assert!(limits.check_batch(&[empty_type]).is_err());
    }
}
