//! Validation of the `[measure]` table, per measure type.

use super::{
    check_type, forbid, window_seconds, AggFields, CFacts, CInput, CMeasure, Ctx, InlineInput,
    RULES_MAX, STOCK_CALCS,
};
use crate::definition::{
    Agg, Clock, FactsSpec, InputSpec, MeasureSpec, MeasureType, MetricDefinition, Pick,
};
use crate::error::DefinitionError;
use crate::expr::{self, Reads};
use std::collections::BTreeMap;

fn agg_fields(m: &MeasureSpec, implicit_value: bool) -> AggFields<'_> {
    AggFields {
        agg: m.agg,
        of: m.of.as_ref(),
        when: m.when.as_ref(),
        per: m.per.as_ref(),
        p: m.p,
        value_is_count: m.value_is_count,
        currency: m.currency.as_ref(),
        missing_code: m.missing_code.as_ref(),
        implicit_value,
    }
}

fn top_facts(cx: &mut Ctx<'_>, def: &MetricDefinition) -> Result<CFacts, DefinitionError> {
    let f = def.facts.as_ref().ok_or_else(|| {
        DefinitionError::invalid(
            "facts",
            format!(
                "`type = {}` needs a [facts] table with `events`",
                serde_json::to_string(&def.measure.kind).unwrap_or_default()
            ),
        )
    })?;
    cx.facts("facts", f)
}

pub(super) fn measure(
    cx: &mut Ctx<'_>,
    def: &MetricDefinition,
    m: &MeasureSpec,
) -> Result<CMeasure, DefinitionError> {
    let t = m.kind;
    let agg_keys = m.agg.is_some()
        || m.of.is_some()
        || m.when.is_some()
        || m.per.is_some()
        || m.p.is_some()
        || m.currency.is_some();
    if t != MeasureType::Ratio {
        forbid("measure.numerator", m.numerator.is_some(), t)?;
        forbid("measure.denominator", m.denominator.is_some(), t)?;
    }
    if t != MeasureType::Derived {
        forbid("measure.expr", m.expr.is_some(), t)?;
        forbid("measure.inputs", !m.inputs.is_empty(), t)?;
    }
    if !matches!(
        t,
        MeasureType::Cumulative | MeasureType::Conversion | MeasureType::Rfm
    ) {
        forbid("measure.window", m.window.is_some(), t)?;
    }
    if t != MeasureType::Cumulative {
        forbid("measure.to_date", m.to_date.is_some(), t)?;
    }
    if t != MeasureType::Conversion {
        forbid("measure.conversion", !m.conversion.is_empty(), t)?;
    }
    if t != MeasureType::Duration {
        forbid("measure.start", !m.start.is_empty(), t)?;
        forbid("measure.clock", m.clock.is_some(), t)?;
    }
    if t != MeasureType::Stock {
        forbid("measure.opens", !m.opens.is_empty(), t)?;
        forbid("measure.closes", !m.closes.is_empty(), t)?;
        forbid("measure.value", !m.value.is_empty(), t)?;
    }
    if t != MeasureType::Unsupported {
        forbid("measure.needs", m.needs.is_some(), t)?;
    }
    if t != MeasureType::Entities {
        forbid("measure.min_facts", m.min_facts.is_some(), t)?;
    }
    Ok(match t {
        MeasureType::Simple => CMeasure::Simple {
            facts: top_facts(cx, def)?,
            agg: cx.agg("measure", &agg_fields(m, false), None)?,
        },
        MeasureType::Cumulative => {
            let window_s = m
                .window
                .as_deref()
                .map(|w| window_seconds("measure.window", w))
                .transpose()?;
            if window_s.is_some() == m.to_date.is_some() {
                return Err(DefinitionError::invalid("measure.window", "cumulative takes exactly one of `window` (trailing, e.g. \"90d\") or `to_date` (month, quarter, year)"));
            }
            CMeasure::Cumulative {
                facts: top_facts(cx, def)?,
                agg: cx.agg("measure", &agg_fields(m, false), None)?,
                window_s,
                to_date: m.to_date,
            }
        }
        MeasureType::Ratio => {
            forbid("measure.agg", agg_keys, t)?;
            let num = m.numerator.as_ref().ok_or_else(|| {
                DefinitionError::invalid("measure.numerator", "a ratio needs [measure.numerator]")
            })?;
            let den = m.denominator.as_ref().ok_or_else(|| {
                DefinitionError::invalid(
                    "measure.denominator",
                    "a ratio needs [measure.denominator]",
                )
            })?;
            CMeasure::Ratio {
                num: Box::new(input(cx, "measure.numerator", num)?),
                den: Box::new(input(cx, "measure.denominator", den)?),
            }
        }
        MeasureType::Entities => {
            forbid("measure.agg", agg_keys, t)?;
            let min_facts = m.min_facts.ok_or_else(|| {
                DefinitionError::invalid(
                    "measure.min_facts",
                    "`type = \"entities\"` needs `min_facts`: the counted facts an entity needs in the period to be in the numerator (2 for repeat purchasers)",
                )
            })?;
            if min_facts == 0 {
                return Err(DefinitionError::invalid(
                    "measure.min_facts",
                    "`min_facts` must be at least 1",
                ));
            }
            CMeasure::Entities {
                facts: top_facts(cx, def)?,
                min_facts,
            }
        }
        MeasureType::Rfm => {
            let others = m.agg.is_some()
                || m.when.is_some()
                || m.per.is_some()
                || m.p.is_some()
                || m.currency.is_some();
            forbid("measure.agg", others, t)?;
            let text = m.of.as_deref().ok_or_else(|| {
                DefinitionError::invalid(
                    "measure.of",
                    "an rfm measure needs `of`: the monetary value of one fact, e.g. \"payload.total.minor_units\"",
                )
            })?;
            CMeasure::Rfm {
                facts: top_facts(cx, def)?,
                of: cx.expr("measure.of", text)?,
                window_s: m
                    .window
                    .as_deref()
                    .map(|w| window_seconds("measure.window", w))
                    .transpose()?,
            }
        }
        MeasureType::Derived => {
            forbid("measure.agg", agg_keys, t)?;
            let text = m.expr.as_deref().ok_or_else(|| {
                DefinitionError::invalid(
                    "measure.expr",
                    "a derived metric needs `expr` over its inputs",
                )
            })?;
            let e = expr::parse(text).map_err(|reason| DefinitionError::Expression {
                key: "measure.expr".into(),
                text: text.into(),
                reason,
            })?;
            let mut r = Reads::default();
            e.reads(&mut r);
            if r.stream || r.meta || !r.types.is_empty() || !r.ref_categories.is_empty() {
                return Err(DefinitionError::invalid(
                    "measure.expr",
                    "a derived formula reads only its inputs (and params)",
                ));
            }
            if let Some(v) = r.vars.iter().find(|v| {
                !m.inputs.contains_key(*v)
                    && !["period_days", "business_days"].contains(&v.as_str())
            }) {
                return Err(DefinitionError::invalid("measure.expr", format!("`{v}` is not one of the inputs; declare it under [measure.inputs.{v}] (period_days and business_days are built in)")));
            }
            if m.inputs.is_empty() || m.inputs.len() > RULES_MAX {
                return Err(DefinitionError::invalid(
                    "measure.inputs",
                    format!("a derived metric needs 1..={RULES_MAX} inputs"),
                ));
            }
            CMeasure::Derived {
                expr: e,
                inputs: m.inputs.clone(),
            }
        }
        MeasureType::Conversion => {
            forbid("measure.agg", agg_keys, t)?;
            let window = m.window.as_deref().ok_or_else(|| {
                DefinitionError::invalid(
                    "measure.window",
                    "a conversion needs a window, e.g. \"30d\"",
                )
            })?;
            if m.conversion.is_empty() {
                return Err(DefinitionError::invalid(
                    "measure.conversion",
                    "name the conversion event types",
                ));
            }
            let count = match m.calc.as_deref() {
                None | Some("rate") => false,
                Some("count") => true,
                Some(other) => {
                    return Err(DefinitionError::invalid(
                        "measure.calc",
                        format!("{other:?}: a conversion's calc is `rate` or `count`"),
                    ))
                }
            };
            CMeasure::Conversion {
                facts: top_facts(cx, def)?,
                entity: cx.opt("measure.entity", &m.entity)?,
                conversion: cx.types("measure.conversion", &m.conversion)?,
                conv_filter: cx.opt("measure.conversion_where", &m.conversion_where)?,
                conv_entity: cx.opt("measure.conversion_entity", &m.conversion_entity)?,
                window_s: window_seconds("measure.window", window)?,
                count,
            }
        }
        MeasureType::Duration => {
            if m.start.is_empty() {
                return Err(DefinitionError::invalid(
                    "measure.start",
                    "a duration needs start event types, e.g. start = [\"CaseOpened\"]",
                ));
            }
            if m.pause.is_empty() != m.resume.is_empty() {
                return Err(DefinitionError::invalid(
                    "measure.pause",
                    "`pause` and `resume` go together",
                ));
            }
            forbid("measure.of", m.of.is_some(), t)?;
            CMeasure::Duration {
                facts: top_facts(cx, def)?,
                start: cx.types("measure.start", &m.start)?,
                start_filter: cx.opt("measure.start_where", &m.start_where)?,
                start_last: m.start_pick == Some(Pick::Last),
                business: m.clock == Some(Clock::Business),
                pause: cx.types("measure.pause", &m.pause)?,
                resume: cx.types("measure.resume", &m.resume)?,
                agg: cx.agg("measure", &agg_fields(m, true), Some(Agg::Avg))?,
            }
        }
        MeasureType::Stock => stock(cx, def, m)?,
        MeasureType::Unsupported => CMeasure::Unsupported {
            needs: m.needs.clone().ok_or_else(|| {
                DefinitionError::invalid(
                    "measure.needs",
                    "say what the metric needs that the language lacks",
                )
            })?,
        },
    })
}

fn stock(
    cx: &mut Ctx<'_>,
    def: &MetricDefinition,
    m: &MeasureSpec,
) -> Result<CMeasure, DefinitionError> {
    let t = m.kind;
    forbid(
        "measure.agg",
        m.agg.is_some() || m.of.is_some() || m.when.is_some(),
        t,
    )?;
    forbid("facts", def.facts.is_some(), t)?;
    if m.opens.is_empty() {
        return Err(DefinitionError::invalid(
            "measure.opens",
            "a stock needs the event types that open a spell",
        ));
    }
    let calc_text = m.calc.as_deref().unwrap_or("count");
    let calc = STOCK_CALCS
        .iter()
        .find(|(n, _)| *n == calc_text)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            let names: Vec<&str> = STOCK_CALCS.iter().map(|(n, _)| *n).collect();
            DefinitionError::invalid(
                "measure.calc",
                format!("{calc_text:?} is not one of {}", names.join(", ")),
            )
        })?;
    let mut lasts = BTreeMap::new();
    for (ty, w) in &m.lasts {
        if !m.opens.contains(ty) {
            return Err(DefinitionError::invalid(
                format!("measure.lasts.{ty}"),
                "only open events have a fixed length; add the type to `opens`",
            ));
        }
        lasts.insert(
            ty.clone(),
            window_seconds(&format!("measure.lasts.{ty}"), w)?,
        );
    }
    let mut value = BTreeMap::new();
    for (ty, text) in &m.value {
        check_type(&format!("measure.value.{ty}"), ty)?;
        cx.types.insert(ty.clone());
        value.insert(ty.clone(), cx.expr(&format!("measure.value.{ty}"), text)?);
    }
    Ok(CMeasure::Stock {
        entity: cx.opt("measure.entity", &m.entity)?,
        opens: cx.types("measure.opens", &m.opens)?,
        closes: cx.types("measure.closes", &m.closes)?,
        close_at: cx.opt("measure.close_at", &m.close_at)?,
        lasts,
        value,
        currency: cx.opt("measure.currency", &m.currency)?,
        calc,
    })
}

fn input(cx: &mut Ctx<'_>, key: &str, i: &InputSpec) -> Result<CInput, DefinitionError> {
    if let Some(id) = &i.metric {
        let inline = !i.events.is_empty()
            || i.filter.is_some()
            || i.agg.is_some()
            || i.of.is_some()
            || i.time.is_some()
            || !i.exclude.is_empty();
        if inline {
            return Err(DefinitionError::invalid(key, "an input is either `metric` (another metric) or inline facts (`events`, `where`, `agg`, ...), not both"));
        }
        return Ok(CInput::Metric {
            id: id.clone(),
            version: i.version,
        });
    }
    let facts = cx.facts(
        key,
        &FactsSpec {
            events: i.events.clone(),
            filter: i.filter.clone(),
            pick: i.pick,
            pick_code: None,
            entity: None,
        },
    )?;
    let agg = cx.agg(
        key,
        &AggFields {
            agg: i.agg,
            of: i.of.as_ref(),
            when: None,
            per: None,
            p: None,
            value_is_count: false,
            currency: None,
            missing_code: None,
            implicit_value: false,
        },
        Some(Agg::Count),
    )?;
    if !matches!(agg.agg, Agg::Count | Agg::CountDistinct | Agg::Sum) {
        return Err(DefinitionError::invalid(
            format!("{key}.agg"),
            "a ratio input aggregates with count, count_distinct or sum",
        ));
    }
    Ok(CInput::Inline(Box::new(InlineInput {
        facts,
        agg,
        time: cx.opt(&format!("{key}.time"), &i.time)?,
        rules: cx.rules(&format!("{key}.exclude"), &i.exclude)?,
    })))
}
