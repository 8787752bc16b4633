//! [`PgBus`]: publishing to the outbox, dead letters, trimming, closing.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use async_trait::async_trait;
use cqrs_core::{
    bus::{
        partition_for, BusCapabilities, DeadLetter, DeadLetterReason, EventBus, Message, MessageHandler,
        MessageId, Priority, Subscription, SubscriptionSpec,
    },
    validate_name, ContentType, Error, Metadata, Result, Timestamp,
};
use sqlx::{PgConnection, PgPool, Row};
use tokio::{sync::Notify, task::JoinHandle};
use uuid::Uuid;

use super::{consumer, notifier, PgBusOptions};
use crate::{error, schema::SchemaName, PgBackend};

/// The statements of the bus with the schema substituted once.
pub(super) struct Statements {
    pub(super) publish: String,
    pub(super) group: String,
    pub(super) member: String,
    pub(super) rebalance: String,
    pub(super) release: String,
    pub(super) pending: String,
    pub(super) load: String,
    pub(super) settle: String,
    pub(super) deliver_batch: String,
    pub(super) ack_batch: String,
    pub(super) advance: String,
    pub(super) metrics: String,
    pub(super) trim: String,
    pub(super) dead_letters: String,
    pub(super) head: String,
}

impl Statements {
    fn new(schema: &SchemaName) -> Self {
        Statements {
            publish: schema.sql(include_str!("../sql/bus_publish.sql")),
            group: schema.sql(include_str!("../sql/bus_group.sql")),
            member: schema.sql(
                "INSERT INTO __SCHEMA__.bus_members AS m (topic, grp, consumer, incarnation, alive_until)
                 VALUES ($1, $2, $3, $4, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint + $5)
                 ON CONFLICT (topic, grp, consumer) DO UPDATE
                 SET incarnation = excluded.incarnation, alive_until = excluded.alive_until
                 WHERE m.alive_until <= floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
                 RETURNING 1",
            ),
            rebalance: schema.sql("SELECT * FROM __SCHEMA__.bus_rebalance($1, $2, $3, $4, $5, $6)"),
            release: schema.sql("SELECT __SCHEMA__.bus_release($1, $2, $3, $4, $5, $6)"),
            pending: schema.sql(
                "SELECT q.partition, q.tx_id::text AS tx, q.seq, q.attempts, q.done,
                        q.due_at - floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS due_in,
                        floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - q.first_at AS first_ago,
                        NULL::text AS key, NULL::uuid AS behind
                 FROM __SCHEMA__.bus_pending q
                 WHERE q.topic = $1 AND q.grp = $2 AND q.partition = ANY ($3::integer[])
                 UNION ALL
                 SELECT k.partition, NULL, NULL, NULL, NULL, NULL, NULL, k.key, k.behind
                 FROM __SCHEMA__.bus_parked k
                 WHERE k.topic = $1 AND k.grp = $2 AND k.partition = ANY ($3::integer[])",
            ),
            load: schema.sql(include_str!("../sql/bus_load.sql")),
            settle: schema.sql(include_str!("../sql/bus_settle.sql")),
            deliver_batch: schema.sql(include_str!("../sql/bus_deliver_batch.sql")),
            ack_batch: schema.sql(include_str!("../sql/bus_ack_batch.sql")),
            advance: schema.sql(include_str!("../sql/bus_advance.sql")),
            metrics: schema.sql(include_str!("../sql/bus_metrics.sql")),
            trim: schema.sql(include_str!("../sql/bus_trim.sql")),
            dead_letters: schema.sql(
                "SELECT partition, entry, key, priority, headers, content_type, payload, msg_id,
                        reason, error, behind, attempts, at_ms
                 FROM __SCHEMA__.bus_dead_letters WHERE topic = $1 AND grp = $2 ORDER BY id LIMIT $3",
            ),
            head: schema.sql(include_str!("../sql/bus_head.sql")),
        }
    }
}

/// What the bus, its notifier and its subscriptions share.
pub(super) struct Shared {
    pub(super) pool: PgPool,
    pub(super) schema: SchemaName,
    pub(super) options: PgBusOptions,
    pub(super) sql: Statements,
    /// Wakes every consumer's coordinator: something may have been published.
    pub(super) wake: Notify,
    /// Asks the notifier to send one NOTIFY (after a local commit).
    pub(super) poke: Notify,
    /// Bumped when a consumer hands partitions back: others rebalance at once.
    pub(super) handovers: AtomicU64,
    pub(super) closed: AtomicBool,
    /// This bus's id, the payload of its notifications (it ignores its own).
    pub(super) instance: String,
    notifier: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    pub(super) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Starts the notifier task on first use (it needs a runtime, the constructor does not).
    pub(super) fn ensure_notifier(self: &Arc<Self>) {
        let mut slot = self.notifier.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() || self.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            *slot = Some(rt.spawn(notifier::run(Arc::clone(self))));
        }
    }

    /// Wakes local consumers and has the notifier tell other processes.
    pub(super) fn announce(&self) {
        self.wake.notify_waiters();
        self.poke.notify_one();
    }
}

/// The PostgreSQL outbox bus. Clones share the same notifier and state.
///
/// Built on a [`PgBackend`]'s pool and schema ([`PgBus::new`] or [`PgBackend::bus`]); the
/// schema must be migrated ([`PgBackend::migrate`] creates the bus tables too). Declares
/// every capability: durable (at-least-once), ordered per key, dead letter with sequenced
/// parking, delayed retry, priorities, claim after the ack timeout, retention.
///
/// ```no_run
/// # #[tokio::main(flavor = "multi_thread")] async fn main() -> cqrs_core::Result<()> {
/// use std::sync::Arc;
/// use backend_postgres::{PgBackend, PgBusOptions, PgStoreOptions};
/// use cqrs_core::{bus::{handler_fn, Delivery, EventBus, Message, SubscriptionSpec}, ContentType};
///
/// let backend = PgBackend::connect(&PgStoreOptions::from_env()?).await?;
/// backend.migrate().await?;
/// let bus = backend.bus(PgBusOptions::new());
/// // In the application's own transaction: its state and its message commit together.
/// let mut tx = backend_postgres::begin(backend.pool()).await.map_err(|e| cqrs_core::Error::backend("postgres", e))?;
/// bus.publish_in(&mut tx, "orders", vec![Message::new("order-1", ContentType::Json, "{}")]).await?;
/// tx.commit().await.map_err(|e| cqrs_core::Error::backend("postgres", e))?;
/// bus.wake();
/// let handler = handler_fn(|d: Delivery| async move { println!("{}", d.message.key); Ok(()) });
/// let sub = bus.subscribe(SubscriptionSpec::new("orders", "billing"), Arc::new(handler)).await?;
/// sub.stop().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgBus {
    pub(super) shared: Arc<Shared>,
}

impl PgBus {
    /// A bus on `backend`'s pool and schema.
    pub fn new(backend: &PgBackend, options: PgBusOptions) -> Self {
        PgBus::on_pool(backend.pool.clone(), backend.schema.clone(), options)
    }

    /// A bus on `pool` in `schema` (migrated by [`PgBackend::migrate`]).
    pub fn on_pool(pool: PgPool, schema: SchemaName, options: PgBusOptions) -> Self {
        PgBus {
            shared: Arc::new(Shared {
                sql: Statements::new(&schema),
                pool,
                schema,
                options,
                wake: Notify::new(),
                poke: Notify::new(),
                handovers: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                instance: Uuid::now_v7().simple().to_string(),
                notifier: Mutex::new(None),
            }),
        }
    }

    /// The options.
    pub fn options(&self) -> &PgBusOptions {
        &self.shared.options
    }

    /// Publishes `messages` to `topic` on `conn`, inside whatever transaction it is in: the
    /// rows become visible when that transaction commits, atomically with the caller's own
    /// writes, and are delivered in `(tx_id, seq)` order below the horizon (so a long
    /// transaction delays them, it never loses them). Nothing is notified: call
    /// [`PgBus::wake`] after the commit, or the notifier's poll finds them. A message whose id
    /// the topic already holds is skipped (re-publishing is a no-op).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad topic or message (before any I/O),
    /// [`Error::Unavailable`], [`Error::Closed`].
    ///
    /// # Cancel safety
    /// Not cancel safe: the statement may have run in the caller's transaction.
    pub async fn publish_in(
        &self,
        conn: &mut PgConnection,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<()> {
        self.shared.check_open()?;
        cqrs_core::bus::validate_publish(topic, &messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        let k = self.shared.options.get_partitions();
        let n = messages.len();
        let (mut parts, mut keys, mut prios, mut ids, mut headers, mut cts, mut payloads) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for m in &messages {
            parts.push(i32::try_from(partition_for(&m.key, k)).unwrap_or(0));
            keys.push(m.key.as_str());
            prios.push(i16::try_from(m.priority.rank()).unwrap_or(2));
            ids.push(*m.id.as_uuid());
            headers.push(m.headers.to_json());
            cts.push(m.content_type.as_str());
            payloads.push(m.payload.as_ref());
        }
        sqlx::query(&self.shared.sql.publish)
            .bind(topic)
            .bind(parts)
            .bind(keys)
            .bind(prios)
            .bind(ids)
            .bind(headers)
            .bind(cts)
            .bind(payloads)
            .execute(&mut *conn)
            .await
            .map_err(error::sent)?;
        Ok(())
    }

    /// Wakes this process's consumers and notifies other processes' buses: call it after
    /// committing a transaction that used [`PgBus::publish_in`].
    pub fn wake(&self) {
        self.shared.ensure_notifier();
        self.shared.announce();
    }

    /// Stores a row under `topic` and `key` that does not decode (its headers are not
    /// metadata JSON and its content type is unknown), as a corrupted outbox row would be:
    /// the conformance suite's way to show such a row is dead-lettered instead of blocking.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for bad names, [`Error::Unavailable`], [`Error::Closed`].
    pub async fn publish_undecodable(&self, topic: &str, key: &str, error: &str) -> Result<()> {
        self.shared.check_open()?;
        validate_name("topic", topic)?;
        validate_name("partition key", key)?;
        let part = i32::try_from(partition_for(key, self.shared.options.get_partitions())).unwrap_or(0);
        let mut conn = self.shared.pool.acquire().await.map_err(error::not_sent)?;
        sqlx::query(&self.shared.sql.publish)
            .bind(topic)
            .bind(vec![part])
            .bind(vec![key])
            .bind(vec![2i16])
            .bind(vec![Uuid::now_v7()])
            .bind(vec![format!("not metadata: {error}")])
            .bind(vec!["corrupt"])
            .bind(vec![error.as_bytes()])
            .execute(&mut *conn)
            .await
            .map_err(error::sent)?;
        drop(conn);
        self.wake();
        Ok(())
    }
}

impl PgBackend {
    /// An outbox bus on this backend's pool and schema (see [`PgBus`]).
    pub fn bus(&self, options: PgBusOptions) -> PgBus {
        PgBus::new(self, options)
    }
}

/// A message from its outbox columns, or why it does not decode.
pub(super) fn decode(
    id: Uuid,
    key: String,
    priority: i16,
    headers: &str,
    content_type: &str,
    payload: Vec<u8>,
) -> std::result::Result<Message, String> {
    let priority = usize::try_from(priority)
        .ok()
        .and_then(|r| Priority::ALL.get(r).copied())
        .ok_or_else(|| format!("unknown priority rank {priority}"))?;
    let headers = Metadata::from_json(headers).map_err(|e| format!("headers: {e}"))?;
    let content_type = content_type
        .parse::<ContentType>()
        .map_err(|e| format!("content type: {e}"))?;
    Ok(Message {
        id: MessageId::from_uuid(id),
        key,
        priority,
        headers,
        content_type,
        payload: payload.into(),
    })
}

impl fmt::Debug for PgBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBus")
            .field("schema", &self.shared.schema.as_str())
            .field("options", &self.shared.options)
            .field("closed", &self.shared.closed.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventBus for PgBus {
    fn capabilities(&self) -> BusCapabilities {
        BusCapabilities::all(self.shared.options.get_partitions())
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<()> {
        self.shared.check_open()?;
        if messages.is_empty() {
            return validate_name("topic", topic);
        }
        let mut conn = self.shared.pool.acquire().await.map_err(error::not_sent)?;
        // One statement in its own implicit transaction: all or nothing.
        self.publish_in(&mut conn, topic, messages).await?;
        drop(conn);
        self.wake();
        Ok(())
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: Arc<dyn MessageHandler>,
    ) -> Result<Box<dyn Subscription>> {
        self.shared.check_open()?;
        spec.validate()?;
        self.shared.ensure_notifier();
        consumer::subscribe(Arc::clone(&self.shared), spec, handler).await
    }

    async fn dead_letters(&self, topic: &str, group: &str, max: usize) -> Result<Vec<DeadLetter>> {
        self.shared.check_open()?;
        let rows = sqlx::query(&self.shared.sql.dead_letters)
            .bind(topic)
            .bind(group)
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(error::sent)?;
        rows.iter().map(|r| dead_letter(topic, group, r)).collect()
    }

    async fn trim(&self, topic: &str) -> Result<u64> {
        self.shared.check_open()?;
        validate_name("topic", topic)?;
        let n: i64 = sqlx::query_scalar(&self.shared.sql.trim)
            .bind(topic)
            .fetch_one(&self.shared.pool)
            .await
            .map_err(error::sent)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::SeqCst);
        let task = self
            .shared
            .notifier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
        self.shared.wake.notify_waiters();
        Ok(())
    }
}

/// A dead letter from its row.
fn dead_letter(topic: &str, group: &str, r: &sqlx::postgres::PgRow) -> Result<DeadLetter> {
    let get = |e: sqlx::Error| Error::corrupt(format!("dead letter row: {e}"));
    let id: Uuid = r.try_get("msg_id").map_err(get)?;
    let headers: String = r.try_get("headers").map_err(get)?;
    let content_type: String = r.try_get("content_type").map_err(get)?;
    let message = decode(
        id,
        r.try_get("key").map_err(get)?,
        r.try_get("priority").map_err(get)?,
        &headers,
        &content_type,
        r.try_get("payload").map_err(get)?,
    )
    .ok();
    let reason: String = r.try_get("reason").map_err(get)?;
    let error: Option<String> = r.try_get("error").map_err(get)?;
    let error = error.unwrap_or_default();
    let reason = match reason.as_str() {
        "max_attempts" => DeadLetterReason::MaxAttempts { last_error: error },
        "permanent" => DeadLetterReason::Permanent { error },
        "undecodable" => DeadLetterReason::Undecodable { error },
        "parked" => {
            let behind: Option<Uuid> = r.try_get("behind").map_err(get)?;
            DeadLetterReason::Parked {
                behind: MessageId::from_uuid(behind.unwrap_or_default()),
            }
        }
        other => return Err(Error::corrupt(format!("unknown dead-letter reason {other:?}"))),
    };
    let partition: i32 = r.try_get("partition").map_err(get)?;
    let attempts: i32 = r.try_get("attempts").map_err(get)?;
    Ok(DeadLetter {
        topic: topic.to_owned(),
        group: group.to_owned(),
        original_id: message.as_ref().map(|m| m.id),
        entry: r.try_get("entry").map_err(get)?,
        partition: u32::try_from(partition).unwrap_or(0),
        message,
        reason,
        attempts: u32::try_from(attempts).unwrap_or(0),
        at: Timestamp::from_millis(r.try_get("at_ms").map_err(get)?),
    })
}

/// The reason's stored name, error text and parked-behind id.
pub(super) fn reason_columns(reason: &DeadLetterReason) -> (&'static str, Option<String>, Option<Uuid>) {
    match reason {
        DeadLetterReason::MaxAttempts { last_error } => ("max_attempts", Some(last_error.clone()), None),
        DeadLetterReason::Permanent { error } => ("permanent", Some(error.clone()), None),
        DeadLetterReason::Undecodable { error } => ("undecodable", Some(error.clone()), None),
        DeadLetterReason::Parked { behind } => ("parked", None, Some(*behind.as_uuid())),
    }
}
