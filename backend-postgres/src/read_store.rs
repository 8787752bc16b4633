//! [`ReadStore`] for [`PgBackend`]: JSON documents, typed expression indexes created by
//! `ensure_index`, the portable query subset in SQL with binds, expiry by the database
//! clock.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Bound,
};

use async_trait::async_trait;
use cqrs_core::{
    read_model::validate_filters, validate_name, Change, CheckpointUpdate, Cursor, Direction, Document,
    Error, FieldType, Filter, Query, QueryPage, ReadStore, Result, Timestamp, Value,
};
use sqlx::{postgres::PgArguments, PgConnection, Postgres, Row};

use crate::backend::{count_i64, to_u64};
use crate::checkpoint_store::NOW_MS;
use crate::schema::literal;
use crate::{error, PgBackend};

/// Validates a collection name (the portable subset every backend accepts).
fn check_collection(collection: &str) -> Result<()> {
    cqrs_core::validate_collection(collection)
}

fn type_code(ty: FieldType) -> i16 {
    match ty {
        FieldType::I64 => 0,
        FieldType::Str => 1,
        FieldType::Bool => 2,
        FieldType::Time => 3,
    }
}

fn type_of(code: i16) -> Result<FieldType> {
    Ok(match code {
        0 => FieldType::I64,
        1 => FieldType::Str,
        2 => FieldType::Bool,
        3 => FieldType::Time,
        other => return Err(Error::corrupt(format!("unknown index type {other}"))),
    })
}

/// The typed SQL expression of an indexed field (the same text in the index and in queries,
/// so the planner can use the index). The field name is a validated, quoted literal.
fn expr(schema: &str, field: &str, ty: FieldType) -> String {
    let function = match ty {
        FieldType::I64 | FieldType::Time => "json_i64",
        FieldType::Str => "json_str",
        FieldType::Bool => "json_bool",
    };
    let collate = if ty == FieldType::Str {
        " COLLATE \"C\""
    } else {
        ""
    };
    format!("({schema}.{function}(body -> {}){collate})", literal(field))
}

/// A stable index name for (collection, field): `ix_` and an FNV-1a hash.
fn index_name(collection: &str, field: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in collection.bytes().chain([0u8]).chain(field.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("ix_{h:016x}")
}

/// Validates a document against a collection's indexes and the size limit.
fn check_document(
    limits: &cqrs_core::Limits,
    indexes: &BTreeMap<String, FieldType>,
    document: &Document,
) -> Result<()> {
    document.validate(indexes)?;
    let body = serde_json::to_vec(&document.body).map_err(|e| Error::codec("read-model document", e))?;
    limits.check_document(document.id.len().saturating_add(body.len()))
}

/// The live-document condition by the database clock.
fn unexpired() -> String {
    format!("(expires_at IS NULL OR expires_at > {NOW_MS})")
}

/// Builds WHERE clauses and their bind values.
struct Where {
    clauses: Vec<String>,
    values: Vec<Value>,
    next_param: usize,
}

impl Where {
    fn new(first_param: usize) -> Self {
        Where {
            clauses: Vec::new(),
            values: Vec::new(),
            next_param: first_param,
        }
    }

    fn param(&mut self, v: Value) -> String {
        self.values.push(v);
        let p = format!("${}", self.next_param);
        self.next_param += 1;
        p
    }

    fn filters(
        &mut self,
        schema: &str,
        filters: &[Filter],
        indexes: &BTreeMap<String, FieldType>,
    ) -> Result<()> {
        for f in filters {
            let ty = indexes.get(f.field()).copied().ok_or_else(|| {
                Error::invalid(format!(
                    "field {:?} has no index: call ensure_index first",
                    f.field()
                ))
            })?;
            let e = expr(schema, f.field(), ty);
            match f {
                Filter::Eq { value, .. } => {
                    let p = self.param(value.clone());
                    self.clauses.push(format!("{e} = {p}"));
                }
                Filter::Range { lower, upper, .. } => {
                    self.clauses.push(format!("{e} IS NOT NULL"));
                    for (bound, inc, exc) in [(lower, ">=", ">"), (upper, "<=", "<")] {
                        match bound {
                            Bound::Included(v) => {
                                let p = self.param(v.clone());
                                self.clauses.push(format!("{e} {inc} {p}"));
                            }
                            Bound::Excluded(v) => {
                                let p = self.param(v.clone());
                                self.clauses.push(format!("{e} {exc} {p}"));
                            }
                            Bound::Unbounded => {}
                        }
                    }
                }
                Filter::Prefix { prefix, .. } => {
                    let p = self.param(Value::Str(prefix.clone()));
                    self.clauses
                        .push(format!("starts_with({e}, {p}::text COLLATE \"C\")"));
                }
            }
        }
        Ok(())
    }

    fn sql(&self) -> String {
        self.clauses.iter().map(|c| format!(" AND {c}")).collect()
    }
}

/// Binds values in order.
fn bind_values<'q>(
    mut q: sqlx::query::Query<'q, Postgres, PgArguments>,
    values: &'q [Value],
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    for v in values {
        q = match v {
            Value::I64(i) => q.bind(*i),
            Value::Str(s) => q.bind(s.as_str()),
            Value::Bool(b) => q.bind(*b),
            Value::Time(t) => q.bind(t.as_millis()),
        };
    }
    q
}

fn document_from_row(row: &sqlx::postgres::PgRow) -> Result<Document> {
    let get = |e: sqlx::Error| Error::corrupt(format!("document row: {e}"));
    let expires: Option<i64> = row.try_get("expires_at").map_err(get)?;
    Ok(Document {
        id: row.try_get("id").map_err(get)?,
        body: row.try_get("body").map_err(get)?,
        expires_at: expires.map(Timestamp::from_millis),
    })
}

impl PgBackend {
    /// Takes the collection's lock: shared for document writes, exclusive for index changes.
    async fn lock_collection(
        &self,
        conn: &mut PgConnection,
        collection: &str,
        exclusive: bool,
    ) -> Result<()> {
        let sql = if exclusive {
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 2))"
        } else {
            "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 2))"
        };
        self.trip();
        sqlx::query(sql)
            .bind(format!("cqrs-collection:{}:{collection}", self.schema.as_str()))
            .execute(&mut *conn)
            .await
            .map_err(error::sent)?;
        Ok(())
    }

    /// The declared indexes of a collection.
    async fn indexes_of(
        &self,
        conn: &mut PgConnection,
        collection: &str,
    ) -> Result<BTreeMap<String, FieldType>> {
        self.trip();
        let rows = sqlx::query(&self.sql("SELECT field, ty FROM __SCHEMA__.indexes WHERE collection = $1"))
            .bind(collection)
            .fetch_all(&mut *conn)
            .await
            .map_err(error::sent)?;
        rows.iter()
            .map(|row| {
                let field: String = row.try_get("field").map_err(error::sent)?;
                Ok((field, type_of(row.try_get("ty").map_err(error::sent)?)?))
            })
            .collect()
    }

    /// Writes documents already validated.
    async fn write_documents(
        &self,
        conn: &mut PgConnection,
        collection: &str,
        documents: &[Document],
    ) -> Result<()> {
        if documents.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = documents.iter().map(|d| d.id.as_str()).collect();
        let bodies: Vec<sqlx::types::Json<&serde_json::Value>> =
            documents.iter().map(|d| sqlx::types::Json(&d.body)).collect();
        let expiries: Vec<Option<i64>> = documents
            .iter()
            .map(|d| d.expires_at.map(Timestamp::as_millis))
            .collect();
        self.trip();
        sqlx::query(&self.sql(
            "INSERT INTO __SCHEMA__.documents (collection, id, body, expires_at)
             SELECT $1, u.id, u.body, u.expires_at FROM unnest($2::text[], $3::jsonb[], $4::bigint[]) AS u(id, body, expires_at)
             ON CONFLICT (collection, id) DO UPDATE SET body = excluded.body, expires_at = excluded.expires_at",
        ))
        .bind(collection)
        .bind(ids)
        .bind(bodies)
        .bind(expiries)
        .execute(&mut *conn)
        .await
        .map_err(error::sent)?;
        Ok(())
    }

    /// Validates and writes documents into one collection inside a transaction.
    async fn upsert_in(
        &self,
        conn: &mut PgConnection,
        collection: &str,
        documents: Vec<Document>,
    ) -> Result<()> {
        check_collection(collection)?;
        self.lock_collection(conn, collection, false).await?;
        let indexes = self.indexes_of(conn, collection).await?;
        // The last write of an id wins, as applying them in order would.
        let mut by_id: BTreeMap<String, Document> = BTreeMap::new();
        for document in documents {
            check_document(&self.limits, &indexes, &document)?;
            by_id.insert(document.id.clone(), document);
        }
        let documents: Vec<Document> = by_id.into_values().collect();
        self.write_documents(conn, collection, &documents).await
    }

    async fn delete_in(&self, conn: &mut PgConnection, collection: &str, id: &str) -> Result<bool> {
        self.trip();
        let live: Option<bool> = sqlx::query_scalar(&self.sql(&format!(
            "DELETE FROM __SCHEMA__.documents WHERE collection = $1 AND id = $2 RETURNING {}",
            unexpired()
        )))
        .bind(collection)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(error::sent)?;
        Ok(live.unwrap_or(false))
    }
}

#[async_trait]
impl ReadStore for PgBackend {
    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", collection = %collection, field = %field, ty = ?ty))]
    async fn ensure_index(&self, collection: &str, field: &str, ty: FieldType) -> Result<()> {
        self.begin()?;
        check_collection(collection)?;
        cqrs_core::validate_field(field)?;
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        self.lock_collection(&mut tx, collection, true).await?;
        let indexes = self.indexes_of(&mut tx, collection).await?;
        match indexes.get(field) {
            Some(&declared) if declared == ty => return Ok(()),
            Some(&declared) => {
                return Err(Error::invalid(format!(
                "field {field:?} of collection {collection:?} is already indexed as {declared:?}, not {ty:?}"
            )))
            }
            None => {}
        }
        self.trip();
        let values: Vec<serde_json::Value> = sqlx::query_scalar(&self.sql(&format!(
            "SELECT body -> $2 FROM __SCHEMA__.documents WHERE collection = $1 AND body ? $2 AND {}",
            unexpired()
        )))
        .bind(collection)
        .bind(field)
        .fetch_all(&mut *tx)
        .await
        .map_err(error::sent)?;
        for v in &values {
            Value::from_json(field, Some(v), ty)?;
        }
        let name = index_name(collection, field);
        let schema = self.schema.quoted();
        self.trip();
        let ddl = format!(
            "CREATE INDEX IF NOT EXISTS \"{name}\" ON {schema}.documents (collection, ({}), id)",
            expr(schema, field, ty)
        );
        sqlx::query(&ddl).execute(&mut *tx).await.map_err(error::sent)?;
        self.trip();
        sqlx::query(&self.sql(
            "INSERT INTO __SCHEMA__.indexes (collection, field, ty, index_name) VALUES ($1, $2, $3, $4)",
        ))
        .bind(collection)
        .bind(field)
        .bind(type_code(ty))
        .bind(&name)
        .execute(&mut *tx)
        .await
        .map_err(error::sent)?;
        self.trip();
        tx.commit().await.map_err(error::sent)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", collection = %collection, id = %document.id))]
    async fn upsert(&self, collection: &str, document: Document) -> Result<()> {
        self.upsert_batch(collection, vec![document]).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", collection = %collection, documents = documents.len()))]
    async fn upsert_batch(&self, collection: &str, documents: Vec<Document>) -> Result<()> {
        self.begin()?;
        check_collection(collection)?;
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        self.upsert_in(&mut tx, collection, documents).await?;
        self.trip();
        tx.commit().await.map_err(error::sent)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", collection = %collection, id = %id))]
    async fn get(&self, collection: &str, id: &str) -> Result<Option<Document>> {
        self.begin()?;
        check_collection(collection)?;
        validate_name("document id", id)?;
        self.trip();
        let row = sqlx::query(&self.sql(&format!(
            "SELECT id, body, expires_at FROM __SCHEMA__.documents WHERE collection = $1 AND id = $2 AND {}",
            unexpired()
        )))
        .bind(collection)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(error::sent)?;
        row.as_ref().map(document_from_row).transpose()
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", collection = %collection, id = %id))]
    async fn delete(&self, collection: &str, id: &str) -> Result<bool> {
        self.begin()?;
        check_collection(collection)?;
        validate_name("document id", id)?;
        let mut conn = self.conn().await?;
        self.delete_in(&mut conn, collection, id).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", collection = %collection))]
    async fn query(&self, collection: &str, query: &Query) -> Result<QueryPage> {
        self.begin()?;
        check_collection(collection)?;
        let mut conn = self.conn().await?;
        let indexes = self.indexes_of(&mut conn, collection).await?;
        query.validate(&indexes)?;
        let schema = self.schema.quoted();
        let mut w = Where::new(2);
        w.filters(schema, &query.filters, &indexes)?;
        let sort = query.sort_type(&indexes);
        let (cmp, dir) = match query.direction {
            Direction::Asc => (">", "ASC"),
            Direction::Desc => ("<", "DESC"),
        };
        let order = match &sort {
            None => format!("id {dir}"),
            Some((field, ty)) => {
                let e = expr(schema, field, *ty);
                w.clauses.push(format!("{e} IS NOT NULL"));
                format!("{e} {dir}, id {dir}")
            }
        };
        if let Some(cursor) = &query.after {
            match (&sort, &cursor.value) {
                (Some((field, ty)), Some(v)) => {
                    let e = expr(schema, field, *ty);
                    let pv = w.param(v.clone());
                    let pi = w.param(Value::Str(cursor.id.clone()));
                    w.clauses
                        .push(format!("({e}, id) {cmp} ({pv}, {pi}::text COLLATE \"C\")"));
                }
                _ => {
                    let pi = w.param(Value::Str(cursor.id.clone()));
                    w.clauses.push(format!("id {cmp} {pi}::text COLLATE \"C\""));
                }
            }
        }
        let limit_param = w.next_param;
        let sql = format!(
            "SELECT id, body, expires_at FROM {schema}.documents WHERE collection = $1 AND {}{} ORDER BY {order} LIMIT ${limit_param}",
            unexpired(),
            w.sql()
        );
        self.trip();
        let q = bind_values(sqlx::query(&sql).bind(collection), &w.values)
            .bind(count_i64(query.limit).saturating_add(1));
        let rows = q.fetch_all(&mut *conn).await.map_err(error::sent)?;
        let mut documents = rows.iter().map(document_from_row).collect::<Result<Vec<_>>>()?;
        let more = documents.len() > query.limit;
        documents.truncate(query.limit);
        let next = if more {
            documents.last().map(|d| Cursor {
                value: sort.as_ref().and_then(|(f, t)| d.value(f, *t)),
                id: d.id.clone(),
            })
        } else {
            None
        };
        Ok(QueryPage { documents, next })
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", collection = %collection))]
    async fn count(&self, collection: &str, filters: &[Filter]) -> Result<u64> {
        self.begin()?;
        check_collection(collection)?;
        let mut conn = self.conn().await?;
        let indexes = self.indexes_of(&mut conn, collection).await?;
        validate_filters(filters, &indexes)?;
        let schema = self.schema.quoted();
        let mut w = Where::new(2);
        w.filters(schema, filters, &indexes)?;
        let sql = format!(
            "SELECT count(*) FROM {schema}.documents WHERE collection = $1 AND {}{}",
            unexpired(),
            w.sql()
        );
        self.trip();
        let n: i64 = bind_values(sqlx::query(&sql).bind(collection), &w.values)
            .fetch_one(&mut *conn)
            .await
            .map_err(error::sent)?
            .try_get(0)
            .map_err(error::sent)?;
        to_u64(n)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", name = %checkpoint.name, epoch = checkpoint.lease_epoch, changes = changes.len()))]
    async fn commit(&self, changes: Vec<Change>, checkpoint: CheckpointUpdate) -> Result<()> {
        self.begin()?;
        validate_name("checkpoint name", &checkpoint.name)?;
        for change in &changes {
            match change {
                Change::Upsert { collection, document } => {
                    check_collection(collection)?;
                    validate_name("document id", &document.id)?;
                }
                Change::Delete { collection, id } => {
                    check_collection(collection)?;
                    validate_name("document id", id)?;
                }
            }
        }
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        self.write_checkpoint(
            &mut tx,
            &checkpoint.name,
            &checkpoint.checkpoint,
            checkpoint.lease_epoch,
        )
        .await?;
        // Validate every change against its collection's indexes before writing any.
        let collections: BTreeSet<&str> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Upsert { collection, .. } => Some(collection.as_str()),
                Change::Delete { .. } => None,
            })
            .collect();
        let mut indexes = BTreeMap::new();
        for collection in collections {
            self.lock_collection(&mut tx, collection, false).await?;
            indexes.insert(collection.to_owned(), self.indexes_of(&mut tx, collection).await?);
        }
        let none = BTreeMap::new();
        for change in &changes {
            if let Change::Upsert { collection, document } = change {
                check_document(&self.limits, indexes.get(collection).unwrap_or(&none), document)?;
            }
        }
        // Consecutive upserts into one collection go in one statement (the last upsert of an
        // id wins, as applying them in order would); a delete or another collection ends the
        // run, so the order of changes is kept.
        let mut run: Vec<Document> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        let mut run_collection = String::new();
        for change in changes {
            match change {
                Change::Upsert { collection, document } if collection == run_collection || run.is_empty() => {
                    run_collection = collection;
                    match at.get(&document.id).and_then(|&i| run.get_mut(i)) {
                        Some(earlier) => *earlier = document,
                        None => {
                            at.insert(document.id.clone(), run.len());
                            run.push(document);
                        }
                    }
                }
                Change::Upsert { collection, document } => {
                    self.write_documents(&mut tx, &run_collection, &run).await?;
                    at.clear();
                    at.insert(document.id.clone(), 0);
                    run = vec![document];
                    run_collection = collection;
                }
                Change::Delete { collection, id } => {
                    self.write_documents(&mut tx, &run_collection, &run).await?;
                    run.clear();
                    at.clear();
                    self.delete_in(&mut tx, &collection, &id).await?;
                }
            }
        }
        self.write_documents(&mut tx, &run_collection, &run).await?;
        self.trip();
        tx.commit().await.map_err(error::sent)
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", collection = %collection))]
    async fn sweep_expired(&self, collection: &str) -> Result<u64> {
        self.begin()?;
        check_collection(collection)?;
        self.trip();
        let done = sqlx::query(&self.sql(&format!(
            "DELETE FROM __SCHEMA__.documents WHERE collection = $1 AND expires_at <= {NOW_MS}"
        )))
        .bind(collection)
        .execute(&self.pool)
        .await
        .map_err(error::sent)?;
        Ok(done.rows_affected())
    }

    #[tracing::instrument(skip_all, err(level = "debug"), fields(store = "postgres", collection = %collection))]
    async fn drop_collection(&self, collection: &str) -> Result<()> {
        self.begin()?;
        check_collection(collection)?;
        let mut tx = crate::begin(&self.pool).await.map_err(error::not_sent)?;
        self.lock_collection(&mut tx, collection, true).await?;
        self.trip();
        let names: Vec<String> = sqlx::query_scalar(
            &self.sql("DELETE FROM __SCHEMA__.indexes WHERE collection = $1 RETURNING index_name"),
        )
        .bind(collection)
        .fetch_all(&mut *tx)
        .await
        .map_err(error::sent)?;
        for name in names {
            // Our own generated names only (`ix_` + hex), never user input.
            if !name.starts_with("ix_") || !name[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::corrupt(format!("unexpected index name {name:?}")));
            }
            self.trip();
            let ddl = format!("DROP INDEX IF EXISTS {}.\"{name}\"", self.schema.quoted());
            sqlx::query(&ddl).execute(&mut *tx).await.map_err(error::sent)?;
        }
        self.trip();
        sqlx::query(&self.sql("DELETE FROM __SCHEMA__.documents WHERE collection = $1"))
            .bind(collection)
            .execute(&mut *tx)
            .await
            .map_err(error::sent)?;
        self.trip();
        tx.commit().await.map_err(error::sent)
    }
}
