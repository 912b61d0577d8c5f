//! The export's columns as the compiler needs them: for each event type, the column that
//! holds each payload path, with its type. The caller builds it from the export's own plan
//! (`crm_export::plan_catalog`), so this crate stays free of files and Parquet.

use std::collections::{BTreeMap, BTreeSet};

use super::error::NoSqlForm;

/// The one payload column of an event type the export has no schema of (its payload as JSON
/// text), as `crm-export` names it: the correction events the engine reads in every replay
/// (`RecordFlaggedTest`, `EventRetracted`, `RecordMerged`) are such types today.
pub const UNTYPED_PAYLOAD_COLUMN: &str = "payload_json";

/// The type of an export column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ColumnKind {
    /// Text (strings, enums).
    Text,
    /// 64-bit integers.
    Int,
    /// Numbers.
    Float,
    /// Booleans.
    Bool,
    /// An RFC 3339 date-time of the payload (UTC timestamp).
    Timestamp,
    /// A calendar date of the payload.
    Date,
    /// Lists, free-form maps and values of mixed types, as JSON text.
    Json,
}

impl ColumnKind {
    /// The type in a DuckDB cast.
    pub(crate) fn duckdb(self) -> &'static str {
        match self {
            ColumnKind::Text | ColumnKind::Json => "VARCHAR",
            ColumnKind::Int => "BIGINT",
            ColumnKind::Float => "DOUBLE",
            ColumnKind::Bool => "BOOLEAN",
            ColumnKind::Timestamp => "TIMESTAMPTZ",
            ColumnKind::Date => "DATE",
        }
    }

    /// The type's name in `dialect`.
    pub(crate) fn sql_type(self, dialect: super::Dialect) -> &'static str {
        match (dialect, self) {
            (super::Dialect::DuckDb, k) => k.duckdb(),
            (super::Dialect::Spark, ColumnKind::Text | ColumnKind::Json) => "STRING",
            (super::Dialect::Spark, ColumnKind::Timestamp) => "TIMESTAMP",
            (super::Dialect::Trino, ColumnKind::Text | ColumnKind::Json) => "VARCHAR",
            (super::Dialect::Trino, ColumnKind::Timestamp) => "TIMESTAMP(6) WITH TIME ZONE",
            (_, ColumnKind::Int) => "BIGINT",
            (_, ColumnKind::Float) => "DOUBLE",
            (_, ColumnKind::Bool) => "BOOLEAN",
            (_, ColumnKind::Date) => "DATE",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, ColumnKind::Int | ColumnKind::Float)
    }
}

/// One payload column of an event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutColumn {
    /// The column's name (`amount_minor_units`).
    pub name: String,
    /// The payload field it holds, dotted (`amount.minor_units`).
    pub path: String,
    /// Its type.
    pub kind: ColumnKind,
}

/// The payload columns of one event type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeLayout {
    /// Its columns.
    pub columns: Vec<LayoutColumn>,
    /// Payload paths that have no column (personal data), dotted.
    pub withheld: Vec<String>,
}

/// The payload columns of every event type of the export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLayout {
    types: BTreeMap<String, TypeLayout>,
}

/// A payload path resolved to its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// No event type of the row has the path: the engine reads null.
    Absent,
    /// The column and its type.
    Column(String, ColumnKind),
}

impl EventLayout {
    /// An empty layout.
    #[must_use]
    pub fn new() -> EventLayout {
        EventLayout::default()
    }

    /// Adds (or replaces) the columns of `event_type`.
    pub fn insert(&mut self, event_type: impl Into<String>, layout: TypeLayout) {
        self.types.insert(event_type.into(), layout);
    }

    /// The columns of `event_type`.
    #[must_use]
    pub fn get(&self, event_type: &str) -> Option<&TypeLayout> {
        self.types.get(event_type)
    }

    /// The column of payload path `path` on a row of any of `types`: the one column every
    /// type having the path writes it to, with the same type, and that no type without the
    /// path uses for something else; the column's type must also be the same in every event
    /// type of the export (the files are read as one union by column name).
    pub(crate) fn resolve(
        &self,
        key: &str,
        types: &BTreeSet<String>,
        path: &[String],
    ) -> Result<Resolved, NoSqlForm> {
        let dotted = path.join(".");
        let refuse = |why: String| NoSqlForm::Column {
            key: key.to_owned(),
            path: dotted.clone(),
            why,
        };
        let mut found: Vec<(&str, &LayoutColumn)> = Vec::new();
        for t in types {
            let Some(layout) = self.types.get(t) else {
                return Err(refuse(format!(
                    "reads `{t}` events, which the export has no columns of"
                )));
            };
            if let Some(w) = layout.withheld.iter().find(|w| {
                **w == dotted
                    || dotted.starts_with(&format!("{w}."))
                    || w.starts_with(&format!("{dotted}."))
            }) {
                return Err(refuse(format!(
                    "is personal data (`{w}` of `{t}`), which the export leaves out"
                )));
            }
            if let Some(c) = layout
                .columns
                .iter()
                .find(|c| c.kind == ColumnKind::Json && dotted.starts_with(&format!("{}.", c.path)))
            {
                return Err(refuse(format!(
                    "lies inside `{}` of `{t}`, a list or map the export writes as JSON text",
                    c.path
                )));
            }
            if layout
                .columns
                .iter()
                .any(|c| c.path.starts_with(&format!("{dotted}.")))
            {
                return Err(refuse(format!(
                    "is an object in `{t}` (the export flattens it into one column per field)"
                )));
            }
            if let Some(c) = layout.columns.iter().find(|c| c.path == dotted) {
                match c.kind {
                    ColumnKind::Json => {
                        return Err(refuse(format!(
                            "is a list or map in `{t}`, written as JSON text"
                        )))
                    }
                    ColumnKind::Date => {
                        return Err(refuse(format!(
                            "is a calendar date in `{t}` (the engine compares it as text)"
                        )))
                    }
                    _ => found.push((t.as_str(), c)),
                }
            }
        }
        let Some((_, first)) = found.first() else {
            return Ok(Resolved::Absent);
        };
        let name = first.name.clone();
        let mut kind = first.kind;
        for (t, c) in &found {
            if c.name != name {
                return Err(refuse(format!(
                    "is the column `{}` in `{t}` but `{name}` elsewhere",
                    c.name
                )));
            }
            kind = unify(kind, c.kind).ok_or_else(|| {
                refuse(format!(
                    "has different types in the event types it is read from (`{t}`)"
                ))
            })?;
        }
        for t in types {
            let Some(layout) = self.types.get(t) else {
                continue;
            };
            if let Some(other) = layout
                .columns
                .iter()
                .find(|c| c.name == name && c.path != dotted)
            {
                return Err(refuse(format!(
                    "shares the column `{name}` with `{}` of `{t}`",
                    other.path
                )));
            }
        }
        for (t, layout) in &self.types {
            for c in layout.columns.iter().filter(|c| c.name == name) {
                if unify(kind, c.kind).is_none() {
                    return Err(refuse(format!(
                        "is the column `{name}`, which `{t}` writes with another type; the events read as one table would change it"
                    )));
                }
            }
        }
        Ok(Resolved::Column(name, kind))
    }

    /// The column every event type writes payload path `path` to, if one does (for the
    /// engine's global rules: `is_test` of creation events, `event_id` of retractions).
    pub(crate) fn column_of(
        &self,
        event_type: Option<&str>,
        path: &str,
    ) -> Option<(String, ColumnKind)> {
        self.types
            .iter()
            .filter(|(t, _)| event_type.is_none_or(|e| e == t.as_str()))
            .flat_map(|(_, l)| l.columns.iter())
            .find(|c| c.path == path)
            .map(|c| (c.name.clone(), c.kind))
    }
}

/// The common type of two columns read as one (integers and numbers are numbers).
fn unify(a: ColumnKind, b: ColumnKind) -> Option<ColumnKind> {
    if a == b {
        Some(a)
    } else if a.numeric() && b.numeric() {
        Some(ColumnKind::Float)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, path: &str, kind: ColumnKind) -> LayoutColumn {
        LayoutColumn {
            name: name.into(),
            path: path.into(),
            kind,
        }
    }

    fn layout() -> EventLayout {
        let mut l = EventLayout::new();
        l.insert(
            "Won",
            TypeLayout {
                columns: vec![
                    column("amount_minor_units", "amount.minor_units", ColumnKind::Int),
                    column("amount_currency", "amount.currency", ColumnKind::Text),
                    column("lines", "lines", ColumnKind::Json),
                ],
                withheld: vec!["personal".into()],
            },
        );
        l.insert(
            "Lost",
            TypeLayout {
                columns: vec![column("reason", "reason", ColumnKind::Text)],
                withheld: vec![],
            },
        );
        l.insert(
            "Odd",
            TypeLayout {
                columns: vec![column("reason", "reason", ColumnKind::Int)],
                withheld: vec![],
            },
        );
        l
    }

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn paths_resolve_to_one_column_or_are_refused_with_the_reason() {
        let l = layout();
        let both: BTreeSet<String> = ["Won".to_owned(), "Lost".to_owned()].into();
        assert_eq!(
            l.resolve("of", &both, &path("amount.minor_units")),
            Ok(Resolved::Column(
                "amount_minor_units".into(),
                ColumnKind::Int
            ))
        );
        assert_eq!(
            l.resolve("of", &both, &path("nothing")),
            Ok(Resolved::Absent)
        );
        let why = |p: &str| match l.resolve("k", &both, &path(p)) {
            Err(NoSqlForm::Column { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        assert!(why("amount").contains("object"));
        assert!(why("lines").contains("JSON"));
        assert!(why("lines.cost").contains("JSON"));
        assert!(why("personal.name").contains("personal"));
        // `reason` is text in Lost but an integer in Odd: one table would change it.
        assert!(why("reason").contains("another type"));
    }
}
