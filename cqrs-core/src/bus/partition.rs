//! Which partition a key belongs to.

/// The partition of `key` among `partitions` (0 is treated as 1): FNV-1a 64 of the key's
/// UTF-8 bytes modulo the count. Stable across platforms, processes and versions, so every
/// transport and every process agrees.
///
/// ```
/// use cqrs_core::bus::partition_for;
/// assert_eq!(partition_for("order-1", 8), partition_for("order-1", 8));
/// assert!(partition_for("order-1", 8) < 8);
/// assert_eq!(partition_for("anything", 1), 0);
/// ```
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let k = u64::from(partitions.max(1));
    let hash = key
        .as_bytes()
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
    // The remainder is below `partitions`, which is a u32.
    u32::try_from(hash % k).unwrap_or(0)
}
