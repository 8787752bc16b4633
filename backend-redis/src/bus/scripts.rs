//! The bus's Lua scripts (`src/bus/lua/*.lua`), each prefixed with the crate's
//! `common.lua` and the bus's `common.lua`, called by SHA.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("../lua/common.lua"),
                include_str!("lua/common.lua"),
                include_str!(concat!("lua/", $file))
            ))
        })
    };
}

/// Publishes messages to partition streams.
pub(super) static PUBLISH: LazyLock<Script> = script!("publish.lua");
/// Creates a consumer group unless it exists.
pub(super) static GROUP: LazyLock<Script> = script!("group.lua");
/// Joins, heartbeats and leaves group membership.
pub(super) static MEMBER: LazyLock<Script> = script!("member.lua");
/// Takes, renews and releases partition leases.
pub(super) static LEASE: LazyLock<Script> = script!("lease.lua");
/// Takes over a partition's pending entries.
pub(super) static CLAIM: LazyLock<Script> = script!("claim.lua");
/// Starts deliveries.
pub(super) static DELIVER: LazyLock<Script> = script!("deliver.lua");
/// Acknowledges handled entries, many at once.
pub(super) static ACK: LazyLock<Script> = script!("ack.lua");
/// Ends one delivery: ack, retry, dead letter, drop.
pub(super) static SETTLE: LazyLock<Script> = script!("settle.lua");
/// A partition's stats for a group.
pub(super) static STATS: LazyLock<Script> = script!("stats.lua");
/// Trims acknowledged entries.
pub(super) static TRIM: LazyLock<Script> = script!("trim.lua");
