//! The snapshot decode path: `compression::decompress` of a stored payload, `Snapshot::unseal`, and
//! `EventSourcedRepository::load` of a stored snapshot of any revision, content type,
//! encoding and bytes (through the memory backend). No input panics or fails the load (an
//! unreadable snapshot means a replay), a snapshot is used exactly when it decodes, and a
//! snapshot the repository would write loads back as the same state.
#![no_main]

use std::{cell::RefCell, sync::Arc};

use arbitrary::{Arbitrary, Unstructured};
use backend_memory::MemoryBackend;
use cqrs_core::{
    aggregate::{Aggregate, EventSourcedRepository},
    codec::{Codec, Json},
    compression,
    snapshot_policy::SnapshotPolicy,
    ContentEncoding, ContentType, Snapshot, StreamId, Timestamp,
};
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize, Arbitrary)]
struct Counter {
    n: i64,
    names: Vec<String>,
    last: Option<(u32, bool)>,
}

#[derive(Debug, Serialize, Deserialize)]
enum CounterEvent {
    Added(i64),
}

impl Aggregate for Counter {
    type Command = ();
    type Event = CounterEvent;
    type Error = std::convert::Infallible;
    const KIND: &'static str = "counter";

    fn handle(&self, (): ()) -> Result<Vec<CounterEvent>, Self::Error> {
        Ok(Vec::new())
    }

    fn apply(&mut self, CounterEvent::Added(by): &CounterEvent) {
        self.n = self.n.wrapping_add(*by);
    }
}

thread_local! {
    static RUNTIME: RefCell<tokio::runtime::Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
    );
}

/// Stores `snap` and loads the aggregate: the state and the snapshot version it used.
fn load(snap: Snapshot) -> (Counter, u64) {
    RUNTIME.with(|rt| {
        rt.borrow().block_on(async {
            let stores = MemoryBackend::new().stores();
            stores.snapshots.save(snap).await.unwrap();
            let repo = EventSourcedRepository::<Counter>::new(Arc::clone(&stores.events))
                .with_snapshots(stores.snapshots, SnapshotPolicy::Never);
            let loaded = repo.load("c1").await.unwrap();
            (loaded.state, loaded.snapshot_version)
        })
    })
}

fn snapshot(u: &mut Unstructured<'_>, payload: Vec<u8>) -> arbitrary::Result<Snapshot> {
    Ok(Snapshot {
        stream_id: StreamId::new("counter-c1").unwrap(),
        version: u.int_in_range(1..=3)?,
        schema_revision: *u.choose(&[Counter::SNAPSHOT_REVISION, 0, 2, u32::MAX])?,
        payload: payload.into(),
        content_type: cqrs_fuzz::content_type(u)?,
        content_encoding: cqrs_fuzz::encoding(u)?,
        taken_at: Timestamp::from_millis(0),
    })
}

fuzz_target!(|data: &[u8]| {
    for enc in [
        ContentEncoding::Identity,
        ContentEncoding::Gzip,
        ContentEncoding::Zlib,
    ] {
        let _ = compression::decompress_limited(enc, data, 1 << 16);
        let packed = compression::compress(enc, data).unwrap();
        assert_eq!(compression::decompress(enc, &packed).unwrap(), data);
    }

    let mut u = Unstructured::new(data);
    // Raw bytes as a stored snapshot, sealed over them or not: used exactly when the seal
    // holds and they decode as the current revision.
    if let Ok(snap) = u.arbitrary::<Vec<u8>>().and_then(|p| snapshot(&mut u, p)) {
        let snap = if u.arbitrary::<bool>().unwrap_or(false) {
            snap.seal()
        } else {
            snap
        };
        let decoded = (snap.schema_revision == Counter::SNAPSHOT_REVISION
            && snap.content_type == ContentType::Json)
            .then(|| snap.unseal().ok())
            .flatten()
            .and_then(|body| compression::decompress(snap.content_encoding, &body).ok())
            .and_then(|raw| Json::decode::<Counter>(&raw).ok());
        let version = snap.version;
        let (state, used) = load(snap);
        match decoded {
            Some(expected) => assert_eq!((state, used), (expected, version)),
            None => assert_eq!((state, used), (Counter::default(), 0)),
        }
    }
    // A state as the repository writes it comes back as itself.
    if let Ok(state) = Counter::arbitrary(&mut u) {
        if let Ok(enc) = cqrs_fuzz::encoding(&mut u) {
            let payload = compression::compress(enc, &Json::encode(&state).unwrap()).unwrap();
            let snap = Snapshot {
                stream_id: StreamId::new("counter-c1").unwrap(),
                version: 2,
                schema_revision: Counter::SNAPSHOT_REVISION,
                payload,
                content_type: ContentType::Json,
                content_encoding: enc,
                taken_at: Timestamp::from_millis(0),
            }
            .seal();
            assert_eq!(load(snap), (state, 2));
        }
    }
});
