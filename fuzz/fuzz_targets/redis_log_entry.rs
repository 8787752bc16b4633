//! A Redis partition log entry (a commit pointer, which `read_all` expands): no reply of
//! any shape panics, a pointer as `append.lua` writes it decodes to its fields, and any other
//! pointer is `Corrupt`.
#![no_main]

use arbitrary::Unstructured;
use backend_redis::fuzzing::{decode_commit, redis::Value};
use cqrs_fuzz::bulk;
use libfuzzer_sys::fuzz_target;

const WORDS: &[&str] = &["1-1", "0-0", "s", "f", "t", "x", "18446744073709551615"];

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(v) = cqrs_fuzz::value(&mut u, 3, WORDS) {
        let _ = decode_commit(v);
    }
    let (Ok(id), Ok(stream), Ok(from), Ok(to)) = (
        u.arbitrary::<[u64; 2]>(),
        u.arbitrary::<String>(),
        u.arbitrary::<u64>(),
        u.arbitrary::<u64>(),
    ) else {
        return;
    };
    let entry = Value::Array(vec![
        bulk(format!("{}-{}", id[0], id[1])),
        Value::Array(vec![
            bulk("s"),
            bulk(stream.clone()),
            bulk("f"),
            bulk(from.to_string()),
            bulk("t"),
            bulk(to.to_string()),
        ]),
    ]);
    // append.lua writes only valid stream ids and `from <= to`; anything else is a log entry
    // read_all refuses (Corrupt, naming its position) unless it is quarantined.
    if cqrs_core::StreamId::new(stream.as_str()).is_ok() && from <= to {
        assert_eq!(decode_commit(entry).unwrap(), (id, stream, from, to));
    } else {
        assert!(matches!(
            decode_commit(entry),
            Err(cqrs_core::Error::Corrupt { .. })
        ));
    }
});
