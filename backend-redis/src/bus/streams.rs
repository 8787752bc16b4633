//! [`RedisBus`]: the event bus on Redis Streams.
//!
//! A topic is split into K partitions by [`partition_for`] of the message key; each
//! partition is one Redis stream, and every key of one (topic, partition) shares one hash
//! tag (see `keys.rs`), so one Lua script can update the stream, the group's attempt
//! counters, its delayed retries, its dead letter, its owner lease and its parked keys
//! atomically, on a cluster too. Each consumer group is a Redis consumer group on every
//! partition stream. Within a group a partition is owned by one live consumer at a time
//! under a lease, which is what keeps a key's messages in order and never handled twice at
//! once (see `consumer.rs`).

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use async_trait::async_trait;
use cqrs_core::{
    bus::{
        partition_for, BusCapabilities, DeadLetter, EventBus, Message, MessageHandler, StartFrom,
        Subscription, SubscriptionSpec,
    },
    validate_name, Error, Result,
};
use redis::Value;
use tokio::sync::Notify;

use super::codec::{self, entry_id};
use super::consumer;
use super::keys::BusKeys;
use super::options::RedisBusOptions;
use super::scripts;
use crate::conn::{reply, Conn};
use crate::keys::Keys;
use crate::{RedisBackend, RedisStoreOptions};

/// The Redis Streams event bus: durable (at least once), ordered per key, with delayed
/// retries, a dead letter with its acknowledgement in one step, sequenced parking, priorities,
/// claims after the ack timeout and retention. Clones share the connection and topics.
///
/// Keys live under the store options' prefix (`<prefix>:{b:<topic>:<p>}:…`); see the crate
/// README ("Event bus") for the layout, the guarantees and what an acknowledgement means.
///
/// ```no_run
/// # #[tokio::main(flavor = "multi_thread")] async fn main() -> cqrs_core::Result<()> {
/// use std::sync::Arc;
/// use backend_redis::{RedisBus, RedisBusOptions, RedisStoreOptions};
/// use cqrs_core::{bus::{handler_fn, Delivery, EventBus, Message, SubscriptionSpec}, ContentType};
///
/// let bus = RedisBus::open(RedisStoreOptions::from_env().prefix("shop"), RedisBusOptions::new()).await?;
/// bus.publish("orders", vec![Message::new("order-1", ContentType::Json, "{}")]).await?;
/// let handler = handler_fn(|d: Delivery| async move {
///     println!("{} attempt {}", d.message.key, d.attempt);
///     Ok(())
/// });
/// let sub = bus.subscribe(SubscriptionSpec::new("orders", "billing"), Arc::new(handler)).await?;
/// // ...
/// sub.stop().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBus {
    pub(super) shared: Arc<Shared>,
}

/// What the bus and its subscriptions share.
pub(super) struct Shared {
    pub(super) conn: Conn,
    pub(super) keys: BusKeys,
    pub(super) prefix: String,
    pub(super) options: RedisBusOptions,
    pub(super) closed: AtomicBool,
    /// Publishes through this value: consumers read at once instead of at their next poll.
    pub(super) published: Notify,
    /// Joins, leaves and released partitions: consumers rebalance at once.
    pub(super) rebalance: Notify,
}

impl Shared {
    pub(super) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Partitions grouped for one script call each: all together on a single node (a
    /// script may touch any key there), one by one on a cluster (one slot per call).
    pub(super) fn batches(&self, parts: &[u32]) -> Vec<Vec<u32>> {
        if self.conn.is_cluster() {
            parts.iter().map(|p| vec![*p]).collect()
        } else if parts.is_empty() {
            Vec::new()
        } else {
            vec![parts.to_vec()]
        }
    }
}

impl RedisBus {
    /// Connects as `store` says (URL, single node or cluster, timeouts, TLS, key prefix).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad options, [`Error::Unavailable`] when the server
    /// cannot be reached.
    pub async fn open(store: RedisStoreOptions, options: RedisBusOptions) -> Result<Self> {
        store.validate()?;
        options.validate()?;
        let conn = Conn::connect(&store).await?;
        Ok(RedisBus::with_conn(conn, &store.prefix, options))
    }

    /// A bus on `backend`'s connection and key prefix.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad options.
    pub fn from_backend(backend: &RedisBackend, options: RedisBusOptions) -> Result<Self> {
        options.validate()?;
        Ok(RedisBus::with_conn(
            backend.conn.clone(),
            backend.options().key_prefix(),
            options,
        ))
    }

    fn with_conn(conn: Conn, prefix: &str, options: RedisBusOptions) -> Self {
        RedisBus {
            shared: Arc::new(Shared {
                conn,
                keys: BusKeys::new(prefix),
                prefix: prefix.to_owned(),
                options,
                closed: AtomicBool::new(false),
                published: Notify::new(),
                rebalance: Notify::new(),
            }),
        }
    }

    /// The options.
    pub fn options(&self) -> RedisBusOptions {
        self.shared.options
    }

    /// Deletes every key under this bus's prefix (`SCAN MATCH` and `UNLINK`, on every
    /// master of a cluster), the stores' keys under the same prefix included. Never
    /// `FLUSHDB`. For tests and tear-downs; works after [`EventBus::close`].
    ///
    /// # Errors
    /// [`Error::Unavailable`] and backend errors.
    pub async fn destroy(&self) -> Result<u64> {
        self.shared
            .conn
            .delete_matching(&Keys::pattern(&self.shared.prefix))
            .await
    }

    /// Stores an entry under `key` that does not decode (no message id, no payload), as a
    /// corrupted or foreign writer would: the conformance suite's way to show such an entry
    /// is dead-lettered instead of blocking.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad names, [`Error::Closed`], [`Error::Unavailable`].
    pub async fn publish_undecodable(&self, topic: &str, key: &str, error: &str) -> Result<()> {
        self.shared.check_open()?;
        validate_name("topic", topic)?;
        validate_name("partition key", key)?;
        let p = partition_for(key, self.shared.options.partitions);
        let stream = self.shared.keys.part(topic, p).stream();
        self.shared
            .conn
            .run(
                redis::cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg("k")
                    .arg(key)
                    .arg("id")
                    .arg("not-a-message-id")
                    .arg("x")
                    .arg(error),
            )
            .await?;
        self.shared.published.notify_waiters();
        Ok(())
    }

    fn partitions(&self) -> Vec<u32> {
        (0..self.shared.options.partitions).collect()
    }
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.shared.prefix)
            .field("options", &self.shared.options)
            .field("cluster", &self.shared.conn.is_cluster())
            .field("closed", &self.shared.closed.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventBus for RedisBus {
    fn capabilities(&self) -> BusCapabilities {
        BusCapabilities::all(self.shared.options.partitions)
    }

    /// Appends the messages to their partition streams: on a single node in one script
    /// (all or nothing), on a cluster in one script per partition, sent together (all or
    /// nothing per partition; a failure may leave other partitions published, so a retry
    /// can duplicate them: handlers de-duplicate by message id).
    #[tracing::instrument(skip_all, err(level = "debug"), fields(bus = "redis", topic = %topic, n = messages.len()))]
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.shared.check_open()?;
        cqrs_core::bus::validate_publish(topic, &messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        let k = self.shared.options.partitions;
        if let [m] = messages.as_slice() {
            // One message: one XADD is all or nothing by itself, and needs no script.
            let stream = self.shared.keys.part(topic, partition_for(&m.key, k)).stream();
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream).arg("*");
            codec::encode_fields(m, &mut cmd)?;
            self.shared.conn.run(&cmd).await?;
            self.shared.published.notify_waiters();
            return Ok(());
        }
        let mut by_part: BTreeMap<u32, Vec<&Message>> = BTreeMap::new();
        for m in &messages {
            by_part.entry(partition_for(&m.key, k)).or_default().push(m);
        }
        let parts: Vec<u32> = by_part.keys().copied().collect();
        let mut calls = Vec::new();
        for batch in self.shared.batches(&parts) {
            let mut inv = scripts::PUBLISH.prepare_invoke();
            for p in &batch {
                inv.key(self.shared.keys.part(topic, *p).stream());
            }
            for p in &batch {
                let messages = by_part.get(p).map_or(&[][..], Vec::as_slice);
                inv.arg(messages.len());
                for m in messages {
                    codec::encode_args(m, &mut inv)?;
                }
            }
            calls.push(inv);
        }
        // On a cluster the partitions' calls go out together (one round trip, not one per
        // partition); each is all or nothing on its own, as before.
        let answers = futures::future::join_all(calls.iter().map(|inv| self.shared.conn.script(inv))).await;
        for r in answers {
            r?;
        }
        self.shared.published.notify_waiters();
        Ok(())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(bus = "redis", topic = %spec.topic(), group = %spec.group()))]
    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<Box<dyn Subscription>> {
        self.shared.check_open()?;
        spec.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| Error::backend("redis", e))?;
        let start = match spec.start() {
            StartFrom::Earliest => "0",
            StartFrom::Latest => "$",
        };
        let creates = self.partitions().into_iter().map(|p| {
            let stream = self.shared.keys.part(spec.topic(), p).stream();
            let conn = self.shared.conn.clone();
            let group = spec.group().to_owned();
            async move {
                conn.script(scripts::GROUP.key(stream).arg(group).arg(start))
                    .await
            }
        });
        for r in futures::future::join_all(creates).await {
            r?;
        }
        consumer::start(self.shared.clone(), spec, handler, &runtime).await
    }

    async fn dead_letters(&self, topic: &str, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
        self.shared.check_open()?;
        validate_name("topic", topic)?;
        validate_name("consumer group", group)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let reads = self.partitions().into_iter().map(|p| {
            let key = self.shared.keys.part(topic, p).dead(group);
            let conn = self.shared.conn.clone();
            async move {
                let v = conn
                    .run(
                        redis::cmd("XRANGE")
                            .arg(key)
                            .arg("-")
                            .arg("+")
                            .arg("COUNT")
                            .arg(max),
                    )
                    .await?;
                Ok::<_, Error>((p, v))
            }
        });
        let mut all = Vec::new();
        for r in futures::future::join_all(reads).await {
            let (p, v) = r?;
            for e in reply::array(v)? {
                let id = reply::array(e.clone())?
                    .into_iter()
                    .next()
                    .map(reply::string)
                    .transpose()?
                    .and_then(|s| entry_id(&s))
                    .unwrap_or((0, 0));
                all.push((id, p, codec::dead_letter(topic, p, e)?));
            }
        }
        all.sort_by_key(|(id, p, _)| (*id, *p));
        Ok(all.into_iter().take(max).map(|(_, _, d)| d).collect())
    }

    async fn trim(&self, topic: &str) -> Result<u64> {
        self.shared.check_open()?;
        validate_name("topic", topic)?;
        let trims = self.partitions().into_iter().map(|p| {
            let stream = self.shared.keys.part(topic, p).stream();
            let conn = self.shared.conn.clone();
            async move { conn.script(&scripts::TRIM.key(stream)).await }
        });
        let mut removed = 0;
        for r in futures::future::join_all(trims).await {
            removed += reply::u64(r?)?;
        }
        Ok(removed)
    }

    async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.published.notify_waiters();
        self.shared.rebalance.notify_waiters();
        Ok(())
    }
}

/// Parses a script's stats triple `[version, entries added, unacknowledged]`.
pub(super) fn stats(v: Value) -> Result<[u64; 3]> {
    let mut items = reply::array(v)?.into_iter();
    let mut next = || reply::u64(items.next().unwrap_or(Value::Int(0)));
    Ok([next()?, next()?, next()?])
}
