//! A batch-append workload for profiling, ours or the raw ceiling of `bench`, on its own.
//!
//! ```text
//! cargo build --release -p backend-redis --example append_profile
//! append_profile ours|ceiling [batches] [size]      # REDIS_URL, default redis://127.0.0.1:6379
//! ```
//!
//! Opens the store (or loads the ceiling script), appends one warm-up batch, prints `ready`
//! and waits for a line on stdin, so a profiler attached to the server can zero its counters
//! (`callgrind_control -z`) before the measured part; then appends `batches` batches of
//! `size` 200-byte events to one stream, prints `done` and the rate, waits for a second line
//! (or the end of stdin), so the profiler can dump its counters before the clean-up, and
//! deletes its keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::{io::BufRead, time::Instant};

use backend_redis::{RedisBackend, RedisStoreOptions};
use cqrs_core::{ContentType, EventData, EventStore, ExpectedVersion, StreamId};

/// The raw ceiling script, the same as `bench` measures.
const CEILING: &str = include_str!("ceiling.lua");
const PAYLOAD: usize = 200;

fn payload() -> Vec<u8> {
    let mut p = br#"{"order":"o-0000001","sku":"#.to_vec();
    p.resize(PAYLOAD - 1, b'x');
    p.push(b'}');
    p
}

fn wait_for_go() {
    println!("ready");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "ours".into());
    let batches: usize = args.next().map_or(300, |a| a.parse().unwrap());
    let size: usize = args.next().map_or(100, |a| a.parse().unwrap());
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| backend_redis::DEFAULT_URL.to_owned());
    let prefix = format!("prof_{}", uuid::Uuid::now_v7().simple());
    let store = RedisBackend::open(RedisStoreOptions::new(&url).prefix(&prefix))
        .await
        .unwrap();
    let started;
    match mode.as_str() {
        "ours" => {
            let stream = StreamId::new("s").unwrap();
            let event = || EventData::new("OrderPlaced", ContentType::Json, payload());
            let mut version = 0u64;
            let append = async |version: &mut u64| {
                let events = (0..size).map(|_| event()).collect();
                store
                    .append(&stream, ExpectedVersion::Exact(*version), events)
                    .await
                    .unwrap();
                *version += size as u64;
            };
            append(&mut version).await;
            wait_for_go();
            started = Instant::now();
            for _ in 0..batches {
                append(&mut version).await;
            }
        }
        "ceiling" => {
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let script = redis::Script::new(CEILING);
            let head = format!("{prefix}:{{c}}:h");
            let events = format!("{prefix}:{{c}}:e");
            let p = payload();
            let mut version = 0usize;
            let mut append = async |version: &mut usize| {
                let mut inv = script.prepare_invoke();
                inv.key(&head).key(&events).arg(version.to_string()).arg(size);
                for _ in 0..size {
                    inv.arg(&p[..]);
                }
                let ok: i64 = inv.invoke_async(&mut conn).await.unwrap();
                assert_eq!(ok, 1);
                *version += size;
            };
            append(&mut version).await;
            wait_for_go();
            started = Instant::now();
            for _ in 0..batches {
                append(&mut version).await;
            }
        }
        other => panic!("unknown mode {other}: ours or ceiling"),
    }
    let rate = (batches * size) as f64 / started.elapsed().as_secs_f64();
    println!("done {rate:.0} events/s");
    wait_for_go();
    store.destroy().await.unwrap();
}
