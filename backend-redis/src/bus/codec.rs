//! Stream entry fields of a message and of a dead letter.
//!
//! A message entry holds `id` (UUID), `k` (key), `p` (priority), `ct` (content type), `h`
//! (headers as JSON, empty when none) and `d` (payload bytes). A dead-letter entry holds
//! `reason`, `detail`, `attempts`, `oid` (original entry id), `group` and the original
//! fields prefixed `f.`.

use cqrs_core::{
    bus::{DeadLetter, DeadLetterReason, Message, MessageId, Priority},
    ContentType, Metadata, Result, Timestamp,
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

/// Appends the `XADD` field values of `m` to a script call, in the order of
/// `publish.lua`, without copying the payload or the key.
pub(super) fn encode_args(m: &Message, inv: &mut redis::ScriptInvocation<'_>) {
    let mut id = uuid::Uuid::encode_buffer();
    inv.arg(m.id.as_uuid().hyphenated().encode_lower(&mut id).as_bytes())
        .arg(m.key.as_bytes())
        .arg(m.priority.as_str())
        .arg(m.content_type.as_str());
    if m.headers.is_empty() {
        inv.arg(&b""[..]);
    } else {
        inv.arg(m.headers.to_json());
    }
    inv.arg(&m.payload[..]);
}

/// Appends the `XADD` fields and values of `m` to a command (what `publish.lua` writes).
pub(super) fn encode_fields(m: &Message, cmd: &mut redis::Cmd) {
    let mut id = uuid::Uuid::encode_buffer();
    cmd.arg("id")
        .arg(m.id.as_uuid().hyphenated().encode_lower(&mut id).as_bytes())
        .arg("k")
        .arg(m.key.as_bytes())
        .arg("p")
        .arg(m.priority.as_str())
        .arg("ct")
        .arg(m.content_type.as_str())
        .arg("h");
    if m.headers.is_empty() {
        cmd.arg(&b""[..]);
    } else {
        cmd.arg(m.headers.to_json());
    }
    cmd.arg("d").arg(&m.payload[..]);
}

/// The `XADD` field values of `m`, in the order of `publish.lua`.
#[cfg(test)]
pub(super) fn encode(m: &Message) -> [Vec<u8>; 6] {
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

/// Decodes message fields; `Err` says why they are not a message.
fn message(fields: &[(Vec<u8>, Vec<u8>)]) -> std::result::Result<Message, String> {
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

/// Decodes a stream entry `[id, [field, value, …]]`. A malformed field list is an
/// undecodable entry, not an error; a reply of another shape is.
pub(super) fn entry(v: Value) -> Result<Entry> {
    let mut items = reply::array(v)?.into_iter();
    let id = reply::string(items.next().ok_or_else(|| unexpected("an entry without id"))?)?;
    let fields = pairs(items.next().unwrap_or(Value::Nil))?;
    let body = match message(&fields) {
        Ok(m) => Body::Message(m),
        Err(why) => Body::Undecodable(why),
    };
    Ok(Entry { id, body })
}

/// A stream entry id `ms-seq` as numbers (for ordering).
pub(super) fn entry_id(id: &str) -> Option<(u64, u64)> {
    crate::event_store::parse_entry_id(id).map(|[ms, seq]| (ms, seq))
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
    let message = message(&original).ok();
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
        encode_fields(&m, &mut cmd);
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .skip(1)
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        let names = ["id", "k", "p", "ct", "h", "d"];
        let mut want = Vec::new();
        for (n, v) in names.iter().zip(encode(&m)) {
            want.push(n.as_bytes().to_vec());
            want.push(v);
        }
        assert_eq!(args, want);
    }

    #[test]
    fn messages_round_trip_and_garbage_is_undecodable() {
        let m = Message::new("k{1}", ContentType::Opaque, vec![0u8, 255, 7])
            .with_priority(Priority::High)
            .with_header("tenant", "ü");
        let names = ["id", "k", "p", "ct", "h", "d"];
        let mut flat = Vec::new();
        for (n, v) in names.iter().zip(encode(&m)) {
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
