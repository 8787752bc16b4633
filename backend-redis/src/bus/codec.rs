//! Stream entry fields of a message and of a dead letter.
//!
//! A message entry holds one field, `m`, the packed message (see [`pack`]): one field
//! instead of six makes a read entry 5 RESP elements instead of 15, which is most of the
//! cost of reading it, on the server (`XREADGROUP`) and in the client's parser. Entries of
//! the earlier form (`id` (UUID), `k` (key), `p` (priority), `ct` (content type), `h`
//! (headers as JSON, empty when none) and `d` (payload bytes)) still decode. A dead-letter
//! entry holds `reason`, `detail`, `attempts`, `oid` (original entry id), `group` and the
//! original fields prefixed `f.`.

use cqrs_core::{
    bus::{DeadLetter, DeadLetterReason, Message, MessageId, Priority},
    ContentType, Error, Metadata, Result, Timestamp,
};
use redis::Value;

use crate::conn::reply;
use crate::error::unexpected;

/// A stream entry as read.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) body: Body,
}

/// What an entry holds.
#[derive(Debug, Clone)]
pub(super) enum Body {
    Message(Message),
    /// The entry does not decode: why.
    Undecodable(String),
}

/// The field of a packed message entry.
pub(super) const PACKED: &str = "m";

/// The version byte of the packed message format.
const FORMAT: u8 = 1;

fn priority_code(p: Priority) -> u8 {
    match p {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

fn content_type_code(ct: ContentType) -> u8 {
    match ct {
        ContentType::Json => 0,
        ContentType::Bson => 1,
        ContentType::Opaque => 2,
    }
}

/// Packs a message into its entry's one field: format byte, 16-byte id, priority,
/// content type, key length (u32 BE), key, headers length (u32 BE), headers JSON (empty
/// when none), payload.
///
/// # Errors
/// [`Error::InvalidInput`] for a key or headers longer than 4 GiB.
pub(super) fn pack(m: &Message) -> Result<Vec<u8>> {
    let headers = if m.headers.is_empty() {
        String::new()
    } else {
        m.headers.to_json()
    };
    let key_len = u32::try_from(m.key.len()).map_err(|_| Error::invalid("message key longer than 4 GiB"))?;
    let headers_len =
        u32::try_from(headers.len()).map_err(|_| Error::invalid("message headers longer than 4 GiB"))?;
    let mut out = Vec::with_capacity(27 + m.key.len() + headers.len() + m.payload.len());
    out.push(FORMAT);
    out.extend_from_slice(m.id.as_uuid().as_bytes());
    out.push(priority_code(m.priority));
    out.push(content_type_code(m.content_type));
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(m.key.as_bytes());
    out.extend_from_slice(&headers_len.to_be_bytes());
    out.extend_from_slice(headers.as_bytes());
    out.extend_from_slice(&m.payload);
    Ok(out)
}

/// Reads [`pack`]'s output back; `Err` says why it is not a message. The payload shares
/// `packed`'s buffer.
fn unpack(packed: Vec<u8>) -> std::result::Result<Message, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        let (head, tail) = (b.get(..n), b.get(n..));
        let (Some(head), Some(tail)) = (head, tail) else {
            return Err("the packed message is truncated".to_owned());
        };
        *b = tail;
        Ok(head)
    }
    fn len(b: &mut &[u8]) -> std::result::Result<usize, String> {
        let raw = <[u8; 4]>::try_from(take(b, 4)?).map_err(|_| "the packed message is truncated")?;
        usize::try_from(u32::from_be_bytes(raw)).map_err(|_| "a length out of range".to_owned())
    }
    let mut b = packed.as_slice();
    if take(&mut b, 1)? != [FORMAT] {
        return Err("unknown packed message format".to_owned());
    }
    let id = uuid::Uuid::from_slice(take(&mut b, 16)?).map_err(|e| format!("message id: {e}"))?;
    let codes = take(&mut b, 2)?;
    let priority = match codes.first() {
        Some(0) => Priority::Critical,
        Some(1) => Priority::High,
        Some(2) => Priority::Normal,
        Some(3) => Priority::Low,
        _ => return Err("unknown priority".to_owned()),
    };
    let content_type = match codes.get(1) {
        Some(0) => ContentType::Json,
        Some(1) => ContentType::Bson,
        Some(2) => ContentType::Opaque,
        _ => return Err("unknown content type".to_owned()),
    };
    let n = len(&mut b)?;
    let key = std::str::from_utf8(take(&mut b, n)?)
        .map_err(|_| "the key is not UTF-8")?
        .to_owned();
    let n = len(&mut b)?;
    let headers = match std::str::from_utf8(take(&mut b, n)?).map_err(|_| "the headers are not UTF-8")? {
        "" => Metadata::default(),
        json => Metadata::from_json(json).map_err(|e| format!("headers: {e}"))?,
    };
    let at = packed.len() - b.len();
    Ok(Message {
        id: MessageId::from_uuid(id),
        key,
        priority,
        headers,
        content_type,
        payload: bytes::Bytes::from(packed).slice(at..),
    })
}

/// Appends the packed message to a script call (what `publish.lua` writes as field `m`).
///
/// # Errors
/// As [`pack`].
pub(super) fn encode_args(m: &Message, inv: &mut redis::ScriptInvocation<'_>) -> Result<()> {
    inv.arg(pack(m)?);
    Ok(())
}

/// Appends the `XADD` field and value of `m` to a command (what `publish.lua` writes).
///
/// # Errors
/// As [`pack`].
pub(super) fn encode_fields(m: &Message, cmd: &mut redis::Cmd) -> Result<()> {
    cmd.arg(PACKED).arg(pack(m)?);
    Ok(())
}

/// The field values of `m` in the earlier six-field form (`id`, `k`, `p`, `ct`, `h`, `d`).
#[cfg(test)]
pub(super) fn encode_legacy(m: &Message) -> [Vec<u8>; 6] {
    let headers = if m.headers.is_empty() {
        String::new()
    } else {
        m.headers.to_json()
    };
    [
        m.id.to_string().into_bytes(),
        m.key.clone().into_bytes(),
        m.priority.as_str().as_bytes().to_vec(),
        m.content_type.as_str().as_bytes().to_vec(),
        headers.into_bytes(),
        m.payload.to_vec(),
    ]
}

fn pairs(v: Value) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut items = reply::array(v)?.into_iter();
    let mut out = Vec::new();
    while let (Some(f), Some(v)) = (items.next(), items.next()) {
        out.push((reply::bytes(f)?, reply::bytes(v)?));
    }
    Ok(out)
}

fn field<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(f, _)| f.as_slice() == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

fn text<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> std::result::Result<&'a str, String> {
    let raw = field(fields, name).ok_or_else(|| format!("the entry has no {name:?} field"))?;
    std::str::from_utf8(raw).map_err(|_| format!("the {name:?} field is not UTF-8"))
}

/// Decodes message fields, packed or of the earlier form; `Err` says why they are not a
/// message.
fn message(mut fields: Vec<(Vec<u8>, Vec<u8>)>) -> std::result::Result<Message, String> {
    if fields.len() == 1 && fields[0].0 == PACKED.as_bytes() {
        if let Some((_, packed)) = fields.pop() {
            return unpack(packed);
        }
    }
    legacy(&fields)
}

/// Decodes message fields of the earlier six-field form.
fn legacy(fields: &[(Vec<u8>, Vec<u8>)]) -> std::result::Result<Message, String> {
    let id: MessageId = text(fields, "id")?.parse().map_err(|e| format!("{e}"))?;
    let key = text(fields, "k")?.to_owned();
    let priority: Priority = text(fields, "p")?.parse().map_err(|e| format!("{e}"))?;
    let content_type: ContentType = text(fields, "ct")?.parse().map_err(|e| format!("{e}"))?;
    let headers = match text(fields, "h")? {
        "" => Metadata::default(),
        json => Metadata::from_json(json).map_err(|e| format!("headers: {e}"))?,
    };
    let payload = field(fields, "d").ok_or("the entry has no \"d\" field")?;
    Ok(Message {
        id,
        key,
        priority,
        headers,
        content_type,
        payload: bytes::Bytes::copy_from_slice(payload),
    })
}

/// True for the field list of a packed entry: `[m, <packed bytes>]`.
fn is_packed(fields: &[Value]) -> bool {
    matches!(fields, [Value::BulkString(name), Value::BulkString(_)] if name == PACKED.as_bytes())
}

/// Decodes a stream entry `[id, [field, value, …]]`. A malformed field list is an
/// undecodable entry, not an error; a reply of another shape is.
pub(super) fn entry(v: Value) -> Result<Entry> {
    let mut items = reply::array(v)?.into_iter();
    let id = reply::string(items.next().ok_or_else(|| unexpected("an entry without id"))?)?;
    let fields = items.next().unwrap_or(Value::Nil);
    // A packed entry (every entry this bus writes) is unpacked straight from the reply,
    // without the field list in between.
    let decoded = match fields {
        Value::Array(mut f) if is_packed(&f) => match f.pop() {
            Some(Value::BulkString(packed)) => unpack(packed),
            // is_packed saw a string there.
            _ => Err("the packed message is missing".to_owned()),
        },
        other => message(pairs(other)?),
    };
    let body = match decoded {
        Ok(m) => Body::Message(m),
        Err(why) => Body::Undecodable(why),
    };
    Ok(Entry { id, body })
}

/// A stream entry id `ms-seq` as numbers (for ordering).
pub(super) fn entry_id(id: &str) -> Option<(u64, u64)> {
    crate::packed::parse_entry_id(id).map(|[ms, seq]| (ms, seq))
}

/// Decodes a dead-letter entry of partition `partition`.
pub(super) fn dead_letter(topic: &str, partition: u32, v: Value) -> Result<DeadLetter> {
    let mut items = reply::array(v)?.into_iter();
    let id = reply::string(items.next().ok_or_else(|| unexpected("an entry without id"))?)?;
    let fields = pairs(items.next().unwrap_or(Value::Nil))?;
    let corrupt = |what: &str| cqrs_core::Error::corrupt(format!("dead letter {id} of {topic}: {what}"));
    let get = |name: &str| text(&fields, name).map_err(|e| corrupt(&e));
    let detail = get("detail")?.to_owned();
    let reason = match get("reason")? {
        "max_attempts" => DeadLetterReason::MaxAttempts { last_error: detail },
        "permanent" => DeadLetterReason::Permanent { error: detail },
        "undecodable" => DeadLetterReason::Undecodable { error: detail },
        "parked" => DeadLetterReason::Parked {
            behind: detail.parse().map_err(|_| corrupt("parked behind a bad id"))?,
        },
        other => return Err(corrupt(&format!("unknown reason {other:?}"))),
    };
    let original: Vec<(Vec<u8>, Vec<u8>)> = fields
        .iter()
        .filter_map(|(f, v)| f.strip_prefix(b"f.").map(|f| (f.to_vec(), v.clone())))
        .collect();
    let message = message(original).ok();
    let at = entry_id(&id)
        .and_then(|(ms, _)| i64::try_from(ms).ok())
        .map_or(Timestamp::from_millis(0), Timestamp::from_millis);
    Ok(DeadLetter {
        topic: topic.to_owned(),
        group: get("group")?.to_owned(),
        original_id: message.as_ref().map(|m| m.id),
        entry: get("oid")?.to_owned(),
        partition,
        message,
        reason,
        attempts: get("attempts")?
            .parse()
            .map_err(|_| corrupt("attempts is not a number"))?,
        at,
    })
}

/// The `reason` field value of a dead-letter reason, and its detail.
pub(super) fn reason_fields(reason: &DeadLetterReason) -> (&'static str, String) {
    match reason {
        DeadLetterReason::MaxAttempts { last_error } => ("max_attempts", last_error.clone()),
        DeadLetterReason::Permanent { error } => ("permanent", error.clone()),
        DeadLetterReason::Undecodable { error } => ("undecodable", error.clone()),
        DeadLetterReason::Parked { behind } => ("parked", behind.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(items: Vec<Vec<u8>>) -> Value {
        Value::Array(items.into_iter().map(Value::BulkString).collect())
    }

    #[test]
    fn a_lone_xadd_writes_what_the_publish_script_writes() {
        let m = Message::new("k", ContentType::Json, "{}").with_header("tenant", "t");
        let mut cmd = redis::cmd("XADD");
        encode_fields(&m, &mut cmd).unwrap();
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .skip(1)
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(args, vec![PACKED.as_bytes().to_vec(), pack(&m).unwrap()]);
    }

    #[test]
    fn packed_messages_round_trip_and_damage_is_undecodable() {
        let m = Message::new("k{1}", ContentType::Opaque, vec![0u8, 255, 7])
            .with_priority(Priority::High)
            .with_header("tenant", "ü");
        let packed = pack(&m).unwrap();
        let v = Value::Array(vec![
            Value::BulkString(b"1-0".to_vec()),
            bulk(vec![PACKED.as_bytes().to_vec(), packed.clone()]),
        ]);
        assert!(matches!(entry(v).unwrap().body, Body::Message(ref got) if *got == m));
        for cut in [0, 1, 17, 20, 24, 28] {
            let v = Value::Array(vec![
                Value::BulkString(b"1-1".to_vec()),
                bulk(vec![PACKED.as_bytes().to_vec(), packed[..cut].to_vec()]),
            ]);
            assert!(
                matches!(entry(v).unwrap().body, Body::Undecodable(_)),
                "cut at {cut}"
            );
        }
        let mut bad = packed;
        bad[17] = 9;
        let v = Value::Array(vec![
            Value::BulkString(b"1-2".to_vec()),
            bulk(vec![PACKED.as_bytes().to_vec(), bad]),
        ]);
        assert!(matches!(entry(v).unwrap().body, Body::Undecodable(_)));
    }

    #[test]
    fn messages_of_the_earlier_form_round_trip_and_garbage_is_undecodable() {
        let m = Message::new("k{1}", ContentType::Opaque, vec![0u8, 255, 7])
            .with_priority(Priority::High)
            .with_header("tenant", "ü");
        let names = ["id", "k", "p", "ct", "h", "d"];
        let mut flat = Vec::new();
        for (n, v) in names.iter().zip(encode_legacy(&m)) {
            flat.push(n.as_bytes().to_vec());
            flat.push(v);
        }
        let v = Value::Array(vec![Value::BulkString(b"1-0".to_vec()), bulk(flat)]);
        let e = entry(v).unwrap();
        assert!(matches!(e.body, Body::Message(ref got) if *got == m));
        let bad = Value::Array(vec![
            Value::BulkString(b"1-1".to_vec()),
            bulk(vec![
                b"k".to_vec(),
                b"x".to_vec(),
                b"id".to_vec(),
                b"nope".to_vec(),
            ]),
        ]);
        assert!(matches!(entry(bad).unwrap().body, Body::Undecodable(_)));
    }
}
