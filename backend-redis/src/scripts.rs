//! The Lua scripts, kept in `src/lua/*.lua` and called by SHA (`EVALSHA`; redis-rs loads
//! a script and retries when the server answers `NOSCRIPT`, for example after a restart).
//! Every script starts with `common.lua`.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/common.lua"),
                include_str!(concat!("lua/", $file))
            ))
        })
    };
}

/// Initialises the meta key.
pub(crate) static INIT: LazyLock<Script> = script!("init.lua");
/// The append.
pub(crate) static APPEND: LazyLock<Script> = script!("append.lua");
/// Admin import of a commit.
pub(crate) static IMPORT: LazyLock<Script> = script!("import.lua");
/// Stream deletion.
pub(crate) static DELETE: LazyLock<Script> = script!("delete.lua");
/// Stream truncation.
pub(crate) static TRUNCATE: LazyLock<Script> = script!("truncate.lua");
/// Admin quarantine of one log position.
pub(crate) static QUARANTINE: LazyLock<Script> = script!("quarantine.lua");
/// Admin release of a quarantined log position.
pub(crate) static RELEASE: LazyLock<Script> = script!("release.lua");
/// Admin state change.
pub(crate) static SET_STATE: LazyLock<Script> = script!("set_state.lua");
/// Snapshot save.
pub(crate) static SNAPSHOT_SAVE: LazyLock<Script> = script!("snapshot_save.lua");
/// Snapshot load.
pub(crate) static SNAPSHOT_LOAD: LazyLock<Script> = script!("snapshot_load.lua");
/// Snapshot deletion.
pub(crate) static SNAPSHOT_DELETE: LazyLock<Script> = script!("snapshot_delete.lua");
/// State compare-and-set.
pub(crate) static STATE_PUT: LazyLock<Script> = script!("state_put.lua");
/// State deletion.
pub(crate) static STATE_DELETE: LazyLock<Script> = script!("state_delete.lua");
/// Read-model changes plus checkpoint.
pub(crate) static RM_APPLY: LazyLock<Script> = script!("rm_apply.lua");
/// Index declaration.
pub(crate) static RM_INDEX: LazyLock<Script> = script!("rm_index.lua");
/// Expiry sweep.
pub(crate) static RM_SWEEP: LazyLock<Script> = script!("rm_sweep.lua");
/// Lease acquisition.
pub(crate) static LEASE_ACQUIRE: LazyLock<Script> = script!("lease_acquire.lua");
/// Lease renewal and release.
pub(crate) static LEASE_RENEW: LazyLock<Script> = script!("lease_renew.lua");
