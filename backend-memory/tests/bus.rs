//! The bus conformance suite against the in-memory bus: a fresh bus per behaviour.
//!
//! `cargo nextest run -p backend-memory -E 'test(memory_bus::)'`

use std::sync::Arc;

use backend_memory::MemoryBus;
use conformance::bus::BusStoresHarness;
use cqrs_core::bus::EventBus;

conformance::bus_suite!(memory_bus, |ns| async move {
    let bus = MemoryBus::new();
    let shared: Arc<dyn EventBus> = Arc::new(bus.clone());
    Ok::<_, cqrs_core::BoxError>(
        BusStoresHarness::new(ns, shared).with_undecodable(move |topic, key| {
            let bus = bus.clone();
            async move {
                bus.publish_undecodable(&topic, &key, "not a message: bad header bytes")
                    .await
            }
        }),
    )
});
