//! Typed payload codecs: JSON (serde_json) and BSON (bson).

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::{ContentType, Error, Result};

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
}
