//! The bus conformance suite against the Redis Streams bus: a single node at `REDIS_URL`
//! (default `redis://127.0.0.1:6379`) and the Redis Cluster of `REDIS_CLUSTER_URL` (or
//! `scripts/redis-cluster`). Each behaviour gets its own key prefix (its namespace name),
//! whose keys are deleted afterwards with `SCAN MATCH` and `UNLINK`, on every master of a
//! cluster (never `FLUSHDB`).
//!
//! `cargo nextest run -p backend-redis -E 'test(redis_bus::) | test(redis_cluster_bus::)'`

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use backend_redis::{RedisBus, RedisBusOptions, RedisStoreOptions};
use conformance::{
    bus::{BusHarness, BusSettings},
    Namespace,
};
use cqrs_core::{bus::EventBus, BoxError, Result};

mod common;
use common::{cluster_url, single_url};

struct RedisBusHarness {
    ns: Namespace,
    bus: RedisBus,
    shared: Arc<dyn EventBus>,
}

#[async_trait]
impl BusHarness for RedisBusHarness {
    fn bus(&self) -> &Arc<dyn EventBus> {
        &self.shared
    }

    fn namespace(&self) -> &Namespace {
        &self.ns
    }

    fn settings(&self) -> BusSettings {
        BusSettings::default()
    }

    async fn publish_undecodable(&self, topic: &str, key: &str) -> Option<Result<()>> {
        Some(
            self.bus
                .publish_undecodable(topic, key, "not a message: no id, no payload")
                .await,
        )
    }

    async fn teardown(&self) -> std::result::Result<(), BoxError> {
        self.bus.destroy().await?;
        Ok(())
    }
}

async fn harness(
    ns: Namespace,
    url: std::result::Result<String, String>,
) -> std::result::Result<RedisBusHarness, BoxError> {
    let url = url?;
    let store = RedisStoreOptions::new(url.clone()).prefix(ns.as_str());
    // A short poll, so messages published by another bus value are seen quickly.
    let options = RedisBusOptions::new().block(Duration::from_millis(50));
    let bus = RedisBus::open(store, options)
        .await
        .map_err(|e| format!("cannot open a Redis bus at {url}: {e}"))?;
    Ok(RedisBusHarness {
        ns,
        shared: Arc::new(bus.clone()),
        bus,
    })
}

conformance::bus_suite!(redis_bus, |ns| harness(ns, single_url()));
conformance::bus_suite!(redis_cluster_bus, |ns| harness(ns, cluster_url()));
