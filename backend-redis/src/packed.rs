//! The packed form of an event as its stream entry stores it, and the decoding of those
//! entries (appended and imported forms) into recorded events.

use cqrs_core::{
    ContentEncoding, ContentType, Error, EventData, EventId, Metadata, Position, RecordedEvent, Result,
    StreamId, Timestamp,
};
use redis::Value;

use crate::conn::reply;

/// The metadata as stored: empty when there is none.
pub(crate) fn metadata(e: &EventData) -> String {
    if e.metadata.is_empty() {
        String::new()
    } else {
        e.metadata.to_json()
    }
}

/// Parses a Redis stream entry id `ms-seq`.
pub(crate) fn parse_entry_id(id: &str) -> Option<[u64; 2]> {
    let (a, b) = id.split_once('-')?;
    Some([a.parse().ok()?, b.parse().ok()?])
}

/// The version byte of the packed event format.
const FORMAT: u8 = 1;

fn content_type_code(ct: ContentType) -> u8 {
    match ct {
        ContentType::Json => 0,
        ContentType::Bson => 1,
        ContentType::Opaque => 2,
    }
}

fn encoding_code(ce: ContentEncoding) -> u8 {
    match ce {
        ContentEncoding::Identity => 0,
        ContentEncoding::Gzip => 1,
        ContentEncoding::Zlib => 2,
    }
}

/// An event packed as stored in its stream entry: format byte, 16-byte id, schema version
/// (u32 BE), content type, encoding, type length (u16 BE), type, metadata length (u32 BE),
/// metadata JSON (empty when none), payload. The scripts read the id as bytes 2..17.
///
/// As an argument of a command it writes itself straight into the command's buffer: a
/// `Vec` per event, copied into the script invocation and again into the command, was a
/// third of a batch append's client time.
pub(crate) struct Packed<'a> {
    event: &'a EventData,
    meta: String,
    type_len: u16,
    meta_len: u32,
}

impl<'a> Packed<'a> {
    /// Checks what the format can hold.
    pub(crate) fn new(e: &'a EventData) -> Result<Self> {
        let meta = metadata(e);
        let type_len = u16::try_from(e.event_type.len())
            .map_err(|_| Error::invalid("event type longer than 65535 bytes"))?;
        let meta_len =
            u32::try_from(meta.len()).map_err(|_| Error::invalid("event metadata longer than 4 GiB"))?;
        Ok(Packed {
            event: e,
            meta,
            type_len,
            meta_len,
        })
    }

    /// The packed length in bytes.
    pub(crate) fn len(&self) -> usize {
        29 + self.event.event_type.len() + self.meta.len() + self.event.payload.len()
    }

    fn write_to(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        let e = self.event;
        let mut head = [0u8; 25];
        head[0] = FORMAT;
        head[1..17].copy_from_slice(e.event_id.as_uuid().as_bytes());
        head[17..21].copy_from_slice(&e.schema_version.to_be_bytes());
        head[21] = content_type_code(e.content_type);
        head[22] = encoding_code(e.content_encoding);
        head[23..25].copy_from_slice(&self.type_len.to_be_bytes());
        w.write_all(&head)?;
        w.write_all(e.event_type.as_bytes())?;
        w.write_all(&self.meta_len.to_be_bytes())?;
        w.write_all(self.meta.as_bytes())?;
        w.write_all(&e.payload)
    }
}

impl redis::ToRedisArgs for Packed<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        // The writer appends to the command's in-memory buffer, which cannot fail.
        let _ = self.write_to(&mut out.writer_for_next_arg());
    }
}

/// Packs an event into the bytes stored in its stream entry (see [`Packed`]).
pub(crate) fn pack(e: &EventData) -> Result<Vec<u8>> {
    let packed = Packed::new(e)?;
    let mut out = Vec::with_capacity(packed.len());
    // Writing into a Vec cannot fail.
    let _ = packed.write_to(&mut out);
    Ok(out)
}

/// Reads [`pack`]'s output back.
fn unpack(packed: Vec<u8>, corrupt: &dyn Fn(&str) -> Error) -> Result<EventData> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (b.get(..n)?, b.get(n..)?);
        *b = tail;
        Some(head)
    }
    let mut b = packed.as_slice();
    let short = || corrupt("truncated");
    if take(&mut b, 1).ok_or_else(short)? != [FORMAT] {
        return Err(corrupt("unknown format"));
    }
    let id = uuid::Uuid::from_slice(take(&mut b, 16).ok_or_else(short)?).map_err(|_| corrupt("id"))?;
    let schema = take(&mut b, 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(short)?;
    let codes = take(&mut b, 2).ok_or_else(short)?;
    let content_type = match codes.first() {
        Some(0) => ContentType::Json,
        Some(1) => ContentType::Bson,
        Some(2) => ContentType::Opaque,
        _ => return Err(corrupt("content type")),
    };
    let content_encoding = match codes.get(1) {
        Some(0) => ContentEncoding::Identity,
        Some(1) => ContentEncoding::Gzip,
        Some(2) => ContentEncoding::Zlib,
        _ => return Err(corrupt("content encoding")),
    };
    let type_len = take(&mut b, 2)
        .and_then(|s| <[u8; 2]>::try_from(s).ok())
        .map(u16::from_be_bytes)
        .ok_or_else(short)?;
    let event_type = std::str::from_utf8(take(&mut b, usize::from(type_len)).ok_or_else(short)?)
        .map_err(|_| corrupt("type"))?
        .to_owned();
    let meta_len = take(&mut b, 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(short)?;
    let meta =
        std::str::from_utf8(take(&mut b, meta_len).ok_or_else(short)?).map_err(|_| corrupt("metadata"))?;
    let metadata = if meta.is_empty() {
        Metadata::default()
    } else {
        Metadata::from_json(meta)?
    };
    // The payload is the tail: share the reply's buffer instead of copying it.
    let at = packed.len() - b.len();
    Ok(EventData {
        event_id: EventId::from_uuid(id),
        event_type,
        schema_version: schema,
        payload: bytes::Bytes::from(packed).slice(at..),
        content_type,
        content_encoding,
        metadata,
    })
}

/// Decodes one entry of a stream's events: id `0-<version>`, fields `d` (packed event) and
/// `c` (`<log entry id> <index in commit>[ <recorded_at ms>]`; without a time, the log
/// entry's millisecond is the recording time).
pub(crate) fn decode_event(stream: &StreamId, partition: u32, entry: Value) -> Result<RecordedEvent> {
    let mut parts = reply::array(entry)?.into_iter();
    let id = reply::string(parts.next().unwrap_or(Value::Nil))?;
    let version = parse_entry_id(&id)
        .map(|[_, v]| v)
        .ok_or_else(|| Error::corrupt(format!("event entry id {id:?} of {stream}")))?;
    let corrupt = |what: &str| Error::corrupt(format!("event {version} of {stream}: {what}"));
    let mut packed = None;
    let mut commit = None;
    let fields = reply::array(parts.next().unwrap_or(Value::Nil))?;
    let appended = fields.len() == 2 && !matches!(fields.first(), Some(Value::BulkString(k)) if k == b"d");
    let mut fields = fields.into_iter();
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        if appended {
            // Appended: one field named "<log entry> <first version of the commit>".
            commit = Some((reply::string(k)?, true));
            packed = Some(reply::bytes(v)?);
            break;
        }
        match reply::bytes(k)?.as_slice() {
            b"d" => packed = Some(reply::bytes(v)?),
            // Imported: "<log entry> <index> <recorded ms>".
            b"c" => commit = Some((reply::string(v)?, false)),
            _ => {}
        }
    }
    let data = unpack(packed.ok_or_else(|| corrupt("no data"))?, &corrupt)?;
    let (commit, by_first) = commit.ok_or_else(|| corrupt("no commit"))?;
    let mut c = commit.split(' ');
    let [ms, seq] = c
        .next()
        .and_then(parse_entry_id)
        .ok_or_else(|| corrupt("log entry"))?;
    let number: u64 = c
        .next()
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| corrupt("index"))?;
    let index = if by_first {
        version
            .checked_sub(number)
            .ok_or_else(|| corrupt("first version after the event"))?
    } else {
        number
    };
    let at = match c.next() {
        Some(t) => t.parse::<i64>().map_err(|_| corrupt("timestamp"))?,
        None => i64::try_from(ms).map_err(|_| corrupt("timestamp"))?,
    };
    Ok(RecordedEvent {
        stream_id: stream.clone(),
        version,
        position: Position::new(partition, [ms, seq, index]),
        recorded_at: Timestamp::from_millis(at),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_events_round_trip_and_damage_is_corrupt() {
        let md = Metadata {
            actor: Some("ü😀".into()),
            ..Metadata::default()
        };
        let e = EventData::new("Tÿpe", ContentType::Bson, vec![0u8, 255, 10])
            .with_schema_version(7)
            .with_encoding(ContentEncoding::Zlib)
            .with_metadata(md);
        let packed = pack(&e).unwrap();
        assert_eq!(&packed[1..17], e.event_id.as_uuid().as_bytes());
        let corrupt = |w: &str| Error::corrupt(w.to_owned());
        assert_eq!(unpack(packed.clone(), &corrupt).unwrap(), e);
        for cut in [0, 1, 10, 20, 25] {
            assert!(matches!(
                unpack(packed[..cut].to_vec(), &corrupt),
                Err(Error::Corrupt { .. })
            ));
        }
        let mut bad = packed.clone();
        bad[21] = 9;
        assert!(matches!(unpack(bad, &corrupt), Err(Error::Corrupt { .. })));
    }

    /// Appended entries carry their commit in the one field's name; imported ones (and
    /// entries written before that form) in a `c` field with the event's index.
    #[test]
    fn both_stored_entry_forms_decode_to_the_same_position() {
        let e = EventData::new("Placed", ContentType::Json, b"{}".to_vec());
        let stream = StreamId::new("s").unwrap();
        let bulk = |b: &[u8]| Value::BulkString(b.to_vec());
        let appended = Value::Array(vec![
            bulk(b"0-12"),
            Value::Array(vec![bulk(b"1700000000000-3 10"), bulk(&pack(&e).unwrap())]),
        ]);
        let imported = Value::Array(vec![
            bulk(b"0-12"),
            Value::Array(vec![
                bulk(b"d"),
                bulk(&pack(&e).unwrap()),
                bulk(b"c"),
                bulk(b"1700000000000-3 2 1699999999999"),
            ]),
        ]);
        let a = decode_event(&stream, 0, appended).unwrap();
        let b = decode_event(&stream, 0, imported).unwrap();
        assert_eq!(a.position, Position::new(0, [1_700_000_000_000, 3, 2]));
        assert_eq!(a.position, b.position);
        assert_eq!(a.recorded_at, Timestamp::from_millis(1_700_000_000_000));
        assert_eq!(b.recorded_at, Timestamp::from_millis(1_699_999_999_999));
        assert_eq!((a.version, a.data), (12, e));
        let ahead = Value::Array(vec![
            bulk(b"0-12"),
            Value::Array(vec![bulk(b"1700000000000-3 13"), bulk(&pack(&b.data).unwrap())]),
        ]);
        assert!(matches!(
            decode_event(&stream, 0, ahead),
            Err(Error::Corrupt { .. })
        ));
    }
}
