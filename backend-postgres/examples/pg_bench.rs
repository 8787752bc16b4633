//! The PostgreSQL backend benchmark: prints one table, every figure also as a ratio to the raw
//! ceiling measured in the same run (plain sqlx statements writing the same rows into the same
//! table definitions and indexes, one statement per append, 256-byte payloads).
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release -p backend-postgres --example pg_bench
//! ```
//!
//! It creates two schemas `bench_<hex>` and `bench_<hex>_raw` and drops them at the end
//! (`BENCH_KEEP=1` keeps them, to look at plans on the same data).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use backend_postgres::{PgBackend, PgStoreOptions};
use cqrs_core::{
    Checkpoint, ContentEncoding, ContentType, EventData, EventFilter, EventStore, ExpectedVersion, Snapshot,
    SnapshotStore, StreamId, Timestamp,
};

const RUN: Duration = Duration::from_millis(2_000);
const REPEAT: usize = 3;
const PAYLOAD: usize = 256;

fn event() -> EventData {
    EventData::new("Benched", ContentType::Opaque, vec![42u8; PAYLOAD])
}

/// Events per second and per-call latencies of one run.
#[derive(Clone, Default)]
struct Sample {
    per_sec: f64,
    lat: Vec<Duration>,
}

/// The `per_mille`-th latency in milliseconds.
fn pct(lat: &[Duration], per_mille: usize) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    let mut v = lat.to_vec();
    v.sort();
    let i = (v.len() - 1) * per_mille / 1000;
    v[i.min(v.len() - 1)].as_secs_f64() * 1000.0
}

fn median(mut runs: Vec<Sample>) -> Sample {
    runs.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
    runs.swap_remove(runs.len() / 2)
}

/// Runs `tasks` loops of `op` for `RUN`; `op` returns events written.
async fn drive<F, Fut>(tasks: usize, op: F) -> Sample
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = u64> + Send,
{
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            let mut i = 0u64;
            while start.elapsed() < RUN {
                let t0 = Instant::now();
                n += op(t, i).await;
                lat.push(t0.elapsed());
                i += 1;
            }
            (n, lat)
        }));
    }
    let mut total = 0;
    let mut lat = Vec::new();
    for h in handles {
        let (n, l) = h.await.unwrap();
        total += n;
        lat.extend(l);
    }
    Sample {
        per_sec: total as f64 / start.elapsed().as_secs_f64(),
        lat,
    }
}

struct Row {
    name: &'static str,
    ours: Sample,
    ceiling: Option<Sample>,
    note: String,
}

const RAW_INSERT: &str = "INSERT INTO __S__.events (stream_id, version, event_id, event_type, schema_version, content_type, content_encoding, metadata, payload)
     VALUES ($1, $2, $3, 'Benched', 1, 'opaque', 'identity', '{}', $4)";
const RAW_BATCH: &str = "INSERT INTO __S__.events (stream_id, version, event_id, event_type, schema_version, content_type, content_encoding, metadata, payload)
     SELECT $1, $2 + u.ord, u.id, 'Benched', 1, 'opaque', 'identity', '{}', u.pl
     FROM unnest($3::uuid[], $4::bytea[]) WITH ORDINALITY AS u(id, pl, ord)";

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let (ours_schema, raw_schema) = (format!("bench_{tag}"), format!("bench_{tag}_raw"));
    let options = PgStoreOptions::from_url(&url)?.max_connections(16);
    let ours = PgBackend::connect(&options.clone().with_schema(&ours_schema)?).await?;
    ours.migrate().await?;
    let raw = PgBackend::connect(&options.clone().with_schema(&raw_schema)?).await?;
    raw.migrate().await?;
    let pool = raw.pool().clone();
    let raw_q = |sql: &str| sql.replace("__S__", &format!("\"{raw_schema}\""));
    let mut rows = Vec::new();

    // Single appends, 1 and 8 tasks.
    for tasks in [1usize, 8] {
        let mut o = Vec::new();
        let mut c = Vec::new();
        for rep in 0..REPEAT {
            let backend = ours.clone();
            o.push(
                drive(tasks, move |t, i| {
                    let backend = backend.clone();
                    async move {
                        let s = StreamId::new(format!("single-{tasks}-{rep}-{t}")).unwrap();
                        backend
                            .append(&s, ExpectedVersion::Exact(i), vec![event()])
                            .await
                            .unwrap();
                        1
                    }
                })
                .await,
            );
            let (pool, sql) = (pool.clone(), raw_q(RAW_INSERT));
            c.push(
                drive(tasks, move |t, i| {
                    let (pool, sql) = (pool.clone(), sql.clone());
                    async move {
                        sqlx::query(&sql)
                            .bind(format!("single-{tasks}-{rep}-{t}"))
                            .bind(i64::try_from(i).unwrap() + 1)
                            .bind(uuid::Uuid::now_v7())
                            .bind(vec![42u8; PAYLOAD])
                            .execute(&pool)
                            .await
                            .unwrap();
                        1
                    }
                })
                .await,
            );
        }
        rows.push(Row {
            name: if tasks == 1 {
                "append 1 event, 1 task"
            } else {
                "append 1 event, 8 tasks"
            },
            ours: median(o),
            ceiling: Some(median(c)),
            note: String::new(),
        });
    }

    // Batches of 100, 1 task.
    {
        let mut o = Vec::new();
        let mut c = Vec::new();
        for rep in 0..REPEAT {
            let backend = ours.clone();
            o.push(
                drive(1, move |_, i| {
                    let backend = backend.clone();
                    async move {
                        let s = StreamId::new(format!("batch-{rep}")).unwrap();
                        let batch = (0..100).map(|_| event()).collect();
                        backend
                            .append(&s, ExpectedVersion::Exact(i * 100), batch)
                            .await
                            .unwrap();
                        100
                    }
                })
                .await,
            );
            let (pool, sql) = (pool.clone(), raw_q(RAW_BATCH));
            c.push(
                drive(1, move |_, i| {
                    let (pool, sql) = (pool.clone(), sql.clone());
                    async move {
                        let ids: Vec<uuid::Uuid> = (0..100).map(|_| uuid::Uuid::now_v7()).collect();
                        let payloads: Vec<Vec<u8>> = (0..100).map(|_| vec![42u8; PAYLOAD]).collect();
                        sqlx::query(&sql)
                            .bind(format!("batch-{rep}"))
                            .bind(i64::try_from(i * 100).unwrap())
                            .bind(ids)
                            .bind(payloads)
                            .execute(&pool)
                            .await
                            .unwrap();
                        100
                    }
                })
                .await,
            );
        }
        rows.push(Row {
            name: "append batches of 100",
            ours: median(o),
            ceiling: Some(median(c)),
            note: String::new(),
        });
    }

    // Load a 10,000-event stream; and with a snapshot near its end.
    let big = StreamId::new("big").unwrap();
    for i in 0..100u64 {
        let batch = (0..100).map(|_| event()).collect();
        ours.append(&big, ExpectedVersion::Exact(i * 100), batch).await?;
    }
    ours.save(Snapshot {
        stream_id: big.clone(),
        version: 9_990,
        schema_revision: 1,
        payload: vec![1u8; 1024].into(),
        content_type: ContentType::Opaque,
        content_encoding: ContentEncoding::Identity,
        taken_at: Timestamp::from_millis(0),
    })
    .await?;
    {
        let mut o = Vec::new();
        let mut c = Vec::new();
        let mut s = Vec::new();
        let raw_load = format!(
            "SELECT stream_id, version, event_id, event_type, schema_version, content_type, content_encoding, metadata, payload, recorded_at
             FROM \"{ours_schema}\".events WHERE stream_id = $1 ORDER BY version"
        );
        for _ in 0..10 {
            let t0 = Instant::now();
            let events = ours.read_stream(&big, 1, 10_000).await?;
            assert_eq!(events.len(), 10_000);
            o.push(t0.elapsed());
            let t0 = Instant::now();
            let rows = sqlx::query(&raw_load).bind("big").fetch_all(ours.pool()).await?;
            assert_eq!(rows.len(), 10_000);
            c.push(t0.elapsed());
            let t0 = Instant::now();
            let snap = ours.load_latest(&big).await?.unwrap();
            let rest = ours.read_stream(&big, snap.version + 1, 10_000).await?;
            assert_eq!(rest.len(), 10);
            s.push(t0.elapsed());
        }
        let as_sample = |lat: Vec<Duration>| Sample {
            per_sec: 10_000.0 / (pct(&lat, 500) / 1000.0),
            lat,
        };
        let load = as_sample(o);
        let note = format!("{:.1} ms per load", pct(&load.lat, 500));
        rows.push(Row {
            name: "load a 10,000-event stream",
            ours: load,
            ceiling: Some(as_sample(c)),
            note,
        });
        let snap = Sample {
            per_sec: 1000.0 / pct(&s, 500),
            lat: s,
        };
        let note = format!("{:.2} ms per load (loads/s)", pct(&snap.lat, 500));
        rows.push(Row {
            name: "load with a snapshot (+10 events)",
            ours: snap,
            ceiling: None,
            note,
        });
    }

    // read_all throughput over the whole log, pages of 1000.
    ours.settle_log(Duration::from_secs(30)).await?;
    {
        let mut o = Vec::new();
        let mut c = Vec::new();
        let raw_page = format!(
            "SELECT tx_id::text::bigint AS tx, seq, stream_id, version, event_id, event_type, schema_version, content_type, content_encoding, metadata, payload, recorded_at
             FROM \"{ours_schema}\".events WHERE (tx_id, seq) > ($1::text::xid8, $2) ORDER BY tx_id, seq LIMIT 1000"
        );
        for _ in 0..REPEAT {
            let t0 = Instant::now();
            let mut cp = Checkpoint::origin();
            let mut n = 0usize;
            let mut lat = Vec::new();
            loop {
                let p0 = Instant::now();
                let b = ours.read_all(&cp, 1000, &EventFilter::all()).await?;
                lat.push(p0.elapsed());
                n += b.events.len();
                cp = b.next;
                if b.caught_up {
                    break;
                }
            }
            o.push(Sample {
                per_sec: n as f64 / t0.elapsed().as_secs_f64(),
                lat,
            });
            let t0 = Instant::now();
            let (mut tx, mut seq, mut m) = (0i64, 0i64, 0usize);
            let mut lat = Vec::new();
            loop {
                let p0 = Instant::now();
                let page = sqlx::query(&raw_page)
                    .bind(tx.to_string())
                    .bind(seq)
                    .fetch_all(ours.pool())
                    .await?;
                lat.push(p0.elapsed());
                let Some(last) = page.last() else { break };
                use sqlx::Row as _;
                tx = last.try_get("tx")?;
                seq = last.try_get("seq")?;
                m += page.len();
            }
            assert_eq!(m, n);
            c.push(Sample {
                per_sec: m as f64 / t0.elapsed().as_secs_f64(),
                lat,
            });
        }
        rows.push(Row {
            name: "read_all (pages of 1000)",
            ours: median(o),
            ceiling: Some(median(c)),
            note: "latency per page".into(),
        });
    }

    // 8 writers with a live reader: reader lag from recorded_at to delivery.
    {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let start_cp = {
            let mut cp = Checkpoint::origin();
            loop {
                let b = ours.read_all(&cp, 1000, &EventFilter::all()).await?;
                cp = b.next;
                if b.caught_up {
                    break cp;
                }
            }
        };
        let reader = {
            let (ours, stop) = (ours.clone(), stop.clone());
            tokio::spawn(async move {
                let mut cp = start_cp;
                let mut seen = HashSet::new();
                let mut lag = Vec::new();
                let mut idle_after_stop = 0;
                loop {
                    let b = ours.read_all(&cp, 1000, &EventFilter::all()).await.unwrap();
                    let now = Timestamp::from_system_time(std::time::SystemTime::now());
                    for e in &b.events {
                        assert!(seen.insert(e.data.event_id), "delivered twice");
                        lag.push(Duration::from_millis(now.millis_since(e.recorded_at)));
                    }
                    cp = b.next;
                    if b.events.is_empty() {
                        if stop.load(std::sync::atomic::Ordering::Acquire) {
                            idle_after_stop += 1;
                            if idle_after_stop > 200 {
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                (seen, lag)
            })
        };
        let backend = ours.clone();
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let w = written.clone();
        let sample = drive(8, move |t, i| {
            let (backend, w) = (backend.clone(), w.clone());
            async move {
                let s = StreamId::new(format!("live-{t}")).unwrap();
                let e = event();
                w.lock().unwrap().push(e.event_id);
                backend
                    .append(&s, ExpectedVersion::Exact(i), vec![e])
                    .await
                    .unwrap();
                1
            }
        })
        .await;
        ours.settle_log(Duration::from_secs(30)).await?;
        stop.store(true, std::sync::atomic::Ordering::Release);
        let (seen, lag) = reader.await?;
        let written: HashSet<_> = written.lock().unwrap().iter().copied().collect();
        let lost = written.difference(&seen).count();
        rows.push(Row {
            name: "8 writers + live reader (write)",
            ours: sample,
            ceiling: None,
            note: format!("reader lost {lost} of {}", written.len()),
        });
        rows.push(Row {
            name: "  reader lag (recorded_at -> read)",
            ours: Sample {
                per_sec: 0.0,
                lat: lag,
            },
            ceiling: None,
            note: "p50/p99 are lag".into(),
        });
    }

    println!();
    println!(
        "{:<36} {:>12} {:>9} {:>9} {:>12} {:>7}  note",
        "postgres operation", "events/s", "p50 ms", "p99 ms", "ceiling/s", "ratio"
    );
    for r in &rows {
        let (ceiling, ratio) = match &r.ceiling {
            Some(c) => (
                format!("{:.0}", c.per_sec),
                format!("{:.0}%", 100.0 * r.ours.per_sec / c.per_sec),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<36} {:>12.0} {:>9.2} {:>9.2} {:>12} {:>7}  {}",
            r.name,
            r.ours.per_sec,
            pct(&r.ours.lat, 500),
            pct(&r.ours.lat, 990),
            ceiling,
            ratio,
            r.note
        );
    }
    if std::env::var_os("BENCH_KEEP").is_some() {
        // Kept for a look at plans and server costs (EXPLAIN ANALYZE on the same data).
        println!("kept schemas {ours_schema} and {raw_schema}");
        return Ok(());
    }
    for s in [&ours_schema, &raw_schema] {
        sqlx::query(&format!("DROP SCHEMA \"{s}\" CASCADE"))
            .execute(raw.pool())
            .await?;
    }
    Ok(())
}
