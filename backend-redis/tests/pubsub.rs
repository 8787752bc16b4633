//! The bus conformance suite against the Redis Pub/Sub bus, on a single node
//! (`redis_pubsub`) and on the local cluster (`redis_pubsub_cluster`). The bus is at most
//! once: behaviours needing durability, dead letters or claims print NOT RUN.
//!
//! `cargo nextest run -p backend-redis -E 'test(redis_pubsub::)'`

mod common;

use std::sync::Arc;

use backend_redis::{RedisPubSubBus, RedisStoreOptions};
use conformance::{bus::BusStoresHarness, Namespace};
use cqrs_core::{bus::EventBus, BoxError};

async fn harness(ns: Namespace, url: Result<String, String>) -> Result<BusStoresHarness, BoxError> {
    let url = url?;
    let options = RedisStoreOptions::new(url.clone()).prefix(ns.as_str());
    let bus = RedisPubSubBus::connect(options)
        .await
        .map_err(|e| format!("cannot connect the Pub/Sub bus to {url}: {e}"))?;
    let bus: Arc<dyn EventBus> = Arc::new(bus);
    Ok(BusStoresHarness::new(ns, bus))
}

conformance::bus_suite!(redis_pubsub, |ns| harness(ns, common::single_url()));
conformance::bus_suite!(redis_pubsub_cluster, |ns| harness(ns, common::cluster_url()));

/// What the suite cannot see on an at-most-once transport: real metrics and health, the
/// unsupported calls, undecodable frames, prefixes keeping buses apart, duplicate consumer
/// names.
///
/// `cargo nextest run -p backend-redis -E 'test(redis_pubsub_transport::)'`
mod redis_pubsub_transport {
    use std::time::Duration;

    use conformance::{
        bus::{messages, seq_of, wait_for, Act, Probe},
        Failure,
    };
    use cqrs_core::{
        bus::{HandlerError, HealthStatus, RetryPolicy, SubscriptionSpec},
        Error,
    };

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn failed(f: Failure) -> BoxError {
        f.0.into()
    }

    async fn subscribers(channel: &str) -> Result<u64, BoxError> {
        let client = redis::Client::open(common::single_url()?)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await?;
        Ok(n)
    }

    async fn bus(prefix: &str) -> Result<RedisPubSubBus, BoxError> {
        let options = RedisStoreOptions::new(common::single_url()?).prefix(prefix);
        Ok(RedisPubSubBus::connect(options).await?)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn metrics_and_health_are_real() -> Result<(), BoxError> {
        let ns = Namespace::for_test("redis_pubsub_transport::metrics");
        let bus = bus(ns.as_str()).await?;
        let probe = Probe::scripted(|d, nth| match (d.message.key.as_str(), nth) {
            ("flaky", 0) => Act::Fail(HandlerError::retryable("transient")),
            ("bad", _) => Act::Fail(HandlerError::permanent("rejected for good")),
            _ => Act::Slow(Duration::from_millis(2)),
        });
        let spec =
            SubscriptionSpec::new("metrics", "g").retry(RetryPolicy::fixed(3, Duration::from_millis(5)));
        let sub = bus.subscribe(spec, probe.clone()).await?;
        assert_eq!(sub.health().status, HealthStatus::Running);
        assert_eq!(sub.health().owned_partitions, vec![0]);
        bus.publish("metrics", messages("flaky", 1)).await?;
        bus.publish("metrics", messages("bad", 1)).await?;
        bus.publish("metrics", messages("fine", 5)).await?;
        wait_for(WAIT, "6 handled, 2 failed", || {
            let m = sub.metrics();
            m.handled == 6 && m.failed == 2 && m.in_flight == 0
        })
        .await
        .map_err(failed)?;
        let m = sub.metrics();
        assert_eq!(m.published, 7, "published by this bus instance");
        assert_eq!((m.handled, m.failed, m.retried, m.dead_lettered), (6, 2, 1, 0));
        assert_eq!((m.in_flight, m.lag), (0, 0));
        assert!(m.latency.p50 <= m.latency.p95 && m.latency.p95 <= m.latency.p99);
        assert!(m.latency.p99 >= Duration::from_millis(2), "{:?}", m.latency);
        let calls = probe.calls();
        let flaky: Vec<u32> = calls
            .iter()
            .filter(|c| c.delivery.message.key == "flaky")
            .map(|c| c.delivery.attempt)
            .collect();
        assert_eq!(flaky, [1, 2], "the retry is the same delivery, attempt 2");
        assert_eq!(
            calls.iter().filter(|c| c.delivery.message.key == "bad").count(),
            1
        );
        let ok_order: Vec<_> = probe
            .acked()
            .iter()
            .filter(|d| d.message.key == "fine")
            .filter_map(|d| seq_of(&d.message))
            .collect();
        assert_eq!(
            ok_order,
            [0, 1, 2, 3, 4],
            "one consumer, one connection: publish order"
        );
        assert!(sub.health().last_error.is_some());
        assert!(matches!(
            bus.dead_letters("metrics", "g", 10).await,
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            bus.trim("metrics").await,
            Err(Error::Unsupported { .. })
        ));
        sub.stop().await?;
        bus.close().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn undecodable_frames_are_dropped_and_reported() -> Result<(), BoxError> {
        let ns = Namespace::for_test("redis_pubsub_transport::undecodable");
        let bus = bus(ns.as_str()).await?;
        let probe = Probe::ok();
        let sub = bus
            .subscribe(SubscriptionSpec::new("raw", "g"), probe.clone())
            .await?;
        let client = redis::Client::open(common::single_url()?)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let channel = format!("{}:pubsub:raw", ns.as_str());
        let receivers: u64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&b"PS1\xff not a batch"[..])
            .query_async(&mut conn)
            .await?;
        assert_eq!(receivers, 1, "the bus listens on {channel}");
        wait_for(WAIT, "the bad frame counted", || sub.metrics().failed == 1)
            .await
            .map_err(failed)?;
        bus.publish("raw", messages("k", 1)).await?;
        probe.wait_acked(1, WAIT).await.map_err(failed)?;
        assert_eq!(probe.calls().len(), 1, "the handler never saw the bad frame");
        let error = sub.health().last_error.unwrap_or_default();
        assert!(error.contains("undecodable"), "{error}");
        sub.stop().await?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn prefixes_keep_buses_apart_and_consumers_are_unique() -> Result<(), BoxError> {
        let ns = Namespace::for_test("redis_pubsub_transport::prefixes");
        let (a, b) = (
            bus(&format!("{}_a", ns.as_str())).await?,
            bus(&format!("{}_b", ns.as_str())).await?,
        );
        let (pa, pb) = (Probe::ok(), Probe::ok());
        let sa = a
            .subscribe(SubscriptionSpec::new("t", "g").consumer("c"), pa.clone())
            .await?;
        let sb = b.subscribe(SubscriptionSpec::new("t", "g"), pb.clone()).await?;
        let again = a
            .subscribe(SubscriptionSpec::new("t", "g").consumer("c"), Probe::ok())
            .await;
        assert!(matches!(again, Err(Error::AlreadyExists { .. })), "{again:?}");
        a.publish("t", messages("for-a", 2)).await?;
        b.publish("t", messages("for-b", 3)).await?;
        pa.wait_acked(2, WAIT).await.map_err(failed)?;
        pb.wait_acked(3, WAIT).await.map_err(failed)?;
        assert!(pa.calls().iter().all(|c| c.delivery.message.key == "for-a"));
        assert!(pb.calls().iter().all(|c| c.delivery.message.key == "for-b"));
        let channel = format!("{}_a:pubsub:t", ns.as_str());
        assert_eq!(subscribers(&channel).await?, 1, "bus a listens on {channel}");
        sa.stop().await?;
        assert_eq!(subscribers(&channel).await?, 0, "the last stop unsubscribes");
        sb.stop().await?;
        Ok(())
    }
}
