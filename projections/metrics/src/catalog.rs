//! The built-in catalog: every metric of the CRM's business catalog as a versioned
//! definition in the definition language, one TOML file per domain under
//! `projections/metrics/catalog/`, embedded in the binary. Entries the language cannot express
//! yet are `type = "unsupported"` with what they need, so `list` still shows them and
//! evaluation says why there is no figure.
//!
//! [`document`] renders the catalog as the Markdown document checked in as
//! `projections/metrics/CATALOG.md` (the test `tests/catalog_doc.rs` keeps it current).

use std::fmt::Write as _;

use serde::Serialize;

use crate::definition::{parse_catalog, Domain, FactsSpec, MeasureSpec, MetricDefinition};
use crate::error::DefinitionError;
use crate::registry::{DefinitionSource, MetricSummary, Registry};

/// The catalog files, by name.
pub const CATALOG_FILES: &[(&str, &str)] = &[
    ("marketing.toml", include_str!("../catalog/marketing.toml")),
    ("sales.toml", include_str!("../catalog/sales.toml")),
    ("service.toml", include_str!("../catalog/service.toml")),
    ("customer.toml", include_str!("../catalog/customer.toml")),
    (
        "relationship.toml",
        include_str!("../catalog/relationship.toml"),
    ),
];

/// The command that rewrites `CATALOG.md` from the definitions.
pub const REFRESH_COMMAND: &str = "UPDATE_CATALOG=1 cargo test -p crm-metrics --test catalog_doc";

/// Every built-in definition.
///
/// # Errors
/// A catalog file that does not validate, naming the file and key.
pub fn definitions() -> Result<Vec<MetricDefinition>, DefinitionError> {
    let mut out = Vec::new();
    for (file, text) in CATALOG_FILES {
        let defs = parse_catalog(text).map_err(|e| match e {
            DefinitionError::Syntax { message } => DefinitionError::Syntax {
                message: format!("{file}: {message}"),
            },
            DefinitionError::Invalid { key, reason } => DefinitionError::Invalid {
                key: format!("{file}: {key}"),
                reason,
            },
            other => other,
        })?;
        out.extend(defs);
    }
    Ok(out)
}

const DOMAINS: [Domain; 5] = [
    Domain::Marketing,
    Domain::Sales,
    Domain::Service,
    Domain::Customer,
    Domain::Relationship,
];

/// The part of a definition shown as TOML: its facts and its measure.
#[derive(Serialize)]
struct Computation<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    facts: Option<&'a FactsSpec>,
    measure: &'a MeasureSpec,
}

/// The built-in definitions of `registry` as a Markdown document: for every metric its
/// default version, and for every version its name, description, formula, facts and
/// measure, the events it reads, its dimensions and its exclusion rules with their reason
/// codes. Definitions from the log are left out. A pure function of the definitions: the
/// same catalog gives the same bytes.
#[must_use]
pub fn document(registry: &Registry) -> String {
    let summaries: Vec<MetricSummary> = registry
        .list()
        .into_iter()
        .filter(|s| s.source == DefinitionSource::BuiltIn)
        .collect();
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write_document(&mut out, registry, &summaries);
    out
}

fn write_document(
    out: &mut String,
    registry: &Registry,
    summaries: &[MetricSummary],
) -> std::fmt::Result {
    writeln!(out, "# Metric catalog")?;
    writeln!(out)?;
    writeln!(
        out,
        "The built-in metric definitions of `crm-metrics`, generated from \
         `projections/metrics/catalog/*.toml` by `crm_metrics::catalog::document`. Do not edit \
         this file: change the definitions, then refresh it with `{REFRESH_COMMAND}`."
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "A metric is a versioned definition: a published version is never changed (a new \
         meaning is a new version, a new wording a revision of the same one), and the \
         default version is served when a query names none. Definitions appended to the log \
         (`MetricDefined` events) join these in the registry. For each version: the facts \
         (the events counted), the measure computed from them, the other events and \
         reference streams read (for dimensions, rules and lookups), the dimensions a figure \
         can be broken down by, and the exclusion rules: a fact matching a rule leaves the \
         figure and is counted under the rule's reason code (the first matching rule wins)."
    )?;
    writeln!(out)?;
    writeln!(out, "## Contents")?;
    writeln!(out)?;
    writeln!(out, "| Domain | Metrics | Definitions |")?;
    writeln!(out, "| --- | ---: | ---: |")?;
    for domain in DOMAINS {
        let of_domain: Vec<&MetricSummary> =
            summaries.iter().filter(|s| s.domain == domain).collect();
        let mut ids: Vec<&str> = of_domain.iter().map(|s| s.id.as_str()).collect();
        ids.dedup();
        writeln!(
            out,
            "| [{}](#{}) | {} | {} |",
            domain.as_str(),
            domain.as_str(),
            ids.len(),
            of_domain.len()
        )?;
    }
    for domain in DOMAINS {
        write_domain(out, registry, domain, summaries)?;
    }
    Ok(())
}

fn write_domain(
    out: &mut String,
    registry: &Registry,
    domain: Domain,
    summaries: &[MetricSummary],
) -> std::fmt::Result {
    let of_domain: Vec<&MetricSummary> = summaries.iter().filter(|s| s.domain == domain).collect();
    writeln!(out)?;
    writeln!(out, "## {}", domain.as_str())?;
    writeln!(out)?;
    writeln!(out, "| Metric | Name | Versions | Default |")?;
    writeln!(out, "| --- | --- | --- | ---: |")?;
    let mut ids: Vec<&str> = of_domain.iter().map(|s| s.id.as_str()).collect();
    ids.dedup();
    for id in &ids {
        let versions: Vec<&&MetricSummary> = of_domain.iter().filter(|s| s.id == *id).collect();
        let default = versions.iter().find(|s| s.is_default).or(versions.first());
        let list: Vec<String> = versions.iter().map(|s| s.version.to_string()).collect();
        writeln!(
            out,
            "| [`{id}`](#{}) | {} | {} | {} |",
            anchor(id),
            cell(default.map_or("", |s| s.name.as_str())),
            list.join(", "),
            default.map_or(String::new(), |s| s.version.to_string())
        )?;
    }
    for id in ids {
        writeln!(out)?;
        writeln!(out, "### {id}")?;
        writeln!(out)?;
        match registry.default_version(id) {
            Some(v) => writeln!(out, "Default version: {v}.")?,
            None => writeln!(out, "No default version.")?,
        }
        for summary in of_domain.iter().filter(|s| s.id == id) {
            if let Ok(m) = registry.get(id, Some(summary.version)) {
                write_version(out, summary, &m.definition)?;
            }
        }
    }
    Ok(())
}

fn write_version(out: &mut String, s: &MetricSummary, def: &MetricDefinition) -> std::fmt::Result {
    writeln!(out)?;
    let default = if s.is_default { " (default)" } else { "" };
    writeln!(out, "#### {}@{}{default}: {}", s.id, s.version, s.name)?;
    writeln!(out)?;
    if !def.description.is_empty() {
        writeln!(out, "{}", one_line(&def.description))?;
        writeln!(out)?;
    }
    let unit = serde_json::to_value(def.unit).unwrap_or_default();
    let kind = serde_json::to_value(def.kind).unwrap_or_default();
    let measure = serde_json::to_value(def.measure.kind).unwrap_or_default();
    writeln!(
        out,
        "- Unit `{}`, kind {}, measure `{}`",
        unit.as_str().unwrap_or(""),
        kind.as_str().unwrap_or(""),
        measure.as_str().unwrap_or("")
    )?;
    if !def.formula.is_empty() {
        writeln!(out, "- Formula: `{}`", one_line(&def.formula))?;
    }
    if let Some(model) = &def.read_model {
        writeln!(out, "- Read model: {model}")?;
    }
    if let Some(time) = &def.time {
        writeln!(out, "- Period by: `{time}`")?;
    }
    writeln!(out, "- Facts: {}", code_list(&s.needs, "none"))?;
    writeln!(out, "- Also reads: {}", code_list(&s.reads, "nothing else"))?;
    if !s.inputs.is_empty() {
        writeln!(out, "- Built from: {}", code_list(&s.inputs, ""))?;
    }
    if !def.params.is_empty() {
        let params: Vec<String> = def
            .params
            .iter()
            .map(|(k, v)| format!("{k} = {}", serde_json::to_string(v).unwrap_or_default()))
            .collect();
        writeln!(out, "- Params: {}", code_list(&params, ""))?;
    }
    if let Some(needs) = &s.unsupported {
        writeln!(out, "- Not computable yet: needs {}", one_line(needs))?;
    }
    writeln!(out, "- Spec hash: `{}`", s.spec_hash)?;
    writeln!(out)?;
    if def.dims.is_empty() {
        writeln!(out, "Dimensions: none.")?;
    } else {
        writeln!(out, "| Dimension | Expression |")?;
        writeln!(out, "| --- | --- |")?;
        for (name, expr) in &def.dims {
            writeln!(out, "| {name} | `{}` |", cell(expr))?;
        }
    }
    writeln!(out)?;
    if def.exclude.is_empty() {
        writeln!(out, "Exclusions: none.")?;
    } else {
        let notes = def.exclude.iter().any(|r| !r.note.is_empty());
        if notes {
            writeln!(out, "| Reason code | Rule | Note |")?;
            writeln!(out, "| --- | --- | --- |")?;
        } else {
            writeln!(out, "| Reason code | Rule |")?;
            writeln!(out, "| --- | --- |")?;
        }
        for rule in &def.exclude {
            write!(out, "| `{}` | `{}` |", rule.code, cell(&rule.when))?;
            if notes {
                write!(out, " {} |", cell(&rule.note))?;
            }
            writeln!(out)?;
        }
    }
    writeln!(out)?;
    let computation = Computation {
        facts: def.facts.as_ref(),
        measure: &def.measure,
    };
    let toml = toml::to_string(&computation).unwrap_or_default();
    writeln!(out, "```toml")?;
    writeln!(out, "{}", toml.trim_end())?;
    writeln!(out, "```")?;
    Ok(())
}

/// `a.b_c` → the GitHub anchor of the heading `### a.b_c`.
fn anchor(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

/// Text on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text for a table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    one_line(text).replace('|', "\\|")
}

/// `a`, `b` (or `empty` when there is none).
fn code_list(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        return empty.to_owned();
    }
    items
        .iter()
        .map(|i| match i.strip_suffix(" streams") {
            Some(category) => format!("`{category}` streams"),
            None => format!("`{}`", i.replace('`', "")),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
