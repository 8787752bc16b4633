//! The conformance suite against PostgreSQL: a fresh schema per behaviour, dropped when it
//! passes.
//!
//! `cargo nextest run -p backend-postgres -E 'test(postgres::event_store::)'`

mod common;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use backend_postgres::PgBackend;
use conformance::{ConformanceHooks, Harness, HeldAppend, Namespace};
use cqrs_core::{AppendOutcome, BoxError, EventData, ExpectedVersion, Result, Stores, StreamId};

/// One test's backend, schema and hooks.
struct PgHarness {
    ns: Namespace,
    backend: Arc<PgBackend>,
    stores: Stores,
}

impl PgHarness {
    async fn fresh(ns: Namespace) -> std::result::Result<Self, BoxError> {
        let backend = common::fresh(ns.as_str()).await?;
        let stores = backend.stores();
        Ok(PgHarness { ns, backend, stores })
    }
}

/// A held append as the harness sees it.
struct Held(backend_postgres::testing::HeldAppend);

#[async_trait]
impl HeldAppend for Held {
    async fn commit(self: Box<Self>) -> Result<AppendOutcome> {
        self.0.commit().await
    }
    async fn rollback(self: Box<Self>) -> Result<()> {
        self.0.rollback().await
    }
}

#[async_trait]
impl ConformanceHooks for PgHarness {
    async fn hold_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Option<Result<Box<dyn HeldAppend>>> {
        Some(
            self.backend
                .hold_append(stream, expected, events)
                .await
                .map(|h| Box::new(Held(h)) as Box<dyn HeldAppend>),
        )
    }

    async fn settle_log(&self) -> Option<Result<()>> {
        Some(self.backend.settle_log(Duration::from_secs(60)).await)
    }

    async fn drop_connections(&self) -> Option<Result<()>> {
        Some(
            self.backend
                .terminate_connections(self.ns.as_str())
                .await
                .map(|_| ()),
        )
    }

    fn round_trips(&self) -> Option<u64> {
        Some(self.backend.round_trips())
    }

    async fn reconnect(&self) -> Option<Result<Stores>> {
        let second = match common::options(self.ns.as_str()) {
            Ok(o) => PgBackend::connect(&o).await,
            Err(e) => Err(cqrs_core::Error::invalid(e.to_string())),
        };
        Some(match second {
            Ok(b) => b.migrate().await.map(|()| b.stores()),
            Err(e) => Err(e),
        })
    }
}

#[async_trait]
impl Harness for PgHarness {
    fn stores(&self) -> &Stores {
        &self.stores
    }

    fn namespace(&self) -> &Namespace {
        &self.ns
    }

    fn hooks(&self) -> Option<&dyn ConformanceHooks> {
        Some(self)
    }

    async fn teardown(&self) -> std::result::Result<(), BoxError> {
        self.backend.pool().close().await;
        common::drop_schema(self.ns.as_str()).await
    }
}

conformance::suite!(postgres, PgHarness::fresh);
