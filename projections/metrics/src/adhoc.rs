//! Questions asked at query time, without a new definition: a breakdown by any expression of
//! the definition language (`--by attr.job`, `--by "ref('account', stream.account_id).attr.tier"`)
//! and conditions on the facts (`--where "attr.origin == 'API'"`). They are checked like a
//! definition's expressions (unknown event types and fields are refused with the nearest
//! name) and apply to every fact a metric counts, inputs of derived metrics included.

use std::collections::{BTreeMap, BTreeSet};

use crate::compile::{self, Ctx, Requirements};
use crate::definition::Param;
use crate::error::MetricError;
use crate::expr::{Expr, Reads};
use crate::query::Query;

/// Most conditions one query takes.
pub const CONDITIONS_MAX: usize = 8;
/// Longest expression one query takes, in bytes.
pub const EXPRESSION_MAX_BYTES: usize = 1_000;

/// The query-time expressions of a query, compiled.
#[derive(Debug, Clone, Default)]
pub(crate) struct Adhoc {
    /// Breakdown expressions by their text (the `by` entries that are not dimension names).
    pub by: BTreeMap<String, Expr>,
    /// Conditions every counted fact must meet.
    pub conditions: Vec<Expr>,
    /// What they read from the log.
    pub reads: Requirements,
}

/// Whether a `by` entry names a declared dimension (a bare lower_snake_case name) rather
/// than being an expression.
#[must_use]
pub fn is_dimension_name(by: &str) -> bool {
    !by.is_empty()
        && by
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Compiles `query`'s expressions for a metric whose facts are of `fact_types`.
///
/// # Errors
/// [`MetricError::Query`] naming the expression and what is wrong with it.
pub(crate) fn compile(query: &Query, fact_types: &BTreeSet<String>) -> Result<Adhoc, MetricError> {
    let exprs: Vec<&String> = query.by.iter().filter(|b| !is_dimension_name(b)).collect();
    if exprs.is_empty() && query.conditions.is_empty() {
        return Ok(Adhoc::default());
    }
    if query.conditions.len() > CONDITIONS_MAX {
        return Err(MetricError::Query(format!(
            "{} conditions; the limit is {CONDITIONS_MAX}",
            query.conditions.len()
        )));
    }
    let params: BTreeMap<String, Param> = BTreeMap::new();
    let mut cx = Ctx {
        reads: Reads::default(),
        params: &params,
        types: BTreeSet::new(),
        fields_read: Vec::new(),
    };
    let mut compiled = |key: &str, text: &str| {
        if text.len() > EXPRESSION_MAX_BYTES {
            return Err(MetricError::Query(format!(
                "{key} is {} bytes long; the limit is {EXPRESSION_MAX_BYTES}",
                text.len()
            )));
        }
        cx.expr(key, text)
            .map_err(|e| MetricError::Query(e.to_string()))
    };
    let mut out = Adhoc::default();
    for text in exprs {
        let e = compiled(&format!("by {text:?}"), text)?;
        out.by.insert(text.clone(), e);
    }
    for text in &query.conditions {
        let e = compiled(&format!("where {text:?}"), text).map_err(|e| {
            MetricError::Query(format!(
                "{}; a where clause is DIM=VALUE (a dimension's value) or an expression such as attr.origin == 'API'",
                e.to_string().trim_start_matches("query: ")
            ))
        })?;
        out.conditions.push(e);
    }
    let mut types = fact_types.clone();
    types.extend(cx.reads.types.iter().cloned());
    compile::check_fields(&cx.fields_read, &types)
        .map_err(|e| MetricError::Query(e.to_string()))?;
    out.reads = cx.requirements();
    Ok(out)
}
