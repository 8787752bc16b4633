//! The store traits, one module per store, and [`Stores`], the bundle a backend hands out.
//!
//! Every trait is object safe: applications hold `Arc<dyn EventStore>` and switch backend by
//! changing a URL.

mod admin;
mod checkpoint_store;
mod event_store;
mod read_store;
mod snapshot_store;
mod state_store;

use std::sync::Arc;

pub use admin::{Admin, ImportedEvent, Quarantined};
pub use checkpoint_store::{CheckpointStore, Lease};
pub use event_store::{is_last_page, EventStore, EventStoreExt, StreamPage};
pub use read_store::{CheckpointUpdate, QueryPage, ReadStore};
pub use snapshot_store::{Snapshot, SnapshotKey, SnapshotStore};
pub use state_store::{
    check_state_batch, validate_state_key, Conditional, StateExpectation, StateStore, StateWrite, Versioned,
};

/// Every store of one backend, as trait objects sharing that backend's connection.
#[derive(Debug, Clone)]
pub struct Stores {
    /// The event store.
    pub events: Arc<dyn EventStore>,
    /// The snapshot store.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// The state store.
    pub states: Arc<dyn StateStore>,
    /// The read-model store.
    pub reads: Arc<dyn ReadStore>,
    /// Checkpoints and leases.
    pub checkpoints: Arc<dyn CheckpointStore>,
    /// Operator access.
    pub admin: Arc<dyn Admin>,
}

impl Stores {
    /// Bundles one value that implements every store trait.
    pub fn from_backend<B>(backend: Arc<B>) -> Self
    where
        B: EventStore + SnapshotStore + StateStore + ReadStore + CheckpointStore + Admin + 'static,
    {
        Stores {
            events: backend.clone(),
            snapshots: backend.clone(),
            states: backend.clone(),
            reads: backend.clone(),
            checkpoints: backend.clone(),
            admin: backend,
        }
    }
}
