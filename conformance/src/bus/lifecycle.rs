//! Lifecycle: graceful stop, restart, a crashed consumer's messages claimed after the ack
//! timeout, a slow handler keeping its claim, concurrent subscribe and stop, close
//! (`docs/CONFORMANCE.md` items 77, 78, 81, 84, 96).

use std::{collections::HashSet, sync::Arc, time::Duration};

use cqrs_core::{
    bus::{Message, SubscriptionSpec},
    ContentType, Error,
};

use super::{group, messages, require, topic, Act, BusHarness, Probe};
use crate::{ensure, ensure_eq, ensure_err, Ctx, Failure, Outcome, Verdict};

/// 77, 81: consumers stopped gracefully mid-stream, three times in a row, lose nothing:
/// once `stop()` returns the stopped consumer is not called again, and the next consumer of
/// the group handles the rest.
pub async fn graceful_stop_loses_nothing(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let caps = bus.capabilities();
    if let Some(v) = require(caps, caps.durable, "durable") {
        return Ok(v);
    }
    let (t, g, s) = (topic(&*h, "stop"), group(&*h, "g"), h.settings());
    let mut sent = HashSet::new();
    for k in 0..20 {
        let batch = messages(&format!("key{k}"), 10);
        sent.extend(batch.iter().map(|m| m.id));
        bus.publish(&t, batch).await.ctx("publish")?;
    }
    let probe = Probe::scripted(|_, _| Act::Slow(Duration::from_millis(1)));
    for round in 1..=3 {
        let name = format!("c{round}");
        let spec = SubscriptionSpec::new(&t, &g)
            .consumer(&name)
            .concurrency(4)
            .ack_timeout(s.ack_timeout);
        let sub = bus.subscribe(spec, probe.clone()).await.ctx("subscribe")?;
        let target = round * 40;
        probe.wait_acked(target, s.wait).await?;
        sub.stop().await.ctx("stop")?;
        let calls_at_stop = probe
            .calls()
            .iter()
            .filter(|c| c.delivery.consumer == name)
            .count();
        let in_flight_left = calls_at_stop - probe.acked().iter().filter(|d| d.consumer == name).count();
        ensure_eq!(
            in_flight_left,
            0,
            "handler calls of {name} unfinished after stop() returned"
        );
        tokio::task::yield_now().await;
        let later = probe
            .calls()
            .iter()
            .filter(|c| c.delivery.consumer == name)
            .count();
        ensure_eq!(later, calls_at_stop, "calls to {name} after stop() returned");
    }
    let last = bus
        .subscribe(
            SubscriptionSpec::new(&t, &g)
                .consumer("last")
                .ack_timeout(s.ack_timeout),
            probe.clone(),
        )
        .await
        .ctx("subscribe")?;
    probe.wait_acked(sent.len(), s.wait).await?;
    ensure_eq!(probe.acked_ids(), sent, "every message acknowledged");
    last.stop().await.ctx("stop")?;
    Ok(Verdict::Passed)
}

/// A subscriber restarted under the same group and consumer name resumes after its last
/// acknowledgement: acknowledged messages are not delivered again, later ones are.
pub async fn restarted_subscriber_resumes_after_last_ack(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let caps = bus.capabilities();
    if let Some(v) = require(caps, caps.durable, "durable") {
        return Ok(v);
    }
    let (t, g, s) = (topic(&*h, "restart"), group(&*h, "g"), h.settings());
    let first = messages("k", 10);
    bus.publish(&t, first.clone()).await.ctx("publish")?;
    let spec = || {
        SubscriptionSpec::new(&t, &g)
            .consumer("worker")
            .ack_timeout(s.ack_timeout)
    };
    let before = Probe::ok();
    let sub = bus.subscribe(spec(), before.clone()).await.ctx("subscribe")?;
    before.wait_acked(10, s.wait).await?;
    sub.stop().await.ctx("stop")?;
    let second = messages("k", 5);
    bus.publish(&t, second.clone()).await.ctx("publish")?;
    let after = Probe::ok();
    let sub = bus.subscribe(spec(), after.clone()).await.ctx("resubscribe")?;
    after.wait_acked(5, s.wait).await?;
    let lag_deadline = crate::Deadline::after(s.wait);
    while sub.metrics().lag > 0 {
        lag_deadline.check("lag 0")?;
        crate::poll_pause().await;
    }
    sub.stop().await.ctx("stop")?;
    let got: Vec<_> = after.calls().iter().map(|c| c.delivery.message.id).collect();
    let want: Vec<_> = second.iter().map(|m| m.id).collect();
    ensure_eq!(got, want, "deliveries after the restart");
    Ok(Verdict::Passed)
}

/// 84: a consumer that dies holding a message (its handler never returns, then it is
/// aborted as a crashed process would be) has the message claimed by another consumer of the
/// group, not before the ack timeout, with the attempt counter counting the lost delivery.
pub async fn crashed_consumer_is_claimed_after_ack_timeout(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let caps = bus.capabilities();
    if let Some(v) = require(caps, caps.claim, "claim") {
        return Ok(v);
    }
    let (t, g, s) = (topic(&*h, "crash"), group(&*h, "g"), h.settings());
    let hung = Probe::scripted(|_, _| Act::Hang);
    let a = bus
        .subscribe(
            SubscriptionSpec::new(&t, &g)
                .consumer("a")
                .ack_timeout(s.ack_timeout),
            hung.clone(),
        )
        .await
        .ctx("subscribe a")?;
    let m = messages("k", 1);
    bus.publish(&t, m.clone()).await.ctx("publish")?;
    hung.wait_until(s.wait, "a to take the message", |calls, _| !calls.is_empty())
        .await?;
    let taken_at = hung.calls()[0].at;
    a.abort();
    let healthy = Probe::ok();
    let b = bus
        .subscribe(
            SubscriptionSpec::new(&t, &g)
                .consumer("b")
                .ack_timeout(s.ack_timeout),
            healthy.clone(),
        )
        .await
        .ctx("subscribe b")?;
    healthy.wait_acked(1, s.wait + s.ack_timeout).await?;
    let call = healthy.calls().remove(0);
    ensure_eq!(call.delivery.message.id, m[0].id, "claimed message");
    let waited = call.at - taken_at;
    let slack = s.ack_timeout / 10;
    ensure!(
        waited + slack >= s.ack_timeout,
        "claimed {waited:?} after the crashed consumer took it; ack timeout is {:?}",
        s.ack_timeout
    );
    ensure_eq!(call.delivery.attempt, 2, "attempt counter after a claim");
    ensure_eq!(hung.calls().len(), 1, "calls on the crashed consumer");
    b.stop().await.ctx("stop")?;
    Ok(Verdict::Passed)
}

/// A handler slower than the ack timeout keeps its claim: another live consumer of the
/// group never gets the message, and it is handled exactly once.
pub async fn slow_handler_extends_its_claim(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let caps = bus.capabilities();
    if let Some(v) = require(caps, caps.claim, "claim") {
        return Ok(v);
    }
    let (t, g, s) = (topic(&*h, "slow"), group(&*h, "g"), h.settings());
    let probe = Probe::scripted(move |d, _| {
        if d.consumer == "a" {
            Act::Slow(s.ack_timeout * 3)
        } else {
            Act::Ok
        }
    });
    let a = bus
        .subscribe(
            SubscriptionSpec::new(&t, &g)
                .consumer("a")
                .ack_timeout(s.ack_timeout),
            probe.clone(),
        )
        .await
        .ctx("subscribe a")?;
    let m = messages("k", 1);
    bus.publish(&t, m.clone()).await.ctx("publish")?;
    probe
        .wait_until(s.wait, "a to take the message", |calls, _| !calls.is_empty())
        .await?;
    let b = bus
        .subscribe(
            SubscriptionSpec::new(&t, &g)
                .consumer("b")
                .concurrency(2)
                .ack_timeout(s.ack_timeout),
            probe.clone(),
        )
        .await
        .ctx("subscribe b")?;
    probe.wait_acked(1, s.wait).await?;
    let deadline = crate::Deadline::after(s.wait);
    while b.metrics().lag > 0 {
        deadline.check("lag 0")?;
        crate::poll_pause().await;
    }
    let calls = probe.calls();
    ensure_eq!(calls.len(), 1, "deliveries of the slow message: {calls:?}");
    ensure_eq!(calls[0].delivery.consumer, "a", "the consumer that handled it");
    b.stop().await.ctx("stop b")?;
    a.stop().await.ctx("stop a")?;
    Ok(Verdict::Passed)
}

/// 78: many subscribe/stop cycles on one group at once while messages arrive are safe, and
/// a final subscriber gets whatever is left.
pub async fn concurrent_subscribe_and_stop_is_safe(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus().clone();
    let caps = bus.capabilities();
    let (t, g, s) = (topic(&*h, "churn"), group(&*h, "g"), h.settings());
    let probe = Probe::ok();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (bus, t, g, probe) = (bus.clone(), t.clone(), g.clone(), probe.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                let spec = SubscriptionSpec::new(&t, &g)
                    .consumer(format!("c{i}-{round}"))
                    .concurrency(2)
                    .ack_timeout(s.ack_timeout);
                let sub = bus.subscribe(spec, probe.clone()).await.ctx("subscribe")?;
                bus.publish(&t, messages(&format!("k{i}"), 3))
                    .await
                    .ctx("publish")?;
                tokio::task::yield_now().await;
                sub.stop().await.ctx("stop")?;
            }
            Ok::<_, Failure>(())
        }));
    }
    for task in tasks {
        crate::join_task(task).await?;
    }
    if !caps.durable {
        return Ok(Verdict::Passed);
    }
    let last = bus
        .subscribe(
            SubscriptionSpec::new(&t, &g).ack_timeout(s.ack_timeout),
            probe.clone(),
        )
        .await
        .ctx("subscribe")?;
    probe.wait_acked(8 * 5 * 3, s.wait).await?;
    last.stop().await.ctx("stop")?;
    Ok(Verdict::Passed)
}

/// 96: after `close()` publish and subscribe return `Closed`; closing twice is fine.
pub async fn closed_bus_refuses_calls(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let (t, g) = (topic(&*h, "closed"), group(&*h, "g"));
    bus.close().await.ctx("close")?;
    ensure_err!(
        bus.publish(&t, vec![Message::new("k", ContentType::Json, "{}")])
            .await,
        Error::Closed,
        "publish after close"
    );
    let probe = Probe::ok();
    let sub = bus.subscribe(SubscriptionSpec::new(&t, &g), probe).await;
    ensure!(
        matches!(sub, Err(Error::Closed)),
        "subscribe after close: {:?}",
        sub.err()
    );
    bus.close().await.ctx("second close")?;
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bus_lifecycle_tests {
    ($factory:expr) => {
        $crate::__bus_tests!(
            $factory,
            lifecycle,
            [
                graceful_stop_loses_nothing,
                restarted_subscriber_resumes_after_last_ack,
                crashed_consumer_is_claimed_after_ack_timeout,
                slow_handler_extends_its_claim,
                concurrent_subscribe_and_stop_is_safe,
                closed_bus_refuses_calls,
            ]
        );
    };
}
