//! The notifier: one task per [`PgBus`](super::PgBus) that wakes its consumers.
//!
//! It holds a dedicated connection (a one-connection pool built from the bus pool's own
//! connect options, so TLS, timeouts and credentials are the same) that `LISTEN`s on the
//! schema's channel and sends the bus's `NOTIFY` after local commits (debounced: pokes that
//! arrive while one is being sent coalesce). It also polls the outbox head every
//! [`PgBusOptions::poll_interval`](super::PgBusOptions::poll_interval): a new sequence value
//! (a commit that sent no notification, such as [`PgBus::publish_in`](super::PgBus::publish_in)
//! without a wake) or a horizon that moved while rows waited above it wakes the consumers.
//! The horizon lag is exported as the gauge `cqrs_postgres_bus_horizon_lag_xids`.

use std::{sync::Arc, time::Duration};

use sqlx::{postgres::PgListener, postgres::PgPoolOptions, Row};

use super::outbox::Shared;

/// The horizon-lag gauge.
const LAG_GAUGE: &str = "cqrs_postgres_bus_horizon_lag_xids";

/// How long to wait before reconnecting a failed listener.
const RECONNECT: Duration = Duration::from_secs(1);

/// The channel of a schema (channel names are identifiers: at most 63 bytes).
pub(super) fn channel(schema: &str) -> String {
    let mut c = format!("cqrs_bus_{schema}");
    c.truncate(63);
    c
}

/// What the last poll saw.
#[derive(Default, PartialEq, Eq)]
struct Head {
    last: i64,
    horizon: String,
    above: bool,
}

pub(super) async fn run(shared: Arc<Shared>) {
    let options = (*shared.pool.connect_options()).clone();
    let own = PgPoolOptions::new().max_connections(1).connect_lazy_with(options);
    let channel = channel(shared.schema.as_str());
    let mut listener: Option<PgListener> = None;
    let mut head = Head::default();
    let poll = shared.options.get_poll_interval();
    let mut retry_at = tokio::time::Instant::now();
    loop {
        if shared.check_open().is_err() {
            break;
        }
        if listener.is_none() && tokio::time::Instant::now() >= retry_at {
            match PgListener::connect_with(&own).await {
                Ok(mut l) => match l.listen(&channel).await {
                    Ok(()) => listener = Some(l),
                    Err(e) => tracing::debug!(error = %e, "bus notifier: LISTEN failed"),
                },
                Err(e) => tracing::debug!(error = %e, "bus notifier: cannot connect"),
            }
            if listener.is_none() {
                retry_at = tokio::time::Instant::now() + RECONNECT;
            }
        }
        let poked = shared.poke.notified();
        tokio::pin!(poked);
        poked.as_mut().enable();
        let event = match listener.as_mut() {
            Some(l) => tokio::select! {
                n = l.try_recv() => Event::Notification(n.map(|n| n.map(|n| n.payload().to_owned()))),
                () = &mut poked => Event::Poke,
                () = tokio::time::sleep(poll) => Event::Poll,
            },
            None => tokio::select! {
                () = &mut poked => Event::Poke,
                () = tokio::time::sleep(poll) => Event::Poll,
            },
        };
        match event {
            Event::Notification(Ok(Some(payload))) => {
                if payload != shared.instance {
                    shared.wake.notify_waiters();
                }
            }
            Event::Notification(Ok(None)) => {} // reconnected: the poll covers the gap
            Event::Notification(Err(e)) => {
                tracing::debug!(error = %e, "bus notifier: listener failed");
                listener = None;
            }
            Event::Poke => {
                if let Some(l) = listener.as_mut() {
                    let sent = sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(&channel)
                        .bind(&shared.instance)
                        .execute(&mut *l)
                        .await;
                    if let Err(e) = sent {
                        tracing::debug!(error = %e, "bus notifier: NOTIFY failed");
                        listener = None;
                    }
                }
            }
            Event::Poll => {
                if let Some(next) = poll_head(&shared).await {
                    let moved = next.last != head.last || (head.above && next.horizon != head.horizon);
                    head = next;
                    if moved {
                        shared.wake.notify_waiters();
                    }
                }
            }
        }
    }
    own.close().await;
}

enum Event {
    Notification(std::result::Result<Option<String>, sqlx::Error>),
    Poke,
    Poll,
}

async fn poll_head(shared: &Shared) -> Option<Head> {
    let row = match sqlx::query(&shared.sql.head).fetch_one(&shared.pool).await {
        Ok(row) => row,
        Err(e) => {
            tracing::debug!(error = %e, "bus notifier: polling the outbox head failed");
            return None;
        }
    };
    let lag: i64 = row.try_get("lag").ok()?;
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(LAG_GAUGE, "schema" => shared.schema.as_str().to_owned()).set(lag as f64);
    Some(Head {
        last: row.try_get("last").ok()?,
        horizon: row.try_get("horizon").ok()?,
        above: row.try_get("above").ok()?,
    })
}
