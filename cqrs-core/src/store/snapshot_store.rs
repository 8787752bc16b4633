//! The snapshot store trait.

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ContentEncoding, ContentType, Error, Result, StreamId, Timestamp};

/// An aggregate's state at a version of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream the state was folded from.
    pub stream_id: StreamId,
    /// The last event version folded in.
    pub version: u64,
    /// The schema revision of the state's encoding: a loader ignores a snapshot whose
    /// revision is not the current one and replays the stream instead.
    pub schema_revision: u32,
    /// The encoded state (often compressed; see `content_encoding`).
    pub payload: Bytes,
    /// How to read the payload once decompressed.
    pub content_type: ContentType,
    /// How the payload is compressed.
    pub content_encoding: ContentEncoding,
    /// When it was taken.
    pub taken_at: Timestamp,
}

/// The first bytes of a sealed payload: names the frame and its version.
const SEAL_MAGIC: &[u8; 4] = b"cqs1";

/// Magic plus the big-endian CRC-32 that follows it.
const SEAL_HEADER: usize = 8;

impl Snapshot {
    /// Seals the snapshot: its payload becomes a frame holding a CRC-32 over every field
    /// (stream, version, revision, content type, encoding, time taken and the payload), so a
    /// value changed at rest is detected whatever the encoding.
    ///
    /// Gzip carries a CRC of its own, but an identity-encoded payload with one digit changed
    /// still decodes, as the wrong state; and a changed version would pair a state with the
    /// wrong tail of events. The repositories seal what they save and [`Snapshot::unseal`]
    /// what they load; stores keep the frame as opaque bytes.
    ///
    /// ```
    /// # use cqrs_core::{ContentEncoding, ContentType, Snapshot, Timestamp};
    /// let snapshot = Snapshot {
    ///     stream_id: "counter-1".parse()?,
    ///     version: 7,
    ///     schema_revision: 1,
    ///     payload: "{\"total\":78}".into(),
    ///     content_type: ContentType::Json,
    ///     content_encoding: ContentEncoding::Identity,
    ///     taken_at: Timestamp::from_millis(0),
    /// }
    /// .seal();
    /// assert_eq!(&snapshot.unseal()?[..], b"{\"total\":78}");
    ///
    /// let mut changed = snapshot.payload.to_vec();
    /// let at = changed.len() - 3;
    /// changed[at] = b'8';
    /// let at_rest = cqrs_core::Snapshot { payload: changed.into(), ..snapshot };
    /// assert!(matches!(at_rest.unseal(), Err(cqrs_core::Error::Corrupt { .. })));
    /// # Ok::<(), cqrs_core::Error>(())
    /// ```
    #[must_use]
    pub fn seal(self) -> Snapshot {
        let crc = self.checksum(&self.payload);
        let mut framed = Vec::with_capacity(SEAL_HEADER + self.payload.len());
        framed.extend_from_slice(SEAL_MAGIC);
        framed.extend_from_slice(&crc.to_be_bytes());
        framed.extend_from_slice(&self.payload);
        Snapshot {
            payload: framed.into(),
            ..self
        }
    }

    /// The payload of a [sealed](Snapshot::seal) snapshot, once its checksum matches every
    /// field as loaded.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the stream and version when the payload is not a sealed frame
    /// (including snapshots written before sealing existed) or the checksum differs.
    pub fn unseal(&self) -> Result<Bytes> {
        let corrupt = |why: &str| {
            Error::corrupt(format!(
                "snapshot of {} at version {}: {why}",
                self.stream_id, self.version
            ))
        };
        let Some((header, body)) = self.payload.split_at_checked(SEAL_HEADER) else {
            return Err(corrupt("payload too short for a sealed frame"));
        };
        let (magic, crc) = header.split_at(SEAL_MAGIC.len());
        if magic != SEAL_MAGIC {
            return Err(corrupt("payload is not a sealed frame"));
        }
        let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if stored != self.checksum(body) {
            return Err(corrupt("checksum mismatch: changed at rest"));
        }
        Ok(self.payload.slice(SEAL_HEADER..))
    }

    /// CRC-32 over every field with `body` as the payload. Variable-length fields are
    /// length-prefixed so no two snapshots hash the same bytes.
    fn checksum(&self, body: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for text in [
            self.stream_id.as_str(),
            self.content_type.as_str(),
            self.content_encoding.as_str(),
        ] {
            h.update(&(text.len() as u64).to_be_bytes());
            h.update(text.as_bytes());
        }
        h.update(&self.version.to_be_bytes());
        h.update(&self.schema_revision.to_be_bytes());
        h.update(&self.taken_at.as_millis().to_be_bytes());
        h.update(body);
        h.finalize()
    }
}

/// A stream and a snapshot version, as listed by [`SnapshotStore::list`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotKey {
    /// The stream.
    pub stream_id: StreamId,
    /// The snapshot's version.
    pub version: u64,
}

/// Stores snapshots, several per stream, keyed by version.
#[async_trait]
pub trait SnapshotStore: Send + Sync + std::fmt::Debug {
    /// Saves a snapshot; one at an existing version replaces it.
    ///
    /// # Errors
    /// [`crate::Error::TooLarge`] over the document limit; backend errors.
    async fn save(&self, snapshot: Snapshot) -> Result<()>;

    /// The snapshot with the highest version, if any.
    ///
    /// # Errors
    /// [`crate::Error::Corrupt`] when the stored snapshot's fields cannot be read (the
    /// repositories then ignore it and replay); backend errors.
    async fn load_latest(&self, stream: &StreamId) -> Result<Option<Snapshot>>;

    /// The snapshot with the highest version `<= version`, if any.
    ///
    /// # Errors
    /// [`crate::Error::Corrupt`] when the stored snapshot's fields cannot be read; backend
    /// errors.
    async fn load_at_or_before(&self, stream: &StreamId, version: u64) -> Result<Option<Snapshot>>;

    /// Deletes every snapshot of a stream; returns how many there were.
    ///
    /// # Errors
    /// Backend errors only.
    async fn delete(&self, stream: &StreamId) -> Result<u64>;

    /// Lists snapshot keys after `after`, ordered by stream then version, at most `limit`.
    ///
    /// # Errors
    /// Backend errors only.
    async fn list(&self, after: Option<&SnapshotKey>, limit: usize) -> Result<Vec<SnapshotKey>>;
}
