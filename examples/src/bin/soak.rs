//! Soak: load and faults together for N minutes, then an account of every event.
//!
//! `cargo run --release -p examples --bin soak -- --minutes N --backend postgres|redis`
//!
//! Several writers append batches to their own streams at `Exact` versions, re-sending a
//! batch unchanged (same ids, same expectation) after any error until it is acknowledged;
//! a reader follows `read_all`. Meanwhile faults are injected:
//! - PostgreSQL (`DATABASE_URL`): every connection of this run, and only of this run (they
//!   carry the run's schema name as `application_name`), is killed with
//!   `pg_terminate_backend` every couple of seconds;
//! - Redis: the run starts its OWN `redis-server` (free port, temporary directory,
//!   append-only file fsynced on every write) and kills it with SIGKILL and restarts it
//!   every few seconds. The shared server at `REDIS_URL` is never touched.
//!
//! At the end every acknowledged event must be in the log and in its stream exactly once:
//! the run prints the counts and exits non-zero if any event was lost or duplicated.

use std::{
    collections::{HashMap, HashSet},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use cqrs::{
    postgres::{PgBackend, PgStoreOptions},
    redis::{RedisBackend, RedisStoreOptions},
    Checkpoint, ContentType, Error, EventData, EventFilter, EventId, ExpectedVersion, Stores, StreamId,
};
use tokio::{sync::Mutex, task::JoinSet};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which backend to soak.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    /// PostgreSQL at `DATABASE_URL`, in a schema of its own.
    Postgres,
    /// A redis-server of the run's own.
    Redis,
}

/// Load plus faults for a while, then a check that no acknowledged event was lost or
/// duplicated.
#[derive(Debug, Parser)]
struct Args {
    /// How long to run the load and the faults.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// The backend under test.
    #[arg(long, value_enum)]
    backend: Backend,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Seconds between two faults.
    #[arg(long, default_value_t = 3.0)]
    fault_every: f64,
    /// Redis only: run the own server without its append-only file, so a SIGKILL loses
    /// acknowledged writes. Shows that the final check catches a loss.
    #[arg(long)]
    no_durability: bool,
}

/// Counters shared by the tasks.
#[derive(Debug, Default)]
struct Counts {
    operations: AtomicU64,
    errors: AtomicU64,
    faults: AtomicU64,
    killed_connections: AtomicU64,
    /// Times the reader found the log gone (its checkpoint foreign or ahead of the store).
    log_lost: AtomicU64,
}

/// What the writers were told was committed: event id to (stream, version).
type Acked = Arc<Mutex<HashMap<EventId, (StreamId, u64)>>>;

/// A redis-server of this run: own port, own directory, killed and restarted at will.
struct OwnRedis {
    port: u16,
    dir: PathBuf,
    durable: bool,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(durable: bool) -> Result<Self, BoxError> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("cqrs-soak-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut server = OwnRedis {
            port,
            dir,
            durable,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Result<(), BoxError> {
        // Acknowledged means on disk: a SIGKILL must lose nothing that was acknowledged.
        let aof: &[&str] = if self.durable {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(aof)
            .args(["--save", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server must be installed for the Redis soak: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server accepts connections (a readiness poll, at most 20 s).
    async fn ready(&self) -> Result<(), BoxError> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err("the soak's own redis-server did not start in 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// SIGKILL, then the same server again on the same directory (it replays its AOF).
    async fn crash_and_restart(&mut self) -> Result<(), BoxError> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.spawn()?;
        self.ready().await
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The backend of a run and what it takes to fault it and clean up.
enum Subject {
    Postgres {
        backend: Arc<PgBackend>,
        tag: String,
        url: String,
    },
    Redis {
        server: OwnRedis,
    },
}

async fn open(backend: Backend, durable: bool) -> Result<(Subject, Stores), BoxError> {
    let tag = format!("soak_{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    match backend {
        Backend::Postgres => {
            let url = std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            let options = PgStoreOptions::from_url(&url)?
                .with_schema(&tag)?
                .max_connections(8)
                .application_name(&tag);
            let backend = PgBackend::connect(&options).await?;
            backend.migrate().await?;
            let stores = backend.stores();
            Ok((Subject::Postgres { backend, tag, url }, stores))
        }
        Backend::Redis => {
            let server = OwnRedis::start(durable)?;
            server.ready().await?;
            let backend = RedisBackend::open(RedisStoreOptions::new(server.url()).prefix(tag)).await?;
            let stores = backend.stores();
            Ok((Subject::Redis { server }, stores))
        }
    }
}

/// Kills this run's PostgreSQL connections (its `application_name`), from a connection of
/// another name; returns how many.
async fn terminate_ours(url: &str, tag: &str) -> Result<u64, BoxError> {
    use sqlx::{ConnectOptions, Connection};
    let mut conn = url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .application_name(&format!("{tag}_faults"))
        .connect()
        .await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(tag)
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Injects one fault every `every` until `stop`.
async fn faults(subject: &mut Subject, every: Duration, stop: &AtomicBool, counts: &Counts) {
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(every).await;
        if stop.load(Ordering::Acquire) {
            break;
        }
        let result = match subject {
            Subject::Postgres { tag, url, .. } => terminate_ours(url, tag)
                .await
                .map(|n| counts.killed_connections.fetch_add(n, Ordering::Relaxed)),
            Subject::Redis { server } => server.crash_and_restart().await.map(|()| 0),
        };
        match result {
            Ok(_) => {
                counts.faults.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => eprintln!("fault injection failed: {e}"),
        }
    }
}

/// A stream's batch, re-sent unchanged until acknowledged (or the run is well past its end).
async fn append_until_acked(
    stores: &Stores,
    stream: &StreamId,
    expected: ExpectedVersion,
    batch: Vec<EventData>,
    give_up: Instant,
    counts: &Counts,
) -> Result<u64, Error> {
    let mut pause = Duration::from_millis(10);
    loop {
        counts.operations.fetch_add(1, Ordering::Relaxed);
        match stores.events.append(stream, expected, batch.clone()).await {
            Ok(out) => return Ok(out.next_expected),
            // Nothing was written, or the re-send saw a different commit: not retryable.
            Err(e @ (Error::Conflict { .. } | Error::IdempotencyMismatch { .. })) => return Err(e),
            Err(e) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                if Instant::now() > give_up {
                    return Err(e);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// One writer: batches of 1–3 events to its own streams until `until`.
async fn writer(
    id: usize,
    stores: Stores,
    until: Instant,
    acked: Acked,
    counts: Arc<Counts>,
) -> Result<(), String> {
    let streams: Vec<StreamId> = (0..4)
        .map(|k| StreamId::new(format!("soak-w{id}-s{k}")))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut versions = vec![0u64; streams.len()];
    let mut n = 0u64;
    while Instant::now() < until {
        let k = usize::try_from(n % 4).unwrap_or(0);
        let batch: Vec<EventData> = (0..=n % 3)
            .map(|i| {
                EventData::new(
                    "Soaked",
                    ContentType::Json,
                    format!("{{\"w\":{id},\"n\":{n},\"i\":{i}}}"),
                )
            })
            .collect();
        n += 1;
        let expected = ExpectedVersion::Exact(versions[k]);
        let give_up = Instant::now().max(until) + Duration::from_secs(60);
        match append_until_acked(&stores, &streams[k], expected, batch.clone(), give_up, &counts).await {
            Ok(last) => {
                let first = last + 1 - u64::try_from(batch.len()).unwrap_or(0);
                let mut acked = acked.lock().await;
                for (e, v) in batch.iter().zip(first..) {
                    acked.insert(e.event_id, (streams[k].clone(), v));
                }
                versions[k] = last;
            }
            Err(e) => {
                return Err(format!(
                    "writer {id}: batch to {} at {expected:?} failed: {e}",
                    streams[k]
                ))
            }
        }
    }
    Ok(())
}

/// The reader: follows `read_all` until `settled` (every write is done and visible to the
/// log), then until caught up twice in a row.
async fn reader(stores: Stores, settled: Arc<AtomicBool>, counts: Arc<Counts>) -> Vec<EventId> {
    let mut from = Checkpoint::origin();
    let mut seen = Vec::new();
    let mut quiet = 0;
    let mut failing: Option<Instant> = None;
    loop {
        counts.operations.fetch_add(1, Ordering::Relaxed);
        match stores.events.read_all(&from, 500, &EventFilter::default()).await {
            Ok(batch) => {
                let empty = batch.events.is_empty();
                seen.extend(batch.events.iter().map(|e| e.data.event_id));
                from = batch.next;
                if settled.load(Ordering::Acquire) && batch.caught_up && empty {
                    quiet += 1;
                    if quiet >= 2 {
                        return seen;
                    }
                } else {
                    quiet = 0;
                }
                if batch.caught_up {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            // The store lost its log: start over and account for what is there now.
            Err(Error::DataLoss { .. } | Error::CheckpointMismatch { .. }) => {
                counts.log_lost.fetch_add(1, Ordering::Relaxed);
                from = Checkpoint::origin();
                seen.clear();
            }
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                let failing_since = *failing.get_or_insert_with(Instant::now);
                if settled.load(Ordering::Acquire) && failing_since.elapsed() > Duration::from_secs(60) {
                    eprintln!("the reader gave up: read_all failed for 60 s after the run");
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        failing = None;
    }
}

/// Reads every acknowledged stream back in full: (event id, stream, version) as stored.
async fn stream_contents(
    stores: &Stores,
    streams: &HashSet<StreamId>,
) -> Result<Vec<(EventId, StreamId, u64)>, Error> {
    let mut out = Vec::new();
    for stream in streams {
        let mut from = 1;
        loop {
            let page = stores.events.read_stream(stream, from, 1000).await?;
            let Some(last) = page.last() else { break };
            from = last.version + 1;
            out.extend(
                page.into_iter()
                    .map(|e| (e.data.event_id, e.stream_id, e.version)),
            );
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let run_for = Duration::from_secs_f64(args.minutes.max(0.0) * 60.0);
    let (mut subject, stores) = open(args.backend, !args.no_durability).await?;
    println!(
        "soak: {:?}, {} writers, {:.1} min, a fault every {:.1} s",
        args.backend, args.writers, args.minutes, args.fault_every
    );
    let counts = Arc::new(Counts::default());
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let until = started + run_for;

    let mut writers = JoinSet::new();
    for id in 0..args.writers {
        writers.spawn(writer(
            id,
            stores.clone(),
            until,
            Arc::clone(&acked),
            Arc::clone(&counts),
        ));
    }
    let settled = Arc::new(AtomicBool::new(false));
    let reading = tokio::spawn(reader(stores.clone(), Arc::clone(&settled), Arc::clone(&counts)));
    let faulting = {
        let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
        let every = Duration::from_secs_f64(args.fault_every.max(0.1));
        tokio::spawn(async move {
            faults(&mut subject, every, &stop, &counts).await;
            subject
        })
    };

    let mut writer_failures = Vec::new();
    while let Some(done) = writers.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => writer_failures.push(e),
            Err(e) => writer_failures.push(format!("a writer panicked: {e}")),
        }
    }
    stop.store(true, Ordering::Release);
    let subject = faulting.await?;
    // PostgreSQL's log shows a commit once no older transaction of the instance is open
    // (other programs' included): wait for that before the reader's last pass.
    if let Subject::Postgres { backend, .. } = &subject {
        backend.settle_log(Duration::from_secs(120)).await?;
    }
    settled.store(true, Ordering::Release);
    let seen = reading.await?;

    let acked = acked.lock().await.clone();
    let streams: HashSet<StreamId> = acked.values().map(|(s, _)| s.clone()).collect();
    let stored = stream_contents(&stores, &streams).await?;

    let mut in_log: HashMap<EventId, u32> = HashMap::new();
    for id in &seen {
        *in_log.entry(*id).or_default() += 1;
    }
    let mut in_streams: HashMap<EventId, Vec<(StreamId, u64)>> = HashMap::new();
    for (id, stream, version) in stored {
        in_streams.entry(id).or_default().push((stream, version));
    }
    let lost_log = acked.keys().filter(|id| !in_log.contains_key(id)).count();
    let lost_stream = acked
        .iter()
        .filter(|(id, at)| in_streams.get(id).is_none_or(|found| !found.contains(at)))
        .count();
    let dup_log = in_log.values().filter(|&&n| n > 1).count();
    let dup_stream = in_streams.values().filter(|found| found.len() > 1).count();
    let unacked = in_log.keys().filter(|id| !acked.contains_key(id)).count();

    println!("elapsed:              {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "operations:           {}",
        counts.operations.load(Ordering::Relaxed)
    );
    println!("errors (retried):     {}", counts.errors.load(Ordering::Relaxed));
    println!("faults injected:      {}", counts.faults.load(Ordering::Relaxed));
    if matches!(subject, Subject::Postgres { .. }) {
        println!(
            "connections killed:   {}",
            counts.killed_connections.load(Ordering::Relaxed)
        );
    }
    println!(
        "log found lost:       {}",
        counts.log_lost.load(Ordering::Relaxed)
    );
    println!("acknowledged events:  {}", acked.len());
    println!("events read:          {}", seen.len());
    println!("committed, not acked: {unacked}");
    println!(
        "lost:                 {} (log {lost_log}, streams {lost_stream})",
        lost_log.max(lost_stream)
    );
    println!(
        "duplicated:           {} (log {dup_log}, streams {dup_stream})",
        dup_log.max(dup_stream)
    );
    for e in &writer_failures {
        println!("writer failure:       {e}");
    }

    if let Subject::Postgres { backend, tag, url } = &subject {
        backend.pool().close().await;
        drop_schema(url, tag).await?;
    }
    drop(subject);
    let bad = lost_log + lost_stream + dup_log + dup_stream > 0
        || counts.log_lost.load(Ordering::Relaxed) > 0
        || !writer_failures.is_empty()
        || acked.is_empty();
    if bad {
        eprintln!("soak FAILED");
        std::process::exit(1);
    }
    println!("soak passed");
    Ok(())
}

async fn drop_schema(url: &str, schema: &str) -> Result<(), BoxError> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let name = cqrs::postgres::SchemaName::new(schema)?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", name.quoted()))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
