//! Schema evolution: one event type through three versions, old history read unchanged
//! through upcasters, then the offline rewrite that retires the oldest upcaster.
//!
//! Run with `cargo run -p examples --bin schema_evolution`.
//!
//! - v1 `PlayerJoined { name }`: the first release.
//! - v2 `PlayerJoined { name, team }`: teams arrived; old players were on "red".
//! - v3 `PlayerEntered { player: { name }, team }`: renamed when spectators were added.

use std::sync::Arc;

use cqrs::{
    aggregate::{Aggregate, EventSourcedRepository},
    runtime::rewrite::rewrite_stream,
    upcast::UpcasterChain,
    EventData, ExpectedVersion,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Lobby {
    players: Vec<(String, String)>,
}

#[derive(Debug, Deserialize, Serialize)]
struct Player {
    name: String,
}

/// Today's events: only the latest version exists in code.
#[derive(Debug, Serialize, Deserialize)]
enum LobbyEvent {
    PlayerEntered { player: Player, team: String },
}

#[derive(Debug, thiserror::Error)]
#[error("lobby commands are not used in this example")]
struct NoCommands;

impl Aggregate for Lobby {
    type Command = ();
    type Event = LobbyEvent;
    type Error = NoCommands;
    const KIND: &'static str = "lobby";

    fn handle(&self, _: ()) -> Result<Vec<LobbyEvent>, NoCommands> {
        Err(NoCommands)
    }

    fn apply(&mut self, event: &LobbyEvent) {
        let LobbyEvent::PlayerEntered { player, team } = event;
        self.players.push((player.name.clone(), team.clone()));
    }
}

fn upcasters() -> cqrs::Result<UpcasterChain> {
    UpcasterChain::builder()
        .json_step("PlayerJoined", 1, "PlayerJoined", |mut v| {
            v["team"] = json!("red");
            Ok(v)
        })
        .json_step("PlayerJoined", 2, "PlayerEntered", |v| {
            Ok(json!({ "player": { "name": v["name"] }, "team": v["team"] }))
        })
        .build()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stores = cqrs::connect("memory:").await?;
    let chain = Arc::new(upcasters()?);
    let repo = EventSourcedRepository::<Lobby>::new(stores.events.clone()).with_upcasters(chain.clone());

    // History written by three releases of the application, stored as written.
    let old = repo.stream_id("42")?;
    let history = vec![
        EventData::json("PlayerJoined", &json!({ "name": "ada" }))?,
        EventData::json("PlayerJoined", &json!({ "name": "grace", "team": "blue" }))?.with_schema_version(2),
        EventData::json(
            "PlayerEntered",
            &json!({ "player": { "name": "alan" }, "team": "red" }),
        )?
        .with_schema_version(3),
    ];
    stores
        .events
        .append(&old, ExpectedVersion::NoStream, history)
        .await?;
    let lobby = repo.load("42").await?;
    println!("1. loaded through upcasters: {:?}", lobby.state.players);
    for e in stores.events.read_stream(&old, 1, 10).await? {
        println!(
            "   stored unchanged: v{} {} {}",
            e.data.schema_version,
            e.data.event_type,
            String::from_utf8_lossy(&e.data.payload)
        );
    }

    // Retiring the v1 and v2 steps: copy the stream at the latest version, then read the copy
    // with no upcaster at all.
    let new = repo.stream_id("42-v3")?;
    let written = rewrite_stream(&stores, &chain, &old, &new, 100).await?;
    let again = rewrite_stream(&stores, &chain, &old, &new, 100).await?;
    println!("2. rewrote {written} events into {new} (a second run writes {again})");
    let plain = EventSourcedRepository::<Lobby>::new(stores.events.clone());
    let copy = plain.load("42-v3").await?;
    println!("3. the copy loads without upcasters: {:?}", copy.state.players);
    assert_eq!(copy.state.players, lobby.state.players);
    for e in stores.events.read_stream(&new, 1, 10).await? {
        println!(
            "   rewritten: v{} {} {}",
            e.data.schema_version,
            e.data.event_type,
            String::from_utf8_lossy(&e.data.payload)
        );
    }
    Ok(())
}
