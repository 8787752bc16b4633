//! Rough figures for the Pub/Sub bus and the FIFO queues on one server.
//!
//! ```text
//! cargo run --release -p backend-redis --example fifo_pubsub_bench
//! ```
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`); everything lives under a fresh
//! `bench_<uuid>` prefix and the queues are purged at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use backend_redis::{FifoOptions, FifoQueue, RedisPubSubBus, RedisStoreOptions};
use cqrs_core::{
    bus::{handler_fn, Delivery, EventBus, Message, SubscriptionSpec},
    ContentType,
};

const TASKS: usize = 8;

#[tokio::main]
async fn main() -> cqrs_core::Result<()> {
    let prefix = format!("bench_{}", uuid::Uuid::now_v7().simple());
    let options = RedisStoreOptions::from_env().prefix(prefix);

    // FIFO: 8 producers x 2,500 enqueues into 4 queues, then drain, then positions.
    let q = Arc::new(FifoQueue::connect(options.clone(), FifoOptions::new()).await?);
    let per_task = 2_500;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..TASKS {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per_task {
                q.enqueue(&format!("q{}", n % 4), &format!("p{p}-{n}"), "{}")
                    .await?;
            }
            Ok::<_, cqrs_core::Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("producer")?;
    }
    let total = (TASKS * per_task) as f64;
    println!(
        "fifo enqueue, {TASKS} tasks: {:.0}/s",
        total / started.elapsed().as_secs_f64()
    );
    let len = q.len("q0").await?;
    let started = Instant::now();
    let probes: u32 = 200;
    for i in 0..probes {
        q.position(
            "q0",
            &format!("p{}-{}", i as usize % TASKS, 4 * (per_task / 4 - 1)),
        )
        .await?;
    }
    println!(
        "fifo position near the tail of a {len}-entry queue: {:.0} us",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(probes)
    );
    let started = Instant::now();
    let mut drained = 0u32;
    for i in 0..4 {
        while q.dequeue(&format!("q{i}")).await?.is_some() {
            drained += 1;
        }
    }
    println!(
        "fifo dequeue, 1 task: {:.0}/s",
        f64::from(drained) / started.elapsed().as_secs_f64()
    );
    for i in 0..4 {
        q.purge(&format!("q{i}")).await?;
    }

    // Pub/Sub: 8 publishers x 2,500 single messages, one subscriber.
    let bus = RedisPubSubBus::connect(options).await?;
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let handler = handler_fn(move |_d: Delivery| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    });
    let sub = bus
        .subscribe(
            SubscriptionSpec::new("bench", "g").concurrency(4),
            Arc::new(handler),
        )
        .await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per_task {
                let m = Message::new(format!("k{n}"), ContentType::Json, r#"{"n":1}"#);
                bus.publish("bench", vec![m]).await?;
            }
            Ok::<_, cqrs_core::Error>(())
        }));
    }
    for t in tasks {
        t.await.expect("publisher")?;
    }
    let published = started.elapsed();
    let want = (TASKS * per_task) as u64;
    while seen.load(Ordering::Relaxed) < want && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let handled = seen.load(Ordering::Relaxed);
    println!(
        "pubsub publish, {TASKS} tasks: {:.0}/s; handled {handled}/{want} in {:.2} s ({:.0}/s)",
        want as f64 / published.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        handled as f64 / started.elapsed().as_secs_f64()
    );
    sub.stop().await?;
    bus.close().await?;
    Ok(())
}
