//! The bus conformance suite against the Redis Pub/Sub bus, on a single node
//! (`redis_pubsub`) and on the local cluster (`redis_pubsub_cluster`). The bus is at most
//! once: behaviours needing durability, dead letters or claims print NOT RUN.
//!
//! `cargo nextest run -p backend-redis -E 'test(redis_pubsub::)'`

mod support;

use std::sync::Arc;

use backend_redis::{bus::RedisPubSubBus, RedisStoreOptions};
use conformance::{bus::BusStoresHarness, Namespace};
use cqrs_core::{bus::EventBus, BoxError};

async fn harness(ns: Namespace, url: Result<String, String>) -> Result<BusStoresHarness, BoxError> {
    let url = url?;
    let options = RedisStoreOptions::new(url.clone()).prefix(ns.as_str());
    let bus = RedisPubSubBus::connect(options)
        .await
        .map_err(|e| format!("cannot connect the Pub/Sub bus to {url}: {e}"))?;
    let bus: Arc<dyn EventBus> = Arc::new(bus);
    Ok(BusStoresHarness::new(ns, bus))
}

conformance::bus_suite!(redis_pubsub, |ns| harness(ns, Ok(support::single_url())));
conformance::bus_suite!(redis_pubsub_cluster, |ns| harness(ns, support::cluster_url()));
