//! `Checkpoint::from_json`, what every checkpoint store parses: no input panics, whatever
//! parses re-encodes to the same checkpoint, and any checkpoint round-trips.
#![no_main]

use arbitrary::Unstructured;
use cqrs_core::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = Checkpoint::from_json(text) {
            assert_eq!(Checkpoint::from_json(&c.to_json()).unwrap(), c);
        }
    }
    if let Ok(c) = cqrs_fuzz::checkpoint(&mut Unstructured::new(data)) {
        assert_eq!(Checkpoint::from_json(&c.to_json()).unwrap(), c);
    }
});
