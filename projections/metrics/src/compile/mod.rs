//! Validation of a [`MetricDefinition`] into the form the engine runs: expressions parsed,
//! keys checked against the measure type, and the log reads the metric needs collected.
//! Every error names the key at fault.

use std::collections::{BTreeMap, BTreeSet};

mod calendar;
mod measure;

use crm_domain::calendar::BusinessCalendar;
use crm_domain::registry::nearest_name;
use crm_domain::DomainEvent;

use crate::definition::{
    Agg, FactsSpec, InputRef, MeasureType, MetricDefinition, Param, Pick, RuleSpec,
};
use crate::error::DefinitionError;
use crate::expr::{self, Expr, FieldSource, Lit, Reads};
use crate::period::Grain;

/// Most event types one list may name.
const TYPES_MAX: usize = 32;
/// Most exclusion rules, dimensions or inputs of one definition.
pub(crate) const RULES_MAX: usize = 32;

/// What a metric reads from the log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Requirements {
    /// Types whose events are the metric's facts: without any, "no data: needs ...".
    pub fact_types: BTreeSet<String>,
    /// Every type the loader must keep.
    pub types: BTreeSet<String>,
    pub ref_categories: BTreeSet<String>,
    pub stream_attrs: bool,
    /// Whether custom attributes are read (the loader keeps `AttributesSet` events).
    pub attrs: bool,
    pub meta: bool,
    /// Whether `event.actor` is read.
    pub actor: bool,
    /// Whether `event.id` is read.
    pub event_ids: bool,
    /// Top-level payload fields read (`*` = all).
    pub fields: BTreeSet<String>,
    /// Other metrics this one is built from.
    pub metrics: Vec<(String, Option<u32>)>,
}

impl Requirements {
    /// Adds what `other` reads (its fact types and metrics included).
    pub(crate) fn merge(&mut self, other: &Requirements) {
        self.fact_types.extend(other.fact_types.iter().cloned());
        self.types.extend(other.types.iter().cloned());
        self.ref_categories
            .extend(other.ref_categories.iter().cloned());
        self.fields.extend(other.fields.iter().cloned());
        self.stream_attrs |= other.stream_attrs;
        self.attrs |= other.attrs;
        self.meta |= other.meta;
        self.actor |= other.actor;
        self.event_ids |= other.event_ids;
        self.metrics.extend(other.metrics.iter().cloned());
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CFacts {
    pub events: Vec<String>,
    pub filter: Option<Expr>,
    pub pick: Pick,
    pub pick_code: String,
    pub entity: Option<Expr>,
}

#[derive(Debug, Clone)]
pub(crate) struct CRule {
    pub code: String,
    pub when: Expr,
}

#[derive(Debug, Clone)]
pub(crate) struct CAgg {
    pub agg: Agg,
    pub of: Option<Expr>,
    pub when: Option<Expr>,
    pub per: Option<Expr>,
    pub p: f64,
    pub value_is_count: bool,
    pub currency: Option<Expr>,
    pub missing_code: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StockCalc {
    Count,
    Sum,
    Avg,
    MedianAge,
    New,
    Churned,
    ChurnRate,
    Retained,
    RetentionRate,
    GrossValueRetention,
    NetValueRetention,
    ValueChurnRate,
}

pub(crate) const STOCK_CALCS: &[(&str, StockCalc)] = &[
    ("count", StockCalc::Count),
    ("sum", StockCalc::Sum),
    ("avg", StockCalc::Avg),
    ("median_age", StockCalc::MedianAge),
    ("new", StockCalc::New),
    ("churned", StockCalc::Churned),
    ("churn_rate", StockCalc::ChurnRate),
    ("retained", StockCalc::Retained),
    ("retention_rate", StockCalc::RetentionRate),
    ("gross_value_retention", StockCalc::GrossValueRetention),
    ("net_value_retention", StockCalc::NetValueRetention),
    ("value_churn_rate", StockCalc::ValueChurnRate),
];

#[derive(Debug, Clone)]
pub(crate) struct InlineInput {
    pub facts: CFacts,
    pub agg: CAgg,
    pub time: Option<Expr>,
    pub rules: Vec<CRule>,
}

#[derive(Debug, Clone)]
pub(crate) enum CInput {
    Inline(Box<InlineInput>),
    Metric { id: String, version: Option<u32> },
}

#[derive(Debug, Clone)]
pub(crate) enum CMeasure {
    Simple {
        facts: CFacts,
        agg: CAgg,
    },
    Ratio {
        num: Box<CInput>,
        den: Box<CInput>,
    },
    Cumulative {
        facts: CFacts,
        agg: CAgg,
        window_s: Option<i64>,
        to_date: Option<Grain>,
    },
    Derived {
        expr: Expr,
        inputs: BTreeMap<String, InputRef>,
    },
    Conversion {
        facts: CFacts,
        entity: Option<Expr>,
        conversion: Vec<String>,
        conv_filter: Option<Expr>,
        conv_entity: Option<Expr>,
        window_s: i64,
        count: bool,
    },
    Duration {
        facts: CFacts,
        start: Vec<String>,
        start_filter: Option<Expr>,
        start_last: bool,
        business: bool,
        pause: Vec<String>,
        resume: Vec<String>,
        agg: CAgg,
    },
    Stock {
        entity: Option<Expr>,
        opens: Vec<String>,
        closes: Vec<String>,
        close_at: Option<Expr>,
        lasts: BTreeMap<String, i64>,
        value: BTreeMap<String, Expr>,
        /// Currency of the value, read on the spell's opening event.
        currency: Option<Expr>,
        calc: StockCalc,
    },
    Entities {
        facts: CFacts,
        min_facts: u32,
    },
    Rfm {
        facts: CFacts,
        /// The monetary value of one fact.
        of: Expr,
        /// Trailing window of frequency and monetary (all history when absent).
        window_s: Option<i64>,
    },
    Unsupported {
        needs: String,
    },
}

/// A validated definition, ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub time: Option<Expr>,
    pub dims: BTreeMap<String, Expr>,
    pub rules: Vec<CRule>,
    pub measure: CMeasure,
    pub calendar: BusinessCalendar,
    pub params: BTreeMap<String, Param>,
    /// Everything the definition reads: `core_reads` and every dimension's.
    pub reads: Requirements,
    /// What the definition reads without its dimensions (time, rules, facts, measure).
    pub core_reads: Requirements,
    /// What each dimension's expression reads.
    pub dim_reads: BTreeMap<String, Requirements>,
}

pub(crate) struct Ctx<'a> {
    pub(crate) reads: Reads,
    pub(crate) params: &'a BTreeMap<String, Param>,
    pub(crate) types: BTreeSet<String>,
    /// Each field an expression reads, with the expression's key and whose payload it is:
    /// checked against the event schemas once every type the definition names is known.
    pub(crate) fields_read: Vec<(String, FieldSource, String)>,
}

impl Ctx<'_> {
    /// What the expressions and type lists compiled so far read from the log (no fact
    /// types, no input metrics: the caller adds those).
    pub(crate) fn requirements(&self) -> Requirements {
        let mut types = self.types.clone();
        types.extend(self.reads.types.iter().cloned());
        Requirements {
            fact_types: BTreeSet::new(),
            types,
            ref_categories: self.reads.ref_categories.clone(),
            stream_attrs: self.reads.stream,
            attrs: self.reads.attrs,
            meta: self.reads.meta,
            actor: self.reads.actor,
            event_ids: self.reads.event_ids,
            fields: self.reads.fields.clone(),
            metrics: Vec::new(),
        }
    }

    pub(crate) fn expr(&mut self, key: &str, text: &str) -> Result<Expr, DefinitionError> {
        let e = expr::parse(text).map_err(|reason| DefinitionError::Expression {
            key: key.to_owned(),
            text: text.to_owned(),
            reason,
        })?;
        let mut r = Reads::default();
        e.reads(&mut r);
        if let Some(v) = r.vars.iter().next() {
            return Err(DefinitionError::invalid(
                key,
                format!("unknown name `{v}`; paths start with payload., stream., attr., meta., params. or event., and times are occurred_at / recorded_at"),
            ));
        }
        if let Some(p) = r.params.iter().find(|p| !self.params.contains_key(*p)) {
            return Err(DefinitionError::invalid(
                key,
                format!("`params.{p}` is not defined; add it under [params]"),
            ));
        }
        for t in &r.types {
            check_type(key, t)?;
        }
        self.reads.types.extend(r.types);
        self.reads.ref_categories.extend(r.ref_categories);
        self.reads.stream |= r.stream;
        self.reads.meta |= r.meta;
        self.reads.attrs |= r.attrs;
        self.reads.actor |= r.actor;
        self.reads.event_ids |= r.event_ids;
        self.fields_read.extend(
            r.sourced
                .iter()
                .map(|(source, f)| (key.to_owned(), source.clone(), f.clone())),
        );
        self.reads.fields.extend(r.fields);
        Ok(e)
    }

    pub(crate) fn opt(
        &mut self,
        key: &str,
        text: &Option<String>,
    ) -> Result<Option<Expr>, DefinitionError> {
        text.as_deref().map(|t| self.expr(key, t)).transpose()
    }

    pub(crate) fn types(
        &mut self,
        key: &str,
        list: &[String],
    ) -> Result<Vec<String>, DefinitionError> {
        if list.len() > TYPES_MAX {
            return Err(DefinitionError::invalid(
                key,
                format!("names {} event types, the limit is {TYPES_MAX}", list.len()),
            ));
        }
        for t in list {
            check_type(key, t)?;
            self.types.insert(t.clone());
        }
        Ok(list.to_vec())
    }

    pub(crate) fn facts(&mut self, key: &str, f: &FactsSpec) -> Result<CFacts, DefinitionError> {
        if f.events.is_empty() {
            return Err(DefinitionError::invalid(
                format!("{key}.events"),
                "name at least one event type, e.g. events = [\"OpportunityWon\"]",
            ));
        }
        let events = self.types(&format!("{key}.events"), &f.events)?;
        if let Some(code) = &f.pick_code {
            check_code(&format!("{key}.pick_code"), code)?;
        }
        Ok(CFacts {
            events,
            filter: self.opt(&format!("{key}.where"), &f.filter)?,
            pick: f.pick,
            pick_code: f.pick_code.clone().unwrap_or_else(|| "NOT_PICKED".into()),
            entity: self.opt(&format!("{key}.entity"), &f.entity)?,
        })
    }

    pub(crate) fn rules(
        &mut self,
        key: &str,
        rules: &[RuleSpec],
    ) -> Result<Vec<CRule>, DefinitionError> {
        if rules.len() > RULES_MAX {
            return Err(DefinitionError::invalid(
                key,
                format!("has {} rules, the limit is {RULES_MAX}", rules.len()),
            ));
        }
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                check_code(&format!("{key}[{i}].code"), &r.code)?;
                Ok(CRule {
                    code: r.code.clone(),
                    when: self.expr(&format!("{key}[{i}].when"), &r.when)?,
                })
            })
            .collect()
    }

    pub(crate) fn agg(
        &mut self,
        key: &str,
        m: &AggFields<'_>,
        default: Option<Agg>,
    ) -> Result<CAgg, DefinitionError> {
        let agg = m.agg.or(default).ok_or_else(|| {
            DefinitionError::invalid(format!("{key}.agg"), "missing; one of count, count_distinct, sum, avg, min, max, median, percentile, share, ratio_of_sums, mean_per")
        })?;
        let needs_of = !matches!(agg, Agg::Count | Agg::Share);
        if needs_of && m.of.is_none() && !m.implicit_value {
            return Err(DefinitionError::invalid(
                format!("{key}.of"),
                format!("`agg = {agg:?}` needs `of`, the value of each fact"),
            ));
        }
        if agg == Agg::Share && m.when.is_none() {
            return Err(DefinitionError::invalid(
                format!("{key}.when"),
                "`agg = share` needs `when`, the numerator condition",
            ));
        }
        if agg != Agg::Share && m.when.is_some() {
            return Err(DefinitionError::invalid(
                format!("{key}.when"),
                "only `agg = share` takes `when`",
            ));
        }
        if matches!(agg, Agg::RatioOfSums | Agg::MeanPer) != m.per.is_some() {
            return Err(DefinitionError::invalid(
                format!("{key}.per"),
                "`per` is required by, and only allowed with, agg = ratio_of_sums or mean_per",
            ));
        }
        let p = match (agg, m.p) {
            (Agg::Percentile, Some(p)) if (0.0..=1.0).contains(&p) => p,
            (Agg::Percentile, _) => {
                return Err(DefinitionError::invalid(
                    format!("{key}.p"),
                    "percentile needs `p` in 0..=1, e.g. p = 0.9",
                ))
            }
            (Agg::Median, _) => 0.5,
            (_, None) => 0.5,
            (_, Some(_)) => {
                return Err(DefinitionError::invalid(
                    format!("{key}.p"),
                    "only `agg = percentile` takes `p`",
                ))
            }
        };
        if let Some(code) = m.missing_code {
            check_code(&format!("{key}.missing_code"), code)?;
        }
        Ok(CAgg {
            agg,
            of: self.opt(&format!("{key}.of"), &m.of.cloned())?,
            when: self.opt(&format!("{key}.when"), &m.when.cloned())?,
            per: self.opt(&format!("{key}.per"), &m.per.cloned())?,
            p,
            value_is_count: m.value_is_count,
            currency: self.opt(&format!("{key}.currency"), &m.currency.cloned())?,
            missing_code: m
                .missing_code
                .cloned()
                .unwrap_or_else(|| "NO_AMOUNT".into()),
        })
    }
}

pub(crate) struct AggFields<'a> {
    pub(crate) agg: Option<Agg>,
    pub(crate) of: Option<&'a String>,
    pub(crate) when: Option<&'a String>,
    pub(crate) per: Option<&'a String>,
    pub(crate) p: Option<f64>,
    pub(crate) value_is_count: bool,
    pub(crate) currency: Option<&'a String>,
    pub(crate) missing_code: Option<&'a String>,
    /// Duration measures supply the value themselves.
    pub(crate) implicit_value: bool,
}

pub(crate) fn check_type(key: &str, t: &str) -> Result<(), DefinitionError> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.starts_with(|c: char| c.is_ascii_uppercase())
        && t.chars().all(|c| c.is_ascii_alphanumeric());
    if !ok {
        return Err(DefinitionError::invalid(key, format!("{t:?} is not an event type name; use the stored CamelCase name, e.g. \"OpportunityWon\"")));
    }
    if DomainEvent::current_schema_version(t).is_some() {
        return Ok(());
    }
    let known = DomainEvent::catalog().map(|(_, t, _)| t);
    let hint = nearest_name(t, known)
        .map(|n| format!("did you mean `{n}`? "))
        .unwrap_or_default();
    Err(DefinitionError::invalid(
        key,
        format!("there is no event type `{t}`; {hint}`crm schema` lists every event type"),
    ))
}

/// Checks that each field read names a field of the events it is read from: `payload.x` one
/// of `types` (the definition's event types), `stream.x` an event of their categories,
/// `ref('c', ..).x` an event of category `c`. A definition naming no event type (built only
/// from other metrics) reads no payload of its own.
pub(crate) fn check_fields(
    fields_read: &[(String, FieldSource, String)],
    types: &BTreeSet<String>,
) -> Result<(), DefinitionError> {
    let fields_of = |types: &mut dyn Iterator<Item = &str>| -> BTreeSet<String> {
        types
            .filter_map(DomainEvent::payload_fields)
            .flatten()
            .cloned()
            .collect()
    };
    let categories: BTreeSet<&str> = types
        .iter()
        .filter_map(|t| DomainEvent::category_of(t))
        .collect();
    let in_categories = |cats: &BTreeSet<&str>| -> Vec<&'static str> {
        DomainEvent::catalog()
            .filter(|(c, _, _)| cats.contains(c))
            .map(|(_, t, _)| t)
            .collect()
    };
    for (key, source, field) in fields_read {
        let (read_from, described): (Vec<String>, String) = match source {
            FieldSource::Payload => (
                types.iter().cloned().collect(),
                format!(
                    "{} (the event types this definition names)",
                    types
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            FieldSource::Stream => (
                in_categories(&categories)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                format!(
                    "the events of the streams it reads ({})",
                    categories.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            ),
            FieldSource::Ref(category) => (
                in_categories(&BTreeSet::from([category.as_str()]))
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                format!("the events of `{category}` streams"),
            ),
        };
        if read_from.is_empty() {
            continue;
        }
        let known = fields_of(&mut read_from.iter().map(String::as_str));
        if known.contains(field) {
            continue;
        }
        let prefix = match source {
            FieldSource::Payload => "payload.".to_owned(),
            FieldSource::Stream => "stream.".to_owned(),
            FieldSource::Ref(category) => format!("ref('{category}', ..)."),
        };
        let hint = nearest_name(field, known.iter().map(String::as_str))
            .map(|n| format!("did you mean `{prefix}{n}`? "))
            .unwrap_or_default();
        return Err(DefinitionError::invalid(
            key,
            format!(
                "`{prefix}{field}` is not a field of {described}; {hint}`crm schema TYPE` lists a type's fields"
            ),
        ));
    }
    Ok(())
}

pub(crate) fn check_code(key: &str, code: &str) -> Result<(), DefinitionError> {
    let ok = !code.is_empty()
        && code.len() <= 32
        && code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(DefinitionError::invalid(key, format!("{code:?} is not a reason code; use UPPER_SNAKE_CASE such as VOIDED or OUT_OF_SCOPE")))
    }
}

/// Parses a duration such as `30d` into seconds.
pub(crate) fn window_seconds(key: &str, text: &str) -> Result<i64, DefinitionError> {
    match expr::parse(text) {
        Ok(Expr::Lit(Lit::Int(s))) if s > 0 => Ok(s),
        _ => Err(DefinitionError::invalid(
            key,
            format!("{text:?} is not a positive duration; write e.g. \"30d\", \"12h\", \"90m\""),
        )),
    }
}

pub(crate) fn forbid(key: &str, present: bool, kind: MeasureType) -> Result<(), DefinitionError> {
    if present {
        Err(DefinitionError::invalid(
            key,
            format!(
                "does not apply to `type = {}`",
                serde_json::to_string(&kind).unwrap_or_default()
            ),
        ))
    } else {
        Ok(())
    }
}

/// Validates a definition into its runnable form.
pub(crate) fn compile(def: &MetricDefinition) -> Result<Compiled, DefinitionError> {
    check_header(def)?;
    let calendar = calendar::business_calendar(&def.params)?;
    let mut cx = Ctx {
        reads: Reads::default(),
        params: &def.params,
        types: BTreeSet::new(),
        fields_read: Vec::new(),
    };
    let time = cx.opt("time", &def.time)?;
    // Dimensions are compiled apart, so what the rest reads is known without them (a
    // question that breaks down by none of them need not load what they read).
    let mut dcx = Ctx {
        reads: Reads::default(),
        params: &def.params,
        types: BTreeSet::new(),
        fields_read: Vec::new(),
    };
    let mut dim_reads = BTreeMap::new();
    if def.dims.len() > RULES_MAX {
        return Err(DefinitionError::invalid(
            "dims",
            format!(
                "has {} dimensions, the limit is {RULES_MAX}",
                def.dims.len()
            ),
        ));
    }
    let mut dims = BTreeMap::new();
    for (name, text) in &def.dims {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
        {
            return Err(DefinitionError::invalid(
                format!("dims.{name}"),
                "dimension names are lower_snake_case",
            ));
        }
        let e = dcx.expr(&format!("dims.{name}"), text)?;
        dim_reads.insert(name.clone(), requirements_of(&e));
        dims.insert(name.clone(), e);
    }
    let time_fields = cx.fields_read.len();
    let rules = cx.rules("exclude", &def.exclude)?;
    let m = &def.measure;
    let measure = measure::measure(&mut cx, def, m)?;
    if matches!(measure, CMeasure::Rfm { .. }) {
        // Scored by the measure: a placeholder here, filled in per entity.
        for (name, _) in crate::definition::RFM_DIMENSIONS {
            if dims.contains_key(name) {
                return Err(DefinitionError::invalid(
                    format!("dims.{name}"),
                    "an rfm measure fills the dimensions rfm, r, f and m itself; rename this one",
                ));
            }
            dims.insert(name.to_owned(), Expr::Lit(crate::expr::Lit::Null));
        }
    }
    let mut core_reads = cx.requirements();
    core_reads.fact_types = fact_types(&measure, &mut core_reads.metrics);
    let mut reads = core_reads.clone();
    reads.merge(&dcx.requirements());
    // In the order they were written: time, dimensions, then the rest.
    let mut fields_read = cx.fields_read;
    let rest = fields_read.split_off(time_fields.min(fields_read.len()));
    fields_read.extend(dcx.fields_read);
    fields_read.extend(rest);
    check_fields(&fields_read, &reads.types)?;
    Ok(Compiled {
        time,
        dims,
        rules,
        measure,
        calendar,
        params: def.params.clone(),
        reads,
        core_reads,
        dim_reads,
    })
}

/// What one expression reads from the log.
fn requirements_of(e: &Expr) -> Requirements {
    let mut r = Reads::default();
    e.reads(&mut r);
    Requirements {
        fact_types: BTreeSet::new(),
        types: r.types,
        ref_categories: r.ref_categories,
        stream_attrs: r.stream,
        attrs: r.attrs,
        meta: r.meta,
        actor: r.actor,
        event_ids: r.event_ids,
        fields: r.fields,
        metrics: Vec::new(),
    }
}

fn check_header(def: &MetricDefinition) -> Result<(), DefinitionError> {
    let prefix = format!("{}.", def.domain.as_str());
    let name = def.id.strip_prefix(&prefix).ok_or_else(|| {
        DefinitionError::invalid(
            "id",
            format!("{:?} must start with its domain, `{prefix}`", def.id),
        )
    })?;
    if name.is_empty()
        || def.id.len() > 100
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(DefinitionError::invalid(
            "id",
            format!(
                "{:?} must be `<domain>.<name>` with a lower_snake_case name of at most 100 bytes",
                def.id
            ),
        ));
    }
    if def.version == 0 || def.version > 10_000 {
        return Err(DefinitionError::invalid("version", "must be 1..=10000"));
    }
    if def.name.trim().is_empty() || def.name.len() > 200 {
        return Err(DefinitionError::invalid(
            "name",
            "must be 1..=200 bytes of text",
        ));
    }
    Ok(())
}

fn fact_types(m: &CMeasure, metrics: &mut Vec<(String, Option<u32>)>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut input = |i: &CInput, out: &mut BTreeSet<String>| match i {
        CInput::Inline(i) => out.extend(i.facts.events.iter().cloned()),
        CInput::Metric { id, version } => metrics.push((id.clone(), *version)),
    };
    match m {
        CMeasure::Simple { facts, .. }
        | CMeasure::Cumulative { facts, .. }
        | CMeasure::Conversion { facts, .. }
        | CMeasure::Duration { facts, .. }
        | CMeasure::Entities { facts, .. }
        | CMeasure::Rfm { facts, .. } => out.extend(facts.events.iter().cloned()),
        CMeasure::Ratio { num, den } => {
            input(num, &mut out);
            input(den, &mut out);
        }
        CMeasure::Derived { inputs, .. } => {
            metrics.extend(inputs.values().map(|i| (i.metric.clone(), i.version)));
        }
        CMeasure::Stock { opens, .. } => out.extend(opens.iter().cloned()),
        CMeasure::Unsupported { .. } => {}
    }
    out
}
