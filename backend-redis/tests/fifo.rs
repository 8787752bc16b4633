//! [`FifoQueue`] against a real Redis: the single node at `REDIS_URL` (`single::`) and the
//! local cluster (`cluster::`). Each test has its own key prefix and purges its queues
//! (which deletes every key of a queue) when it passes.
//!
//! `cargo nextest run -p backend-redis -E 'binary(fifo)'`

mod common;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use backend_redis::{Enqueued, FifoOptions, FifoQueue, RedisStoreOptions};
use conformance::Namespace;
use cqrs_core::{Error, Limits, ManualClock, Timestamp};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn store(url: &str, test: &str) -> RedisStoreOptions {
    RedisStoreOptions::new(url).prefix(Namespace::for_test(test).as_str())
}

async fn connect(url: &str, test: &str, options: FifoOptions) -> Result<FifoQueue, Error> {
    FifoQueue::connect(store(url, test), options).await
}

const PRODUCERS: usize = 8;
const PER_PRODUCER: usize = 200;
const QUEUES: usize = 4;

/// What one producer did: for each of its ids, the queue and whether it was added; and the
/// outcomes of its deliberate duplicates.
#[derive(Default)]
struct Produced {
    own: Vec<(usize, String, Enqueued)>,
    own_dups: Vec<Enqueued>,
    shared: Vec<(usize, String, Enqueued)>,
}

/// 8 producers x 200 enqueues into 4 queues, with deliberate duplicates (a producer
/// re-enqueues one of its own ids every 10th step; every 25th step all producers race for
/// one shared id): each queue holds every id once, in each producer's order, positions are
/// 1..=len and agree with the dequeue order, duplicates are refused, tickets increase.
async fn concurrent_producers(url: String) -> TestResult {
    let q = Arc::new(connect(&url, "fifo_concurrent", FifoOptions::new()).await?);
    let queues: Vec<String> = (0..QUEUES).map(|i| format!("room {{{i}}} ü")).collect();
    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let (q, queues) = (q.clone(), queues.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Produced::default();
            for n in 0..PER_PRODUCER {
                let qi = n % QUEUES;
                let id = format!("p{p}-{n}");
                let e = q.enqueue(&queues[qi], &id, format!("{p}:{n}")).await?;
                out.own.push((qi, id, e));
                if n % 10 == 9 {
                    // Same queue (n - 4 has the same residue mod 4), already queued.
                    let again = format!("p{p}-{}", n - 4);
                    out.own_dups.push(q.enqueue(&queues[qi], &again, "dup").await?);
                }
                if n % 25 == 0 {
                    let id = format!("shared-{n}");
                    let e = q.enqueue(&queues[qi], &id, format!("{p}")).await?;
                    out.shared.push((qi, id, e));
                }
            }
            Ok::<_, Error>(out)
        }));
    }
    let mut produced = Vec::new();
    for t in tasks {
        produced.push(t.await??);
    }

    // Duplicates refused.
    for (p, out) in produced.iter().enumerate() {
        assert!(
            out.own.iter().all(|(_, _, e)| e.is_added()),
            "producer {p}: a fresh id was refused"
        );
        assert_eq!(out.own_dups.len(), PER_PRODUCER / 10);
        assert!(
            out.own_dups
                .iter()
                .all(|e| matches!(e, Enqueued::Duplicate { .. })),
            "producer {p}: a duplicate was added: {:?}",
            out.own_dups
        );
    }
    let mut shared_added: HashMap<String, usize> = HashMap::new();
    for out in &produced {
        for (_, id, e) in &out.shared {
            *shared_added.entry(id.clone()).or_default() += usize::from(e.is_added());
        }
    }
    assert_eq!(shared_added.len(), PER_PRODUCER / 25);
    assert!(
        shared_added.values().all(|&n| n == 1),
        "each shared id added exactly once: {shared_added:?}"
    );

    for (qi, queue) in queues.iter().enumerate() {
        let mut expected: HashSet<String> = HashSet::new();
        for out in &produced {
            expected.extend(
                out.own
                    .iter()
                    .filter(|(i, ..)| *i == qi)
                    .map(|(_, id, _)| id.clone()),
            );
        }
        expected.extend(
            shared_added
                .keys()
                .filter(|id| {
                    id.trim_start_matches("shared-")
                        .parse::<usize>()
                        .ok()
                        .map(|n| n % QUEUES)
                        == Some(qi)
                })
                .cloned(),
        );
        let len = q.len(queue).await?;
        assert_eq!(len, u64::try_from(expected.len())?, "length of {queue}");

        // Positions: a permutation of 1..=len.
        let mut positions = HashMap::new();
        for id in &expected {
            let pos = q
                .position(queue, id)
                .await?
                .ok_or(format!("{id} has no position"))?;
            positions.insert(id.clone(), pos);
        }
        let seen: BTreeSet<u64> = positions.values().copied().collect();
        assert_eq!(seen, (1..=len).collect::<BTreeSet<_>>(), "positions of {queue}");

        // Dequeue everything: every id once, in position order, tickets increasing, each
        // producer's ids in its own order.
        let mut order = Vec::new();
        let mut last_ticket = 0;
        while let Some(d) = q.dequeue(queue).await? {
            assert!(d.ticket > last_ticket, "tickets increase along the queue");
            last_ticket = d.ticket;
            order.push(d.id);
        }
        assert_eq!(order.len(), expected.len(), "entries dequeued from {queue}");
        assert_eq!(order.iter().cloned().collect::<HashSet<_>>(), expected);
        for (i, id) in order.iter().enumerate() {
            assert_eq!(positions[id], u64::try_from(i + 1)?, "position of {id}");
        }
        for p in 0..PRODUCERS {
            let ns: Vec<usize> = order
                .iter()
                .filter_map(|id| id.strip_prefix(&format!("p{p}-")))
                .map(|n| n.parse())
                .collect::<Result<_, _>>()?;
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "producer {p}'s order in {queue}: {ns:?}"
            );
        }
        assert_eq!(q.len(queue).await?, 0);
        q.purge(queue).await?;
    }
    Ok(())
}

/// Positions after dequeue and remove; peek does not take; an id dequeued may join again
/// (with a new ticket, at the tail).
async fn positions_after_dequeue_and_remove(url: String) -> TestResult {
    let q = connect(&url, "fifo_positions", FifoOptions::new()).await?;
    let queue = "counter:{7}";
    for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let e = q.enqueue(queue, id, id.to_uppercase()).await?;
        let n = u64::try_from(i + 1)?;
        assert_eq!(
            e,
            Enqueued::Added {
                ticket: n,
                position: n
            }
        );
    }
    let head = q.peek(queue).await?.ok_or("peek on a queue of 4")?;
    assert_eq!((head.id.as_str(), &head.payload[..]), ("a", &b"A"[..]));
    assert_eq!(q.len(queue).await?, 4, "peek takes nothing");
    let first = q.dequeue(queue).await?.ok_or("dequeue on a queue of 4")?;
    assert_eq!((first.id.as_str(), first.ticket), ("a", 1));
    assert_eq!(
        q.position(queue, "a").await?,
        None,
        "a dequeued entry has no position"
    );
    assert_eq!(q.position(queue, "b").await?, Some(1));
    assert_eq!(q.position(queue, "c").await?, Some(2));
    assert!(q.remove(queue, "c").await?);
    assert!(!q.remove(queue, "c").await?, "removing twice");
    assert_eq!(q.position(queue, "d").await?, Some(2), "d moved up");
    assert_eq!(q.len(queue).await?, 2);
    assert_eq!(
        q.enqueue(queue, "b", "again").await?,
        Enqueued::Duplicate {
            ticket: 2,
            position: 1
        }
    );
    assert_eq!(
        q.enqueue(queue, "a", "back").await?,
        Enqueued::Added {
            ticket: 5,
            position: 3
        }
    );
    let rest: Vec<String> = [
        q.dequeue(queue).await?,
        q.dequeue(queue).await?,
        q.dequeue(queue).await?,
    ]
    .into_iter()
    .map(|d| d.map(|d| d.id).unwrap_or_default())
    .collect();
    assert_eq!(rest, ["b", "d", "a"]);
    assert_eq!(q.dequeue(queue).await?, None);
    q.purge(queue).await?;
    Ok(())
}

/// Expiry on a manual clock: an entry past its deadline is never reported (position,
/// len, peek, dequeue), positions behind it move up, its id may join again; with two TTLs
/// on one queue (deadlines no longer in list order) an expired entry in the middle goes too.
async fn expired_entries_are_never_reported(url: String) -> TestResult {
    let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
    let options = store(&url, "fifo_expiry").clock(Arc::new(clock.clone()));
    let q = FifoQueue::connect(
        options.clone(),
        FifoOptions::new().entry_ttl(Duration::from_millis(1_000)),
    )
    .await?;
    let short = FifoQueue::connect(options, FifoOptions::new().entry_ttl(Duration::from_millis(100))).await?;
    let queue = "expiry";
    q.enqueue(queue, "a", "").await?;
    clock.advance(Duration::from_millis(500));
    q.enqueue(queue, "b", "").await?;
    clock.advance(Duration::from_millis(100));
    q.enqueue(queue, "c", "").await?;
    assert_eq!(q.position(queue, "c").await?, Some(3));
    clock.advance(Duration::from_millis(400)); // a's deadline: expired
    assert_eq!(q.position(queue, "a").await?, None);
    assert_eq!(q.len(queue).await?, 2);
    assert_eq!(q.position(queue, "b").await?, Some(1));
    assert_eq!(q.peek(queue).await?.map(|d| d.id).as_deref(), Some("b"));
    assert!(
        q.enqueue(queue, "a", "").await?.is_added(),
        "an expired id joins again"
    );
    assert_eq!(q.position(queue, "a").await?, Some(3));

    // A shorter TTL behind longer ones: x expires before b, c and a.
    assert_eq!(short.enqueue(queue, "x", "").await?.position(), 4);
    q.enqueue(queue, "y", "").await?;
    assert_eq!(q.position(queue, "y").await?, Some(5));
    clock.advance(Duration::from_millis(150)); // x expired, the others live
    assert_eq!(q.position(queue, "x").await?, None);
    assert_eq!(
        q.position(queue, "y").await?,
        Some(4),
        "y moved up over the expired x"
    );
    assert_eq!(q.len(queue).await?, 4);
    clock.advance(Duration::from_millis(600)); // b (deadline +1500) and c (+1600) expired
    assert_eq!(q.sweep(queue).await?, 2);
    assert_eq!(q.len(queue).await?, 2);
    let order = [q.dequeue(queue).await?, q.dequeue(queue).await?];
    assert_eq!(order.map(|d| d.map(|d| d.id).unwrap_or_default()), ["a", "y"]);
    clock.advance(Duration::from_secs(10));
    q.enqueue(queue, "z", "").await?;
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        q.dequeue(queue).await?,
        None,
        "dequeue never returns an expired entry"
    );
    q.purge(queue).await?;
    Ok(())
}

/// Bad names and oversized payloads are refused before any I/O.
async fn bad_input_is_refused(url: String) -> TestResult {
    let limits = Limits {
        max_document_bytes: 16,
        ..Limits::default()
    };
    let q = FifoQueue::connect(store(&url, "fifo_bad").limits(limits), FifoOptions::new()).await?;
    let invalid = |r: Result<_, Error>| matches!(r, Err(Error::InvalidInput { .. }));
    assert!(invalid(q.enqueue("", "id", "").await.map(|_| ())));
    assert!(invalid(q.enqueue("q", "", "").await.map(|_| ())));
    assert!(invalid(q.enqueue("q\n", "id", "").await.map(|_| ())));
    assert!(invalid(q.position("q", "i\u{0}d").await.map(|_| ())));
    assert!(invalid(q.len(&"q".repeat(2_000)).await.map(|_| ())));
    assert!(invalid(q.dequeue("").await.map(|_| ())));
    assert!(invalid(q.remove("q", "").await.map(|_| ())));
    assert!(matches!(
        q.enqueue("q", "id", vec![0u8; 17]).await,
        Err(Error::TooLarge {
            limit: 16,
            actual: 17,
            ..
        })
    ));
    assert_eq!(q.len("q").await?, 0, "nothing was written");
    let braced = FifoQueue::connect(store(&url, "fifo_bad").prefix("a{b"), FifoOptions::new()).await;
    assert!(matches!(braced, Err(Error::InvalidInput { .. })));
    q.purge("q").await?;
    Ok(())
}

macro_rules! fifo_tests {
    ($module:ident, $url:expr) => {
        mod $module {
            use super::*;

            fn url() -> String {
                match $url {
                    Ok(url) => url,
                    Err(e) => panic!("{e}"),
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_producers_keep_fifo_and_refuse_duplicates() -> TestResult {
                concurrent_producers(url()).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn positions_after_dequeue_and_remove() -> TestResult {
                super::positions_after_dequeue_and_remove(url()).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn expired_entries_are_never_reported() -> TestResult {
                super::expired_entries_are_never_reported(url()).await
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn bad_input_is_refused() -> TestResult {
                super::bad_input_is_refused(url()).await
            }
        }
    };
}

fifo_tests!(single, common::single_url());
fifo_tests!(cluster, common::cluster_url());
