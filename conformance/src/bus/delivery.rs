//! Delivery: payload and headers intact, topics isolated, fan-out across groups, a new
//! group's start, competing consumers (`docs/CONFORMANCE.md` items 71-73, 79, 80).

use std::{collections::HashSet, sync::Arc};

use cqrs_core::{
    bus::{partition_for, Message, Priority, StartFrom, SubscriptionSpec},
    ContentType,
};

use super::{group, messages, require, topic, BusHarness, Probe};
use crate::{ensure, ensure_eq, Ctx, Outcome, Verdict};

/// 71: messages published before anyone subscribed are all delivered, with id, key,
/// priority, headers, content type and payload intact, on attempt 1 and in the partition
/// [`partition_for`] gives.
pub async fn publish_before_subscribe_delivers_intact(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let caps = bus.capabilities();
    if let Some(v) = require(caps, caps.durable, "durable") {
        return Ok(v);
    }
    let (t, g, s) = (topic(&*h, "intact"), group(&*h, "g"), h.settings());
    let mut sent = Vec::new();
    for i in 0..20u8 {
        let (ct, payload) = match i % 3 {
            0 => (ContentType::Json, format!(r#"{{"i":{i}}}"#).into_bytes()),
            1 => (ContentType::Opaque, vec![0, 255, i, 0xC3, 0x28]),
            _ => (ContentType::Bson, vec![5, 0, 0, 0, 0]),
        };
        let m = Message::new(format!("key-{}", i % 7), ct, payload)
            .with_priority(Priority::ALL[usize::from(i % 4)])
            .with_correlation_id(format!("corr-{i}"))
            .with_causation_id(format!("cause-{i}"))
            .with_header("tenant", "ü 😀 {x}")
            .with_header("i", i.to_string());
        sent.push(m);
    }
    bus.publish(&t, sent[..5].to_vec())
        .await
        .ctx("publish one batch")?;
    for m in &sent[5..] {
        bus.publish(&t, vec![m.clone()])
            .await
            .ctx("publish one message")?;
    }
    let probe = Probe::ok();
    let sub = bus
        .subscribe(
            SubscriptionSpec::new(&t, &g).ack_timeout(s.ack_timeout),
            probe.clone(),
        )
        .await
        .ctx("subscribe")?;
    probe.wait_acked(sent.len(), s.wait).await?;
    sub.stop().await.ctx("stop")?;
    let calls = probe.calls();
    ensure_eq!(
        calls.len(),
        sent.len(),
        "handler calls (no failure, so no redelivery)"
    );
    for m in &sent {
        let Some(c) = calls.iter().find(|c| c.delivery.message.id == m.id) else {
            return Err(crate::Failure(format!("message {} never delivered", m.id)));
        };
        ensure_eq!(&c.delivery.message, m, "delivered message {}", m.id);
        ensure_eq!(c.delivery.attempt, 1, "attempt of a first delivery");
        ensure_eq!(c.delivery.topic, t, "delivery topic");
        ensure_eq!(c.delivery.group, g, "delivery group");
        ensure_eq!(
            c.delivery.partition,
            partition_for(&m.key, caps.partitions),
            "partition of key {}",
            m.key
        );
    }
    Ok(Verdict::Passed)
}

/// 73: with several topics in use at once, each subscriber gets only its own topic's
/// messages.
pub async fn topics_are_isolated(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let s = h.settings();
    let mut subs = Vec::new();
    for i in 0..5 {
        let (t, g) = (topic(&*h, &format!("iso{i}")), group(&*h, "g"));
        let probe = Probe::ok();
        let sub = bus
            .subscribe(
                SubscriptionSpec::new(&t, &g).ack_timeout(s.ack_timeout),
                probe.clone(),
            )
            .await
            .ctx("subscribe")?;
        subs.push((t, probe, sub));
    }
    let mut sent = Vec::new();
    for (t, _, _) in &subs {
        let batch = messages("k", 10);
        bus.publish(t, batch.clone()).await.ctx("publish")?;
        sent.push(batch.iter().map(|m| m.id).collect::<HashSet<_>>());
    }
    for ((t, probe, _), ids) in subs.iter().zip(&sent) {
        probe.wait_acked(ids.len(), s.wait).await?;
        ensure_eq!(probe.acked_ids(), *ids, "messages received on topic {t}");
        ensure!(
            probe.calls().iter().all(|c| c.delivery.topic == *t),
            "delivery from another topic on {t}"
        );
    }
    for (_, _, sub) in subs {
        sub.stop().await.ctx("stop")?;
    }
    Ok(Verdict::Passed)
}

/// 79: each of two consumer groups receives every message.
pub async fn each_group_gets_every_message(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let (t, s) = (topic(&*h, "fanout"), h.settings());
    let (a, b) = (Probe::ok(), Probe::ok());
    let sa = bus
        .subscribe(
            SubscriptionSpec::new(&t, group(&*h, "a")).ack_timeout(s.ack_timeout),
            a.clone(),
        )
        .await
        .ctx("subscribe a")?;
    let sb = bus
        .subscribe(
            SubscriptionSpec::new(&t, group(&*h, "b")).ack_timeout(s.ack_timeout),
            b.clone(),
        )
        .await
        .ctx("subscribe b")?;
    let mut sent = HashSet::new();
    for k in 0..5 {
        let batch = messages(&format!("key{k}"), 10);
        sent.extend(batch.iter().map(|m| m.id));
        bus.publish(&t, batch).await.ctx("publish")?;
    }
    a.wait_acked(sent.len(), s.wait).await?;
    b.wait_acked(sent.len(), s.wait).await?;
    ensure_eq!(a.acked_ids(), sent, "group a");
    ensure_eq!(b.acked_ids(), sent, "group b");
    sa.stop().await.ctx("stop a")?;
    sb.stop().await.ctx("stop b")?;
    Ok(Verdict::Passed)
}

/// 80: a new group starts where its spec says: `Earliest` replays what was published
/// before it existed, `Latest` gets only what comes after.
pub async fn new_group_starts_where_configured(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus();
    let caps = bus.capabilities();
    if let Some(v) = require(caps, caps.durable, "durable") {
        return Ok(v);
    }
    let (t, s) = (topic(&*h, "start"), h.settings());
    let before = messages("k", 5);
    bus.publish(&t, before.clone()).await.ctx("publish before")?;
    let (early, late) = (Probe::ok(), Probe::ok());
    let se = bus
        .subscribe(
            SubscriptionSpec::new(&t, group(&*h, "early"))
                .start_from(StartFrom::Earliest)
                .ack_timeout(s.ack_timeout),
            early.clone(),
        )
        .await
        .ctx("subscribe earliest")?;
    let sl = bus
        .subscribe(
            SubscriptionSpec::new(&t, group(&*h, "late"))
                .start_from(StartFrom::Latest)
                .ack_timeout(s.ack_timeout),
            late.clone(),
        )
        .await
        .ctx("subscribe latest")?;
    let after = messages("k", 3);
    bus.publish(&t, after.clone()).await.ctx("publish after")?;
    early.wait_acked(8, s.wait).await?;
    late.wait_acked(3, s.wait).await?;
    let all: HashSet<_> = before.iter().chain(&after).map(|m| m.id).collect();
    ensure_eq!(early.acked_ids(), all, "the Earliest group gets everything");
    let later: HashSet<_> = after.iter().map(|m| m.id).collect();
    ensure_eq!(
        late.acked_ids(),
        later,
        "the Latest group gets only later messages"
    );
    ensure_eq!(late.calls().len(), 3, "calls of the Latest group");
    se.stop().await.ctx("stop")?;
    sl.stop().await.ctx("stop")?;
    Ok(Verdict::Passed)
}

/// 72: 400 messages from 8 concurrent publishers, 4 competing consumers of one group: every
/// message handled once (no failure happened, so a redelivery would be a bug), work spread
/// over more than one consumer, never two deliveries of one key at once.
pub async fn competing_consumers_handle_each_once(h: Arc<dyn BusHarness>) -> Outcome {
    let bus = h.bus().clone();
    let caps = bus.capabilities();
    let (t, g, s) = (topic(&*h, "compete"), group(&*h, "g"), h.settings());
    let probe = Probe::ok();
    let mut subs = Vec::new();
    for i in 0..4 {
        let spec = SubscriptionSpec::new(&t, &g)
            .consumer(format!("c{i}"))
            .concurrency(2)
            .ack_timeout(s.ack_timeout);
        subs.push(bus.subscribe(spec, probe.clone()).await.ctx("subscribe")?);
    }
    let expected_owners = usize::try_from(caps.partitions.clamp(1, 4)).unwrap_or(1);
    if caps.ordered_per_key && caps.partitions > 1 {
        super::wait_for(s.wait, "every consumer owns a partition", || {
            subs.iter()
                .filter(|s| !s.health().owned_partitions.is_empty())
                .count()
                >= expected_owners
        })
        .await?;
    }
    let mut tasks = Vec::new();
    for p in 0..8 {
        let (bus, t) = (bus.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for k in 0..10 {
                let batch = messages(&format!("p{p}-k{k}"), 5);
                ids.extend(batch.iter().map(|m| m.id));
                bus.publish(&t, batch).await.ctx("publish")?;
            }
            Ok(ids)
        }));
    }
    let mut sent = HashSet::new();
    for task in tasks {
        sent.extend(crate::join_task(task).await?);
    }
    probe.wait_acked(sent.len(), s.wait).await?;
    ensure_eq!(probe.acked_ids(), sent, "messages handled");
    ensure_eq!(
        probe.calls().len(),
        sent.len(),
        "handler calls (each message once)"
    );
    let consumers: HashSet<_> = probe
        .calls()
        .iter()
        .map(|c| c.delivery.consumer.clone())
        .collect();
    if expected_owners > 1 {
        ensure!(
            consumers.len() > 1,
            "all work went to one consumer: {consumers:?}"
        );
    }
    if caps.ordered_per_key {
        probe.check_no_overlap()?;
    }
    for sub in subs {
        sub.stop().await.ctx("stop")?;
    }
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bus_delivery_tests {
    ($factory:expr) => {
        $crate::__bus_tests!(
            $factory,
            delivery,
            [
                publish_before_subscribe_delivers_intact,
                topics_are_isolated,
                each_group_gets_every_message,
                new_group_starts_where_configured,
                competing_consumers_handle_each_once,
            ]
        );
    };
}
