//! A read model fed through the event bus, with a handler that fails sometimes.
//!
//! Orders record `ItemAdded` events. The relay publishes every appended event to a bus
//! topic (no dual write: the app only appends), and the `order-totals` group keeps one
//! document per order with its running total. The handler:
//! - fails the first attempt of every third event (a flaky dependency): the bus retries it
//!   with exponential backoff;
//! - refuses a negative amount as a permanent error: that event goes to the dead letter, and
//!   the order's later events are parked behind it (an order's events are never applied out
//!   of order);
//! - skips an event it already applied (delivery is at least once), by the stream version
//!   kept in the document.
//!
//! The same code runs on every backend; only the URL changes.

use std::{sync::Arc, time::Duration};

use cqrs::{
    bus::{
        handler_fn, headers, Delivery, EventBus, HandlerError, RetryPolicy, SubscriptionMetrics,
        SubscriptionSpec,
    },
    runtime::{Relay, RelayOptions},
    BoxError, Document, EventData, ExpectedVersion, ReadStore, Stores, StreamId,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Orders in the example.
pub const ORDERS: usize = 6;
/// Items added to each order.
pub const ITEMS: usize = 5;
/// The order whose third item has a negative amount.
pub const BAD_ORDER: usize = 4;

/// The event payload.
#[derive(Debug, Serialize, Deserialize)]
pub struct ItemAdded {
    /// Cents; negative amounts are refused.
    pub amount: i64,
}

/// What the run ends with.
#[derive(Debug, Clone)]
pub struct Report {
    /// The subscription's counters at the end.
    pub metrics: SubscriptionMetrics,
    /// Dead letters: the message key (order) and why.
    pub dead_letters: Vec<(String, String)>,
    /// The read model: order id and total, by order id.
    pub totals: Vec<(String, i64)>,
}

/// Names that keep one run apart from another on a shared server.
#[derive(Debug, Clone)]
pub struct Names {
    /// The bus topic the relay publishes to.
    pub topic: String,
    /// The read-model collection.
    pub collection: String,
    /// The relay's checkpoint name.
    pub relay: String,
}

impl Names {
    /// Names with `suffix` appended.
    pub fn with_suffix(suffix: &str) -> Self {
        Names {
            topic: format!("orders{suffix}"),
            collection: format!("order_totals{suffix}"),
            relay: format!("orders-relay{suffix}"),
        }
    }
}

/// Applies one delivery to the read model.
async fn apply(reads: &dyn ReadStore, collection: &str, d: &Delivery) -> Result<(), HandlerError> {
    let extra = &d.message.headers.extra;
    let version: u64 = extra
        .get(headers::STREAM_VERSION)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| HandlerError::undecodable("no stream-version header"))?;
    let item: ItemAdded = serde_json::from_slice(&d.message.payload)
        .map_err(|e| HandlerError::undecodable(format!("not an ItemAdded: {e}")))?;
    if version % 3 == 0 && d.attempt == 1 {
        return Err(HandlerError::retryable("pricing service timed out"));
    }
    if item.amount < 0 {
        return Err(HandlerError::permanent(format!(
            "negative amount {}",
            item.amount
        )));
    }
    let order = &d.message.key;
    let current = reads
        .get(collection, order)
        .await
        .map_err(|e| HandlerError::retryable("read model unavailable").with_source(e))?;
    let (total, applied) = current.map_or((0, 0), |doc| {
        (
            doc.body["total"].as_i64().unwrap_or(0),
            doc.body["version"].as_u64().unwrap_or(0),
        )
    });
    if version <= applied {
        return Ok(()); // a redelivery of something already applied
    }
    let doc = Document::new(
        order.clone(),
        json!({ "total": total + item.amount, "version": version }),
    );
    reads
        .upsert(collection, doc)
        .await
        .map_err(|e| HandlerError::retryable("read model unavailable").with_source(e))
}

/// Runs the example on `stores` and `bus` under `names`; returns what happened.
///
/// # Errors
/// Store and bus errors, or a timeout when the group did not settle within 30 s.
pub async fn run(stores: &Stores, bus: Arc<dyn EventBus>, names: &Names) -> Result<Report, BoxError> {
    let relay = Relay::new(
        stores,
        bus.clone(),
        RelayOptions::new(&names.relay, &names.topic).idle_poll(Duration::from_millis(20)),
    )
    .start();

    let (reads, collection) = (stores.reads.clone(), names.collection.clone());
    let handler = handler_fn(move |d: Delivery| {
        let (reads, collection) = (reads.clone(), collection.clone());
        async move { apply(&*reads, &collection, &d).await }
    });
    let spec = SubscriptionSpec::new(&names.topic, "order-totals")
        .concurrency(4)
        .retry(RetryPolicy::exponential(
            4,
            Duration::from_millis(20),
            Duration::from_millis(200),
        ));
    let sub = bus.subscribe(spec, Arc::new(handler)).await?;

    for order in 0..ORDERS {
        let stream = StreamId::new(format!("order-{order}"))?;
        for item in 1..=ITEMS {
            let amount = if order == BAD_ORDER && item == 3 {
                -1
            } else {
                i64::try_from((order + 1) * 10 + item)?
            };
            let event = EventData::json("ItemAdded", &ItemAdded { amount })?;
            stores
                .events
                .append(&stream, ExpectedVersion::Any, vec![event])
                .await?;
        }
    }

    // Every event is either handled or in the dead letter once the group settles.
    let expected = u64::try_from(ORDERS * ITEMS)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let m = sub.metrics();
        if m.handled + m.dead_lettered >= expected && m.in_flight == 0 {
            break m;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the group did not settle within 30 s: {m:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let dead_letters = bus
        .dead_letters(&names.topic, "order-totals", 100)
        .await?
        .into_iter()
        .map(|d| {
            let key = d.message.map_or_else(|| "?".to_owned(), |m| m.key);
            (key, d.reason.to_string())
        })
        .collect();
    sub.stop().await?;
    relay.stop().await?;

    let mut totals = Vec::new();
    for order in 0..ORDERS {
        let id = format!("order-{order}");
        if let Some(doc) = stores.reads.get(&names.collection, &id).await? {
            totals.push((id, doc.body["total"].as_i64().unwrap_or(0)));
        }
    }
    Ok(Report {
        metrics,
        dead_letters,
        totals,
    })
}

/// The total an order should reach: its items up to (not including) a refused one.
pub fn expected_total(order: usize) -> i64 {
    let items = if order == BAD_ORDER { 2 } else { ITEMS };
    (1..=items)
        .map(|item| i64::try_from((order + 1) * 10 + item).unwrap_or(i64::MAX))
        .sum()
}
