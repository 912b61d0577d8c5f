//! A metric definition as written (TOML) and stored (`MetricDefined`): the fields of
//! a metric (id, version, name, domain, unit, kind, formula, params, dimensions, exclusions)
//! plus the measure in the definition language. [`parse_definition`] reads
//! and validates one; [`MetricDefinition::spec_hash`] is the BLAKE3 hash of its canonical
//! form (the fields that can change a value; wording does not).
//!
//! A definition file holds one metric at top level; a catalog file holds many as
//! `[[metric]]` tables. Example (the win rate):
//!
//! ```toml
//! id = "sales.win_rate"
//! version = 1
//! name = "Win rate"
//! domain = "sales"
//! unit = "%"
//! kind = "flow"
//! formula = "won_P / (won_P + lost_P)"
//! time = "occurred_at"
//! [dims]
//! owner = "stream.owner"
//! [facts]
//! events = ["OpportunityWon", "OpportunityLost"]
//! [[exclude]]
//! code = "VOIDED"
//! when = "has('OpportunityVoided')"
//! [[exclude]]
//! code = "OUT_OF_SCOPE"
//! when = "stream.kind == 'renewal'"
//! [[exclude]]
//! code = "REOPENED"
//! when = "later('OpportunityReopened')"
//! [measure]
//! type = "simple"
//! agg = "share"
//! when = "event.type == 'OpportunityWon'"
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compile;
use crate::error::DefinitionError;
use crate::period::Grain;

/// Largest definition text accepted (it travels in one event).
pub const DEFINITION_SIZE_MAX_BYTES: usize = 32 * 1024;

/// The domain prefix of an id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    Marketing,
    Sales,
    Service,
    Customer,
    Relationship,
}

impl Domain {
    /// The id prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Marketing => "marketing",
            Domain::Sales => "sales",
            Domain::Service => "service",
            Domain::Customer => "customer",
            Domain::Relationship => "relationship",
        }
    }
}

/// Unit of the figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Unit {
    #[serde(rename = "count")]
    Count,
    /// A share, kept as numerator and denominator.
    #[serde(rename = "%")]
    Percent,
    /// Integer minor units of one currency.
    #[serde(rename = "money")]
    Money,
    /// Seconds.
    #[serde(rename = "duration")]
    Duration,
    #[serde(rename = "score")]
    Score,
    /// A multiple (×).
    #[serde(rename = "ratio")]
    Ratio,
}

/// Flow, stock, cohort or per-entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Flow,
    Stock,
    Cohort,
    PerEntity,
}

/// The metric types of the definition language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MeasureType {
    /// An aggregation over a filtered set of facts.
    Simple,
    /// Numerator and denominator, each with its own facts and filter.
    Ratio,
    /// An aggregation over a trailing window or period-to-date.
    Cumulative,
    /// An expression over other metrics, possibly at an offset.
    Derived,
    /// An entity does a base event, then a conversion event within a window.
    Conversion,
    /// Time between two events of the same stream.
    Duration,
    /// State at an instant (spells opened and closed by events), and stock pairs.
    Stock,
    /// Entities (the facts' `entity`, default the stream) with a counted fact in the period:
    /// the share of them with at least `min_facts` counted facts there (repeat purchasers).
    Entities,
    /// Recency, frequency and monetary quintile scores per entity at each period's end,
    /// counted per cell: the breakdowns `rfm` (`5-5-5`), `r`, `f` and `m` are the scores.
    Rfm,
    /// Named in the catalog, not expressible in this language yet; evaluation says why.
    Unsupported,
}

/// Aggregations of simple, cumulative, ratio-input and duration measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Agg {
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    Median,
    Percentile,
    /// Facts matching `when` ÷ all facts.
    Share,
    /// Σ `of` ÷ Σ `per`.
    RatioOfSums,
    /// Σ `of` ÷ distinct `per` (a mean per entity).
    MeanPer,
}

/// Which of the matching facts of one entity count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    #[default]
    All,
    First,
    Last,
}

/// Calendar or business clock for durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    #[default]
    Calendar,
    Business,
}

/// A named constant (`params`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Param {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// The facts a measure counts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactsSpec {
    /// Event types whose events are candidate facts.
    pub events: Vec<String>,
    /// Selection: facts failing it are not considered at all.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Per entity, count all matching facts, or only the first or last.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pick: Pick,
    /// Reason code recorded for facts `pick` leaves out (default `NOT_PICKED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pick_code: Option<String>,
    /// Entity key for `pick` (default: the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
}

/// An exclusion rule: the first that matches is recorded with its reason code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Reason code, e.g. `VOIDED`.
    pub code: String,
    /// Condition on the fact.
    pub when: String,
    /// Human note (wording, not part of the hash).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// An input of a ratio: another metric, or inline facts with their own filter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub pick: Pick,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agg: Option<Agg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<RuleSpec>,
}

/// An input of a derived metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRef {
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Periods back: 1 = the previous period (growth), 4 with quarters = same quarter last year.
    #[serde(default, skip_serializing_if = "is_default")]
    pub offset: u32,
}

/// The measure: what is computed from the facts. Which keys apply depends on `type`
/// (validation names a key that does not belong).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasureSpec {
    #[serde(rename = "type")]
    pub kind: MeasureType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agg: Option<Agg>,
    /// Value of a fact (sum, avg, ...; numerator of `ratio_of_sums`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    /// Numerator condition of `share`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Denominator value of `ratio_of_sums`, entity of `mean_per`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
    /// Percentile in 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
    /// `share` only: serve the numerator count as the value (denominator beside it).
    #[serde(default, skip_serializing_if = "is_default")]
    pub value_is_count: bool,
    /// Currency of a money value (e.g. `payload.amount.currency`); mixed currencies give no figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Code for included facts whose value is null (default `NO_AMOUNT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numerator: Option<InputSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<InputSpec>,
    /// Trailing window (`90d`) of cumulative; conversion window of conversion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Period-to-date grain of cumulative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_date: Option<Grain>,
    /// Formula of derived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputRef>,
    /// Conversion events (conversion).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conversion: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_where: Option<String>,
    /// Entity key on conversion events (default: same as the base's entity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_entity: Option<String>,
    /// `rate` or `count` (conversion); stock calculation (stock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calc: Option<String>,
    /// Start events (duration), looked up in the fact's stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_where: Option<String>,
    /// `first` (default) or `last` start event before the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_pick: Option<Pick>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<Clock>,
    /// Events that pause / resume the duration clock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pause: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resume: Vec<String>,
    /// Entity key of the base (conversion) or of the spells (stock; default the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Events opening a spell (stock).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opens: Vec<String>,
    /// Events closing a spell (stock).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closes: Vec<String>,
    /// When a close takes effect (default its `occurred_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_at: Option<String>,
    /// Open events whose spell lasts a fixed time (`{ OrderPlaced = "365d" }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lasts: BTreeMap<String, String>,
    /// Events that set the entity's value and the expression (`{ SubscriptionStarted = "payload.monthly_amount.minor_units" }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub value: BTreeMap<String, String>,
    /// Why an `unsupported` measure cannot be computed yet, and what it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<String>,
    /// `entities` only: counted facts an entity needs in the period to be in the numerator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_facts: Option<u32>,
}

/// The breakdowns an `rfm` measure fills (name, meaning).
pub const RFM_DIMENSIONS: [(&str, &str); 4] = [
    ("rfm", "(scored by the measure) R-F-M cell, e.g. 5-5-5"),
    (
        "r",
        "(scored by the measure) recency quintile, 5 = most recent",
    ),
    (
        "f",
        "(scored by the measure) frequency quintile, 5 = most facts",
    ),
    (
        "m",
        "(scored by the measure) monetary quintile, 5 = largest sum",
    ),
];

/// A metric definition; the built-in ones are documented in the metric catalog,
/// `projections/metrics/CATALOG.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDefinition {
    pub id: String,
    pub version: u32,
    pub name: String,
    pub domain: Domain,
    pub unit: Unit,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_model: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Human formula.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub formula: String,
    /// The version served when none is named.
    #[serde(default, skip_serializing_if = "is_default")]
    pub default: bool,
    /// The timestamp that puts a fact into a period (expression; default `occurred_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Param>,
    /// Allowed breakdowns: name → expression.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dims: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<FactsSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<RuleSpec>,
    pub measure: MeasureSpec,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The part of a definition that decides values: what the spec hash covers.
#[derive(Serialize)]
struct Semantics<'a> {
    id: &'a str,
    version: u32,
    unit: Unit,
    kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: &'a Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    params: &'a BTreeMap<String, Param>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    dims: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    facts: &'a Option<FactsSpec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<(&'a str, &'a str)>,
    measure: &'a MeasureSpec,
}

impl MetricDefinition {
    /// What a query may break the metric down or filter it by: the declared dimensions and
    /// those its measure fills (an `rfm` measure's scores), name → expression or meaning.
    #[must_use]
    pub fn dimensions(&self) -> BTreeMap<String, String> {
        let mut out = self.dims.clone();
        if self.measure.kind == MeasureType::Rfm {
            for (name, meaning) in RFM_DIMENSIONS {
                out.insert(name.to_owned(), meaning.to_owned());
            }
        }
        out
    }

    /// `id@version`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    /// Hex BLAKE3 of the canonical JSON of the semantic fields: id, version, unit, kind, time,
    /// params, dims, facts, exclusion rules (code and condition) and measure. Wording (name,
    /// description, formula, notes, read model, default flag) is left out: changing it is
    /// not a new version. Maps are ordered and absent keys are omitted, so the hash
    /// depends on meaning, not on the layout of the TOML text.
    pub fn spec_hash(&self) -> String {
        let semantics = Semantics {
            id: &self.id,
            version: self.version,
            unit: self.unit,
            kind: self.kind,
            time: &self.time,
            params: &self.params,
            dims: &self.dims,
            facts: &self.facts,
            exclude: self
                .exclude
                .iter()
                .map(|r| (r.code.as_str(), r.when.as_str()))
                .collect(),
            measure: &self.measure,
        };
        // Serializing these plain structs cannot fail; an empty body would still hash.
        let bytes = serde_json::to_vec(&semantics).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// The definition as TOML text (for a built-in that has no stored text).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// Parses and validates one definition from TOML.
///
/// # Errors
/// [`DefinitionError`] naming the key at fault.
pub fn parse_definition(text: &str) -> Result<MetricDefinition, DefinitionError> {
    if text.len() > DEFINITION_SIZE_MAX_BYTES {
        return Err(DefinitionError::invalid(
            "(file)",
            format!(
                "definition is {} bytes, the limit is {DEFINITION_SIZE_MAX_BYTES}",
                text.len()
            ),
        ));
    }
    let def: MetricDefinition = toml::from_str(text).map_err(|e| DefinitionError::Syntax {
        message: e.to_string().trim().replace('\n', " "),
    })?;
    compile::compile(&def)?;
    Ok(def)
}

/// A catalog file: `[[metric]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    metric: Vec<MetricDefinition>,
}

/// Parses a catalog file holding many definitions as `[[metric]]` tables.
///
/// # Errors
/// [`DefinitionError`]; a validation error is prefixed with the metric's `id@version`.
pub fn parse_catalog(text: &str) -> Result<Vec<MetricDefinition>, DefinitionError> {
    let file: CatalogFile = toml::from_str(text).map_err(|e| DefinitionError::Syntax {
        message: e.to_string().trim().replace('\n', " "),
    })?;
    for def in &file.metric {
        compile::compile(def).map_err(|e| match e {
            DefinitionError::Invalid { key, reason } => DefinitionError::Invalid {
                key: format!("{}: {key}", def.key()),
                reason,
            },
            DefinitionError::Expression { key, text, reason } => DefinitionError::Expression {
                key: format!("{}: {key}", def.key()),
                text,
                reason,
            },
            other => other,
        })?;
    }
    Ok(file.metric)
}
