//! Projection runner benchmark: events/s applied to a read store on each backend, and the
//! reader's lag under a steady write load.
//!
//! ```text
//! cargo run --release -p examples --bin projection_bench
//! ```
//!
//! For memory, PostgreSQL (`DATABASE_URL`, default local) and Redis (`REDIS_URL`, default
//! local): seeds 100,000 events (256-byte payloads), then times a runner applying them with
//! one upsert per event (documents under 1 KB, one index) in batches of 500; then appends
//! 2,000 events/s for 5 s while the runner follows and reports the reader lag (time from an
//! event's `recorded_at` to the commit that applied it). Each backend works in a schema or key
//! prefix of its own, left behind for inspection only if the run fails.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use cqrs::async_trait;
use cqrs::{
    runtime::{Projection, ProjectionRunner, RunnerOptions, RunnerState},
    BoxError, Change, ContentType, Document, EventData, EventFilter, ExpectedVersion, FieldType, ReadStore,
    RecordedEvent, Stores, StreamId,
};
use serde_json::json;

const EVENTS: u64 = 100_000;
const STREAMS: u64 = 100;
const RATE: u64 = 2_000;
const LOAD_SECONDS: u64 = 5;

struct Counters;

#[async_trait]
impl Projection for Counters {
    fn name(&self) -> &str {
        "bench"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::stream_prefix("bench-")
    }
    fn collections(&self) -> Vec<String> {
        vec!["bench".into()]
    }
    async fn init(&self, reads: &dyn ReadStore) -> cqrs::Result<()> {
        reads.ensure_index("bench", "n", FieldType::I64).await
    }
    async fn handle(&self, e: &RecordedEvent) -> Result<Vec<Change>, BoxError> {
        let body = json!({ "stream": e.stream_id.as_str(), "version": e.version, "n": e.version % 97, "type": e.data.event_type });
        let id = format!("{}#{}", e.stream_id, e.version);
        Ok(vec![Change::Upsert {
            collection: "bench".into(),
            document: Document::new(id, body),
        }])
    }
}

fn event(i: u64) -> EventData {
    let payload = format!("{{\"i\":{i:>10},\"pad\":\"{}\"}}", "x".repeat(234));
    EventData::new("Ticked", ContentType::Json, payload)
}

async fn seed(stores: &Stores) -> cqrs::Result<()> {
    let per = EVENTS / STREAMS;
    for s in 0..STREAMS {
        let id = StreamId::new(format!("bench-{s}"))?;
        let mut v = 0;
        while v < per {
            let n = (per - v).min(500);
            stores
                .events
                .append(&id, ExpectedVersion::Exact(v), (v..v + n).map(event).collect())
                .await?;
            v += n;
        }
    }
    Ok(())
}

struct Row {
    backend: &'static str,
    applied_per_s: f64,
    lag_p50: u64,
    lag_p99: u64,
    lag_max: u64,
}

async fn measure(
    backend: &'static str,
    stores: Stores,
) -> Result<Row, Box<dyn std::error::Error + Send + Sync>> {
    seed(&stores).await?;
    let options = RunnerOptions::new()
        .batch_size(500)
        .idle_poll(Duration::from_millis(5));
    let started = Instant::now();
    let runner = ProjectionRunner::new(&stores, Arc::new(Counters))
        .options(options)
        .start();
    runner
        .wait_until(|s| s.handled >= EVENTS, Duration::from_secs(600))
        .await?;
    let applied_per_s = EVENTS as f64 / started.elapsed().as_secs_f64();
    runner
        .wait_until(|s| s.state == RunnerState::Running, Duration::from_secs(60))
        .await?;

    // Steady load: RATE events/s in ticks of 10 ms, while sampling the runner's lag.
    let writer = {
        let stores = stores.clone();
        tokio::spawn(async move {
            let id = StreamId::new("bench-live")?;
            let per_tick = RATE / 100;
            let mut v = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for _ in 0..LOAD_SECONDS * 100 {
                tick.tick().await;
                stores
                    .events
                    .append(
                        &id,
                        ExpectedVersion::Exact(v),
                        (v..v + per_tick).map(event).collect(),
                    )
                    .await?;
                v += per_tick;
            }
            Ok::<u64, cqrs::Error>(v)
        })
    };
    let mut lags = Vec::new();
    let mut sample = tokio::time::interval(Duration::from_millis(20));
    while !writer.is_finished() {
        sample.tick().await;
        lags.push(runner.status().lag_ms);
    }
    let written = writer.await??;
    runner
        .wait_until(|s| s.handled >= EVENTS + written, Duration::from_secs(60))
        .await?;
    runner.stop().await?;
    lags.sort_unstable();
    // Nearest-rank percentile on the sorted samples, in integer arithmetic.
    let pick = |percent: usize| {
        lags.get(lags.len().saturating_sub(1) * percent / 100)
            .copied()
            .unwrap_or(0)
    };
    Ok(Row {
        backend,
        applied_per_s,
        lag_p50: pick(50),
        lag_p99: pick(99),
        lag_max: lags.last().copied().unwrap_or(0),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let pg_base =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis_base = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let schema = format!("bench_proj_{tag}");
    let prefix = format!("bench_proj_{tag}");
    let pg_url = format!(
        "{pg_base}{}schema={schema}",
        if pg_base.contains('?') { '&' } else { '?' }
    );
    let redis_url = format!(
        "{redis_base}{}prefix={prefix}",
        if redis_base.contains('?') { '&' } else { '?' }
    );

    let mut rows = vec![measure("memory", cqrs::connect("memory:").await?).await?];
    cqrs::migrate(&pg_url).await?;
    rows.push(measure("postgres", cqrs::connect(&pg_url).await?).await?);
    rows.push(measure("redis", cqrs::connect(&redis_url).await?).await?);

    println!("projection runner: {EVENTS} events applied in batches of 500 (one upsert each, one index),");
    println!("then {RATE} events/s for {LOAD_SECONDS} s while following");
    println!("| backend  | applied events/s | lag p50 ms | lag p99 ms | lag max ms |");
    println!("|----------|------------------|------------|------------|------------|");
    for r in &rows {
        println!(
            "| {:<8} | {:>16.0} | {:>10} | {:>10} | {:>10} |",
            r.backend, r.applied_per_s, r.lag_p50, r.lag_p99, r.lag_max
        );
    }

    let pool = sqlx::PgPool::connect(&pg_base).await?;
    sqlx::query(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&pool)
        .await?;
    let client = redis::Client::open(redis_base)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await?;
    if !keys.is_empty() {
        let _: () = redis::cmd("UNLINK").arg(&keys).query_async(&mut conn).await?;
    }
    Ok(())
}
