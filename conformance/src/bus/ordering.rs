//! Ordering: per-key order under concurrent publishers and competing consumers, no next
//! message of a key while one is un-acknowledged, priorities (`docs/CONFORMANCE.md` items 74, 76, 93).

use std::{collections::HashMap, sync::Arc};

use cqrs_core::bus::{HandlerError, Priority, RetryPolicy, SubscriptionSpec};

use super::{group, messages, require, seq_of, topic, Act, BusHarness, Probe};
use crate::{ensure, ensure_eq, Ctx, Failure, Outcome, Verdict};

/// 74, 76: 4 publishers (each key published by one of them, in order) and 4 consumers of
/// one group with concurrency 2; some first attempts fail and are retried. Each key's
/// messages are acknowledged in publish order, and two deliveries of one key never overlap
/// (retries included).
pub async fn per_key_order_under_concurrent_publishers_and_consumers(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus().clone();
    let caps = bus.capabilities();
    if let Some(v) = require(caps, caps.ordered_per_key, "ordered_per_key") {
        return Ok(v);
    }
    let (t, g, s) = (topic(&*h, "order"), group(&*h, "g"), h.settings());
    let probe = Probe::scripted(|d, nth| match seq_of(&d.message) {
        Some(n) if n % 7 == 3 && nth == 0 => Act::Fail(HandlerError::retryable("first attempt fails")),
        _ => Act::Ok,
    });
    let mut subs = Vec::new();
    for i in 0..4 {
        let spec = SubscriptionSpec::new(&t, &g)
            .consumer(format!("c{i}"))
            .concurrency(2)
            .retry(RetryPolicy::fixed(5, s.retry_delay))
            .ack_timeout(s.ack_timeout);
        subs.push(bus.subscribe(spec, probe.clone()).await.ctx("subscribe")?);
    }
    const KEYS: usize = 12;
    const PER_KEY: usize = 25;
    let mut tasks = Vec::new();
    for p in 0..4 {
        let (bus, t) = (bus.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let mut batches: Vec<_> = (p..KEYS)
                .step_by(4)
                .map(|k| messages(&format!("key{k}"), PER_KEY).into_iter())
                .collect();
            // Interleave this publisher's keys, one message at a time or in small batches.
            for round in 0..PER_KEY {
                for b in &mut batches {
                    let take = if round % 5 == 0 { 3 } else { 1 };
                    let batch: Vec<_> = b.by_ref().take(take).collect();
                    if !batch.is_empty() {
                        bus.publish(&t, batch).await.ctx("publish")?;
                    }
                }
            }
            Ok::<_, Failure>(())
        }));
    }
    for task in tasks {
        crate::join_task(task).await?;
    }
    probe.wait_acked(KEYS * PER_KEY, s.wait).await?;
    probe.check_no_overlap()?;
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for d in probe.acked() {
        per_key
            .entry(d.message.key.clone())
            .or_default()
            .push(seq_of(&d.message).unwrap_or(usize::MAX));
    }
    ensure_eq!(per_key.len(), KEYS, "keys handled");
    for (key, seqs) in per_key {
        let expected: Vec<usize> = (0..PER_KEY).collect();
        ensure_eq!(seqs, expected, "acknowledgement order of {key}");
    }
    for sub in subs {
        sub.stop().await.ctx("stop")?;
    }
    Ok(Verdict::Passed)
}

/// 93: with a backlog of low then critical messages (distinct keys), a single consumer
/// handles critical ones first; and a key whose low message was published before its
/// critical one still gets them in publish order (priorities never reorder a key).
pub async fn critical_drains_before_low(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let caps = bus.capabilities();
    if let Some(v) = require(caps, caps.priorities && caps.durable, "priorities (and durable)") {
        return Ok(v);
    }
    let (t, g, s) = (topic(&*h, "prio"), group(&*h, "g"), h.settings());
    const N: usize = 30;
    let low: Vec<_> = (0..N)
        .flat_map(|i| messages(&format!("low{i}"), 1))
        .map(|m| m.with_priority(Priority::Low))
        .collect();
    let critical: Vec<_> = (0..N)
        .flat_map(|i| messages(&format!("crit{i}"), 1))
        .map(|m| m.with_priority(Priority::Critical))
        .collect();
    let mixed = messages("mixed", 2);
    let mixed = vec![
        mixed[0].clone().with_priority(Priority::Low),
        mixed[1].clone().with_priority(Priority::Critical),
    ];
    bus.publish(&t, low.clone()).await.ctx("publish low")?;
    bus.publish(&t, mixed.clone()).await.ctx("publish mixed")?;
    bus.publish(&t, critical.clone()).await.ctx("publish critical")?;
    let probe = Probe::ok();
    let sub = bus
        .subscribe(
            SubscriptionSpec::new(&t, &g).ack_timeout(s.ack_timeout),
            probe.clone(),
        )
        .await
        .ctx("subscribe")?;
    probe.wait_acked(2 * N + 2, s.wait).await?;
    sub.stop().await.ctx("stop")?;
    let order: Vec<_> = probe.acked().into_iter().map(|d| d.message).collect();
    ensure_eq!(order[0].priority, Priority::Critical, "the first message handled");
    let first_n = order[..N]
        .iter()
        .filter(|m| m.priority == Priority::Critical)
        .count();
    ensure!(
        first_n * 10 >= N * 8,
        "only {first_n} of the first {N} handled were critical: {:?}",
        order.iter().map(|m| m.priority).collect::<Vec<_>>()
    );
    let pos = |id| order.iter().position(|m| m.id == id);
    ensure!(
        pos(mixed[0].id) < pos(mixed[1].id),
        "the key's low message (published first) was handled after its critical one"
    );
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bus_ordering_tests {
    ($factory:expr) => {
        $crate::__bus_tests!(
            $factory,
            ordering,
            [
                per_key_order_under_concurrent_publishers_and_consumers,
                critical_drains_before_low,
            ]
        );
    };
}
