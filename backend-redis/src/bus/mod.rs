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

/// The bus codec for the fuzz targets in `fuzz/` (feature `fuzzing`; not a stable API).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing {
    use cqrs_core::{
        bus::{DeadLetter, Message},
        Result,
    };
    use redis::Value;

    use super::codec::{self, Body};

    /// The one field value a message entry stores.
    ///
    /// # Errors
    /// As the bus's publish path.
    pub fn pack_message(m: &Message) -> Result<Vec<u8>> {
        codec::pack(m)
    }

    /// A stream entry as the consumer reads it: its id and the message, or why it does not
    /// decode.
    ///
    /// # Errors
    /// A reply of the wrong shape.
    pub fn decode_entry(v: Value) -> Result<(String, std::result::Result<Message, String>)> {
        codec::entry(v).map(|e| {
            let body = match e.body {
                Body::Message(m) => Ok(m),
                Body::Undecodable(why) => Err(why),
            };
            (e.id, body)
        })
    }

    /// A dead-letter entry as `dead_letters` reads it.
    ///
    /// # Errors
    /// A corrupt entry.
    pub fn decode_dead_letter(topic: &str, partition: u32, v: Value) -> Result<DeadLetter> {
        codec::dead_letter(topic, partition, v)
    }
}

pub use fifo::{Dequeued, Enqueued, FifoOptions, FifoQueue};
pub use options::RedisBusOptions;
pub use pubsub::{PubSubOptions, RedisPubSubBus};
pub use streams::RedisBus;
