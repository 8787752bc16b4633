//! The PostgreSQL outbox event bus: [`PgBus`].
//!
//! Messages are rows of an `outbox` table, written by [`PgBus::publish`](cqrs_core::bus::EventBus::publish) or, inside the
//! caller's own transaction, by [`PgBus::publish_in`] (an application writes its state and
//! its messages atomically: the point of an outbox). Rows are read per (topic, partition) in
//! `(tx_id, seq)` order and only below `pg_snapshot_xmin(pg_current_snapshot())`, the same
//! horizon as the event log, so a publisher still in flight is never skipped.
//!
//! Consumer groups keep their state in tables: per partition an offset (every row at or
//! below it is settled) and an ownership lease (owner, epoch, expiry); per row above the
//! offset our attempt counter, the claim (consumer, expiry), the retry due time and a "done"
//! mark for rows settled out of order; parked keys; dead letters. Within a group a partition
//! is owned by one consumer at a time: partitions are spread over the live members by name
//! (`p % n`), taken only when free or expired, handed over only once nothing of them is in
//! flight, and every write of the owner is fenced by the lease's epoch. A consumer renews its
//! membership and leases every quarter of its ack timeout (also while a slow handler runs); a
//! crashed one's partitions are taken over once its lease has expired. The owner keeps a
//! window of its partitions' rows in memory and picks the next message exactly as the memory
//! bus does: the oldest unsettled message of each key is ready, the [`PriorityScheduler`]
//! picks among ready ones, a dead-lettered key parks its later messages.
//!
//! Wake-ups: one notifier task per [`PgBus`] holds a dedicated `LISTEN` connection and polls
//! the outbox head (the sequence's last value and the horizon) every
//! [`PgBusOptions::poll_interval`]. [`PgBus::publish`](cqrs_core::bus::EventBus::publish) wakes the local consumers directly
//! and has the notifier send one `NOTIFY` after its commit, in a separate statement on the
//! notifier's connection, never inside the writing transaction. A message published with
//! [`PgBus::publish_in`] is found by the poll, or at once after [`PgBus::wake`].
//!
//! [`PriorityScheduler`]: cqrs_core::bus::PriorityScheduler

mod consumer;
mod notifier;
mod options;
mod outbox;
mod window;

pub use options::PgBusOptions;

/// An outbox row's columns as the consumer decodes them, for the fuzz targets in `fuzz/`
/// (feature `fuzzing`; not a stable API).
///
/// # Errors
/// Why the row is not a message.
#[cfg(feature = "fuzzing")]
pub fn decode_outbox_row(
    id: uuid::Uuid,
    key: String,
    priority: i16,
    headers: &str,
    content_type: &str,
    payload: Vec<u8>,
) -> std::result::Result<cqrs_core::bus::Message, String> {
    outbox::decode(id, key, priority, headers, content_type, payload)
}
pub use outbox::PgBus;
