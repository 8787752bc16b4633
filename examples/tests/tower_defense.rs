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

/// The session's rules and the `builders` read model, without a backend: given events, when
/// a command, then events or the refusal; given events, then documents.
mod domain {
    use cqrs::{
        runtime::RunnerOptions,
        testing::{AggregateFixture, ProjectionFixture},
        Document,
    };
    use examples::tower_defense::{Builders, GameCommand, GameEvent, GameSession, TowerKind, BUILDERS};
    use serde_json::json;

    fn opened_with(players: &[&str]) -> Vec<GameEvent> {
        let mut events = vec![GameEvent::Opened {
            map: "river-bend".into(),
        }];
        events.extend(
            players
                .iter()
                .map(|p| GameEvent::PlayerJoined { player: (*p).into() }),
        );
        events
    }

    fn placed(player: &str, kind: TowerKind, x: i32, y: i32) -> GameEvent {
        GameEvent::TowerPlaced {
            player: player.into(),
            kind,
            x,
            y,
        }
    }

    fn place(player: &str, kind: TowerKind, x: i32, y: i32) -> GameCommand {
        GameCommand::Place {
            player: player.into(),
            kind,
            x,
            y,
        }
    }

    #[test]
    fn a_session_opens_once() {
        AggregateFixture::<GameSession>::given_no_events()
            .when(GameCommand::Open("river-bend".into()))
            .then_expect_events([GameEvent::Opened {
                map: "river-bend".into(),
            }]);
        AggregateFixture::<GameSession>::given(opened_with(&[]))
            .when(GameCommand::Open("elsewhere".into()))
            .then_expect_error_message("the session is already open");
        AggregateFixture::<GameSession>::given_no_events()
            .when(GameCommand::Join("ada".into()))
            .then_expect_error_message("the session is not open yet");
    }

    #[test]
    fn players_join_once_and_up_to_four() {
        AggregateFixture::<GameSession>::given(opened_with(&["ada"]))
            .when(GameCommand::Join("grace".into()))
            .then_expect_events([GameEvent::PlayerJoined {
                player: "grace".into(),
            }]);
        AggregateFixture::<GameSession>::given(opened_with(&["ada"]))
            .when(GameCommand::Join("ada".into()))
            .then_expect_events([]);
        AggregateFixture::<GameSession>::given(opened_with(&["a", "b", "c", "d"]))
            .when(GameCommand::Join("e".into()))
            .then_expect_error_message("the session is full");
    }

    #[test]
    fn towers_need_a_player_a_free_cell_and_the_gold() {
        let with = |towers: Vec<GameEvent>| {
            let mut events = opened_with(&["ada", "grace"]);
            events.extend(towers);
            events
        };
        AggregateFixture::<GameSession>::given(with(vec![]))
            .when(place("ada", TowerKind::Archer, 1, 1))
            .then_expect_events([placed("ada", TowerKind::Archer, 1, 1)]);
        AggregateFixture::<GameSession>::given(with(vec![]))
            .when(place("mallory", TowerKind::Archer, 9, 9))
            .then_expect_error_message("mallory has not joined");
        AggregateFixture::<GameSession>::given(with(vec![placed("ada", TowerKind::Archer, 1, 1)]))
            .when(place("grace", TowerKind::Cannon, 1, 1))
            .then_expect_error_message("cell (1, 1) is taken");
        // 100 gold: two cannons spend it all, a third tower is refused.
        let cannons = vec![
            placed("grace", TowerKind::Cannon, 3, 3),
            placed("grace", TowerKind::Cannon, 6, 6),
        ];
        AggregateFixture::<GameSession>::given(with(cannons))
            .when(place("grace", TowerKind::Archer, 7, 7))
            .then_expect_error_message("grace has 0 gold, the tower costs 20");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builders_count_towers_and_gold_per_player() {
        let mut events = opened_with(&["ada", "alan"]);
        events.push(placed("ada", TowerKind::Archer, 1, 1));
        events.push(placed("alan", TowerKind::Frost, 8, 2));
        events.push(placed("ada", TowerKind::Cannon, 2, 2));
        let doc = |player: &str, towers: i64, spent: i64, version: u64| {
            Document::new(
                format!("s1/{player}"),
                json!({ "session": "s1", "player": player, "towers": towers, "spent": spent, "version": version }),
            )
        };
        // Batches of one, as `play` runs it: the projection reads the document it wrote last.
        ProjectionFixture::with_stores(|stores| Builders::new(stores.reads.clone()))
            .options(RunnerOptions::new().batch_size(1))
            .given("session-s1", events)
            .given("session-s2", opened_with(&[]))
            .then_expect_documents(BUILDERS, [doc("ada", 2, 70, 6), doc("alan", 1, 30, 5)])
            .await;
    }
}
