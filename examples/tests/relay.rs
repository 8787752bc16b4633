//! The relay behaviours (`conformance::relay`) on every backend, each store and bus in a
//! namespace of its own: a relay killed mid-run loses nothing, a stalled leader never
//! publishes beside its successor, and a command's metadata reaches the bus handlers.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic with its cause

mod common;

use common::{drop_prefix, drop_schema, pg_url, postgres, redis, redis_url, unique};

/// Runs one behaviour on `stores` and `bus` under a fresh label, then closes the bus.
macro_rules! check {
    ($behaviour:path, $stores:expr, $bus:expr) => {{
        let (stores, bus) = ($stores, $bus);
        let label = uuid::Uuid::now_v7().simple().to_string();
        if let Err(failure) = $behaviour(&stores, bus.clone(), &label).await {
            panic!("{failure}");
        }
        bus.close().await.unwrap();
    }};
}

macro_rules! on_every_backend {
    ($($name:ident: $behaviour:path),* $(,)?) => {
        /// On the in-memory backend and bus.
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let stores = cqrs::connect("memory:").await.unwrap();
                    let bus = cqrs::connect_bus("memory:").await.unwrap();
                    check!($behaviour, stores, bus);
                }
            )*
        }
        /// On PostgreSQL (stores and outbox bus) in a schema of its own.
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let schema = unique("relay");
                    let stores = postgres(&schema).await;
                    let bus = cqrs::connect_bus(&pg_url(&schema)).await.unwrap();
                    check!($behaviour, stores, bus);
                    drop_schema(&schema).await;
                }
            )*
        }
        /// On Redis (stores and Streams bus) under a key prefix of its own.
        mod redis {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let prefix = unique("relay");
                    let stores = redis(&prefix).await;
                    let bus = cqrs::connect_bus(&redis_url(&prefix)).await.unwrap();
                    check!($behaviour, stores, bus);
                    drop_prefix(&prefix).await;
                }
            )*
        }
    };
}

on_every_backend! {
    killed_relay_loses_nothing: conformance::relay::killed_relay_loses_nothing,
    stalled_leader_never_publishes_alongside_its_successor:
        conformance::relay::stalled_leader_never_publishes_alongside_its_successor,
    command_metadata_reaches_bus_handlers: conformance::relay::command_metadata_reaches_bus_handlers,
}
