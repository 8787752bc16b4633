//! Key layout: `<prefix>:{<tag>}:<kind>:<name>`.
//!
//! The hash tag is always ours (`p<k>` for partition `k`, or a fixed tag for store-wide
//! keys), comes right after a brace-free prefix, and is the first `{…}` of every key, so a
//! user-chosen stream name (which may hold `{` and `}`) never decides a slot. Every key of a
//! stream shares its partition's tag, hence its slot, with the partition's log.

/// The tag of the store's meta key.
const META_TAG: &str = "meta";
/// The tag shared by read models, checkpoints and leases (one slot: see the README).
const READ_TAG: &str = "rm";
/// Number of Redis Cluster slots.
const SLOTS: u32 = 16_384;

/// Builds every key of one store.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    tags: Vec<String>,
}

impl Keys {
    /// Keys under `prefix` with `partitions` log partitions (at least 1).
    pub(crate) fn new(prefix: &str, partitions: u32) -> Self {
        let n = partitions.max(1);
        Keys {
            prefix: prefix.to_owned(),
            tags: (0..n).map(|k| partition_tag(k, n)).collect(),
        }
    }

    /// The number of partitions.
    pub(crate) fn partitions(&self) -> u32 {
        u32::try_from(self.tags.len()).unwrap_or(u32::MAX)
    }

    /// The partition a stream (or a state kind) lives in: a stable hash of its name.
    pub(crate) fn partition_of(&self, name: &str) -> u32 {
        crc32fast::hash(name.as_bytes()) % self.partitions()
    }

    fn tag(&self, partition: u32) -> &str {
        usize::try_from(partition)
            .ok()
            .and_then(|i| self.tags.get(i))
            .map_or("p0", String::as_str)
    }

    /// The meta key (store identity and partition count).
    pub(crate) fn meta(prefix: &str) -> String {
        format!("{prefix}:{{{META_TAG}}}:store")
    }

    /// A key of partition `partition` for `kind` and a user-chosen `name`.
    pub(crate) fn named(&self, partition: u32, kind: &str, name: &str) -> String {
        // `concat` sizes the string once; `format!` was a tenth of a single append's client time.
        [
            self.prefix.as_str(),
            ":{",
            self.tag(partition),
            "}:",
            kind,
            ":",
            name,
        ]
        .concat()
    }

    /// A partition-wide key (its log, its stream lists).
    pub(crate) fn partition(&self, partition: u32, kind: &str) -> String {
        [self.prefix.as_str(), ":{", self.tag(partition), "}:", kind].concat()
    }

    /// A read-model, checkpoint or lease key.
    pub(crate) fn read(&self, kind: &str, name: &str) -> String {
        format!("{}:{{{READ_TAG}}}:{kind}:{name}", self.prefix)
    }

    /// A store-wide read-model, checkpoint or lease key.
    pub(crate) fn read_global(&self, kind: &str) -> String {
        format!("{}:{{{READ_TAG}}}:{kind}", self.prefix)
    }

    /// The pattern matching every key of this prefix (for tests and operators).
    pub(crate) fn pattern(prefix: &str) -> String {
        let mut out = String::with_capacity(prefix.len() + 3);
        for c in prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str(":*");
        out
    }
}

/// The hash tag of partition `k` of `n`: `p<k>` when there is one partition, otherwise the
/// first of `p<k>`, `p<k>.1`, `p<k>.2`, … whose slot falls in the `k`-th of `n` equal slot
/// ranges, so the partitions of a cluster whose masters own equal slot ranges (what
/// `redis-cli --cluster create` makes) spread evenly over them.
fn partition_tag(k: u32, n: u32) -> String {
    if n == 1 {
        return format!("p{k}");
    }
    let lo = u64::from(SLOTS) * u64::from(k) / u64::from(n);
    let hi = u64::from(SLOTS) * (u64::from(k) + 1) / u64::from(n);
    let fits = |tag: &str| {
        let slot = u64::from(slot(tag.as_bytes()));
        slot >= lo && slot < hi
    };
    let plain = format!("p{k}");
    if fits(&plain) {
        return plain;
    }
    (1..100_000u32)
        .map(|j| format!("p{k}.{j}"))
        .find(|t| fits(t))
        .unwrap_or(plain)
}

/// The Redis Cluster slot of a hash tag's content (CRC16/XMODEM mod 16384).
pub(crate) fn slot(tag: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in tag {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_matches_redis() {
        // CLUSTER KEYSLOT values from the Redis documentation and a server.
        assert_eq!(slot(b"123456789"), 12_739);
        assert_eq!(slot(b"foo"), 12_182);
    }

    #[test]
    fn hostile_names_never_open_a_tag() {
        let keys = Keys::new("app", 1);
        let key = keys.named(0, "e", "{x}:y");
        assert_eq!(key, "app:{p0}:e:{x}:y");
        let first = key.find('{').unwrap();
        assert_eq!(&key[first..first + 4], "{p0}");
    }

    #[test]
    fn partitions_spread_over_the_slot_ranges() {
        let keys = Keys::new("app", 3);
        for k in 0..3u32 {
            let tag = keys.tag(k).to_owned();
            let s = u32::from(slot(tag.as_bytes()));
            assert!(s >= SLOTS * k / 3 && s < SLOTS * (k + 1) / 3, "{tag} -> {s}");
        }
    }

    #[test]
    fn glob_characters_of_the_prefix_are_escaped() {
        assert_eq!(Keys::pattern("a*b"), "a\\*b:*");
    }
}
