//! Unit tests of the memory bus.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use cqrs_core::{
    bus::{handler_fn, Delivery, HandlerError},
    ContentType,
};
use tokio::time::Instant;

use super::*;

fn msg(key: &str) -> Message {
    Message::new(key, ContentType::Json, "{}")
}

#[tokio::test]
async fn bad_input_is_refused_and_a_live_consumer_name_too() {
    let bus = MemoryBus::new();
    assert!(matches!(
        bus.publish("", vec![msg("k")]).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        bus.publish("t", vec![msg("")]).await,
        Err(Error::InvalidInput { .. })
    ));
    let ok = Arc::new(handler_fn(|_d: Delivery| async { Ok(()) }));
    let spec = SubscriptionSpec::new("t", "g").consumer("same");
    let first = bus.subscribe(spec.clone(), ok.clone()).await.unwrap();
    assert!(matches!(
        bus.subscribe(spec.clone(), ok.clone()).await,
        Err(Error::AlreadyExists { .. })
    ));
    first.stop().await.unwrap();
    let again = bus.subscribe(spec, ok).await.unwrap();
    again.stop().await.unwrap();
    assert!(bus.dead_letters("nope", "nope", 10).await.unwrap().is_empty());
    assert_eq!(bus.trim("nope").await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn stop_releases_a_hung_handler_after_one_ack_timeout() {
    let bus = MemoryBus::new();
    let calls = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let hung = {
        let calls = calls.clone();
        handler_fn(move |d: Delivery| {
            calls.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            async move {
                let _ = tx.send(d.attempt);
                if d.consumer == "hangs" {
                    std::future::pending::<()>().await;
                }
                Ok::<(), HandlerError>(())
            }
        })
    };
    let hung = Arc::new(hung);
    let timeout = Duration::from_secs(30);
    let a = bus
        .subscribe(
            SubscriptionSpec::new("t", "g")
                .consumer("hangs")
                .ack_timeout(timeout),
            hung.clone(),
        )
        .await
        .unwrap();
    bus.publish("t", vec![msg("k")]).await.unwrap();
    assert_eq!(rx.recv().await, Some(1));
    let before = Instant::now();
    a.stop().await.unwrap();
    assert!(
        before.elapsed() >= timeout,
        "stop waited one ack timeout for the handler"
    );
    let b = bus
        .subscribe(
            SubscriptionSpec::new("t", "g")
                .consumer("fine")
                .ack_timeout(timeout),
            hung,
        )
        .await
        .unwrap();
    let at = Instant::now();
    assert_eq!(
        rx.recv().await,
        Some(2),
        "released at stop, redelivered as attempt 2"
    );
    assert!(
        at.elapsed() < timeout,
        "no claim timeout needed after a graceful stop"
    );
    assert_eq!(b.metrics().lag, 0);
    b.stop().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
