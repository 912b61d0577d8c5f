//! Stocks: spells opened and closed by events, rolled up to entities, read at the periods'
//! ends (and starts, for pairs), as `measures/stock.rs` computes them.
//!
//! A stream's openers and closers in log order make its open-ended spells: an opener starts
//! one when the previous of them was a closer (or there was none), a closer ends it when the
//! previous was an opener; an opener of a type with a fixed length (`lasts`) makes a spell of
//! its own. Spells whose opener a rule excludes count under the rule's code where they run;
//! the others merge per entity into islands of continuous activity (overlapping or touching
//! spells), and an entity is active at an instant when one of its islands holds it. A spell's
//! value at an instant is its last change by then (its opener's value, then the value events
//! of its stream while it is open), an entity's the sum over its running spells.

use super::*;

use crate::compile::StockCalc;

/// The end of a spell that never ends, for comparisons (`i64::MAX` microseconds).
const OPEN_END_US: i64 = i64::MAX;

impl Builder<'_> {
    /// The cells of a stock measure.
    pub(super) fn stock(&mut self, c: &Compiled) -> Result<Cells, NoSqlForm> {
        let CMeasure::Stock {
            entity,
            opens,
            closes,
            close_at,
            lasts,
            value,
            currency,
            calc,
        } = &c.measure
        else {
            return Err(NoSqlForm::Measure {
                measure: "stock".into(),
                why: "not a stock".into(),
            });
        };
        let calc = *calc;
        let valued = matches!(
            calc,
            StockCalc::Sum
                | StockCalc::Avg
                | StockCalc::GrossValueRetention
                | StockCalc::NetValueRetention
                | StockCalc::ValueChurnRate
        );
        let value_rows = matches!(calc, StockCalc::Sum | StockCalc::Avg);
        let with_currency = value_rows && currency.is_some();
        if with_currency && (entity.is_some() || !lasts.is_empty() || calc == StockCalc::Avg) {
            // The currency is read on the opener of the entity's latest running spell, an
            // order of spells across streams the translation does not follow.
            return Err(NoSqlForm::construct_at(
                "measure.currency",
                "the currency of an entity that can run several spells at once",
                "it is read on the spell the engine finished last",
            ));
        }
        let d = self.lower.dialect;
        let facts = CFacts {
            events: opens.clone(),
            filter: None,
            pick: Pick::All,
            pick_code: String::new(),
            entity: None,
        };
        let mut values = vec![Value::Key("ek", "measure.entity".into(), entity.as_ref())];
        if let (true, Some(cur)) = (with_currency, currency) {
            values.push(Value::Expr("cur", "measure.currency".into(), cur));
        }
        let open = self.coded(c, &facts, None, &[&c.rules], &values)?;
        let cur_key = if with_currency {
            let s = Sql::new("o.cur", open.ty("cur"));
            self.key_text("measure.currency", &s)?
        } else {
            format!("CAST(NULL AS {})", d.text_type())
        };
        let p = self.prefix();

        // Closers (an event of an opening type opens, whatever else it is), with the instant
        // each takes effect.
        let close_types: Vec<String> = closes
            .iter()
            .filter(|t| !opens.contains(t))
            .cloned()
            .collect();
        let mut scope = Scope::new("e", close_types.iter().cloned().collect(), &c.params, true);
        let at = match close_at {
            None => "NULL".to_owned(),
            Some(e) => {
                let s = self.lower.expr(&mut scope, "measure.close_at", e)?;
                match s.ty {
                    Ty::Time => s.text,
                    Ty::Stamp => d.epoch_us(&s.text),
                    Ty::Text => {
                        return Err(NoSqlForm::construct_at(
                            "measure.close_at",
                            "an instant parsed from a text",
                            "the export has no date-time column for it",
                        ))
                    }
                    _ => "NULL".to_owned(),
                }
            }
        };
        self.ctes.push((
            format!("{p}_close"),
            format!(
                "SELECT e.stream_id, e.position, COALESCE({at}, e.occurred_us) AS end_us FROM marked e{}\n  WHERE {} AND e.stream_id IN (SELECT stream_id FROM {})",
                scope.joins(),
                self.is_in("e.event_type", &close_types),
                open.name
            ),
        ));
        let fixed: Vec<String> = lasts.keys().cloned().collect();
        self.ctes.push((
            format!("{p}_seq"),
            format!(
                "SELECT stream_id, position, kind, LAG(kind) OVER (PARTITION BY stream_id ORDER BY position) AS prev\n  FROM (SELECT stream_id, position, 'O' AS kind FROM {} WHERE NOT {}\n        UNION ALL SELECT stream_id, position, 'C' AS kind FROM {p}_close) s",
                open.name,
                self.is_in("event_type", &fixed)
            ),
        ));
        self.ctes.push((
            format!("{p}_edges"),
            format!(
                "SELECT stream_id, position, kind, LEAD(position) OVER (PARTITION BY stream_id ORDER BY position) AS next_pos\n  FROM {p}_seq WHERE (kind = 'O' AND (prev IS NULL OR prev = 'C')) OR (kind = 'C' AND prev = 'O')"
            ),
        ));
        let mut spells = format!(
            "SELECT o.position AS opener, o.stream_id, o.ek, o.code, {cur_key} AS cur, x.next_pos AS close_pos, 0 AS fixed, o.occurred_us AS start_us,\n    CASE WHEN cl.position IS NULL THEN NULL WHEN cl.end_us > o.occurred_us THEN cl.end_us ELSE o.occurred_us END AS end_us\n  FROM {p}_edges x JOIN {} o ON o.position = x.position LEFT JOIN {p}_close cl ON cl.position = x.next_pos\n  WHERE x.kind = 'O'",
            open.name
        );
        if !lasts.is_empty() {
            let lengths: Vec<String> = lasts
                .iter()
                .map(|(t, s)| {
                    format!(
                        "WHEN {} THEN {}",
                        self.text(t),
                        i128::from(*s) * i128::from(MICROS_PER_SECOND)
                    )
                })
                .collect();
            spells.push_str(&format!(
                "\n  UNION ALL SELECT o.position, o.stream_id, o.ek, o.code, {cur_key}, CAST(NULL AS BIGINT), 1, o.occurred_us, o.occurred_us + CASE o.event_type {} END\n  FROM {} o WHERE {}",
                lengths.join(" "),
                open.name,
                self.is_in("o.event_type", &fixed)
            ));
        }
        self.ctes.push((format!("{p}_spells"), spells));
        self.ctes.push((
            format!("{p}_marks"),
            format!(
                "SELECT ek, opener, start_us, end_us, MAX(end_us) OVER (PARTITION BY ek ORDER BY start_us, opener ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_end\n  FROM (SELECT ek, opener, start_us, COALESCE(end_us, {OPEN_END_US}) AS end_us FROM {p}_spells WHERE code IS NULL) g"
            ),
        ));
        self.ctes.push((
            format!("{p}_numbered"),
            format!(
                "SELECT ek, start_us, end_us, SUM(CASE WHEN before_end IS NULL OR start_us > before_end THEN 1 ELSE 0 END) OVER (PARTITION BY ek ORDER BY start_us, opener ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS island\n  FROM {p}_marks"
            ),
        ));
        self.ctes.push((
            format!("{p}_islands"),
            format!(
                "SELECT ek, island, MIN(start_us) AS start_us, MAX(end_us) AS end_us FROM {p}_numbered GROUP BY ek, island"
            ),
        ));

        let periods = self.periods.clone();
        let holds = |i: &str, t: &str| format!("{i}.start_us <= {t} AND {t} < {i}.end_us");
        let runs = |t: &str| format!("s.start_us <= {t} AND (s.end_us IS NULL OR {t} < s.end_us)");
        if valued {
            self.values(c, &p, &open.name, opens, closes, value)?;
            for (name, instant) in [("at0", "p.start_us"), ("at1", "p.end_us")] {
                self.ctes.push((
                    format!("{p}_{name}"),
                    format!(
                        "SELECT key_us, ek, SUM(v) AS v FROM (\n    SELECT p.key_us, c.ek, c.v, ROW_NUMBER() OVER (PARTITION BY p.key_us, c.opener ORDER BY c.position DESC) AS rn\n    FROM {periods} p JOIN {p}_spells s ON s.code IS NULL AND {}\n    JOIN {p}_chg c ON c.opener = s.opener AND c.from_us <= {instant}) x\n  WHERE rn = 1 GROUP BY key_us, ek",
                        runs(instant)
                    ),
                ));
            }
        }
        let within = |col: &str| format!("{col} >= p.start_us AND {col} < p.end_us");
        let pair = matches!(
            calc,
            StockCalc::Churned
                | StockCalc::ChurnRate
                | StockCalc::Retained
                | StockCalc::RetentionRate
        );
        let text = d.text_type();
        let included = match calc {
            StockCalc::New => {
                self.ctes.push((
                    format!("{p}_first"),
                    format!("SELECT ek, MIN(start_us) AS start_us FROM {p}_spells WHERE code IS NULL GROUP BY ek"),
                ));
                format!(
                    "SELECT p.key_us, CAST(NULL AS {text}) AS code, 1 AS n, CAST(NULL AS BIGINT) AS d, CAST(NULL AS DOUBLE) AS v, CAST(NULL AS {text}) AS cur\n  FROM {periods} p JOIN {p}_first f ON {}",
                    within("f.start_us")
                )
            }
            _ if pair => {
                let n = match calc {
                    StockCalc::Churned | StockCalc::ChurnRate => format!(
                        "CASE WHEN i.end_us <> {OPEN_END_US} AND i.end_us <= p.end_us THEN 1 ELSE 0 END"
                    ),
                    _ => "CASE WHEN i1.ek IS NULL THEN 0 ELSE 1 END".to_owned(),
                };
                let den = if matches!(calc, StockCalc::ChurnRate | StockCalc::RetentionRate) {
                    "1"
                } else {
                    "CAST(NULL AS BIGINT)"
                };
                format!(
                    "SELECT p.key_us, CAST(NULL AS {text}) AS code, {n} AS n, {den} AS d, CAST(NULL AS DOUBLE) AS v, CAST(NULL AS {text}) AS cur\n  FROM {periods} p JOIN {p}_islands i ON {}\n  LEFT JOIN {p}_islands i1 ON i1.ek = i.ek AND {}",
                    holds("i", "p.start_us"),
                    holds("i1", "p.end_us")
                )
            }
            StockCalc::Sum | StockCalc::Avg => {
                let d_col = if calc == StockCalc::Avg { "1" } else { "CAST(NULL AS BIGINT)" };
                let cur = if with_currency {
                    format!("(SELECT MIN(s.cur) FROM {p}_spells s WHERE s.code IS NULL AND s.ek = i.ek AND {})", runs("p.end_us"))
                } else {
                    format!("CAST(NULL AS {text})")
                };
                format!(
                    "SELECT p.key_us, CAST(NULL AS {text}) AS code, a.v AS n, {d_col} AS d, CAST(NULL AS DOUBLE) AS v, {cur} AS cur\n  FROM {periods} p JOIN {p}_islands i ON {}\n  LEFT JOIN {p}_at1 a ON a.key_us = p.key_us AND a.ek = i.ek",
                    holds("i", "p.end_us")
                )
            }
            StockCalc::GrossValueRetention | StockCalc::NetValueRetention | StockCalc::ValueChurnRate => {
                let (v0, v1) = ("a0.v", "COALESCE(a1.v, 0)");
                let n = match calc {
                    StockCalc::GrossValueRetention => format!("CASE WHEN {v1} < {v0} THEN {v1} ELSE {v0} END"),
                    StockCalc::NetValueRetention => v1.to_owned(),
                    _ => format!("CASE WHEN {v0} - {v1} > 0 THEN {v0} - {v1} ELSE 0 END"),
                };
                format!(
                    "SELECT p.key_us, CAST(NULL AS {text}) AS code, {n} AS n, {v0} AS d, CAST(NULL AS DOUBLE) AS v, CAST(NULL AS {text}) AS cur\n  FROM {periods} p JOIN {p}_islands i ON {}\n  LEFT JOIN {p}_at0 a0 ON a0.key_us = p.key_us AND a0.ek = i.ek\n  LEFT JOIN {p}_at1 a1 ON a1.key_us = p.key_us AND a1.ek = i.ek",
                    holds("i", "p.start_us")
                )
            }
            StockCalc::MedianAge => format!(
                "SELECT p.key_us, CAST(NULL AS {text}) AS code, CAST(NULL AS BIGINT) AS n, CAST(NULL AS BIGINT) AS d, CAST({} AS DOUBLE) AS v, CAST(NULL AS {text}) AS cur\n  FROM {periods} p JOIN {p}_islands i ON {}",
                d.int_div("(p.end_us - i.start_us)", &MICROS_PER_SECOND.to_string()),
                holds("i", "p.end_us")
            ),
            _ => format!(
                "SELECT p.key_us, CAST(NULL AS {text}) AS code, 1 AS n, CAST(NULL AS BIGINT) AS d, CAST(NULL AS DOUBLE) AS v, CAST(NULL AS {text}) AS cur\n  FROM {periods} p JOIN {p}_islands i ON {}",
                holds("i", "p.end_us")
            ),
        };
        let relevant = match calc {
            StockCalc::New => within("s.start_us"),
            _ if pair => runs("p.start_us"),
            StockCalc::GrossValueRetention
            | StockCalc::NetValueRetention
            | StockCalc::ValueChurnRate => runs("p.start_us"),
            _ => runs("p.end_us"),
        };
        self.ctes.push((
            format!("{p}_rows"),
            format!(
                "{included}\n  UNION ALL SELECT p.key_us, s.code, NULL, NULL, NULL, NULL\n  FROM {periods} p JOIN {p}_spells s ON s.code IS NOT NULL AND {relevant}"
            ),
        ));
        let inc = |x: &str| format!("CASE WHEN code IS NULL THEN {x} END");
        let cur = format!("CAST(NULL AS {text})");
        let (aggs, outputs) = match calc {
            StockCalc::MedianAge => {
                let q = d
                    .quantile(&inc("v"), 0.5)
                    .ok_or_else(|| NoSqlForm::Dialect {
                        key: "measure.calc".into(),
                        construct: "an exact median".into(),
                        dialect: d.name(),
                    })?;
                (
                    vec![format!("{q} AS s")],
                    [
                        ("num", "NULL".to_owned()),
                        ("den", "NULL".to_owned()),
                        ("value", "a.s".to_owned()),
                        ("cur", cur),
                    ],
                )
            }
            StockCalc::ChurnRate
            | StockCalc::RetentionRate
            | StockCalc::Avg
            | StockCalc::GrossValueRetention
            | StockCalc::NetValueRetention
            | StockCalc::ValueChurnRate => (
                vec![
                    format!("SUM({}) AS s", inc("n")),
                    format!("SUM({}) AS s2", inc("d")),
                ],
                [
                    ("num", "a.s".to_owned()),
                    ("den", "a.s2".to_owned()),
                    (
                        "value",
                        "CASE WHEN a.s2 <> 0 THEN CAST(a.s AS DOUBLE) / a.s2 END".to_owned(),
                    ),
                    ("cur", cur),
                ],
            ),
            StockCalc::Sum if with_currency => (
                vec![
                    format!("SUM({}) AS s", inc("n")),
                    format!("MIN({}) AS cur_lo", inc("cur")),
                    format!("MAX({}) AS cur_hi", inc("cur")),
                ],
                [
                    ("num", "COALESCE(a.s, 0)".to_owned()),
                    ("den", "NULL".to_owned()),
                    ("value", "CASE WHEN a.cur_lo <> a.cur_hi THEN NULL ELSE CAST(COALESCE(a.s, 0) AS DOUBLE) END".to_owned()),
                    ("cur", "CASE WHEN a.cur_lo IS NULL THEN NULL WHEN a.cur_lo <> a.cur_hi THEN 'MIXED' ELSE a.cur_lo END".to_owned()),
                ],
            ),
            _ => (
                vec![format!("SUM({}) AS s", inc("n"))],
                [
                    ("num", "COALESCE(a.s, 0)".to_owned()),
                    ("den", "NULL".to_owned()),
                    ("value", "CAST(COALESCE(a.s, 0) AS DOUBLE)".to_owned()),
                    ("cur", cur),
                ],
            ),
        };
        Ok(self.cells(&p, &open.codes, &aggs, "", &outputs, true))
    }

    /// `<p>_chg`: each running spell's value changes, `(opener, ek, from_us, position, v)`: its
    /// opener's value at its start, then (open-ended spells) the value events of its stream
    /// after the opener and before its closer. A value that is not a number counts 0.
    fn values(
        &mut self,
        c: &Compiled,
        p: &str,
        open: &str,
        opens: &[String],
        closes: &[String],
        value: &std::collections::BTreeMap<String, Expr>,
    ) -> Result<(), NoSqlForm> {
        let mut types: Vec<String> = opens.to_vec();
        let changes: Vec<String> = value
            .keys()
            .filter(|t| !opens.contains(t) && !closes.contains(t))
            .cloned()
            .collect();
        types.extend(changes.iter().cloned());
        let mut scope = Scope::new("e", BTreeSet::new(), &c.params, true);
        let mut whens = Vec::new();
        for (ty, e) in value {
            scope.types = BTreeSet::from([ty.clone()]);
            let key = format!("measure.value.{ty}");
            let v = self.lower.expr(&mut scope, &key, e)?;
            let number = match v.ty {
                Ty::Int | Ty::Float => v.text,
                Ty::Bool => format!("CAST({} AS INTEGER)", v.text),
                Ty::Null => "0".to_owned(),
                other => {
                    return Err(NoSqlForm::construct_at(
                        &key,
                        format!("a value that is {other:?}"),
                        "a spell's value is a number",
                    ))
                }
            };
            whens.push(format!("WHEN {} THEN COALESCE({number}, 0)", self.text(ty)));
        }
        // An opener without a value expression of its own opens with 0 (1 when the measure
        // has no values at all, which the valued calculations never are).
        let v = if whens.is_empty() {
            "1".to_owned()
        } else {
            format!("CASE e.event_type {} ELSE 0 END", whens.join(" "))
        };
        self.ctes.push((
            format!("{p}_vals"),
            format!(
                "SELECT e.stream_id, e.position, e.occurred_us, e.event_type, {v} AS v FROM marked e{}\n  WHERE {} AND e.stream_id IN (SELECT stream_id FROM {open})",
                scope.joins(),
                self.is_in("e.event_type", &types)
            ),
        ));
        self.ctes.push((
            format!("{p}_chg"),
            format!(
                "SELECT s.opener, s.ek, o.occurred_us AS from_us, o.position, o.v FROM {p}_spells s JOIN {p}_vals o ON o.position = s.opener WHERE s.code IS NULL\n  UNION ALL SELECT s.opener, s.ek, e.occurred_us, e.position, e.v FROM {p}_spells s JOIN {p}_vals e ON e.stream_id = s.stream_id AND e.position > s.opener AND (s.close_pos IS NULL OR e.position < s.close_pos)\n  WHERE s.code IS NULL AND s.fixed = 0 AND {}",
                self.is_in("e.event_type", &changes)
            ),
        ));
        Ok(())
    }
}
