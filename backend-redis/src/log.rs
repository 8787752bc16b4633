//! `read_all`: expands the commit pointers of every partition's log into events and merges
//! the partitions, keeping each partition's (hence each stream's) order.

use std::collections::{BTreeSet, HashMap};

use cqrs_core::{Batch, Checkpoint, Error, EventFilter, Position, RecordedEvent, Result, StreamId};
use redis::Value;

use crate::conn::reply;
use crate::event_store::{EVENTS, HEAD, LOG};
use crate::keys::Keys;
use crate::packed::{decode_event, parse_entry_id};
use crate::quarantine::{member, offsets, QUARANTINE};
use crate::RedisBackend;

/// Commit pointers read from one partition per call, at most.
const MAX_COMMITS: usize = 1_000;
/// Commit pointers read from one partition per call, at least (so a filtered read that
/// matches little still moves on quickly).
const MIN_COMMITS: usize = 100;
/// Quarantined positions fetched with a partition's commit pointers, at most; a window holding
/// more takes a second round trip for the rest (see [`RedisBackend::scan_partition`]).
const QUARANTINE_PAGE: usize = 100;

/// One log entry expanded: an event position and the event if a reader may see it.
struct Item {
    partition: u32,
    offset: [u64; 3],
    event: Option<RecordedEvent>,
    /// Set aside by an operator: skipped, never decoded, and reported.
    quarantined: bool,
}

/// One stream's part of a window: live?, first visible version, events by version (taken
/// out as their commits are expanded).
type Expanded = (bool, u64, Vec<(u64, Option<RecordedEvent>)>);

/// A commit pointer of a partition log.
struct Commit {
    id: [u64; 2],
    stream: StreamId,
    from: u64,
    to: u64,
    /// An entry without a valid stream and versions, quarantined whole (as index 0): it
    /// stands for that one position and is never expanded.
    unreadable: bool,
}

/// The `Corrupt` error for an unreadable log entry of partition `p`, naming the position
/// (index 0: the entry has no events to count) an operator passes to `Admin::quarantine`.
fn unreadable(p: u32, [ms, seq]: [u64; 2]) -> Error {
    let at = Position::new(p, [ms, seq, 0]);
    Error::corrupt(format!(
        "log entry {ms}-{seq} of partition {p} has no valid stream, first and last version, at \
         log position {at}; Admin::quarantine({at}) lets read_all skip the whole entry"
    ))
}

/// Reads a commit pointer. An entry whose fields are not a commit's (a valid stream id and
/// versions `f <= t`, as `quarantine.lua` checks them too) is `Ok(Err(id))`: the
/// caller skips it if it is quarantined and fails with [`unreadable`] otherwise.
fn parse_commit(entry: Value) -> Result<std::result::Result<Commit, [u64; 2]>> {
    let mut parts = reply::array(entry)?.into_iter();
    let id = reply::string(parts.next().unwrap_or(Value::Nil))?;
    let id = parse_entry_id(&id).ok_or_else(|| Error::corrupt(format!("log entry id {id:?}")))?;
    let mut stream = None;
    let mut from = None;
    let mut to = None;
    let text = |v: Value| reply::string(v).ok();
    let mut fields = reply::array(parts.next().unwrap_or(Value::Nil))?.into_iter();
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        match text(k).as_deref() {
            Some("s") => stream = text(v).and_then(|s| StreamId::new(s).ok()),
            Some("f") => from = text(v).and_then(|x| x.parse().ok()),
            Some("t") => to = text(v).and_then(|x| x.parse().ok()),
            _ => {}
        }
    }
    Ok(match (stream, from, to) {
        (Some(stream), Some(from), Some(to)) if from <= to => Ok(Commit {
            id,
            stream,
            from,
            to,
            unreadable: false,
        }),
        _ => Err(id),
    })
}

/// `Corrupt` from decoding the event at `at` of the log, with the position in the text (its
/// `Display` form, which `Position: FromStr` parses) so an operator can quarantine it.
fn at_position(e: Error, at: Position) -> Error {
    match e {
        Error::Corrupt { what } => Error::corrupt(format!(
            "{what}, at log position {at}; Admin::quarantine({at}) lets read_all skip it"
        )),
        other => other,
    }
}

/// The id `[ms, seq]` of an entry in an `XRANGE` answer (a log entry, or `[0, version]`
/// of a stream's event), without reading its fields.
fn entry_id(entry: &Value) -> Option<[u64; 2]> {
    match entry {
        Value::Array(parts) => match parts.first() {
            Some(Value::BulkString(id)) => std::str::from_utf8(id).ok().and_then(parse_entry_id),
            _ => None,
        },
        _ => None,
    }
}

/// A commit pointer as `(entry id, stream, from, to)`, for the fuzz targets.
#[cfg(feature = "fuzzing")]
pub(crate) fn commit_parts(entry: Value) -> Result<([u64; 2], String, u64, u64)> {
    match parse_commit(entry)? {
        Ok(c) => Ok((c.id, c.stream.as_str().to_owned(), c.from, c.to)),
        Err(id) => Err(Error::corrupt(format!(
            "log entry {id:?} is not a commit pointer"
        ))),
    }
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
        let mut quarantined = Vec::new();
        let mut bytes = 0usize;
        let mut stopped = false;
        for item in items {
            let at = Position::new(item.partition, item.offset);
            if item.quarantined {
                quarantined.push(at);
                next.advance(&at);
                continue;
            }
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
            next.advance(&at);
        }
        Ok(Batch {
            events,
            next,
            caught_up: !stopped && exhausted,
            quarantined,
        })
    }

    /// Reads up to `budget` commits of partition `p` after `after` and expands them into at
    /// most `need` wanted events. Returns the items and whether the partition's end was
    /// reached.
    ///
    /// The partition's quarantined positions from the checkpoint's entry on come in the same
    /// pipeline (one `ZRANGEBYLEX` of a key that usually does not exist: nothing measurable
    /// when nothing is quarantined). A quarantined event becomes an item of its own, its
    /// stream entry skipped before decoding: whatever it holds cannot fail the read.
    async fn scan_partition(
        &self,
        p: u32,
        after: Option<[u64; 3]>,
        budget: usize,
        need: usize,
        filter: &EventFilter,
    ) -> Result<(Vec<Item>, bool)> {
        let log = self.keys.partition(p, LOG);
        let qkey = self.keys.partition(p, QUARANTINE);
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
        // From the start of the checkpoint's entry: an unreadable entry quarantined whole
        // (as index 0) is the checkpoint's entry once a reader has passed it.
        let qstart = seen.map_or_else(
            || "-".to_owned(),
            |[ms, seq, _]| format!("[{}", member([ms, seq, 0])),
        );
        pipe.cmd("ZRANGEBYLEX")
            .arg(&qkey)
            .arg(&qstart)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(QUARANTINE_PAGE);
        let mut answers = self.conn.run_pipe(&pipe).await?.into_iter();
        let current = seen.map(|_| answers.next().unwrap_or(Value::Nil));
        let fresh = if start.is_some() {
            reply::array(answers.next().unwrap_or(Value::Nil))?
        } else {
            Vec::new()
        };
        let mut q = BTreeSet::new();
        offsets(answers.next().unwrap_or(Value::Nil), &mut q)?;
        let mut commits: Vec<(Commit, u64)> = Vec::new();
        if let (Some([ms, seq, index]), Some(current)) = (seen, current) {
            let current = reply::array(current)?
                .into_iter()
                .next()
                .ok_or(Error::DataLoss { partition: p })?;
            match parse_commit(current)? {
                Ok(c) => {
                    // `parse_commit` guarantees `from <= to`.
                    if index > c.to - c.from {
                        return Err(Error::DataLoss { partition: p });
                    }
                    let next = c.from.saturating_add(index).saturating_add(1);
                    if next <= c.to {
                        commits.push((c, next));
                    }
                }
                // Passed whole by this reader: nothing of it is left to read.
                Err(_) if q.contains(&[ms, seq, 0]) => {}
                Err(id) => return Err(unreadable(p, id)),
            }
        }
        let mut done = fresh.len() < budget;
        // The window ends with its last entry: more quarantined positions than one page of
        // them may lie before that end, and then the rest is fetched (rare: an operator
        // quarantining that many events of one window).
        let window_end = fresh
            .last()
            .and_then(entry_id)
            .or_else(|| seen.map(|[ms, seq, _]| [ms, seq]));
        if let (Some([ms, seq]), Some(&last)) = (window_end, q.last()) {
            let end = member([ms, seq, u64::MAX]);
            if q.len() >= QUARANTINE_PAGE && member(last) < end {
                let rest = self
                    .conn
                    .run(
                        redis::cmd("ZRANGEBYLEX")
                            .arg(&qkey)
                            .arg(format!("({}", member(last)))
                            .arg(format!("[{end}")),
                    )
                    .await?;
                offsets(rest, &mut q)?;
            }
        }
        for entry in fresh {
            match parse_commit(entry)? {
                Ok(c) => {
                    let start = c.from;
                    commits.push((c, start));
                }
                Err([ms, seq]) if q.contains(&[ms, seq, 0]) => commits.push((
                    Commit {
                        id: [ms, seq],
                        stream: StreamId::new("-")?,
                        from: 0,
                        to: 0,
                        unreadable: true,
                    },
                    0,
                )),
                Err(id) => return Err(unreadable(p, id)),
            }
        }
        // Expand no more events than the page can use: commits of streams the filter wants
        // count toward `need`, and the last one is cut where the page fills (the next page
        // starts inside it). Expanding ten pages' worth and throwing nine away made a page
        // of 500 from 500-event commits parse every event ten times.
        let wanted = |c: &Commit| {
            !c.unreadable
                && filter
                    .stream_prefix
                    .as_deref()
                    .is_none_or(|prefix| c.stream.as_str().starts_with(prefix))
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
        // keys share the partition's slot. Per stream, the versions quarantined in the
        // window, whose entries are never decoded.
        let mut ranges: Vec<(StreamId, u64, u64, BTreeSet<u64>)> = Vec::new();
        let mut range_of: HashMap<StreamId, usize> = HashMap::new();
        for (c, start, end) in &cut {
            if !wanted(c) {
                continue;
            }
            let skipped = q
                .range([c.id[0], c.id[1], start - c.from]..=[c.id[0], c.id[1], end - c.from])
                .map(|[_, _, index]| c.from.saturating_add(*index));
            match range_of.get(&c.stream) {
                Some(&i) => {
                    if let Some(r) = ranges.get_mut(i) {
                        r.1 = r.1.min(*start);
                        r.2 = r.2.max(*end);
                        r.3.extend(skipped);
                    }
                }
                None => {
                    range_of.insert(c.stream.clone(), ranges.len());
                    ranges.push((c.stream.clone(), *start, *end, skipped.collect()));
                }
            }
        }
        let mut pipe = redis::pipe();
        for (stream, lo, hi, _) in &ranges {
            pipe.cmd("HMGET")
                .arg(self.keys.named(p, HEAD, stream.as_str()))
                .arg("st")
                .arg("vf");
            pipe.cmd("XRANGE")
                .arg(self.keys.named(p, EVENTS, stream.as_str()))
                .arg(format!("0-{lo}"))
                .arg(format!("0-{hi}"));
        }
        let mut answers = if ranges.is_empty() {
            Vec::new().into_iter()
        } else {
            self.conn.run_pipe(&pipe).await?.into_iter()
        };
        // The log position of version `v` of `stream` in the window (for error texts).
        let position_of = |stream: &StreamId, v: u64| {
            cut.iter()
                .find(|(c, start, end)| c.stream == *stream && (*start..=*end).contains(&v))
                .map(|(c, _, _)| Position::new(p, [c.id[0], c.id[1], v - c.from]))
        };
        // Per stream: visibility and the events by version.
        let mut fetched: Vec<Expanded> = Vec::with_capacity(ranges.len());
        for (stream, _, _, skipped) in &ranges {
            let mut head = reply::array(answers.next().unwrap_or(Value::Nil))?.into_iter();
            let st = reply::opt_string(head.next().unwrap_or(Value::Nil))?;
            let vf: u64 = reply::opt_string(head.next().unwrap_or(Value::Nil))?
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            let entries = reply::array(answers.next().unwrap_or(Value::Nil))?;
            let mut events = Vec::with_capacity(entries.len());
            for entry in entries {
                let version = entry_id(&entry).map(|[_, v]| v);
                if version.is_some_and(|v| skipped.contains(&v)) {
                    continue;
                }
                let event = decode_event(stream, p, entry).map_err(|e| {
                    match version.and_then(|v| position_of(stream, v)) {
                        Some(at) => at_position(e, at),
                        None => e,
                    }
                })?;
                events.push((event.version, Some(event)));
            }
            fetched.push((st.as_deref() == Some("L"), vf, events));
        }
        let mut items = Vec::new();
        for (c, start, end) in cut {
            let offset = |v: u64| [c.id[0], c.id[1], v - c.from];
            let Some(&r) = range_of.get(&c.stream).filter(|_| wanted(&c)) else {
                // Not expanded: each position only moves the reader on, or is reported.
                items.extend((start..=end).map(|v| Item {
                    partition: p,
                    offset: offset(v),
                    event: None,
                    quarantined: q.contains(&offset(v)),
                }));
                continue;
            };
            let Some((live, vf, events)) = fetched.get_mut(r) else {
                continue;
            };
            for v in start..=end {
                if q.contains(&offset(v)) {
                    items.push(Item {
                        partition: p,
                        offset: offset(v),
                        event: None,
                        quarantined: true,
                    });
                    continue;
                }
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
                    quarantined: false,
                });
            }
        }
        Ok((items, done))
    }
}
