//! # cqrs-runtime
//!
//! The pieces that need an async runtime (tokio): the [projection runner](projection), bus
//! handler [middleware] (retry with backoff, circuit breaker), and later the relay from the
//! event store to a bus. Everything here depends only on the traits of `cqrs-core`, so it
//! runs over any backend.

pub mod middleware;
pub mod migrate;
pub mod projection;
mod retry;
pub mod rewrite;

pub use migrate::{Migration, MigrationOptions, Progress, Verification};
pub use projection::{Projection, ProjectionRunner, RunnerHandle, RunnerOptions, RunnerState, RunnerStatus};
pub use retry::RetryPolicy;
