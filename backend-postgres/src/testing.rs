//! What test harnesses need to provoke PostgreSQL situations: an append held open in its
//! transaction, waiting for the log horizon, killing the pool's connections.

use std::time::{Duration, Instant};

use cqrs_core::{AppendOutcome, Error, EventData, ExpectedVersion, Result, StreamId};
use sqlx::{Postgres, Transaction};

use crate::backend::count_i64;
use crate::event_store::{run_append, APPEND};
use crate::{error, PgBackend};

/// An append run inside a transaction that is still open: it holds the stream's lock and
/// its transaction id, so it holds the log horizon back until committed or rolled back.
#[derive(Debug)]
pub struct HeldAppend {
    tx: Transaction<'static, Postgres>,
    outcome: AppendOutcome,
}

impl HeldAppend {
    /// Commits the append and returns its outcome.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the commit could not be confirmed.
    pub async fn commit(self) -> Result<AppendOutcome> {
        self.tx.commit().await.map_err(error::sent)?;
        Ok(self.outcome)
    }

    /// Rolls the append back.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the connection failed.
    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await.map_err(error::sent)
    }
}

impl PgBackend {
    /// Runs an append in a transaction and leaves it open (see [`HeldAppend`]).
    ///
    /// # Errors
    /// As [`cqrs_core::EventStore::append`].
    pub async fn hold_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<HeldAppend> {
        self.begin()?;
        self.limits.check_batch(&events)?;
        let sql = self.sql(APPEND);
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        self.trip();
        let outcome = match run_append(&mut *tx, &sql, stream, expected, &events).await {
            // The duplicate aborted the transaction: a re-send is answered in a fresh one,
            // which then holds nothing (as a re-send writes nothing).
            Err(failed @ Error::AlreadyExists { .. }) => {
                tx.rollback().await.map_err(error::sent)?;
                tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
                self.resolve_duplicate(&mut *tx, stream, expected, &events, failed)
                    .await?
            }
            result => result?,
        };
        Ok(HeldAppend { tx, outcome })
    }

    /// Waits until every transaction running when called has finished, so `read_all` sees
    /// everything committed before the call: polls until the horizon (`pg_snapshot_xmin`)
    /// reaches the `pg_snapshot_xmax` of a snapshot taken at the call.
    ///
    /// # Errors
    /// [`Error::Timeout`] naming the transactions that hold the horizon if it does not pass
    /// within `timeout` (a transaction left open somewhere in the instance).
    pub async fn settle_log(&self, timeout: Duration) -> Result<()> {
        self.begin()?;
        let deadline = Instant::now() + timeout;
        let target: i64 = sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            .fetch_one(&self.pool)
            .await
            .map_err(error::sent)?;
        loop {
            let reached: bool =
                sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint >= $1")
                    .bind(target)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(error::sent)?;
            if reached {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // Name the transaction that holds the horizon: an intermittent stall in a
                // parallel suite is otherwise impossible to trace afterwards.
                let holders: Vec<String> = sqlx::query_scalar(
                    "SELECT format('pid %s (%s, %s), transaction open since %s, xid %s: %s',
                                   pid, coalesce(nullif(application_name, ''), 'no application_name'),
                                   state, xact_start, backend_xid, left(query, 200))
                     FROM pg_stat_activity
                     WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
                     ORDER BY xact_start LIMIT 5",
                )
                .fetch_all(&self.pool)
                .await
                .unwrap_or_default();
                // A wait of ours that ran out, not an outage: nothing failed on the server.
                return Err(Error::timeout(
                    format!(
                        "the log horizon did not pass xid {target}: a transaction is open ({})",
                        if holders.is_empty() {
                            "none seen now".to_owned()
                        } else {
                            holders.join("; ")
                        }
                    ),
                    timeout,
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The query plan of the `read_all` statement after `from` for a page of `max`
    /// unfiltered events (`EXPLAIN`, text format), for plan regression tests.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn explain_read_all(&self, from: &cqrs_core::Checkpoint, max: usize) -> Result<String> {
        self.begin()?;
        let start = from.get(0).map_or([0, 0, 0], |p| p.offset);
        let sql = format!("EXPLAIN {}", self.sql(include_str!("sql/read_all.sql")));
        let max = count_i64(max);
        let lines: Vec<String> = sqlx::query_scalar(&sql)
            .bind(start[0].to_string())
            .bind(i64::try_from(start[1]).unwrap_or(i64::MAX))
            .bind(max)
            .bind(None::<String>)
            .bind(Vec::<String>::new())
            .bind(max)
            .bind(i64::MAX)
            .fetch_all(&self.pool)
            .await
            .map_err(error::sent)?;
        Ok(lines.join("\n"))
    }

    /// The plan PostgreSQL runs the `read_all` statement with once a session has read a few
    /// pages, for a page of `max` unfiltered events after `from`: `PREPARE`, six `EXECUTE`s,
    /// then `EXPLAIN EXECUTE`. A generic plan (its conditions show `$1`) is planned once and
    /// reused; a custom one (literal values) means every page is planned anew.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn explain_read_all_cached(&self, from: &cqrs_core::Checkpoint, max: usize) -> Result<String> {
        use sqlx::{Connection as _, Row as _};
        self.begin()?;
        let start = from.get(0).map_or([0, 0, 0], |p| p.offset);
        // A connection of its own, closed afterwards: the prepared statement ends with its
        // session whatever fails.
        let mut conn = self.pool.acquire().await.map_err(error::not_sent)?.detach();
        let max = count_i64(max);
        let prepare = format!(
            "PREPARE cqrs_explain_read_all(text, bigint, bigint, text, text[], bigint, bigint) AS {}",
            self.sql(include_str!("sql/read_all.sql"))
        );
        let execute = format!(
            "EXECUTE cqrs_explain_read_all('{}', {}, {max}, NULL, '{{}}', {max}, {})",
            start[0],
            i64::try_from(start[1]).unwrap_or(i64::MAX),
            i64::MAX
        );
        let explained = async {
            sqlx::raw_sql(&prepare).execute(&mut conn).await?;
            for _ in 0..6 {
                sqlx::raw_sql(&execute).execute(&mut conn).await?;
            }
            sqlx::raw_sql(&format!("EXPLAIN {execute}"))
                .fetch_all(&mut conn)
                .await?
                .iter()
                .map(|row| row.try_get::<String, _>(0))
                .collect::<std::result::Result<Vec<_>, _>>()
        }
        .await;
        let closed = conn.close().await;
        let lines = explained.map_err(error::sent)?;
        closed.map_err(error::sent)?;
        Ok(lines.join("\n"))
    }

    /// The plan of the forward stream read of `stream` (`EXPLAIN`, text format), for plan
    /// regression tests.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn explain_read_stream(&self, stream: &str, max: usize) -> Result<String> {
        self.begin()?;
        let sql = format!("EXPLAIN {}", self.sql(include_str!("sql/read_stream.sql")));
        let lines: Vec<String> = sqlx::query_scalar(&sql)
            .bind(stream)
            .bind(1i64)
            .bind(count_i64(max))
            .bind(count_i64(self.limits.max_read_bytes))
            .fetch_all(&self.pool)
            .await
            .map_err(error::sent)?;
        Ok(lines.join("\n"))
    }

    /// Terminates every server connection whose `application_name` is `name` (except the
    /// one asking); returns how many.
    ///
    /// # Errors
    /// Backend errors.
    pub async fn terminate_connections(&self, application_name: &str) -> Result<u64> {
        self.begin()?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(application_name)
        .fetch_one(&self.pool)
        .await
        .map_err(error::sent)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
