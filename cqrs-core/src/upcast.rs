//! Upcasters: old event schemas read as the latest one, without rewriting history.
//!
//! A step turns `(event_type, v)` into `(event_type', v + 1)`; steps chain to the latest
//! version of a type and are applied on read. [`UpcasterChainBuilder::build`] rejects gaps
//! (a type whose steps skip a version) and rename cycles, and reading an event with no path
//! to the latest version is [`Error::NoUpcastPath`] naming the type and versions. To retire
//! an old step, copy the stream into a new one at the latest version (offline rewrite) and
//! drop the step.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::Arc,
};

use crate::{compression, ContentType, Error, EventData, Result};

type StepFn = Arc<dyn Fn(EventData) -> Result<EventData> + Send + Sync>;

struct Step {
    to_type: String,
    f: StepFn,
}

/// Collects upcasting steps; [`UpcasterChainBuilder::build`] validates them.
#[derive(Default)]
pub struct UpcasterChainBuilder {
    steps: BTreeMap<(String, u32), Step>,
    errors: Vec<String>,
}

impl fmt::Debug for UpcasterChainBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpcasterChainBuilder")
            .field("steps", &self.steps.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl UpcasterChainBuilder {
    /// Registers a step over raw events: `f` receives an event of `event_type` at schema
    /// version `from` and returns its payload at `from + 1`, under `to_type` (the same type
    /// unless renamed). The returned event's type and version are set by the chain.
    #[must_use]
    pub fn step(
        mut self,
        event_type: &str,
        from: u32,
        to_type: &str,
        f: impl Fn(EventData) -> Result<EventData> + Send + Sync + 'static,
    ) -> Self {
        let key = (event_type.to_owned(), from);
        if from == 0 {
            self.errors.push(format!(
                "{event_type}: schema versions start at 1, a step from 0 is meaningless"
            ));
        }
        if self.steps.contains_key(&key) {
            self.errors
                .push(format!("{event_type} v{from}: registered twice"));
        }
        self.steps.insert(
            key,
            Step {
                to_type: to_type.to_owned(),
                f: Arc::new(f),
            },
        );
        self
    }

    /// Registers a step over JSON payloads (decompressed and re-compressed as stored).
    #[must_use]
    pub fn json_step(
        self,
        event_type: &str,
        from: u32,
        to_type: &str,
        f: impl Fn(serde_json::Value) -> Result<serde_json::Value> + Send + Sync + 'static,
    ) -> Self {
        self.step(event_type, from, to_type, move |mut event| {
            if event.content_type != ContentType::Json {
                return Err(Error::invalid(format!(
                    "JSON upcaster for {} received {} content",
                    event.event_type,
                    event.content_type.as_str()
                )));
            }
            let raw = compression::decompress(event.content_encoding, &event.payload)?;
            let value: serde_json::Value =
                serde_json::from_slice(&raw).map_err(|e| Error::codec("upcaster input", e))?;
            let out = serde_json::to_vec(&f(value)?).map_err(|e| Error::codec("upcaster output", e))?;
            event.payload = compression::compress(event.content_encoding, &out)?;
            Ok(event)
        })
    }

    /// Validates and freezes the chain.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] listing every problem: duplicate steps, gaps (a type that
    /// has steps from versions 1 and 3 but not 2, or that a rename enters at a version its
    /// own steps skip) and rename cycles between types.
    pub fn build(self) -> Result<UpcasterChain> {
        let mut errors = self.errors;
        // Versions each type is known at: its step sources, and where steps land.
        let mut known: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
        for ((ty, from), step) in &self.steps {
            known.entry(ty).or_default().insert(*from);
            match from.checked_add(1) {
                Some(next) => {
                    known.entry(&step.to_type).or_default().insert(next);
                }
                None => errors.push(format!("{ty} v{from}: no version follows it")),
            }
        }
        let mut latest = BTreeMap::new();
        for (ty, versions) in &known {
            let (Some(&min), Some(&max)) = (versions.first(), versions.last()) else {
                continue;
            };
            for v in min..max {
                if !self.steps.contains_key(&((*ty).to_owned(), v)) {
                    errors.push(format!("{ty}: no step from v{v} to v{}, a gap", v + 1));
                }
            }
            latest.insert((*ty).to_owned(), max);
        }
        // Rename edges between types must not form a cycle.
        let renames: BTreeMap<&str, BTreeSet<&str>> = self
            .steps
            .iter()
            .filter(|((ty, _), s)| *ty != s.to_type)
            .fold(BTreeMap::new(), |mut m, ((ty, _), s)| {
                m.entry(ty.as_str()).or_default().insert(s.to_type.as_str());
                m
            });
        for start in renames.keys() {
            let mut stack: Vec<&str> = renames[start].iter().copied().collect();
            let mut seen = BTreeSet::new();
            while let Some(t) = stack.pop() {
                if t == *start {
                    errors.push(format!("{start}: rename cycle back to itself"));
                    break;
                }
                if seen.insert(t) {
                    stack.extend(renames.get(t).into_iter().flatten().copied());
                }
            }
        }
        // A renamed-away type has no latest version of its own for reading; writers still
        // learn the last version it had, so an event written under the old name is upcast.
        let write_versions = latest.clone();
        for ty in renames.keys() {
            latest.remove(*ty);
        }
        if !errors.is_empty() {
            return Err(Error::invalid(format!("upcaster chain: {}", errors.join("; "))));
        }
        Ok(UpcasterChain {
            steps: self.steps,
            latest,
            write_versions,
        })
    }
}

/// A validated set of upcasting steps. Cheap to share behind an `Arc`.
///
/// ```
/// use cqrs_core::{upcast::UpcasterChain, EventData};
/// use serde_json::json;
/// let chain = UpcasterChain::builder()
///     .json_step("Registered", 1, "Registered", |mut v| { v["email"] = json!(null); Ok(v) })
///     .build()?;
/// let old = EventData::json("Registered", &json!({"name": "ada"}))?;
/// let new = chain.upcast(old)?;
/// assert_eq!(new.schema_version, 2);
/// # Ok::<(), cqrs_core::Error>(())
/// ```
#[derive(Default)]
pub struct UpcasterChain {
    steps: BTreeMap<(String, u32), Step>,
    /// The version reads end at, per type that is not renamed away.
    latest: BTreeMap<String, u32>,
    /// The highest version each known type has, renamed-away types included.
    write_versions: BTreeMap<String, u32>,
}

impl fmt::Debug for UpcasterChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpcasterChain")
            .field("latest", &self.latest)
            .finish_non_exhaustive()
    }
}

impl UpcasterChain {
    /// Starts a chain.
    pub fn builder() -> UpcasterChainBuilder {
        UpcasterChainBuilder::default()
    }

    /// The schema version new events of `event_type` are written at: its latest version, or
    /// for a type that was renamed away the last version it had (so reads upcast it to the
    /// new name). Types the chain does not know are at version 1.
    pub fn latest_version(&self, event_type: &str) -> u32 {
        self.write_versions.get(event_type).copied().unwrap_or(1)
    }

    /// Brings an event to the latest version of its (possibly renamed) type.
    ///
    /// # Errors
    /// [`Error::NoUpcastPath`] when the event is at a version the chain cannot bring forward
    /// (below its first step, or newer than the latest known version); errors of the steps.
    pub fn upcast(&self, event: EventData) -> Result<EventData> {
        self.upcast_cow(Cow::Owned(event)).map(Cow::into_owned)
    }

    /// [`UpcasterChain::upcast`] of a borrowed event: copies it only when a step applies.
    pub(crate) fn upcast_ref<'a>(&self, event: &'a EventData) -> Result<Cow<'a, EventData>> {
        self.upcast_cow(Cow::Borrowed(event))
    }

    fn upcast_cow<'a>(&self, mut event: Cow<'a, EventData>) -> Result<Cow<'a, EventData>> {
        if self.steps.is_empty() {
            // The common case: nothing to bring forward, and no lookup key to allocate.
            return Ok(event);
        }
        let start = (event.event_type.clone(), event.schema_version);
        while let Some(step) = self.steps.get(&(event.event_type.clone(), event.schema_version)) {
            let next_version = event.schema_version + 1;
            let mut next = (step.f)(event.into_owned())?;
            next.event_type.clone_from(&step.to_type);
            next.schema_version = next_version;
            event = Cow::Owned(next);
        }
        match self.latest.get(&event.event_type) {
            Some(&latest) if latest != event.schema_version => Err(Error::NoUpcastPath {
                event_type: start.0,
                from: start.1,
                to: latest,
            }),
            None if self.steps.keys().any(|(t, _)| *t == event.event_type) => Err(Error::NoUpcastPath {
                event_type: start.0,
                from: start.1,
                to: 0,
            }),
            _ => Ok(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain() -> UpcasterChain {
        UpcasterChain::builder()
            .json_step("Placed", 1, "Placed", |mut v| {
                v["currency"] = json!("EUR");
                Ok(v)
            })
            .json_step("Placed", 2, "OrderPlaced", |mut v| {
                let qty = v["qty"].as_i64().unwrap_or(0);
                v["quantity"] = json!(qty);
                Ok(v)
            })
            .build()
            .unwrap()
    }

    #[test]
    fn chains_to_latest_with_rename() {
        let c = chain();
        let e = c
            .upcast(EventData::json("Placed", &json!({"qty": 2})).unwrap())
            .unwrap();
        assert_eq!((e.event_type.as_str(), e.schema_version), ("OrderPlaced", 3));
        let v: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        assert_eq!(v, json!({"qty": 2, "currency": "EUR", "quantity": 2}));
        assert_eq!(c.latest_version("OrderPlaced"), 3);
        assert_eq!(
            c.latest_version("Placed"),
            2,
            "renamed-away type: its last version"
        );
        assert_eq!(c.latest_version("Unrelated"), 1);
    }

    #[test]
    fn unknown_types_and_latest_pass_through() {
        let c = chain();
        let e = EventData::json("Other", &json!({})).unwrap();
        assert_eq!(c.upcast(e.clone()).unwrap(), e);
        let latest = EventData::json("OrderPlaced", &json!({}))
            .unwrap()
            .with_schema_version(3);
        assert_eq!(c.upcast(latest.clone()).unwrap(), latest);
    }

    #[test]
    fn no_path_names_type_and_versions() {
        let c = chain();
        let future = EventData::json("OrderPlaced", &json!({}))
            .unwrap()
            .with_schema_version(9);
        let err = c.upcast(future).unwrap_err();
        assert!(
            matches!(err, Error::NoUpcastPath { ref event_type, from: 9, to: 3 } if event_type == "OrderPlaced"),
            "{err}"
        );
        let between = EventData::json("Placed", &json!({}))
            .unwrap()
            .with_schema_version(7);
        assert!(matches!(
            c.upcast(between),
            Err(Error::NoUpcastPath { from: 7, .. })
        ));
    }

    #[test]
    fn rejects_gaps_duplicates_and_cycles() {
        let id = |e: EventData| Ok(e);
        let gap = UpcasterChain::builder()
            .step("A", 1, "A", id)
            .step("A", 3, "A", id)
            .build();
        assert!(gap.unwrap_err().to_string().contains("gap"));
        let dup = UpcasterChain::builder()
            .step("A", 1, "A", id)
            .step("A", 1, "A", id)
            .build();
        assert!(dup.unwrap_err().to_string().contains("twice"));
        let cycle = UpcasterChain::builder()
            .step("A", 1, "B", id)
            .step("B", 2, "A", id)
            .build();
        assert!(cycle.unwrap_err().to_string().contains("cycle"));
    }

    #[test]
    fn step_errors_propagate_and_wrong_content_is_refused() {
        let c = UpcasterChain::builder()
            .json_step("A", 1, "A", |_| Err(Error::invalid("boom")))
            .build()
            .unwrap();
        assert!(c.upcast(EventData::json("A", &json!({})).unwrap()).is_err());
        let opaque = EventData::new("A", ContentType::Opaque, vec![1u8]);
        assert!(matches!(c.upcast(opaque), Err(Error::InvalidInput { .. })));
    }
}
