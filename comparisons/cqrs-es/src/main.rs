//! Runs the same command workload (load the aggregate, decide, append one event) through our
//! `EventSourcedRepository` on `backend-postgres` and through `cqrs-es` + `postgres-es` on the
//! same PostgreSQL database, and prints the ratio per row.
//!
//! ```text
//! cd comparisons/cqrs-es && cargo run --release
//! ```
//!
//! `DATABASE_URL` overrides `postgres://postgres@127.0.0.1:5432/test`. Each run creates the
//! schemas `bench_cmp_<hex>` (ours, migrated by `backend-postgres`) and `bench_cmp_<hex>_es`
//! (postgres-es's `events` and `snapshots` tables, as in its `db/init.sql`) and drops exactly
//! those two at the end, whether the benchmark succeeded or not.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use backend_postgres::{PgBackend, PgStoreOptions};
use cqrs_es::{
    event_sink::EventSink, persist::PersistedEventStore, AggregateError, CqrsFramework, DomainEvent,
    EventStore as _,
};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};
use std::str::FromStr as _;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// Measured runs per row; the table shows their median.
const RUNS: usize = 3;
/// Connections in each side's pool (both above the 8 concurrent tasks).
const POOL: u32 = 10;
/// Row 1: sequential commands on one fresh aggregate per run.
const SEQUENTIAL: usize = 300;
/// Rows 2 and 3: distinct aggregates, one command each per run.
const DISTINCT: usize = 1_000;
/// Row 3: concurrent tasks, each on its own share of the distinct aggregates.
const TASKS: usize = 8;
/// Row 4: events in the big aggregate, and loads timed per run.
const BIG_EVENTS: usize = 10_000;
const LOADS_PER_RUN: usize = 5;
/// Every deposit carries this memo, so an event payload is about 256 bytes of JSON.
const MEMO_LEN: usize = 230;
const AMOUNT: i64 = 7;

// ---------------------------------------------------------------------------------------
// The domain: one bank account, the same decide/evolve on both sides.

/// Commands.
#[derive(Debug, Clone)]
enum AccountCommand {
    Deposit {
        amount: i64,
    },
    /// Seeding only: `n` deposits in one command.
    DepositMany {
        n: usize,
        amount: i64,
    },
}

/// Events: a serde enum, which is the event format of both frameworks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: i64, memo: String },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::Deposited { .. } => "Deposited".into(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug, thiserror::Error)]
enum AccountError {
    #[error("a deposit must be positive")]
    NotPositive,
    #[error("the balance would overflow")]
    Overflow,
}

/// The state both aggregates share.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Account {
    balance: i64,
    deposits: u64,
}

impl Account {
    fn decide(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        let (n, amount) = match command {
            AccountCommand::Deposit { amount } => (1, amount),
            AccountCommand::DepositMany { n, amount } => (n, amount),
        };
        if amount <= 0 {
            return Err(AccountError::NotPositive);
        }
        let total = i64::try_from(n)
            .ok()
            .and_then(|n| amount.checked_mul(n))
            .and_then(|t| self.balance.checked_add(t));
        if total.is_none() {
            return Err(AccountError::Overflow);
        }
        let memo = "m".repeat(MEMO_LEN);
        Ok((0..n)
            .map(|_| AccountEvent::Deposited {
                amount,
                memo: memo.clone(),
            })
            .collect())
    }

    fn evolve(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited { amount, .. } => {
                self.balance = self.balance.saturating_add(*amount);
                self.deposits += 1;
            }
        }
    }
}

/// Ours: `cqrs_core::aggregate::Aggregate`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct OurAccount(Account);

impl cqrs_core::aggregate::Aggregate for OurAccount {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    const KIND: &'static str = "account";

    fn handle(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        self.0.decide(command)
    }

    fn apply(&mut self, event: &AccountEvent) {
        self.0.evolve(event);
    }
}

/// Theirs: `cqrs_es::Aggregate`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TheirAccount(Account);

impl cqrs_es::Aggregate for TheirAccount {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AccountCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AccountError> {
        for event in self.0.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        self.0.evolve(&event);
    }
}

// ---------------------------------------------------------------------------------------
// The two sides behind one interface.

type OurRepo = cqrs_core::aggregate::EventSourcedRepository<OurAccount>;
type TheirStore = PersistedEventStore<PostgresEventRepository, TheirAccount>;
type TheirCqrs = CqrsFramework<TheirAccount, TheirStore>;

#[derive(Clone)]
enum Side {
    Ours(Arc<OurRepo>),
    Theirs(Arc<TheirCqrs>, Arc<TheirStore>),
}

impl Side {
    fn name(&self) -> &'static str {
        match self {
            Side::Ours(_) => "ours",
            Side::Theirs(..) => "cqrs-es",
        }
    }

    /// The application_name of this side's connections (for the CPU meter).
    fn application_name(&self) -> &'static str {
        match self {
            Side::Ours(_) => "cmp_ours",
            Side::Theirs(..) => "cmp_theirs",
        }
    }

    /// Load, decide, append.
    async fn execute(&self, id: &str, command: AccountCommand) -> Result<()> {
        match self {
            Side::Ours(repo) => {
                repo.execute(id, command).await?;
            }
            Side::Theirs(cqrs, _) => {
                cqrs.execute(id, command).await.map_err(their_error)?;
            }
        }
        Ok(())
    }

    /// Loads the aggregate; returns (balance, deposits).
    async fn load(&self, id: &str) -> Result<(i64, u64)> {
        let account = match self {
            Side::Ours(repo) => repo.load(id).await?.state.0,
            Side::Theirs(_, store) => store.load_aggregate(id).await.map_err(their_error)?.aggregate.0,
        };
        Ok((account.balance, account.deposits))
    }

    async fn expect(&self, id: &str, deposits: u64) -> Result<()> {
        let (balance, n) = self.load(id).await?;
        let want = i64::try_from(deposits)? * AMOUNT;
        if n != deposits || balance != want {
            return Err(format!(
                "{}: aggregate {id} has {n} deposits (balance {balance}), expected {deposits} ({want})",
                self.name()
            )
            .into());
        }
        Ok(())
    }
}

fn their_error(e: AggregateError<AccountError>) -> BoxError {
    format!("cqrs-es: {e}").into()
}

fn deposit() -> AccountCommand {
    AccountCommand::Deposit { amount: AMOUNT }
}

// ---------------------------------------------------------------------------------------
// Workloads. Each returns operations per second.

/// `n` sequential commands on the one aggregate `id`.
async fn sequential(side: &Side, id: &str, n: usize) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..n {
        side.execute(id, deposit()).await?;
    }
    Ok(per_sec(n, start.elapsed()))
}

/// One command on each of `ids`, from `tasks` concurrent tasks (task `t` takes every
/// `tasks`-th id starting at `t`, so no two tasks touch the same aggregate).
async fn distinct(side: &Side, ids: &Arc<Vec<String>>, tasks: usize) -> Result<f64> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (side, ids) = (side.clone(), Arc::clone(ids));
        handles.push(tokio::spawn(async move {
            for id in ids.iter().skip(t).step_by(tasks) {
                side.execute(id, deposit()).await?;
            }
            Ok::<_, BoxError>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(per_sec(ids.len(), start.elapsed()))
}

/// `n` loads of `id`, checking each; returns loads per second.
async fn loads(side: &Side, id: &str, n: usize) -> Result<f64> {
    let start = Instant::now();
    for _ in 0..n {
        let (_, deposits) = side.load(id).await?;
        if deposits != BIG_EVENTS as u64 {
            return Err(format!("{}: loaded {deposits} events, expected {BIG_EVENTS}", side.name()).into());
        }
    }
    Ok(per_sec(n, start.elapsed()))
}

fn per_sec(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs.get(runs.len() / 2).copied().unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------

struct Row {
    name: &'static str,
    /// `true`: shown as ms per operation (the figures are still operations per second).
    millis: bool,
    ours: Vec<f64>,
    theirs: Vec<f64>,
    /// (client, server) µs of CPU per operation, per run.
    ours_cpu: Vec<(f64, f64)>,
    theirs_cpu: Vec<(f64, f64)>,
}

impl Row {
    fn new(name: &'static str, millis: bool) -> Self {
        Row {
            name,
            millis,
            ours: Vec::new(),
            theirs: Vec::new(),
            ours_cpu: Vec::new(),
            theirs_cpu: Vec::new(),
        }
    }

    fn push_cpu(&mut self, side: &Side, cpu: (f64, f64)) {
        match side {
            Side::Ours(_) => self.ours_cpu.push(cpu),
            Side::Theirs(..) => self.theirs_cpu.push(cpu),
        }
    }

    fn push(&mut self, side: &Side, value: f64) {
        match side {
            Side::Ours(_) => self.ours.push(value),
            Side::Theirs(..) => self.theirs.push(value),
        }
    }
}

/// Both sides, in alternating order per run so a drift in machine load hits both alike.
fn order(run: usize, ours: &Side, theirs: &Side) -> [Side; 2] {
    if run.is_multiple_of(2) {
        [ours.clone(), theirs.clone()]
    } else {
        [theirs.clone(), ours.clone()]
    }
}

// ---------------------------------------------------------------------------------------
// CPU accounting: throughput on 2 shared cores swings with whatever else runs, the CPU a
// command costs does not. Each side's pool connects with its own application_name; its
// server CPU is the on-CPU time of those backends (/proc/<pid>/schedstat, in ns), its client
// CPU the process's own on-CPU time while only that side runs.

/// On-CPU nanoseconds of a process or thread directory under /proc.
fn on_cpu_ns(dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(dir.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// This process's on-CPU nanoseconds, summed over its threads.
fn client_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| tasks.flatten().map(|t| on_cpu_ns(&t.path())).sum())
        .unwrap_or(0)
}

/// Reads the server backends of each side (by application_name) over its own connection.
struct CpuMeter {
    monitor: PgPool,
}

/// On-CPU nanoseconds of one side at one moment: per server backend, and the client's.
struct CpuSample {
    backends: std::collections::HashMap<i32, u64>,
    client: u64,
}

impl CpuMeter {
    async fn sample(&self, side: &Side) -> Result<CpuSample> {
        let pids: Vec<i32> =
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
                .bind(side.application_name())
                .fetch_all(&self.monitor)
                .await?;
        let backends = pids
            .into_iter()
            .map(|pid| {
                (
                    pid,
                    on_cpu_ns(&std::path::Path::new("/proc").join(pid.to_string())),
                )
            })
            .collect();
        Ok(CpuSample {
            backends,
            client: client_ns(),
        })
    }

    /// (client, server) microseconds per operation between `before` and now.
    async fn per_op(&self, side: &Side, before: &CpuSample, ops: usize) -> Result<(f64, f64)> {
        let client = client_ns();
        let after = self.sample(side).await?;
        let server: u64 = after
            .backends
            .iter()
            .map(|(pid, ns)| ns.saturating_sub(before.backends.get(pid).copied().unwrap_or(0)))
            .sum();
        let per = |ns: u64| ns as f64 / 1000.0 / ops.max(1) as f64;
        Ok((per(client.saturating_sub(before.client)), per(server)))
    }
}

async fn bench(ours: &Side, theirs: &Side, meter: &CpuMeter) -> Result<Vec<Row>> {
    let ids = |prefix: &str| Arc::new((0..DISTINCT).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>());
    let (one_task_ids, eight_task_ids) = (ids("d1"), ids("d8"));

    // Warm-up (not measured): connections, statement caches, and the first command on every
    // aggregate of rows 2 and 3, so their measured commands load existing events.
    for side in [ours, theirs] {
        sequential(side, "warm", 50).await?;
        distinct(side, &one_task_ids, 1).await?;
        distinct(side, &eight_task_ids, TASKS).await?;
    }
    eprintln!("warm-up done");

    let mut rows = vec![
        Row::new("1 task, sequential commands on one aggregate", false),
        Row::new("1 task, commands on 1,000 distinct aggregates", false),
        Row::new("8 tasks, commands on distinct aggregates", false),
        Row::new("load an aggregate of 10,000 events", true),
    ];
    for run in 0..RUNS {
        for side in order(run, ours, theirs) {
            let id = format!("seq-{run}");
            let before = meter.sample(&side).await?;
            let v = sequential(&side, &id, SEQUENTIAL).await?;
            rows[0].push_cpu(&side, meter.per_op(&side, &before, SEQUENTIAL).await?);
            side.expect(&id, SEQUENTIAL as u64).await?;
            rows[0].push(&side, v);
        }
        for side in order(run, ours, theirs) {
            let before = meter.sample(&side).await?;
            let v = distinct(&side, &one_task_ids, 1).await?;
            rows[1].push_cpu(&side, meter.per_op(&side, &before, DISTINCT).await?);
            rows[1].push(&side, v);
        }
        for side in order(run, ours, theirs) {
            let before = meter.sample(&side).await?;
            let v = distinct(&side, &eight_task_ids, TASKS).await?;
            rows[2].push_cpu(&side, meter.per_op(&side, &before, DISTINCT).await?);
            rows[2].push(&side, v);
        }
        eprintln!("run {} of {RUNS}: command rows done", run + 1);
    }
    for (side, ids) in [ours, theirs].into_iter().flat_map(|s| {
        [
            (s.clone(), Arc::clone(&one_task_ids)),
            (s.clone(), Arc::clone(&eight_task_ids)),
        ]
    }) {
        for id in ids.iter() {
            side.expect(id, 1 + RUNS as u64).await?;
        }
    }

    // Row 4: seed 10,000 events through the same command path (100 per command).
    for side in [ours, theirs] {
        for _ in 0..BIG_EVENTS / 100 {
            side.execute(
                "big",
                AccountCommand::DepositMany {
                    n: 100,
                    amount: AMOUNT,
                },
            )
            .await?;
        }
        side.expect("big", BIG_EVENTS as u64).await?;
        loads(side, "big", 2).await?; // warm-up
    }
    for run in 0..RUNS {
        for side in order(run, ours, theirs) {
            let before = meter.sample(&side).await?;
            let v = loads(&side, "big", LOADS_PER_RUN).await?;
            rows[3].push_cpu(&side, meter.per_op(&side, &before, LOADS_PER_RUN).await?);
            rows[3].push(&side, v);
        }
    }
    Ok(rows)
}

/// Mean milliseconds of `n` runs of `f`.
async fn time_ms<F, Fut, T>(n: usize, mut f: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let start = Instant::now();
    for _ in 0..n {
        f().await?;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / n as f64)
}

/// Splits each side's command and load into its parts, to explain the table.
async fn breakdown(
    ours: &Side,
    theirs: &Side,
    backend: &Arc<PgBackend>,
    pool: &PgPool,
    their_events: &str,
) -> Result<Vec<String>> {
    use cqrs_core::{EventStore as _, EventStoreExt as _, ExpectedVersion, StreamId};
    let mut notes = Vec::new();
    let Side::Ours(repo) = ours else {
        return Err("sides swapped".into());
    };
    // Round trips per command, ours.
    let before = backend.round_trips();
    sequential(ours, "trips", 100).await?;
    notes.push(format!(
        "ours: {:.1} statements per command (load pages + append)",
        (backend.round_trips() - before) as f64 / 100.0
    ));
    // A load of a 4-event aggregate.
    let o = time_ms(200, || async { ours.load("d1-0").await }).await?;
    let t = time_ms(200, || async { theirs.load("d1-0").await }).await?;
    let small = repo.stream_id("d1-0")?;
    let r = time_ms(200, || async { Ok(backend.read_stream(&small, 1, 500).await?) }).await?;
    notes.push(format!(
        "load of a 4-event aggregate: ours {o:.3} ms (its read_stream alone {r:.3} ms), cqrs-es {t:.3} ms"
    ));
    // The append alone: ours through the store, theirs' statements by hand.
    let stream = StreamId::new("account-append-only")?;
    let payload = serde_json::to_vec(&serde_json::json!({"amount": AMOUNT, "memo": "m".repeat(MEMO_LEN)}))?;
    let mut v = 0u64;
    let o = time_ms(200, || {
        // A new event (a new id) each time: the same id again would be a re-send.
        let event = cqrs_core::EventData::new("Deposited", cqrs_core::ContentType::Json, payload.clone());
        let (stream, expected) = (stream.clone(), ExpectedVersion::Exact(v));
        v += 1;
        async move { Ok(backend.append(&stream, expected, vec![event]).await?) }
    })
    .await?;
    let insert = format!(
        "INSERT INTO {their_events} (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('account', 'append-only', $1, 'Deposited', '1.0', $2, '{{}}')"
    );
    let payload = serde_json::json!({"Deposited": {"amount": AMOUNT, "memo": "m".repeat(MEMO_LEN)}});
    let mut seq = 0i64;
    let t = time_ms(200, || {
        seq += 1;
        let (insert, payload, seq) = (insert.clone(), payload.clone(), seq);
        async move {
            let mut tx = pool.begin().await?;
            sqlx::query(&insert)
                .bind(seq)
                .bind(payload)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, BoxError>(())
        }
    })
    .await?;
    notes.push(format!(
        "append of one event alone: ours {o:.3} ms (1 statement), postgres-es's BEGIN/INSERT/COMMIT {t:.3} ms"
    ));
    // The 10,000-event load, split.
    let big = repo.stream_id("big")?;
    let one = time_ms(5, || async {
        Ok(backend.read_stream(&big, 1, BIG_EVENTS).await?)
    })
    .await?;
    let paged = time_ms(5, || async {
        use futures::TryStreamExt as _;
        let events: Vec<_> = backend.stream_events(&big, 1, 500).try_collect().await?;
        Ok::<_, BoxError>(events.len())
    })
    .await?;
    let full = time_ms(5, || async { ours.load("big").await }).await?;
    let theirs_full = time_ms(5, || async { theirs.load("big").await }).await?;
    notes.push(format!(
        "10,000-event load: ours read_stream in one page {one:.1} ms, in pages of 500 (the repository's) {paged:.1} ms, \
         full repository load (pages + decode + apply) {full:.1} ms; cqrs-es load_aggregate {theirs_full:.1} ms"
    ));
    if std::env::var_os("EXPLAIN").is_some() {
        // The plan of the repository's last page of the 10,000-event stream.
        let sql = include_str!("../../../backend-postgres/src/sql/read_stream.sql")
            .replace("__SCHEMA__", &format!("\"{}\"", backend.schema().as_str()));
        let rows = sqlx::query(&format!("EXPLAIN (ANALYZE, COSTS OFF) {sql}"))
            .bind(big.as_str())
            .bind(9_501i64)
            .bind(500i64)
            .bind(i64::MAX)
            .fetch_all(pool)
            .await?;
        for row in rows {
            let line: String = sqlx::Row::try_get(&row, 0)?;
            notes.push(format!("plan: {line}"));
        }
    }
    Ok(notes)
}

fn print(rows: &[Row]) {
    println!();
    println!("| row | ours | cqrs-es + postgres-es | ratio ours/theirs |");
    println!("|---|---:|---:|---:|");
    for row in rows {
        let (o, t) = (median(row.ours.clone()), median(row.theirs.clone()));
        let ratio = if t > 0.0 { o / t } else { f64::NAN };
        if row.millis {
            println!(
                "| {} (ms per load) | {:.1} ms | {:.1} ms | {:.2}x as fast |",
                row.name,
                1000.0 / o,
                1000.0 / t,
                ratio
            );
        } else {
            println!(
                "| {} | {:.0} commands/s | {:.0} commands/s | {:.2}x |",
                row.name, o, t, ratio
            );
        }
    }
    println!();
    println!(
        "CPU per operation, µs (median of the runs; client = this process, server = the side's backends):"
    );
    println!();
    println!("| row | ours client | ours server | ours total | cqrs-es client | cqrs-es server | cqrs-es total | total ratio theirs/ours |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let med = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
        let (oc, os) = (med(&row.ours_cpu, |c| c.0), med(&row.ours_cpu, |c| c.1));
        let (tc, ts) = (med(&row.theirs_cpu, |c| c.0), med(&row.theirs_cpu, |c| c.1));
        let (ot, tt) = (
            med(&row.ours_cpu, |c| c.0 + c.1),
            med(&row.theirs_cpu, |c| c.0 + c.1),
        );
        println!(
            "| {} | {oc:.0} | {os:.0} | {ot:.0} | {tc:.0} | {ts:.0} | {tt:.0} | {:.2}x |",
            row.name,
            if ot > 0.0 { tt / ot } else { f64::NAN }
        );
    }
    println!();
    println!("Runs (operations per second, in run order):");
    for row in rows {
        println!(
            "  {}: ours {:?}, cqrs-es {:?}",
            row.name,
            row.ours.iter().map(|v| v.round()).collect::<Vec<_>>(),
            row.theirs.iter().map(|v| v.round()).collect::<Vec<_>>()
        );
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// postgres-es's tables (its `db/init.sql`), in our dedicated schema.
fn their_tables(schema: &str) -> [String; 3] {
    [
        format!("CREATE SCHEMA \"{schema}\""),
        format!(
            "CREATE TABLE \"{schema}\".events (
                aggregate_type text NOT NULL,
                aggregate_id text NOT NULL,
                sequence bigint CHECK (sequence >= 0) NOT NULL,
                event_type text NOT NULL,
                event_version text NOT NULL,
                payload json NOT NULL,
                metadata json NOT NULL,
                PRIMARY KEY (aggregate_type, aggregate_id, sequence))"
        ),
        format!(
            "CREATE TABLE \"{schema}\".snapshots (
                aggregate_type text NOT NULL,
                aggregate_id text NOT NULL,
                last_sequence bigint CHECK (last_sequence >= 0) NOT NULL,
                current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
                payload json NOT NULL,
                PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))"
        ),
    ]
}

async fn drop_schemas(pool: &PgPool, schemas: &[&str]) -> Result<()> {
    if std::env::var_os("KEEP_SCHEMAS").is_some() {
        eprintln!("KEEP_SCHEMAS: left {schemas:?} in place");
        return Ok(());
    }
    for schema in schemas {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(pool)
            .await?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let ours_schema = format!("bench_cmp_{}", &tag[..12]);
    let theirs_schema = format!("{ours_schema}_es");
    println!("load average before: {}", loadavg());
    println!("schemas: {ours_schema} (ours), {theirs_schema} (postgres-es)");

    let admin = PgPoolOptions::new().max_connections(POOL).connect(&url).await?;
    let result = async {
        // Ours.
        let options = PgStoreOptions::from_url(&url)?
            .max_connections(POOL)
            .application_name("cmp_ours")
            .with_schema(&ours_schema)?;
        let backend = PgBackend::connect(&options).await?;
        backend.migrate().await?;
        let events: Arc<dyn cqrs_core::EventStore> = backend.clone();
        let ours = Side::Ours(Arc::new(OurRepo::new(events)));

        // Theirs: the same server and database, its own schema and pool of the same size.
        for sql in their_tables(&theirs_schema) {
            sqlx::query(&sql).execute(&admin).await?;
        }
        let (ev, snap) = (
            format!("\"{theirs_schema}\".events"),
            format!("\"{theirs_schema}\".snapshots"),
        );
        let connect = |name: &str| -> Result<PgConnectOptions> {
            Ok(PgConnectOptions::from_str(&url)?.application_name(name))
        };
        let their_pool = PgPoolOptions::new()
            .max_connections(POOL)
            .connect_with(connect("cmp_theirs")?)
            .await?;
        let meter = CpuMeter {
            monitor: PgPoolOptions::new()
                .max_connections(1)
                .connect_with(connect("cmp_monitor")?)
                .await?,
        };
        let repo = || PostgresEventRepository::new(their_pool.clone()).with_tables(&ev, &snap);
        let cqrs = CqrsFramework::new(PersistedEventStore::new_event_store(repo()), vec![], ());
        let store = PersistedEventStore::new_event_store(repo());
        let theirs = Side::Theirs(Arc::new(cqrs), Arc::new(store));

        if let Ok(which) = std::env::var("PROFILE") {
            // Not part of the benchmark: one side's 8-task command loop alone, for a profiler
            // to attach to (its pid is printed before the measured passes start).
            let side = if which == "theirs" { &theirs } else { &ours };
            let ids = Arc::new((0..20_000).map(|i| format!("p-{i}")).collect::<Vec<_>>());
            distinct(side, &ids, TASKS).await?;
            eprintln!(
                "profile: pid {}, measured passes start in 2 s",
                std::process::id()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            for _ in 0..2 {
                let v = distinct(side, &ids, TASKS).await?;
                eprintln!("profile: {} {v:.0} commands/s", side.name());
            }
            return Ok::<_, BoxError>((Vec::new(), Vec::new()));
        }
        let rows = bench(&ours, &theirs, &meter).await?;
        let notes = breakdown(&ours, &theirs, &backend, &their_pool, &ev).await?;
        backend.pool().close().await;
        their_pool.close().await;
        meter.monitor.close().await;
        Ok::<_, BoxError>((rows, notes))
    }
    .await;
    let dropped = drop_schemas(&admin, &[&ours_schema, &theirs_schema]).await;
    admin.close().await;
    let (rows, notes) = result?;
    dropped?;
    print(&rows);
    println!();
    println!("Where the time goes (one task, mean of the repetitions shown):");
    for note in notes {
        println!("  {note}");
    }
    println!();
    println!("load average after: {}", loadavg());
    Ok(())
}
