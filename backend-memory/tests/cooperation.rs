//! The embedded store cooperates with the tokio scheduler: a task looping on store calls
//! yields, so timers fire and other tasks run beside it.
//!
//! Each test bounds itself with a watchdog thread that ends the loops after a few seconds.
//! A store that never yields therefore makes the test fail (the loop ends by the watchdog,
//! not by the timer) instead of hanging until the runner's time limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_memory::MemoryBackend;
use cqrs_core::{ContentType, EventData, EventStore, ExpectedVersion, StreamId};

/// How long a loop may run before the watchdog ends it: far longer than the timer under test.
const WATCHDOG: Duration = Duration::from_secs(4);

fn event() -> EventData {
    EventData::new("Looped", ContentType::Json, "{}")
}

/// A flag the loops watch, set by a plain thread after [`WATCHDOG`].
fn watchdog() -> Arc<AtomicBool> {
    let expired = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&expired);
    std::thread::spawn(move || {
        std::thread::sleep(WATCHDOG);
        flag.store(true, Ordering::Release);
    });
    expired
}

#[allow(clippy::unwrap_used)] // test support
async fn append_until(store: &dyn EventStore, stream: &StreamId, stop: &AtomicBool) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        store
            .append(stream, ExpectedVersion::Any, vec![event()])
            .await
            .unwrap();
        n += 1;
    }
    n
}

/// On a single-threaded runtime the timer can only fire if the looping task returns
/// `Pending` now and then.
#[tokio::test(flavor = "current_thread")]
async fn a_timeout_around_a_loop_of_appends_fires() {
    let stores = MemoryBackend::new().stores();
    let stream: StreamId = "loop-1".parse().unwrap();
    let expired = watchdog();
    let started = Instant::now();
    let looped = tokio::time::timeout(
        Duration::from_millis(50),
        append_until(stores.events.as_ref(), &stream, &expired),
    )
    .await;
    assert!(
        looped.is_err(),
        "the 50 ms timeout never fired: the loop ran {:?} until the watchdog ended it ({} appends)",
        started.elapsed(),
        looped.unwrap_or_default()
    );
    assert!(
        started.elapsed() < WATCHDOG,
        "the timeout fired only after the watchdog"
    );
}

/// 32 tasks looping on appends on 4 worker threads: a task spawned after them still runs
/// promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_looping_on_appends_do_not_starve_the_runtime() {
    let stores = MemoryBackend::new().stores();
    let expired = watchdog();
    let loops: Vec<_> = (0..32)
        .map(|i| {
            let events = Arc::clone(&stores.events);
            let stop = Arc::clone(&expired);
            tokio::spawn(async move {
                let stream: StreamId = format!("loop-{i}").parse().unwrap();
                append_until(events.as_ref(), &stream, &stop).await
            })
        })
        .collect();
    // Let every looper get going before the probe is spawned behind them.
    tokio::task::yield_now().await;
    let spawned = Instant::now();
    let probe = tokio::spawn(async move { spawned.elapsed() });
    let waited = probe.await.unwrap();
    expired.store(true, Ordering::Release);
    let mut appended = 0;
    for l in loops {
        appended += l.await.unwrap();
    }
    assert!(appended > 0, "the loops ran");
    assert!(
        waited < Duration::from_secs(2),
        "a task spawned beside 32 looping tasks waited {waited:?} to run"
    );
}
