//! A tower-defence game session: the same code on every backend, only the URL changes.
//!
//! - `GameSession` is event-sourced: players join, towers are placed on free cells while the
//!   player has the gold for them.
//! - `PlayerProfile` is state-based: only its current state is stored.
//! - The `builders` read model is kept current by the projection runner and queried through
//!   the query dispatcher (`TopBuilders`).

use std::{sync::Arc, time::Duration};

use cqrs::async_trait;
use cqrs::{
    aggregate::{Aggregate, EventSourcedRepository, RepositoryError, StateRepository},
    dispatch::QueryDispatcher,
    runtime::{Projection, ProjectionRunner, RunnerOptions},
    snapshot_policy::SnapshotPolicy,
    BoxError, Change, Direction, Document, FieldType, Filter, Query, ReadStore, RecordedEvent, Stores, Value,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Gold each player starts with.
pub const START_GOLD: i64 = 100;
/// Players per session.
pub const MAX_PLAYERS: usize = 4;

/// Kinds of tower and what they cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TowerKind {
    /// Cheap, short range.
    Archer,
    /// Slows enemies.
    Frost,
    /// Expensive, splash damage.
    Cannon,
}

impl TowerKind {
    /// Gold it costs.
    pub const fn cost(self) -> i64 {
        match self {
            TowerKind::Archer => 20,
            TowerKind::Frost => 30,
            TowerKind::Cannon => 50,
        }
    }
}

/// A game session.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct GameSession {
    map: String,
    players: Vec<(String, i64)>,
    towers: Vec<(i32, i32)>,
}

/// What a game session records.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum GameEvent {
    /// The session opened on a map.
    Opened {
        /// The map.
        map: String,
    },
    /// A player joined with the starting gold.
    PlayerJoined {
        /// The player.
        player: String,
    },
    /// A tower was placed.
    TowerPlaced {
        /// Who placed it.
        player: String,
        /// Its kind.
        kind: TowerKind,
        /// Cell column.
        x: i32,
        /// Cell row.
        y: i32,
    },
}

/// What players ask a session to do.
#[derive(Debug, Clone)]
pub enum GameCommand {
    /// Open the session on a map.
    Open(String),
    /// Join the session.
    Join(String),
    /// Place a tower.
    Place {
        /// Who places it.
        player: String,
        /// Its kind.
        kind: TowerKind,
        /// Cell column.
        x: i32,
        /// Cell row.
        y: i32,
    },
}

/// Why a session refused a command.
#[derive(Debug, thiserror::Error)]
pub enum GameError {
    /// Opened twice, or used before opening.
    #[error("the session is {0}")]
    WrongPhase(&'static str),
    /// Already 4 players.
    #[error("the session is full")]
    Full,
    /// Not a player of this session.
    #[error("{0} has not joined")]
    NotJoined(String),
    /// The cell holds a tower.
    #[error("cell ({0}, {1}) is taken")]
    CellTaken(i32, i32),
    /// Not enough gold.
    #[error("{player} has {gold} gold, the tower costs {cost}")]
    NotEnoughGold {
        /// The player.
        player: String,
        /// Their gold.
        gold: i64,
        /// The price.
        cost: i64,
    },
}

impl Aggregate for GameSession {
    type Command = GameCommand;
    type Event = GameEvent;
    type Error = GameError;
    const KIND: &'static str = "session";

    fn handle(&self, command: GameCommand) -> Result<Vec<GameEvent>, GameError> {
        let opened = !self.map.is_empty();
        match command {
            GameCommand::Open(_) if opened => Err(GameError::WrongPhase("already open")),
            GameCommand::Open(map) => Ok(vec![GameEvent::Opened { map }]),
            _ if !opened => Err(GameError::WrongPhase("not open yet")),
            GameCommand::Join(player) if self.players.iter().any(|(p, _)| *p == player) => Ok(vec![]),
            GameCommand::Join(_) if self.players.len() >= MAX_PLAYERS => Err(GameError::Full),
            GameCommand::Join(player) => Ok(vec![GameEvent::PlayerJoined { player }]),
            GameCommand::Place { player, kind, x, y } => {
                let Some((_, gold)) = self.players.iter().find(|(p, _)| *p == player) else {
                    return Err(GameError::NotJoined(player));
                };
                if self.towers.contains(&(x, y)) {
                    return Err(GameError::CellTaken(x, y));
                }
                if *gold < kind.cost() {
                    return Err(GameError::NotEnoughGold {
                        player,
                        gold: *gold,
                        cost: kind.cost(),
                    });
                }
                Ok(vec![GameEvent::TowerPlaced { player, kind, x, y }])
            }
        }
    }

    fn apply(&mut self, event: &GameEvent) {
        match event {
            GameEvent::Opened { map } => self.map.clone_from(map),
            GameEvent::PlayerJoined { player } => self.players.push((player.clone(), START_GOLD)),
            GameEvent::TowerPlaced { player, kind, x, y } => {
                if let Some((_, gold)) = self.players.iter_mut().find(|(p, _)| p == player) {
                    *gold -= kind.cost();
                }
                self.towers.push((*x, *y));
            }
        }
    }
}

/// A player's profile: state-based, no events kept.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PlayerProfile {
    /// Display name.
    pub name: String,
    /// Sessions played.
    pub sessions: u32,
}

/// What a profile records (applied, then dropped).
#[derive(Debug, Serialize, Deserialize)]
pub enum ProfileEvent {
    /// Named.
    Named(String),
    /// Played one more session.
    Played,
}

/// Profile commands.
#[derive(Debug, Clone)]
pub enum ProfileCommand {
    /// Set the name (once).
    Register(String),
    /// Count a session.
    Played,
}

/// Profiles never refuse.
#[derive(Debug, thiserror::Error)]
#[error("never")]
pub struct Never;

impl Aggregate for PlayerProfile {
    type Command = ProfileCommand;
    type Event = ProfileEvent;
    type Error = Never;
    const KIND: &'static str = "profile";

    fn handle(&self, command: ProfileCommand) -> Result<Vec<ProfileEvent>, Never> {
        Ok(match command {
            ProfileCommand::Register(name) if self.name.is_empty() => vec![ProfileEvent::Named(name)],
            ProfileCommand::Register(_) => vec![],
            ProfileCommand::Played => vec![ProfileEvent::Played],
        })
    }

    fn apply(&mut self, event: &ProfileEvent) {
        match event {
            ProfileEvent::Named(name) => self.name.clone_from(name),
            ProfileEvent::Played => self.sessions += 1,
        }
    }
}

/// The collection of the `builders` read model.
pub const BUILDERS: &str = "builders";

/// Keeps one document per (session, player): towers placed and gold spent.
#[derive(Debug)]
pub struct Builders {
    reads: Arc<dyn ReadStore>,
}

impl Builders {
    /// The projection over `reads`, the store it writes to: it reads its own documents back.
    pub fn new(reads: Arc<dyn ReadStore>) -> Self {
        Builders { reads }
    }
}

#[async_trait]
impl Projection for Builders {
    fn name(&self) -> &str {
        "builders"
    }

    fn filter(&self) -> cqrs::EventFilter {
        cqrs::EventFilter::stream_prefix("session-").event_type("TowerPlaced")
    }

    fn collections(&self) -> Vec<String> {
        vec![BUILDERS.into()]
    }

    async fn init(&self, reads: &dyn ReadStore) -> cqrs::Result<()> {
        reads.ensure_index(BUILDERS, "session", FieldType::Str).await?;
        reads.ensure_index(BUILDERS, "towers", FieldType::I64).await
    }

    async fn handle(&self, e: &RecordedEvent) -> Result<Vec<Change>, BoxError> {
        let GameEvent::TowerPlaced { player, kind, .. } =
            cqrs::codec::decode_event(&e.data, &cqrs::upcast::UpcasterChain::default())?
        else {
            return Ok(vec![]);
        };
        let session = e.stream_id.as_str().trim_start_matches("session-").to_owned();
        let id = format!("{session}/{player}");
        // Read-modify-write of the model: the runner runs this projection with batches of
        // one event (see `play`), so the document read is the one the previous event wrote.
        // The document remembers the last version applied, so a replay is harmless.
        let current = self.reads.get(BUILDERS, &id).await?;
        let (towers, spent, seen) = current.map_or((0, 0, 0), |d| {
            (
                d.body["towers"].as_i64().unwrap_or(0),
                d.body["spent"].as_i64().unwrap_or(0),
                d.body["version"].as_u64().unwrap_or(0),
            )
        });
        if seen >= e.version {
            return Ok(vec![]);
        }
        let body = json!({ "session": session, "player": player, "towers": towers + 1, "spent": spent + kind.cost(), "version": e.version });
        Ok(vec![Change::Upsert {
            collection: BUILDERS.into(),
            document: Document::new(id, body),
        }])
    }
}

/// The query: the players of a session who built most, best first.
#[derive(Debug)]
pub struct TopBuilders {
    /// The session.
    pub session: String,
    /// How many.
    pub limit: usize,
}

/// One line of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    /// The player.
    pub player: String,
    /// Towers placed.
    pub towers: i64,
    /// Gold spent.
    pub spent: i64,
}

/// A query dispatcher answering [`TopBuilders`] from the read store.
pub fn queries(reads: Arc<dyn ReadStore>) -> QueryDispatcher {
    let mut d = QueryDispatcher::new();
    d.register(move |q: TopBuilders| {
        let reads = reads.clone();
        async move {
            let query = Query::new()
                .filter(Filter::eq("session", Value::Str(q.session)))
                .sort_by("towers", Direction::Desc)
                .limit(q.limit);
            let page = reads.query(BUILDERS, &query).await?;
            Ok(page
                .documents
                .into_iter()
                .map(|d| Builder {
                    player: d.body["player"].as_str().unwrap_or_default().to_owned(),
                    towers: d.body["towers"].as_i64().unwrap_or(0),
                    spent: d.body["spent"].as_i64().unwrap_or(0),
                })
                .collect::<Vec<_>>())
        }
    });
    d
}

/// What one game produced.
#[derive(Debug)]
pub struct Report {
    /// The session id.
    pub session: String,
    /// The session's version after the game.
    pub version: u64,
    /// Commands the session refused, with the reason.
    pub refused: Vec<String>,
    /// The read model's answer.
    pub top: Vec<Builder>,
    /// Ada's profile after the game.
    pub profile: (String, u32),
}

/// Plays one game on `stores` and returns what happened. `session` should be unique.
///
/// # Errors
/// Store errors, or the read model not catching up within 20 s.
pub async fn play(
    stores: &Stores,
    session: &str,
) -> Result<Report, Box<dyn std::error::Error + Send + Sync>> {
    let sessions = EventSourcedRepository::<GameSession>::new(stores.events.clone())
        .with_snapshots(stores.snapshots.clone(), SnapshotPolicy::EveryEvents(5))
        .retry_on_conflict(3);
    let profiles = StateRepository::<PlayerProfile>::new(stores.states.clone()).retry_on_conflict(3);

    let mut refused = Vec::new();
    let mut commands = vec![GameCommand::Open("river-bend".into())];
    for p in ["ada", "grace", "alan"] {
        commands.push(GameCommand::Join(p.into()));
    }
    let places = [
        ("ada", TowerKind::Archer, 1, 1),
        ("ada", TowerKind::Frost, 2, 1),
        ("grace", TowerKind::Cannon, 3, 3),
        ("ada", TowerKind::Cannon, 1, 1), // cell taken
        ("ada", TowerKind::Archer, 4, 4),
        ("ada", TowerKind::Archer, 5, 4),
        ("grace", TowerKind::Cannon, 6, 6),   // grace has 50 left: ok
        ("grace", TowerKind::Archer, 7, 7),   // 0 left: refused
        ("mallory", TowerKind::Archer, 9, 9), // never joined
        ("alan", TowerKind::Frost, 8, 2),
    ];
    for (player, kind, x, y) in places {
        commands.push(GameCommand::Place {
            player: player.into(),
            kind,
            x,
            y,
        });
    }
    let mut version = 0;
    for c in commands {
        match sessions.execute(session, c).await {
            Ok(done) => version = done.version,
            Err(RepositoryError::Domain(e)) => refused.push(e.to_string()),
            Err(RepositoryError::Store(e)) => return Err(e.into()),
        }
    }
    let ada = format!("ada-{session}");
    profiles
        .execute(&ada, ProfileCommand::Register("Ada".into()))
        .await
        .map_err(|e| e.to_string())?;
    profiles
        .execute(&ada, ProfileCommand::Played)
        .await
        .map_err(|e| e.to_string())?;
    let (profile, _) = profiles.load(&ada).await?;

    let projection = Arc::new(Builders::new(stores.reads.clone()));
    // Batches of one: `Builders::handle` reads the document the previous event wrote, and
    // a batch commits its changes together at its end.
    let options = RunnerOptions::new()
        .batch_size(1)
        .idle_poll(Duration::from_millis(20));
    let runner = ProjectionRunner::new(stores, projection).options(options).start();
    // Six towers were placed in this (new) session: wait until the runner has applied at
    // least that many events and is caught up, then ask the read model.
    runner
        .wait_until(
            |s| s.handled >= 6 && s.state == cqrs::runtime::RunnerState::Running,
            Duration::from_secs(20),
        )
        .await?;
    let top: Vec<Builder> = queries(stores.reads.clone())
        .dispatch(TopBuilders {
            session: session.into(),
            limit: 10,
        })
        .await?;
    runner.stop().await?;
    Ok(Report {
        session: session.into(),
        version,
        refused,
        top,
        profile: (profile.name, profile.sessions),
    })
}
