//! # cqrs-core
//!
//! Traits, plain types and pure logic for CQRS and event sourcing with pluggable storage.
//! No I/O, no backend, no async runtime: backends implement the store traits, the
//! `conformance` crate holds them to one contract, and applications hold `Arc<dyn …>`
//! trait objects so switching backend is a change of URL.
//!
//! - Types and pinned semantics: [`StreamId`], [`EventData`], [`RecordedEvent`],
//!   [`ExpectedVersion`], [`StreamState`], [`Position`], [`Checkpoint`], [`Error`].
//! - Store traits: [`EventStore`], [`SnapshotStore`], [`StateStore`], [`ReadStore`],
//!   [`CheckpointStore`], [`Admin`].
//! - Pure logic: [`codec`], [`compression`], [`Limits`], [`decide_append`],
//!   [`snapshot_policy`], [`upcast`], [`aggregate`], [`dispatch`], [`read_model`].
//! - The event bus: [`bus`] ([`EventBus`], [`Message`], [`SubscriptionSpec`], [`MessageHandler`]).
//!
//! Time comes through the [`Clock`] trait.

mod capabilities;
mod clock;
mod error;
mod event;
mod idempotency;
mod limits;
mod position;
mod store;
mod stream_id;
mod version;

pub mod aggregate;
pub mod bus;
pub mod codec;
pub mod compression;
pub mod dispatch;
pub mod lease;
pub mod read_model;
pub mod snapshot_policy;
pub mod upcast;

pub use bus::{
    BusCapabilities, Delivery, EventBus, HandlerError, Message, MessageHandler, MessageId, Priority,
    SubscriptionSpec,
};
pub use capabilities::Capabilities;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{BoxError, Error, LimitKind, Outcome, Result};
pub use event::{ContentEncoding, ContentType, EventData, EventId, Metadata, RecordedEvent};
pub use idempotency::{decide_append, decide_import, AppendDecision};
pub use limits::Limits;
pub use position::{Batch, Checkpoint, EventFilter, Position, StoreIdentity, Timestamp};
pub use read_model::{
    validate_collection, validate_field, Change, Cursor, Direction, Document, FieldType, Filter, Query,
    SortBy, Value,
};
pub use store::{
    check_state_batch, is_last_page, validate_state_key, Admin, CheckpointStore, CheckpointUpdate,
    Conditional, EventStore, EventStoreExt, ImportedEvent, Lease, Quarantined, QueryPage, ReadStore,
    Snapshot, SnapshotKey, SnapshotStore, StateExpectation, StateStore, StateWrite, Stores, StreamPage,
    Versioned,
};
pub use stream_id::{validate_name, StreamId, MAX_NAME_BYTES};
pub use version::{check_version, AppendOutcome, DeleteMode, ExpectedVersion, StreamState, MAX_VERSION};
