//! Quickstart: an event-sourced bank account on the embedded in-memory backend.
//!
//! Run with `cargo run -p examples --bin quickstart`. It defines an aggregate, executes
//! commands (one with request metadata), shows a conflict being detected, takes a snapshot by policy and reads events
//! written by an older schema through an upcaster.

use std::sync::Arc;

use cqrs::{
    aggregate::{Aggregate, EventSourcedRepository, RepositoryError},
    snapshot_policy::SnapshotPolicy,
    upcast::UpcasterChain,
    EventData, ExpectedVersion, Metadata,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance: i64,
}

#[derive(Debug, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: i64 },
    Withdrawn { amount: i64 },
}

#[derive(Debug, Clone)]
enum AccountCommand {
    Deposit(i64),
    Withdraw(i64),
}

#[derive(Debug, thiserror::Error)]
enum AccountError {
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    InsufficientFunds { balance: i64, asked: i64 },
    #[error("amounts must be positive")]
    NotPositive,
}

impl Aggregate for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    const KIND: &'static str = "account";

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Deposit(n) | AccountCommand::Withdraw(n) if n <= 0 => {
                Err(AccountError::NotPositive)
            }
            AccountCommand::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
            AccountCommand::Withdraw(asked) if asked > self.balance => Err(AccountError::InsufficientFunds {
                balance: self.balance,
                asked,
            }),
            AccountCommand::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => self.owner.clone_from(owner),
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The URL picks the backend; `memory:` needs no set-up.
    let stores = cqrs::connect("memory:").await?;

    // Version 1 of the app stored deposits as `MoneyAdded { cents }`; today they are
    // `Deposited { amount }` at schema version 2. History stays as written.
    let upcasters = UpcasterChain::builder()
        .json_step("MoneyAdded", 1, "Deposited", |old| {
            Ok(serde_json::json!({ "amount": old["cents"] }))
        })
        .build()?;
    let repo = EventSourcedRepository::<Account>::new(stores.events.clone())
        .with_snapshots(stores.snapshots.clone(), SnapshotPolicy::EveryEvents(3))
        .with_upcasters(Arc::new(upcasters));

    let stream = repo.stream_id("ada")?;
    let legacy = vec![
        EventData::json("Opened", &serde_json::json!({ "owner": "Ada" }))?,
        EventData::json("MoneyAdded", &serde_json::json!({ "cents": 500 }))?,
    ];
    stores
        .events
        .append(&stream, ExpectedVersion::NoStream, legacy)
        .await?;
    let loaded = repo.load("ada").await?;
    println!(
        "1. loaded {}'s account from 2 old events (one upcast MoneyAdded v1 -> Deposited v2): balance {}",
        loaded.state.owner, loaded.state.balance
    );

    // Who asked and on behalf of which request: stored on every event the command produces.
    let request = Metadata::new().with_correlation_id("req-1").with_actor("clerk-7");
    let done = repo
        .execute_with("ada", AccountCommand::Deposit(250), &request)
        .await?;
    let deposit = stores.events.read_stream(&stream, done.version, 1).await?;
    println!(
        "2. deposited 250: stream at version {}, snapshot taken: {}, metadata stored: {}",
        done.version,
        done.snapshot_taken,
        deposit
            .first()
            .map_or(String::new(), |e| e.data.metadata.to_json())
    );

    // Two clerks load the same version; the second to save is told the stream moved on.
    let clerk_a = repo.load("ada").await?;
    let clerk_b = repo.load("ada").await?;
    let no_metadata = Metadata::default();
    repo.commit(
        "ada",
        &clerk_a,
        &[AccountEvent::Withdrawn { amount: 100 }],
        &no_metadata,
    )
    .await?;
    match repo
        .commit(
            "ada",
            &clerk_b,
            &[AccountEvent::Withdrawn { amount: 100 }],
            &no_metadata,
        )
        .await
    {
        Err(e) if e.is_conflict() => println!("3. conflict detected, nothing written: {e}"),
        other => return Err(format!("expected a conflict, got {other:?}").into()),
    }

    match repo.execute("ada", AccountCommand::Withdraw(10_000)).await {
        Err(RepositoryError::Domain(e)) => println!("4. command refused by the aggregate: {e}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }

    let latest = stores
        .snapshots
        .load_latest(&stream)
        .await?
        .map_or("none".to_owned(), |s| s.version.to_string());
    let now = repo.load("ada").await?;
    println!(
        "5. final balance {} at version {}: loaded from the snapshot at version {} plus {} event(s)",
        now.state.balance, now.version, latest, now.events_replayed
    );
    if let Some(old) = stores.events.read_stream(&stream, 2, 1).await?.first() {
        println!(
            "6. the old event is still stored as written: {} v{} {}",
            old.data.event_type,
            old.data.schema_version,
            String::from_utf8_lossy(&old.data.payload)
        );
    }
    Ok(())
}
