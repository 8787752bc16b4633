//! The portable query subset as MongoDB filters and sorts: pure functions, unit tested.
//!
//! A read-model document is stored as `{ _id, b: <body>, x: <expires_at date>, f: { <field>:
//! <typed value> } }`: `f` holds a typed copy of every indexed field the body has (absent
//! when the body lacks it or holds null), which is what filters, sorts and indexes use. So
//! a document without the field is never in its index, strings compare bytewise (the simple
//! collation), and ties break by `_id` bytewise.

use std::{collections::BTreeMap, ops::Bound};

use bson::{doc, Bson, DateTime, Document};
use cqrs_core::{
    read_model::validate_filters, Cursor, Direction, FieldType, Filter, Query, Result, SortBy, Timestamp,
    Value,
};

/// Where the typed copy of an indexed field lives.
pub(crate) fn path(field: &str) -> String {
    format!("f.{field}")
}

/// The BSON form of a typed value (times as integer milliseconds).
pub(crate) fn value_bson(v: &Value) -> Bson {
    match v {
        Value::I64(n) => Bson::Int64(*n),
        Value::Str(s) => Bson::String(s.clone()),
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Time(t) => Bson::Int64(t.as_millis()),
    }
}

/// The typed value of a stored `f` entry.
pub(crate) fn value_of(b: &Bson, ty: FieldType) -> Option<Value> {
    match (b, ty) {
        (Bson::Int64(n), FieldType::I64) => Some(Value::I64(*n)),
        (Bson::Int64(n), FieldType::Time) => Some(Value::Time(Timestamp::from_millis(*n))),
        (Bson::String(s), FieldType::Str) => Some(Value::Str(s.clone())),
        (Bson::Boolean(b), FieldType::Bool) => Some(Value::Bool(*b)),
        _ => None,
    }
}

/// Escapes a literal for a regular expression.
pub(crate) fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\^$.|?*+()[]{}-/#&~ ".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Only documents that have not expired at `now`.
pub(crate) fn unexpired(now: Timestamp) -> Document {
    doc! { "$or": [ { "x": Bson::Null }, { "x": { "$gt": DateTime::from_millis(now.as_millis()) } } ] }
}

/// One filter as a clause.
pub(crate) fn clause(filter: &Filter) -> Document {
    let p = path(filter.field());
    match filter {
        Filter::Eq { value, .. } => doc! { p: value_bson(value) },
        Filter::Range { lower, upper, .. } => {
            let mut ops = Document::new();
            match lower {
                Bound::Included(v) => {
                    ops.insert("$gte", value_bson(v));
                }
                Bound::Excluded(v) => {
                    ops.insert("$gt", value_bson(v));
                }
                Bound::Unbounded => {}
            }
            match upper {
                Bound::Included(v) => {
                    ops.insert("$lte", value_bson(v));
                }
                Bound::Excluded(v) => {
                    ops.insert("$lt", value_bson(v));
                }
                Bound::Unbounded => {}
            }
            if ops.is_empty() {
                ops.insert("$exists", true);
            }
            doc! { p: ops }
        }
        Filter::Prefix { prefix, .. } => doc! {
            p: { "$type": "string", "$regex": format!("^{}", regex_escape(prefix)) }
        },
    }
}

/// The filter of `count`: the filters and expiry.
///
/// # Errors
/// As [`validate_filters`].
pub(crate) fn count_filter(
    filters: &[Filter],
    indexes: &BTreeMap<String, FieldType>,
    now: Timestamp,
) -> Result<Document> {
    validate_filters(filters, indexes)?;
    let mut and: Vec<Bson> = filters.iter().map(|f| Bson::Document(clause(f))).collect();
    and.push(Bson::Document(unexpired(now)));
    Ok(doc! { "$and": and })
}

/// A translated query: filter, sort, how many to fetch (one more than the limit, to know
/// whether a next page exists) and the sort field with its type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Translated {
    /// The filter document.
    pub(crate) filter: Document,
    /// The sort document.
    pub(crate) sort: Document,
    /// Documents to fetch.
    pub(crate) fetch: i64,
    /// The sort field and its type (`None`: by id).
    pub(crate) sort_field: Option<(String, FieldType)>,
}

/// Translates a query of the portable subset.
///
/// # Errors
/// [`cqrs_core::Error::InvalidInput`] as [`Query::validate`] decides (a field without an
/// index names `ensure_index`).
pub(crate) fn translate(
    q: &Query,
    indexes: &BTreeMap<String, FieldType>,
    now: Timestamp,
) -> Result<Translated> {
    q.validate(indexes)?;
    let dir = match q.direction {
        Direction::Asc => 1,
        Direction::Desc => -1,
    };
    let (gt, _) = match q.direction {
        Direction::Asc => ("$gt", "$lt"),
        Direction::Desc => ("$lt", "$gt"),
    };
    let mut and: Vec<Bson> = q.filters.iter().map(|f| Bson::Document(clause(f))).collect();
    and.push(Bson::Document(unexpired(now)));
    let sort_field = q.sort_type(indexes);
    let sort = match &q.sort {
        SortBy::Id => doc! { "_id": dir },
        SortBy::Field(field) => {
            and.push(Bson::Document(doc! { path(field): { "$exists": true } }));
            doc! { path(field): dir, "_id": dir }
        }
    };
    if let Some(Cursor { value, id }) = &q.after {
        let after = match (&q.sort, value) {
            (SortBy::Field(field), Some(v)) => doc! { "$or": [
                { path(field): { gt: value_bson(v) } },
                { path(field): value_bson(v), "_id": { gt: id.as_str() } },
            ] },
            _ => doc! { "_id": { gt: id.as_str() } },
        };
        and.push(Bson::Document(after));
    }
    let fetch = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
    Ok(Translated {
        filter: doc! { "$and": and },
        sort,
        fetch,
        sort_field,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx() -> BTreeMap<String, FieldType> {
        BTreeMap::from([
            ("age".to_owned(), FieldType::I64),
            ("name".to_owned(), FieldType::Str),
            ("vip".to_owned(), FieldType::Bool),
            ("at".to_owned(), FieldType::Time),
        ])
    }

    fn now() -> Timestamp {
        Timestamp::from_millis(1_000)
    }

    fn live() -> Bson {
        Bson::Document(unexpired(now()))
    }

    #[test]
    fn equality_and_range_by_id() {
        let q = Query::new()
            .filter(Filter::eq("vip", Value::Bool(true)))
            .filter(Filter::range(
                "age",
                Bound::Included(Value::I64(18)),
                Bound::Excluded(Value::I64(65)),
            ))
            .limit(10);
        let t = translate(&q, &idx(), now()).unwrap();
        assert_eq!(
            t.filter,
            doc! { "$and": [
                { "f.vip": true },
                { "f.age": { "$gte": 18_i64, "$lt": 65_i64 } },
                live(),
            ] }
        );
        assert_eq!(t.sort, doc! { "_id": 1 });
        assert_eq!(t.fetch, 11);
        assert_eq!(t.sort_field, None);
    }

    #[test]
    fn sorted_by_field_descending_with_cursor() {
        let q = Query::new()
            .filter(Filter::prefix("name", "a.b*"))
            .sort_by("name", Direction::Desc)
            .limit(2)
            .after(Some(Cursor {
                value: Some(Value::Str("ab".into())),
                id: "7".into(),
            }));
        let t = translate(&q, &idx(), now()).unwrap();
        assert_eq!(
            t.filter,
            doc! { "$and": [
                { "f.name": { "$type": "string", "$regex": "^a\\.b\\*" } },
                live(),
                { "f.name": { "$exists": true } },
                { "$or": [
                    { "f.name": { "$lt": "ab" } },
                    { "f.name": "ab", "_id": { "$lt": "7" } },
                ] },
            ] }
        );
        assert_eq!(t.sort, doc! { "f.name": -1, "_id": -1 });
        assert_eq!(t.sort_field, Some(("name".to_owned(), FieldType::Str)));
    }

    #[test]
    fn id_cursor_times_and_open_ranges() {
        let q = Query::new()
            .filter(Filter::range(
                "at",
                Bound::Excluded(Value::Time(Timestamp::from_millis(5))),
                Bound::Unbounded,
            ))
            .after(Some(Cursor {
                value: None,
                id: "k".into(),
            }));
        let t = translate(&q, &idx(), now()).unwrap();
        assert_eq!(
            t.filter,
            doc! { "$and": [ { "f.at": { "$gt": 5_i64 } }, live(), { "_id": { "$gt": "k" } } ] }
        );
        let any = clause(&Filter::range("age", Bound::Unbounded, Bound::Unbounded));
        assert_eq!(any, doc! { "f.age": { "$exists": true } });
    }

    #[test]
    fn unindexed_fields_and_outside_the_subset_are_refused() {
        let q = Query::new().filter(Filter::eq("nope", Value::I64(1)));
        let err = translate(&q, &idx(), now()).unwrap_err().to_string();
        assert!(err.contains("ensure_index"), "{err}");
        let two_ranges = Query::new()
            .filter(Filter::prefix("name", "a"))
            .filter(Filter::range(
                "age",
                Bound::Unbounded,
                Bound::Included(Value::I64(3)),
            ));
        assert!(translate(&two_ranges, &idx(), now()).is_err());
        let f = count_filter(&[Filter::eq("age", Value::I64(3))], &idx(), now()).unwrap();
        assert_eq!(f, doc! { "$and": [ { "f.age": 3_i64 }, live() ] });
    }

    #[test]
    fn typed_values_round_trip() {
        for (v, ty) in [
            (Value::I64(-3), FieldType::I64),
            (Value::Str("ü".into()), FieldType::Str),
            (Value::Bool(false), FieldType::Bool),
            (Value::Time(Timestamp::from_millis(9)), FieldType::Time),
        ] {
            assert_eq!(value_of(&value_bson(&v), ty), Some(v));
        }
        assert_eq!(value_of(&Bson::Int64(1), FieldType::Str), None);
        assert_eq!(regex_escape("a.b$"), "a\\.b\\$");
    }
}
