//! The bus-fed read model gives the same results on memory, PostgreSQL and Redis: retries,
//! one dead letter with the order's later events parked behind it, exact totals.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic with its cause

mod common;

use common::{drop_prefix, drop_schema, pg_url, postgres, redis, redis_url, unique};
use examples::bus_read_model::{expected_total, run, Names, Report, BAD_ORDER, ITEMS, ORDERS};

fn check(report: &Report) {
    let m = report.metrics;
    let all = (ORDERS * ITEMS) as u64;
    assert_eq!((m.handled, m.dead_lettered), (all - 3, 3), "{m:?}");
    // Every third event fails its first attempt (ORDERS of them, the bad order's included).
    assert_eq!(m.retried, ORDERS as u64, "{m:?}");
    assert!(m.latency.p99 >= m.latency.p50 && m.latency.p50 > std::time::Duration::ZERO);
    let bad = format!("order-{BAD_ORDER}");
    assert_eq!(report.dead_letters.len(), 3, "{:?}", report.dead_letters);
    assert!(report.dead_letters.iter().all(|(key, _)| *key == bad));
    assert!(
        report.dead_letters[0].1.starts_with("permanent"),
        "{:?}",
        report.dead_letters
    );
    assert!(report.dead_letters[1..]
        .iter()
        .all(|(_, why)| why.starts_with("parked")));
    let expected: Vec<(String, i64)> = (0..ORDERS)
        .map(|o| (format!("order-{o}"), expected_total(o)))
        .collect();
    assert_eq!(report.totals, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_read_model_on_memory() {
    let stores = cqrs::connect("memory:").await.unwrap();
    let bus = cqrs::connect_bus("memory:").await.unwrap();
    check(&run(&stores, bus, &Names::with_suffix("")).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_read_model_on_postgres() {
    let schema = unique("busrm");
    let stores = postgres(&schema).await;
    let bus = cqrs::connect_bus(&pg_url(&schema)).await.unwrap();
    check(&run(&stores, bus.clone(), &Names::with_suffix("")).await.unwrap());
    bus.close().await.unwrap();
    stores.events.close().await.unwrap();
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_read_model_on_redis() {
    let prefix = unique("busrm");
    let stores = redis(&prefix).await;
    let bus = cqrs::connect_bus(&redis_url(&prefix)).await.unwrap();
    check(&run(&stores, bus.clone(), &Names::with_suffix("")).await.unwrap());
    bus.close().await.unwrap();
    drop_prefix(&prefix).await;
}
