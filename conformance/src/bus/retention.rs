//! Retention, metrics and health, and at-most-once transports (`docs/CONFORMANCE.md` items 94, 95).

use std::{sync::Arc, time::Duration};

use cqrs_core::bus::{HandlerError, HealthStatus, RetryPolicy, SubscriptionSpec};

use super::{group, messages, require, seq_of, topic, wait_for, Act, BusHarness, Probe};
use crate::{ensure, ensure_eq, Ctx, Outcome, Verdict};

/// 94: `trim` removes only entries every group acknowledged: with one group done and
/// another (stopped) not, nothing is trimmed and the second group still gets everything;
/// once both acknowledged, everything is trimmed and nothing is delivered again.
pub async fn retention_keeps_unacked_entries(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let caps = bus.capabilities();
    if let Some(v) = require(caps, caps.retention && caps.durable, "retention (and durable)") {
        return Ok(v);
    }
    let (t, s) = (topic(&*h, "trim"), h.settings());
    let (ga, gb) = (group(&*h, "a"), group(&*h, "b"));
    let spec = |g: &str| SubscriptionSpec::new(&t, g).ack_timeout(s.ack_timeout);
    // Group b exists but consumes nothing yet.
    let idle = Probe::ok();
    bus.subscribe(spec(&gb), idle.clone())
        .await
        .ctx("subscribe b")?
        .stop()
        .await
        .ctx("stop b")?;
    let a = Probe::ok();
    let sa = bus.subscribe(spec(&ga), a.clone()).await.ctx("subscribe a")?;
    let mut sent = std::collections::HashSet::new();
    for k in 0..4 {
        let batch = messages(&format!("k{k}"), 5);
        sent.extend(batch.iter().map(|m| m.id));
        bus.publish(&t, batch).await.ctx("publish")?;
    }
    a.wait_acked(20, s.wait).await?;
    wait_for(s.wait, "group a's lag 0", || sa.metrics().lag == 0).await?;
    let trimmed = bus.trim(&t).await.ctx("trim")?;
    ensure_eq!(trimmed, 0, "entries trimmed while group b acknowledged nothing");
    let b = Probe::ok();
    let sb = bus.subscribe(spec(&gb), b.clone()).await.ctx("resubscribe b")?;
    b.wait_acked(20, s.wait).await?;
    ensure_eq!(b.acked_ids(), sent, "group b gets every message");
    wait_for(s.wait, "group b's lag 0", || sb.metrics().lag == 0).await?;
    let trimmed = bus.trim(&t).await.ctx("trim")?;
    ensure_eq!(trimmed, 20, "entries trimmed once both groups acknowledged");
    ensure_eq!(bus.trim(&t).await.ctx("trim")?, 0, "a second trim");
    sa.stop().await.ctx("stop")?;
    sb.stop().await.ctx("stop")?;
    let again = Probe::ok();
    let sa = bus
        .subscribe(spec(&ga), again.clone())
        .await
        .ctx("resubscribe a")?;
    bus.publish(&t, messages("after", 1)).await.ctx("publish")?;
    again.wait_acked(1, s.wait).await?;
    ensure_eq!(
        again.calls().len(),
        1,
        "deliveries after the trim (only the new message)"
    );
    sa.stop().await.ctx("stop")?;
    Ok(Verdict::Passed)
}

/// Metrics and health report what happened: published, handled, failed, retried,
/// dead-lettered, nothing in flight, no lag, latency percentiles ordered and at least the
/// handler's time, the owned partitions and the last error.
pub async fn metrics_and_health_report_what_happened(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let caps = bus.capabilities();
    if let Some(v) = require(
        caps,
        caps.dead_letter && caps.durable,
        "dead_letter (and durable)",
    ) {
        return Ok(v);
    }
    let (t, g, s) = (topic(&*h, "metrics"), group(&*h, "g"), h.settings());
    let probe = Probe::scripted(|d, nth| match (d.message.key.as_str(), seq_of(&d.message), nth) {
        ("flaky", _, 0) => Act::Fail(HandlerError::retryable("transient")),
        ("bad", _, _) => Act::Fail(HandlerError::permanent("rejected for good")),
        _ => Act::Slow(Duration::from_millis(2)),
    });
    let spec = SubscriptionSpec::new(&t, &g)
        .retry(RetryPolicy::fixed(3, s.retry_delay))
        .ack_timeout(s.ack_timeout);
    let sub = bus.subscribe(spec, probe.clone()).await.ctx("subscribe")?;
    ensure_eq!(sub.health().status, HealthStatus::Running, "health status");
    bus.publish(&t, messages("flaky", 2)).await.ctx("publish")?;
    bus.publish(&t, messages("bad", 1)).await.ctx("publish")?;
    bus.publish(&t, messages("fine", 7)).await.ctx("publish")?;
    wait_for(s.wait, "9 handled and 1 dead-lettered", || {
        let m = sub.metrics();
        m.handled == 9 && m.dead_lettered == 1 && m.in_flight == 0
    })
    .await?;
    let m = sub.metrics();
    ensure_eq!(m.published, 10, "published");
    ensure_eq!(m.handled, 9, "handled");
    ensure_eq!(m.failed, 3, "failed (2 transient, 1 permanent)");
    ensure_eq!(m.retried, 2, "retried");
    ensure_eq!(m.dead_lettered, 1, "dead_lettered");
    ensure_eq!(m.in_flight, 0, "in_flight");
    ensure_eq!(m.lag, 0, "lag");
    let l = m.latency;
    ensure!(
        l.p50 <= l.p95 && l.p95 <= l.p99,
        "percentiles out of order: {l:?}"
    );
    ensure!(
        l.p99 >= Duration::from_millis(2),
        "p99 below the handler's 2 ms: {l:?}"
    );
    let health = sub.health();
    ensure_eq!(health.status, HealthStatus::Running, "health status");
    ensure!(
        !health.owned_partitions.is_empty(),
        "the only consumer owns no partition"
    );
    ensure!(health.last_error.is_some(), "last error not reported");
    sub.stop().await.ctx("stop")?;
    Ok(Verdict::Passed)
}

/// 95: an at-most-once transport (Pub/Sub) delivers to connected subscribers only: what
/// was published before a subscriber connected is not delivered to it.
pub async fn at_most_once_subscriber_misses_earlier_messages(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let caps = bus.capabilities();
    if caps.durable {
        crate::not_run!("the transport is durable (at-least-once); item 95 is for at-most-once transports");
    }
    let (t, g, s) = (topic(&*h, "ephemeral"), group(&*h, "g"), h.settings());
    bus.publish(&t, messages("early", 3)).await.ctx("publish")?;
    let probe = Probe::ok();
    let sub = bus
        .subscribe(
            SubscriptionSpec::new(&t, &g).ack_timeout(s.ack_timeout),
            probe.clone(),
        )
        .await
        .ctx("subscribe")?;
    let later = messages("late", 3);
    bus.publish(&t, later.clone()).await.ctx("publish")?;
    probe.wait_acked(3, s.wait).await?;
    sub.stop().await.ctx("stop")?;
    let want: std::collections::HashSet<_> = later.iter().map(|m| m.id).collect();
    ensure_eq!(
        probe.acked_ids(),
        want,
        "messages received (only those after subscribing)"
    );
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bus_retention_tests {
    ($factory:expr) => {
        $crate::__bus_tests!(
            $factory,
            retention,
            [
                retention_keeps_unacked_entries,
                metrics_and_health_report_what_happened,
                at_most_once_subscriber_misses_earlier_messages,
            ]
        );
    };
}
