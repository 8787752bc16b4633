//! A PostgreSQL outbox row's columns (what the bus consumer and `dead_letters` decode), and
//! an event row's position columns: no values panic, and a message stored as publish
//! stores it decodes back to itself.
#![no_main]

use arbitrary::Unstructured;
use backend_postgres::fuzzing::{decode_outbox_row, event_position};
use cqrs_core::Position;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let raw = (|| {
        Ok::<_, arbitrary::Error>((
            uuid::Uuid::from_bytes(u.arbitrary()?),
            u.arbitrary::<String>()?,
            u.arbitrary::<i16>()?,
            String::from_utf8_lossy(&cqrs_fuzz::word(&mut u, &["{}", "{\"actor\":\"a\"}"])?).into_owned(),
            String::from_utf8_lossy(&cqrs_fuzz::word(&mut u, &["json", "bson", "opaque"])?).into_owned(),
            u.arbitrary::<Vec<u8>>()?,
        ))
    })();
    if let Ok((id, key, priority, headers, ct, payload)) = raw {
        let _ = decode_outbox_row(id, key, priority, &headers, &ct, payload);
    }
    if let (Ok(tx), Ok(seq)) = (u.arbitrary::<i64>(), u.arbitrary::<i64>()) {
        match event_position(tx, seq) {
            Ok(p) => assert_eq!(p, Position::new(0, [tx.unsigned_abs(), seq.unsigned_abs(), 0])),
            Err(_) => assert!(tx < 0 || seq < 0),
        }
    }
    let Ok(m) = cqrs_fuzz::message(&mut u) else { return };
    // The columns as publish binds them.
    let rank = i16::try_from(m.priority.rank()).unwrap();
    let got = decode_outbox_row(
        *m.id.as_uuid(),
        m.key.clone(),
        rank,
        &m.headers.to_json(),
        m.content_type.as_str(),
        m.payload.to_vec(),
    );
    assert_eq!(got.unwrap(), m);
});
