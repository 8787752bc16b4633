//! A read model fed through the event bus by the relay, with a handler that fails sometimes:
//! retries, a dead letter with the order's later events parked behind it, and the
//! subscription's metrics at the end (see `examples::bus_read_model`).
//!
//! ```text
//! cargo run -p examples --bin bus_read_model                       # in memory
//! cargo run -p examples --bin bus_read_model -- redis://127.0.0.1:6379
//! cargo run -p examples --bin bus_read_model -- postgres://postgres@127.0.0.1:5432/test
//! ```
//! The URL may also come from `CQRS_URL`. Topic, collection and checkpoint names get a
//! per-run suffix, so runs never see each other's data.

use examples::bus_read_model::{run, Names};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), cqrs::BoxError> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("CQRS_URL").ok())
        .unwrap_or_else(|| "memory:".to_owned());
    cqrs::migrate(&url).await?;
    let stores = cqrs::connect(&url).await?;
    let bus = cqrs::connect_bus(&url).await?;
    let names = Names::with_suffix(&format!("_{}", uuid::Uuid::now_v7().simple()));
    let report = run(&stores, bus, &names).await?;

    println!("read model {}:", names.collection);
    for (order, total) in &report.totals {
        println!("  {order:<10} total {total:>5}");
    }
    println!("dead letters of group order-totals:");
    for (key, reason) in &report.dead_letters {
        println!("  {key:<10} {reason}");
    }
    let m = report.metrics;
    println!(
        "metrics: published {}, handled {}, failed {}, retried {}, dead-lettered {}, in flight {}, lag {}",
        m.published, m.handled, m.failed, m.retried, m.dead_lettered, m.in_flight, m.lag
    );
    println!(
        "handler latency: p50 {:?}, p95 {:?}, p99 {:?}",
        m.latency.p50, m.latency.p95, m.latency.p99
    );
    Ok(())
}
