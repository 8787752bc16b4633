//! A stored Redis snapshot: no bytes panic, and every snapshot decodes back to itself.
#![no_main]

use arbitrary::Unstructured;
use backend_redis::fuzzing::{decode_snapshot, encode_snapshot};
use cqrs_core::{Snapshot, StreamId, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let stream = StreamId::new("s-1").unwrap();
    let _ = decode_snapshot(&stream, 3, data.to_vec());
    let mut u = Unstructured::new(data);
    let snap = (|| {
        Ok::<_, arbitrary::Error>(Snapshot {
            stream_id: stream.clone(),
            version: u.arbitrary()?,
            schema_revision: u.arbitrary()?,
            content_type: cqrs_fuzz::content_type(&mut u)?,
            content_encoding: cqrs_fuzz::encoding(&mut u)?,
            taken_at: Timestamp::from_millis(u.arbitrary()?),
            payload: u.arbitrary::<Vec<u8>>()?.into(),
        })
    })();
    if let Ok(snap) = snap {
        let got = decode_snapshot(&stream, snap.version, encode_snapshot(&snap)).unwrap();
        assert_eq!(got, snap);
    }
});
