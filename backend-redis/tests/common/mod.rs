//! What the Redis test binaries share: where the single node and the cluster are.

/// `REDIS_URL`, default `redis://127.0.0.1:6379`.
pub(crate) fn single_url() -> std::result::Result<String, String> {
    Ok(std::env::var("REDIS_URL").unwrap_or_else(|_| backend_redis::DEFAULT_URL.to_owned()))
}

/// `REDIS_CLUSTER_URL`; when it is unset outside CI, the cluster of `scripts/redis-cluster`
/// (started on first use, serialised across test processes with `flock`, left running for
/// later runs: stop it with `scripts/redis-cluster stop`). In CI (`CI=true`) an unset
/// variable fails every cluster behaviour with this message.
pub(crate) fn cluster_url() -> std::result::Result<String, String> {
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
