//! [`RedisBackend`]: the connection, key layout and identity every store shares.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
};

use cqrs_core::{Clock, Error, Limits, Result, StoreIdentity, Stores};
use redis::Value;
use tokio::sync::{Notify, OnceCell};

use crate::conn::{reply, Conn};
use crate::keys::Keys;
use crate::options::RedisStoreOptions;
use crate::scripts;

/// The Redis backend: one value implementing every store trait of `cqrs-core` over one
/// connection (a reconnecting single-node connection or a Redis Cluster connection).
///
/// Capabilities: `partitions` log partitions (1 by default on a single node, with a total
/// order; 3 by default on a cluster), `truncate_before`; event ids are unique per stream
/// only (a cluster cannot check ids across slots atomically).
pub struct RedisBackend {
    pub(crate) conn: Conn,
    pub(crate) keys: Keys,
    pub(crate) identity: StoreIdentity,
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<dyn Clock>,
    options: RedisStoreOptions,
    /// The connections large reads spread their parts over: `conn` first, then the
    /// `read_connections - 1` others, opened by the first read that needs them.
    readers: OnceCell<Vec<Conn>>,
    closed: AtomicBool,
    in_flight: AtomicUsize,
    drained: Notify,
}

/// One store call in progress; `close` waits until none is left.
pub(crate) struct Call<'a>(&'a RedisBackend);

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

impl RedisBackend {
    /// Connects and opens (initialising if new) the store under the options' prefix.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad options or a partition count other than the one the
    /// store was initialised with; [`Error::Unavailable`] when the server cannot be reached.
    pub async fn open(options: RedisStoreOptions) -> Result<Arc<Self>> {
        options.validate()?;
        let conn = Conn::connect(&options).await?;
        let default_partitions = if conn.is_cluster() { 3 } else { 1 };
        let wanted = options.partitions.unwrap_or(default_partitions);
        let meta = Keys::meta(&options.prefix);
        let answer = conn
            .script(
                scripts::INIT
                    .key(&meta)
                    .arg(uuid::Uuid::now_v7().to_string())
                    .arg(wanted),
            )
            .await?;
        let mut items = reply::array(answer)?.into_iter();
        let mut field = |what: &str| -> Result<String> {
            reply::opt_string(items.next().unwrap_or(Value::Nil))?
                .ok_or_else(|| Error::corrupt(format!("the store's meta key {meta} lacks {what}")))
        };
        let id = field("its id")?;
        let epoch = field("its epoch")?
            .parse::<u64>()
            .map_err(|_| Error::corrupt("the store's epoch is not a number"))?;
        let partitions = field("its partition count")?
            .parse::<u32>()
            .map_err(|_| Error::corrupt("the store's partition count is not a number"))?;
        if let Some(asked) = options.partitions.filter(|&p| p != partitions) {
            return Err(Error::invalid(format!(
                "the store under prefix {:?} was initialised with {partitions} partitions, not {asked}",
                options.prefix
            )));
        }
        warn_unless_noeviction(&conn).await;
        Ok(Arc::new(RedisBackend {
            keys: Keys::new(&options.prefix, partitions),
            conn,
            identity: StoreIdentity { id, epoch },
            limits: options.limits,
            clock: options.clock.clone(),
            options,
            readers: OnceCell::new(),
            closed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            drained: Notify::new(),
        }))
    }

    /// The connections the parts of one large read go to, in turn (see
    /// [`RedisStoreOptions::read_connections`]). If the others cannot be opened, the read
    /// goes on the store's own connection alone and the next large read tries again: a
    /// server refusing more clients must not fail reads the one connection can serve.
    pub(crate) async fn readers(&self) -> Vec<Conn> {
        if self.options.read_connections <= 1 {
            return vec![self.conn.clone()];
        }
        let opened = self
            .readers
            .get_or_try_init(|| async {
                let mut all = Vec::with_capacity(self.options.read_connections);
                all.push(self.conn.clone());
                for _ in 1..self.options.read_connections {
                    all.push(self.conn.sibling(&self.options).await?);
                }
                Ok::<_, Error>(all)
            })
            .await;
        match opened {
            Ok(all) => all.clone(),
            Err(e) => {
                tracing::debug!(error = %e, "extra read connections not opened; reading on one");
                vec![self.conn.clone()]
            }
        }
    }

    /// Every store of this backend as trait objects sharing its connection.
    pub fn stores(self: &Arc<Self>) -> Stores {
        Stores::from_backend(Arc::clone(self))
    }

    /// The options it was opened with.
    pub fn options(&self) -> &RedisStoreOptions {
        &self.options
    }

    /// Requests sent to the server so far (a pipeline counts once).
    pub fn requests(&self) -> u64 {
        self.conn.requests()
    }

    /// Deletes every key under this backend's prefix (`SCAN MATCH` and `UNLINK`, on every
    /// master of a cluster). Never `FLUSHDB`. For tests and tear-downs.
    ///
    /// # Errors
    /// [`Error::Unavailable`] and backend errors.
    pub async fn destroy(&self) -> Result<u64> {
        self.conn
            .delete_matching(&Keys::pattern(&self.options.prefix))
            .await
    }

    /// Starts a store call, refused after `close`. Hold the returned guard for the call.
    pub(crate) fn begin(&self) -> Result<Call<'_>> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let call = Call(self);
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(call)
    }

    /// Refuses every later call, then waits for the calls in progress to finish.
    pub(crate) async fn shut(&self) {
        self.closed.store(true, Ordering::Release);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            drained.await;
        }
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("options", &self.options)
            .field("identity", &self.identity)
            .field("partitions", &self.keys.partitions())
            .field("cluster", &self.conn.is_cluster())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Opens a Redis store from a URL (see [`RedisStoreOptions::from_url`] for the `prefix` and
/// `partitions` parameters) and returns its stores.
///
/// # Errors
/// As [`RedisBackend::open`].
pub async fn connect(url: &str) -> Result<Stores> {
    Ok(RedisBackend::open(RedisStoreOptions::from_url(url)?)
        .await?
        .stores())
}

/// Logs a warning when the server may evict keys: an evicted event stream or head is lost
/// data. Servers that refuse `CONFIG GET` (managed services) are not checked.
async fn warn_unless_noeviction(conn: &Conn) {
    let Ok(answer) = conn
        .run(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
        .await
    else {
        return;
    };
    let policy = match answer {
        Value::Map(pairs) => pairs.into_iter().next().map(|(_, v)| v),
        other => reply::array(other).ok().and_then(|v| v.into_iter().nth(1)),
    };
    if let Some(policy) = policy.and_then(|p| reply::opt_string(p).ok().flatten()) {
        if policy != "noeviction" {
            tracing::warn!(
                policy = %policy,
                "Redis maxmemory-policy is not noeviction: the server may evict event streams; set maxmemory-policy noeviction"
            );
        }
    }
}
