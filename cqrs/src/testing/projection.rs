//! Given events, then documents: a projection run by the real runner over the in-memory
//! backend.

use std::{collections::BTreeMap, fmt::Write as _, sync::Arc, time::Duration};

use serde::Serialize;

use crate::{
    codec::{encode_event, Codec, Json},
    runtime::{Projection, ProjectionRunner, RunnerOptions, RunnerState},
    ContentType, Document, EventData, ExpectedVersion, Query, Stores, StreamId,
};

/// How long the runner may take to catch up before the fixture gives up.
const CATCH_UP: Duration = Duration::from_secs(10);

/// A projection fed given events through a [`ProjectionRunner`] over fresh in-memory
/// stores; [`ProjectionFixture::then_expect_documents`] runs it and compares a collection
/// with the documents expected.
///
/// ```
/// use cqrs::{async_trait, runtime::Projection, testing::ProjectionFixture};
/// use cqrs::{codec::decode_event, serde_json::json, upcast::UpcasterChain};
/// use cqrs::{BoxError, Change, Document, RecordedEvent};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum BookEvent { Published { title: String } }
///
/// struct Titles;
///
/// #[async_trait]
/// impl Projection for Titles {
///     fn name(&self) -> &str { "titles" }
///     fn collections(&self) -> Vec<String> { vec!["titles".into()] }
///     async fn handle(&self, e: &RecordedEvent) -> Result<Vec<Change>, BoxError> {
///         let BookEvent::Published { title } = decode_event(&e.data, &UpcasterChain::default())?;
///         let document = Document::new(e.stream_id.as_str(), json!({ "title": title }));
///         Ok(vec![Change::Upsert { collection: "titles".into(), document }])
///     }
/// }
///
/// # #[tokio::main(flavor = "multi_thread")] async fn main() {
/// ProjectionFixture::new(Titles)
///     .given("book-1", [BookEvent::Published { title: "Dune".into() }])
///     .then_expect_documents("titles", [Document::new("book-1", json!({ "title": "Dune" }))])
///     .await;
/// # }
/// ```
#[derive(Debug)]
pub struct ProjectionFixture<P> {
    stores: Stores,
    projection: P,
    options: RunnerOptions,
    given: Vec<(StreamId, Vec<EventData>)>,
}

impl<P: Projection> ProjectionFixture<P> {
    /// `projection` over fresh in-memory stores, with no events yet.
    pub fn new(projection: P) -> Self {
        Self::with_stores(|_| projection)
    }

    /// A projection that needs the stores it runs over (one that reads its own model, say),
    /// built by `make` from the fixture's fresh in-memory stores.
    pub fn with_stores(make: impl FnOnce(&Stores) -> P) -> Self {
        let stores = backend_memory::MemoryBackend::new().stores();
        ProjectionFixture {
            projection: make(&stores),
            stores,
            options: RunnerOptions::new().idle_poll(Duration::from_millis(10)),
            given: Vec::new(),
        }
    }

    /// The runner's options (the default ones poll every 10 ms once caught up).
    #[must_use]
    pub fn options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// Domain events (serde enums, encoded as the repositories encode them) appended to
    /// `stream` in order, after the events given before.
    ///
    /// # Panics
    /// When `stream` is no valid stream id or an event is not an externally tagged enum.
    #[track_caller]
    #[must_use]
    pub fn given<E: Serialize>(self, stream: &str, events: impl IntoIterator<Item = E>) -> Self {
        let events = events.into_iter().map(|event| {
            let encoded = encode_event(&event)
                .and_then(|(ty, payload)| Ok(EventData::new(ty, ContentType::Json, Json::encode(&payload)?)));
            encoded.unwrap_or_else(|e| panic!("a given event of {stream:?} does not encode: {e}"))
        });
        let events: Vec<EventData> = events.collect();
        self.given_data(stream, events)
    }

    /// Stored events (any type, schema version or metadata) appended to `stream` in order,
    /// after the events given before.
    ///
    /// # Panics
    /// When `stream` is no valid stream id.
    #[track_caller]
    #[must_use]
    pub fn given_data(mut self, stream: &str, events: impl IntoIterator<Item = EventData>) -> Self {
        let id = StreamId::new(stream).unwrap_or_else(|e| panic!("given stream {stream:?}: {e}"));
        self.given.push((id, events.into_iter().collect()));
        self
    }

    /// Appends the given events, runs the projection until it has caught up with them, and
    /// checks `collection` holds exactly `expected` (in any order). Returns the stores, for
    /// further checks (other collections, queries).
    ///
    /// # Panics
    /// When an append fails, the runner faults or does not catch up within 10 s, or the
    /// collection differs; the message lists each differing document as expected and as
    /// found.
    pub async fn then_expect_documents(
        self,
        collection: &str,
        expected: impl IntoIterator<Item = Document>,
    ) -> Stores {
        let name = self.projection.name().to_owned();
        for (stream, events) in self.given {
            if let Err(e) = self
                .stores
                .events
                .append(&stream, ExpectedVersion::Any, events)
                .await
            {
                panic!("projection {name:?}: appending the given events of {stream}: {e}");
            }
        }
        let runner = ProjectionRunner::new(&self.stores, Arc::new(self.projection))
            .options(self.options)
            .start();
        let done =
            |s: &crate::runtime::RunnerStatus| matches!(s.state, RunnerState::Running | RunnerState::Faulted);
        let status = match runner.wait_until(done, CATCH_UP).await {
            Ok(status) => status,
            Err(e) => panic!("projection {name:?} did not catch up: {e}"),
        };
        // Stopping a faulted runner reports its fault again; the status already says it.
        let _ = runner.stop().await;
        if status.state == RunnerState::Faulted {
            panic!(
                "projection {name:?} faulted: {}",
                status.last_error.unwrap_or_default()
            );
        }
        let actual = match documents(&self.stores, collection).await {
            Ok(docs) => docs,
            Err(e) => panic!("projection {name:?}: reading collection {collection:?}: {e}"),
        };
        let expected: BTreeMap<String, Document> = expected.into_iter().map(|d| (d.id.clone(), d)).collect();
        if actual != expected {
            panic!(
                "projection {name:?}, collection {collection:?}: other documents than expected\n{}",
                document_diff(&expected, &actual)
            );
        }
        self.stores
    }
}

/// Every document of `collection`, by id.
async fn documents(stores: &Stores, collection: &str) -> crate::Result<BTreeMap<String, Document>> {
    let mut all = BTreeMap::new();
    let mut after = None;
    loop {
        let page = stores.reads.query(collection, &Query::new().after(after)).await?;
        all.extend(page.documents.into_iter().map(|d| (d.id.clone(), d)));
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

/// One line per id: `=` where both agree, `-`/`+` lines where they differ.
fn document_diff(expected: &BTreeMap<String, Document>, actual: &BTreeMap<String, Document>) -> String {
    let mut out = format!(
        "  expected {} documents, found {}\n",
        expected.len(),
        actual.len()
    );
    let show = |d: Option<&Document>| {
        d.map_or_else(
            || "(none)".to_owned(),
            |d| match d.expires_at {
                Some(at) => format!("{} (expires at {} ms)", d.body, at.as_millis()),
                None => d.body.to_string(),
            },
        )
    };
    let ids: std::collections::BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    for id in ids {
        let (e, a) = (expected.get(id), actual.get(id));
        let _ = if e == a {
            writeln!(out, "  {id:?} = {}", show(a))
        } else {
            writeln!(
                out,
                "  {id:?} - expected: {}\n  {:w$} + found:    {}",
                show(e),
                "",
                show(a),
                w = id.len() + 2
            )
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxError, Change, RecordedEvent};
    use serde_json::json;

    /// Counts events per stream; refuses a `Poison` event.
    struct PerStream;

    #[async_trait::async_trait]
    impl Projection for PerStream {
        fn name(&self) -> &str {
            "per_stream"
        }
        fn collections(&self) -> Vec<String> {
            vec!["counts".into()]
        }
        async fn handle(&self, e: &RecordedEvent) -> Result<Vec<Change>, BoxError> {
            if e.data.event_type == "Poison" {
                return Err("poisoned".into());
            }
            let document = Document::new(e.stream_id.as_str(), json!({ "seen": e.version }));
            Ok(vec![Change::Upsert {
                collection: "counts".into(),
                document,
            }])
        }
    }

    #[derive(Serialize)]
    enum Ev {
        Tick,
        Poison,
    }

    async fn panic_text(f: impl std::future::Future<Output = Stores> + Send + 'static) -> String {
        let Err(e) = tokio::spawn(f).await else {
            return String::new();
        };
        e.try_into_panic()
            .ok()
            .and_then(|p| p.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    }

    fn quick() -> RunnerOptions {
        RunnerOptions::new()
            .idle_poll(Duration::from_millis(10))
            .retry(crate::runtime::RetryPolicy::none())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn given_events_then_documents() {
        let stores = ProjectionFixture::new(PerStream)
            .given("a-1", [Ev::Tick, Ev::Tick])
            .given("b-1", [Ev::Tick])
            .then_expect_documents(
                "counts",
                [
                    Document::new("b-1", json!({ "seen": 1 })),
                    Document::new("a-1", json!({ "seen": 2 })),
                ],
            )
            .await;
        assert!(stores.reads.get("counts", "a-1").await.ok().flatten().is_some());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn other_documents_name_expected_and_found() {
        let text = panic_text(
            ProjectionFixture::new(PerStream)
                .given("a-1", [Ev::Tick, Ev::Tick])
                .then_expect_documents(
                    "counts",
                    [
                        Document::new("a-1", json!({ "seen": 1 })),
                        Document::new("c-1", json!({ "seen": 1 })),
                    ],
                ),
        )
        .await;
        assert!(
            text.contains("projection \"per_stream\", collection \"counts\""),
            "{text}"
        );
        assert!(text.contains("expected 2 documents, found 1"), "{text}");
        assert!(text.contains("\"a-1\" - expected: {\"seen\":1}"), "{text}");
        assert!(text.contains("+ found:    {\"seen\":2}"), "{text}");
        assert!(text.contains("\"c-1\" - expected: {\"seen\":1}"), "{text}");
        assert!(text.contains("+ found:    (none)"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_faulted_projection_says_why() {
        let text = panic_text(
            ProjectionFixture::new(PerStream)
                .options(quick())
                .given("a-1", [Ev::Tick, Ev::Poison])
                .then_expect_documents("counts", []),
        )
        .await;
        assert!(text.contains("projection \"per_stream\" faulted"), "{text}");
        assert!(text.contains("poisoned"), "{text}");
    }
}
