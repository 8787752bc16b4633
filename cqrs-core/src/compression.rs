//! gzip and zlib via flate2, for snapshots and large payloads.
//!
//! Both formats carry a checksum of the uncompressed bytes (CRC-32 for gzip, Adler-32 for
//! zlib) that decoding verifies, so a flipped bit surfaces as [`Error::Corrupt`] rather than
//! as a wrong aggregate.

use std::io::{Read, Write};

use bytes::Bytes;
use flate2::{read, write, Compression};

use crate::{ContentEncoding, Error, Result};

/// Compresses `bytes` with `encoding` (identity copies nothing).
///
/// # Errors
/// [`Error::Codec`] if the encoder fails (it does not on in-memory buffers in practice).
pub fn compress(encoding: ContentEncoding, bytes: &[u8]) -> Result<Bytes> {
    let out = match encoding {
        ContentEncoding::Identity => return Ok(Bytes::copy_from_slice(bytes)),
        ContentEncoding::Gzip => {
            let mut enc = write::GzEncoder::new(Vec::new(), Compression::default());
            enc.write_all(bytes).and_then(|()| enc.finish())
        }
        ContentEncoding::Zlib => {
            let mut enc = write::ZlibEncoder::new(Vec::new(), Compression::default());
            enc.write_all(bytes).and_then(|()| enc.finish())
        }
    };
    out.map(Bytes::from)
        .map_err(|e| Error::codec(format!("{} compress", encoding.as_str()), e))
}

/// The most bytes [`decompress`] produces: a small stored payload must not be able to
/// expand until the process runs out of memory.
pub const MAX_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;

/// Decompresses `bytes` that were compressed with `encoding`, verifying the checksum, up to
/// [`MAX_DECOMPRESSED_BYTES`].
///
/// # Errors
/// [`Error::Corrupt`] for a damaged stream or a checksum mismatch; [`Error::TooLarge`] past
/// the output limit.
pub fn decompress(encoding: ContentEncoding, bytes: &[u8]) -> Result<Bytes> {
    decompress_limited(encoding, bytes, MAX_DECOMPRESSED_BYTES)
}

/// [`decompress`] with an explicit output limit in bytes.
///
/// # Errors
/// As [`decompress`], with `limit` as the output limit.
pub fn decompress_limited(encoding: ContentEncoding, bytes: &[u8], limit: usize) -> Result<Bytes> {
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    let read = match encoding {
        ContentEncoding::Identity => return Ok(Bytes::copy_from_slice(bytes)),
        ContentEncoding::Gzip => read::GzDecoder::new(bytes).take(cap).read_to_end(&mut out),
        ContentEncoding::Zlib => read::ZlibDecoder::new(bytes).take(cap).read_to_end(&mut out),
    };
    match read {
        Ok(n) if n > limit => Err(Error::TooLarge {
            kind: crate::LimitKind::DocumentBytes,
            limit: limit as u64,
            actual: n as u64,
        }),
        Ok(_) => Ok(Bytes::from(out)),
        Err(e) => Err(Error::corrupt(format!("{} payload: {e}", encoding.as_str()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..20_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    #[test]
    fn round_trips_and_shrinks() {
        let data = sample();
        for enc in [
            ContentEncoding::Identity,
            ContentEncoding::Gzip,
            ContentEncoding::Zlib,
        ] {
            let c = compress(enc, &data).unwrap();
            if enc != ContentEncoding::Identity {
                assert!(c.len() < data.len() / 4, "{enc:?} compressed to {}", c.len());
            }
            assert_eq!(decompress(enc, &c).unwrap(), data);
        }
    }

    #[test]
    fn no_single_byte_flip_returns_wrong_data() {
        let data = sample();
        for enc in [ContentEncoding::Gzip, ContentEncoding::Zlib] {
            let good = compress(enc, &data).unwrap().to_vec();
            // Skip the gzip header's mtime/xfl/os bytes (4..10), which carry no data and no checksum.
            for i in (0..good.len()).filter(|i| enc != ContentEncoding::Gzip || !(4..10).contains(i)) {
                let mut bad = good.clone();
                bad[i] ^= 0x40;
                let r = decompress(enc, &bad);
                // A flip in the final block's padding bits changes no data; anything else
                // must be caught. Never may wrong bytes come back as Ok.
                assert!(
                    matches!(&r, Err(Error::Corrupt { .. })) || r.as_ref().is_ok_and(|b| b[..] == data[..]),
                    "{enc:?}: flip at byte {i} of {} returned wrong data",
                    good.len()
                );
            }
        }
    }

    #[test]
    fn output_is_bounded() {
        let bomb = compress(ContentEncoding::Gzip, &vec![0u8; 1 << 20]).unwrap();
        assert!(bomb.len() < 8 * 1024);
        let r = decompress_limited(ContentEncoding::Gzip, &bomb, 1000);
        assert!(matches!(r, Err(Error::TooLarge { limit: 1000, .. })), "{r:?}");
        assert_eq!(
            decompress_limited(ContentEncoding::Gzip, &bomb, 1 << 20)
                .unwrap()
                .len(),
            1 << 20
        );
    }

    #[test]
    fn truncation_is_detected() {
        for enc in [ContentEncoding::Gzip, ContentEncoding::Zlib] {
            let good = compress(enc, &sample()).unwrap();
            assert!(matches!(
                decompress(enc, &good[..good.len() - 3]),
                Err(Error::Corrupt { .. })
            ));
        }
    }
}
