//! The scorecard language: one TOML text per version, checked against the metric registry
//! before anything is appended.
//!
//! ```toml
//! id = "cockpit"
//! version = 1
//! name = "CRM cockpit"
//!
//! [[perspective]]
//! id = "financial"
//! name = "Financial"
//!
//! [[objective]]
//! id = "win_more"
//! perspective = "customer"
//! name = "Win more of the deals we work"
//! drives = ["grow_revenue"]          # cause → effect links of the strategy map
//!
//! [[measure]]
//! id = "win_rate"
//! objective = "win_more"
//! metric = "sales.win_rate"
//! version = 1
//! where = ["currency=USD"]          # dimension values (DIM=VALUE)
//! grain = "quarter"                  # trend periods
//! direction = "higher"
//! baseline = { from = "2016-10-01", to = "2017-01-01" }   # or a value: "60%"
//! target = "65%"
//! target_by = "2017-12-31"
//! at_risk = "62%"                    # on_track defaults to the target
//! owner = "VP Sales"
//!
//! [root]
//! id = "enterprise"
//! name = "Enterprise"
//! kind = "enterprise"
//! [root.expand]                      # one child per value of a dimension in the data
//! by = "region"
//! kind = "department"
//! name = "{value} office"
//! ```
//!
//! Values are written in the metric's unit: `65%` or `0.65` for a share, `GBP 550` for
//! money, `30 d`, `12 h` or `90 min` for a duration, a plain number otherwise.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use crm_domain::registry::nearest_name;
use crm_domain::values::Currency;
use serde::{Deserialize, Serialize};

use super::error::ScorecardError;
use super::{
    DEFINITION_SIZE_MAX_BYTES, MEASURES_MAX, NODES_MAX, OBJECTIVES_MAX, PERSPECTIVES_MAX,
    VIEWERS_MAX,
};
use crate::definition::Unit;
use crate::period::Grain;
use crate::query::WhereClause;
use crate::registry::Registry;

/// A number, or a number with its unit (`65%`, `GBP 550`, `30 d`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ValueText {
    Number(f64),
    Text(String),
}

/// A baseline: a value, or a range the engine computes the measure over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum BaselineText {
    Range { from: String, to: String },
    Value(ValueText),
}

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "MeasureDirection")]
pub enum Direction {
    Higher,
    Lower,
}

/// Level of a node of the cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Enterprise,
    Function,
    Department,
    Team,
    Individual,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Text {
    id: String,
    version: u32,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(rename = "perspective")]
    perspectives: Vec<PerspectiveText>,
    #[serde(rename = "objective")]
    objectives: Vec<ObjectiveText>,
    #[serde(rename = "measure")]
    measures: Vec<MeasureText>,
    root: NodeText,
    #[serde(default, rename = "node")]
    nodes: Vec<NodeText>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerspectiveText {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectiveText {
    id: String,
    perspective: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    drives: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeasureText {
    id: String,
    objective: String,
    #[serde(default)]
    name: Option<String>,
    metric: String,
    version: u32,
    #[serde(default, rename = "where")]
    filter: Vec<String>,
    #[serde(default)]
    grain: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    direction: Direction,
    #[serde(default)]
    baseline: Option<BaselineText>,
    target: ValueText,
    #[serde(default)]
    target_by: Option<String>,
    #[serde(default)]
    on_track: Option<ValueText>,
    at_risk: ValueText,
    #[serde(default)]
    owner: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetText {
    target: ValueText,
    #[serde(default)]
    on_track: Option<ValueText>,
    #[serde(default)]
    at_risk: Option<ValueText>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpandText {
    by: String,
    kind: NodeKind,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    viewers: Vec<String>,
    #[serde(default)]
    measures: Option<Vec<String>>,
    #[serde(default)]
    targets: BTreeMap<String, TargetText>,
    #[serde(default)]
    then: Option<Box<ExpandText>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeText {
    id: String,
    #[serde(default)]
    parent: Option<String>,
    name: String,
    kind: NodeKind,
    #[serde(default, rename = "where")]
    filter: Vec<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    viewers: Vec<String>,
    #[serde(default)]
    measures: Option<Vec<String>>,
    #[serde(default)]
    targets: BTreeMap<String, TargetText>,
    #[serde(default)]
    expand: Option<ExpandText>,
}

/// A perspective of the balanced scorecard.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Perspective {
    pub id: String,
    pub name: String,
    pub description: String,
}

/// An objective of the strategy map.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Objective {
    pub id: String,
    pub perspective: String,
    pub name: String,
    pub description: String,
    /// Objectives this one drives (cause → effect).
    pub drives: Vec<String>,
}

/// Target and thresholds, in engine units.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Goal {
    pub target: f64,
    pub on_track: f64,
    pub at_risk: f64,
    /// The currency of money values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// Where a baseline comes from.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Baseline {
    Value {
        value: f64,
    },
    Computed {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// A measure: a catalog metric at a version, read over a range with a filter, against a
/// goal.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Measure {
    pub id: String,
    pub objective: String,
    pub name: String,
    pub metric: String,
    pub version: u32,
    pub unit: Unit,
    /// Dimension values every counted fact has.
    pub filter: BTreeMap<String, String>,
    pub grain: Grain,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub direction: Direction,
    pub baseline: Option<Baseline>,
    pub goal: Goal,
    pub target_by: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    /// The dimensions the metric can be broken down by.
    pub dimensions: BTreeSet<String>,
}

/// Children generated from the data: one per value of a dimension.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Expand {
    pub by: String,
    pub kind: NodeKind,
    /// `{value}` and `{slug}` are replaced.
    pub name: String,
    pub owner: Option<String>,
    pub viewers: Vec<String>,
    /// The measures the generated nodes read (default: their parent's that apply).
    pub measures: Option<Vec<String>>,
    /// Goals of the generated nodes, by measure (default: their parent's).
    pub goals: BTreeMap<String, Goal>,
    pub then: Option<Box<Expand>>,
}

/// A node of the cascade as written (generated children come from [`Expand`]).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct NodeDef {
    pub id: String,
    pub parent: Option<String>,
    pub name: String,
    pub kind: NodeKind,
    /// This node's own restriction (its parent's applies too).
    pub filter: BTreeMap<String, String>,
    pub owner: Option<String>,
    pub viewers: Vec<String>,
    pub measures: Option<Vec<String>>,
    pub goals: BTreeMap<String, Goal>,
    pub expand: Option<Expand>,
}

/// One checked version of a scorecard.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ScorecardDefinition {
    pub id: String,
    pub version: u32,
    pub name: String,
    pub description: String,
    pub perspectives: Vec<Perspective>,
    pub objectives: Vec<Objective>,
    pub measures: Vec<Measure>,
    /// Root first, then the written nodes in order.
    pub nodes: Vec<NodeDef>,
}

impl ScorecardDefinition {
    /// Hex BLAKE3 of the checked definition's canonical JSON: any change of measures,
    /// goals, links, cascade, owners or viewers changes it.
    #[must_use]
    pub fn spec_hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// The measure `id`.
    #[must_use]
    pub fn measure(&self, id: &str) -> Option<&Measure> {
        self.measures.iter().find(|m| m.id == id)
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ScorecardError {
    ScorecardError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// ` (did you mean `x`?)` or nothing.
fn hint<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    nearest_name(given, known)
        .map(|n| format!(" (did you mean `{n}`?)"))
        .unwrap_or_default()
}

/// TOML's "unknown field `x`, expected one of `a`, `b`" with the nearest name added.
fn syntax(error: &toml::de::Error) -> ScorecardError {
    let message = error.to_string().trim().replace('\n', " ");
    let nearest = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .and_then(|(given, rest)| {
            let expected: Vec<&str> = rest
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|s| !s.is_empty())
                .collect();
            nearest_name(given, expected)
        });
    ScorecardError::Syntax {
        message: match nearest {
            Some(n) => format!("{message}; did you mean `{n}`?"),
            None => message,
        },
    }
}

/// Reads `2017-12-31` (midnight UTC) or an RFC 3339 instant.
pub(crate) fn instant(key: &str, text: &str) -> Result<DateTime<Utc>, ScorecardError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            invalid(
                key,
                format!("{text:?} is not a date; write 2017-12-31 or 2017-12-31T00:00:00Z"),
            )
        })
}

fn number(key: &str, text: &str) -> Result<f64, ScorecardError> {
    text.trim()
        .replace([',', '_'], "")
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| invalid(key, format!("{text:?} is not a number")))
}

/// A value in the engine's units for `unit` (shares as fractions, money in minor units,
/// durations in seconds), and the currency of money.
pub(crate) fn value(
    key: &str,
    given: &ValueText,
    unit: Unit,
    metric: &str,
) -> Result<(f64, Option<String>), ScorecardError> {
    let text = match given {
        ValueText::Number(n) if !n.is_finite() => {
            return Err(invalid(key, "the value is not a finite number"))
        }
        ValueText::Number(n) => match unit {
            Unit::Percent if n.abs() > 1.0 => {
                return Err(invalid(
                    key,
                    format!("{metric} is a share: write \"{n}%\" or a fraction such as 0.65"),
                ))
            }
            Unit::Money => {
                return Err(invalid(
                    key,
                    format!("{metric} is money: write the currency and amount, e.g. \"USD {n}\""),
                ))
            }
            _ => return Ok((*n, None)),
        },
        ValueText::Text(t) => t.trim(),
    };
    match unit {
        Unit::Percent => match text.strip_suffix('%') {
            Some(p) => Ok((number(key, p)? / 100.0, None)),
            None => {
                let v = number(key, text)?;
                if v.abs() > 1.0 {
                    Err(invalid(
                        key,
                        format!(
                            "{metric} is a share: write \"{text}%\" or a fraction such as 0.65"
                        ),
                    ))
                } else {
                    Ok((v, None))
                }
            }
        },
        Unit::Money => {
            let (code, amount) = text.split_once(' ').ok_or_else(|| {
                invalid(
                    key,
                    format!(
                        "{metric} is money: write the currency and amount, e.g. \"USD {text}\""
                    ),
                )
            })?;
            let currency = Currency::new(code.trim()).map_err(|e| invalid(key, e.to_string()))?;
            let scale = 10f64.powi(i32::try_from(currency.minor_unit_exponent()).unwrap_or(2));
            let major = number(key, amount)?;
            Ok(((major * scale).round(), Some(currency.to_string())))
        }
        Unit::Duration => {
            let (amount, per) = [
                (" min", 60.0),
                ("min", 60.0),
                (" d", 86_400.0),
                ("d", 86_400.0),
                (" h", 3_600.0),
                ("h", 3_600.0),
                (" s", 1.0),
                ("s", 1.0),
            ]
            .iter()
            .find_map(|(suffix, per)| text.strip_suffix(suffix).map(|a| (a, *per)))
            .unwrap_or((text, 1.0));
            Ok((number(key, amount)? * per, None))
        }
        Unit::Count | Unit::Score | Unit::Ratio => {
            let text = text.strip_suffix('×').unwrap_or(text);
            Ok((number(key, text)?, None))
        }
    }
}

/// Refuses `given` unless `known` holds it, naming the nearest and all the `what`s.
fn reference(key: &str, what: &str, given: &str, known: &[&str]) -> Result<(), ScorecardError> {
    if known.contains(&given) {
        return Ok(());
    }
    Err(invalid(
        key,
        format!(
            "no {what} `{given}`{}; the {what}s are {}",
            hint(given, known.iter().copied()),
            known.join(", ")
        ),
    ))
}

fn check_id(key: &str, id: &str) -> Result<(), ScorecardError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{id:?} is not an id: use 1 to 64 of a-z, 0-9, `_` and `-`"),
        ))
    }
}

fn check_viewers(key: &str, viewers: &[String]) -> Result<(), ScorecardError> {
    if viewers.len() > VIEWERS_MAX {
        return Err(invalid(key, format!("at most {VIEWERS_MAX} viewers")));
    }
    for v in viewers {
        let known = ["token:", "oidc:", "local:"];
        if !known.iter().any(|p| v.len() > p.len() && v.starts_with(p)) {
            return Err(invalid(
                key,
                format!("{v:?} is not a principal: write token:<name>, oidc:<subject> or local:<user>, as `crm auth whoami` shows"),
            ));
        }
    }
    Ok(())
}

fn filter(key: &str, clauses: &[String]) -> Result<BTreeMap<String, String>, ScorecardError> {
    let mut out = BTreeMap::new();
    for (i, c) in clauses.iter().enumerate() {
        match WhereClause::parse(c) {
            WhereClause::Dimension(d, v) => {
                if out.insert(d.clone(), v).is_some() {
                    return Err(invalid(
                        format!("{key}[{i}]"),
                        format!("dimension `{d}` is restricted twice"),
                    ));
                }
            }
            WhereClause::Condition(_) => {
                return Err(invalid(
                    format!("{key}[{i}]"),
                    format!("{c:?}: a scorecard restricts by dimension values, DIM=VALUE (e.g. region=East)"),
                ))
            }
        }
    }
    Ok(out)
}

fn check_dims(
    key: &str,
    filter: &BTreeMap<String, String>,
    m: &Measure,
) -> Result<(), ScorecardError> {
    for d in filter.keys() {
        if !m.dimensions.contains(d) {
            return Err(invalid(
                key,
                format!(
                    "{}@{} has no dimension `{d}`{}; its dimensions are {}",
                    m.metric,
                    m.version,
                    hint(d, m.dimensions.iter().map(String::as_str)),
                    m.dimensions.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn goal(
    key: &str,
    m: (&str, Unit, Direction),
    target: &ValueText,
    on_track: Option<&ValueText>,
    at_risk: Option<&ValueText>,
    inherited: Option<&Goal>,
) -> Result<Goal, ScorecardError> {
    let (metric, unit, direction) = m;
    let (target_v, currency) = value(&format!("{key}target"), target, unit, metric)?;
    let on_track_v = match on_track {
        Some(v) => value(&format!("{key}on_track"), v, unit, metric)?.0,
        None => target_v,
    };
    let at_risk_v = match (at_risk, inherited) {
        (Some(v), _) => value(&format!("{key}at_risk"), v, unit, metric)?.0,
        // A node's own target moves the parent's thresholds by the same amount.
        (None, Some(parent)) => parent.at_risk + (on_track_v - parent.on_track),
        (None, None) => return Err(invalid(format!("{key}at_risk"), "missing")),
    };
    let ordered = match direction {
        Direction::Higher => at_risk_v <= on_track_v,
        Direction::Lower => at_risk_v >= on_track_v,
    };
    if !ordered {
        return Err(invalid(
            format!("{key}at_risk"),
            match direction {
                Direction::Higher => "with direction = \"higher\", at_risk must not be above on_track (the target unless given)",
                Direction::Lower => "with direction = \"lower\", at_risk must not be below on_track (the target unless given)",
            },
        ));
    }
    Ok(Goal {
        target: target_v,
        on_track: on_track_v,
        at_risk: at_risk_v,
        currency,
    })
}

/// Goals of a node or of generated nodes, by measure; thresholds not given move with the
/// target.
fn goals(
    key: &str,
    targets: &BTreeMap<String, TargetText>,
    measures: &[Measure],
) -> Result<BTreeMap<String, Goal>, ScorecardError> {
    let mids: Vec<&str> = measures.iter().map(|m| m.id.as_str()).collect();
    let mut out = BTreeMap::new();
    for (mid, g) in targets {
        let Some(m) = measures.iter().find(|m| m.id == *mid) else {
            return Err(invalid(
                key,
                format!("no measure `{mid}`{}", hint(mid, mids.iter().copied())),
            ));
        };
        out.insert(
            mid.clone(),
            goal(
                &format!("{key}.{mid}."),
                (&m.metric, m.unit, m.direction),
                &g.target,
                g.on_track.as_ref(),
                g.at_risk.as_ref(),
                Some(&m.goal),
            )?,
        );
    }
    Ok(out)
}

fn template_ok(key: &str, text: &str) -> Result<(), ScorecardError> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| invalid(key, format!("{text:?}: `{{` without `}}`")))?;
        let name = &after[..close];
        if name != "value" && name != "slug" {
            return Err(invalid(
                key,
                format!(
                    "{text:?}: unknown placeholder {{{name}}}{}; the placeholders are {{value}} and {{slug}}",
                    hint(name, ["value", "slug"])
                ),
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

fn expand(
    key: &str,
    e: &ExpandText,
    depth: usize,
    measures: &[Measure],
) -> Result<Expand, ScorecardError> {
    let mids: Vec<&str> = measures.iter().map(|m| m.id.as_str()).collect();
    if depth > 4 {
        return Err(invalid(key, "at most 4 levels of `then`"));
    }
    for m in e.measures.iter().flatten() {
        if !mids.contains(&m.as_str()) {
            return Err(invalid(
                format!("{key}.measures"),
                format!("no measure `{m}`{}", hint(m, mids.iter().copied())),
            ));
        }
    }
    let name = e.name.clone().unwrap_or_else(|| "{value}".to_owned());
    template_ok(&format!("{key}.name"), &name)?;
    if let Some(o) = &e.owner {
        template_ok(&format!("{key}.owner"), o)?;
    }
    for v in &e.viewers {
        template_ok(&format!("{key}.viewers"), v)?;
    }
    let sample: Vec<String> = e
        .viewers
        .iter()
        .map(|v| v.replace("{value}", "x").replace("{slug}", "x"))
        .collect();
    check_viewers(&format!("{key}.viewers"), &sample)?;
    Ok(Expand {
        by: e.by.clone(),
        kind: e.kind,
        name,
        owner: e.owner.clone(),
        viewers: e.viewers.clone(),
        measures: e.measures.clone(),
        goals: goals(&format!("{key}.targets"), &e.targets, measures)?,
        then: match &e.then {
            Some(t) => Some(Box::new(expand(
                &format!("{key}.then"),
                t,
                depth + 1,
                measures,
            )?)),
            None => None,
        },
    })
}

/// Every dimension an expansion (and its `then`s) breaks down by.
fn expand_dims(e: &Expand) -> Vec<&str> {
    let mut out = vec![e.by.as_str()];
    if let Some(t) = &e.then {
        out.extend(expand_dims(t));
    }
    out
}

/// Parses and checks one scorecard version against the metrics of `registry`.
///
/// # Errors
/// [`ScorecardError::Syntax`] (not TOML, a key unknown or of the wrong type) or
/// [`ScorecardError::Invalid`] naming the key and what to write instead.
pub fn parse_scorecard(
    text: &str,
    registry: &Registry,
) -> Result<ScorecardDefinition, ScorecardError> {
    if text.len() > DEFINITION_SIZE_MAX_BYTES {
        return Err(invalid(
            "(file)",
            format!(
                "the definition is {} bytes, the limit is {DEFINITION_SIZE_MAX_BYTES}",
                text.len()
            ),
        ));
    }
    let t: Text = toml::from_str(text).map_err(|e| syntax(&e))?;
    check_id("id", &t.id)?;
    if t.version == 0 {
        return Err(invalid("version", "versions start at 1"));
    }
    if t.perspectives.is_empty() || t.perspectives.len() > PERSPECTIVES_MAX {
        return Err(invalid(
            "perspective",
            format!("give 1 to {PERSPECTIVES_MAX} [[perspective]] tables"),
        ));
    }
    if t.objectives.len() > OBJECTIVES_MAX {
        return Err(invalid(
            "objective",
            format!("at most {OBJECTIVES_MAX} objectives"),
        ));
    }
    if t.measures.is_empty() || t.measures.len() > MEASURES_MAX {
        return Err(invalid(
            "measure",
            format!("give 1 to {MEASURES_MAX} [[measure]] tables"),
        ));
    }
    if t.nodes.len() + 1 > NODES_MAX {
        return Err(invalid("node", format!("at most {NODES_MAX} nodes")));
    }
    let mut perspectives = Vec::new();
    for (i, p) in t.perspectives.iter().enumerate() {
        check_id(&format!("perspective[{i}].id"), &p.id)?;
        if perspectives.iter().any(|q: &Perspective| q.id == p.id) {
            return Err(invalid(
                format!("perspective[{i}].id"),
                format!("`{}` is given twice", p.id),
            ));
        }
        perspectives.push(Perspective {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
        });
    }
    let pids: Vec<&str> = perspectives.iter().map(|p| p.id.as_str()).collect();
    let oids: Vec<&str> = t.objectives.iter().map(|o| o.id.as_str()).collect();
    let mut objectives = Vec::new();
    for (i, o) in t.objectives.iter().enumerate() {
        let key = format!("objective[{i}]");
        check_id(&format!("{key}.id"), &o.id)?;
        if oids.iter().filter(|x| **x == o.id).count() > 1 {
            return Err(invalid(
                format!("{key}.id"),
                format!("`{}` is given twice", o.id),
            ));
        }
        reference(
            &format!("{key}.perspective"),
            "perspective",
            &o.perspective,
            &pids,
        )?;
        for d in &o.drives {
            if !oids.contains(&d.as_str()) || *d == o.id {
                return Err(invalid(
                    format!("{key}.drives"),
                    format!(
                        "`{d}` is not another objective{}; the objectives are {}",
                        hint(d, oids.iter().copied()),
                        oids.join(", ")
                    ),
                ));
            }
        }
        objectives.push(Objective {
            id: o.id.clone(),
            perspective: o.perspective.clone(),
            name: o.name.clone(),
            description: o.description.clone(),
            drives: o.drives.clone(),
        });
    }
    let scorecard_from = t.from.as_deref().map(|f| instant("from", f)).transpose()?;
    let scorecard_to = t.to.as_deref().map(|f| instant("to", f)).transpose()?;
    let mut measures: Vec<Measure> = Vec::new();
    for (i, m) in t.measures.iter().enumerate() {
        let key = format!("measure[{i}]");
        check_id(&format!("{key}.id"), &m.id)?;
        if measures.iter().any(|x| x.id == m.id) {
            return Err(invalid(
                format!("{key}.id"),
                format!("`{}` is given twice", m.id),
            ));
        }
        reference(
            &format!("{key}.objective"),
            "objective",
            &m.objective,
            &oids,
        )?;
        let def = registry.get(&m.metric, Some(m.version)).map_err(|e| {
            let ids: Vec<String> = registry.list().into_iter().map(|s| s.id).collect();
            let near = hint(&m.metric, ids.iter().map(String::as_str));
            invalid(format!("{key}.metric"), format!("{e}{near}"))
        })?;
        let unit = def.definition.unit;
        let grain = match &m.grain {
            Some(g) => g.parse::<Grain>().map_err(|_| {
                invalid(
                    format!("{key}.grain"),
                    format!("{g:?} is not a period; write day, week, month, quarter, year or all"),
                )
            })?,
            None => Grain::Month,
        };
        let from = match &m.from {
            Some(f) => Some(instant(&format!("{key}.from"), f)?),
            None => scorecard_from,
        };
        let to = match &m.to {
            Some(f) => Some(instant(&format!("{key}.to"), f)?),
            None => scorecard_to,
        };
        if let (Some(f), Some(t)) = (from, to) {
            if f >= t {
                return Err(invalid(format!("{key}.to"), "`to` must be after `from`"));
            }
        }
        let baseline = match &m.baseline {
            None => None,
            Some(BaselineText::Value(v)) => Some(Baseline::Value {
                value: value(&format!("{key}.baseline"), v, unit, &m.metric)?.0,
            }),
            Some(BaselineText::Range { from, to }) => {
                let f = instant(&format!("{key}.baseline.from"), from)?;
                let t = instant(&format!("{key}.baseline.to"), to)?;
                if f >= t {
                    return Err(invalid(
                        format!("{key}.baseline.to"),
                        "`to` must be after `from`",
                    ));
                }
                Some(Baseline::Computed { from: f, to: t })
            }
        };
        let goal = goal(
            &format!("{key}."),
            (&m.metric, unit, m.direction),
            &m.target,
            m.on_track.as_ref(),
            Some(&m.at_risk),
            None,
        )?;
        let measure = Measure {
            id: m.id.clone(),
            objective: m.objective.clone(),
            name: m
                .name
                .clone()
                .unwrap_or_else(|| def.definition.name.clone()),
            metric: m.metric.clone(),
            version: m.version,
            unit,
            filter: filter(&format!("{key}.where"), &m.filter)?,
            grain,
            from,
            to,
            direction: m.direction,
            baseline,
            goal,
            target_by: m
                .target_by
                .as_deref()
                .map(|t| instant(&format!("{key}.target_by"), t))
                .transpose()?,
            owner: m.owner.clone(),
            dimensions: def.definition.dimensions().into_keys().collect(),
        };
        check_dims(&format!("{key}.where"), &measure.filter, &measure)?;
        measures.push(measure);
    }
    let mids: Vec<&str> = measures.iter().map(|m| m.id.as_str()).collect();
    let all_dims: BTreeSet<&str> = measures
        .iter()
        .flat_map(|m| m.dimensions.iter().map(String::as_str))
        .collect();
    let mut nodes: Vec<NodeDef> = Vec::new();
    for (i, n) in std::iter::once(&t.root).chain(t.nodes.iter()).enumerate() {
        let key = if i == 0 {
            "root".to_owned()
        } else {
            format!("node[{}]", i - 1)
        };
        check_id(&format!("{key}.id"), &n.id)?;
        if nodes.iter().any(|x| x.id == n.id) {
            return Err(invalid(
                format!("{key}.id"),
                format!("`{}` is given twice", n.id),
            ));
        }
        match (&n.parent, i) {
            (Some(_), 0) => {
                return Err(invalid("root.parent", "the root has no parent"));
            }
            (None, 1..) => {
                return Err(invalid(
                    format!("{key}.parent"),
                    format!("missing; the root is `{}`", t.root.id),
                ));
            }
            (Some(p), _) if !nodes.iter().any(|x| x.id == *p) => {
                let known: Vec<&str> = nodes.iter().map(|x| x.id.as_str()).collect();
                return Err(invalid(
                    format!("{key}.parent"),
                    format!(
                        "no node `{p}` above this one{}; write nodes after their parent",
                        hint(p, known)
                    ),
                ));
            }
            _ => {}
        }
        check_viewers(&format!("{key}.viewers"), &n.viewers)?;
        let own = filter(&format!("{key}.where"), &n.filter)?;
        for d in own.keys() {
            if !all_dims.contains(d.as_str()) {
                return Err(invalid(
                    format!("{key}.where"),
                    format!(
                        "no measure's metric has dimension `{d}`{}",
                        hint(d, all_dims.iter().copied())
                    ),
                ));
            }
        }
        if let Some(list) = &n.measures {
            for m in list {
                if !mids.contains(&m.as_str()) {
                    return Err(invalid(
                        format!("{key}.measures"),
                        format!("no measure `{m}`{}", hint(m, mids.iter().copied())),
                    ));
                }
            }
        }
        let goals = goals(&format!("{key}.targets"), &n.targets, &measures)?;
        let expand = match &n.expand {
            Some(e) => {
                let e = expand(&format!("{key}.expand"), e, 0, &measures)?;
                for d in expand_dims(&e) {
                    if !all_dims.contains(d) {
                        return Err(invalid(
                            format!("{key}.expand.by"),
                            format!(
                                "no measure's metric has dimension `{d}`{}",
                                hint(d, all_dims.iter().copied())
                            ),
                        ));
                    }
                }
                Some(e)
            }
            None => None,
        };
        nodes.push(NodeDef {
            id: n.id.clone(),
            parent: n.parent.clone(),
            name: n.name.clone(),
            kind: n.kind,
            filter: own,
            owner: n.owner.clone(),
            viewers: n.viewers.clone(),
            measures: n.measures.clone(),
            goals,
            expand,
        });
    }
    Ok(ScorecardDefinition {
        id: t.id,
        version: t.version,
        name: t.name,
        description: t.description,
        perspectives,
        objectives,
        measures,
        nodes,
    })
}
