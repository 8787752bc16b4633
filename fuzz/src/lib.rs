//! Builders of arbitrary store values for the fuzz targets: each target decodes raw bytes
//! (must not panic) and round-trips a value built here (must come back equal).

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Result, Unstructured};
use backend_redis::fuzzing::redis::Value;
use cqrs_core::{
    bus::{Message, MessageId, Priority},
    Checkpoint, ContentEncoding, ContentType, EventData, EventId, Metadata, StoreIdentity,
};

/// A content type.
pub fn content_type(u: &mut Unstructured<'_>) -> Result<ContentType> {
    Ok(*u.choose(&[ContentType::Json, ContentType::Bson, ContentType::Opaque])?)
}

/// A content encoding.
pub fn encoding(u: &mut Unstructured<'_>) -> Result<ContentEncoding> {
    Ok(*u.choose(&[
        ContentEncoding::Identity,
        ContentEncoding::Gzip,
        ContentEncoding::Zlib,
    ])?)
}

/// A priority.
pub fn priority(u: &mut Unstructured<'_>) -> Result<Priority> {
    Ok(*u.choose(&Priority::ALL)?)
}

/// Metadata with any strings (control characters, quotes, non-BMP text included).
pub fn metadata(u: &mut Unstructured<'_>) -> Result<Metadata> {
    Ok(Metadata {
        correlation_id: u.arbitrary()?,
        causation_id: u.arbitrary()?,
        actor: u.arbitrary()?,
        extra: u.arbitrary::<BTreeMap<String, String>>()?,
    })
}

/// A checkpoint of any store, epoch and partitions.
pub fn checkpoint(u: &mut Unstructured<'_>) -> Result<Checkpoint> {
    let store = if u.arbitrary()? {
        Some(StoreIdentity {
            id: u.arbitrary()?,
            epoch: u.arbitrary()?,
        })
    } else {
        None
    };
    Ok(Checkpoint {
        store,
        partitions: u.arbitrary::<BTreeMap<u32, [u64; 3]>>()?,
    })
}

/// An event as appended (any id, type, schema version, payload and metadata).
pub fn event(u: &mut Unstructured<'_>) -> Result<EventData> {
    let mut e = EventData::new(String::arbitrary(u)?, content_type(u)?, Vec::<u8>::arbitrary(u)?)
        .with_id(EventId::from_uuid(uuid::Uuid::from_bytes(u.arbitrary()?)))
        .with_schema_version(u.arbitrary()?)
        .with_metadata(metadata(u)?);
    e.content_encoding = encoding(u)?;
    Ok(e)
}

/// A bus message (any id, key, priority, headers and payload).
pub fn message(u: &mut Unstructured<'_>) -> Result<Message> {
    let mut m = Message::new(String::arbitrary(u)?, content_type(u)?, Vec::<u8>::arbitrary(u)?)
        .with_id(MessageId::from_uuid(uuid::Uuid::from_bytes(u.arbitrary()?)))
        .with_priority(priority(u)?);
    m.headers = metadata(u)?;
    Ok(m)
}

/// Bytes that are often one of `words` (so replies have the field names a decoder looks
/// for), else anything.
pub fn word(u: &mut Unstructured<'_>, words: &[&str]) -> Result<Vec<u8>> {
    if !words.is_empty() && u.ratio(3, 4)? {
        Ok(u.choose(words)?.as_bytes().to_vec())
    } else {
        u.arbitrary()
    }
}

/// A RESP reply of any shape, nested up to `depth`, whose strings are often `words`.
pub fn value(u: &mut Unstructured<'_>, depth: u32, words: &[&str]) -> Result<Value> {
    let kind = if depth == 0 {
        u.int_in_range(0..=4)?
    } else {
        u.int_in_range(0..=7)?
    };
    Ok(match kind {
        0 => Value::Nil,
        1 => Value::Int(u.arbitrary()?),
        2 => Value::SimpleString(String::from_utf8_lossy(&word(u, words)?).into_owned()),
        3 => Value::Okay,
        4 => Value::BulkString(word(u, words)?),
        5 => Value::Set(values(u, depth - 1, words)?),
        _ => Value::Array(values(u, depth - 1, words)?),
    })
}

fn values(u: &mut Unstructured<'_>, depth: u32, words: &[&str]) -> Result<Vec<Value>> {
    let n = u.int_in_range(0..=8)?;
    (0..n).map(|_| value(u, depth, words)).collect()
}

/// A bulk string reply.
pub fn bulk(b: impl Into<Vec<u8>>) -> Value {
    Value::BulkString(b.into())
}
