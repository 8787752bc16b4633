//! [`StateStore`] for [`RedisBackend`]: per kind, a hash of versions, a hash of
//! `<version>:<value>` and a lexicographic set of ids, written by a compare-and-set script.

use async_trait::async_trait;
use bytes::Bytes;
use cqrs_core::{
    check_state_batch, validate_name, validate_state_key, Conditional, Error, Result, StateExpectation,
    StateStore, StateWrite, Versioned,
};

use crate::conn::reply;
use crate::error::unexpected;
use crate::event_store::lex_after;
use crate::{scripts, RedisBackend};

const VERSIONS: &str = "kv";
const VALUES: &str = "kd";
const IDS: &str = "kl";

fn parse_entry(bytes: Vec<u8>) -> Result<Versioned<Bytes>> {
    let at = bytes
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| Error::corrupt("a state entry without version"))?;
    let version = std::str::from_utf8(&bytes[..at])
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::corrupt("a state entry version"))?;
    Ok(Versioned {
        value: Bytes::copy_from_slice(&bytes[at + 1..]),
        version,
    })
}

impl RedisBackend {
    fn state_keys(&self, kind: &str) -> [String; 3] {
        let p = self.keys.partition_of(kind);
        [
            self.keys.named(p, VERSIONS, kind),
            self.keys.named(p, VALUES, kind),
            self.keys.named(p, IDS, kind),
        ]
    }

    async fn get_state(&self, kind: &str, id: &str) -> Result<Option<Versioned<Bytes>>> {
        let [_, values, _] = self.state_keys(kind);
        let answer = self.conn.run(redis::cmd("HGET").arg(values).arg(id)).await?;
        reply::opt_bytes(answer)?.map(parse_entry).transpose()
    }

    async fn put_states(&self, kind: &str, writes: &[StateWrite]) -> Result<Vec<u64>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let [versions, values, ids] = self.state_keys(kind);
        let mut inv = scripts::STATE_PUT.prepare_invoke();
        inv.key(versions).key(values).key(ids).arg(writes.len());
        for w in writes {
            let (exp, v) = match w.expected {
                StateExpectation::New => ("new", 0),
                StateExpectation::Version(v) => ("ver", v),
                StateExpectation::Any => ("any", 0),
            };
            inv.arg(&w.id).arg(exp).arg(v).arg(&w.value[..]);
        }
        let (status, mut items) = reply::status(self.conn.script(&inv).await?)?;
        match status.as_str() {
            "ok" => items.map(reply::u64).collect(),
            "conflict" => {
                let index: usize = reply::next_string(&mut items)?
                    .parse()
                    .map_err(|_| unexpected("a conflict index"))?;
                let actual = reply::next_string(&mut items)?;
                let w = writes.get(index).ok_or_else(|| unexpected("a conflict index"))?;
                Err(Error::StateConflict {
                    kind: kind.to_owned(),
                    id: w.id.clone(),
                    expected: w.expected,
                    actual: actual.parse().ok(),
                })
            }
            other => Err(unexpected(&format!("state put answered {other:?}"))),
        }
    }
}

#[async_trait]
impl StateStore for RedisBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", kind = %kind, id = %id))]
    async fn get(&self, kind: &str, id: &str) -> Result<Option<Versioned<Bytes>>> {
        let _call = self.begin()?;
        validate_state_key(kind, id)?;
        self.get_state(kind, id).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", kind = %kind, id = %id, known = known_version))]
    async fn get_if_changed(
        &self,
        kind: &str,
        id: &str,
        known_version: u64,
    ) -> Result<Conditional<Versioned<Bytes>>> {
        let _call = self.begin()?;
        validate_state_key(kind, id)?;
        Ok(match self.get_state(kind, id).await? {
            Some(e) if e.version == known_version => Conditional::NotModified,
            other => Conditional::Changed(other),
        })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", kind = %kind, id = %id, expected = ?expected))]
    async fn put(&self, kind: &str, id: &str, expected: StateExpectation, value: Bytes) -> Result<u64> {
        let _call = self.begin()?;
        validate_state_key(kind, id)?;
        self.limits.check_document(value.len())?;
        let write = StateWrite {
            id: id.to_owned(),
            expected,
            value,
        };
        let versions = self.put_states(kind, std::slice::from_ref(&write)).await?;
        versions
            .first()
            .copied()
            .ok_or_else(|| unexpected("state put returned no version"))
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", kind = %kind, writes = writes.len()))]
    async fn put_batch(&self, kind: &str, writes: Vec<StateWrite>) -> Result<Vec<u64>> {
        let _call = self.begin()?;
        check_state_batch(&self.limits, kind, &writes)?;
        self.put_states(kind, &writes).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", kind = %kind, id = %id, expected = ?expected))]
    async fn delete(&self, kind: &str, id: &str, expected: Option<u64>) -> Result<()> {
        let _call = self.begin()?;
        validate_state_key(kind, id)?;
        let [versions, values, ids] = self.state_keys(kind);
        let answer = self
            .conn
            .script(
                scripts::STATE_DELETE
                    .key(versions)
                    .key(values)
                    .key(ids)
                    .arg(id)
                    .arg(expected.map(|v| v.to_string()).unwrap_or_default()),
            )
            .await?;
        let (status, mut items) = reply::status(answer)?;
        match status.as_str() {
            "ok" => Ok(()),
            "conflict" => Err(Error::StateConflict {
                kind: kind.to_owned(),
                id: id.to_owned(),
                expected: StateExpectation::Version(expected.unwrap_or_default()),
                actual: reply::next_string(&mut items)?.parse().ok(),
            }),
            other => Err(unexpected(&format!("state delete answered {other:?}"))),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", kind = %kind, limit = limit))]
    async fn list(&self, kind: &str, after: Option<&str>, limit: usize) -> Result<Vec<(String, u64)>> {
        let _call = self.begin()?;
        validate_name("state kind", kind)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let [versions, _, ids] = self.state_keys(kind);
        let answer = self
            .conn
            .run(
                redis::cmd("ZRANGEBYLEX")
                    .arg(&ids)
                    .arg(lex_after(after))
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        let names = reply::array(answer)?
            .into_iter()
            .map(reply::string)
            .collect::<Result<Vec<_>>>()?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(&versions);
        for n in &names {
            hmget.arg(n);
        }
        let found = reply::array(self.conn.run(&hmget).await?)?;
        let mut out = Vec::with_capacity(names.len());
        for (name, v) in names.into_iter().zip(found) {
            if let Some(v) = reply::opt_string(v)? {
                let v = v
                    .parse()
                    .map_err(|_| Error::corrupt(format!("state version of {kind}/{name}")))?;
                out.push((name, v));
            }
        }
        Ok(out)
    }
}
