//! Snapshots: one document per (stream, version).

use async_trait::async_trait;
use bson::{doc, spec::BinarySubtype, Binary, Bson, DateTime, Document};
use cqrs_core::{Error, Result, Snapshot, SnapshotKey, StreamId, Timestamp};

use crate::{
    backend::{MongoBackend, Tx},
    error::{self, is_duplicate_key},
    indexes::Coll,
    mapping::{i64_of, payload_from_bson, str_of, u64_of},
};

/// The stored form of a snapshot.
pub(crate) fn snapshot_document(s: &Snapshot) -> Result<Document> {
    Ok(doc! {
        "s": s.stream_id.as_str(),
        "v": i64_of(s.version)?,
        "r": i64::from(s.schema_revision),
        "p": Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: s.payload.to_vec() }),
        "ct": s.content_type.as_str(),
        "ce": s.content_encoding.as_str(),
        "at": DateTime::from_millis(s.taken_at.as_millis()),
    })
}

/// A snapshot from its stored form.
pub(crate) fn snapshot_from(d: &Document) -> Result<Snapshot> {
    Ok(Snapshot {
        stream_id: StreamId::new(str_of(d, "s")?)?,
        version: u64_of(d, "v")?,
        schema_revision: u32::try_from(u64_of(d, "r")?).map_err(|_| Error::corrupt("snapshot revision"))?,
        payload: payload_from_bson(d.get("p"))?,
        content_type: str_of(d, "ct")?.parse()?,
        content_encoding: str_of(d, "ce")?.parse()?,
        taken_at: d
            .get_datetime("at")
            .map(|t| Timestamp::from_millis(t.timestamp_millis()))
            .map_err(|_| Error::corrupt("snapshot: taken_at is not a date"))?,
    })
}

#[async_trait]
impl cqrs_core::SnapshotStore for MongoBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %snapshot.stream_id, version = snapshot.version))]
    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        self.open()?;
        self.inner.limits.check_document(snapshot.payload.len())?;
        let d = snapshot_document(&snapshot)?;
        let key = doc! { "s": snapshot.stream_id.as_str(), "v": i64_of(snapshot.version)? };
        // Two concurrent upserts of one key: the loser sees a duplicate key and replaces.
        for _ in 0..3 {
            match Tx::plain()
                .replace_one(&self.coll(Coll::Snapshots), key.clone(), d.clone())
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(error::map(e)),
            }
        }
        Err(Error::unavailable(
            cqrs_core::Outcome::NotSent,
            "snapshot save kept racing with another writer",
        ))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream))]
    async fn load_latest(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        self.open()?;
        Tx::plain()
            .find_one(
                &self.coll(Coll::Snapshots),
                doc! { "s": stream.as_str() },
                Some(doc! { "v": -1 }),
            )
            .await
            .map_err(error::map)?
            .as_ref()
            .map(snapshot_from)
            .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream, version))]
    async fn load_at_or_before(&self, stream: &StreamId, version: u64) -> Result<Option<Snapshot>> {
        self.open()?;
        let v = i64::try_from(version).unwrap_or(i64::MAX);
        Tx::plain()
            .find_one(
                &self.coll(Coll::Snapshots),
                doc! { "s": stream.as_str(), "v": { "$lte": v } },
                Some(doc! { "v": -1 }),
            )
            .await
            .map_err(error::map)?
            .as_ref()
            .map(snapshot_from)
            .transpose()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream))]
    async fn delete(&self, stream: &StreamId) -> Result<u64> {
        self.open()?;
        Tx::plain()
            .delete_many(&self.coll(Coll::Snapshots), doc! { "s": stream.as_str() })
            .await
            .map_err(error::map)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", limit))]
    async fn list(&self, after: Option<&SnapshotKey>, limit: usize) -> Result<Vec<SnapshotKey>> {
        self.open()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let filter = match after {
            Some(k) => doc! { "$or": [
                { "s": { "$gt": k.stream_id.as_str() } },
                { "s": k.stream_id.as_str(), "v": { "$gt": i64::try_from(k.version).unwrap_or(i64::MAX) } },
            ] },
            None => doc! {},
        };
        Tx::plain()
            .find(
                &self.coll(Coll::Snapshots),
                filter,
                Some(doc! { "s": 1, "v": 1 }),
                Some(i64::try_from(limit).unwrap_or(i64::MAX)),
            )
            .await
            .map_err(error::map)?
            .iter()
            .map(|d| {
                Ok(SnapshotKey {
                    stream_id: StreamId::new(str_of(d, "s")?)?,
                    version: u64_of(d, "v")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use cqrs_core::{ContentEncoding, ContentType};

    use super::*;

    #[test]
    fn snapshots_round_trip_byte_for_byte() {
        let s = Snapshot {
            stream_id: StreamId::new("order-1").unwrap(),
            version: 42,
            schema_revision: 3,
            payload: bytes::Bytes::from_static(&[0, 1, 2, 255]),
            content_type: ContentType::Bson,
            content_encoding: ContentEncoding::Gzip,
            taken_at: Timestamp::from_millis(123_456),
        };
        let d = snapshot_document(&s).unwrap();
        assert_eq!(d.get_i64("v").unwrap(), 42);
        assert_eq!(snapshot_from(&d).unwrap(), s);
    }
}
