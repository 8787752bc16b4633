//! Fault tests. The crash tests start their OWN `redis-server` (own port, own temporary
//! directory) and kill it with SIGKILL; they never touch the shared server at `REDIS_URL`.
//! The bad-input tests use the shared server under their own key prefix only.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test support may panic

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use backend_redis::{RedisBackend, RedisStoreOptions};
use bytes::Bytes;
use cqrs_core::{
    Checkpoint, ContentEncoding, ContentType, Error, EventData, EventFilter, EventStore, ExpectedVersion,
    LimitKind, Limits, Outcome, Snapshot, SnapshotStore, StreamId, Timestamp,
};

/// No persistence: a restart starts empty.
const NO_AOF: &[&str] = &["--appendonly", "no"];
/// An fsync before every reply.
const AOF_ALWAYS: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];
/// The Redis default for AOF: an OS crash loses up to about a second of acknowledged writes.
/// No automatic rewrite, so the writes stay in one incr file that a test can cut.
const AOF_EVERYSEC: &[&str] = &[
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    "--auto-aof-rewrite-percentage",
    "0",
];

/// A redis-server of our own, on a free loopback port, in a temporary directory.
struct OwnServer {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl OwnServer {
    fn start(persistence: &[&str]) -> OwnServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = std::env::temp_dir().join(format!("cqrs-redis-fault-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--save".into(),
            String::new(),
            "--maxmemory-policy".into(),
            "noeviction".into(),
        ];
        args.extend(persistence.iter().map(|a| (*a).to_owned()));
        let mut server = OwnServer {
            port,
            dir,
            args,
            child: None,
        };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed to run the fault tests");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "own redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, no final fsync.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 own redis-server");
            child.wait().expect("reap own redis-server");
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn options(url: String, prefix: &str) -> RedisStoreOptions {
    RedisStoreOptions::new(url)
        .prefix(prefix)
        .connection_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(1_000))
}

fn event(n: u64) -> EventData {
    EventData::new("Counted", ContentType::Json, format!("{{\"n\":{n}}}"))
}

/// Retries `append` of the same batch until the server answers, within a deadline.
async fn append_until_answered(
    store: &RedisBackend,
    stream: &StreamId,
    batch: &[EventData],
) -> cqrs_core::AppendOutcome {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.append(stream, ExpectedVersion::Any, batch.to_vec()).await {
            Ok(out) => return out,
            Err(Error::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the client did not recover: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kill_9_keeps_every_acknowledged_append_and_recovers() {
    let mut server = OwnServer::start(AOF_ALWAYS);
    let store = RedisBackend::open(options(server.url(), "fault"))
        .await
        .expect("open the store on our own server");
    let stream = StreamId::new("counter-{1}").unwrap();

    // Appends in a loop; kill the server once 200 have been acknowledged.
    let mut acknowledged = Vec::new();
    let mut failed = None;
    let mut worst = Duration::ZERO;
    for n in 0..10_000u64 {
        if n == 200 {
            server.kill();
        }
        let batch = vec![event(n)];
        let started = Instant::now();
        let result = store.append(&stream, ExpectedVersion::Any, batch.clone()).await;
        worst = worst.max(started.elapsed());
        match result {
            Ok(out) => acknowledged.push((out.first_version, batch[0].event_id)),
            Err(Error::Unavailable { outcome, .. }) => {
                assert!(n >= 200, "append {n} failed before the kill");
                failed = Some((batch, outcome));
                break;
            }
            Err(e) => panic!("a dead server must surface as Unavailable, got {e:?}"),
        }
    }
    assert!(acknowledged.len() >= 200, "{} acknowledged", acknowledged.len());
    let (unanswered, outcome) = failed.expect("appends must fail once the server is dead");
    assert!(
        worst < Duration::from_secs(5),
        "a call took {worst:?}: the client must report Unavailable within a bounded time"
    );
    assert!(matches!(outcome, Outcome::NotSent | Outcome::Unknown));

    // While it is down, calls keep failing fast with Unavailable.
    let started = Instant::now();
    let down = store.read_stream(&stream, 1, 10).await;
    assert!(matches!(down, Err(Error::Unavailable { .. })), "{down:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Restart on the same AOF: the same client reconnects and every acknowledged append is
    // there at the version it was acknowledged with.
    server.spawn();
    let resent = append_until_answered(&store, &stream, &unanswered).await;
    let events = store
        .read_stream(&stream, 1, 100_000)
        .await
        .expect("read after restart");
    for (version, id) in &acknowledged {
        let found = events.iter().find(|e| e.version == *version);
        assert_eq!(
            found.map(|e| e.event_id()),
            Some(*id),
            "acknowledged version {version} lost after kill -9 with appendfsync always"
        );
    }
    // The unanswered batch, re-sent with the same id, exists exactly once.
    let copies = events
        .iter()
        .filter(|e| e.event_id() == unanswered[0].event_id)
        .count();
    assert_eq!(copies, 1, "the re-sent batch must be stored exactly once");
    assert_eq!(
        events
            .iter()
            .find(|e| e.event_id() == unanswered[0].event_id)
            .map(|e| e.version),
        Some(resent.first_version)
    );
    // Versions stay contiguous.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.version, i as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_restart_without_persistence_is_data_loss_for_a_tailing_reader() {
    let mut server = OwnServer::start(NO_AOF);
    let store = RedisBackend::open(options(server.url(), "fault"))
        .await
        .expect("open the store on our own server");
    let stream = StreamId::new("s").unwrap();
    store
        .append(&stream, ExpectedVersion::NoStream, (0..5).map(event).collect())
        .await
        .expect("append");
    let mut checkpoint = Checkpoint::origin();
    loop {
        let batch = store
            .read_all(&checkpoint, 100, &EventFilter::all())
            .await
            .expect("read_all");
        checkpoint = batch.next;
        if batch.caught_up {
            break;
        }
    }
    assert!(checkpoint.get(0).is_some(), "the reader saw the events");

    server.kill();
    server.spawn();

    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match store.read_all(&checkpoint, 100, &EventFilter::all()).await {
            Err(Error::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other,
        }
    };
    assert!(
        matches!(answer, Err(Error::DataLoss { partition: 0 })),
        "a tailing reader must get DataLoss, not a silent stall: {answer:?}"
    );
    // New writes after the loss do not hide it.
    append_until_answered(&store, &stream, &[event(9)]).await;
    assert!(matches!(
        store.read_all(&checkpoint, 100, &EventFilter::all()).await,
        Err(Error::DataLoss { .. })
    ));
}

fn shared_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| backend_redis::DEFAULT_URL.to_owned())
}

async fn shared(prefix: &str, limits: Limits) -> Arc<RedisBackend> {
    let url = shared_url();
    let prefix = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
    RedisBackend::open(RedisStoreOptions::new(url.clone()).prefix(prefix).limits(limits))
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is required (start redis-server or set REDIS_URL): {e}"))
}

#[tokio::test]
async fn fault_bad_input_is_refused_before_any_write() {
    assert!(StreamId::new("").is_err());
    assert!(StreamId::new("a\nb").is_err());
    assert!(StreamId::new("x".repeat(1025)).is_err());

    let limits = Limits {
        max_event_bytes: 1_000,
        max_batch_bytes: 2_500,
        max_batch_count: 5,
        ..Limits::default()
    };
    let store = shared("fault_input", limits).await;
    let s = StreamId::new("s").unwrap();
    let big = EventData::new("Big", ContentType::Opaque, vec![0u8; 2_000]);
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, vec![big]).await,
        Err(Error::TooLarge {
            kind: LimitKind::EventBytes,
            ..
        })
    ));
    let mid = || EventData::new("Mid", ContentType::Opaque, vec![0u8; 900]);
    assert!(matches!(
        store
            .append(&s, ExpectedVersion::Any, vec![mid(), mid(), mid()])
            .await,
        Err(Error::TooLarge {
            kind: LimitKind::BatchBytes,
            ..
        })
    ));
    assert!(matches!(
        store
            .append(&s, ExpectedVersion::Any, (0..6).map(event).collect())
            .await,
        Err(Error::TooLarge {
            kind: LimitKind::BatchCount,
            ..
        })
    ));
    assert_eq!(
        store.stream_state(&s).await.unwrap(),
        cqrs_core::StreamState::Missing
    );
    store.destroy().await.unwrap();
}

#[tokio::test]
async fn fault_corrupted_snapshot_reads_as_corrupt() {
    let store = shared("fault_snap", Limits::default()).await;
    let s = StreamId::new("order-{7}").unwrap();
    let snapshot = Snapshot {
        stream_id: s.clone(),
        version: 3,
        schema_revision: 1,
        payload: Bytes::from_static(b"{\"total\":3}"),
        content_type: ContentType::Json,
        content_encoding: ContentEncoding::Identity,
        taken_at: Timestamp::from_millis(1),
    };
    store.save(snapshot.clone()).await.unwrap();
    assert_eq!(store.load_latest(&s).await.unwrap(), Some(snapshot));

    // Damage the stored entry behind the store's back (only our own prefixed key).
    let prefix = store.options().key_prefix().to_owned();
    let client = redis::Client::open(shared_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}:{{p0}}:s:{}", s.as_str());
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(format!("{:020}", 3))
        .arg("garbage without header")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(matches!(store.load_latest(&s).await, Err(Error::Corrupt { .. })));
    store.destroy().await.unwrap();
}

/// `docs/CONFORMANCE.md` item 83: a broker restart mid-stream loses nothing. Our own server with
/// `appendfsync always` is killed with SIGKILL after 150 acknowledged publishes and restarted
/// on the same AOF; publishing goes on (re-sending an unanswered message with its id), and
/// the subscriber, which never restarts, must hand every acknowledged message to its handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_bus_broker_restart_mid_stream_loses_nothing() {
    use backend_redis::{RedisBus, RedisBusOptions};
    use cqrs_core::bus::{handler_fn, Delivery, EventBus, Message, MessageId, SubscriptionSpec};
    use std::collections::HashSet;

    let mut server = OwnServer::start(AOF_ALWAYS);
    let bus = RedisBus::open(
        options(server.url(), "busfault"),
        RedisBusOptions::new().block(Duration::from_millis(50)),
    )
    .await
    .expect("open the bus on our own server");
    let handled = Arc::new(std::sync::Mutex::new(HashSet::<MessageId>::new()));
    let seen = Arc::clone(&handled);
    let handler = handler_fn(move |d: Delivery| {
        seen.lock().unwrap().insert(d.message.id);
        async { Ok(()) }
    });
    let spec = SubscriptionSpec::new("orders", "g").ack_timeout(Duration::from_secs(2));
    let sub = bus.subscribe(spec, Arc::new(handler)).await.expect("subscribe");

    let mut acknowledged = Vec::new();
    let mut outage_seen = false;
    for n in 0..300u32 {
        if n == 150 {
            server.kill();
        }
        let message = Message::new(
            format!("key-{}", n % 7),
            ContentType::Json,
            format!("{{\"n\":{n}}}"),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match bus.publish("orders", vec![message.clone()]).await {
                Ok(()) => break,
                Err(Error::Unavailable { .. }) => {
                    assert!(n >= 150, "publish {n} failed before the kill");
                    assert!(
                        Instant::now() < deadline,
                        "publish {n} not answered after the restart"
                    );
                    if !outage_seen {
                        outage_seen = true;
                        server.spawn();
                    }
                }
                Err(e) => panic!("a dead server must surface as Unavailable, got {e:?}"),
            }
        }
        acknowledged.push(message.id);
    }
    assert!(outage_seen, "the kill must have been noticed by a publish");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let handled = handled.lock().unwrap();
            acknowledged.iter().filter(|id| !handled.contains(id)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged messages never reached the handler after the restart",
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sub.stop().await.expect("stop after the restart");
}

/// Every event after `from`, and the checkpoint after them.
async fn read_to_end(store: &RedisBackend, from: &Checkpoint) -> (Vec<cqrs_core::RecordedEvent>, Checkpoint) {
    let mut checkpoint = from.clone();
    let mut events = Vec::new();
    loop {
        let batch = store
            .read_all(&checkpoint, 1000, &EventFilter::all())
            .await
            .expect("read_all");
        events.extend(batch.events);
        checkpoint = batch.next;
        if batch.caught_up {
            return (events, checkpoint);
        }
    }
}

/// The byte offsets of the `MULTI` commands of an AOF (a sequence of RESP arrays of bulk
/// strings): each of our appends is one script, whose writes the AOF keeps as one
/// `MULTI`…`EXEC` block, so cutting the file at one of these offsets drops whole appends.
fn multi_offsets(aof: &[u8]) -> Vec<usize> {
    fn line(aof: &[u8], at: &mut usize) -> usize {
        let end = *at
            + aof[*at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("a RESP line");
        let n = std::str::from_utf8(&aof[*at + 1..end]).unwrap().parse().unwrap();
        *at = end + 2;
        n
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < aof.len() {
        let start = at;
        assert_eq!(aof[at], b'*', "a RESP array at byte {at} of the AOF");
        for i in 0..line(aof, &mut at) {
            let len = line(aof, &mut at);
            if i == 0 && aof[at..at + len].eq_ignore_ascii_case(b"MULTI") {
                out.push(start);
            }
            at += len + 2;
        }
    }
    out
}

/// Cuts the last `appends` appends off the server's AOF (Redis 7: the incr file of the
/// multi-part AOF in `appendonlydir/`), as an OS crash under `appendfsync everysec` loses
/// the writes of the last second.
fn cut_aof_tail(dir: &std::path::Path, appends: usize) {
    let incr: Vec<PathBuf> = std::fs::read_dir(dir.join("appendonlydir"))
        .expect("appendonlydir")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .collect();
    assert_eq!(incr.len(), 1, "one incr file: {incr:?}");
    let aof = std::fs::read(&incr[0]).expect("read the AOF");
    let multis = multi_offsets(&aof);
    assert!(multis.len() > appends, "{} appends in the AOF", multis.len());
    let cut = multis[multis.len() - appends];
    std::fs::write(&incr[0], &aof[..cut]).expect("cut the AOF");
}

/// An OS crash under `appendfsync everysec` loses the AOF tail: the last 50 acknowledged
/// appends. A reader that saw them, resumed from its saved checkpoint or live with its
/// checkpoint in memory across the restart, gets DataLoss, and still does after new appends
/// have moved the log past its position again (they reuse the lost versions with other
/// events). A reader whose checkpoint is behind the lost tail resumes with the new events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_lost_aof_tail_is_data_loss_even_after_new_appends() {
    let mut server = OwnServer::start(AOF_EVERYSEC);
    let live = RedisBackend::open(options(server.url(), "fault"))
        .await
        .expect("open the store on our own server");
    let stream = StreamId::new("s").unwrap();
    for n in 0..150 {
        live.append(&stream, ExpectedVersion::Any, vec![event(n)])
            .await
            .expect("append");
    }
    let (first, behind) = read_to_end(&live, &Checkpoint::origin()).await;
    assert_eq!(first.len(), 150);
    let behind = {
        // The checkpoint after version 100: behind the tail that will be lost.
        let mut c = Checkpoint::origin();
        c.store = behind.store.clone();
        c.advance(&first[99].position);
        c
    };
    let (_, seen) = read_to_end(&live, &behind).await;
    let saved = seen.to_json();

    server.kill();
    cut_aof_tail(&server.dir, 50);
    server.spawn();

    let deadline = Instant::now() + Duration::from_secs(30);
    let resumed = loop {
        match RedisBackend::open(options(server.url(), "fault")).await {
            Ok(store) => break store,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reopen after the restart: {e:?}"),
        }
    };
    assert_eq!(
        resumed.stream_state(&stream).await.expect("stream_state"),
        cqrs_core::StreamState::Live(100),
        "the restart lost the last 50 appends"
    );
    let saved = Checkpoint::from_json(&saved).expect("the saved checkpoint");
    let data_loss = |answer: cqrs_core::Result<cqrs_core::Batch>, who: &str| {
        assert!(
            matches!(answer, Err(Error::DataLoss { partition: 0 })),
            "{who}: expected DataLoss, got {answer:?}"
        );
    };
    data_loss(
        resumed.read_all(&saved, 100, &EventFilter::all()).await,
        "resumed, log behind it",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match live.read_all(&seen, 100, &EventFilter::all()).await {
            Err(Error::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other,
        }
    };
    data_loss(answer, "live, log behind it");

    for n in 0..3 {
        append_until_answered(&live, &stream, &[event(1000 + n)]).await;
    }
    data_loss(
        resumed.read_all(&saved, 100, &EventFilter::all()).await,
        "resumed after 3 new appends",
    );
    data_loss(
        live.read_all(&seen, 100, &EventFilter::all()).await,
        "live after 3 new appends",
    );
    let (new, _) = read_to_end(&resumed, &behind).await;
    assert_eq!(
        new.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![101, 102, 103],
        "a checkpoint behind the lost tail resumes with the new events"
    );
}
