//! Typed payload codecs (JSON via serde_json, BSON via bson), and the domain-event codec:
//! [`encode_event`] and [`decode_event`].

use std::borrow::Cow;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::{compression, upcast::UpcasterChain, ContentEncoding, ContentType, Error, EventData, Result};

/// Encodes and decodes typed values to payload bytes of one content type.
pub trait Codec {
    /// The content type the bytes are tagged with.
    const CONTENT_TYPE: ContentType;

    /// Encodes a value.
    ///
    /// # Errors
    /// [`Error::Codec`] if serialisation fails.
    fn encode<T: Serialize>(value: &T) -> Result<Bytes>;

    /// Decodes a value.
    ///
    /// # Errors
    /// [`Error::Codec`] if the bytes are not a `T`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T>;
}

/// JSON via serde_json.
///
/// ```
/// use cqrs_core::codec::{Codec, Json};
/// let bytes = Json::encode(&vec![1, 2])?;
/// assert_eq!(&bytes[..], b"[1,2]");
/// assert_eq!(Json::decode::<Vec<i32>>(&bytes)?, vec![1, 2]);
/// # Ok::<(), cqrs_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    const CONTENT_TYPE: ContentType = ContentType::Json;

    fn encode<T: Serialize>(value: &T) -> Result<Bytes> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| Error::codec("JSON encode", e))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| Error::codec("JSON decode", e))
    }
}

/// BSON via the `bson` crate. The value must serialise to a document (a struct or map).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bson;

impl Codec for Bson {
    const CONTENT_TYPE: ContentType = ContentType::Bson;

    fn encode<T: Serialize>(value: &T) -> Result<Bytes> {
        bson::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| Error::codec("BSON encode", e))
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
        bson::from_slice(bytes).map_err(|e| Error::codec("BSON decode", e))
    }
}

/// Decodes `bytes` tagged `content_type` as JSON or BSON (after decompression).
///
/// # Errors
/// [`Error::Codec`] for undecodable bytes or opaque content.
pub fn decode_as<T: DeserializeOwned>(content_type: ContentType, bytes: &[u8]) -> Result<T> {
    match content_type {
        ContentType::Json => Json::decode(bytes),
        ContentType::Bson => Bson::decode(bytes),
        ContentType::Opaque => Err(Error::codec(
            "decode",
            "opaque payloads have no codec; read the bytes directly",
        )),
    }
}

/// Splits a serde-enum domain event into its type name and JSON payload: the variant name
/// is the type, the variant's content the payload (see [`crate::aggregate`]).
///
/// ```
/// use cqrs_core::codec::encode_event;
/// #[derive(serde::Serialize)]
/// enum OrderEvent { Placed { qty: u32 } }
/// let (ty, payload) = encode_event(&OrderEvent::Placed { qty: 2 })?;
/// assert_eq!((ty.as_str(), payload), ("Placed", serde_json::json!({ "qty": 2 })));
/// # Ok::<(), cqrs_core::Error>(())
/// ```
///
/// # Errors
/// [`Error::Codec`] if the value is not an externally tagged enum variant.
pub fn encode_event<E: Serialize>(event: &E) -> Result<(String, serde_json::Value)> {
    match serde_json::to_value(event).map_err(|e| Error::codec("event encode", e))? {
        serde_json::Value::String(unit) => Ok((unit, serde_json::Value::Null)),
        serde_json::Value::Object(map) if map.len() == 1 => {
            let Some((ty, payload)) = map.into_iter().next() else {
                return Err(Error::codec("event encode", "empty event object"));
            };
            Ok((ty, payload))
        }
        other => Err(Error::codec(
            "event encode",
            format!("domain events must be externally tagged serde enums, got {other}"),
        )),
    }
}

/// Decodes a stored event into a domain event `E` (a serde enum, see [`crate::aggregate`]):
/// brings it to the latest schema through `upcasters`, decompresses its payload and reads
/// the variant named by its type. The repositories load aggregates through this function;
/// pass `&recorded.data` for a [`RecordedEvent`](crate::RecordedEvent).
///
/// An event no upcaster step applies to is decoded from the stored bytes without a copy,
/// and JSON payloads are parsed in place, never through a `serde_json::Value`.
///
/// ```
/// use cqrs_core::{codec::decode_event, upcast::UpcasterChain, EventData};
/// #[derive(Debug, PartialEq, serde::Deserialize)]
/// enum OrderEvent { Placed { qty: u32, currency: String } }
///
/// // Version 1 had no currency; the chain adds it on read.
/// let chain = UpcasterChain::builder()
///     .json_step("Placed", 1, "Placed", |mut v| { v["currency"] = "EUR".into(); Ok(v) })
///     .build()?;
/// let stored = EventData::json("Placed", &serde_json::json!({ "qty": 2 }))?;
/// let event: OrderEvent = decode_event(&stored, &chain)?;
/// assert_eq!(event, OrderEvent::Placed { qty: 2, currency: "EUR".into() });
/// # Ok::<(), cqrs_core::Error>(())
/// ```
///
/// # Errors
/// [`Error::NoUpcastPath`] or an upcaster's error; [`Error::Corrupt`] for a payload that
/// does not decompress; [`Error::Codec`] if the type is unknown to `E`, the payload does not
/// fit it, or the content is opaque.
pub fn decode_event<E: DeserializeOwned>(event: &EventData, upcasters: &UpcasterChain) -> Result<E> {
    let data = upcasters.upcast_ref(event)?;
    let raw: Cow<'_, [u8]> = match data.content_encoding {
        ContentEncoding::Identity => Cow::Borrowed(&data.payload),
        encoding => Cow::Owned(compression::decompress(encoding, &data.payload)?.to_vec()),
    };
    match data.content_type {
        ContentType::Json => decode_json_event(&data.event_type, &raw),
        other => {
            // BSON is read through a JSON value: rare, and not the path aggregates load by.
            let payload: serde_json::Value = decode_as(other, &raw)?;
            serde_json::from_value(serde_json::json!({ data.event_type.as_str(): payload }))
                .map_err(|e| Error::codec(format!("event decode of {}", data.event_type), e))
        }
    }
}

/// An event straight from JSON bytes: the enum reads `{event_type: payload}` from a map
/// whose one value is parsed in place. Going through `serde_json::Value` twice (the
/// payload, then the tagged map) was most of a 10,000-event aggregate load.
fn decode_json_event<E: DeserializeOwned>(event_type: &str, json: &[u8]) -> Result<E> {
    let mut payload = serde_json::Deserializer::from_slice(json);
    let decoded = E::deserialize(serde::de::value::MapAccessDeserializer::new(Tagged {
        event_type: Some(event_type),
        payload: &mut payload,
    }))
    .and_then(|event| payload.end().map(|()| event));
    decoded.map_err(|e| Error::codec(format!("event decode of {event_type}"), e))
}

/// A one-entry map: the event type as key, the JSON payload as value.
struct Tagged<'a, 'de> {
    event_type: Option<&'a str>,
    payload: &'a mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
}

impl<'de> serde::de::MapAccess<'de> for Tagged<'_, 'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> std::result::Result<Option<K::Value>, Self::Error> {
        match self.event_type.take() {
            Some(ty) => seed
                .deserialize(serde::de::value::StrDeserializer::<serde_json::Error>::new(ty))
                .map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        seed.deserialize(&mut *self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Placed {
        order: String,
        qty: i64,
        note: Option<String>,
    }

    #[test]
    fn json_and_bson_round_trip() {
        let v = Placed {
            order: "o-1 😀".into(),
            qty: -3,
            note: None,
        };
        assert_eq!(Json::decode::<Placed>(&Json::encode(&v).unwrap()).unwrap(), v);
        assert_eq!(Bson::decode::<Placed>(&Bson::encode(&v).unwrap()).unwrap(), v);
        assert_eq!(
            decode_as::<Placed>(ContentType::Bson, &Bson::encode(&v).unwrap()).unwrap(),
            v
        );
    }

    #[test]
    fn garbage_is_a_codec_error() {
        assert!(matches!(Json::decode::<Placed>(b"{"), Err(Error::Codec { .. })));
        assert!(matches!(
            Bson::decode::<Placed>(b"\x01\x02"),
            Err(Error::Codec { .. })
        ));
        assert!(
            matches!(Bson::encode(&5i32), Err(Error::Codec { .. })),
            "a bare integer is no document"
        );
        assert!(decode_as::<Placed>(ContentType::Opaque, b"{}").is_err());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum CounterEvent {
        Added { by: i64 },
        Closed,
        Renamed(Option<String>),
    }

    fn json_event(ty: &str, payload: &serde_json::Value) -> EventData {
        EventData::new(ty, ContentType::Json, Json::encode(payload).unwrap())
    }

    #[test]
    fn serde_enum_events_split_and_rebuild() {
        let none = UpcasterChain::default();
        let (ty, payload) = encode_event(&CounterEvent::Added { by: 3 }).unwrap();
        assert_eq!(
            (ty.as_str(), payload.clone()),
            ("Added", serde_json::json!({"by": 3}))
        );
        assert_eq!(
            decode_event::<CounterEvent>(&json_event(&ty, &payload), &none).unwrap(),
            CounterEvent::Added { by: 3 }
        );
        for event in [CounterEvent::Closed, CounterEvent::Renamed(None)] {
            let (ty, payload) = encode_event(&event).unwrap();
            assert_eq!(
                decode_event::<CounterEvent>(&json_event(&ty, &payload), &none).unwrap(),
                event
            );
        }
        assert!(decode_event::<CounterEvent>(&json_event("Nope", &serde_json::json!({})), &none).is_err());
        assert!(encode_event(&5).is_err());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shapes {
        Struct { by: i64, memo: String },
        Unit,
        Newtype(Option<String>),
        Tuple(u8, u8),
    }

    #[test]
    fn json_events_decode_in_place_as_through_values() {
        let none = UpcasterChain::default();
        let events = [
            Shapes::Struct {
                by: -3,
                memo: "m\u{e9}\"".into(),
            },
            Shapes::Unit,
            Shapes::Newtype(None),
            Shapes::Newtype(Some("x".into())),
            Shapes::Tuple(1, 2),
        ];
        for event in events {
            let (ty, payload) = encode_event(&event).unwrap();
            let data = json_event(&ty, &payload);
            let in_place: Shapes = decode_event(&data, &none).unwrap();
            let through_values: Shapes = serde_json::from_value(serde_json::json!({ ty: payload })).unwrap();
            assert_eq!(in_place, through_values);
            assert_eq!(in_place, event);
        }
        let data = |ty: &str, json: &str| EventData::new(ty, ContentType::Json, json.as_bytes().to_vec());
        for (ty, json) in [
            ("Nope", "{}"),
            ("Struct", r#"{"by": 1}"#),
            ("Struct", r#"{"by": 1, "memo": "a"} trailing"#),
            ("Unit", "1"),
            ("Tuple", "[1]"),
        ] {
            let err = decode_event::<Shapes>(&data(ty, json), &none).unwrap_err();
            assert!(matches!(err, Error::Codec { .. }), "{ty} {json}: {err:?}");
        }
    }

    #[test]
    fn decoding_goes_through_compression_bson_and_upcasters() {
        let chain = UpcasterChain::builder()
            .json_step("Added", 1, "Added", |mut v| {
                v["by"] = serde_json::json!(v["by"].as_i64().unwrap_or(0) * 10);
                Ok(v)
            })
            .build()
            .unwrap();
        let v1 = json_event("Added", &serde_json::json!({"by": 4}));
        assert_eq!(
            decode_event::<CounterEvent>(&v1, &chain).unwrap(),
            CounterEvent::Added { by: 40 }
        );
        let v2 = v1.clone().with_schema_version(2);
        assert_eq!(
            decode_event::<CounterEvent>(&v2, &chain).unwrap(),
            CounterEvent::Added { by: 4 },
            "an event at the latest version is read as stored"
        );
        let gz = compression::compress(ContentEncoding::Gzip, &v2.payload).unwrap();
        let zipped = EventData::new("Added", ContentType::Json, gz)
            .with_encoding(ContentEncoding::Gzip)
            .with_schema_version(2);
        assert_eq!(
            decode_event::<CounterEvent>(&zipped, &chain).unwrap(),
            CounterEvent::Added { by: 4 }
        );
        let bson = EventData::new(
            "Added",
            ContentType::Bson,
            Bson::encode(&serde_json::json!({"by": 7})).unwrap(),
        );
        assert_eq!(
            decode_event::<CounterEvent>(&bson, &UpcasterChain::default()).unwrap(),
            CounterEvent::Added { by: 7 }
        );
        let v3 = v1.with_schema_version(3);
        assert!(matches!(
            decode_event::<CounterEvent>(&v3, &chain),
            Err(Error::NoUpcastPath { .. })
        ));
    }
}
