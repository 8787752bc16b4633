//! The offline rewrite resumes after an interruption and never writes an event twice.

#![allow(clippy::unwrap_used)] // test code: a failed setup should panic with its cause

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use backend_memory::MemoryBackend;
use cqrs_core::{upcast::UpcasterChain, EventData, ExpectedVersion, StreamId};
use cqrs_runtime::rewrite::{rewrite_stream, rewritten_id};
use serde_json::json;

#[tokio::test]
async fn interrupted_rewrite_resumes_without_duplicates() {
    let stores = MemoryBackend::new().stores();
    let old: StreamId = "game-1".parse().unwrap();
    let new: StreamId = "game-1-v2".parse().unwrap();
    let history: Vec<EventData> = (0..10)
        .map(|i| EventData::json("Scored", &json!({ "points": i })).unwrap())
        .collect();
    stores
        .events
        .append(&old, ExpectedVersion::NoStream, history.clone())
        .await
        .unwrap();

    let fail_once = Arc::new(AtomicBool::new(true));
    let flag = fail_once.clone();
    let chain = UpcasterChain::builder()
        .json_step("Scored", 1, "Scored", move |mut v| {
            if v["points"] == json!(7) && flag.swap(false, Ordering::SeqCst) {
                return Err(cqrs_core::Error::invalid("interrupted (injected)"));
            }
            v["bonus"] = json!(0);
            Ok(v)
        })
        .build()
        .unwrap();

    assert!(rewrite_stream(&stores, &chain, &old, &new, 3).await.is_err());
    let partial = stores.events.read_stream(&new, 1, 100).await.unwrap().len();
    assert_eq!(partial, 6, "two whole pages written before the failure");
    assert_eq!(
        rewrite_stream(&stores, &chain, &old, &new, 3).await.unwrap(),
        4,
        "the rest"
    );
    assert_eq!(
        rewrite_stream(&stores, &chain, &old, &new, 3).await.unwrap(),
        0,
        "nothing left"
    );

    let copy = stores.events.read_stream(&new, 1, 100).await.unwrap();
    assert_eq!(copy.len(), 10);
    for (c, o) in copy.iter().zip(&history) {
        assert_eq!(c.data.schema_version, 2);
        assert_eq!(c.data.event_id, rewritten_id(o.event_id));
        assert_eq!(
            c.data.metadata.causation_id.as_deref(),
            Some(o.event_id.to_string().as_str())
        );
    }
    let original = stores.events.read_stream(&old, 1, 100).await.unwrap();
    assert!(
        original.iter().zip(&history).all(|(r, h)| r.data == *h),
        "the old stream is untouched"
    );
}
