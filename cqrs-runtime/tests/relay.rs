//! The relay's message mapping. Its leadership behaviours (a killed relay loses nothing, a
//! stalled leader never publishes beside its successor) are in `conformance::relay` and run
//! on every backend from the backend crates' tests.
//!
//! `cargo nextest run -p cqrs-runtime -E 'binary(relay)'`
#![allow(clippy::unwrap_used)] // test code: a failed setup should panic with its cause

use std::{sync::Arc, time::Duration};

use backend_memory::{MemoryBackend, MemoryBus};
use cqrs_core::{
    bus::{handler_fn, headers, Delivery, EventBus, MessageId, SubscriptionSpec},
    EventData, ExpectedVersion, StreamId,
};
use cqrs_runtime::{Relay, RelayOptions};

/// A relayed message carries the event's id, stream, type, versions and metadata; the
/// handler reads the metadata back as it was stored, and derives a follow-up from it.
#[tokio::test(flavor = "multi_thread")]
async fn relayed_message_carries_the_event() {
    let stores = MemoryBackend::new().stores();
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let metadata = cqrs_core::Metadata::new()
        .with_correlation_id("corr-1")
        .with_causation_id("cause-1")
        .with_actor("alice")
        .with_extra("tenant", "acme");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = handler_fn(move |d: Delivery| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((d.message.id, d.metadata(), d.follow_up()));
            Ok(())
        }
    });
    let sub = bus
        .subscribe(SubscriptionSpec::new("orders", "check"), Arc::new(handler))
        .await
        .unwrap();
    let relay = Relay::new(&stores, bus.clone(), RelayOptions::new("orders-relay", "orders")).start();
    let stream: StreamId = "order-7".parse().unwrap();
    let event = EventData::json("OrderPlaced", &serde_json::json!({ "total": 42 }))
        .unwrap()
        .with_schema_version(3)
        .with_metadata(metadata.clone());
    let id = MessageId::from_uuid(*event.event_id.as_uuid());
    stores
        .events
        .append(&stream, ExpectedVersion::NoStream, vec![event.clone()])
        .await
        .unwrap();
    let (got, read_back, follow_up) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, id);
    assert_eq!(
        read_back, metadata,
        "the handler reads the command's metadata back"
    );
    assert_eq!(follow_up.causation_id, Some(id.to_string()));
    assert_eq!(follow_up.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(follow_up.actor.as_deref(), Some("alice"));
    relay
        .wait_until(|s| s.commits >= 1, Duration::from_secs(5))
        .await
        .unwrap();
    let loaded = stores.events.read_stream(&stream, 1, 10).await.unwrap();
    let m = cqrs_runtime::event_message(&loaded[0], cqrs_core::bus::Priority::Normal);
    assert_eq!(m.id, id);
    assert_eq!(m.key, "order-7");
    assert_eq!(m.payload, event.payload);
    assert_eq!(m.headers.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(m.headers.causation_id.as_deref(), Some("cause-1"));
    assert_eq!(m.headers.extra[headers::EVENT_TYPE], "OrderPlaced");
    assert_eq!(m.headers.extra[headers::SCHEMA_VERSION], "3");
    assert_eq!(m.headers.extra[headers::STREAM_VERSION], "1");
    assert_eq!(m.headers.actor.as_deref(), Some("alice"));
    assert_eq!(m.headers.extra["tenant"], "acme");
    relay.stop().await.unwrap();
    sub.stop().await.unwrap();
}
