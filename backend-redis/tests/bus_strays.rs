//! Fencing of the Redis bus's plain `XREADGROUP` reads: a read sent by a consumer that no
//! longer owns the partition (a stray read) leaves entries in another Redis consumer's
//! pending list; the owner must take them over before it handles later messages of their
//! keys, and handle each once.
//!
//! `cargo nextest run -p backend-redis --test bus_strays`

use std::time::Duration;

use backend_redis::{RedisBus, RedisBusOptions, RedisStoreOptions};
use conformance::bus::{messages, wait_for, Probe};
use cqrs_core::bus::{EventBus, SubscriptionSpec};

mod common;

type Outcome = std::result::Result<(), Box<dyn std::error::Error>>;

fn failed(f: conformance::Failure) -> Box<dyn std::error::Error> {
    format!("{f:?}").into()
}

use common::{cluster_url, single_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_read_is_swept_before_later_messages_of_its_keys() {
    let url = single_url().unwrap();
    let raw = redis::Client::open(url.clone())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    stray_read_is_swept(url, raw).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_read_is_swept_before_later_messages_of_its_keys_on_a_cluster() {
    let url = cluster_url().unwrap();
    let nodes: Vec<String> = url
        .trim_start_matches("redis+cluster://")
        .split(',')
        .map(|n| format!("redis://{n}"))
        .collect();
    let raw = redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    stray_read_is_swept(url, raw).await.unwrap();
}

async fn stray_read_is_swept(url: String, mut raw: impl redis::aio::ConnectionLike) -> Outcome {
    let prefix = format!("strays_{}", uuid::Uuid::now_v7().simple());
    let store = RedisStoreOptions::new(url.clone()).prefix(&prefix);
    // One partition, and a poll so long that the consumer reads only when `bus` publishes:
    // what `other` publishes waits for the stray reader.
    let options = RedisBusOptions::new()
        .partitions(1)
        .block(Duration::from_secs(60));
    let bus = RedisBus::open(store.clone(), options).await?;
    let other = RedisBus::open(store, options).await?;
    let stream = format!("{prefix}:{{b:t:0}}:s");

    let probe = Probe::ok();
    let sub = bus
        .subscribe(SubscriptionSpec::new("t", "g"), probe.clone())
        .await?;
    let all = messages("k", 12);
    let mut next = all.iter();
    bus.publish("t", vec![next.next().ok_or("no message left")?.clone()])
        .await?;
    probe
        .wait_acked(1, Duration::from_secs(10))
        .await
        .map_err(failed)?;

    // A stray read takes a message into the pending list of Redis consumer "ghost" (if the
    // owner happened to read it first, it is simply handled: try the next one).
    let mut published = 1;
    let mut strayed = false;
    for m in next.by_ref().take(10) {
        other.publish("t", vec![m.clone()]).await?;
        published += 1;
        let v: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("ghost")
            .arg("COUNT")
            .arg(10)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut raw)
            .await?;
        if v != redis::Value::Nil {
            strayed = true;
            break;
        }
    }
    if !strayed {
        return Err("the stray reader never got a message".into());
    }

    // A later message of the same key, through the owner's bus: its read meets the stray
    // entry in the summary, and the stray one is handled first.
    let last = next.next().ok_or("no message left")?.clone();
    bus.publish("t", vec![last]).await?;
    published += 1;
    probe
        .wait_acked(published, Duration::from_secs(10))
        .await
        .map_err(failed)?;
    let got: Vec<_> = probe.acked().iter().map(|d| d.message.id).collect();
    let want: Vec<_> = all.iter().take(published).map(|m| m.id).collect();
    if got != want {
        return Err(format!("each message once, in publish order: got {got:?}, want {want:?}").into());
    }
    // Acknowledged (the handled count moves when the ack script answered).
    wait_for(Duration::from_secs(10), "every ack", || {
        sub.metrics().handled == published as u64
    })
    .await
    .map_err(failed)?;
    let pending: redis::Value = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("g")
        .query_async(&mut raw)
        .await?;
    let total = match pending {
        redis::Value::Array(items) => items.into_iter().next(),
        _ => None,
    };
    if total != Some(redis::Value::Int(0)) {
        return Err(format!("nothing left pending: {total:?}").into());
    }
    sub.stop().await?;
    bus.destroy().await?;
    Ok(())
}
