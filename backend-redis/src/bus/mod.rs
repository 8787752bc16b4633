//! Event buses and queues on Redis.
//!
//! - [`RedisBus`]: Redis Streams with consumer groups, at least once, ordered per key (see
//!   [`streams`](self) for the design and the crate README for the guarantees).
//! - [`RedisPubSubBus`]: Redis Pub/Sub, at most once, for notifications and wake-ups.
//! - [`FifoQueue`]: strict FIFO queues per name with integer positions and expiry ("as in
//!   a waiting room").

mod codec;
mod consumer;
mod fifo;
mod keys;
mod options;
mod pubsub;
mod scripts;
mod streams;

pub use fifo::{Dequeued, Enqueued, FifoOptions, FifoQueue};
pub use options::RedisBusOptions;
pub use pubsub::{PubSubOptions, RedisPubSubBus};
pub use streams::RedisBus;
