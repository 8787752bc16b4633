//! One connection type over a single node (`ConnectionManager`, reconnecting) and a Redis
//! Cluster (`cluster_async::ClusterConnection`), plus reply decoding helpers.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use cqrs_core::{Error, Result};
use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    Cmd, IntoConnectionInfo, Pipeline, ProtocolVersion, RedisFuture, Value,
};

use crate::error::{redis_error, unexpected};
use crate::options::{RedisStoreOptions, Target};

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A cheap-to-clone handle on the server or cluster, counting requests.
#[derive(Clone)]
pub(crate) struct Conn {
    inner: Inner,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("cluster", &self.is_cluster())
            .field("requests", &self.requests())
            .finish()
    }
}

impl Conn {
    /// Connects as `options` say, with explicit connection and response timeouts.
    pub(crate) async fn connect(options: &RedisStoreOptions) -> Result<Self> {
        Conn::connect_inner(options, None).await
    }

    /// Connects as [`Conn::connect`] does, but speaks RESP3 and hands every push message
    /// (Pub/Sub messages, disconnection notices) to `push`: the only way redis-rs offers
    /// Pub/Sub on a cluster connection, and on a single node it makes the connection
    /// manager re-subscribe by itself after a reconnect. `push` must not block.
    pub(crate) async fn connect_with_push(
        options: &RedisStoreOptions,
        push: impl redis::aio::AsyncPushSender,
    ) -> Result<Self> {
        Conn::connect_inner(options, Some(std::sync::Arc::new(push))).await
    }

    async fn connect_inner(
        options: &RedisStoreOptions,
        push: Option<Arc<dyn redis::aio::AsyncPushSender>>,
    ) -> Result<Self> {
        let target = options.target()?;
        if options.url.to_ascii_lowercase().starts_with("rediss") {
            // rustls needs a process-wide crypto provider; another crate may have installed
            // one already, which is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let inner = match target {
            Target::Single(url) => {
                let bad = |e: redis::RedisError| {
                    Error::invalid(format!("bad Redis URL {}: {e}", crate::options::redact(&url)))
                };
                let mut info = url.as_str().into_connection_info().map_err(bad)?;
                if push.is_some() {
                    let redis = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
                    info = info.set_redis_settings(redis);
                }
                let client = match &options.tls_root_certificate {
                    Some(pem) => redis::Client::build_with_tls(info, certificates(pem)),
                    None => redis::Client::open(info),
                }
                .map_err(bad)?;
                let mut config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.connection_timeout))
                    .set_response_timeout(Some(options.response_timeout))
                    .set_number_of_retries(2);
                if let Some(push) = push {
                    config = config.set_push_sender(move |info| push.send(info));
                }
                Inner::Single(
                    client
                        .get_connection_manager_with_config(config)
                        .await
                        .map_err(redis_error)?,
                )
            }
            Target::Cluster(nodes) => {
                let mut builder = ClusterClient::builder(nodes);
                if let Some(pem) = &options.tls_root_certificate {
                    builder = builder.certs(certificates(pem));
                }
                if let Some(push) = push {
                    builder = builder
                        .use_protocol(ProtocolVersion::RESP3)
                        .push_sender(move |info| push.send(info));
                }
                let client = builder
                    .connection_timeout(options.connection_timeout)
                    .response_timeout(options.response_timeout)
                    .retries(2)
                    .build()
                    .map_err(|e| Error::invalid(format!("bad Redis Cluster URL: {e}")))?;
                Inner::Cluster(client.get_async_connection().await.map_err(redis_error)?)
            }
        };
        Ok(Conn {
            inner,
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A new connection to the same server or cluster whose requests count with this
    /// one's (for [`crate::RedisBackend::readers`]).
    pub(crate) async fn sibling(&self, options: &RedisStoreOptions) -> Result<Self> {
        let mut other = Conn::connect_inner(options, None).await?;
        other.requests = Arc::clone(&self.requests);
        Ok(other)
    }

    /// True on a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }

    /// Subscribes to a Pub/Sub channel (needs [`Conn::connect_with_push`]); returns once
    /// the server confirmed it, so a message published afterwards reaches the push sender.
    pub(crate) async fn subscribe(&self, channel: &str) -> Result<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self.inner.clone() {
            Inner::Single(mut c) => c.subscribe(channel).await,
            Inner::Cluster(mut c) => c.subscribe(channel).await,
        }
        .map_err(redis_error)
    }

    /// Unsubscribes from a Pub/Sub channel.
    pub(crate) async fn unsubscribe(&self, channel: &str) -> Result<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self.inner.clone() {
            Inner::Single(mut c) => c.unsubscribe(channel).await,
            Inner::Cluster(mut c) => c.unsubscribe(channel).await,
        }
        .map_err(redis_error)
    }

    /// Requests sent so far (pipelines count once).
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Runs one command.
    pub(crate) async fn run(&self, cmd: &Cmd) -> Result<Value> {
        let mut c = self.clone();
        cmd.query_async(&mut c).await.map_err(redis_error)
    }

    /// Runs a pipeline (not atomic), returning one value per command.
    pub(crate) async fn run_pipe(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        let mut c = self.clone();
        pipe.query_async(&mut c).await.map_err(redis_error)
    }

    /// Runs an `EVALSHA` of `script` that the caller built (to write large arguments
    /// straight into the command); on `NOSCRIPT` (a restarted or flushed server) loads the
    /// script and runs the command once more, as redis-rs's `ScriptInvocation` does.
    pub(crate) async fn eval(&self, script: &redis::Script, cmd: &Cmd) -> Result<Value> {
        let mut c = self.clone();
        match cmd.query_async(&mut c).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                script.load_async(&mut c).await.map_err(redis_error)?;
                cmd.query_async(&mut c).await.map_err(redis_error)
            }
            answer => answer.map_err(redis_error),
        }
    }

    /// Invokes a script by SHA (loaded and retried on NOSCRIPT by redis-rs).
    pub(crate) async fn script(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<Value> {
        let mut c = self.clone();
        invocation.invoke_async(&mut c).await.map_err(redis_error)
    }
}

impl Conn {
    /// Deletes every key matching `pattern` with `SCAN` and `UNLINK`, on every master of a
    /// cluster. Returns how many keys were removed.
    pub(crate) async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        let Inner::Cluster(cluster) = &self.inner else {
            return self.scan_delete(pattern, None).await;
        };
        let nodes = reply::string(self.run(redis::cmd("CLUSTER").arg("NODES")).await?)?;
        let mut removed = 0;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            if !flags.contains("master") || flags.contains("fail") {
                continue;
            }
            let addr = addr.split(['@', ',']).next().unwrap_or_default();
            let Some((host, port)) = addr.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let route = redis::cluster_routing::RoutingInfo::SingleNode(
                redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                    host: host.to_owned(),
                    port,
                },
            );
            removed += self.scan_delete(pattern, Some((cluster.clone(), route))).await?;
        }
        Ok(removed)
    }

    async fn scan_delete(
        &self,
        pattern: &str,
        node: Option<(ClusterConnection, redis::cluster_routing::RoutingInfo)>,
    ) -> Result<u64> {
        let mut cursor = "0".to_owned();
        let mut removed = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(&cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
            let answer = match &node {
                None => self.run(&scan).await?,
                Some((c, route)) => {
                    let mut c = c.clone();
                    c.route_command(scan, route.clone()).await.map_err(redis_error)?
                }
            };
            let mut items = reply::array(answer)?.into_iter();
            cursor = reply::string(items.next().unwrap_or(Value::Nil))?;
            for key in reply::array(items.next().unwrap_or(Value::Nil))? {
                let key = reply::bytes(key)?;
                removed += reply::u64(self.run(redis::cmd("UNLINK").arg(key)).await?)?;
            }
            if cursor == "0" {
                return Ok(removed);
            }
        }
    }
}

fn certificates(pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match &mut self.inner {
            Inner::Single(c) => c.req_packed_command(cmd),
            Inner::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match &mut self.inner {
            Inner::Single(c) => c.req_packed_commands(cmd, offset, count),
            Inner::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}

/// Reply decoding.
pub(crate) mod reply {
    use super::*;

    /// The items of an array reply (`Nil` reads as empty).
    pub(crate) fn array(v: Value) -> Result<Vec<Value>> {
        match v {
            Value::Array(items) | Value::Set(items) => Ok(items),
            Value::Nil => Ok(Vec::new()),
            other => Err(unexpected(&format!("expected an array, got {other:?}"))),
        }
    }

    /// The bytes of a string reply; `None` for `Nil`.
    pub(crate) fn opt_bytes(v: Value) -> Result<Option<Vec<u8>>> {
        match v {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(b)),
            Value::SimpleString(s) => Ok(Some(s.into_bytes())),
            Value::Okay => Ok(Some(b"OK".to_vec())),
            Value::Int(i) => Ok(Some(i.to_string().into_bytes())),
            Value::VerbatimString { text, .. } => Ok(Some(text.into_bytes())),
            other => Err(unexpected(&format!("expected a string, got {other:?}"))),
        }
    }

    /// The bytes of a string reply.
    pub(crate) fn bytes(v: Value) -> Result<Vec<u8>> {
        opt_bytes(v)?.ok_or_else(|| unexpected("expected a string, got nil"))
    }

    /// A UTF-8 string reply.
    pub(crate) fn string(v: Value) -> Result<String> {
        String::from_utf8(bytes(v)?).map_err(|_| unexpected("a reply is not UTF-8"))
    }

    /// An optional UTF-8 string reply.
    pub(crate) fn opt_string(v: Value) -> Result<Option<String>> {
        opt_bytes(v)?
            .map(|b| String::from_utf8(b).map_err(|_| unexpected("a reply is not UTF-8")))
            .transpose()
    }

    /// An integer reply (or a decimal string).
    pub(crate) fn u64(v: Value) -> Result<u64> {
        match v {
            Value::Int(i) => u64::try_from(i).map_err(|_| unexpected("a negative integer")),
            other => string(other)?
                .parse()
                .map_err(|_| unexpected("expected a decimal number")),
        }
    }

    /// A script answer: its status word and the remaining items.
    pub(crate) fn status(v: Value) -> Result<(String, std::vec::IntoIter<Value>)> {
        let mut items = array(v)?.into_iter();
        let head = items.next().ok_or_else(|| unexpected("an empty script answer"))?;
        Ok((string(head)?, items))
    }

    /// The next item of a script answer as a string.
    pub(crate) fn next_string(items: &mut std::vec::IntoIter<Value>) -> Result<String> {
        string(items.next().ok_or_else(|| unexpected("a short script answer"))?)
    }

    /// The next item of a script answer as a number.
    pub(crate) fn next_u64(items: &mut std::vec::IntoIter<Value>) -> Result<u64> {
        u64(items.next().ok_or_else(|| unexpected("a short script answer"))?)
    }
}
