//! Long forward stream reads, which go out as parts of 1,000 versions spread over the
//! backend's read connections and decoded in tasks of their own: the events come back
//! complete and in order whatever the connection count, a page still stops at its byte
//! limit in the middle of a part, and the parts count as requests of the one backend.
//! Runs on the single node at `REDIS_URL` (default `redis://127.0.0.1:6379`) and on the
//! cluster of `REDIS_CLUSTER_URL`, under its own key prefix, deleted afterwards.

use backend_redis::{RedisBackend, RedisStoreOptions, MAX_READ_CONNECTIONS};
use cqrs_core::{ContentType, EventData, EventStore, ExpectedVersion, Limits, StreamId};

mod common;

/// Events in the stream: more than the first request's 256 plus two full parts.
const EVENTS: u64 = 2_600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_reads_are_complete_and_in_order() {
    long_reads(common::single_url().unwrap()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_reads_are_complete_and_in_order_on_a_cluster() {
    long_reads(common::cluster_url().unwrap()).await.unwrap();
}

fn event(version: u64) -> EventData {
    EventData::new(
        "Counted",
        ContentType::Json,
        format!("{{\"v\":{version}}}").into_bytes(),
    )
}

async fn long_reads(url: String) -> cqrs_core::Result<()> {
    let prefix = format!("t_long_{}", uuid::Uuid::now_v7().simple());
    let options = RedisStoreOptions::new(url).prefix(&prefix);
    let writer = RedisBackend::open(options.clone()).await?;
    let s = StreamId::new("long")?;
    let mut ids = Vec::new();
    for first in (0..EVENTS).step_by(100) {
        let batch: Vec<EventData> = (first + 1..=first + 100).map(event).collect();
        ids.extend(batch.iter().map(|e| e.event_id));
        writer.append(&s, ExpectedVersion::Exact(first), batch).await?;
    }
    let mut requests = Vec::new();
    let mut first_positions = None;
    for n in [1, 2, MAX_READ_CONNECTIONS] {
        let store = RedisBackend::open(options.clone().read_connections(n)).await?;
        let before = store.requests();
        let all = store.read_stream(&s, 1, 10_000).await?;
        requests.push(store.requests() - before);
        let versions: Vec<u64> = all.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=EVENTS).collect::<Vec<_>>(), "{n} read connections");
        assert!(
            all.iter()
                .zip(&ids)
                .all(|(e, id)| e.data.event_id == *id && e.data.payload == event(e.version).payload),
            "{n} read connections: the events differ from the appended ones"
        );
        let positions: Vec<_> = all.iter().map(|e| e.position).collect();
        let first = first_positions.get_or_insert_with(|| positions.clone());
        assert_eq!(*first, positions, "{n} read connections: other positions");
        // A range starting and ending inside parts.
        let middle = store.read_stream(&s, 300, 1_500).await?;
        let versions: Vec<u64> = middle.iter().map(|e| e.version).collect();
        assert_eq!(versions, (300..1_800).collect::<Vec<_>>(), "{n} read connections");
        store.close().await?;
    }
    // Every part counts as a request of the backend, on whichever connection it went: the
    // first request (head and 256 events), three parts up to the short one, and at most
    // three more that were in flight when it arrived.
    assert!(
        requests.iter().all(|n| (4..=7).contains(n)),
        "requests per read: {requests:?}"
    );
    // A byte limit that ends the page inside a part (each event's payload and type are 14
    // to 17 bytes here, so about 1,240 events fit).
    let limits = Limits {
        max_read_bytes: 20_000,
        ..Limits::default()
    };
    let small = RedisBackend::open(options.clone().limits(limits)).await?;
    let page = small.read_stream(&s, 1, 10_000).await?;
    let bytes: usize = page.iter().map(|e| e.data.encoded_len()).sum();
    assert!(bytes <= 20_000, "{bytes} bytes in a page limited to 20,000");
    assert!(page.len() > 1_000 && page.len() < 1_300, "{} events", page.len());
    let versions: Vec<u64> = page.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=count(page.len())).collect::<Vec<_>>());
    writer.destroy().await?;
    Ok(())
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
