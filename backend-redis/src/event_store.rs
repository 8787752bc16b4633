//! [`EventStore`] for [`RedisBackend`]: appends and deletions as Lua scripts, stream reads
//! by explicit entry ids (`0-<version>`).

use std::collections::BTreeSet;

use async_trait::async_trait;
use cqrs_core::{
    AppendOutcome, Batch, Capabilities, Checkpoint, DeleteMode, Error, EventData, EventFilter, EventStore,
    ExpectedVersion, LimitKind, Position, RecordedEvent, Result, StoreIdentity, StreamId, StreamPage,
    StreamState, MAX_VERSION,
};
use futures::{StreamExt as _, TryStreamExt as _};
use redis::Value;

use crate::conn::reply;
use crate::error::{damaged_head, parse_state, unexpected};
use crate::packed::{decode_event, parse_entry_id, Packed};
use crate::{scripts, RedisBackend};

/// Key kinds of a stream.
pub(crate) const HEAD: &str = "h";
/// The stream's events (a Redis stream with entry ids `0-<version>`).
pub(crate) const EVENTS: &str = "e";
/// Event id -> version.
pub(crate) const IDS: &str = "i";
/// A partition's log of commit pointers.
pub(crate) const LOG: &str = "log";
/// A partition's live streams (lex set).
pub(crate) const LIVE: &str = "live";
/// A partition's streams, deleted ones included (lex set).
pub(crate) const ALL: &str = "all";
/// A stream's snapshots (hash padded version -> snapshot).
pub(crate) const SNAPSHOTS: &str = "s";
/// A stream's snapshot versions (lex set of padded versions).
pub(crate) const SNAPSHOT_VERSIONS: &str = "sv";
/// A partition's streams having snapshots (lex set).
pub(crate) const SNAPSHOT_STREAMS: &str = "snaps";

/// `ExpectedVersion` as the scripts take it.
pub(crate) fn expectation(expected: ExpectedVersion) -> (&'static str, u64) {
    match expected.normalized() {
        ExpectedVersion::Any => ("any", 0),
        ExpectedVersion::NoStream => ("none", 0),
        ExpectedVersion::StreamExists => ("exists", 0),
        ExpectedVersion::Exact(n) => ("exact", n),
    }
}

/// The outcome of an append from the script's status answer `<ok|dup> <first> <last> <log
/// entry> <index of the last event>`: a fresh append, or the re-send of a committed batch
/// (whose position is `-` when its entry could not be read back).
fn appended(answer: &str, partition: u32) -> Result<AppendOutcome> {
    let bad = || unexpected(&format!("append answered {answer:?}"));
    let mut parts = answer.split(' ');
    let fresh = match parts.next() {
        Some("ok") => true,
        Some("dup") => false,
        _ => return Err(bad()),
    };
    let mut number = || parts.next().and_then(|x| x.parse::<u64>().ok());
    let (first, last) = (number().ok_or_else(bad)?, number().ok_or_else(bad)?);
    let lid = parts.next().and_then(parse_entry_id);
    let index = parts.next().and_then(|x| x.parse::<u64>().ok());
    let position = lid
        .zip(index)
        .map(|([ms, seq], x)| Position::new(partition, [ms, seq, x]));
    if fresh && position.is_none() {
        return Err(bad());
    }
    Ok(AppendOutcome {
        first_version: first,
        next_expected: last,
        position,
    })
}

/// Entries fetched by the first request of a stream read.
const FIRST_CHUNK: usize = 256;
/// Most entries fetched by one round of a stream read.
const MAX_CHUNK: usize = 10_000;
/// Entries per `XRANGE` when a forward round is split (see [`RedisBackend::read_page`]).
const PART: usize = 1_000;
/// Parts of one round in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A lex-range start after `after` (`-` for the start).
pub(crate) fn lex_after(after: Option<&str>) -> Vec<u8> {
    match after {
        Some(a) => [b"(".as_slice(), a.as_bytes()].concat(),
        None => b"-".to_vec(),
    }
}

impl RedisBackend {
    /// The stream's state, read from its head.
    pub(crate) async fn state_of(&self, stream: &StreamId) -> Result<StreamState> {
        let p = self.keys.partition_of(stream.as_str());
        let head = self.keys.named(p, HEAD, stream.as_str());
        let answer = self
            .conn
            .run(redis::cmd("HMGET").arg(&head).arg("v").arg("st"))
            .await?;
        let mut items = reply::array(answer)?.into_iter();
        let v = reply::opt_string(items.next().unwrap_or(Value::Nil))?;
        let st = reply::opt_string(items.next().unwrap_or(Value::Nil))?;
        let v = v.as_deref().unwrap_or("0");
        match st.as_deref() {
            None => Ok(StreamState::Missing),
            Some("T") => Ok(StreamState::Tombstoned),
            Some(flag) => parse_state(&format!("{flag}:{v}")),
        }
    }

    /// Names from one lex set per partition, merged bytewise, after `after`, at most
    /// `limit + 1` (so the caller can tell whether more exist).
    pub(crate) async fn merged_names(
        &self,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let mut names = BTreeSet::new();
        let take = limit.saturating_add(1);
        for p in 0..self.keys.partitions() {
            let key = self.keys.partition(p, kind);
            let answer = self
                .conn
                .run(
                    redis::cmd("ZRANGEBYLEX")
                        .arg(&key)
                        .arg(lex_after(after))
                        .arg("+")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(take),
                )
                .await?;
            for name in reply::array(answer)? {
                names.insert(reply::string(name)?);
            }
        }
        Ok(names.into_iter().take(take).collect())
    }

    /// Reads a page forward from `start` (or backward from `start`, `None`: the end),
    /// stopping at `max` events or the byte limit. The first request pipelines the head
    /// (state, first visible version) with a first chunk of entries; later chunks are sized
    /// from the average event size so a page never loads much more than the byte limit.
    /// `raw` ignores deletion and truncation (for [`cqrs_core::Admin::read_raw`]).
    ///
    /// Events never change once written, so reading the head and the entries in one
    /// pipeline (not a transaction) returns what a read at the head's moment would have.
    ///
    /// A large forward chunk goes out as `XRANGE`s of [`PART`] known versions (entry ids are
    /// `0-<version>`), [`PARTS_IN_FLIGHT`] at a time, on the read connections in turn, each
    /// fetched and decoded by a task of its own and taken in order: the client's parsing
    /// and decoding, not the server, bound a long read, and this way they run on every
    /// worker thread and overlap the server's work on the next parts.
    pub(crate) async fn read_page(
        &self,
        stream: &StreamId,
        start: Option<u64>,
        max: usize,
        forward: bool,
        raw: bool,
    ) -> Result<Vec<RecordedEvent>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        if !forward && start == Some(0) {
            // Nothing to read, but a tombstoned stream refuses the read, as on the other
            // backends (found by the model test in cqrs/tests/model.rs).
            if !raw && self.state_of(stream).await? == StreamState::Tombstoned {
                return Err(Error::StreamDeleted {
                    stream: stream.clone(),
                });
            }
            return Ok(Vec::new());
        }
        let p = self.keys.partition_of(stream.as_str());
        let head = self.keys.named(p, HEAD, stream.as_str());
        let events = self.keys.named(p, EVENTS, stream.as_str());
        let mut page = Page {
            stream,
            partition: p,
            out: Vec::new(),
            bytes: 0,
            max_bytes: self.limits.max_read_bytes,
            visible_from: 1,
            raw,
        };
        // Forward: the next version to read; backward: the highest (None: the end).
        let mut cursor = if forward {
            Some(start.unwrap_or(0).max(1))
        } else {
            start
        };
        let mut chunk = max.min(FIRST_CHUNK);
        let mut head_read = raw;
        loop {
            let done = match cursor {
                Some(from) if forward && head_read && chunk > PART => {
                    let last = from.saturating_add(count_u64(chunk) - 1);
                    let parts = (from..=last).step_by(PART).map(|at| {
                        let mut cmd = redis::cmd("XRANGE");
                        let to = at.saturating_add(count_u64(PART) - 1).min(last);
                        cmd.arg(&events).arg(format!("0-{at}")).arg(format!("0-{to}"));
                        (cmd, to - at + 1)
                    });
                    // Each part is fetched and decoded in a task of its own, on the
                    // read connections in turn: the parts' answers are parsed (in their
                    // connections' tasks) and decoded on every worker thread at once, and
                    // an entry is freed on the thread that allocated it (a free from
                    // another thread contends on the allocator's lock).
                    let readers = self.readers().await;
                    page.out.reserve(chunk);
                    let parts = parts.enumerate().map(|(i, (cmd, wanted))| {
                        let conn = readers[i % readers.len()].clone();
                        let stream = stream.clone();
                        let task = AbortOnDrop(tokio::spawn(async move {
                            let entries = reply::array(conn.run(&cmd).await?)?;
                            let short = count_u64(entries.len()) < wanted;
                            let events = entries
                                .into_iter()
                                .map(|entry| decode_event(&stream, p, entry))
                                .collect::<Result<Vec<_>>>()?;
                            Ok::<_, Error>((events, short))
                        }));
                        async move {
                            let mut task = task;
                            (&mut task.0)
                                .await
                                .map_err(|e| unexpected(&format!("a stream read part failed: {e}")))?
                        }
                    });
                    let mut answers = futures::stream::iter(parts).buffered(PARTS_IN_FLIGHT);
                    let mut done = false;
                    while let Some((events, short)) = answers.try_next().await? {
                        if page.take_decoded(events) || short {
                            done = true;
                            break;
                        }
                    }
                    done
                }
                _ => {
                    let mut pipe = redis::pipe();
                    if !head_read {
                        pipe.cmd("HMGET").arg(&head).arg("st").arg("vf");
                    }
                    let at = cursor.map_or_else(|| "+".to_owned(), |c| format!("0-{c}"));
                    if forward {
                        pipe.cmd("XRANGE").arg(&events).arg(at).arg("+");
                    } else {
                        pipe.cmd("XREVRANGE").arg(&events).arg(at).arg("-");
                    }
                    pipe.arg("COUNT").arg(chunk);
                    let mut answers = self.conn.run_pipe(&pipe).await?.into_iter();
                    if !head_read {
                        head_read = true;
                        let mut h = reply::array(answers.next().unwrap_or(Value::Nil))?.into_iter();
                        let st = reply::opt_string(h.next().unwrap_or(Value::Nil))?;
                        page.visible_from = reply::opt_string(h.next().unwrap_or(Value::Nil))?
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(1);
                        match st.as_deref() {
                            Some("T") => {
                                return Err(Error::StreamDeleted {
                                    stream: stream.clone(),
                                })
                            }
                            Some("L") => {}
                            _ => return Ok(Vec::new()),
                        }
                        if forward && cursor.is_some_and(|c| c < page.visible_from) {
                            cursor = Some(page.visible_from);
                            continue;
                        }
                    }
                    let entries = reply::array(answers.next().unwrap_or(Value::Nil))?;
                    let short = entries.len() < chunk;
                    page.take(entries)? || short
                }
            };
            let Some(last) = page.out.last().map(|e| e.version) else {
                return Ok(page.out);
            };
            if done || page.out.len() >= max {
                return Ok(page.out);
            }
            cursor = if forward {
                Some(last.saturating_add(1))
            } else if last <= 1 {
                return Ok(page.out);
            } else {
                Some(last - 1)
            };
            let average = (page.bytes / page.out.len()).max(1);
            let room = page.max_bytes.saturating_sub(page.bytes) / average + 1;
            chunk = (max - page.out.len()).min(room).clamp(1, MAX_CHUNK);
        }
    }
}

/// The events of one stream page as they are read, and what ends the page.
struct Page<'a> {
    stream: &'a StreamId,
    partition: u32,
    out: Vec<RecordedEvent>,
    bytes: usize,
    max_bytes: usize,
    visible_from: u64,
    raw: bool,
}

impl Page<'_> {
    /// Decodes `entries` into the page; `true` once the page is complete (the byte limit,
    /// or a version below the first visible one).
    fn take(&mut self, entries: Vec<Value>) -> Result<bool> {
        for entry in entries {
            if self.push(decode_event(self.stream, self.partition, entry)?) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// [`Page::take`] for events decoded already.
    fn take_decoded(&mut self, events: Vec<RecordedEvent>) -> bool {
        events.into_iter().any(|event| self.push(event))
    }

    /// Adds one event unless it ends the page (then `true`, and the event is left out).
    fn push(&mut self, event: RecordedEvent) -> bool {
        if !self.raw && event.version < self.visible_from {
            return true;
        }
        let len = event.data.encoded_len();
        if !self.out.is_empty() && self.bytes.saturating_add(len) > self.max_bytes {
            return true;
        }
        self.bytes = self.bytes.saturating_add(len);
        self.out.push(event);
        false
    }
}

/// A spawned task that is cancelled when its handle is dropped (a dropped read stops
/// its parts still in flight instead of leaving them running).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn count_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[async_trait]
impl EventStore for RedisBackend {
    fn capabilities(&self) -> Capabilities {
        let partitions = self.keys.partitions();
        Capabilities {
            partitions,
            total_order: partitions == 1,
            global_event_id_uniqueness: false,
            truncate: true,
        }
    }

    fn limits(&self) -> cqrs_core::Limits {
        self.limits
    }

    fn identity(&self) -> StoreIdentity {
        self.identity.clone()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream, expected = %expected, events = events.len()))]
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendOutcome> {
        let _call = self.begin()?;
        self.limits.check_batch(&events)?;
        let p = self.keys.partition_of(stream.as_str());
        let name = stream.as_str();
        let (kind, n) = expectation(expected);
        let packed = events.iter().map(Packed::new).collect::<Result<Vec<_>>>()?;
        let keys = [
            self.keys.named(p, HEAD, name),
            self.keys.named(p, EVENTS, name),
            self.keys.named(p, IDS, name),
            self.keys.partition(p, LOG),
            self.keys.partition(p, LIVE),
            self.keys.partition(p, ALL),
        ];
        // EVALSHA built by hand, each event packed straight into the command's buffer,
        // sized once for the whole command.
        let mut cmd = redis::cmd("EVALSHA");
        let fixed = keys.iter().map(String::len).sum::<usize>() + name.len() + 120;
        let bytes = fixed + packed.iter().map(|e| e.len() + 16).sum::<usize>();
        redis::RedisWrite::reserve_space_for_args(&mut cmd, [bytes]);
        cmd.arg(scripts::APPEND.get_hash())
            .arg(keys.len())
            .arg(&keys)
            .arg(name);
        // The expectation is one argument: the kind, or the exact version itself.
        if kind == "exact" {
            cmd.arg(n);
        } else {
            cmd.arg(kind);
        }
        // The script counts the events from the number of arguments. One event is sent as
        // its packed form alone (the script cuts its id out of it): every argument costs the
        // server about 1,200 instructions, and a single append is the common call.
        if let [one] = packed.as_slice() {
            cmd.arg(one);
        } else if !packed.is_empty() {
            let ids = || events.iter().map(|e| e.event_id.as_uuid().as_bytes());
            if ids().zip(ids().skip(1)).all(|(a, b)| a < b) {
                // Ascending ids (time-ordered ids from one writer): the script cuts an id
                // out of its event only if it needs it, and on a stream whose ids have
                // always ascended it needs none.
                cmd.arg("a");
            } else {
                // The script writes every id of such a batch: sent apart, so it cuts no
                // string per event. The smallest and greatest first (bytewise): its
                // per-id lookup is skipped when the smallest is above every id committed.
                let lowest = ids().min().map_or(&[][..], |id| &id[..]);
                let highest = ids().max().map_or(&[][..], |id| &id[..]);
                cmd.arg("i").arg(lowest).arg(highest);
                for id in ids() {
                    cmd.arg(&id[..]);
                }
            }
            for e in &packed {
                cmd.arg(e);
            }
        }
        let answer = self.conn.eval(&scripts::APPEND, &cmd).await?;
        if let Value::SimpleString(ok) = &answer {
            return appended(ok, p);
        }
        let (status, mut items) = reply::status(answer)?;
        match status.as_str() {
            "empty" => {
                let current = reply::next_u64(&mut items)?;
                Ok(AppendOutcome {
                    first_version: current + 1,
                    next_expected: current,
                    position: None,
                })
            }
            "conflict" => Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: parse_state(&reply::next_string(&mut items)?)?,
            }),
            "mismatch" => Err(Error::IdempotencyMismatch {
                stream: stream.clone(),
                reason: reply::next_string(&mut items)?,
            }),
            "deleted" => Err(Error::StreamDeleted {
                stream: stream.clone(),
            }),
            "toolarge" => Err(Error::TooLarge {
                kind: LimitKind::Version,
                limit: MAX_VERSION,
                actual: reply::next_string(&mut items)?.parse().unwrap_or(u64::MAX),
            }),
            "corrupt" => Err(damaged_head(stream, items)),
            other => Err(unexpected(&format!("append answered {other:?}"))),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream, from = from, max = max))]
    async fn read_stream(&self, stream: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        let _call = self.begin()?;
        self.read_page(stream, Some(from), max, true, false).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream, from = ?from, max = max))]
    async fn read_stream_backward(
        &self,
        stream: &StreamId,
        from: Option<u64>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let _call = self.begin()?;
        self.read_page(stream, from, max, false, false).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream))]
    async fn stream_state(&self, stream: &StreamId) -> Result<StreamState> {
        let _call = self.begin()?;
        self.state_of(stream).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", max = max))]
    async fn read_all(&self, from: &Checkpoint, max: usize, filter: &EventFilter) -> Result<Batch> {
        let _call = self.begin()?;
        self.read_log(from, max, filter).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream, expected = %expected, mode = ?mode))]
    async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()> {
        let _call = self.begin()?;
        let p = self.keys.partition_of(stream.as_str());
        let name = stream.as_str();
        let (kind, n) = expectation(expected);
        let answer = self
            .conn
            .script(
                scripts::DELETE
                    .key(self.keys.named(p, HEAD, name))
                    .key(self.keys.partition(p, LIVE))
                    .key(self.keys.named(p, SNAPSHOTS, name))
                    .key(self.keys.named(p, SNAPSHOT_VERSIONS, name))
                    .key(self.keys.partition(p, SNAPSHOT_STREAMS))
                    .arg(name)
                    .arg(kind)
                    .arg(n)
                    .arg(match mode {
                        DeleteMode::Soft => "soft",
                        DeleteMode::Tombstone => "tomb",
                    }),
            )
            .await?;
        let (status, mut items) = reply::status(answer)?;
        match status.as_str() {
            "ok" => Ok(()),
            "conflict" => Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: parse_state(&reply::next_string(&mut items)?)?,
            }),
            "deleted" => Err(Error::StreamDeleted {
                stream: stream.clone(),
            }),
            "corrupt" => Err(damaged_head(stream, items)),
            other => Err(unexpected(&format!("delete answered {other:?}"))),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", stream = %stream, version = version))]
    async fn truncate_before(&self, stream: &StreamId, version: u64) -> Result<()> {
        let _call = self.begin()?;
        let p = self.keys.partition_of(stream.as_str());
        let answer = self
            .conn
            .script(
                scripts::TRUNCATE
                    .key(self.keys.named(p, HEAD, stream.as_str()))
                    .arg(version),
            )
            .await?;
        let (status, items) = reply::status(answer)?;
        match status.as_str() {
            "ok" => Ok(()),
            "deleted" => Err(Error::StreamDeleted {
                stream: stream.clone(),
            }),
            "corrupt" => Err(damaged_head(stream, items)),
            other => Err(unexpected(&format!("truncate answered {other:?}"))),
        }
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis", limit = limit))]
    async fn list_streams(&self, after: Option<&StreamId>, limit: usize) -> Result<StreamPage> {
        let _call = self.begin()?;
        if limit == 0 {
            return Err(Error::invalid("list_streams limit must be at least 1"));
        }
        let mut names = self
            .merged_names(LIVE, after.map(StreamId::as_str), limit)
            .await?;
        let more = names.len() > limit;
        names.truncate(limit);
        let streams = names.into_iter().map(StreamId::new).collect::<Result<Vec<_>>>()?;
        let next = if more { streams.last().cloned() } else { None };
        Ok(StreamPage { streams, next })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "redis"))]
    async fn close(&self) -> Result<()> {
        self.shut().await;
        Ok(())
    }
}
