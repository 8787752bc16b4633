//! The conformance suite against Redis: a single node at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`) and a Redis Cluster at `REDIS_CLUSTER_URL` (started by
//! `scripts/redis-cluster`). Each behaviour gets its own key prefix (its namespace name),
//! whose keys are deleted afterwards with `SCAN MATCH` and `UNLINK` (never `FLUSHDB`).
//!
//! `cargo nextest run -p backend-redis -E 'test(redis::event_store::)'`

use std::sync::Arc;

use async_trait::async_trait;
use backend_redis::{RedisBackend, RedisStoreOptions};
use conformance::{ConformanceHooks, Harness, Namespace};
use cqrs_core::{BoxError, Result, Stores};

mod common;
use common::{cluster_url, single_url};

/// A harness over one backend whose keys live under the namespace's prefix.
struct RedisHarness {
    ns: Namespace,
    stores: Stores,
    hooks: RedisHooks,
}

struct RedisHooks {
    backend: Arc<RedisBackend>,
}

#[async_trait]
impl ConformanceHooks for RedisHooks {
    fn round_trips(&self) -> Option<u64> {
        Some(self.backend.requests())
    }

    async fn reconnect(&self) -> Option<Result<Stores>> {
        let options = self.backend.options().clone();
        Some(RedisBackend::open(options).await.map(|b| b.stores()))
    }
}

#[async_trait]
impl Harness for RedisHarness {
    fn stores(&self) -> &Stores {
        &self.stores
    }

    fn namespace(&self) -> &Namespace {
        &self.ns
    }

    fn hooks(&self) -> Option<&dyn ConformanceHooks> {
        Some(&self.hooks)
    }

    async fn teardown(&self) -> std::result::Result<(), BoxError> {
        self.hooks.backend.destroy().await?;
        Ok(())
    }
}

async fn harness(
    ns: Namespace,
    url: std::result::Result<String, String>,
) -> std::result::Result<RedisHarness, BoxError> {
    let url = url?;
    let options = RedisStoreOptions::new(url.clone()).prefix(ns.as_str());
    let backend = RedisBackend::open(options).await.map_err(|e| {
        format!(
            "cannot open a Redis store at {url}: {e}. Start Redis (for example `redis-server --daemonize yes \
             --port 6379 --save '' --appendonly no`, or `scripts/redis-cluster start` for the cluster suite) \
             or point REDIS_URL / REDIS_CLUSTER_URL at one"
        )
    })?;
    Ok(RedisHarness {
        ns,
        stores: backend.stores(),
        hooks: RedisHooks { backend },
    })
}

conformance::suite!(redis, |ns| harness(ns, single_url()));
conformance::suite!(redis_cluster, |ns| harness(ns, cluster_url()));
