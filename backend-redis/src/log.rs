//! `read_all`: expands the commit pointers of every partition's log into events and merges
//! the partitions, keeping each partition's (hence each stream's) order.

use std::collections::HashMap;

use cqrs_core::{Batch, Checkpoint, Error, EventFilter, Position, RecordedEvent, Result, StreamId};
use redis::Value;

use crate::conn::reply;
use crate::event_store::{EVENTS, HEAD, LOG};
use crate::keys::Keys;
use crate::packed::{decode_event, parse_entry_id};
use crate::RedisBackend;

/// Commit pointers read from one partition per call, at most.
const MAX_COMMITS: usize = 1_000;
/// Commit pointers read from one partition per call, at least (so a filtered read that
/// matches little still moves on quickly).
const MIN_COMMITS: usize = 100;

/// One log entry expanded: an event position and the event if a reader may see it.
struct Item {
    partition: u32,
    offset: [u64; 3],
    event: Option<RecordedEvent>,
}

/// One stream's part of a window: live?, first visible version, events by version (taken
/// out as their commits are expanded).
type Expanded = (bool, u64, Vec<(u64, Option<RecordedEvent>)>);

/// A commit pointer of a partition log.
struct Commit {
    id: [u64; 2],
    stream: String,
    from: u64,
    to: u64,
}

fn parse_commit(entry: Value) -> Result<Commit> {
    let mut parts = reply::array(entry)?.into_iter();
    let id = reply::string(parts.next().unwrap_or(Value::Nil))?;
    let id = parse_entry_id(&id).ok_or_else(|| Error::corrupt(format!("log entry id {id:?}")))?;
    let mut stream = None;
    let mut from = None;
    let mut to = None;
    let mut fields = reply::array(parts.next().unwrap_or(Value::Nil))?.into_iter();
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        match reply::string(k)?.as_str() {
            "s" => stream = Some(reply::string(v)?),
            "f" => from = reply::string(v)?.parse().ok(),
            "t" => to = reply::string(v)?.parse().ok(),
            _ => {}
        }
    }
    match (stream, from, to) {
        (Some(stream), Some(from), Some(to)) => Ok(Commit { id, stream, from, to }),
        _ => Err(Error::corrupt(format!("log entry {}-{}", id[0], id[1]))),
    }
}

/// A commit pointer as `(entry id, stream, from, to)`, for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub(crate) fn commit_parts(entry: Value) -> Result<([u64; 2], String, u64, u64)> {
    parse_commit(entry).map(|c| (c.id, c.stream, c.from, c.to))
}

impl RedisBackend {
    /// [`cqrs_core::EventStore::read_all`].
    pub(crate) async fn read_log(
        &self,
        from: &Checkpoint,
        max: usize,
        filter: &EventFilter,
    ) -> Result<Batch> {
        from.check_store(&self.identity)?;
        let partitions = self.keys.partitions();
        if let Some(&p) = from.partitions.keys().find(|&&p| p >= partitions) {
            return Err(Error::DataLoss { partition: p });
        }
        if let Some(&p) = from.partitions.keys().next() {
            // A server restarted without its data lost the meta key with everything else.
            let meta = Keys::meta(self.options().key_prefix());
            let id = reply::opt_string(self.conn.run(redis::cmd("HGET").arg(&meta).arg("id")).await?)?;
            if id.as_deref() != Some(self.identity.id.as_str()) {
                return Err(Error::DataLoss { partition: p });
            }
        }
        let budget = max.clamp(MIN_COMMITS, MAX_COMMITS);
        let mut items = Vec::new();
        let mut exhausted = true;
        for p in 0..partitions {
            let after = from.get(p).map(|pos| pos.offset);
            let (mut part, done) = self.scan_partition(p, after, budget, max, filter).await?;
            exhausted &= done;
            items.append(&mut part);
        }
        items.sort_by_key(|i| (i.offset, i.partition));

        let mut next = from.clone();
        next.store = Some(self.identity.clone());
        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut stopped = false;
        for item in items {
            if let Some(event) = item.event.filter(|e| filter.matches(e)) {
                let len = event.data.encoded_len();
                if events.len() >= max
                    || (!events.is_empty() && bytes.saturating_add(len) > self.limits.max_read_bytes)
                {
                    stopped = true;
                    break;
                }
                bytes = bytes.saturating_add(len);
                events.push(event);
            }
            next.advance(&Position::new(item.partition, item.offset));
        }
        Ok(Batch {
            events,
            next,
            caught_up: !stopped && exhausted,
            quarantined: Vec::new(),
        })
    }

    /// Reads up to `budget` commits of partition `p` after `after` and expands them into at
    /// most `need` wanted events. Returns the items and whether the partition's end was
    /// reached.
    async fn scan_partition(
        &self,
        p: u32,
        after: Option<[u64; 3]>,
        budget: usize,
        need: usize,
        filter: &EventFilter,
    ) -> Result<(Vec<Item>, bool)> {
        let log = self.keys.partition(p, LOG);
        // The entry the checkpoint names is read back in the same pipeline, and must still
        // hold the event the reader saw. No entry a reader can have seen is ever removed
        // (deletion and truncation only hide events; a failed append takes back, in its own
        // script, only the pointer it added), and a log that lost its tail numbers new
        // entries by the server's clock, after the lost ones (unless that clock went back
        // past them), so a missing entry is a log that lost what the reader saw: a restart
        // that lost acknowledged writes, or a failover. New appends move such a log past the
        // checkpoint again (reusing the lost versions with other events): comparing with the
        // last entry alone would resume silently. `[0, 0, 0]` has seen nothing.
        let seen = after.filter(|a| *a != [0, 0, 0]);
        let mut pipe = redis::pipe();
        if let Some([ms, seq, _]) = seen {
            pipe.cmd("XRANGE")
                .arg(&log)
                .arg(format!("{ms}-{seq}"))
                .arg(format!("{ms}-{seq}"));
        }
        // The first id after the checkpoint, inclusive: `(<id>` is a server error for the
        // greatest id, after which nothing can follow.
        let start = match seen {
            None => Some("-".to_owned()),
            Some([ms, seq, _]) if seq < u64::MAX => Some(format!("{ms}-{}", seq + 1)),
            Some([ms, _, _]) if ms < u64::MAX => Some(format!("{}-0", ms + 1)),
            Some(_) => None,
        };
        if let Some(start) = &start {
            pipe.cmd("XRANGE")
                .arg(&log)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(budget);
        }
        let mut answers = self.conn.run_pipe(&pipe).await?.into_iter();
        let mut commits: Vec<(Commit, u64)> = Vec::new();
        if let Some([_, _, index]) = seen {
            let current = reply::array(answers.next().unwrap_or(Value::Nil))?
                .into_iter()
                .next()
                .map(parse_commit)
                .transpose()?
                .filter(|c| c.to.checked_sub(c.from).is_some_and(|last| index <= last))
                .ok_or(Error::DataLoss { partition: p })?;
            let next = current.from.saturating_add(index).saturating_add(1);
            if next <= current.to {
                commits.push((current, next));
            }
        }
        let fresh = reply::array(answers.next().unwrap_or(Value::Nil))?;
        let mut done = fresh.len() < budget;
        for entry in fresh {
            let c = parse_commit(entry)?;
            let start = c.from;
            commits.push((c, start));
        }
        // Expand no more events than the page can use: commits of streams the filter wants
        // count toward `need`, and the last one is cut where the page fills (the next page
        // starts inside it). Expanding ten pages' worth and throwing nine away made a page
        // of 500 from 500-event commits parse every event ten times.
        let wanted = |c: &Commit| {
            filter
                .stream_prefix
                .as_deref()
                .is_none_or(|prefix| c.stream.starts_with(prefix))
        };
        let need = u64::try_from(need.max(1)).unwrap_or(u64::MAX);
        let mut total = 0u64;
        let mut cut = Vec::with_capacity(commits.len());
        for (c, start) in commits.drain(..) {
            if total >= need {
                done = false;
                break;
            }
            let mut end = c.to;
            if wanted(&c) {
                end = end.min(start.saturating_add(need - total - 1));
                total = total.saturating_add(end - start + 1);
                // The rest of the commit is still to be read.
                done &= end == c.to;
            }
            cut.push((c, start, end));
        }

        // Expand: one head read (visibility) and one XRANGE per stream of the window
        // (its commits there cover one contiguous range of versions), in one pipeline: all
        // keys share the partition's slot.
        let mut ranges: Vec<(String, u64, u64)> = Vec::new();
        let mut range_of: HashMap<String, usize> = HashMap::new();
        for (c, start, end) in &cut {
            if !wanted(c) {
                continue;
            }
            match range_of.get(&c.stream) {
                Some(&i) => {
                    if let Some(r) = ranges.get_mut(i) {
                        r.1 = r.1.min(*start);
                        r.2 = r.2.max(*end);
                    }
                }
                None => {
                    range_of.insert(c.stream.clone(), ranges.len());
                    ranges.push((c.stream.clone(), *start, *end));
                }
            }
        }
        let mut pipe = redis::pipe();
        for (stream, lo, hi) in &ranges {
            pipe.cmd("HMGET")
                .arg(self.keys.named(p, HEAD, stream))
                .arg("st")
                .arg("vf");
            pipe.cmd("XRANGE")
                .arg(self.keys.named(p, EVENTS, stream))
                .arg(format!("0-{lo}"))
                .arg(format!("0-{hi}"));
        }
        let mut answers = if ranges.is_empty() {
            Vec::new().into_iter()
        } else {
            self.conn.run_pipe(&pipe).await?.into_iter()
        };
        // Per stream: visibility and the events by version.
        let mut fetched: Vec<Expanded> = Vec::with_capacity(ranges.len());
        for (stream, _, _) in &ranges {
            let mut head = reply::array(answers.next().unwrap_or(Value::Nil))?.into_iter();
            let st = reply::opt_string(head.next().unwrap_or(Value::Nil))?;
            let vf: u64 = reply::opt_string(head.next().unwrap_or(Value::Nil))?
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let id = StreamId::new(stream.clone())?;
            let events = reply::array(answers.next().unwrap_or(Value::Nil))?
                .into_iter()
                .map(|e| decode_event(&id, p, e).map(|e| (e.version, Some(e))))
                .collect::<Result<Vec<_>>>()?;
            fetched.push((st.as_deref() == Some("L"), vf, events));
        }
        let mut items = Vec::new();
        for (c, start, end) in cut {
            let offset = |v: u64| [c.id[0], c.id[1], v - c.from];
            let Some(&r) = range_of.get(&c.stream) else {
                items.extend((start..=end).map(|v| Item {
                    partition: p,
                    offset: offset(v),
                    event: None,
                }));
                continue;
            };
            let Some((live, vf, events)) = fetched.get_mut(r) else {
                continue;
            };
            for v in start..=end {
                let found = events
                    .binary_search_by_key(&v, |(version, _)| *version)
                    .ok()
                    .and_then(|i| events.get_mut(i))
                    .and_then(|(_, e)| e.take());
                if found.is_none() {
                    continue;
                }
                items.push(Item {
                    partition: p,
                    offset: offset(v),
                    event: found.filter(|_| *live && v >= *vf),
                });
            }
        }
        Ok((items, done))
    }
}
