//! # cqrs-runtime
//!
//! The pieces that need an async runtime (tokio): the [projection runner](projection), bus
//! handler [middleware] (retry with backoff, circuit breaker), and the [relay] that feeds a
//! bus from the event store's log without a dual write. Everything here depends only on the traits of `cqrs-core`, so it
//! runs over any backend.

pub mod middleware;
pub mod migrate;
pub mod projection;
pub mod relay;
mod retry;
pub mod rewrite;
mod task;

pub use migrate::{Migration, MigrationOptions, Progress, Verification};
pub use projection::{Projection, ProjectionRunner, RunnerHandle, RunnerOptions, RunnerState, RunnerStatus};
pub use relay::{event_message, Relay, RelayHandle, RelayOptions, RelayStatus};
pub use retry::RetryPolicy;
pub use task::Handle;

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
