//! # backend-redis
//!
//! Redis backend (redis-rs): event, snapshot, state and read stores, Streams bus.
//!
//! Not implemented yet: this crate compiles so the workspace and the facade's feature
//! compile; its issue in the tracker describes what it will hold.

pub use cqrs_core;
