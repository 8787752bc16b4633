//! A tower-defence game session on any backend: only the URL changes.
//!
//! ```text
//! cargo run -p examples --bin tower_defense                       # memory:
//! cargo run -p examples --bin tower_defense -- postgres://postgres@127.0.0.1/test
//! cargo run -p examples --bin tower_defense -- redis://127.0.0.1:6379
//! ```

use examples::tower_defense::play;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "memory:".into());
    cqrs::migrate(&url).await?;
    let stores = cqrs::connect(&url).await?;
    let session = format!("game{}", std::process::id());
    let report = play(&stores, &session).await?;
    println!("session {} at version {}", report.session, report.version);
    for r in &report.refused {
        println!("  refused: {r}");
    }
    println!("top builders (read model, via the query dispatcher):");
    for b in &report.top {
        println!("  {:<6} {} towers, {} gold", b.player, b.towers, b.spent);
    }
    println!(
        "profile (state-based): {} played {} session(s)",
        report.profile.0, report.profile.1
    );
    Ok(())
}
