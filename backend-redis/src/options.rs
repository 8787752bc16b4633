//! [`RedisStoreOptions`]: where the server is, the key prefix, timeouts and partitions.

use std::{fmt, sync::Arc, time::Duration};

use cqrs_core::{Clock, Error, Limits, Result, SystemClock};

/// The URL used when `REDIS_URL` is not set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// How a [`crate::RedisBackend`] connects and lays out its keys.
///
/// URLs: `redis://[user:pass@]host:port[/db]` (single node), `rediss://…` (TLS, rustls),
/// `redis+cluster://host:port,host:port` and `rediss+cluster://…` (Redis Cluster, seed nodes).
///
/// ```
/// use std::time::Duration;
/// use backend_redis::RedisStoreOptions;
///
/// let options = RedisStoreOptions::new("redis://127.0.0.1:6379")
///     .prefix("shop")
///     .response_timeout(Duration::from_secs(2));
/// assert!(format!("{options:?}").contains("shop"));
/// ```
#[derive(Clone)]
pub struct RedisStoreOptions {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) partitions: Option<u32>,
    pub(crate) connection_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) limits: Limits,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
    pub(crate) read_connections: usize,
}

/// Most connections [`RedisStoreOptions::read_connections`] accepts.
pub const MAX_READ_CONNECTIONS: usize = 8;

/// Where the store's keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// One server (or a primary behind a proxy).
    Single(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

impl RedisStoreOptions {
    /// Options for `url` with the defaults: prefix `cqrs`, connection timeout 5 s, response
    /// timeout 5 s, the partition count stored in the server (or, for a new store, 1 on a
    /// single node and 3 on a cluster), [`Limits::default`], the system clock and 2 read
    /// connections.
    pub fn new(url: impl Into<String>) -> Self {
        RedisStoreOptions {
            url: url.into(),
            prefix: "cqrs".to_owned(),
            partitions: None,
            connection_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            clock: Arc::new(SystemClock),
            tls_root_certificate: None,
            read_connections: 2,
        }
    }

    /// Options for a URL that may carry our own query parameters, which are taken out before
    /// the URL reaches the driver: `prefix` (the key prefix) and `partitions` (the log
    /// partition count of a new store), e.g. `redis://127.0.0.1:6379/?prefix=shop`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a `partitions` value that is not a number.
    pub fn from_url(url: &str) -> Result<Self> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let (mut prefix, mut partitions, mut keep) = (None, None, Vec::new());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("prefix", v)) => prefix = Some(v.to_owned()),
                Some(("partitions", v)) => {
                    partitions = Some(v.parse::<u32>().map_err(|_| {
                        Error::invalid(format!("the partitions parameter must be a number, not {v:?}"))
                    })?);
                }
                _ => keep.push(pair),
            }
        }
        let url = if keep.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", keep.join("&"))
        };
        let mut options = RedisStoreOptions::new(url);
        if let Some(prefix) = prefix {
            options = options.prefix(prefix);
        }
        if let Some(n) = partitions {
            options = options.partitions(n);
        }
        Ok(options)
    }

    /// Options from the environment: `REDIS_URL` (default [`DEFAULT_URL`]) and, if set,
    /// `REDIS_PREFIX`.
    pub fn from_env() -> Self {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let options = RedisStoreOptions::new(url);
        match std::env::var("REDIS_PREFIX") {
            Ok(prefix) => options.prefix(prefix),
            Err(_) => options,
        }
    }

    /// Sets the key prefix, so several applications or tests share one Redis. It must not
    /// hold `{` or `}` (the first `{…}` of a key decides its cluster slot) nor control
    /// characters.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Fixes the number of log partitions. A new store records it; opening an existing
    /// store with another count fails.
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// How long connecting may take.
    #[must_use]
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long one request may wait for its answer before failing with
    /// [`Error::Unavailable`].
    #[must_use]
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets the size and count limits checked before every write and read page.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the clock that expires read-model documents. Event timestamps and leases use the
    /// Redis server's clock.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// For `rediss://` URLs: trust this CA certificate (PEM) instead of the web PKI roots
    /// (a private CA, or a self-signed server certificate).
    #[must_use]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// How many connections the parts of one large stream read are spread over (1 to
    /// [`MAX_READ_CONNECTIONS`]; default 2): the store's own connection plus `n - 1` more,
    /// opened by the first read that needs them. redis-rs parses each connection's answers
    /// in that connection's task, so parts on two connections are parsed on two threads of
    /// a multi-threaded runtime; parsing, not the server, bounds the load of a long stream.
    /// On a cluster each is a cluster connection (one socket per master). 1 reads
    /// everything on the store's one connection.
    #[must_use]
    pub fn read_connections(mut self, n: usize) -> Self {
        self.read_connections = n;
        self
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    /// Checks the prefix and partition count.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.prefix.is_empty() {
            return Err(Error::invalid("the Redis key prefix is empty"));
        }
        if self.prefix.contains(['{', '}']) || self.prefix.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "the Redis key prefix {:?} must not contain '{{', '}}' or control characters",
                self.prefix
            )));
        }
        if self.partitions == Some(0) || self.partitions.is_some_and(|p| p > 1024) {
            return Err(Error::invalid("the partition count must be between 1 and 1024"));
        }
        if !(1..=MAX_READ_CONNECTIONS).contains(&self.read_connections) {
            return Err(Error::invalid(format!(
                "the read connection count must be between 1 and {MAX_READ_CONNECTIONS}"
            )));
        }
        Ok(())
    }

    /// Parses the URL into a single node or cluster seed nodes.
    pub(crate) fn target(&self) -> Result<Target> {
        let (scheme, rest) = self
            .url
            .split_once("://")
            .ok_or_else(|| Error::invalid(format!("not a Redis URL: {}", redact(&self.url))))?;
        match scheme.to_ascii_lowercase().as_str() {
            "redis" | "rediss" | "unix" | "redis+unix" => Ok(Target::Single(self.url.clone())),
            "redis+cluster" | "rediss+cluster" => {
                let node_scheme = if scheme.eq_ignore_ascii_case("rediss+cluster") {
                    "rediss"
                } else {
                    "redis"
                };
                let (auth, hosts) = match rest.rsplit_once('@') {
                    Some((auth, hosts)) => (format!("{auth}@"), hosts),
                    None => (String::new(), rest),
                };
                let hosts = hosts.split('/').next().unwrap_or_default();
                let nodes: Vec<String> = hosts
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{node_scheme}://{auth}{h}"))
                    .collect();
                if nodes.is_empty() {
                    return Err(Error::invalid(format!(
                        "the cluster URL {} names no node",
                        redact(&self.url)
                    )));
                }
                Ok(Target::Cluster(nodes))
            }
            other => Err(Error::invalid(format!(
                "unknown Redis URL scheme {other:?}: expected redis://, rediss://, redis+cluster:// or rediss+cluster://"
            ))),
        }
    }
}

impl Default for RedisStoreOptions {
    fn default() -> Self {
        RedisStoreOptions::new(DEFAULT_URL)
    }
}

/// The URL with its password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((auth, hosts)) => {
            let user = auth.split_once(':').map_or(auth, |(user, _)| user);
            if auth.contains(':') {
                format!("{scheme}://{user}:***@{hosts}")
            } else {
                format!("{scheme}://***@{hosts}")
            }
        }
        None => url.to_owned(),
    }
}

impl fmt::Debug for RedisStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreOptions")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("partitions", &self.partitions)
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("limits", &self.limits)
            .field("clock", &self.clock)
            .field("tls_root_certificate", &self.tls_root_certificate.is_some())
            .field("read_connections", &self.read_connections)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password() {
        let o = RedisStoreOptions::new("redis://app:s3cret@h:6379/0");
        let shown = format!("{o:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("app:***@h:6379"), "{shown}");
    }

    #[test]
    fn cluster_urls_list_their_nodes() {
        let o = RedisStoreOptions::new("redis+cluster://u:p@a:1,b:2");
        assert_eq!(
            o.target().unwrap(),
            Target::Cluster(vec!["redis://u:p@a:1".into(), "redis://u:p@b:2".into()])
        );
        let o = RedisStoreOptions::new("rediss://h:1");
        assert_eq!(o.target().unwrap(), Target::Single("rediss://h:1".into()));
        assert!(RedisStoreOptions::new("http://h").target().is_err());
    }

    #[test]
    fn our_url_parameters_are_taken_out() {
        let o = RedisStoreOptions::from_url("redis+cluster://a:1,b:2?prefix=shop&partitions=6").unwrap();
        assert_eq!(
            (o.key_prefix(), o.partitions, o.url.as_str()),
            ("shop", Some(6), "redis+cluster://a:1,b:2")
        );
        let o = RedisStoreOptions::from_url("redis://h:6379/0?protocol=resp3&prefix=x").unwrap();
        assert_eq!(
            (o.key_prefix(), o.url.as_str()),
            ("x", "redis://h:6379/0?protocol=resp3")
        );
        assert!(RedisStoreOptions::from_url("redis://h?partitions=many").is_err());
        assert_eq!(
            RedisStoreOptions::from_url("redis://h").unwrap().key_prefix(),
            "cqrs"
        );
    }

    #[test]
    fn prefixes_with_braces_are_refused() {
        assert!(RedisStoreOptions::new(DEFAULT_URL)
            .prefix("a{b")
            .validate()
            .is_err());
        assert!(RedisStoreOptions::new(DEFAULT_URL).prefix("").validate().is_err());
        assert!(RedisStoreOptions::new(DEFAULT_URL)
            .prefix("app:1")
            .validate()
            .is_ok());
    }

    #[test]
    fn read_connections_are_bounded() {
        let with = |n| RedisStoreOptions::new(DEFAULT_URL).read_connections(n).validate();
        assert!(with(0).is_err());
        assert!(with(1).is_ok());
        assert!(with(MAX_READ_CONNECTIONS).is_ok());
        assert!(with(MAX_READ_CONNECTIONS + 1).is_err());
    }
}
