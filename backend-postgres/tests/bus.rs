//! The bus conformance suite against the PostgreSQL outbox bus: a fresh schema per
//! behaviour, dropped when it passes.
//!
//! `cargo nextest run -p backend-postgres -E 'test(postgres_bus::)'`

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use backend_postgres::{PgBackend, PgBus, PgBusOptions};
use conformance::{
    bus::{BusHarness, BusSettings},
    Namespace,
};
use cqrs_core::{bus::EventBus, BoxError, Result};

/// One test's backend, bus and schema.
struct PgBusHarness {
    ns: Namespace,
    backend: Arc<PgBackend>,
    pg: PgBus,
    bus: Arc<dyn EventBus>,
}

impl PgBusHarness {
    async fn fresh(ns: Namespace) -> std::result::Result<Self, BoxError> {
        // Competing consumers and their workers share the pool: more than the stores' 4.
        let backend = PgBackend::connect(&common::options(ns.as_str())?.max_connections(10)).await?;
        backend.migrate().await?;
        let pg = backend.bus(PgBusOptions::new());
        let bus: Arc<dyn EventBus> = Arc::new(pg.clone());
        Ok(PgBusHarness { ns, backend, pg, bus })
    }
}

#[async_trait]
impl BusHarness for PgBusHarness {
    fn bus(&self) -> &Arc<dyn EventBus> {
        &self.bus
    }

    fn namespace(&self) -> &Namespace {
        &self.ns
    }

    fn settings(&self) -> BusSettings {
        BusSettings::default()
    }

    async fn publish_undecodable(&self, topic: &str, key: &str) -> Option<Result<()>> {
        Some(
            self.pg
                .publish_undecodable(topic, key, "not a message: bad header bytes")
                .await,
        )
    }

    async fn teardown(&self) -> std::result::Result<(), BoxError> {
        self.bus.close().await?;
        self.backend.pool().close().await;
        common::drop_schema(self.ns.as_str()).await
    }
}

conformance::bus_suite!(postgres_bus, PgBusHarness::fresh);
