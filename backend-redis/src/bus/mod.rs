//! Message transports on Redis: the Pub/Sub bus and FIFO waiting-room queues.

mod pubsub;

pub use pubsub::{PubSubOptions, RedisPubSubBus};
