//! [`SnapshotStore`] for [`RedisBackend`]: per stream, a hash of snapshots by zero-padded
//! version and a lexicographic set of those versions (no floating-point scores).

use async_trait::async_trait;
use bytes::Bytes;
use cqrs_core::{check_version, Error, Result, Snapshot, SnapshotKey, SnapshotStore, StreamId, Timestamp};

use crate::conn::reply;
use crate::event_store::{SNAPSHOTS, SNAPSHOT_STREAMS, SNAPSHOT_VERSIONS};
use crate::{scripts, RedisBackend};

/// A version as a fixed-width decimal, so lexicographic order is numeric order.
pub(crate) fn padded(version: u64) -> String {
    format!("{version:020}")
}

/// `<schema revision>\n<content type>\n<encoding>\n<taken at ms>\n<payload>`.
pub(crate) fn encode(s: &Snapshot) -> Vec<u8> {
    let mut out = format!(
        "{}\n{}\n{}\n{}\n",
        s.schema_revision,
        s.content_type.as_str(),
        s.content_encoding.as_str(),
        s.taken_at.as_millis()
    )
    .into_bytes();
    out.extend_from_slice(&s.payload);
    out
}

pub(crate) fn decode(stream: &StreamId, version: u64, bytes: Vec<u8>) -> Result<Snapshot> {
    let corrupt = || Error::corrupt(format!("snapshot {version} of {stream}"));
    let mut fields = Vec::with_capacity(4);
    let mut rest = bytes.as_slice();
    for _ in 0..4 {
        let at = rest.iter().position(|&b| b == b'\n').ok_or_else(corrupt)?;
        let (field, tail) = rest.split_at(at);
        fields.push(std::str::from_utf8(field).map_err(|_| corrupt())?);
        rest = tail.get(1..).unwrap_or_default();
    }
    let [rev, ct, ce, at] = fields.as_slice() else {
        return Err(corrupt());
    };
    Ok(Snapshot {
        stream_id: stream.clone(),
        version,
        schema_revision: rev.parse().map_err(|_| corrupt())?,
        payload: Bytes::copy_from_slice(rest),
        content_type: ct.parse()?,
        content_encoding: ce.parse()?,
        taken_at: Timestamp::from_millis(at.parse().map_err(|_| corrupt())?),
    })
}

impl RedisBackend {
    async fn load_snapshot(&self, stream: &StreamId, max: String) -> Result<Option<Snapshot>> {
        let p = self.keys.partition_of(stream.as_str());
        let answer = self
            .conn
            .script(
                scripts::SNAPSHOT_LOAD
                    .key(self.keys.named(p, SNAPSHOTS, stream.as_str()))
                    .key(self.keys.named(p, SNAPSHOT_VERSIONS, stream.as_str()))
                    .arg(max),
            )
            .await?;
        let mut items = reply::array(answer)?.into_iter();
        let (Some(version), Some(bytes)) = (items.next(), items.next()) else {
            return Ok(None);
        };
        let version: u64 = reply::string(version)?
            .parse()
            .map_err(|_| Error::corrupt(format!("a snapshot version of {stream}")))?;
        decode(stream, version, reply::bytes(bytes)?).map(Some)
    }
}

#[async_trait]
impl SnapshotStore for RedisBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %snapshot.stream_id, version = snapshot.version))]
    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        let _call = self.begin()?;
        self.limits.check_document(snapshot.payload.len())?;
        check_version(snapshot.version)?;
        let name = snapshot.stream_id.as_str();
        let p = self.keys.partition_of(name);
        self.conn
            .script(
                scripts::SNAPSHOT_SAVE
                    .key(self.keys.named(p, SNAPSHOTS, name))
                    .key(self.keys.named(p, SNAPSHOT_VERSIONS, name))
                    .key(self.keys.partition(p, SNAPSHOT_STREAMS))
                    .arg(name)
                    .arg(padded(snapshot.version))
                    .arg(encode(&snapshot)),
            )
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream))]
    async fn load_latest(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let _call = self.begin()?;
        self.load_snapshot(stream, "+".to_owned()).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream, version = version))]
    async fn load_at_or_before(&self, stream: &StreamId, version: u64) -> Result<Option<Snapshot>> {
        let _call = self.begin()?;
        self.load_snapshot(stream, format!("[{}", padded(version))).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream))]
    async fn delete(&self, stream: &StreamId) -> Result<u64> {
        let _call = self.begin()?;
        let name = stream.as_str();
        let p = self.keys.partition_of(name);
        let answer = self
            .conn
            .script(
                scripts::SNAPSHOT_DELETE
                    .key(self.keys.named(p, SNAPSHOTS, name))
                    .key(self.keys.named(p, SNAPSHOT_VERSIONS, name))
                    .key(self.keys.partition(p, SNAPSHOT_STREAMS))
                    .arg(name),
            )
            .await?;
        reply::u64(answer)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", limit = limit))]
    async fn list(&self, after: Option<&SnapshotKey>, limit: usize) -> Result<Vec<SnapshotKey>> {
        let _call = self.begin()?;
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // Streams from `after`'s stream on (inclusive: it may have later versions).
        let mut streams = std::collections::BTreeSet::new();
        for p in 0..self.keys.partitions() {
            let start = match after {
                Some(a) => [b"[".as_slice(), a.stream_id.as_str().as_bytes()].concat(),
                None => b"-".to_vec(),
            };
            let answer = self
                .conn
                .run(
                    redis::cmd("ZRANGEBYLEX")
                        .arg(self.keys.partition(p, SNAPSHOT_STREAMS))
                        .arg(start)
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit.saturating_add(1)),
                )
                .await?;
            for s in reply::array(answer)? {
                streams.insert(reply::string(s)?);
            }
        }
        for name in streams {
            if out.len() >= limit {
                break;
            }
            let stream = StreamId::new(name)?;
            let p = self.keys.partition_of(stream.as_str());
            let start = match after.filter(|a| a.stream_id == stream) {
                Some(a) => format!("({}", padded(a.version)),
                None => "-".to_owned(),
            };
            let answer = self
                .conn
                .run(
                    redis::cmd("ZRANGEBYLEX")
                        .arg(self.keys.named(p, SNAPSHOT_VERSIONS, stream.as_str()))
                        .arg(start)
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit - out.len()),
                )
                .await?;
            for v in reply::array(answer)? {
                let version = reply::string(v)?
                    .parse()
                    .map_err(|_| Error::corrupt(format!("a snapshot version of {stream}")))?;
                out.push(SnapshotKey {
                    stream_id: stream.clone(),
                    version,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::{ContentEncoding, ContentType};

    #[test]
    fn snapshots_round_trip_and_garbage_is_corrupt() {
        let stream = StreamId::new("s").unwrap();
        let s = Snapshot {
            stream_id: stream.clone(),
            version: 7,
            schema_revision: 3,
            payload: Bytes::from_static(b"\n\x00binary\n"),
            content_type: ContentType::Opaque,
            content_encoding: ContentEncoding::Gzip,
            taken_at: Timestamp::from_millis(-5),
        };
        assert_eq!(decode(&stream, 7, encode(&s)).unwrap(), s);
        assert!(matches!(
            decode(&stream, 7, b"1\njson\n".to_vec()),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(padded(42).len(), 20);
    }
}
