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

/// A fresh harness for the test `name` with one subscription (topic and group of its
/// namespace) recording into a probe.
async fn subscribed(
    name: &str,
) -> std::result::Result<
    (
        PgBusHarness,
        String,
        Arc<conformance::bus::Probe>,
        Box<dyn cqrs_core::bus::Subscription>,
    ),
    BoxError,
> {
    let ns = Namespace::for_test(name);
    common::drop_schema(ns.as_str()).await?;
    let h = PgBusHarness::fresh(ns).await?;
    let (topic, group) = (h.ns.name("topic"), h.ns.name("group"));
    let probe = conformance::bus::Probe::ok();
    let sub = h
        .bus
        .subscribe(
            cqrs_core::bus::SubscriptionSpec::new(&topic, &group),
            probe.clone(),
        )
        .await?;
    Ok((h, topic, probe, sub))
}

/// Holds the xmin horizon (a publisher's transaction stays open while another commits), so
/// it is named `fault_*`: `.config/nextest.toml` runs it alone.
///
/// A message published inside a caller's transaction is delivered only once that
/// transaction commits; a later publisher's message that committed first waits behind it
/// (never skipped, never delivered past the open transaction); a rolled-back publish is
/// never delivered.
#[tokio::test(flavor = "multi_thread")]
async fn fault_bus_in_flight_publisher_is_not_skipped() -> std::result::Result<(), BoxError> {
    use std::time::Duration;

    use conformance::bus::messages;

    let (h, topic, probe, sub) = subscribed(concat!(
        module_path!(),
        "::fault_bus_in_flight_publisher_is_not_skipped"
    ))
    .await?;

    let held = messages("k", 1);
    let later = messages("k", 1);
    let dropped = messages("other", 1);
    let mut tx = h.backend.pool().begin().await?;
    h.pg.publish_in(&mut tx, &topic, held.clone()).await?;
    h.bus.publish(&topic, later.clone()).await?;
    let mut rolled_back = h.backend.pool().begin().await?;
    h.pg.publish_in(&mut rolled_back, &topic, dropped.clone()).await?;
    rolled_back.rollback().await?;
    // Nothing may arrive while the first publisher's transaction is open: the later
    // message sits above the horizon. (A bounded wait for something that must not happen.)
    let early = tokio::time::timeout(
        Duration::from_millis(600),
        probe.wait_until(Duration::from_secs(1), "a delivery", |calls, _| !calls.is_empty()),
    )
    .await;
    assert!(
        early.is_err(),
        "delivered past an open transaction: {:?}",
        probe.calls()
    );
    tx.commit().await?;
    h.pg.wake();
    probe
        .wait_acked(2, Duration::from_secs(20))
        .await
        .map_err(|f| f.0)?;
    let order: Vec<_> = probe.acked().iter().map(|d| d.message.id).collect();
    assert_eq!(
        order,
        vec![held[0].id, later[0].id],
        "delivery order (the held transaction's row first)"
    );
    sub.stop().await?;
    assert!(probe
        .calls()
        .iter()
        .all(|c| c.delivery.message.id != dropped[0].id));
    h.teardown().await
}

/// `docs/CONFORMANCE.md` item 83 as far as a shared server allows (it is never restarted): every
/// server connection of the bus (the pool's and the notifier's) is terminated after 150
/// acknowledged publishes; publishing goes on (re-sending an unanswered message with its
/// id, a no-op if it was stored), and the subscriber, never restarted, must hand every
/// acknowledged message to its handler.
#[tokio::test(flavor = "multi_thread")]
async fn bus_connections_killed_mid_stream_lose_nothing() -> std::result::Result<(), BoxError> {
    use std::time::{Duration, Instant};

    use conformance::bus::messages;
    use cqrs_core::Error;

    let (h, topic, probe, sub) = subscribed(concat!(
        module_path!(),
        "::bus_connections_killed_mid_stream_lose_nothing"
    ))
    .await?;
    let mut acknowledged = Vec::new();
    let mut killed = 0;
    for (n, message) in messages("k", 300).into_iter().enumerate() {
        if n == 150 {
            killed = h.backend.terminate_connections(h.ns.as_str()).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match h.bus.publish(&topic, vec![message.clone()]).await {
                Ok(()) => break,
                Err(Error::Unavailable { .. }) if Instant::now() < deadline => {}
                Err(e) => return Err(format!("publish {n}: {e}").into()),
            }
        }
        acknowledged.push(message.id);
    }
    assert!(killed > 0, "no bus connection was terminated");
    probe
        .wait_until(
            Duration::from_secs(60),
            "every acknowledged message",
            |_, acked| {
                acknowledged
                    .iter()
                    .all(|id| acked.iter().any(|(d, _)| d.message.id == *id))
            },
        )
        .await
        .map_err(|f| f.0)?;
    sub.stop().await?;
    h.teardown().await
}

/// The subscription's lag and published counts are current once the settles they count are
/// visible, also while acknowledgement batches and dead letters of one consumer overlap
/// (four workers, failing keys dead-lettered between acknowledgements): once `handled` and
/// `dead_lettered` show every message settled, lag is 0 without waiting for a heartbeat.
#[tokio::test(flavor = "multi_thread")]
async fn bus_counts_are_current_under_overlapping_settles() -> std::result::Result<(), BoxError> {
    use std::time::Duration;

    use conformance::bus::{messages, Act, Probe};
    use cqrs_core::bus::{HandlerError, RetryPolicy, SubscriptionSpec};

    let ns = Namespace::for_test(concat!(
        module_path!(),
        "::bus_counts_are_current_under_overlapping_settles"
    ));
    common::drop_schema(ns.as_str()).await?;
    let h = PgBusHarness::fresh(ns).await?;
    let (poison, fine) = (6u64, 40u64);
    for round in 0..5 {
        let (topic, group) = (h.ns.name(&format!("t{round}")), h.ns.name("g"));
        let probe = Probe::scripted(|d, _| {
            if d.message.key.starts_with("poison") {
                Act::Fail(HandlerError::retryable("boom"))
            } else {
                Act::Ok
            }
        });
        let spec = SubscriptionSpec::new(&topic, &group)
            .concurrency(4)
            .retry(RetryPolicy::fixed(2, Duration::from_millis(5)));
        let sub = h.bus.subscribe(spec, probe).await?;
        let mut batch = Vec::new();
        for k in 0..poison {
            batch.extend(messages(&format!("poison{k}"), 1));
        }
        for k in 0..8 {
            batch.extend(messages(&format!("fine{k}"), 5));
        }
        h.bus.publish(&topic, batch).await?;
        conformance::bus::wait_for(Duration::from_secs(20), "every message settled", || {
            let m = sub.metrics();
            m.handled == fine && m.dead_lettered == poison
        })
        .await
        .map_err(|f| f.0)?;
        let m = sub.metrics();
        assert_eq!(
            m.lag, 0,
            "round {round}: lag once every settle is visible ({m:?})"
        );
        assert_eq!(m.published, poison + fine, "round {round}: published");
        sub.stop().await?;
    }
    h.teardown().await
}
