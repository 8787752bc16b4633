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

fn single_url() -> std::result::Result<String, String> {
    Ok(std::env::var("REDIS_URL").unwrap_or_else(|_| backend_redis::DEFAULT_URL.to_owned()))
}

/// `REDIS_CLUSTER_URL`; when it is unset outside CI, the cluster of `scripts/redis-cluster`
/// (started on first use, serialised across test processes with `flock`, left running for
/// later runs: stop it with `scripts/redis-cluster stop`). In CI (`CI=true`) an unset
/// variable fails every cluster behaviour with this message.
fn cluster_url() -> std::result::Result<String, String> {
    const HOW: &str = "start a local 3-master cluster with `eval \"$(scripts/redis-cluster start)\"` \
                       (it prints `export REDIS_CLUSTER_URL=redis+cluster://…`) and stop it with \
                       `scripts/redis-cluster stop`";
    if let Ok(url) = std::env::var("REDIS_CLUSTER_URL") {
        return Ok(url);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        return Err(format!("REDIS_CLUSTER_URL is not set: {HOW}"));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/redis-cluster");
    let lock = std::env::temp_dir().join("cqrs-redis-cluster.lock");
    // `-o`: the lock's descriptor is closed before the script runs, so the redis-server
    // daemons it starts do not inherit it (they would hold the lock for as long as they run,
    // and the next test process would wait for ever).
    let out = std::process::Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .arg(script)
        .arg("start")
        .output()
        .map_err(|e| format!("REDIS_CLUSTER_URL is not set and {script} could not run ({e}): {HOW}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("export REDIS_CLUSTER_URL="))
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "REDIS_CLUSTER_URL is not set and {script} start failed: {}; {HOW}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
}

conformance::suite!(redis, |ns| harness(ns, single_url()));
conformance::suite!(redis_cluster, |ns| harness(ns, cluster_url()));
