//! Quarantine of log positions ([`cqrs_core::Admin::quarantine`]): the operator's way past
//! one corrupt event that makes every `read_all` from before it fail.
//!
//! Per partition, under the partition's tag (so `read_all` reads them in the pipeline, and
//! the slot, of the log it pages through): a lex set of quarantined positions ([`QUARANTINE`],
//! members from [`member`], whose byte order is the log's order) and a hash of their records
//! ([`QUARANTINE_RECORDS`], member → `<at ms> <reason>`). Both are written and removed
//! together by one script.

use std::collections::BTreeSet;

use cqrs_core::{Error, Position, Quarantined, Result, Timestamp};
use redis::Value;

use crate::conn::reply;
use crate::error::unexpected;
use crate::event_store::LOG;
use crate::{scripts, RedisBackend};

/// A partition's quarantined positions (lex set of [`member`]s, score 0).
pub(crate) const QUARANTINE: &str = "q";
/// A partition's quarantine records: member → `<at ms> <reason>`.
pub(crate) const QUARANTINE_RECORDS: &str = "qr";

/// The lex-set member of a log offset: three 20-digit decimals (every `u64` fits), so the
/// members' byte order is the offsets' order and a range of the set is a range of the log.
pub(crate) fn member([a, b, c]: [u64; 3]) -> String {
    format!("{a:020}-{b:020}-{c:020}")
}

/// Reads a [`member`] back; `None` for anything else.
pub(crate) fn parse_member(s: &str) -> Option<[u64; 3]> {
    let mut parts = s.split('-');
    let mut next = || {
        parts
            .next()
            .filter(|x| x.len() == 20)
            .and_then(|x| x.parse::<u64>().ok())
    };
    let offset = [next()?, next()?, next()?];
    parts.next().is_none().then_some(offset)
}

/// The quarantined offsets of one partition in a `ZRANGEBYLEX` answer.
pub(crate) fn offsets(answer: Value, into: &mut BTreeSet<[u64; 3]>) -> Result<()> {
    for m in reply::array(answer)? {
        let m = reply::string(m)?;
        let offset = parse_member(&m)
            .ok_or_else(|| Error::corrupt(format!("quarantine set member {m:?}, which no call writes")))?;
        into.insert(offset);
    }
    Ok(())
}

impl RedisBackend {
    /// [`cqrs_core::Admin::quarantine`].
    pub(crate) async fn quarantine_at(&self, position: Position, reason: &str) -> Result<()> {
        let not_found = |why: String| Error::NotFound {
            what: format!("log entry at {position} ({why})"),
        };
        let p = position.partition;
        if p >= self.keys.partitions() {
            return Err(not_found(format!(
                "the store has {} partitions",
                self.keys.partitions()
            )));
        }
        let [ms, seq, index] = position.offset;
        let answer = self
            .conn
            .script(
                scripts::QUARANTINE
                    .key(self.keys.partition(p, LOG))
                    .key(self.keys.partition(p, QUARANTINE))
                    .key(self.keys.partition(p, QUARANTINE_RECORDS))
                    .arg(format!("{ms}-{seq}"))
                    .arg(index)
                    .arg(member(position.offset))
                    .arg(reason),
            )
            .await?;
        let (status, mut items) = reply::status(answer)?;
        match status.as_str() {
            "ok" => Ok(()),
            "notfound" => Err(not_found(reply::next_string(&mut items)?)),
            other => Err(unexpected(&format!("quarantine answered {other:?}"))),
        }
    }

    /// [`cqrs_core::Admin::quarantined`]: every partition's records, each partition's in log
    /// order (the members' byte order).
    pub(crate) async fn quarantine_list(&self) -> Result<Vec<Quarantined>> {
        let mut out = Vec::new();
        for p in 0..self.keys.partitions() {
            let key = self.keys.partition(p, QUARANTINE_RECORDS);
            let mut fields = reply::array(self.conn.run(redis::cmd("HGETALL").arg(&key)).await?)?.into_iter();
            let mut records = Vec::new();
            while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
                let (k, v) = (reply::string(k)?, reply::string(v)?);
                let damaged = || Error::corrupt(format!("quarantine record {k:?} = {v:?} in {key}"));
                let offset = parse_member(&k).ok_or_else(damaged)?;
                let (at, reason) = v.split_once(' ').ok_or_else(damaged)?;
                let at = at.parse::<i64>().map_err(|_| damaged())?;
                records.push(Quarantined::new(
                    Position::new(p, offset),
                    reason,
                    Timestamp::from_millis(at),
                ));
            }
            records.sort_by_key(|q| q.position.offset);
            out.append(&mut records);
        }
        Ok(out)
    }

    /// [`cqrs_core::Admin::release`].
    pub(crate) async fn quarantine_release(&self, position: Position) -> Result<bool> {
        let p = position.partition;
        if p >= self.keys.partitions() {
            return Ok(false);
        }
        let answer = self
            .conn
            .script(
                scripts::RELEASE
                    .key(self.keys.partition(p, QUARANTINE))
                    .key(self.keys.partition(p, QUARANTINE_RECORDS))
                    .arg(member(position.offset)),
            )
            .await?;
        Ok(reply::u64(answer)? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_sort_as_the_log_and_read_back() {
        let offsets = [
            [0, 0, 0],
            [9, 0, 0],
            [10, 0, 0],
            [10, 2, 7],
            [10, 11, 0],
            [u64::MAX; 3],
        ];
        let members: Vec<String> = offsets.iter().copied().map(member).collect();
        let mut sorted = members.clone();
        sorted.sort();
        assert_eq!(sorted, members, "byte order is log order");
        for (m, o) in members.iter().zip(offsets) {
            assert_eq!(parse_member(m), Some(o));
        }
        for bad in ["1-2-3", "", &format!("{}-x", member([1, 2, 3]))] {
            assert_eq!(parse_member(bad), None, "{bad}");
        }
    }
}
