//! Read-model documents and the portable query subset, as pure logic.
//!
//! Every backend serves the same subset from indexes: equality on indexed fields, at most
//! one range or prefix filter, sort by that field or by id, keyset (cursor) paging and
//! `count`. Fields are typed at `ensure_index`; strings compare bytewise; a document that
//! lacks a field (or holds `null`) is not in that field's index, so a query that filters or
//! sorts on the field never returns it. The functions here define those semantics once: the
//! memory backend runs them directly, and the conformance harness holds the others to them.

use std::{cmp::Ordering, collections::BTreeMap, ops::Bound};

use serde::{Deserialize, Serialize};

use crate::{validate_name, Error, Result, Timestamp};

/// Longest collection name, in bytes.
pub const MAX_COLLECTION_BYTES: usize = 128;

/// Checks a collection name: 1 to 128 ASCII letters, digits, `_` or `-`. Collections become
/// key parts, column values and MongoDB collection names; this subset is safe in all.
///
/// # Errors
/// [`Error::InvalidInput`].
pub fn validate_collection(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_COLLECTION_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(Error::invalid(format!(
            "collection name {name:?}: use 1 to {MAX_COLLECTION_BYTES} ASCII letters, digits, '_' or '-'"
        )));
    }
    Ok(())
}

/// Checks an indexed field name: an ASCII letter or `_`, then up to 63 letters, digits or
/// `_`. MongoDB reads `.` as a path and refuses a leading `$`; SQL expression indexes name
/// the field; this subset means the same thing everywhere.
///
/// # Errors
/// [`Error::InvalidInput`].
pub fn validate_field(name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 64;
    if !ok {
        return Err(Error::invalid(format!(
            "field name {name:?}: use a letter or '_' followed by up to 63 letters, digits or '_'"
        )));
    }
    Ok(())
}

/// True if a JSON value holds a NUL character in any string or key.
fn contains_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(contains_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// The type of an indexed field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FieldType {
    /// A JSON integer within `i64`.
    I64,
    /// A JSON string, compared bytewise.
    Str,
    /// A JSON boolean (`false < true`).
    Bool,
    /// A JSON integer of milliseconds since the Unix epoch.
    Time,
}

/// A typed value of an indexed field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    /// An integer.
    I64(i64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A time.
    Time(Timestamp),
}

impl Value {
    /// The value's type.
    pub const fn field_type(&self) -> FieldType {
        match self {
            Value::I64(_) => FieldType::I64,
            Value::Str(_) => FieldType::Str,
            Value::Bool(_) => FieldType::Bool,
            Value::Time(_) => FieldType::Time,
        }
    }

    /// Reads a JSON value as `ty`: `Ok(None)` for an absent or `null` value.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a value of another type.
    pub fn from_json(field: &str, json: Option<&serde_json::Value>, ty: FieldType) -> Result<Option<Value>> {
        let Some(json) = json.filter(|j| !j.is_null()) else {
            return Ok(None);
        };
        let value = match ty {
            FieldType::I64 => json.as_i64().map(Value::I64),
            FieldType::Time => json.as_i64().map(|ms| Value::Time(Timestamp::from_millis(ms))),
            FieldType::Str => json.as_str().map(|s| Value::Str(s.to_owned())),
            FieldType::Bool => json.as_bool().map(Value::Bool),
        };
        value.map(Some).ok_or_else(|| {
            Error::invalid(format!(
                "field {field:?} is indexed as {ty:?}, the document holds {json}"
            ))
        })
    }

    /// Total order within one type; values of different types compare by type.
    pub fn cmp_same_type(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::I64(a), Value::I64(b)) => a.cmp(b),
            (Value::Str(a), Value::Str(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Time(a), Value::Time(b)) => a.cmp(b),
            (a, b) => (a.field_type() as u8).cmp(&(b.field_type() as u8)),
        }
    }
}

/// A read-model document: an id and a JSON object, optionally expiring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// The id, unique within its collection.
    pub id: String,
    /// The body: a JSON object whose top-level fields can be indexed.
    pub body: serde_json::Value,
    /// After this time the document is never returned nor counted.
    pub expires_at: Option<Timestamp>,
}

impl Document {
    /// A document that does not expire.
    pub fn new(id: impl Into<String>, body: serde_json::Value) -> Self {
        Document {
            id: id.into(),
            body,
            expires_at: None,
        }
    }

    /// Sets an expiry time.
    #[must_use]
    pub fn expires_at(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// A top-level field of the body.
    pub fn field(&self, name: &str) -> Option<&serde_json::Value> {
        self.body.get(name)
    }

    /// True if expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Checks the id, that the body is an object without NUL characters (PostgreSQL `jsonb`
    /// refuses them), that the expiry is storable, and that every indexed field present has
    /// its declared type.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the problem.
    pub fn validate(&self, indexes: &BTreeMap<String, FieldType>) -> Result<()> {
        validate_name("document id", &self.id)?;
        if !self.body.is_object() {
            return Err(Error::invalid(format!(
                "document {:?}: body must be a JSON object",
                self.id
            )));
        }
        if contains_nul(&self.body) {
            return Err(Error::invalid(format!(
                "document {:?}: body contains a NUL character",
                self.id
            )));
        }
        if self.expires_at.is_some_and(|t| !t.is_storable()) {
            return Err(Error::invalid(format!(
                "document {:?}: expiry outside years 1 to 9999",
                self.id
            )));
        }
        for (field, ty) in indexes {
            Value::from_json(field, self.field(field), *ty)?;
        }
        Ok(())
    }

    /// The typed value of an indexed field, `None` when absent, null or mistyped.
    pub fn value(&self, field: &str, ty: FieldType) -> Option<Value> {
        Value::from_json(field, self.field(field), ty).ok().flatten()
    }
}

/// One filter of the portable subset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filter {
    /// `field == value`.
    Eq {
        /// The indexed field.
        field: String,
        /// The value.
        value: Value,
    },
    /// `lower <= field <= upper`, each bound inclusive, exclusive or open.
    Range {
        /// The indexed field.
        field: String,
        /// Lower bound.
        lower: Bound<Value>,
        /// Upper bound.
        upper: Bound<Value>,
    },
    /// A string field starting with `prefix` (bytewise).
    Prefix {
        /// The indexed string field.
        field: String,
        /// The prefix.
        prefix: String,
    },
}

impl Filter {
    /// `field == value`.
    pub fn eq(field: impl Into<String>, value: Value) -> Self {
        Filter::Eq {
            field: field.into(),
            value,
        }
    }

    /// `lower <= field < upper` style range.
    pub fn range(field: impl Into<String>, lower: Bound<Value>, upper: Bound<Value>) -> Self {
        Filter::Range {
            field: field.into(),
            lower,
            upper,
        }
    }

    /// String prefix.
    pub fn prefix(field: impl Into<String>, prefix: impl Into<String>) -> Self {
        Filter::Prefix {
            field: field.into(),
            prefix: prefix.into(),
        }
    }

    /// The field filtered on.
    pub fn field(&self) -> &str {
        match self {
            Filter::Eq { field, .. } | Filter::Range { field, .. } | Filter::Prefix { field, .. } => field,
        }
    }

    /// True if `doc` passes (given the field's declared type).
    pub fn matches(&self, doc: &Document, ty: FieldType) -> bool {
        let Some(v) = doc.value(self.field(), ty) else {
            return false;
        };
        match self {
            Filter::Eq { value, .. } => v.cmp_same_type(value) == Ordering::Equal,
            Filter::Range { lower, upper, .. } => {
                let above = match lower {
                    Bound::Included(b) => v.cmp_same_type(b) != Ordering::Less,
                    Bound::Excluded(b) => v.cmp_same_type(b) == Ordering::Greater,
                    Bound::Unbounded => true,
                };
                let below = match upper {
                    Bound::Included(b) => v.cmp_same_type(b) != Ordering::Greater,
                    Bound::Excluded(b) => v.cmp_same_type(b) == Ordering::Less,
                    Bound::Unbounded => true,
                };
                above && below
            }
            Filter::Prefix { prefix, .. } => {
                matches!(&v, Value::Str(s) if s.as_bytes().starts_with(prefix.as_bytes()))
            }
        }
    }
}

/// What a query sorts by.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SortBy {
    /// The document id (bytewise).
    #[default]
    Id,
    /// An indexed field, then the id.
    Field(String),
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Direction {
    /// Ascending.
    #[default]
    Asc,
    /// Descending.
    Desc,
}

/// Where a keyset page ends: the last document's sort value and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort field's value (`None` when sorting by id).
    pub value: Option<Value>,
    /// The id.
    pub id: String,
}

/// A query of the portable subset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Filters, all of which must hold.
    pub filters: Vec<Filter>,
    /// Sort key.
    pub sort: SortBy,
    /// Sort direction.
    pub direction: Direction,
    /// Page size (at least 1).
    pub limit: usize,
    /// Resume after this cursor.
    pub after: Option<Cursor>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            filters: Vec::new(),
            sort: SortBy::Id,
            direction: Direction::Asc,
            limit: 100,
            after: None,
        }
    }
}

impl Query {
    /// Every document, by id, 100 a page.
    pub fn new() -> Self {
        Query::default()
    }

    /// Adds a filter.
    #[must_use]
    pub fn filter(mut self, f: Filter) -> Self {
        self.filters.push(f);
        self
    }

    /// Sorts by a field.
    #[must_use]
    pub fn sort_by(mut self, field: impl Into<String>, direction: Direction) -> Self {
        self.sort = SortBy::Field(field.into());
        self.direction = direction;
        self
    }

    /// Sets the page size.
    #[must_use]
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n;
        self
    }

    /// Resumes after a cursor.
    #[must_use]
    pub fn after(mut self, cursor: Option<Cursor>) -> Self {
        self.after = cursor;
        self
    }

    /// Checks the query against a collection's indexes: every field indexed with a value of
    /// its type, at most one range or prefix filter, a sort field that is indexed and, when
    /// there is a range or prefix filter, that filter's field; a cursor whose value matches
    /// the sort; a limit of at least 1.
    ///
    /// # Errors
    /// [`Error::InvalidInput`]; for an unindexed field the message names `ensure_index`.
    pub fn validate(&self, indexes: &BTreeMap<String, FieldType>) -> Result<()> {
        validate_filters(&self.filters, indexes)?;
        if self.limit == 0 {
            return Err(Error::invalid("query limit must be at least 1"));
        }
        if let SortBy::Field(field) = &self.sort {
            let ty = indexed(indexes, field)?;
            let range = self.filters.iter().find(|f| !matches!(f, Filter::Eq { .. }));
            if let Some(r) = range.filter(|r| r.field() != field) {
                return Err(Error::invalid(format!(
                    "a query with a range or prefix on {:?} must sort by that field or by id, not {field:?}",
                    r.field()
                )));
            }
            match &self.after {
                Some(Cursor { value: Some(v), .. }) => check_type(field, v, ty)?,
                Some(Cursor { value: None, .. }) => {
                    return Err(Error::invalid(format!(
                        "a cursor for a query sorted by {field:?} must carry its value"
                    )))
                }
                None => {}
            }
        } else if matches!(&self.after, Some(Cursor { value: Some(_), .. })) {
            return Err(Error::invalid(
                "a cursor for a query sorted by id must not carry a value",
            ));
        }
        Ok(())
    }

    /// The type of the sort field, if sorting by a field.
    pub fn sort_type(&self, indexes: &BTreeMap<String, FieldType>) -> Option<(String, FieldType)> {
        match &self.sort {
            SortBy::Id => None,
            SortBy::Field(f) => indexes.get(f).map(|t| (f.clone(), *t)),
        }
    }

    /// Evaluates the query over documents in memory: the reference semantics. Expired
    /// documents must already be removed. Returns the page and the cursor of the next one.
    pub fn run<'a>(
        &self,
        indexes: &BTreeMap<String, FieldType>,
        docs: impl Iterator<Item = &'a Document>,
    ) -> Result<(Vec<Document>, Option<Cursor>)> {
        self.validate(indexes)?;
        let sort = self.sort_type(indexes);
        let key = |d: &Document| -> Option<(Option<Value>, String)> {
            match &sort {
                None => Some((None, d.id.clone())),
                Some((f, t)) => d.value(f, *t).map(|v| (Some(v), d.id.clone())),
            }
        };
        let cmp = |a: &(Option<Value>, String), b: &(Option<Value>, String)| {
            let by_value = match (&a.0, &b.0) {
                (Some(x), Some(y)) => x.cmp_same_type(y),
                _ => Ordering::Equal,
            };
            let o = by_value.then_with(|| a.1.as_bytes().cmp(b.1.as_bytes()));
            match self.direction {
                Direction::Asc => o,
                Direction::Desc => o.reverse(),
            }
        };
        let after = self.after.as_ref().map(|c| (c.value.clone(), c.id.clone()));
        let mut hits: Vec<((Option<Value>, String), &Document)> = docs
            .filter(|d| {
                self.filters
                    .iter()
                    .all(|f| indexes.get(f.field()).is_some_and(|t| f.matches(d, *t)))
            })
            .filter_map(|d| key(d).map(|k| (k, d)))
            .filter(|(k, _)| after.as_ref().is_none_or(|a| cmp(k, a) == Ordering::Greater))
            .collect();
        hits.sort_by(|a, b| cmp(&a.0, &b.0));
        let more = hits.len() > self.limit;
        hits.truncate(self.limit);
        let next = if more {
            hits.last().map(|((value, id), _)| Cursor {
                value: value.clone(),
                id: id.clone(),
            })
        } else {
            None
        };
        Ok((hits.into_iter().map(|(_, d)| d.clone()).collect(), next))
    }
}

/// Validates count filters (the same rules as [`Query::validate`] without sort and limit).
///
/// # Errors
/// [`Error::InvalidInput`].
pub fn validate_filters(filters: &[Filter], indexes: &BTreeMap<String, FieldType>) -> Result<()> {
    let mut ranges = 0;
    for f in filters {
        let ty = indexed(indexes, f.field())?;
        match f {
            Filter::Eq { value, .. } => check_type(f.field(), value, ty)?,
            Filter::Range { lower, upper, .. } => {
                ranges += 1;
                for b in [lower, upper] {
                    if let Bound::Included(v) | Bound::Excluded(v) = b {
                        check_type(f.field(), v, ty)?;
                    }
                }
            }
            Filter::Prefix { .. } => {
                ranges += 1;
                if ty != FieldType::Str {
                    return Err(Error::invalid(format!(
                        "prefix filter on {:?}, which is indexed as {ty:?}, not Str",
                        f.field()
                    )));
                }
            }
        }
    }
    if ranges > 1 {
        return Err(Error::invalid(
            "the portable query subset allows at most one range or prefix filter",
        ));
    }
    Ok(())
}

fn indexed(indexes: &BTreeMap<String, FieldType>, field: &str) -> Result<FieldType> {
    indexes.get(field).copied().ok_or_else(|| {
        Error::invalid(format!(
            "field {field:?} has no index: call ensure_index(collection, {field:?}, type) first"
        ))
    })
}

fn check_type(field: &str, v: &Value, ty: FieldType) -> Result<()> {
    if v.field_type() != ty {
        return Err(Error::invalid(format!(
            "field {field:?} is indexed as {ty:?}, the query gives {:?}",
            v.field_type()
        )));
    }
    Ok(())
}

/// One change to a read model, applied by [`crate::ReadStore::commit`].
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert or replace a document.
    Upsert {
        /// The collection.
        collection: String,
        /// The document.
        document: Document,
    },
    /// Delete a document (a no-op if missing).
    Delete {
        /// The collection.
        collection: String,
        /// The document id.
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn idx() -> BTreeMap<String, FieldType> {
        [
            ("score".to_owned(), FieldType::I64),
            ("name".to_owned(), FieldType::Str),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn unindexed_field_names_ensure_index() {
        let q = Query::new().filter(Filter::eq("color", Value::Str("red".into())));
        let err = q.validate(&idx()).unwrap_err().to_string();
        assert!(err.contains("ensure_index"), "{err}");
    }

    #[test]
    fn type_mismatch_and_two_ranges_are_refused() {
        assert!(Query::new()
            .filter(Filter::eq("score", Value::Str("x".into())))
            .validate(&idx())
            .is_err());
        let two = Query::new()
            .filter(Filter::range(
                "score",
                Bound::Included(Value::I64(1)),
                Bound::Unbounded,
            ))
            .filter(Filter::prefix("name", "a"));
        assert!(two.validate(&idx()).is_err());
    }

    #[test]
    fn keyset_pages_cover_everything_once() {
        let docs: Vec<Document> = (0..25)
            .map(|i| {
                Document::new(
                    format!("d{i:02}"),
                    json!({"score": i % 7, "name": format!("n{i}")}),
                )
            })
            .collect();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let q = Query::new()
                .sort_by("score", Direction::Desc)
                .limit(4)
                .after(after);
            let (page, next) = q.run(&idx(), docs.iter()).unwrap();
            seen.extend(page.into_iter().map(|d| d.id));
            match next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 25);
    }

    #[test]
    fn cursor_must_match_the_sort() {
        let by_field = Query::new().sort_by("score", Direction::Asc).after(Some(Cursor {
            value: None,
            id: "d".into(),
        }));
        assert!(by_field.validate(&idx()).is_err());
        let by_id = Query::new().after(Some(Cursor {
            value: Some(Value::I64(1)),
            id: "d".into(),
        }));
        assert!(by_id.validate(&idx()).is_err());
    }

    #[test]
    fn names_and_bodies_are_portable() {
        assert!(validate_collection("orders_v2-eu").is_ok());
        for bad in ["", "a.b", "a{b}", "ü", &"x".repeat(129)] {
            assert!(validate_collection(bad).is_err(), "{bad:?}");
        }
        assert!(validate_field("_score2").is_ok());
        for bad in ["", "2x", "a.b", "$x", "a-b", &"x".repeat(65)] {
            assert!(validate_field(bad).is_err(), "{bad:?}");
        }
        let none = BTreeMap::new();
        assert!(Document::new("d", json!({"a": ["x\u{0}"]}))
            .validate(&none)
            .is_err());
        assert!(Document::new("d", json!({"a\u{0}": 1})).validate(&none).is_err());
        assert!(Document::new("d", json!({}))
            .expires_at(Timestamp::from_millis(i64::MAX))
            .validate(&none)
            .is_err());
        assert!(Document::new("d", json!({"a": "ok"})).validate(&none).is_ok());
    }

    #[test]
    fn strings_compare_bytewise() {
        let a = Value::Str("Z".into());
        let b = Value::Str("a".into());
        assert_eq!(a.cmp_same_type(&b), Ordering::Less);
    }
}
