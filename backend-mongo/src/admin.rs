//! Operator access: every stream with its state, raw reads, imports with explicit
//! versions and timestamps, and setting a stream's state.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bson::doc;
use cqrs_core::{decide_import, Error, ImportedEvent, RecordedEvent, Result, StreamId, StreamState};

use crate::{
    backend::{MongoBackend, Tx},
    error,
    indexes::Coll,
    mapping::{f, i64_of, str_of, Commit},
    resolve::resolve,
};

#[async_trait]
impl cqrs_core::Admin for MongoBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", limit))]
    async fn list_all_streams(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, StreamState)>> {
        self.open()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = after.map(StreamId::as_str);
        let heads = self.stream_heads(after, limit).await?;
        // Tombstoned streams have no commits left: they come from the streams collection.
        let filter = match after {
            Some(a) => doc! { "_id": { "$gt": a }, "st": "tomb" },
            None => doc! { "st": "tomb" },
        };
        let tombs = Tx::plain()
            .find(
                &self.coll(Coll::Streams),
                filter,
                Some(doc! { "_id": 1 }),
                Some(i64::try_from(limit).unwrap_or(i64::MAX)),
            )
            .await
            .map_err(error::map)?;
        let mut all: BTreeMap<String, StreamState> = BTreeMap::new();
        let names: Vec<&str> = heads.iter().map(|(s, _)| s.as_str()).collect();
        let metas = self.metas_of(&names).await?;
        for (name, head) in &heads {
            let meta = metas.get(name).copied().unwrap_or_default();
            all.insert(name.clone(), meta.state(*head));
        }
        for t in &tombs {
            all.insert(str_of(t, "_id")?.to_owned(), StreamState::Tombstoned);
        }
        all.into_iter()
            .take(limit)
            .map(|(s, st)| Ok((StreamId::new(s)?, st)))
            .collect()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream, from, max))]
    async fn read_raw(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.open()?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let from = from.max(1);
        let Ok(from_i) = i64::try_from(from) else {
            return Ok(Vec::new());
        };
        let docs = Tx::plain()
            .find(
                &self.coll(Coll::Commits),
                doc! { f::STREAM: stream.as_str(), f::LAST: { "$gte": from_i } },
                Some(doc! { f::LAST: 1 }),
                Some(i64::try_from(max).unwrap_or(i64::MAX)),
            )
            .await
            .map_err(error::map)?;
        let mut out = Vec::new();
        for d in &docs {
            for e in Commit::from_document(d)?.into_recorded() {
                if e.version >= from && out.len() < max {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream, count = events.len()))]
    async fn import_commit(&self, stream: &StreamId, events: Vec<ImportedEvent>) -> Result<()> {
        self.open()?;
        let data: Vec<_> = events.iter().map(|e| e.data.clone()).collect();
        self.inner.limits.check_batch(&data)?;
        crate::mapping::check_commit_size(&data)?;
        let (_, state) = self.state_now(stream).await?;
        let clashing = self.commits_holding(&data).await?;
        if clashing.iter().any(|c| c.stream != *stream) {
            // Reuse the append rule for ids committed in another stream.
            resolve(stream, cqrs_core::ExpectedVersion::Any, state, &data, &clashing)?;
        }
        let ours: Vec<&Commit> = clashing.iter().filter(|c| c.stream == *stream).collect();
        let write = decide_import(stream, state, &events, |id| {
            ours.iter().find_map(|c| c.version_of(id))
        })?;
        if !write {
            return Ok(());
        }
        let first = events.first().map_or(1, |e| e.version);
        let times: Vec<_> = events.iter().map(|e| e.recorded_at).collect();
        self.insert_imported(stream, first, &data, &times).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo", stream = %stream, %state))]
    async fn set_stream_state(&self, stream: &StreamId, state: StreamState) -> Result<()> {
        self.open()?;
        let mut tx = Tx::plain();
        let head = self.head(&mut tx, stream).await?;
        let meta = self.stream_meta(&mut tx, stream).await?;
        let id = doc! { "_id": stream.as_str() };
        let streams = self.coll(Coll::Streams);
        let must_be_head = |v: u64| {
            if v == head {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "stream {stream} ends at version {head}, not {v}"
                )))
            }
        };
        match state {
            StreamState::Missing => {
                if head != 0 {
                    return Err(Error::invalid(format!(
                        "stream {stream} has events; it cannot be missing"
                    )));
                }
                streams.delete_one(id).await.map_err(error::map)?;
            }
            StreamState::Live(v) => {
                must_be_head(v)?;
                streams
                    .update_one(id, doc! { "$set": { "st": "live" }, "$unset": { "dv": "" } })
                    .upsert(true)
                    .await
                    .map_err(error::map)?;
            }
            StreamState::SoftDeleted(v) => {
                must_be_head(v)?;
                let v = i64_of(v)?;
                let floor = i64_of(meta.floor)?.max(v + 1);
                streams
                    .update_one(id, doc! { "$set": { "st": "soft", "dv": v, "fl": floor } })
                    .upsert(true)
                    .await
                    .map_err(error::map)?;
                self.coll(Coll::Snapshots)
                    .delete_many(doc! { "s": stream.as_str() })
                    .await
                    .map_err(error::map)?;
            }
            StreamState::Tombstoned => {
                streams
                    .update_one(id, doc! { "$set": { "st": "tomb" }, "$unset": { "dv": "" } })
                    .upsert(true)
                    .await
                    .map_err(error::map)?;
                for c in [Coll::Commits, Coll::Snapshots] {
                    self.coll(c)
                        .delete_many(doc! { "s": stream.as_str() })
                        .await
                        .map_err(error::map)?;
                }
            }
        }
        Ok(())
    }
}
