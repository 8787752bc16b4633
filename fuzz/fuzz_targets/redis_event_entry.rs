//! A Redis stream entry of a stream's events (`read_stream` and `read_all` decode these):
//! no reply of any shape panics, and every event packed as an append or an import stores
//! it decodes back to itself at its version and position.
#![no_main]

use arbitrary::Unstructured;
use backend_redis::fuzzing::{decode_event, pack_event, redis::Value};
use cqrs_core::{Position, StreamId};
use cqrs_fuzz::bulk;
use libfuzzer_sys::fuzz_target;

const WORDS: &[&str] = &["0-1", "0-2", "d", "c", "1-0 1", "5-3 0 77", "7-1 2"];

fuzz_target!(|data: &[u8]| {
    let stream = StreamId::new("s-1").unwrap();
    let mut u = Unstructured::new(data);
    if let Ok(v) = cqrs_fuzz::value(&mut u, 3, WORDS) {
        let _ = decode_event(&stream, 0, v);
    }
    // A well-shaped entry around arbitrary packed bytes and commit text.
    if let (Ok(packed), Ok(commit)) = (u.arbitrary::<Vec<u8>>(), cqrs_fuzz::word(&mut u, WORDS)) {
        let entry = Value::Array(vec![bulk("0-3"), Value::Array(vec![bulk(commit), bulk(packed)])]);
        let _ = decode_event(&stream, 1, entry);
    }
    let Ok(e) = cqrs_fuzz::event(&mut u) else { return };
    let Ok(packed) = pack_event(&e) else {
        assert!(e.event_type.len() > usize::from(u16::MAX));
        return;
    };
    let (Ok(ms), Ok(seq), Ok(first)) = (
        u.arbitrary::<u64>(),
        u.arbitrary::<u64>(),
        u.int_in_range(1..=9u64),
    ) else {
        return;
    };
    let version = first + 2;
    // As an append writes it: one field "<log entry> <first version>", the packed event.
    let appended = Value::Array(vec![
        bulk(format!("0-{version}")),
        Value::Array(vec![bulk(format!("{ms}-{seq} {first}")), bulk(packed.clone())]),
    ]);
    match decode_event(&stream, 2, appended) {
        Ok(got) => {
            assert_eq!(got.data, e);
            assert_eq!(got.version, version);
            assert_eq!(got.position, Position::new(2, [ms, seq, 2]));
            assert_eq!(got.recorded_at.as_millis(), i64::try_from(ms).unwrap());
        }
        // A log entry time past i64 is no time: corrupt, not a panic.
        Err(err) => assert!(i64::try_from(ms).is_err(), "{err}"),
    }
    // As an import writes it: "d" the packed event, "c" "<log entry> <index> <ms>".
    let at: i64 = u.arbitrary().unwrap_or(0);
    let imported = Value::Array(vec![
        bulk(format!("0-{version}")),
        Value::Array(vec![
            bulk("d"),
            bulk(packed),
            bulk("c"),
            bulk(format!("{ms}-{seq} 4 {at}")),
        ]),
    ]);
    let got = decode_event(&stream, 0, imported).unwrap();
    assert_eq!(got.data, e);
    assert_eq!(got.position, Position::new(0, [ms, seq, 4]));
    assert_eq!(got.recorded_at.as_millis(), at);
});
