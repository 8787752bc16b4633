//! The conformance suite against the memory backend: a fresh backend per behaviour.
//!
//! `cargo nextest run -p backend-memory -E 'test(memory::event_store::)'`

use std::sync::Arc;

use async_trait::async_trait;
use backend_memory::MemoryBackend;
use conformance::ConformanceHooks;
use cqrs_core::{Result, Stores};

/// The hooks that are honest for an in-memory store: counting calls, and a second handle on
/// the same data. There is no transaction to hold open, no connection to drop and no server
/// to restart, so those behaviours report themselves as not run.
struct MemoryHooks(Arc<MemoryBackend>);

#[async_trait]
impl ConformanceHooks for MemoryHooks {
    fn round_trips(&self) -> Option<u64> {
        Some(self.0.calls())
    }

    async fn reconnect(&self) -> Option<Result<Stores>> {
        Some(Ok(self.0.stores()))
    }
}

conformance::suite!(memory, |ns| async move {
    let backend = MemoryBackend::new();
    Ok::<_, cqrs_core::BoxError>(
        conformance::StoresHarness::new(ns, backend.stores()).with_hooks(MemoryHooks(backend)),
    )
});
