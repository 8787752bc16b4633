//! Event bus benchmark: one table per transport, with the raw Redis ceilings measured in the
//! same run.
//!
//! ```text
//! cargo run --release -p examples --bin bus_bench [TRANSPORT|all [publish|latency|consume]]
//! ```
//!
//! Transports: the in-memory bus, the PostgreSQL outbox bus (in a fresh schema of
//! `DATABASE_URL`, default the local test database, dropped at the end), the Redis Streams bus on the single node at `REDIS_URL`
//! (default `redis://127.0.0.1:6379`) and on the cluster at `REDIS_CLUSTER_URL` (for example
//! from `eval "$(scripts/redis-cluster start)"`; unset: that table is skipped, and the run
//! says so). For each, with 256-byte payloads:
//!
//! - publish throughput, one message per call and batches of 100 (median of 3 rounds);
//! - end-to-end latency p50/p95/p99/p99.9 at an offered 10,000 messages/s (one message per
//!   publish call, paced by a 1 ms token bucket, the calls due at a tick made concurrently;
//!   latency = the handler's call instant minus
//!   the publish instant carried in the payload's first 8 bytes; the first 0.5 s is warm-up);
//! - consumer throughput of 1 and 4 consumers in a group (each with concurrency
//!   [`CONCURRENCY`]) over a pre-published backlog, no-op handler, messages/s until every
//!   message is acknowledged (median of 3 rounds).
//!
//! On Redis the same run measures the raw ceilings through redis-rs (one `XADD` per round
//! trip on one connection, `XADD` pipelined 100 at a time, `XREADGROUP` + `XACK` in batches
//! of 100 by one consumer; medians of 3 rounds) and prints each of our figures as a ratio to
//! its ceiling, with the targets. Every key lives under a fresh `busbench_<uuid>` prefix,
//! removed at the end (`SCAN` + `UNLINK`).
//!
//! `TRANSPORT` keeps only the transports whose name contains it (`memory`, `postgres`,
//! `redis`, `cluster`; `all`: every one) and `publish`, `latency` or `consume` only that part (for
//! profiling). Adding a transport is one entry in [`transports`].

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use cqrs::async_trait;
use cqrs::{
    bus::{Delivery, EventBus, HandlerError, Message, MessageHandler, Subscription, SubscriptionSpec},
    memory::MemoryBus,
    postgres::{PgBackend, PgBusOptions, PgStoreOptions},
    redis::{RedisBus, RedisBusOptions, RedisStoreOptions},
    ContentType,
};

const PAYLOAD: usize = 256;
const ROUNDS: usize = 3;
/// Messages published one per call, per round.
const SINGLES: usize = 3_000;
const BATCH: usize = 100;
/// Batches of [`BATCH`] per round.
const BATCHES: usize = 300;
/// Offered rate of the latency run, messages/s.
const RATE: u64 = 10_000;
const WARMUP: u64 = RATE / 2;
const MEASURED: u64 = RATE * 3;
/// Backlog of a consumer round. Large enough that joining the group and settling partition
/// ownership are a small part of the round: with 20,000 a round lasted about 130 ms, and four
/// consumers spent most of it joining (66,000/s against 102,000/s with this backlog).
const BACKLOG: usize = 100_000;
/// Handler calls in flight per consumer.
const CONCURRENCY: usize = 64;
/// Distinct message keys.
const KEYS: usize = 1_000;
/// How long any wait may take before the figure is reported as failed.
const PATIENCE: Duration = Duration::from_secs(120);

type Cleanup = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = cqrs::Result<u64>> + Send>> + Send>;

/// One transport under test.
struct Transport {
    name: String,
    bus: Arc<dyn EventBus>,
    /// The raw ceilings of the same server (Redis), or none.
    raw: Option<Raw>,
    /// Key prefix for the ceilings' keys (removed by `cleanup`).
    prefix: String,
    /// Removes everything the run wrote.
    cleanup: Option<Cleanup>,
}

/// The transports to measure: adding one is one entry here. A transport that cannot run
/// here answers why, and its table is skipped.
async fn transports() -> Vec<Result<Transport, String>> {
    let mut out = vec![Ok(Transport {
        name: "memory".into(),
        bus: Arc::new(MemoryBus::new()),
        raw: None,
        prefix: String::new(),
        cleanup: None,
    })];
    out.push(postgres_transport().await);
    let single = std::env::var("REDIS_URL").unwrap_or_else(|_| cqrs::redis::DEFAULT_URL.to_owned());
    out.push(redis_transport("redis (single node)", &single, None).await);
    match std::env::var("REDIS_CLUSTER_URL") {
        Ok(url) => {
            let nodes = url
                .trim_start_matches("redis+cluster://")
                .split(',')
                .map(|n| format!("redis://{n}"))
                .collect();
            out.push(redis_transport("redis (cluster)", &url, Some(nodes)).await);
        }
        Err(_) => out.push(Err(
            "redis (cluster): skipped, REDIS_CLUSTER_URL is not set (start one with \
             `eval \"$(scripts/redis-cluster start)\"`)"
                .into(),
        )),
    }
    out
}

/// The PostgreSQL outbox bus in a fresh schema of `DATABASE_URL` (default the local test
/// database), dropped at the end.
async fn postgres_transport() -> Result<Transport, String> {
    let base =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("busbench_{}", uuid::Uuid::now_v7().simple());
    let url = format!(
        "{base}{}schema={schema}",
        if base.contains('?') { '&' } else { '?' }
    );
    let skip = |e: &dyn std::fmt::Display| format!("postgres: skipped, {e}");
    let options = PgStoreOptions::from_url(&url)
        .map_err(|e| skip(&e))?
        .max_connections(10);
    let backend = PgBackend::connect(&options).await.map_err(|e| skip(&e))?;
    backend.migrate().await.map_err(|e| skip(&e))?;
    let bus = backend.bus(PgBusOptions::new());
    let closing = bus.clone();
    Ok(Transport {
        name: "postgres".into(),
        bus: Arc::new(bus),
        raw: None,
        prefix: String::new(),
        cleanup: Some(Box::new(move || {
            Box::pin(async move {
                closing.close().await?;
                backend.pool().close().await;
                let pool = sqlx::PgPool::connect(&base)
                    .await
                    .map_err(|e| cqrs::Error::backend("postgres", e))?;
                sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                    .execute(&pool)
                    .await
                    .map_err(|e| cqrs::Error::backend("postgres", e))?;
                Ok(1)
            })
        })),
    })
}

async fn redis_transport(
    name: &str,
    url: &str,
    cluster_nodes: Option<Vec<String>>,
) -> Result<Transport, String> {
    let prefix = format!("busbench_{}", uuid::Uuid::now_v7().simple());
    let store = RedisStoreOptions::new(url)
        .prefix(&prefix)
        .response_timeout(Duration::from_secs(30));
    let bus = RedisBus::open(store, RedisBusOptions::new())
        .await
        .map_err(|e| format!("{name}: skipped, cannot connect: {e}"))?;
    let raw = match cluster_nodes {
        Some(nodes) => Raw::Cluster(
            redis::cluster::ClusterClient::new(nodes)
                .map_err(|e| format!("{name}: {e}"))?
                .get_async_connection()
                .await
                .map_err(|e| format!("{name}: {e}"))?,
        ),
        None => Raw::Single(
            redis::Client::open(url)
                .map_err(|e| format!("{name}: {e}"))?
                .get_connection_manager()
                .await
                .map_err(|e| format!("{name}: {e}"))?,
        ),
    };
    let destroy = bus.clone();
    Ok(Transport {
        name: name.into(),
        bus: Arc::new(bus),
        raw: Some(raw),
        prefix,
        cleanup: Some(Box::new(move || Box::pin(async move { destroy.destroy().await }))),
    })
}

/// A raw redis-rs connection (no code of ours): a single node or a cluster.
#[derive(Clone)]
enum Raw {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Raw {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Raw::Single(c) => c.req_packed_command(cmd),
            Raw::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Raw::Single(c) => c.req_packed_commands(cmd, offset, count),
            Raw::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

fn payload(stamp: u64) -> Vec<u8> {
    let mut p = vec![b'x'; PAYLOAD];
    p[..8].copy_from_slice(&stamp.to_le_bytes());
    p
}

fn message(i: usize) -> Message {
    Message::new(format!("key-{}", i % KEYS), ContentType::Opaque, payload(0))
}

fn topic(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::now_v7().simple())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

// ---------------------------------------------------------------- ours

async fn publish_singles(bus: &dyn EventBus, n: usize) -> cqrs::Result<f64> {
    let t = topic("single");
    let started = Instant::now();
    for i in 0..n {
        bus.publish(&t, vec![message(i)]).await?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn publish_batches(bus: &dyn EventBus, batches: usize) -> cqrs::Result<f64> {
    let t = topic("batch");
    let started = Instant::now();
    for b in 0..batches {
        bus.publish(&t, (0..BATCH).map(|i| message(b * BATCH + i)).collect())
            .await?;
    }
    Ok((batches * BATCH) as f64 / started.elapsed().as_secs_f64())
}

/// Records each delivery's latency from the stamp in its payload.
struct Stamped {
    epoch: Instant,
    latencies: Mutex<Vec<u64>>,
    seen: AtomicU64,
}

#[async_trait]
impl MessageHandler for Stamped {
    async fn handle(&self, d: &Delivery) -> Result<(), HandlerError> {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut stamp = [0u8; 8];
        stamp.copy_from_slice(&d.message.payload[..8]);
        let stamp = u64::from_le_bytes(stamp);
        if stamp != u64::MAX {
            self.latencies.lock().unwrap().push(now.saturating_sub(stamp));
        }
        self.seen.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Latency {
    offered: f64,
    /// p50, p95, p99, p99.9 in µs.
    pct: [f64; 4],
}

async fn end_to_end(bus: &dyn EventBus) -> cqrs::Result<Result<Latency, String>> {
    let t = topic("e2e");
    let handler = Arc::new(Stamped {
        epoch: Instant::now(),
        latencies: Mutex::new(Vec::with_capacity(MEASURED as usize)),
        seen: AtomicU64::new(0),
    });
    let sub = bus
        .subscribe(
            SubscriptionSpec::new(&t, "e2e").concurrency(CONCURRENCY),
            handler.clone(),
        )
        .await?;
    let total = WARMUP + MEASURED;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut measured_from = started;
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * RATE as f64) as u64).min(total);
        // The messages due at this tick go out at once, one publish call each, stamped
        // when their call starts: a slow call does not hold back the next.
        let mut calls = Vec::new();
        while sent < due {
            if sent == WARMUP {
                measured_from = Instant::now();
            }
            let key = format!("key-{}", sent % KEYS as u64);
            let warm = sent < WARMUP;
            let (t, epoch) = (&t, handler.epoch);
            calls.push(async move {
                // Warm-up messages carry no stamp.
                let stamp = if warm {
                    u64::MAX
                } else {
                    epoch.elapsed().as_nanos() as u64
                };
                bus.publish(t, vec![Message::new(key, ContentType::Opaque, payload(stamp))])
                    .await
            });
            sent += 1;
        }
        for r in futures::future::join_all(calls).await {
            r?;
        }
    }
    let offered = MEASURED as f64 / measured_from.elapsed().as_secs_f64();
    let deadline = Instant::now() + PATIENCE;
    while handler.seen.load(Ordering::SeqCst) < total {
        if Instant::now() > deadline {
            sub.abort();
            return Ok(Err(format!(
                "only {} of {total} delivered within {PATIENCE:?}",
                handler.seen.load(Ordering::SeqCst)
            )));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sub.stop().await?;
    let mut l = std::mem::take(&mut *handler.latencies.lock().unwrap());
    l.sort_unstable();
    let at = |p: f64| {
        let i = ((l.len() as f64 - 1.0) * p).round() as usize;
        l.get(i).map_or(0.0, |ns| *ns as f64 / 1e3)
    };
    Ok(Ok(Latency {
        offered,
        pct: [at(0.5), at(0.95), at(0.99), at(0.999)],
    }))
}

/// A no-op handler.
struct Noop;

#[async_trait]
impl MessageHandler for Noop {
    async fn handle(&self, _: &Delivery) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// Messages/s acknowledged by `consumers` consumers of one group over a backlog of
/// [`BACKLOG`] published beforehand.
async fn consume(bus: &dyn EventBus, consumers: usize) -> cqrs::Result<Result<f64, String>> {
    let t = topic("consume");
    for b in 0..BACKLOG / BATCH {
        bus.publish(&t, (0..BATCH).map(|i| message(b * BATCH + i)).collect())
            .await?;
    }
    let started = Instant::now();
    let mut subs: Vec<Box<dyn Subscription>> = Vec::new();
    for _ in 0..consumers {
        let spec = SubscriptionSpec::new(&t, "consume").concurrency(CONCURRENCY);
        subs.push(bus.subscribe(spec, Arc::new(Noop)).await?);
    }
    let deadline = started + PATIENCE;
    let handled = |subs: &[Box<dyn Subscription>]| subs.iter().map(|s| s.metrics().handled).sum::<u64>();
    while handled(&subs) < BACKLOG as u64 {
        if Instant::now() > deadline {
            let n = handled(&subs);
            for s in subs {
                s.abort();
            }
            return Ok(Err(format!(
                "only {n} of {BACKLOG} acknowledged within {PATIENCE:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = BACKLOG as f64 / started.elapsed().as_secs_f64();
    for s in subs {
        s.stop().await?;
    }
    Ok(Ok(rate))
}

// ---------------------------------------------------------------- raw ceilings

/// What our bus writes, with the same sizes, so the ceiling moves the same bytes: one
/// field `m` holding the packed message (format byte, 16-byte id, priority, content type,
/// key length and key, headers length (no headers), payload).
fn raw_xadd(pipe_or_cmd: &mut redis::Cmd, key: &str, i: usize, body: &[u8]) {
    let k = format!("key-{}", i % KEYS);
    let mut packed = Vec::with_capacity(27 + k.len() + body.len());
    packed.push(1);
    packed.extend_from_slice(uuid::Uuid::now_v7().as_bytes());
    packed.extend_from_slice(&[2, 2]);
    packed.extend_from_slice(&(k.len() as u32).to_be_bytes());
    packed.extend_from_slice(k.as_bytes());
    packed.extend_from_slice(&0u32.to_be_bytes());
    packed.extend_from_slice(body);
    pipe_or_cmd.arg(key).arg("*").arg("m").arg(packed);
}

async fn raw_single_xadd(raw: &Raw, prefix: &str, n: usize) -> f64 {
    let mut conn = raw.clone();
    let key = format!("{prefix}:{{raw-single}}:s");
    let body = payload(0);
    let started = Instant::now();
    for i in 0..n {
        let mut cmd = redis::cmd("XADD");
        raw_xadd(&mut cmd, &key, i, &body);
        let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

async fn raw_fill(raw: &Raw, key: &str, batches: usize) {
    let mut conn = raw.clone();
    let body = payload(0);
    for b in 0..batches {
        let mut pipe = redis::pipe();
        for i in 0..BATCH {
            let mut cmd = redis::cmd("XADD");
            raw_xadd(&mut cmd, key, b * BATCH + i, &body);
            pipe.add_command(cmd).ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
}

async fn raw_pipelined_xadd(raw: &Raw, prefix: &str, batches: usize) -> f64 {
    let key = format!("{prefix}:{{raw-pipe}}:s");
    let started = Instant::now();
    raw_fill(raw, &key, batches).await;
    (batches * BATCH) as f64 / started.elapsed().as_secs_f64()
}

/// Entry ids of an `XREADGROUP` reply (RESP2 arrays or RESP3 maps).
fn entry_ids(v: redis::Value) -> Vec<Vec<u8>> {
    use redis::Value;
    let streams = match v {
        Value::Array(s) => s.into_iter().filter_map(|s| match s {
            Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
            _ => None,
        }),
        Value::Map(m) => {
            return m
                .into_iter()
                .flat_map(|(_, e)| entry_ids(Value::Array(vec![Value::Array(vec![Value::Nil, e])])))
                .collect()
        }
        _ => return Vec::new(),
    };
    let mut ids = Vec::new();
    for entries in streams {
        if let Value::Array(entries) = entries {
            for e in entries {
                if let Value::Array(mut e) = e {
                    if let Some(redis::Value::BulkString(id)) = (!e.is_empty()).then(|| e.swap_remove(0)) {
                        ids.push(id);
                    }
                }
            }
        }
    }
    ids
}

async fn raw_read_ack(raw: &Raw, prefix: &str, round: usize) -> f64 {
    let mut conn = raw.clone();
    let key = format!("{prefix}:{{raw-read-{round}}}:s");
    raw_fill(raw, &key, BACKLOG / BATCH).await;
    let _: redis::Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    let mut n = 0usize;
    loop {
        let v: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(BATCH)
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query_async(&mut conn)
            .await
            .unwrap();
        let ids = entry_ids(v);
        if ids.is_empty() {
            break;
        }
        n += ids.len();
        let _: redis::Value = redis::cmd("XACK")
            .arg(&key)
            .arg("g")
            .arg(ids)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(n, BACKLOG, "the raw reader saw every entry");
    n as f64 / started.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------- table

struct Row {
    measure: String,
    ours: Result<String, String>,
    ceiling: String,
    ratio: String,
    target: String,
}

impl Row {
    fn rate(
        measure: impl Into<String>,
        ours: f64,
        ceiling: Option<f64>,
        target: Option<(&str, bool)>,
    ) -> Self {
        Row {
            measure: measure.into(),
            ours: Ok(format!("{ours:.0}/s")),
            ceiling: ceiling.map_or_else(|| "-".into(), |c| format!("{c:.0}/s")),
            ratio: ceiling.map_or_else(|| "-".into(), |c| format!("{:.0}%", 100.0 * ours / c)),
            target: target.map_or_else(|| "-".into(), |(t, ok)| format!("{t} {}", verdict(ok))),
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "HOLDS"
    } else {
        "MISSED"
    }
}

fn print(name: &str, rows: &[Row]) {
    println!("\n### {name} (load average {})\n", load_average());
    println!(
        "| {:<44} | {:>40} | {:>12} | {:>6} | {:<26} |",
        "measure", "ours", "raw ceiling", "ratio", "target"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(46),
        "-".repeat(42),
        "-".repeat(14),
        "-".repeat(8),
        "-".repeat(28)
    );
    for r in rows {
        let ours = match &r.ours {
            Ok(s) => s.clone(),
            Err(e) => format!("FAILED: {e}"),
        };
        println!(
            "| {:<44} | {:>40} | {:>12} | {:>6} | {:<26} |",
            r.measure, ours, r.ceiling, r.ratio, r.target
        );
    }
}

async fn run(t: &Transport, section: Option<&str>) -> cqrs::Result<Vec<Row>> {
    let wanted = |name: &str| section.is_none_or(|s| s == name);
    let bus = t.bus.as_ref();
    let raw = t.raw.as_ref();
    let redis = raw.is_some();
    let mut rows = Vec::new();

    // Warm up: connections, scripts.
    publish_singles(bus, 200).await?;
    if let Some(raw) = raw {
        raw_single_xadd(raw, &t.prefix, 200).await;
    }

    // Publish: ours and the ceiling alternate, so load from other jobs hits both alike.
    if wanted("publish") {
        let (mut singles, mut batches, mut xadd, mut piped) = (vec![], vec![], vec![], vec![]);
        for _ in 0..ROUNDS {
            singles.push(publish_singles(bus, SINGLES).await?);
            if let Some(raw) = raw {
                xadd.push(raw_single_xadd(raw, &t.prefix, SINGLES).await);
            }
            batches.push(publish_batches(bus, BATCHES).await?);
            if let Some(raw) = raw {
                piped.push(raw_pipelined_xadd(raw, &t.prefix, BATCHES).await);
            }
        }
        let (single, batch) = (median(singles), median(batches));
        let xadd = redis.then(|| median(xadd));
        let piped = redis.then(|| median(piped));
        rows.push(Row::rate(
            "publish, 1 message per call",
            single,
            xadd,
            xadd.map(|c| (">= 70% of XADD", single >= 0.7 * c)),
        ));
        rows.push(Row::rate(
            format!("publish, batches of {BATCH}"),
            batch,
            piped,
            redis.then_some((">= 200,000/s", batch >= 200_000.0)),
        ));
    }

    // End-to-end latency.
    if wanted("latency") {
        rows.push(match end_to_end(bus).await? {
            Ok(l) => Row {
                measure: format!("end-to-end at {RATE}/s offered, p50/p95/p99/p99.9"),
                ours: Ok(format!(
                    "{:.0}/{:.0}/{:.0}/{:.0} µs ({:.0}/s)",
                    l.pct[0], l.pct[1], l.pct[2], l.pct[3], l.offered
                )),
                ceiling: "-".into(),
                ratio: "-".into(),
                target: if redis {
                    format!("p99 < 5 ms {}", verdict(l.pct[2] < 5_000.0))
                } else {
                    "-".into()
                },
            },
            Err(e) => Row {
                measure: format!("end-to-end at {RATE}/s offered"),
                ours: Err(e),
                ceiling: "-".into(),
                ratio: "-".into(),
                target: "-".into(),
            },
        });
    }

    // Consumers.
    if !wanted("consume") {
        return Ok(rows);
    }
    let mut read_ack = Vec::new();
    if let Some(raw) = raw {
        for round in 0..ROUNDS {
            read_ack.push(raw_read_ack(raw, &t.prefix, round).await);
        }
    }
    let read_ack = redis.then(|| median(read_ack));
    for consumers in [1, 4] {
        let mut rates = Vec::new();
        let mut failed = None;
        for _ in 0..ROUNDS {
            match consume(bus, consumers).await? {
                Ok(r) => rates.push(r),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let measure = format!("consume, {consumers} consumer(s) x concurrency {CONCURRENCY}, no-op");
        rows.push(match failed {
            None => {
                let r = median(rates);
                Row::rate(
                    measure,
                    r,
                    read_ack,
                    redis.then_some((">= 100,000/s", r >= 100_000.0)),
                )
            }
            Some(e) => Row {
                measure,
                ours: Err(e),
                ceiling: "-".into(),
                ratio: "-".into(),
                target: "-".into(),
            },
        });
    }
    Ok(rows)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "bus_bench: {PAYLOAD}-byte payloads, {KEYS} keys, medians of {ROUNDS} rounds; load average {} at start",
        load_average()
    );
    // An argument keeps only the transports whose name contains it.
    let only = std::env::args().nth(1).filter(|o| o != "all");
    let section = std::env::args().nth(2);
    for t in transports().await {
        let t = match t {
            Ok(t) => t,
            Err(why) => {
                println!("\n{why}");
                continue;
            }
        };
        if only.as_ref().is_some_and(|o| !t.name.contains(o.as_str())) {
            if let Some(cleanup) = t.cleanup {
                let _ = cleanup().await;
            }
            continue;
        }
        let rows = run(&t, section.as_deref()).await;
        if let Some(cleanup) = t.cleanup {
            match cleanup().await {
                Ok(n) => eprintln!("{}: cleanup removed {n} key(s) or schema(s)", t.name),
                Err(e) => eprintln!("{}: cleanup failed: {e}", t.name),
            }
        }
        match rows {
            Ok(rows) => print(&t.name, &rows),
            Err(e) => println!("\n### {}: FAILED: {e}", t.name),
        }
    }
}
