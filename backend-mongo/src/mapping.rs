//! BSON mapping of events, metadata, commits and snapshots: pure functions, unit tested.
//!
//! A commit document (one per append):
//!
//! ```text
//! { s: <stream id>, v: [<version>, …], f: <first version>, l: <last version>,
//!   g: <log sequence, replica sets only>, at: <recorded_at as BSON date>,
//!   e: [ { id: <UUID, binary subtype 4>, t: <type>, sv: <schema version>,
//!          ct: "json"|"bson"|"opaque", ce: "identity"|"gzip"|"zlib",
//!          p: <embedded document | binary>, m: { c, k, a, x: [[key, value], …] } }, … ] }
//! ```
//!
//! A payload is embedded as a document only when its content type is BSON, it is not
//! compressed, it parses as a document whose keys MongoDB accepts everywhere (no leading
//! `$`, no `.`) and re-encoding the parsed document gives the same bytes; anything else is
//! stored as generic binary. Either way the bytes read back are identical.

use bson::{doc, spec::BinarySubtype, Binary, Bson, DateTime, Document, RawDocumentBuf};
use bytes::Bytes;
use cqrs_core::{
    ContentEncoding, ContentType, Error, EventData, EventId, LimitKind, Metadata, Position, RecordedEvent,
    Result, StreamId, Timestamp,
};

/// Field names of a commit document.
pub(crate) mod f {
    /// Stream id.
    pub(crate) const STREAM: &str = "s";
    /// Array of versions.
    pub(crate) const VERSIONS: &str = "v";
    /// First version.
    pub(crate) const FIRST: &str = "f";
    /// Last version.
    pub(crate) const LAST: &str = "l";
    /// Log sequence.
    pub(crate) const SEQ: &str = "g";
    /// Recorded at.
    pub(crate) const AT: &str = "at";
    /// Events.
    pub(crate) const EVENTS: &str = "e";
    /// Event ids, as the unique index sees them.
    pub(crate) const EVENT_IDS: &str = "e.id";
}

/// Converts a version or count to BSON's `i64`.
pub(crate) fn i64_of(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid(format!("{v} does not fit a signed 64-bit integer")))
}

/// Reads a stored non-negative integer.
pub(crate) fn u64_of(d: &Document, key: &str) -> Result<u64> {
    let v = match d.get(key) {
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Int32(v)) => i64::from(*v),
        other => {
            return Err(Error::corrupt(format!(
                "field {key}: expected an integer, found {other:?}"
            )))
        }
    };
    u64::try_from(v).map_err(|_| Error::corrupt(format!("field {key}: negative value {v}")))
}

/// Reads a stored string.
pub(crate) fn str_of<'a>(d: &'a Document, key: &str) -> Result<&'a str> {
    d.get_str(key)
        .map_err(|_| Error::corrupt(format!("field {key}: expected a string")))
}

/// A UUID as BSON binary subtype 4.
pub(crate) fn uuid_bson(id: &EventId) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Uuid,
        bytes: id.as_uuid().as_bytes().to_vec(),
    })
}

fn uuid_of(b: Option<&Bson>) -> Result<EventId> {
    match b {
        Some(Bson::Binary(Binary {
            subtype: BinarySubtype::Uuid,
            bytes,
        })) => uuid::Uuid::from_slice(bytes)
            .map(EventId::from_uuid)
            .map_err(|e| Error::corrupt(format!("event id: {e}"))),
        other => Err(Error::corrupt(format!(
            "event id: expected a UUID, found {other:?}"
        ))),
    }
}

/// Whether every key of a BSON document (nested ones included) is one MongoDB stores as
/// given: no leading `$` and no `.`.
pub(crate) fn keys_allowed(doc: &Document) -> bool {
    fn value_ok(b: &Bson) -> bool {
        match b {
            Bson::Document(d) => keys_allowed(d),
            Bson::Array(a) => a.iter().all(value_ok),
            _ => true,
        }
    }
    doc.iter()
        .all(|(k, v)| !k.starts_with('$') && !k.contains('.') && value_ok(v))
}

/// The stored form of a payload: an embedded document when it can be one byte-identically,
/// generic binary otherwise.
pub(crate) fn payload_to_bson(content_type: ContentType, encoding: ContentEncoding, payload: &[u8]) -> Bson {
    if content_type == ContentType::Bson && encoding == ContentEncoding::Identity {
        if let Some(doc) = RawDocumentBuf::from_bytes(payload.to_vec())
            .ok()
            .and_then(|raw| raw.to_document().ok())
        {
            let mut again = Vec::with_capacity(payload.len());
            if keys_allowed(&doc) && doc.to_writer(&mut again).is_ok() && again == payload {
                return Bson::Document(doc);
            }
        }
    }
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: payload.to_vec(),
    })
}

/// The payload bytes of a stored payload.
pub(crate) fn payload_from_bson(b: Option<&Bson>) -> Result<Bytes> {
    match b {
        Some(Bson::Binary(bin)) => Ok(Bytes::from(bin.bytes.clone())),
        Some(Bson::Document(doc)) => {
            let mut out = Vec::new();
            doc.to_writer(&mut out)
                .map_err(|e| Error::corrupt(format!("embedded payload: {e}")))?;
            Ok(Bytes::from(out))
        }
        other => Err(Error::corrupt(format!(
            "payload: expected a document or binary, found {other:?}"
        ))),
    }
}

/// Metadata as a document; `extra` as an array of `[key, value]` pairs, since its keys may
/// hold characters MongoDB restricts in field names.
pub(crate) fn metadata_to_bson(md: &Metadata) -> Document {
    let mut d = Document::new();
    if let Some(c) = &md.correlation_id {
        d.insert("c", c.as_str());
    }
    if let Some(k) = &md.causation_id {
        d.insert("k", k.as_str());
    }
    if let Some(a) = &md.actor {
        d.insert("a", a.as_str());
    }
    if !md.extra.is_empty() {
        let pairs: Vec<Bson> = md
            .extra
            .iter()
            .map(|(k, v)| Bson::Array(vec![Bson::String(k.clone()), Bson::String(v.clone())]))
            .collect();
        d.insert("x", pairs);
    }
    d
}

/// Metadata from its stored document.
pub(crate) fn metadata_from_bson(d: Option<&Document>) -> Result<Metadata> {
    let mut md = Metadata::default();
    let Some(d) = d else { return Ok(md) };
    let text = |k: &str| d.get_str(k).ok().map(str::to_owned);
    md.correlation_id = text("c");
    md.causation_id = text("k");
    md.actor = text("a");
    if let Ok(pairs) = d.get_array("x") {
        for p in pairs {
            match p {
                Bson::Array(kv) => match kv.as_slice() {
                    [Bson::String(k), Bson::String(v)] => {
                        md.extra.insert(k.clone(), v.clone());
                    }
                    _ => return Err(Error::corrupt("metadata: malformed extra pair")),
                },
                _ => return Err(Error::corrupt("metadata: malformed extra pair")),
            }
        }
    }
    Ok(md)
}

/// One event as stored inside a commit.
pub(crate) fn event_to_bson(e: &EventData) -> Document {
    let mut d = doc! {
        "id": uuid_bson(&e.event_id),
        "t": e.event_type.as_str(),
        "sv": i64::from(e.schema_version),
        "ct": e.content_type.as_str(),
        "ce": e.content_encoding.as_str(),
        "p": payload_to_bson(e.content_type, e.content_encoding, &e.payload),
    };
    if !e.metadata.is_empty() {
        d.insert("m", metadata_to_bson(&e.metadata));
    }
    d
}

/// One event from its stored form.
pub(crate) fn event_from_bson(d: &Document) -> Result<EventData> {
    let sv = u64_of(d, "sv")?;
    Ok(EventData {
        event_id: uuid_of(d.get("id"))?,
        event_type: str_of(d, "t")?.to_owned(),
        schema_version: u32::try_from(sv).map_err(|_| Error::corrupt("schema version out of range"))?,
        payload: payload_from_bson(d.get("p"))?,
        content_type: str_of(d, "ct")?.parse()?,
        content_encoding: str_of(d, "ce")?.parse()?,
        metadata: metadata_from_bson(d.get_document("m").ok())?,
    })
}

/// The commit document of one append: events at versions `first..`, recorded at `at`,
/// with log sequence `seq` where the store has a log.
///
/// # Errors
/// [`Error::InvalidInput`] for a version outside `i64`.
pub(crate) fn commit_document(
    stream: &StreamId,
    first: u64,
    events: &[EventData],
    at: Timestamp,
    seq: Option<u64>,
) -> Result<Document> {
    let n = u64::try_from(events.len()).map_err(|_| Error::invalid("batch too long"))?;
    let last = first.saturating_add(n).saturating_sub(1);
    let versions = (first..=last)
        .map(|v| i64_of(v).map(Bson::Int64))
        .collect::<Result<Vec<_>>>()?;
    let mut d = doc! {
        f::STREAM: stream.as_str(),
        f::VERSIONS: versions,
        f::FIRST: i64_of(first)?,
        f::LAST: i64_of(last)?,
        f::AT: DateTime::from_millis(at.as_millis()),
        f::EVENTS: events.iter().map(|e| Bson::Document(event_to_bson(e))).collect::<Vec<_>>(),
    };
    if let Some(seq) = seq {
        d.insert(f::SEQ, i64_of(seq)?);
    }
    Ok(d)
}

/// Bytes a commit document adds per event beyond [`EventData::encoded_len`]: field names,
/// BSON type tags and lengths, the id, schema version, content type and encoding strings,
/// the version array entry and metadata field names (a safe upper bound).
pub(crate) const EVENT_OVERHEAD_BYTES: usize = 256;
/// Bytes of a commit document outside its events (stream id excluded).
pub(crate) const COMMIT_OVERHEAD_BYTES: usize = 1024;

/// The upper bound of a commit document's size used by [`check_commit_size`].
pub(crate) fn commit_size_estimate(events: &[EventData]) -> usize {
    events
        .iter()
        .map(|e| {
            e.encoded_len()
                .saturating_add(EVENT_OVERHEAD_BYTES + 16 * e.metadata.extra.len())
        })
        .fold(
            COMMIT_OVERHEAD_BYTES + cqrs_core::MAX_NAME_BYTES,
            usize::saturating_add,
        )
}

/// Refuses, before any I/O, a batch whose commit document could exceed MongoDB's 16 MiB
/// document limit (stream ids are at most 1 KiB and counted in the commit overhead).
///
/// # Errors
/// [`Error::TooLarge`] with [`LimitKind::BatchBytes`].
pub(crate) fn check_commit_size(events: &[EventData]) -> Result<()> {
    let estimate = commit_size_estimate(events);
    if estimate > crate::options::MAX_BSON_DOCUMENT_BYTES {
        return Err(Error::TooLarge {
            kind: LimitKind::BatchBytes,
            limit: crate::options::MAX_BSON_DOCUMENT_BYTES as u64,
            actual: estimate as u64,
        });
    }
    Ok(())
}

/// Gives each event of a commit document its own recorded time (imports keep the source
/// store's timestamps, which may differ within one commit).
pub(crate) fn set_event_times(commit: &mut Document, times: &[Timestamp]) {
    if let Ok(events) = commit.get_array_mut(f::EVENTS) {
        for (e, t) in events.iter_mut().zip(times) {
            if let Bson::Document(e) = e {
                e.insert("at", DateTime::from_millis(t.as_millis()));
            }
        }
    }
    if let Some(first) = times.first() {
        commit.insert(f::AT, DateTime::from_millis(first.as_millis()));
    }
}

/// A commit read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Commit {
    /// The stream.
    pub(crate) stream: StreamId,
    /// Version of the first event.
    pub(crate) first: u64,
    /// Log sequence (0 without a store-wide log).
    pub(crate) seq: u64,
    /// Recorded at.
    pub(crate) at: Timestamp,
    /// The events in version order.
    pub(crate) events: Vec<EventData>,
    /// Each event's recorded time (the commit's, unless imported with its own).
    pub(crate) times: Vec<Timestamp>,
}

impl Commit {
    /// Parses a stored commit.
    pub(crate) fn from_document(d: &Document) -> Result<Commit> {
        let stream = StreamId::new(str_of(d, f::STREAM)?)?;
        let first = u64_of(d, f::FIRST)?;
        let seq = if d.contains_key(f::SEQ) {
            u64_of(d, f::SEQ)?
        } else {
            0
        };
        let at = d
            .get_datetime(f::AT)
            .map(|t| Timestamp::from_millis(t.timestamp_millis()))
            .map_err(|_| Error::corrupt("commit: recorded_at is not a date"))?;
        let mut events = Vec::new();
        let mut times = Vec::new();
        for b in d
            .get_array(f::EVENTS)
            .map_err(|_| Error::corrupt("commit: events is not an array"))?
        {
            let Bson::Document(e) = b else {
                return Err(Error::corrupt("commit: an event is not a document"));
            };
            events.push(event_from_bson(e)?);
            times.push(
                e.get_datetime("at")
                    .map_or(at, |t| Timestamp::from_millis(t.timestamp_millis())),
            );
        }
        Ok(Commit {
            stream,
            first,
            seq,
            at,
            events,
            times,
        })
    }

    /// The version of the last event.
    #[cfg(test)]
    pub(crate) fn last(&self) -> u64 {
        let n = u64::try_from(self.events.len()).unwrap_or(u64::MAX);
        self.first.saturating_add(n).saturating_sub(1)
    }

    /// The version of `id` in this commit.
    pub(crate) fn version_of(&self, id: &EventId) -> Option<u64> {
        self.events
            .iter()
            .zip(self.first..)
            .find(|(e, _)| e.event_id == *id)
            .map(|(_, v)| v)
    }

    /// The position of the event at `index` within this commit.
    pub(crate) fn position(&self, index: usize) -> Position {
        Position::new(0, [self.seq, u64::try_from(index).unwrap_or(u64::MAX), 0])
    }

    /// The recorded events of this commit.
    pub(crate) fn into_recorded(self) -> Vec<RecordedEvent> {
        let positions: Vec<Position> = (0..self.events.len()).map(|i| self.position(i)).collect();
        let Commit {
            stream,
            first,
            at,
            events,
            times,
            ..
        } = self;
        events
            .into_iter()
            .zip(first..)
            .zip(positions)
            .enumerate()
            .map(|(i, ((data, version), position))| RecordedEvent {
                stream_id: stream.clone(),
                version,
                position,
                recorded_at: times.get(i).copied().unwrap_or(at),
                data,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid() -> StreamId {
        StreamId::new("order-1").unwrap()
    }

    fn bson_bytes(d: &Document) -> Vec<u8> {
        let mut v = Vec::new();
        d.to_writer(&mut v).unwrap();
        v
    }

    #[test]
    fn bson_payload_with_plain_keys_is_embedded_and_byte_identical() {
        let bytes = bson_bytes(&doc! { "qty": 2_i32, "price": 9.5, "tags": ["a", "b"], "n": { "x": 1_i64 } });
        let stored = payload_to_bson(ContentType::Bson, ContentEncoding::Identity, &bytes);
        assert!(matches!(stored, Bson::Document(_)));
        assert_eq!(
            payload_from_bson(Some(&stored)).unwrap().as_ref(),
            bytes.as_slice()
        );
    }

    #[test]
    fn restricted_keys_bad_bson_and_other_types_are_binary() {
        for d in [doc! { "$set": 1 }, doc! { "a.b": 1 }, doc! { "n": { "$x": 1 } }] {
            let bytes = bson_bytes(&d);
            let stored = payload_to_bson(ContentType::Bson, ContentEncoding::Identity, &bytes);
            assert!(matches!(stored, Bson::Binary(_)), "{d}");
            assert_eq!(
                payload_from_bson(Some(&stored)).unwrap().as_ref(),
                bytes.as_slice()
            );
        }
        let garbage = b"\x05\x00\x00\x00\x01".to_vec();
        let stored = payload_to_bson(ContentType::Bson, ContentEncoding::Identity, &garbage);
        assert!(matches!(stored, Bson::Binary(_)));
        assert_eq!(
            payload_from_bson(Some(&stored)).unwrap().as_ref(),
            garbage.as_slice()
        );
        let json = br#"{"a":1}"#;
        assert!(matches!(
            payload_to_bson(ContentType::Json, ContentEncoding::Identity, json),
            Bson::Binary(_)
        ));
        let compressed = bson_bytes(&doc! { "a": 1 });
        assert!(matches!(
            payload_to_bson(ContentType::Bson, ContentEncoding::Gzip, &compressed),
            Bson::Binary(_)
        ));
    }

    #[test]
    fn duplicate_keys_do_not_embed() {
        // Two "a" keys: a parsed document keeps one, so re-encoding differs.
        let mut raw = Vec::new();
        let body = [
            b"\x10a\x00\x01\x00\x00\x00".as_slice(),
            b"\x10a\x00\x02\x00\x00\x00",
        ]
        .concat();
        let len = i32::try_from(body.len() + 5).unwrap();
        raw.extend_from_slice(&len.to_le_bytes());
        raw.extend_from_slice(&body);
        raw.push(0);
        let stored = payload_to_bson(ContentType::Bson, ContentEncoding::Identity, &raw);
        assert_eq!(payload_from_bson(Some(&stored)).unwrap().as_ref(), raw.as_slice());
    }

    #[test]
    fn events_and_metadata_round_trip() {
        let mut md = Metadata {
            correlation_id: Some("corr".into()),
            causation_id: Some("cause".into()),
            actor: Some("ü😀".into()),
            ..Metadata::default()
        };
        md.extra.insert("$weird.key".into(), "v".into());
        md.extra.insert("k".into(), String::new());
        let e = EventData::new("Placed", ContentType::Json, r#"{"qty":2}"#)
            .with_schema_version(3)
            .with_metadata(md)
            .with_encoding(ContentEncoding::Zlib);
        let back = event_from_bson(&event_to_bson(&e)).unwrap();
        assert_eq!(back, e);
        let plain = EventData::new("T", ContentType::Opaque, vec![0u8, 255, 1]);
        let stored = event_to_bson(&plain);
        assert!(!stored.contains_key("m"), "empty metadata is not stored");
        assert_eq!(event_from_bson(&stored).unwrap(), plain);
    }

    #[test]
    fn commit_document_holds_versions_and_events() {
        let events = vec![
            EventData::new("A", ContentType::Json, "{}"),
            EventData::new("B", ContentType::Json, "[]"),
        ];
        let d = commit_document(
            &sid(),
            4,
            &events,
            Timestamp::from_millis(1_700_000_000_123),
            Some(9),
        )
        .unwrap();
        assert_eq!(d.get_str("s").unwrap(), "order-1");
        assert_eq!(d.get_array("v").unwrap(), &vec![Bson::Int64(4), Bson::Int64(5)]);
        assert_eq!(d.get_i64("f").unwrap(), 4);
        assert_eq!(d.get_i64("l").unwrap(), 5);
        assert_eq!(d.get_i64("g").unwrap(), 9);
        let c = Commit::from_document(&d).unwrap();
        assert_eq!(c.last(), 5);
        assert_eq!(c.version_of(&events[1].event_id), Some(5));
        assert_eq!(c.version_of(&EventId::new()), None);
        let rec = c.into_recorded();
        assert_eq!(rec.len(), 2);
        assert_eq!(rec[1].version, 5);
        assert_eq!(rec[1].position, Position::new(0, [9, 1, 0]));
        assert_eq!(rec[0].recorded_at, Timestamp::from_millis(1_700_000_000_123));
        assert_eq!(rec[0].data, events[0]);
        let mut imported = commit_document(&sid(), 1, &events, Timestamp::from_millis(0), Some(1)).unwrap();
        set_event_times(
            &mut imported,
            &[Timestamp::from_millis(10), Timestamp::from_millis(20)],
        );
        let rec = Commit::from_document(&imported).unwrap().into_recorded();
        assert_eq!(rec[0].recorded_at, Timestamp::from_millis(10));
        assert_eq!(rec[1].recorded_at, Timestamp::from_millis(20));
        let standalone = commit_document(&sid(), 1, &events, Timestamp::from_millis(0), None).unwrap();
        assert!(!standalone.contains_key("g"));
    }

    #[test]
    fn size_estimate_bounds_the_real_commit_document() {
        let mut md = Metadata {
            correlation_id: Some("c".repeat(40)),
            causation_id: Some("k".repeat(40)),
            actor: Some("a".into()),
            ..Metadata::default()
        };
        for i in 0..5 {
            md.extra.insert(format!("key{i}"), "v".into());
        }
        for (n, size) in [(1usize, 0usize), (100, 10), (1000, 300)] {
            let events: Vec<EventData> = (0..n)
                .map(|_| {
                    EventData::new("SomethingHappened", ContentType::Opaque, vec![7u8; size])
                        .with_metadata(md.clone())
                })
                .collect();
            let stream = StreamId::new("s".repeat(cqrs_core::MAX_NAME_BYTES)).unwrap();
            let first = cqrs_core::MAX_VERSION - 2000;
            let d = commit_document(
                &stream,
                first,
                &events,
                Timestamp::from_millis(0),
                Some(cqrs_core::MAX_VERSION),
            )
            .unwrap();
            let real = bson_bytes(&d).len();
            let estimate = commit_size_estimate(&events);
            assert!(
                estimate >= real,
                "{n} events of {size} bytes: estimate {estimate} < real {real}"
            );
        }
    }

    #[test]
    fn batches_over_the_document_limit_are_refused_before_io() {
        let ok = vec![EventData::new("T", ContentType::Opaque, vec![0u8; 1024 * 1024])];
        assert!(check_commit_size(&ok).is_ok());
        // Within the core batch limit by payload bytes, but not MongoDB's 16 MiB once framed.
        let many: Vec<EventData> = (0..10_000)
            .map(|_| EventData::new("T", ContentType::Opaque, vec![0u8; 1500]))
            .collect();
        assert!(crate::options::MongoStoreOptions::from_url("mongodb://h")
            .unwrap()
            .get_limits()
            .check_batch(&many)
            .is_ok());
        assert!(matches!(
            check_commit_size(&many),
            Err(Error::TooLarge {
                kind: LimitKind::BatchBytes,
                ..
            })
        ));
    }

    #[test]
    fn versions_beyond_i64_are_refused() {
        let events = vec![EventData::new("A", ContentType::Json, "{}")];
        assert!(commit_document(&sid(), u64::MAX, &events, Timestamp::from_millis(0), None).is_err());
        assert!(i64_of(u64::MAX).is_err());
    }
}
