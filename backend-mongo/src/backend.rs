//! [`MongoBackend`]: one client, one database, a collection prefix; `init`, topology
//! detection, the optional-transaction helper every store uses.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
};

use bson::{doc, Document};
use cqrs_core::{Clock, Error, Limits, Result, StoreIdentity, Stores};
use futures::TryStreamExt;
use mongodb::{
    event::{command::CommandEvent, EventHandler},
    options::{
        ClientOptions, FindOneAndUpdateOptions, FindOneOptions, FindOptions, ReadConcern, ReturnDocument,
        TransactionOptions, WriteConcern,
    },
    results::UpdateResult,
    Client, ClientSession, Collection, Database,
};

use crate::{
    error::{self, code, server_code},
    indexes::{self, Coll, INDEXES},
    options::MongoStoreOptions,
};

/// A driver result.
pub(crate) type MResult<T> = std::result::Result<T, mongodb::error::Error>;

/// The MongoDB backend: implements every store trait of `cqrs-core` on one
/// `mongodb::Client`. Cheap to clone (clones share the client).
#[derive(Clone)]
pub struct MongoBackend {
    pub(crate) inner: Arc<Inner>,
}

/// Shared state of a backend.
pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) db: Database,
    pub(crate) options: MongoStoreOptions,
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<dyn Clock>,
    /// Whether the server is a replica-set member or a sharded cluster (transactions and
    /// the store-wide log), as `hello` said at connect time.
    pub(crate) replica_set: bool,
    pub(crate) identity: RwLock<Option<StoreIdentity>>,
    pub(crate) closed: AtomicBool,
    pub(crate) round_trips: Arc<AtomicU64>,
    /// Read-model collections whose TTL index this process has created.
    pub(crate) ttl_ready: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for MongoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoBackend")
            .field("options", &self.inner.options)
            .field("replica_set", &self.inner.replica_set)
            .finish_non_exhaustive()
    }
}

/// The `_id` of the store identity document in the meta collection.
pub(crate) const IDENTITY_ID: &str = "identity";
/// The `_id` of the log counter document in the meta collection.
pub(crate) const LOG_ID: &str = "log";

impl MongoBackend {
    /// Connects and detects the topology with `hello` (a replica set or sharded cluster
    /// gets transactions and the store-wide log; a standalone server does not). Does not
    /// create anything: call [`MongoBackend::init`] once (it is idempotent).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a URL the driver refuses; [`Error::Unavailable`] if no
    /// server answers within the server selection timeout.
    pub async fn connect(options: &MongoStoreOptions) -> Result<Self> {
        let mut client_options =
            ClientOptions::parse(options.driver_url())
                .await
                .map_err(|e| match error::map(e) {
                    e @ Error::Unavailable { .. } => e,
                    // The driver's message may quote the URL, credentials included: not passed on.
                    _ => Error::invalid(
                        "the MongoDB URL is not valid (hosts, options, percent-encoding of credentials)",
                    ),
                })?;
        client_options.server_selection_timeout = Some(options.get_server_selection_timeout());
        if client_options.app_name.is_none() {
            client_options.app_name = Some("cqrs".to_owned());
        }
        // Round trips are counted honestly: one per command the driver starts.
        let round_trips = Arc::new(AtomicU64::new(0));
        let counter = round_trips.clone();
        client_options.command_event_handler = Some(EventHandler::callback(move |event: CommandEvent| {
            if matches!(event, CommandEvent::Started(_)) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
        let client = Client::with_options(client_options).map_err(error::map)?;
        let db = client.database(options.database());
        let hello = db.run_command(doc! { "hello": 1 }).await.map_err(error::map)?;
        let replica_set =
            hello.contains_key("setName") || hello.get_str("msg").is_ok_and(|m| m == "isdbgrid");
        let backend = MongoBackend {
            inner: Arc::new(Inner {
                client,
                db,
                limits: options.get_limits(),
                clock: options.get_clock(),
                options: options.clone(),
                replica_set,
                identity: RwLock::new(None),
                closed: AtomicBool::new(false),
                round_trips,
                ttl_ready: Mutex::new(HashSet::new()),
            }),
        };
        backend.load_identity().await?;
        Ok(backend)
    }

    /// Creates the collections, their indexes and the store identity if missing.
    /// Idempotent, and safe when several processes run it at once (an existing collection
    /// or an identical index is not an error; the identity is inserted once).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if an index exists under our name with another definition;
    /// backend errors.
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "mongo"))]
    pub async fn init(&self) -> Result<()> {
        self.open()?;
        for c in Coll::ALL {
            if let Err(e) = self.inner.db.create_collection(self.name(c)).await {
                if server_code(&e) != Some(code::NAMESPACE_EXISTS) {
                    return Err(error::map(e));
                }
            }
        }
        for def in INDEXES {
            self.coll(def.coll)
                .create_index(indexes::model(def))
                .await
                .map_err(error::map)?;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let created = self
            .coll(Coll::Meta)
            .update_one(
                doc! { "_id": IDENTITY_ID },
                doc! { "$setOnInsert": { "id": id, "epoch": 1_i64 } },
            )
            .upsert(true)
            .await;
        // Two concurrent upserts of one `_id`: the loser sees a duplicate key; the winner's
        // identity stands.
        if let Err(e) = created {
            if !error::is_duplicate_key(&e) {
                return Err(error::map(e));
            }
        }
        // The log counter exists before the first append, so appends only `$inc` it.
        let counter = self
            .coll(Coll::Meta)
            .update_one(doc! { "_id": LOG_ID }, doc! { "$setOnInsert": { "seq": 0_i64 } })
            .upsert(true)
            .await;
        if let Err(e) = counter {
            if !error::is_duplicate_key(&e) {
                return Err(error::map(e));
            }
        }
        self.load_identity().await?;
        if self.identity_opt().is_none() {
            return Err(Error::corrupt(
                "the store identity document is missing after init",
            ));
        }
        Ok(())
    }

    /// Every store as trait objects sharing this backend.
    pub fn stores(&self) -> Stores {
        Stores::from_backend(Arc::new(self.clone()))
    }

    /// Whether the server supports transactions and the store-wide log (replica set or
    /// sharded cluster).
    pub fn is_replica_set(&self) -> bool {
        self.inner.replica_set
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// The driver client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Commands sent to the server so far (counted by the driver's command monitoring).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Drops this store's whole database (tests and benchmarks).
    ///
    /// # Errors
    /// Backend errors.
    pub async fn drop_database(&self) -> Result<()> {
        self.inner.db.drop().await.map_err(error::map)
    }

    async fn load_identity(&self) -> Result<()> {
        let found = self
            .coll(Coll::Meta)
            .find_one(doc! { "_id": IDENTITY_ID })
            .await
            .map_err(error::map)?;
        if let Some(d) = found {
            let id = crate::mapping::str_of(&d, "id")?.to_owned();
            let epoch = crate::mapping::u64_of(&d, "epoch")?;
            if let Ok(mut slot) = self.inner.identity.write() {
                *slot = Some(StoreIdentity { id, epoch });
            }
        }
        Ok(())
    }

    pub(crate) fn identity_opt(&self) -> Option<StoreIdentity> {
        self.inner.identity.read().ok().and_then(|g| g.clone())
    }

    /// Refuses calls after `close`.
    pub(crate) fn open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    pub(crate) fn close_now(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// The full name of a fixed collection.
    pub(crate) fn name(&self, c: Coll) -> String {
        format!("{}{}", self.inner.options.prefix(), c.suffix())
    }

    /// A fixed collection.
    pub(crate) fn coll(&self, c: Coll) -> Collection<Document> {
        self.inner.db.collection(&self.name(c))
    }

    /// The MongoDB collection of a read-model collection.
    pub(crate) fn read_model(&self, collection: &str) -> Collection<Document> {
        self.inner
            .db
            .collection(&format!("{}rm_{collection}", self.inner.options.prefix()))
    }

    /// Starts a unit of work: a transaction on a replica set, plain operations otherwise.
    pub(crate) async fn begin(&self) -> Result<Tx> {
        if !self.inner.replica_set {
            return Ok(Tx { session: None });
        }
        let mut session = self.inner.client.start_session().await.map_err(error::map)?;
        let options = TransactionOptions::builder()
            .read_concern(ReadConcern::snapshot())
            .write_concern(WriteConcern::majority())
            .build();
        session
            .start_transaction()
            .with_options(options)
            .await
            .map_err(error::map)?;
        Ok(Tx {
            session: Some(session),
        })
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}

/// A unit of work: a transaction on a replica set, or plain single-document operations on
/// a standalone server (where it gives no atomicity across documents).
pub(crate) struct Tx {
    session: Option<ClientSession>,
}

impl Tx {
    /// Plain operations, no session.
    pub(crate) fn without_session() -> Tx {
        Tx { session: None }
    }

    /// Whether this unit of work is a transaction.
    pub(crate) fn is_transaction(&self) -> bool {
        self.session.is_some()
    }

    pub(crate) async fn find_one(
        &mut self,
        c: &Collection<Document>,
        filter: Document,
        sort: Option<Document>,
    ) -> MResult<Option<Document>> {
        let options = FindOneOptions::builder().sort(sort).build();
        match &mut self.session {
            Some(s) => c.find_one(filter).with_options(options).session(s).await,
            None => c.find_one(filter).with_options(options).await,
        }
    }

    pub(crate) async fn find(
        &mut self,
        c: &Collection<Document>,
        filter: Document,
        sort: Option<Document>,
        limit: Option<i64>,
    ) -> MResult<Vec<Document>> {
        let options = FindOptions::builder().sort(sort).limit(limit).build();
        match &mut self.session {
            Some(s) => {
                let mut cursor = c.find(filter).with_options(options).session(&mut *s).await?;
                let mut out = Vec::new();
                while let Some(d) = cursor.next(s).await {
                    out.push(d?);
                }
                Ok(out)
            }
            None => c.find(filter).with_options(options).await?.try_collect().await,
        }
    }

    pub(crate) async fn aggregate(
        &mut self,
        c: &Collection<Document>,
        pipeline: Vec<Document>,
    ) -> MResult<Vec<Document>> {
        match &mut self.session {
            Some(s) => {
                let mut cursor = c.aggregate(pipeline).session(&mut *s).await?;
                let mut out = Vec::new();
                while let Some(d) = cursor.next(s).await {
                    out.push(d?);
                }
                Ok(out)
            }
            None => c.aggregate(pipeline).await?.try_collect().await,
        }
    }

    pub(crate) async fn insert_one(&mut self, c: &Collection<Document>, d: Document) -> MResult<()> {
        match &mut self.session {
            Some(s) => c.insert_one(d).session(s).await.map(|_| ()),
            None => c.insert_one(d).await.map(|_| ()),
        }
    }

    pub(crate) async fn update_one(
        &mut self,
        c: &Collection<Document>,
        filter: Document,
        update: Document,
        upsert: bool,
    ) -> MResult<UpdateResult> {
        match &mut self.session {
            Some(s) => c.update_one(filter, update).upsert(upsert).session(s).await,
            None => c.update_one(filter, update).upsert(upsert).await,
        }
    }

    pub(crate) async fn replace_one(
        &mut self,
        c: &Collection<Document>,
        filter: Document,
        d: Document,
    ) -> MResult<UpdateResult> {
        match &mut self.session {
            Some(s) => c.replace_one(filter, d).upsert(true).session(s).await,
            None => c.replace_one(filter, d).upsert(true).await,
        }
    }

    pub(crate) async fn find_one_and_update(
        &mut self,
        c: &Collection<Document>,
        filter: Document,
        update: Document,
        upsert: bool,
    ) -> MResult<Option<Document>> {
        let options = FindOneAndUpdateOptions::builder()
            .upsert(upsert)
            .return_document(ReturnDocument::After)
            .build();
        match &mut self.session {
            Some(s) => {
                c.find_one_and_update(filter, update)
                    .with_options(options)
                    .session(s)
                    .await
            }
            None => c.find_one_and_update(filter, update).with_options(options).await,
        }
    }

    pub(crate) async fn delete_many(&mut self, c: &Collection<Document>, filter: Document) -> MResult<u64> {
        match &mut self.session {
            Some(s) => c.delete_many(filter).session(s).await.map(|r| r.deleted_count),
            None => c.delete_many(filter).await.map(|r| r.deleted_count),
        }
    }

    /// Commits the transaction (a no-op without one).
    pub(crate) async fn commit(mut self) -> Result<()> {
        match &mut self.session {
            Some(s) => s.commit_transaction().await.map_err(error::map),
            None => Ok(()),
        }
    }

    /// Aborts the transaction (a no-op without one); errors are ignored: the server aborts
    /// an abandoned transaction by itself.
    pub(crate) async fn abort(mut self) {
        if let Some(s) = &mut self.session {
            let _ = s.abort_transaction().await;
        }
    }
}

/// How often a unit of work is retried after a transient transaction error.
pub(crate) const TX_ATTEMPTS: u32 = 10;

/// Whether a unit of work failed without applying anything and may simply run again.
pub(crate) fn is_transient(e: &Error) -> bool {
    matches!(
        e,
        Error::Unavailable {
            outcome: cqrs_core::Outcome::NotSent,
            ..
        }
    )
}

/// Runs `$body` (an expression using the `Tx` bound to `$tx`) in a unit of work, retrying
/// the whole of it after a transient transaction error.
macro_rules! unit_of_work {
    ($backend:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut $tx = $backend.begin().await?;
            let result = $body;
            match result {
                Ok(value) => match $tx.commit().await {
                    Ok(()) => break Ok(value),
                    Err(e) if attempt < $crate::backend::TX_ATTEMPTS && $crate::backend::is_transient(&e) => {
                        continue
                    }
                    Err(e) => break Err(e),
                },
                Err(e) => {
                    $tx.abort().await;
                    if attempt < $crate::backend::TX_ATTEMPTS && $crate::backend::is_transient(&e) {
                        continue;
                    }
                    break Err(e);
                }
            }
        }
    }};
}
pub(crate) use unit_of_work;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_url_the_driver_refuses_is_invalid_input_without_credentials() {
        let options =
            MongoStoreOptions::from_url("mongodb://user:hunter2@h/?w=notanumber&maxPoolSize=x").unwrap();
        let err = MongoBackend::connect(&options).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_not_sent_without_credentials() {
        let options =
            MongoStoreOptions::from_url("mongodb://user:hunter2@127.0.0.1:1/?serverSelectionTimeoutMS=200")
                .unwrap();
        let err = MongoBackend::connect(&options).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Unavailable {
                    outcome: cqrs_core::Outcome::NotSent,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }
}
