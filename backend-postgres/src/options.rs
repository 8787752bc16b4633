//! Connection options: from a URL or `DATABASE_URL`, with a redacted `Debug`.

use std::{fmt, str::FromStr, time::Duration};

use cqrs_core::{Error, Limits, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::schema::SchemaName;

/// How to connect to PostgreSQL and where the store lives.
///
/// Parameters the URL may carry besides libpq's (`sslmode`, `sslrootcert`,
/// `application_name`, …): `schema` (default `cqrs`), `pool_max_size` (default 10),
/// `connect_timeout` (seconds, default 10), `statement_timeout` (milliseconds, default
/// 30000; 0 disables) and `idle_in_transaction_session_timeout` (milliseconds, default 60000;
/// 0 disables) for this pool's sessions, and `ping_after_idle` (milliseconds, default 1000; see
/// [`PgStoreOptions::ping_after_idle`]). TLS follows `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
/// `verify-full`).
///
/// ```
/// use backend_postgres::PgStoreOptions;
/// let o = PgStoreOptions::from_url("postgres://app:secret@db/app?schema=orders&pool_max_size=4")?;
/// assert_eq!(o.schema().as_str(), "orders");
/// assert!(!format!("{o:?}").contains("secret"));
/// # Ok::<(), cqrs_core::Error>(())
/// ```
#[derive(Clone)]
pub struct PgStoreOptions {
    connect: PgConnectOptions,
    schema: SchemaName,
    max_connections: u32,
    connect_timeout: Duration,
    statement_timeout: Duration,
    idle_in_transaction_timeout: Duration,
    ping_after_idle: Duration,
    limits: Limits,
}

/// The default of [`PgStoreOptions::ping_after_idle`].
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

impl PgStoreOptions {
    /// Options from a `postgres://` URL.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed URL, an unknown value or a bad schema name.
    pub fn from_url(url: &str) -> Result<Self> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut passthrough = Vec::new();
        let mut schema = SchemaName::new(SchemaName::DEFAULT)?;
        let mut max_connections = 10u32;
        let mut connect_timeout = Duration::from_secs(10);
        let mut statement_timeout = Duration::from_millis(30_000);
        let mut idle_in_transaction_timeout = Duration::from_millis(60_000);
        let mut ping_after_idle = PING_AFTER_IDLE;
        let number = |key: &str, value: &str| -> Result<u64> {
            value
                .parse::<u64>()
                .map_err(|_| Error::invalid(format!("connection parameter {key}={value:?} is not a number")))
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "schema" => schema = SchemaName::new(value)?,
                "pool_max_size" => {
                    max_connections = u32::try_from(number(key, value)?.max(1))
                        .map_err(|_| Error::invalid("pool_max_size is too large"))?;
                }
                "connect_timeout" => connect_timeout = Duration::from_secs(number(key, value)?),
                "statement_timeout" => statement_timeout = Duration::from_millis(number(key, value)?),
                "idle_in_transaction_session_timeout" => {
                    idle_in_transaction_timeout = Duration::from_millis(number(key, value)?);
                }
                "ping_after_idle" => ping_after_idle = Duration::from_millis(number(key, value)?),
                _ => passthrough.push(pair),
            }
        }
        let rebuilt = if passthrough.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passthrough.join("&"))
        };
        let connect = PgConnectOptions::from_str(&rebuilt)
            .map_err(|e| Error::invalid(format!("PostgreSQL connection URL: {e}")))?;
        Ok(PgStoreOptions {
            connect,
            schema,
            max_connections,
            connect_timeout,
            statement_timeout,
            idle_in_transaction_timeout,
            ping_after_idle,
            limits: Limits::default(),
        })
    }

    /// Options from the `DATABASE_URL` environment variable.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if it is unset or invalid.
    pub fn from_env() -> Result<Self> {
        let url = std::env::var("DATABASE_URL")
            .map_err(|_| Error::invalid("DATABASE_URL is not set (postgres://user@host:5432/db)"))?;
        Self::from_url(&url)
    }

    /// Uses another schema.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid schema name.
    pub fn with_schema(mut self, schema: &str) -> Result<Self> {
        self.schema = SchemaName::new(schema)?;
        Ok(self)
    }

    /// Sets the pool size (at least 1).
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets how long acquiring a connection may take.
    #[must_use]
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Sets the server-side `statement_timeout` (zero disables it).
    #[must_use]
    pub fn statement_timeout(mut self, t: Duration) -> Self {
        self.statement_timeout = t;
        self
    }

    /// Sets the size limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the `application_name` the connections report (as `pg_stat_activity` shows).
    #[must_use]
    pub fn application_name(mut self, name: &str) -> Self {
        self.connect = self.connect.application_name(name);
        self
    }

    /// The schema.
    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    /// The limits.
    pub fn get_limits(&self) -> Limits {
        self.limits
    }

    /// The pool size.
    pub fn get_max_connections(&self) -> u32 {
        self.max_connections
    }

    /// Sets the server-side `idle_in_transaction_session_timeout` of this pool's sessions
    /// (zero disables it): a transaction of ours left open holds every log reader of the
    /// instance back, so it is ended after this long.
    #[must_use]
    pub fn idle_in_transaction_timeout(mut self, t: Duration) -> Self {
        self.idle_in_transaction_timeout = t;
        self
    }

    /// The sqlx connect options (with the session timeouts applied).
    pub(crate) fn connect_options(&self) -> PgConnectOptions {
        let statement = self.statement_timeout.as_millis().to_string();
        let idle = self.idle_in_transaction_timeout.as_millis().to_string();
        self.connect.clone().options([
            ("statement_timeout", statement.as_str()),
            ("idle_in_transaction_session_timeout", idle.as_str()),
        ])
    }

    /// Pings a pooled connection before handing it out only if it sat idle this long
    /// (default 1 s; zero pings every time, as sqlx does by default).
    ///
    /// A ping is a round trip: before every statement it doubled the round trips of a
    /// command (load, then append), and its CPU, client and server, was a fifth of the
    /// command's (see the crate README). A connection used moments ago is as
    /// likely to be alive as one in the middle of a statement, and a statement sent on a
    /// dead one fails with [`Error::Unavailable`] like any lost connection (an append's
    /// outcome is then unknown, and its re-send is idempotent). Connections idle for
    /// longer, as after a quiet spell or a server restart, are still tested and replaced
    /// without an error.
    #[must_use]
    pub fn ping_after_idle(mut self, idle: Duration) -> Self {
        self.ping_after_idle = idle;
        self
    }

    /// How long a connect may take (`connect_timeout`).
    pub(crate) fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The sqlx pool options.
    pub(crate) fn pool_options(&self) -> PgPoolOptions {
        let ping_after = self.ping_after_idle;
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.connect_timeout)
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= ping_after {
                        // An error closes the connection; the pool then takes another.
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
    }
}

impl fmt::Debug for PgStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStoreOptions")
            .field("host", &self.connect.get_host())
            .field("port", &self.connect.get_port())
            .field("database", &self.connect.get_database())
            .field("user", &self.connect.get_username())
            .field("password", &"<redacted>")
            .field("schema", &self.schema.as_str())
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("idle_in_transaction_timeout", &self.idle_in_transaction_timeout)
            .field("ping_after_idle", &self.ping_after_idle)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_our_parameters_and_hides_the_password() {
        let o = PgStoreOptions::from_url(
            "postgres://u:hunter2@h:5433/d?sslmode=disable&schema=s1&pool_max_size=3&statement_timeout=500&idle_in_transaction_session_timeout=700&ping_after_idle=250",
        )
        .unwrap();
        assert_eq!(o.schema().as_str(), "s1");
        assert_eq!(o.get_max_connections(), 3);
        assert_eq!(o.statement_timeout, Duration::from_millis(500));
        assert_eq!(o.idle_in_transaction_timeout, Duration::from_millis(700));
        assert_eq!(o.ping_after_idle, Duration::from_millis(250));
        let plain = PgStoreOptions::from_url("postgres://h/d").unwrap();
        assert_eq!(plain.ping_after_idle, PING_AFTER_IDLE);
        assert_eq!(
            plain.ping_after_idle(Duration::ZERO).ping_after_idle,
            Duration::ZERO
        );
        let debug = format!("{o:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("5433"), "{debug}");
        assert!(PgStoreOptions::from_url("postgres://h/d?schema=Bad").is_err());
        assert!(PgStoreOptions::from_url("postgres://h/d?pool_max_size=x").is_err());
    }
}
