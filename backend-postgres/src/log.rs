//! The store-wide log: `(tx_id, seq)` order below the snapshot's xmin horizon, in one
//! statement. Rows an operator quarantined (`Admin::quarantine`) are skipped and reported
//! without being decoded; a row that does not decode fails the page with `Corrupt` naming
//! its position, the one to quarantine.

use cqrs_core::{Batch, Checkpoint, Error, EventFilter, Result};
use futures::TryStreamExt as _;
use sqlx::{postgres::PgRow, Row};

use crate::backend::{column_at, count_i64, position, EventColumns, Xid8, PARTITION};
use crate::{error, PgBackend};

/// How many rows one filtered `read_all` scans at most (an unfiltered one scans `max`).
const FILTERED_SCAN: usize = 4096;

/// The horizon-lag gauge: transaction ids between the horizon and the newest one.
const LAG_GAUGE: &str = "cqrs_postgres_log_horizon_lag_xids";

impl PgBackend {
    /// `read_all`: see the module docs.
    pub(crate) async fn read_log(
        &self,
        from: &Checkpoint,
        max: usize,
        filter: &EventFilter,
    ) -> Result<Batch> {
        let identity = self.identity_value();
        from.check_store(&identity)?;
        let mut start = [0u64; 3];
        for (&partition, offset) in &from.partitions {
            if partition != PARTITION {
                return Err(Error::DataLoss { partition });
            }
            start = *offset;
        }
        let mut next = from.clone();
        next.store = Some(identity);
        if max == 0 {
            return Ok(Batch {
                events: Vec::new(),
                next,
                caught_up: false,
                quarantined: Vec::new(),
            });
        }
        let tx = i64::try_from(start[0]).map_err(|_| Error::DataLoss { partition: PARTITION })?;
        let seq = i64::try_from(start[1]).map_err(|_| Error::DataLoss { partition: PARTITION })?;
        let unfiltered = filter.stream_prefix.is_none() && filter.event_types.is_empty();
        let scan = if unfiltered { max } else { max.max(FILTERED_SCAN) };
        self.trip();
        let sql = self.sql(include_str!("sql/read_all.sql"));
        // Streamed, not collected: rows are decoded while the server still produces the rest.
        let mut rows = sqlx::query(&sql)
            .bind(tx.to_string())
            .bind(seq)
            .bind(count_i64(scan))
            .bind(filter.stream_prefix.as_deref())
            .bind(&filter.event_types)
            .bind(count_i64(max))
            .bind(count_i64(self.limits.max_read_bytes))
            .fetch(&self.pool);
        let mut events = Vec::new();
        let mut quarantined = Vec::new();
        let mut bytes = 0usize;
        let mut seen = 0usize;
        let mut stopped = false;
        let get = |e: sqlx::Error| Error::corrupt(format!("log row: {e}"));
        let mut columns = None;
        while let Some(row) = rows.try_next().await.map_err(error::sent)? {
            let c = match columns {
                Some(c) => c,
                None => {
                    let c = LogColumns::of(&row)?;
                    let lag: i64 = row.try_get_unchecked(c.lag).map_err(get)?;
                    metrics::gauge!(LAG_GAUGE, "schema" => self.schema.as_str().to_owned()).set(lag as f64);
                    *columns.insert(c)
                }
            };
            seen += 1;
            if row.try_get_unchecked::<bool, _>(c.cut).map_err(get)? {
                stopped = true;
                break;
            }
            let Xid8(tx) = row.try_get_unchecked(c.tx).map_err(get)?;
            let at = position(tx, row.try_get_unchecked(c.seq).map_err(get)?)?;
            if row.try_get_unchecked::<bool, _>(c.held).map_err(get)? {
                // Nothing else of the row is read: it may be what is corrupt. Its `hit` is
                // NULL (see read_all.sql), so `held` comes first.
                quarantined.push(at);
            } else if row.try_get_unchecked::<bool, _>(c.hit).map_err(get)? {
                if events.len() >= max {
                    stopped = true;
                    break;
                }
                let event = c.event.event(&row, None).map_err(|e| match e {
                    Error::Corrupt { what } => Error::corrupt(format!(
                        "read_all: {what} (every reader from before it fails here until the row \
                         is repaired, or set aside with Admin::quarantine)"
                    )),
                    other => other,
                })?;
                let len = event.data.encoded_len();
                if !events.is_empty() && bytes.saturating_add(len) > self.limits.max_read_bytes {
                    stopped = true;
                    break;
                }
                bytes = bytes.saturating_add(len);
                events.push(event);
            }
            next.advance(&at);
        }
        // The stream holds its connection until dropped; the check below needs one.
        drop(rows);
        if seen == 0 && start != [0, 0, 0] {
            self.check_not_ahead(tx, seq).await?;
        }
        // A page that was not cut and scanned fewer rows than it could reached the horizon.
        let caught_up = !stopped && seen < scan;
        Ok(Batch {
            events,
            next,
            caught_up,
            quarantined,
        })
    }

    /// `DataLoss` if `(tx, seq)` is past the last row of the log.
    async fn check_not_ahead(&self, tx: i64, seq: i64) -> Result<()> {
        self.trip();
        let ahead: bool = sqlx::query_scalar(&self.sql(
            "SELECT NOT EXISTS (SELECT 1 FROM __SCHEMA__.events e
                                WHERE (e.tx_id, e.seq) >= ($1::text::xid8, $2::bigint))",
        ))
        .bind(tx.to_string())
        .bind(seq)
        .fetch_one(&self.pool)
        .await
        .map_err(error::sent)?;
        if ahead {
            return Err(Error::DataLoss { partition: PARTITION });
        }
        Ok(())
    }
}

/// Where the log page's own columns are, found once per page (see [`EventColumns`]).
#[derive(Debug, Clone, Copy)]
struct LogColumns {
    cut: usize,
    lag: usize,
    tx: usize,
    seq: usize,
    hit: usize,
    held: usize,
    event: EventColumns,
}

impl LogColumns {
    fn of(row: &PgRow) -> Result<Self> {
        let at = |name, ty| column_at(row, name, ty);
        Ok(LogColumns {
            cut: at("cut", "BOOL")?,
            lag: at("lag", "INT8")?,
            tx: at("tx", "xid8")?,
            seq: at("seq", "INT8")?,
            hit: at("hit", "BOOL")?,
            held: at("held", "BOOL")?,
            event: EventColumns::of(row)?,
        })
    }
}
