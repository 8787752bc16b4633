//! A `RedisBus` consumer workload for profiling, on its own: one topic, a backlog, and
//! consumers with a no-op handler, as `bus_bench` measures them.
//!
//! ```text
//! cargo build --release -p backend-redis --example bus_profile
//! bus_profile [messages] [consumers] [concurrency]   # REDIS_URL, default redis://127.0.0.1:6379
//! ```
//!
//! Publishes `messages` (default 20,000) 256-byte messages over 1,000 keys in batches of 100,
//! prints `ready` and waits for a line on stdin, so a profiler can zero its counters
//! (`callgrind_control -z`, `CONFIG RESETSTAT` on a private server) before the measured part;
//! then subscribes `consumers` (default 1) consumers of concurrency `concurrency` (default
//! 64), waits until every message is acknowledged, prints `done` and the rate, stops them and
//! deletes its keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::print_stdout
)]

use std::{
    io::BufRead,
    sync::Arc,
    time::{Duration, Instant},
};

use backend_redis::{RedisBus, RedisBusOptions, RedisStoreOptions};
use cqrs_core::{
    bus::{handler_fn, Delivery, EventBus, Message, Subscription, SubscriptionSpec},
    ContentType,
};

const BATCH: usize = 100;
const KEYS: usize = 1_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let messages: usize = args.next().map_or(20_000, |a| a.parse().unwrap());
    let consumers: usize = args.next().map_or(1, |a| a.parse().unwrap());
    let concurrency: usize = args.next().map_or(64, |a| a.parse().unwrap());
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| backend_redis::DEFAULT_URL.to_owned());
    let prefix = format!("prof_{}", uuid::Uuid::now_v7().simple());
    let bus = RedisBus::open(
        RedisStoreOptions::new(&url)
            .prefix(&prefix)
            .response_timeout(Duration::from_secs(60)),
        RedisBusOptions::new(),
    )
    .await
    .unwrap();
    let topic = "profile";
    for b in 0..messages.div_ceil(BATCH) {
        let batch = (b * BATCH..((b + 1) * BATCH).min(messages))
            .map(|i| Message::new(format!("key-{}", i % KEYS), ContentType::Opaque, vec![b'x'; 256]))
            .collect();
        bus.publish(topic, batch).await.unwrap();
    }
    println!("ready");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    let started = Instant::now();
    let mut subs: Vec<Box<dyn Subscription>> = Vec::new();
    for _ in 0..consumers {
        let handler = handler_fn(|_: Delivery| async { Ok(()) });
        let spec = SubscriptionSpec::new(topic, "g").concurrency(concurrency);
        subs.push(bus.subscribe(spec, Arc::new(handler)).await.unwrap());
    }
    while subs.iter().map(|s| s.metrics().handled).sum::<u64>() < messages as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    println!("done: {rate:.0} messages/s");
    for s in subs {
        s.stop().await.unwrap();
    }
    bus.destroy().await.unwrap();
}
