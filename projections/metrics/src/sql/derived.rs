//! Derived metrics: a formula over other metrics' values, each input evaluated over the
//! query's periods or, with an offset, over the periods that many steps back
//! (`period::shift`), joined by period.

use std::collections::BTreeMap;

use super::*;

use crate::definition::InputRef;
use crate::expr::{BinOp, Root};

/// Whether a formula reads only its inputs, `period_days` and constants (the engine evaluates
/// it with no fact, so paths and stream functions read null there).
fn fact_free(e: &Expr) -> bool {
    match e {
        Expr::Lit(_) | Expr::Var(_) => true,
        Expr::Path(Root::Params, _) => true,
        Expr::Neg(x) | Expr::Not(x) => fact_free(x),
        Expr::Bin(_, a, b) => fact_free(a) && fact_free(b),
        Expr::List(items) => items.iter().all(fact_free),
        Expr::Call(name, args) => {
            matches!(
                name.as_str(),
                "min" | "max" | "abs" | "days" | "hours" | "exists"
            ) && args.iter().all(fact_free)
        }
        _ => false,
    }
}

impl Builder<'_> {
    /// The periods `offset` steps before the current ones, keyed by the current ones.
    fn shifted(&mut self, offset: u32) -> String {
        let d = self.lower.dialect;
        let name = format!("{}_periods", self.prefix());
        let periods = &self.periods;
        let text = if self.grain == Grain::All {
            let back = format!("(end_us - start_us) * {offset}");
            format!(
                "SELECT key_us, start_us - {back} AS start_us, end_us - {back} AS end_us FROM {periods}"
            )
        } else {
            let start = d.ts_us(&d.back(self.grain, &d.ts("start_us"), offset));
            let end = d.ts_us(&d.back(self.grain, &d.ts("end_us"), offset));
            format!("SELECT key_us, {start} AS start_us, {end} AS end_us FROM {periods}")
        };
        self.ctes.push((name.clone(), text));
        name
    }

    /// The cells of a derived metric.
    pub(super) fn derived(
        &mut self,
        c: &Compiled,
        expr: &Expr,
        inputs: &BTreeMap<String, InputRef>,
    ) -> Result<Cells, Fail> {
        if !fact_free(expr) {
            return Err(NoSqlForm::construct_at(
                "measure.expr",
                "a formula reading more than its inputs",
                "only inputs, period_days, params and min, max, abs, days, hours, exists are translated",
            )
            .into());
        }
        let mut parts: Vec<(String, Cells)> = Vec::new();
        for (name, input) in inputs {
            let m = self.registry.get(&input.metric, input.version)?;
            let saved = self.periods.clone();
            if input.offset > 0 {
                self.periods = self.shifted(input.offset);
            }
            let cells = self.measure(&m);
            self.periods = saved;
            let cells = cells.map_err(|e| match e {
                Fail::No(reason) => Fail::No(NoSqlForm::Input {
                    input: name.clone(),
                    metric: m.definition.key(),
                    source: Box::new(reason),
                }),
                other => other,
            })?;
            parts.push((name.clone(), cells));
        }
        let d = self.lower.dialect;
        let mut vars = BTreeMap::new();
        for (i, (name, _)) in parts.iter().enumerate() {
            vars.insert(name.clone(), Sql::new(format!("i{i}.value"), Ty::Float));
        }
        let seconds = d.int_div("(p.end_us - p.start_us)", &MICROS_PER_SECOND.to_string());
        vars.insert(
            "period_days".to_owned(),
            Sql::new(
                format!("(CAST({seconds} AS DOUBLE) / CAST(86400 AS DOUBLE))"),
                Ty::Float,
            ),
        );
        let saved = std::mem::replace(&mut self.lower.vars, vars);
        let mut scope = Scope::new("p", BTreeSet::new(), &c.params, false);
        let lowered = (|| -> Result<(Sql, Option<(Sql, Sql)>), NoSqlForm> {
            let value = self.lower.expr(&mut scope, "measure.expr", expr)?;
            let parts = match expr {
                Expr::Bin(BinOp::Div, a, b) => Some((
                    self.lower.expr(&mut scope, "measure.expr", a)?,
                    self.lower.expr(&mut scope, "measure.expr", b)?,
                )),
                _ => None,
            };
            Ok((value, parts))
        })();
        self.lower.vars = saved;
        let (value, division) = lowered?;
        let number = |s: &Sql| -> Result<String, NoSqlForm> {
            Ok(match s.ty {
                Ty::Null => "CAST(NULL AS DOUBLE)".to_owned(),
                Ty::Bool => format!("CAST(CAST({} AS INTEGER) AS DOUBLE)", s.text),
                Ty::Int | Ty::Float => format!("CAST({} AS DOUBLE)", s.text),
                other => {
                    return Err(NoSqlForm::construct_at(
                        "measure.expr",
                        format!("a formula that is {other:?}"),
                        "a figure is a number",
                    ))
                }
            })
        };
        let (num, den) = match &division {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (
                "CAST(NULL AS DOUBLE)".to_owned(),
                "CAST(NULL AS DOUBLE)".to_owned(),
            ),
        };
        let mut codes: Vec<String> = Vec::new();
        for (_, cells) in &parts {
            for code in &cells.codes {
                push_code(&mut codes, code);
            }
        }
        let sum = |column: &dyn Fn(usize, &Cells) -> String| -> String {
            let terms: Vec<String> = parts
                .iter()
                .enumerate()
                .map(|(i, (_, c))| column(i, c))
                .collect();
            terms.join(" + ")
        };
        let mut select = vec![
            "p.key_us".to_owned(),
            format!("{} AS included", sum(&|i, _| format!("i{i}.included"))),
        ];
        for (k, code) in codes.iter().enumerate() {
            select.push(format!(
                "{} AS x{k}",
                sum(&|i, cells: &Cells| cells
                    .codes
                    .iter()
                    .position(|c| c == code)
                    .map_or_else(|| "0".to_owned(), |j| format!("i{i}.x{j}")))
            ));
        }
        select.push(format!("{} AS value", number(&value)?));
        select.push(format!("{num} AS num"));
        select.push(format!("{den} AS den"));
        select.push(format!("CAST(NULL AS {}) AS cur", d.text_type()));
        let joins: Vec<String> = parts
            .iter()
            .enumerate()
            .map(|(i, (_, cells))| format!("JOIN {} i{i} ON i{i}.key_us = p.key_us", cells.name))
            .collect();
        let name = format!("{}_cells", self.prefix());
        self.ctes.push((
            name.clone(),
            format!(
                "SELECT {}\n  FROM {} p {}",
                select.join(",\n    "),
                self.periods,
                joins.join(" ")
            ),
        ));
        Ok(Cells {
            name,
            codes,
            num_int: false,
        })
    }
}
