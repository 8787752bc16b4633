//! Redis bus stream entries (messages, packed and of the earlier six-field form) and
//! dead-letter entries: no reply of any shape panics, and every message packed as publish
//! writes it decodes back to itself, on its own and inside a dead letter.
#![no_main]

use arbitrary::Unstructured;
use backend_redis::fuzzing::{decode_dead_letter, decode_entry, pack_message, redis::Value};
use cqrs_fuzz::bulk;
use libfuzzer_sys::fuzz_target;

const WORDS: &[&str] = &[
    "1-0",
    "m",
    "id",
    "k",
    "p",
    "ct",
    "h",
    "d",
    "json",
    "normal",
    "reason",
    "detail",
    "attempts",
    "oid",
    "group",
    "f.m",
    "f.id",
    "parked",
    "max_attempts",
    "3",
    "{}",
];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(v) = cqrs_fuzz::value(&mut u, 3, WORDS) {
        let _ = decode_entry(v.clone());
        let _ = decode_dead_letter("t", 0, v);
    }
    // Arbitrary bytes in the packed field.
    if let Ok(packed) = u.arbitrary::<Vec<u8>>() {
        let v = Value::Array(vec![bulk("1-0"), Value::Array(vec![bulk("m"), bulk(packed)])]);
        let (id, _) = decode_entry(v).unwrap();
        assert_eq!(id, "1-0");
    }
    let Ok(m) = cqrs_fuzz::message(&mut u) else { return };
    let packed = pack_message(&m).unwrap();
    let v = Value::Array(vec![
        bulk("5-7"),
        Value::Array(vec![bulk("m"), bulk(packed.clone())]),
    ]);
    let (id, got) = decode_entry(v).unwrap();
    assert_eq!(id, "5-7");
    assert_eq!(got.unwrap(), m);
    let dead = Value::Array(vec![
        bulk("9-1"),
        Value::Array(vec![
            bulk("reason"),
            bulk("permanent"),
            bulk("detail"),
            bulk("boom"),
            bulk("attempts"),
            bulk("3"),
            bulk("oid"),
            bulk("5-7"),
            bulk("group"),
            bulk("g"),
            bulk("f.m"),
            bulk(packed),
        ]),
    ]);
    let dl = decode_dead_letter("t", 2, dead).unwrap();
    assert_eq!(dl.message.as_ref(), Some(&m));
    assert_eq!((dl.attempts, dl.partition, dl.entry.as_str()), (3, 2, "5-7"));
});
