//! Which partition a key belongs to, and the key hash dispatchers compare keys by.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
};

/// FNV-1a 64 of the key's UTF-8 bytes: stable across platforms, processes and versions. It
/// places keys in partitions ([`partition_for`]), and a dispatcher compares keys by it
/// instead of by string: two keys with the same hash only make the later message wait for
/// the earlier one, never a reorder.
///
/// ```
/// use cqrs_core::bus::key_hash;
/// assert_eq!(key_hash("order-1"), key_hash("order-1"));
/// assert_ne!(key_hash("order-1"), key_hash("order-2"));
/// ```
pub fn key_hash(key: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    key.as_bytes()
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The partition of `key` among `partitions` (0 is treated as 1): [`key_hash`] modulo the
/// count, so every transport and every process agrees.
///
/// ```
/// use cqrs_core::bus::partition_for;
/// assert_eq!(partition_for("order-1", 8), partition_for("order-1", 8));
/// assert!(partition_for("order-1", 8) < 8);
/// assert_eq!(partition_for("anything", 1), 0);
/// ```
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    let k = u64::from(partitions.max(1));
    // The remainder is below `partitions`, which is a u32.
    u32::try_from(key_hash(key) % k).unwrap_or(0)
}

/// A multiplicative hasher for integers (offsets, [`key_hash`]es). A dispatch round may hash
/// hundreds of them per partition; SipHash over key strings was most of an in-memory
/// consumer's time.
#[derive(Debug, Default, Clone, Copy)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A set of integers hashed with [`IntHasher`].
pub type IntSet<T> = HashSet<T, BuildHasherDefault<IntHasher>>;

/// A map keyed by integers, hashed with [`IntHasher`].
pub type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;
