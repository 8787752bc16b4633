//! Connection options: from a URL or `MONGODB_URL`, with a redacted `Debug`.

use std::{fmt, sync::Arc, time::Duration};

use cqrs_core::{Clock, Error, Limits, Result, SystemClock};

/// The largest BSON document MongoDB stores (16 MiB).
pub const MAX_BSON_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// How to connect to MongoDB and where the store lives.
///
/// Parameters the URL may carry besides the driver's (`replicaSet`, `tls`, `authSource`,
/// `serverSelectionTimeoutMS`, …): `database` (default `cqrs`, also taken from the URL path)
/// and `prefix` (collection name prefix, default `cqrs_`). Both are removed before the URL
/// reaches the driver.
///
/// ```
/// use backend_mongo::MongoStoreOptions;
/// let o = MongoStoreOptions::from_url("mongodb://app:secret@db:27017/?database=orders&prefix=es_")?;
/// assert_eq!(o.database(), "orders");
/// assert_eq!(o.prefix(), "es_");
/// assert!(!format!("{o:?}").contains("secret"));
/// # Ok::<(), cqrs_core::Error>(())
/// ```
#[derive(Clone)]
pub struct MongoStoreOptions {
    url: String,
    database: String,
    prefix: String,
    server_selection_timeout: Duration,
    limits: Limits,
    clock: Arc<dyn Clock>,
}

impl MongoStoreOptions {
    /// The default database.
    pub const DEFAULT_DATABASE: &'static str = "cqrs";
    /// The default collection prefix.
    pub const DEFAULT_PREFIX: &'static str = "cqrs_";

    /// Options from a `mongodb://` or `mongodb+srv://` URL.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for another scheme or a bad database or prefix name.
    pub fn from_url(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("mongodb://")
            .or_else(|| url.strip_prefix("mongodb+srv://"))
            .ok_or_else(|| Error::invalid("a MongoDB URL starts with mongodb:// or mongodb+srv://"))?;
        let scheme = &url[..url.len() - rest.len()];
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        // The path after the host list names the default database (the driver's auth
        // database too); keep it for the driver and use it unless `database=` overrides.
        let (hosts, path) = base.split_once('/').unwrap_or((base, ""));
        let mut database = if path.is_empty() {
            Self::DEFAULT_DATABASE.to_owned()
        } else {
            path.to_owned()
        };
        let mut prefix = Self::DEFAULT_PREFIX.to_owned();
        let mut server_selection_timeout = Duration::from_secs(10);
        let mut passthrough = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "database" => database = value.to_owned(),
                "prefix" => prefix = value.to_owned(),
                "serverSelectionTimeoutMS" => {
                    let ms = value.parse::<u64>().map_err(|_| {
                        Error::invalid(format!("serverSelectionTimeoutMS={value:?} is not a number"))
                    })?;
                    server_selection_timeout = Duration::from_millis(ms);
                }
                _ => passthrough.push(pair),
            }
        }
        validate_database(&database)?;
        validate_prefix(&prefix)?;
        let mut rebuilt = format!("{scheme}{hosts}/{path}");
        if !passthrough.is_empty() {
            rebuilt.push('?');
            rebuilt.push_str(&passthrough.join("&"));
        }
        Ok(MongoStoreOptions {
            url: rebuilt,
            database,
            prefix,
            server_selection_timeout,
            limits: default_limits(),
            clock: Arc::new(SystemClock),
        })
    }

    /// Options from the `MONGODB_URL` environment variable.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if it is unset or invalid.
    pub fn from_env() -> Result<Self> {
        let url = std::env::var("MONGODB_URL")
            .map_err(|_| Error::invalid("MONGODB_URL is not set (mongodb://host:27017/?replicaSet=rs0)"))?;
        Self::from_url(&url)
    }

    /// Uses another database.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid database name.
    pub fn with_database(mut self, database: &str) -> Result<Self> {
        validate_database(database)?;
        database.clone_into(&mut self.database);
        Ok(self)
    }

    /// Uses another collection prefix.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid prefix.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        validate_prefix(prefix)?;
        prefix.clone_into(&mut self.prefix);
        Ok(self)
    }

    /// Sets the size limits (a batch is always kept under the 16 MiB document limit).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = cap(limits);
        self
    }

    /// Sets the clock that stamps events, times leases and decides expiry.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets how long the driver waits for a suitable server.
    #[must_use]
    pub fn server_selection_timeout(mut self, t: Duration) -> Self {
        self.server_selection_timeout = t;
        self
    }

    /// The database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The collection prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The limits.
    pub fn get_limits(&self) -> Limits {
        self.limits
    }

    /// The clock.
    pub fn get_clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// The server selection timeout.
    pub fn get_server_selection_timeout(&self) -> Duration {
        self.server_selection_timeout
    }

    /// The URL handed to the driver (our parameters removed). Holds credentials: never log it.
    pub(crate) fn driver_url(&self) -> &str {
        &self.url
    }
}

/// The default limits with the batch and document limits kept under MongoDB's 16 MiB.
fn default_limits() -> Limits {
    cap(Limits::default())
}

/// Keeps batch and document limits below the BSON document limit, leaving 1 MiB for the
/// commit's own fields and BSON framing.
fn cap(mut limits: Limits) -> Limits {
    let room = MAX_BSON_DOCUMENT_BYTES - 1024 * 1024;
    limits.max_batch_bytes = limits.max_batch_bytes.min(room);
    limits.max_event_bytes = limits.max_event_bytes.min(room);
    limits.max_document_bytes = limits.max_document_bytes.min(room);
    limits
}

fn validate_database(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 38
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "database name {name:?}: use 1 to 38 ASCII letters, digits, '_' or '-'"
        )))
    }
}

fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = prefix.len() <= 32
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "collection prefix {prefix:?}: use up to 32 ASCII letters, digits, '_' or '-'"
        )))
    }
}

/// The host list of a URL, without credentials.
fn hosts(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let base = rest.split(['/', '?']).next().unwrap_or("");
    base.rsplit_once('@').map_or(base, |(_, h)| h)
}

impl fmt::Debug for MongoStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStoreOptions")
            .field("hosts", &hosts(&self.url))
            .field("credentials", &"<redacted>")
            .field("database", &self.database)
            .field("prefix", &self.prefix)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_our_parameters_and_passes_the_rest() {
        let o = MongoStoreOptions::from_url(
            "mongodb://u:hunter2@h1:27017,h2:27018/admin?replicaSet=rs0&database=d1&prefix=p_&serverSelectionTimeoutMS=500",
        )
        .unwrap();
        assert_eq!(o.database(), "d1");
        assert_eq!(o.prefix(), "p_");
        assert_eq!(o.get_server_selection_timeout(), Duration::from_millis(500));
        assert_eq!(
            o.driver_url(),
            "mongodb://u:hunter2@h1:27017,h2:27018/admin?replicaSet=rs0"
        );
        let debug = format!("{o:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("u:"), "{debug}");
        assert!(debug.contains("h1:27017,h2:27018"), "{debug}");
    }

    #[test]
    fn path_names_the_database_and_defaults_apply() {
        let o = MongoStoreOptions::from_url("mongodb+srv://cluster.example.com/orders").unwrap();
        assert_eq!(o.database(), "orders");
        assert_eq!(o.prefix(), MongoStoreOptions::DEFAULT_PREFIX);
        let o = MongoStoreOptions::from_url("mongodb://h").unwrap();
        assert_eq!(o.database(), MongoStoreOptions::DEFAULT_DATABASE);
        assert_eq!(o.driver_url(), "mongodb://h/");
    }

    #[test]
    fn refuses_bad_names_and_schemes() {
        assert!(MongoStoreOptions::from_url("postgres://h/d").is_err());
        assert!(MongoStoreOptions::from_url("mongodb://h/?database=a.b").is_err());
        assert!(MongoStoreOptions::from_url("mongodb://h/?prefix=a$").is_err());
        assert!(MongoStoreOptions::from_url("mongodb://h/?serverSelectionTimeoutMS=x").is_err());
        assert!(MongoStoreOptions::from_url("mongodb://h")
            .unwrap()
            .with_database("")
            .is_err());
    }

    #[test]
    fn batch_limits_stay_under_the_bson_document_limit() {
        let o = MongoStoreOptions::from_url("mongodb://h")
            .unwrap()
            .limits(Limits {
                max_batch_bytes: 64 * 1024 * 1024,
                ..Limits::default()
            });
        assert!(o.get_limits().max_batch_bytes < MAX_BSON_DOCUMENT_BYTES);
        assert!(o.get_limits().max_document_bytes < MAX_BSON_DOCUMENT_BYTES);
    }
}
