//! Key layout of the bus: `<prefix>:{b:<topic>:<p>}:<kind>[:<group>]` for the keys of one
//! (topic, partition) and `<prefix>:{bt:<topic>}:m:<group>` for a group's membership.
//!
//! A topic holding `{` or `}` would open or close the hash tag early (the first `{…}` of a
//! key decides its slot), so such a topic is hex-encoded in the tag (`bx:` / `btx:`).

/// Builds the bus keys under one prefix.
#[derive(Debug, Clone)]
pub(super) struct BusKeys {
    prefix: String,
}

/// The keys of one (topic, partition).
#[derive(Debug, Clone)]
pub(super) struct PartKeys {
    base: String,
}

fn tag_topic(topic: &str) -> (bool, String) {
    if topic.contains(['{', '}']) {
        let hex: String = topic.bytes().map(|b| format!("{b:02x}")).collect();
        (true, hex)
    } else {
        (false, topic.to_owned())
    }
}

impl BusKeys {
    pub(super) fn new(prefix: &str) -> Self {
        BusKeys {
            prefix: prefix.to_owned(),
        }
    }

    /// The keys of partition `p` of `topic`.
    pub(super) fn part(&self, topic: &str, p: u32) -> PartKeys {
        let (hex, t) = tag_topic(topic);
        let marker = if hex { "bx" } else { "b" };
        PartKeys {
            base: format!("{}:{{{marker}:{t}:{p}}}", self.prefix),
        }
    }

    /// The membership sorted set of `group` on `topic`.
    pub(super) fn members(&self, topic: &str, group: &str) -> String {
        let (hex, t) = tag_topic(topic);
        let marker = if hex { "btx" } else { "bt" };
        format!("{}:{{{marker}:{t}}}:m:{group}", self.prefix)
    }
}

impl PartKeys {
    /// The partition's stream.
    pub(super) fn stream(&self) -> String {
        format!("{}:s", self.base)
    }

    fn of(&self, kind: &str, group: &str) -> String {
        format!("{}:{kind}:{group}", self.base)
    }

    /// The group's attempt records (entry id -> `count:first attempt ms`) and stats version.
    pub(super) fn attempts(&self, group: &str) -> String {
        self.of("a", group)
    }

    /// The group's delayed retries: entry id scored by due time (integer ms).
    pub(super) fn retry(&self, group: &str) -> String {
        self.of("r", group)
    }

    /// The group's dead-letter stream.
    pub(super) fn dead(&self, group: &str) -> String {
        self.of("d", group)
    }

    /// The group's owner lease.
    pub(super) fn lease(&self, group: &str) -> String {
        self.of("l", group)
    }

    /// The group's parked keys: key -> the dead-lettered message id it is parked behind.
    pub(super) fn parked(&self, group: &str) -> String {
        self.of("k", group)
    }

    /// The six keys of the deliver and settle scripts, in their order.
    pub(super) fn settle_keys(&self, group: &str) -> [String; 6] {
        [
            self.stream(),
            self.lease(group),
            self.attempts(group),
            self.retry(group),
            self.parked(group),
            self.dead(group),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_in_a_topic_never_open_a_tag() {
        let k = BusKeys::new("app");
        assert_eq!(k.part("orders", 3).stream(), "app:{b:orders:3}:s");
        let s = k.part("a}b", 0).stream();
        assert_eq!(s, "app:{bx:617d62:0}:s");
        assert_eq!(k.members("a{", "g"), "app:{btx:617b}:m:g");
    }
}
