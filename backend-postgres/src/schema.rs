//! Schema names: validated, quoted, and substituted into every statement (never
//! `search_path`), so two applications or two tests share one database safely.

use cqrs_core::{Error, Result};

/// The placeholder the SQL files use for the schema.
const PLACEHOLDER: &str = "__SCHEMA__";

/// A validated schema name: `[a-z_][a-z0-9_]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName {
    name: String,
    quoted: String,
}

impl SchemaName {
    /// The default schema, `cqrs`.
    pub const DEFAULT: &'static str = "cqrs";

    /// Validates a schema name.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] unless the name matches `[a-z_][a-z0-9_]{0,62}` and does not
    /// start with `pg_` (reserved by PostgreSQL).
    pub fn new(name: &str) -> Result<Self> {
        let mut chars = name.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !first_ok || !rest_ok || name.len() > 63 || name.starts_with("pg_") {
            return Err(Error::invalid(format!(
                "schema name {name:?} must match [a-z_][a-z0-9_]{{0,62}} and not start with pg_"
            )));
        }
        Ok(SchemaName {
            name: name.to_owned(),
            quoted: format!("\"{name}\""),
        })
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The quoted identifier, as statements use it.
    pub fn quoted(&self) -> &str {
        &self.quoted
    }

    /// `template` with every placeholder replaced by the quoted schema name.
    pub(crate) fn sql(&self, template: &str) -> String {
        template.replace(PLACEHOLDER, &self.quoted)
    }
}

/// Quotes a validated field name as an SQL string literal (for index expressions, where
/// binds are impossible): single quotes doubled; control characters were refused before.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers_and_refuses_the_rest() {
        for ok in ["cqrs", "_x", "t_0123456789abcdef", &"a".repeat(63)] {
            assert!(SchemaName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "1a",
            "a-b",
            "a\"b",
            "a b",
            "pg_catalog",
            &"a".repeat(64),
            "é",
        ] {
            assert!(SchemaName::new(bad).is_err(), "{bad}");
        }
        let s = SchemaName::new("app").unwrap();
        assert_eq!(
            s.sql("SELECT 1 FROM __SCHEMA__.events"),
            "SELECT 1 FROM \"app\".events"
        );
        assert_eq!(literal("it's"), "'it''s'");
    }
}
