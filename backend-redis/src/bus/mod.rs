//! Event buses on Redis.
//!
//! [`RedisBus`]: Redis Streams with consumer groups, at least once, ordered per key (see
//! [`streams`](self) for the design and the crate README for the guarantees).

mod codec;
mod consumer;
mod keys;
mod options;
mod scripts;
mod streams;

pub use options::RedisBusOptions;
pub use streams::RedisBus;
