//! Collections and index definitions, as data. [`crate::MongoBackend::init`] creates them;
//! creating an index that exists with the same definition is a no-op on the server, so
//! `init` is idempotent and safe when two processes run it at once.

use bson::{doc, Document};
use mongodb::{options::IndexOptions, IndexModel};

/// The collections of a store (each name is the store's prefix followed by this suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Coll {
    /// One document per append.
    Commits,
    /// Stream states that are not derived from commits: deletions and truncation floors.
    Streams,
    /// Snapshots.
    Snapshots,
    /// State-store entries.
    States,
    /// Checkpoints and leases: one document per name holds the lease (owner, fencing epoch,
    /// expiry) and the checkpoint, so a fenced save is one conditional update.
    Checkpoints,
    /// Store identity, the log counter and read-model index registries.
    Meta,
}

impl Coll {
    /// Every collection `init` creates.
    pub(crate) const ALL: [Coll; 6] = [
        Coll::Commits,
        Coll::Streams,
        Coll::Snapshots,
        Coll::States,
        Coll::Checkpoints,
        Coll::Meta,
    ];

    /// The collection name after the prefix.
    pub(crate) const fn suffix(self) -> &'static str {
        match self {
            Coll::Commits => "commits",
            Coll::Streams => "streams",
            Coll::Snapshots => "snapshots",
            Coll::States => "states",
            Coll::Checkpoints => "checkpoints",
            Coll::Meta => "meta",
        }
    }
}

/// One index definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexDef {
    /// Its collection.
    pub(crate) coll: Coll,
    /// Its name (stable: `init` compares definitions by name).
    pub(crate) name: &'static str,
    /// Key fields and directions.
    pub(crate) keys: &'static [(&'static str, i32)],
    /// Unique.
    pub(crate) unique: bool,
    /// Only documents holding the first key field are indexed.
    pub(crate) partial: bool,
}

/// Every index of the fixed collections.
pub(crate) const INDEXES: &[IndexDef] = &[
    // Catches any overlap of two commits of one stream: multikey over the versions array.
    IndexDef {
        coll: Coll::Commits,
        name: "stream_versions",
        keys: &[("s", 1), ("v", 1)],
        unique: true,
        partial: false,
    },
    // The head of a stream and ordered stream reads.
    IndexDef {
        coll: Coll::Commits,
        name: "stream_last",
        keys: &[("s", 1), ("l", 1)],
        unique: false,
        partial: false,
    },
    // Event ids are unique store-wide: a re-send always collides and is read back.
    IndexDef {
        coll: Coll::Commits,
        name: "event_ids",
        keys: &[("e.id", 1)],
        unique: true,
        partial: false,
    },
    // The store-wide log (replica sets only: commits on a standalone server carry no `g`).
    IndexDef {
        coll: Coll::Commits,
        name: "log_seq",
        keys: &[("g", 1)],
        unique: true,
        partial: true,
    },
    IndexDef {
        coll: Coll::Snapshots,
        name: "stream_version",
        keys: &[("s", 1), ("v", 1)],
        unique: true,
        partial: false,
    },
    IndexDef {
        coll: Coll::States,
        name: "kind_id",
        keys: &[("k", 1), ("i", 1)],
        unique: true,
        partial: false,
    },
];

/// The key document of a definition.
pub(crate) fn keys(def: &IndexDef) -> Document {
    def.keys
        .iter()
        .map(|(k, d)| ((*k).to_owned(), bson::Bson::Int32(*d)))
        .collect()
}

/// The driver's index model of a definition.
pub(crate) fn model(def: &IndexDef) -> IndexModel {
    let mut options = IndexOptions::builder()
        .name(def.name.to_owned())
        .unique(def.unique)
        .build();
    if def.partial {
        if let Some((first, _)) = def.keys.first() {
            options.partial_filter_expression = Some(doc! { *first: { "$exists": true } });
        }
    }
    IndexModel::builder().keys(keys(def)).options(options).build()
}

/// Name of the TTL index of a read-model collection.
pub(crate) const READ_MODEL_TTL: &str = "expires_at_ttl";

/// How long after expiry the server's TTL monitor may delete a read-model document. Reads
/// filter on `x` by the store's clock, so expiry is exact; the TTL index only collects
/// garbage, late enough that `sweep_expired` (which counts what it removes) is not raced by
/// the monitor (which runs every 60 s by the server's clock).
pub(crate) const READ_MODEL_TTL_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The TTL index of a read-model collection on `x` (see [`READ_MODEL_TTL_GRACE`]).
pub(crate) fn read_model_ttl() -> IndexModel {
    let options = IndexOptions::builder()
        .name(READ_MODEL_TTL.to_owned())
        .expire_after(READ_MODEL_TTL_GRACE)
        .build();
    IndexModel::builder()
        .keys(doc! { "x": 1 })
        .options(options)
        .build()
}

/// The index of a typed read-model field: its typed copy under `f.<field>`, ties by id.
pub(crate) fn read_model_field(field: &str) -> IndexModel {
    let options = IndexOptions::builder()
        .name(format!("field_{field}"))
        .partial_filter_expression(doc! { format!("f.{field}"): { "$exists": true } })
        .build();
    IndexModel::builder()
        .keys(doc! { format!("f.{field}"): 1, "_id": 1 })
        .options(options)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_carry_the_unique_multikey_index() {
        let def = INDEXES.iter().find(|d| d.name == "stream_versions").unwrap();
        assert_eq!(def.coll, Coll::Commits);
        assert_eq!(keys(def), doc! { "s": 1, "v": 1 });
        let m = model(def);
        let o = m.options.unwrap();
        assert_eq!(o.unique, Some(true));
        assert_eq!(o.name.as_deref(), Some("stream_versions"));
    }

    #[test]
    fn log_index_is_partial_and_names_are_unique_per_collection() {
        let def = INDEXES.iter().find(|d| d.name == "log_seq").unwrap();
        let o = model(def).options.unwrap();
        assert_eq!(
            o.partial_filter_expression,
            Some(doc! { "g": { "$exists": true } })
        );
        for a in INDEXES {
            assert_eq!(
                INDEXES
                    .iter()
                    .filter(|b| b.coll == a.coll && b.name == a.name)
                    .count(),
                1
            );
        }
        assert!(INDEXES
            .iter()
            .any(|d| d.name == "event_ids" && d.unique && keys(d) == doc! { "e.id": 1 }));
    }

    #[test]
    fn read_model_indexes() {
        let ttl = read_model_ttl();
        assert_eq!(ttl.keys, doc! { "x": 1 });
        assert_eq!(
            ttl.options.unwrap().expire_after,
            Some(std::time::Duration::from_secs(3600))
        );
        let f = read_model_field("age");
        assert_eq!(f.keys, doc! { "f.age": 1, "_id": 1 });
        assert_eq!(
            f.options.unwrap().partial_filter_expression,
            Some(doc! { "f.age": { "$exists": true } })
        );
        assert_eq!(Coll::ALL.len(), 6);
    }
}
