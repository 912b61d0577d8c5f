//! Stocks: spells opened and closed by events, rolled up to entities, read at the periods'
//! ends (and starts, for pairs), as `measures/stock.rs` computes them.
//!
//! A stream's openers and closers in log order make its open-ended spells: an opener starts
//! one when the previous of them was a closer (or there was none), a closer ends it when the
//! previous was an opener; an opener of a type with a fixed length (`lasts`) makes a spell of
//! its own. Spells whose opener a rule excludes count under the rule's code where they run;
//! the others merge per entity into islands of continuous activity (overlapping or touching
//! spells), and an entity is active at an instant when one of its islands holds it. Values
//! of spells (`value`, the sums and value retentions) are not translated yet.

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
            calc,
            ..
        } = &c.measure
        else {
            return Err(NoSqlForm::Measure {
                measure: "stock".into(),
                why: "not a stock".into(),
            });
        };
        let calc = *calc;
        if matches!(
            calc,
            StockCalc::Sum
                | StockCalc::Avg
                | StockCalc::GrossValueRetention
                | StockCalc::NetValueRetention
                | StockCalc::ValueChurnRate
        ) {
            return Err(NoSqlForm::construct_at(
                "measure.calc",
                "a stock of values (sum, avg, value retention)",
                "the value of each spell at an instant, changed by later events, is not translated yet",
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
        let values = [Value::Key("ek", "measure.entity".into(), entity.as_ref())];
        let open = self.coded(c, &facts, None, &[&c.rules], &values)?;
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
            "SELECT o.position AS opener, o.ek, o.code, o.occurred_us AS start_us,\n    CASE WHEN cl.position IS NULL THEN NULL WHEN cl.end_us > o.occurred_us THEN cl.end_us ELSE o.occurred_us END AS end_us\n  FROM {p}_edges x JOIN {} o ON o.position = x.position LEFT JOIN {p}_close cl ON cl.position = x.next_pos\n  WHERE x.kind = 'O'",
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
                "\n  UNION ALL SELECT o.position, o.ek, o.code, o.occurred_us, o.occurred_us + CASE o.event_type {} END\n  FROM {} o WHERE {}",
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
                    "SELECT p.key_us, CAST(NULL AS {text}) AS code, 1 AS n, CAST(NULL AS BIGINT) AS d, CAST(NULL AS DOUBLE) AS v\n  FROM {periods} p JOIN {p}_first f ON {}",
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
                    "SELECT p.key_us, CAST(NULL AS {text}) AS code, {n} AS n, {den} AS d, CAST(NULL AS DOUBLE) AS v\n  FROM {periods} p JOIN {p}_islands i ON {}\n  LEFT JOIN {p}_islands i1 ON i1.ek = i.ek AND {}",
                    holds("i", "p.start_us"),
                    holds("i1", "p.end_us")
                )
            }
            StockCalc::MedianAge => format!(
                "SELECT p.key_us, CAST(NULL AS {text}) AS code, CAST(NULL AS BIGINT) AS n, CAST(NULL AS BIGINT) AS d, CAST({} AS DOUBLE) AS v\n  FROM {periods} p JOIN {p}_islands i ON {}",
                d.int_div("(p.end_us - i.start_us)", &MICROS_PER_SECOND.to_string()),
                holds("i", "p.end_us")
            ),
            _ => format!(
                "SELECT p.key_us, CAST(NULL AS {text}) AS code, 1 AS n, CAST(NULL AS BIGINT) AS d, CAST(NULL AS DOUBLE) AS v\n  FROM {periods} p JOIN {p}_islands i ON {}",
                holds("i", "p.end_us")
            ),
        };
        let relevant = match calc {
            StockCalc::New => within("s.start_us"),
            _ if pair => runs("p.start_us"),
            _ => runs("p.end_us"),
        };
        self.ctes.push((
            format!("{p}_rows"),
            format!(
                "{included}\n  UNION ALL SELECT p.key_us, s.code, NULL, NULL, NULL\n  FROM {periods} p JOIN {p}_spells s ON s.code IS NOT NULL AND {relevant}"
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
            StockCalc::ChurnRate | StockCalc::RetentionRate => (
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
}
