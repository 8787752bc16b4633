//! [`FifoQueue`]: strict FIFO queues per name on Redis, "as in a waiting room".

use std::{
    fmt,
    sync::{Arc, LazyLock},
    time::Duration,
};

use bytes::Bytes;
use cqrs_core::{validate_name, Clock, Error, Limits, Result, Timestamp};
use redis::{Script, Value};

use crate::{
    conn::{reply, Conn},
    error::unexpected,
    RedisStoreOptions,
};

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/fifo_common.lua"),
                include_str!(concat!("lua/", $file))
            ))
        })
    };
}

static ENQUEUE: LazyLock<Script> = script!("fifo_enqueue.lua");
static POSITION: LazyLock<Script> = script!("fifo_position.lua");
static LEN: LazyLock<Script> = script!("fifo_len.lua");
static TAKE: LazyLock<Script> = script!("fifo_take.lua");
static REMOVE: LazyLock<Script> = script!("fifo_remove.lua");
static SWEEP: LazyLock<Script> = script!("fifo_sweep.lua");

/// How a [`FifoQueue`] behaves. Setters take and return `Self`.
///
/// ```
/// use std::time::Duration;
/// use backend_redis::FifoOptions;
/// let options = FifoOptions::new().entry_ttl(Duration::from_secs(600));
/// assert_eq!(options.ttl(), Duration::from_secs(600));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FifoOptions {
    entry_ttl: Duration,
}

impl FifoOptions {
    /// Default time an entry may wait before it expires: one hour.
    pub const DEFAULT_ENTRY_TTL: Duration = Duration::from_secs(3600);

    /// The defaults.
    pub fn new() -> Self {
        FifoOptions {
            entry_ttl: Self::DEFAULT_ENTRY_TTL,
        }
    }

    /// How long an entry may wait: its deadline is the enqueue time plus this (at least
    /// 1 ms). One TTL per queue keeps expiry cheap (see [`FifoQueue`]).
    #[must_use]
    pub fn entry_ttl(mut self, ttl: Duration) -> Self {
        self.entry_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// The entry TTL.
    pub fn ttl(&self) -> Duration {
        self.entry_ttl
    }
}

impl Default for FifoOptions {
    fn default() -> Self {
        FifoOptions::new()
    }
}

/// What [`FifoQueue::enqueue`] did.
///
/// A duplicate is an outcome, not an error: a producer that retries an enqueue after a
/// timeout gets `Duplicate` with the entry's place, which is what it wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The entry joined the queue.
    Added {
        /// Its ticket: the queue's integer sequence (`INCR`), increasing in enqueue order.
        ticket: u64,
        /// Its 1-based position when it joined (the queue's length then).
        position: u64,
    },
    /// An entry with this id is queued (and not expired); nothing was written.
    Duplicate {
        /// The queued entry's ticket.
        ticket: u64,
        /// The queued entry's current 1-based position.
        position: u64,
    },
}

impl Enqueued {
    /// The entry's position, new or existing.
    pub fn position(&self) -> u64 {
        match self {
            Enqueued::Added { position, .. } | Enqueued::Duplicate { position, .. } => *position,
        }
    }

    /// True for [`Enqueued::Added`].
    pub fn is_added(&self) -> bool {
        matches!(self, Enqueued::Added { .. })
    }
}

/// An entry taken (or looked at) from the head of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dequeued {
    /// The entry's id.
    pub id: String,
    /// Its payload, byte for byte.
    pub payload: Bytes,
    /// Its ticket ([`Enqueued::Added::ticket`]).
    pub ticket: u64,
    /// When it would have expired.
    pub deadline: Timestamp,
}

/// Strict FIFO queues on Redis, one per name, "as in a waiting room": entries join at the
/// tail with a unique id, learn their integer position, leave from the head, may leave
/// from anywhere, and expire if they wait too long.
///
/// - One Lua script per operation, so each is atomic: an enqueue checks the id (a
///   duplicate of a queued, live id is refused: [`Enqueued::Duplicate`]), takes a ticket
///   from an `INCR` sequence and appends the id to a list; concurrent producers cannot
///   interleave inside it, so the queue holds each id once, in the order the enqueues ran.
/// - Positions are integers: the 1-based index in the list (`LPOS`). No sorted set, so no
///   float score anywhere; deadlines are integer milliseconds from the store options'
///   clock.
/// - Expiry: every operation first sweeps the expired entries, inside the same script, so
///   no read ever reports an expired entry and positions stay 1..=len. With one TTL per
///   queue the deadlines grow along the list and a sweep only pops the head (O(expired));
///   if entries with shorter deadlines are queued behind longer ones (two TTLs on one queue,
///   or producer clocks apart), sweeps fall back to a full pass, run only once the smallest
///   deadline has passed. [`FifoQueue::sweep`] runs one on demand.
/// - Costs: `position` and `remove` are O(n) in the queue length (`LPOS`, `LREM`); the rest
///   is O(1) plus what expires.
/// - Keys: `<prefix>:{q<hex of the name>}:fifo:<kind>`; every key of a queue shares the hash
///   tag, so each script is cluster-safe (one queue lives in one slot).
///
/// ```no_run
/// # async fn demo() -> cqrs_core::Result<()> {
/// use backend_redis::{Enqueued, FifoOptions, FifoQueue, RedisStoreOptions};
///
/// let rooms = FifoQueue::connect(RedisStoreOptions::from_env().prefix("shop"), FifoOptions::new()).await?;
/// let joined = rooms.enqueue("concert-7", "visitor-42", "{}").await?;
/// assert!(matches!(joined, Enqueued::Added { .. }));
/// assert_eq!(rooms.position("concert-7", "visitor-42").await?, Some(joined.position()));
/// if let Some(next) = rooms.dequeue("concert-7").await? {
///     println!("let {} in", next.id);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FifoQueue {
    conn: Conn,
    prefix: String,
    clock: Arc<dyn Clock>,
    limits: Limits,
    options: FifoOptions,
}

impl fmt::Debug for FifoQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FifoQueue")
            .field("prefix", &self.prefix)
            .field("options", &self.options)
            .field("cluster", &self.conn.is_cluster())
            .finish_non_exhaustive()
    }
}

/// The five keys of one queue, in the scripts' `KEYS` order.
struct QueueKeys([String; 5]);

impl FifoQueue {
    /// Connects as `store` says (URL, prefix, TLS, timeouts, clock, document size limit).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad options, [`Error::Unavailable`] when Redis cannot be
    /// reached.
    pub async fn connect(store: RedisStoreOptions, options: FifoOptions) -> Result<Self> {
        store.validate()?;
        let conn = Conn::connect(&store).await?;
        Ok(FifoQueue {
            conn,
            prefix: store.prefix.clone(),
            clock: store.clock.clone(),
            limits: store.limits,
            options,
        })
    }

    fn keys(&self, queue: &str) -> Result<QueueKeys> {
        validate_name("queue name", queue)?;
        let mut tag = String::with_capacity(1 + 2 * queue.len());
        tag.push('q');
        for b in queue.bytes() {
            tag.push_str(&format!("{b:02x}"));
        }
        let key = |kind: &str| format!("{}:{{{tag}}}:fifo:{kind}", self.prefix);
        Ok(QueueKeys([
            key("list"),
            key("data"),
            key("info"),
            key("seq"),
            key("sweep"),
        ]))
    }

    fn now(&self) -> i64 {
        self.clock.now().as_millis()
    }

    async fn invoke(&self, script: &Script, keys: &QueueKeys, args: &[&[u8]]) -> Result<Value> {
        let mut inv = script.prepare_invoke();
        for k in &keys.0 {
            inv.key(k);
        }
        inv.arg(self.now());
        for a in args {
            inv.arg(*a);
        }
        self.conn.script(&inv).await
    }

    /// Appends entry `id` with `payload` to `queue`, unless an entry with that id is queued.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty, oversized or control-character queue name or
    /// id; [`Error::TooLarge`] for a payload above the store's document limit;
    /// [`Error::Unavailable`] (with `Outcome::Unknown` the entry may have been added: enqueue
    /// again, a duplicate tells).
    ///
    /// # Cancel safety
    /// Not cancel safe: the entry may be added even if the future is dropped.
    pub async fn enqueue(&self, queue: &str, id: &str, payload: impl Into<Bytes>) -> Result<Enqueued> {
        let keys = self.keys(queue)?;
        validate_name("queue entry id", id)?;
        let payload = payload.into();
        self.limits.check_document(payload.len())?;
        let ttl = i64::try_from(self.options.entry_ttl.as_millis()).unwrap_or(i64::MAX);
        let deadline = self.now().saturating_add(ttl).to_string();
        let answer = self
            .invoke(&ENQUEUE, &keys, &[id.as_bytes(), &payload, deadline.as_bytes()])
            .await?;
        let (status, mut items) = reply::status(answer)?;
        let ticket = reply::next_u64(&mut items)?;
        let position = reply::next_u64(&mut items)?;
        match status.as_str() {
            "added" => Ok(Enqueued::Added { ticket, position }),
            "dup" => Ok(Enqueued::Duplicate { ticket, position }),
            other => Err(unexpected(&format!("enqueue answered {other:?}"))),
        }
    }

    /// The 1-based position of entry `id` in `queue`, `None` if it is not queued (never
    /// queued, dequeued, removed or expired).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad names, [`Error::Unavailable`].
    pub async fn position(&self, queue: &str, id: &str) -> Result<Option<u64>> {
        let keys = self.keys(queue)?;
        validate_name("queue entry id", id)?;
        match self.invoke(&POSITION, &keys, &[id.as_bytes()]).await? {
            Value::Nil => Ok(None),
            other => {
                let mut items = reply::array(other)?.into_iter();
                Ok(Some(reply::next_u64(&mut items)?))
            }
        }
    }

    /// How many live entries `queue` holds.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name, [`Error::Unavailable`].
    pub async fn len(&self, queue: &str) -> Result<u64> {
        let keys = self.keys(queue)?;
        reply::u64(self.invoke(&LEN, &keys, &[]).await?)
    }

    /// Takes the head of `queue`, `None` when it is empty.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name, [`Error::Unavailable`] (with
    /// `Outcome::Unknown` the head may have been taken and is then lost: at most once).
    ///
    /// # Cancel safety
    /// Not cancel safe: the head may be taken even if the future is dropped.
    pub async fn dequeue(&self, queue: &str) -> Result<Option<Dequeued>> {
        self.take(queue, true).await
    }

    /// The head of `queue` without taking it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name, [`Error::Unavailable`].
    pub async fn peek(&self, queue: &str) -> Result<Option<Dequeued>> {
        self.take(queue, false).await
    }

    async fn take(&self, queue: &str, pop: bool) -> Result<Option<Dequeued>> {
        let keys = self.keys(queue)?;
        let flag: &[u8] = if pop { b"1" } else { b"0" };
        let answer = self.invoke(&TAKE, &keys, &[flag]).await?;
        if answer == Value::Nil {
            return Ok(None);
        }
        let mut items = reply::array(answer)?.into_iter();
        let id = reply::next_string(&mut items)?;
        let payload = reply::bytes(items.next().unwrap_or(Value::Nil))?;
        let ticket = reply::next_u64(&mut items)?;
        let deadline = reply::next_u64(&mut items)?;
        Ok(Some(Dequeued {
            id,
            payload: Bytes::from(payload),
            ticket,
            deadline: Timestamp::from_millis(
                i64::try_from(deadline).map_err(|_| Error::corrupt(format!("queue deadline {deadline}")))?,
            ),
        }))
    }

    /// Removes entry `id` from `queue` wherever it is; `false` if it was not queued. The
    /// entries behind it move up one place.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad names, [`Error::Unavailable`].
    pub async fn remove(&self, queue: &str, id: &str) -> Result<bool> {
        let keys = self.keys(queue)?;
        validate_name("queue entry id", id)?;
        Ok(reply::u64(self.invoke(&REMOVE, &keys, &[id.as_bytes()]).await?)? == 1)
    }

    /// Removes the expired entries of `queue` now; returns how many. Optional: every other
    /// operation sweeps first.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name, [`Error::Unavailable`].
    pub async fn sweep(&self, queue: &str) -> Result<u64> {
        let keys = self.keys(queue)?;
        reply::u64(self.invoke(&SWEEP, &keys, &[]).await?)
    }

    /// Deletes `queue` with its entries and ticket sequence (tickets start again at 1).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad name, [`Error::Unavailable`].
    pub async fn purge(&self, queue: &str) -> Result<()> {
        let keys = self.keys(queue)?;
        let mut del = redis::cmd("DEL");
        for k in &keys.0 {
            del.arg(k);
        }
        self.conn.run(&del).await?;
        Ok(())
    }
}
