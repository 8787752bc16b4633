//! `migrate`: copies an event store, its snapshots and state entries from one backend to
//! another, then verifies both sides.
//!
//! ```text
//! cargo run -p examples --bin migrate -- --from postgres://... --to redis://... --state-kind account
//! MIGRATE_FROM=... MIGRATE_TO=... cargo run -p examples --bin migrate -- --follow
//! ```
//!
//! URLs come from the arguments or the `MIGRATE_FROM` / `MIGRATE_TO` variables and are never
//! printed (they may hold credentials): only the backend kind is. A run resumes where an
//! interrupted one stopped and is idempotent. `--follow` repeats the copy until a pass finds
//! nothing new (lag zero): to move a live system, follow, stop the writers, run once more,
//! check the verification, switch the URL. Projection checkpoints are not copied: the target
//! is another store, so projections rebuild there.

use std::{process::ExitCode, time::Instant};

use clap::Parser;
use cqrs::{
    runtime::{Migration, MigrationOptions, Progress},
    BackendKind,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Copy a store between backends and verify the copy.
#[derive(Debug, Parser)]
#[command(name = "migrate", version)]
struct Args {
    /// Source store URL (memory:, postgres://, redis://, mongodb://).
    #[arg(long, env = "MIGRATE_FROM", hide_env_values = true)]
    from: String,
    /// Target store URL.
    #[arg(long, env = "MIGRATE_TO", hide_env_values = true)]
    to: String,
    /// Events per read and per imported commit.
    #[arg(long, default_value_t = 500)]
    page: usize,
    /// State kinds to copy (repeat the flag for several).
    #[arg(long = "state-kind")]
    state_kinds: Vec<String>,
    /// Show what would be copied; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Keep copying until a pass finds nothing new (lag zero).
    #[arg(long)]
    follow: bool,
    /// Skip the verification at the end.
    #[arg(long)]
    no_verify: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let (from_kind, to_kind) = (
        BackendKind::from_url(&args.from)?,
        BackendKind::from_url(&args.to)?,
    );
    let source = cqrs::connect(&args.from).await?;
    let target = cqrs::connect(&args.to).await?;
    let options = MigrationOptions {
        page: args.page,
        dry_run: args.dry_run,
        state_kinds: args.state_kinds,
    };
    let migration = Migration::new(source, target, options);
    println!(
        "migrating {from_kind:?} -> {to_kind:?}{}",
        if args.dry_run { " (dry run)" } else { "" }
    );

    let started = Instant::now();
    let mut total = Progress::default();
    for pass in 1.. {
        let bar = ProgressBar::new(migration.source_events().await?);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let p = migration
            .run(&|p: Progress| {
                bar.set_position(p.events + p.skipped);
                bar.set_message(format!("{} streams", p.streams));
            })
            .await?;
        bar.finish_and_clear();
        println!(
            "pass {pass}: {} events copied, {} already there, {} streams, {} snapshots, {} state entries",
            p.events, p.skipped, p.streams, p.snapshots, p.states
        );
        total.events += p.events;
        total.snapshots = p.snapshots;
        total.states = p.states;
        if !args.follow || p.events == 0 || args.dry_run {
            break;
        }
    }
    println!("copied {} events in {:.1?}", total.events, started.elapsed());
    if args.no_verify || args.dry_run {
        return Ok(true);
    }
    let v = migration.verify().await?;
    println!(
        "verified {} streams, {} events: source {} target {}",
        v.streams,
        v.events,
        &v.source_checksum[..16.min(v.source_checksum.len())],
        &v.target_checksum[..16.min(v.target_checksum.len())]
    );
    if v.is_equal() {
        println!("both sides are equal");
        Ok(true)
    } else {
        println!(
            "DIFFERENT: {} stream(s) differ, e.g. {:?}",
            v.mismatches.len(),
            v.mismatches.first()
        );
        Ok(false)
    }
}
