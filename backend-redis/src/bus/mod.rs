//! Message transports on Redis: the Pub/Sub bus and FIFO waiting-room queues.

mod fifo;
mod pubsub;

pub use fifo::{Dequeued, Enqueued, FifoOptions, FifoQueue};
pub use pubsub::{PubSubOptions, RedisPubSubBus};
