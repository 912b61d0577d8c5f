//! Why a definition has no SQL form, naming the construct, and the errors of compiling one.

use crate::error::MetricError;

/// Why a metric definition has no SQL form over the export: the construct that has none, where
/// it is (the definition's key) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoSqlForm {
    /// A measure type the compiler does not translate.
    #[error("its measure is `{measure}`, which has no SQL form yet: {why}")]
    Measure {
        /// The measure type (`stock`, `rfm`, ...).
        measure: String,
        /// What the translation would need.
        why: String,
    },
    /// The engine cannot compute the metric either.
    #[error("the engine cannot compute it either: {needs}")]
    Unsupported {
        /// The definition's `needs`.
        needs: String,
    },
    /// An expression construct, aggregation or option without a SQL form.
    #[error("`{key}`: {construct} has no SQL form: {why}")]
    Construct {
        /// The key holding it (`exclude[1].when`, `measure.of`).
        key: String,
        /// The construct (`biz_seconds(..)`, `ref(..)`, `attr.x`).
        construct: String,
        /// Why.
        why: String,
    },
    /// A payload path the export's columns do not hold as the engine reads it.
    #[error("`{key}`: `{path}` {why}")]
    Column {
        /// The key holding the expression.
        key: String,
        /// The payload path, dotted.
        path: String,
        /// Why it has no column the engine's value can be read from.
        why: String,
    },
    /// An input metric has no SQL form.
    #[error("input `{input}` ({metric}) has no SQL form: {source}")]
    Input {
        /// The input's name (`numerator`, `current`).
        input: String,
        /// The input metric, `id@version`.
        metric: String,
        /// Why.
        source: Box<NoSqlForm>,
    },
    /// The dialect lacks a function the translation needs.
    #[error("`{key}`: {construct} has no exact form in {dialect}")]
    Dialect {
        /// The key holding it.
        key: String,
        /// What is missing.
        construct: String,
        /// The dialect.
        dialect: &'static str,
    },
}

impl NoSqlForm {
    /// The construct in a few words, for listings (`stock measure`, `ref(..)`).
    #[must_use]
    pub fn construct(&self) -> String {
        match self {
            NoSqlForm::Measure { measure, .. } => format!("{measure} measure"),
            NoSqlForm::Unsupported { .. } => "unsupported measure".to_owned(),
            NoSqlForm::Construct { construct, .. } | NoSqlForm::Dialect { construct, .. } => {
                construct.clone()
            }
            NoSqlForm::Column { .. } => "payload column".to_owned(),
            NoSqlForm::Input { source, .. } => source.construct(),
        }
    }

    pub(crate) fn construct_at(
        key: &str,
        construct: impl Into<String>,
        why: impl Into<String>,
    ) -> NoSqlForm {
        NoSqlForm::Construct {
            key: key.to_owned(),
            construct: construct.into(),
            why: why.into(),
        }
    }
}

/// Why [`super::to_sql`] gave no SQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The definition has no SQL form.
    #[error("{id}@{version} has no SQL form: {reason}")]
    NoSqlForm {
        /// The metric.
        id: String,
        /// Its version.
        version: u32,
        /// Why.
        reason: NoSqlForm,
    },
    /// An input metric is unknown, or the registry refused.
    #[error(transparent)]
    Metric(#[from] MetricError),
}
