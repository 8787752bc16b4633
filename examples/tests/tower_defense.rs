//! The tower-defence domain gives the same results on memory, PostgreSQL and Redis: only the
//! URL changes.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic with its cause

mod common;

use common::{drop_prefix, drop_schema, postgres, redis, unique};
use examples::tower_defense::{play, Builder, Report};

fn expected_top() -> Vec<Builder> {
    let b = |player: &str, towers, spent| Builder {
        player: player.into(),
        towers,
        spent,
    };
    vec![b("ada", 4, 90), b("grace", 2, 100), b("alan", 1, 30)]
}

fn check(report: &Report) {
    assert_eq!(report.version, 11, "open, 3 joins, 7 towers");
    assert_eq!(report.refused.len(), 3, "{:?}", report.refused);
    assert_eq!(report.top, expected_top());
    assert_eq!(report.profile, ("Ada".to_owned(), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_game_on_memory() {
    let stores = cqrs::connect("memory:").await.unwrap();
    check(&play(&stores, "m1").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_game_on_postgres() {
    let schema = unique("td");
    let stores = postgres(&schema).await;
    check(&play(&stores, "p1").await.unwrap());
    stores.events.close().await.unwrap();
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_game_on_redis() {
    let prefix = unique("td");
    let stores = redis(&prefix).await;
    check(&play(&stores, "r1").await.unwrap());
    drop_prefix(&prefix).await;
}
