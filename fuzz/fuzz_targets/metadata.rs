//! Stored event metadata and bus headers (`Metadata::from_json`), and the names backends
//! store for content types, encodings and priorities: no input panics, and every value
//! round-trips through what is stored for it.
#![no_main]

use arbitrary::Unstructured;
use cqrs_core::{bus::Priority, ContentEncoding, ContentType, Metadata, StreamId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = Metadata::from_json(text) {
            assert_eq!(Metadata::from_json(&m.to_json()).unwrap(), m);
        }
        if let Ok(ct) = text.parse::<ContentType>() {
            assert_eq!(ct.as_str(), text);
        }
        if let Ok(ce) = text.parse::<ContentEncoding>() {
            assert_eq!(ce.as_str(), text);
        }
        if let Ok(p) = text.parse::<Priority>() {
            assert_eq!(p.as_str().parse::<Priority>().unwrap(), p);
        }
        if let Ok(s) = StreamId::new(text) {
            assert_eq!(s.as_str(), text);
        }
    }
    let mut u = Unstructured::new(data);
    if let Ok(m) = cqrs_fuzz::metadata(&mut u) {
        let json = m.to_json();
        assert_eq!(Metadata::from_json(&json).unwrap(), m, "{json}");
        assert_eq!(m.is_empty(), json == "{}");
    }
    for ct in [ContentType::Json, ContentType::Bson, ContentType::Opaque] {
        assert_eq!(ct.as_str().parse::<ContentType>().unwrap(), ct);
    }
});
