//! Facts of a measure: selected, timed, picked and coded by the exclusion rules (`_coded`),
//! placed in the periods with their contribution (`_rows`) and reduced per period (`_cells`);
//! the simple and cumulative measures and the ratio of two inputs.

use super::*;

impl Builder<'_> {
    /// The facts of `facts`, with their time, `where`, `pick`, rules and `values`.
    pub(super) fn coded(
        &mut self,
        c: &Compiled,
        facts: &CFacts,
        time: Option<&Expr>,
        rules: &[&[CRule]],
        values: &[Value<'_>],
    ) -> Result<Coded, NoSqlForm> {
        let p = self.prefix();
        let d = self.lower.dialect;
        let types: BTreeSet<String> = facts.events.iter().cloned().collect();
        let mut scope = Scope::new("f", types, &c.params, true);
        let mut select = vec![
            "f.position".to_owned(),
            "f.stream_id".to_owned(),
            "f.global_code".to_owned(),
            "f.occurred_us".to_owned(),
            "f.event_type".to_owned(),
        ];
        let t = match time {
            None => "f.occurred_us".to_owned(),
            Some(e) => {
                let s = self.lower.expr(&mut scope, "time", e)?;
                match s.ty {
                    Ty::Time => s.text,
                    Ty::Stamp => d.epoch_us(&s.text),
                    Ty::Null => "CAST(NULL AS BIGINT)".to_owned(),
                    other => {
                        return Err(NoSqlForm::construct_at(
                            "time",
                            format!("a time that is {other:?}"),
                            "the engine reads an instant (or parses a text)",
                        ))
                    }
                }
            }
        };
        select.push(format!("{t} AS t"));
        let w = match &facts.filter {
            Some(e) => truthy(&self.lower.expr(&mut scope, "facts.where", e)?),
            None => "TRUE".to_owned(),
        };
        select.push(format!("{w} AS w"));
        let mut codes = global_codes();
        let pick = if facts.pick == Pick::All {
            None
        } else {
            let key = match &facts.entity {
                Some(e) => {
                    let s = self.lower.expr(&mut scope, "facts.entity", e)?;
                    self.key_text("facts.entity", &s)?
                }
                None => "f.stream_id".to_owned(),
            };
            select.push(format!("{key} AS pick_key"));
            push_code(&mut codes, &facts.pick_code);
            Some(facts.pick)
        };
        let mut whens = Vec::new();
        for (i, rule) in rules.iter().flat_map(|r| r.iter()).enumerate() {
            let key = format!("exclude[{i}].when");
            let s = self.lower.expr(&mut scope, &key, &rule.when)?;
            select.push(format!("{} AS r{i}", truthy(&s)));
            whens.push(format!("WHEN r{i} THEN {}", self.text(&rule.code)));
            push_code(&mut codes, &rule.code);
        }
        let mut out_types = Vec::new();
        for v in values {
            let (name, text, ty) = match v {
                Value::Expr(name, key, e) => {
                    let s = self.lower.expr(&mut scope, key, e)?;
                    (*name, s.text, s.ty)
                }
                Value::Truthy(name, key, e) => {
                    let s = self.lower.expr(&mut scope, key, e)?;
                    (*name, truthy(&s), Ty::Bool)
                }
                Value::Key(name, key, e) => {
                    let text = match e {
                        Some(e) => {
                            let s = self.lower.expr(&mut scope, key, e)?;
                            self.key_text(key, &s)?
                        }
                        None => "f.stream_id".to_owned(),
                    };
                    (*name, text, Ty::Text)
                }
            };
            select.push(format!("{text} AS {name}"));
            out_types.push((name.to_owned(), ty));
        }
        let facts_cte = format!(
            "SELECT {}\n  FROM marked f{}\n  WHERE {}",
            select.join(",\n    "),
            scope.joins(),
            self.is_in("f.event_type", &facts.events)
        );
        self.ctes.push((format!("{p}_facts"), facts_cte));
        let pick_when = match pick {
            None => String::new(),
            Some(Pick::Last) => format!(
                " WHEN ROW_NUMBER() OVER (PARTITION BY CASE WHEN global_code IS NULL THEN 0 ELSE 1 END, pick_key ORDER BY t DESC NULLS LAST, position DESC) > 1 THEN {}",
                self.text(&facts.pick_code)
            ),
            Some(_) => format!(
                " WHEN ROW_NUMBER() OVER (PARTITION BY CASE WHEN global_code IS NULL THEN 0 ELSE 1 END, pick_key ORDER BY t ASC NULLS FIRST, position ASC) > 1 THEN {}",
                self.text(&facts.pick_code)
            ),
        };
        let carried: Vec<&str> = out_types.iter().map(|(n, _)| n.as_str()).collect();
        let mut columns = vec!["position", "stream_id", "event_type", "occurred_us", "t"];
        columns.extend(carried);
        let coded = format!(
            "SELECT {},\n    CASE WHEN global_code IS NOT NULL THEN global_code{pick_when}{} END AS code\n  FROM {p}_facts WHERE w",
            columns.join(", "),
            if whens.is_empty() {
                String::new()
            } else {
                format!(" {}", whens.join(" "))
            }
        );
        let name = format!("{p}_coded");
        self.ctes.push((name.clone(), coded));
        Ok(Coded {
            name,
            codes,
            types: out_types,
        })
    }

    /// Rows of coded facts placed in the periods (`key_us` of each, the fact's columns).
    pub(super) fn place(&self, coded: &str, placement: Placement) -> String {
        let d = self.lower.dialect;
        let lo = match placement {
            Placement::Period => "p.start_us".to_owned(),
            Placement::Window(w) => format!(
                "p.end_us - {}",
                i128::from(w) * i128::from(MICROS_PER_SECOND)
            ),
            Placement::ToDate(g) => d.ts_us(&d.trunc(g, &d.ts("p.end_us - 1"))),
        };
        format!(
            "{} p JOIN {coded} c ON c.t >= {lo} AND c.t < p.end_us",
            self.periods
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn simple(
        &mut self,
        c: &Compiled,
        facts: &CFacts,
        agg: &CAgg,
        time: Option<&Expr>,
        rules: &[&[CRule]],
        placement: Placement,
    ) -> Result<Cells, NoSqlForm> {
        let mut values = Vec::new();
        if let Some(of) = &agg.of {
            values.push(Value::Expr("v", "measure.of".into(), of));
        }
        if let Some(when) = &agg.when {
            values.push(Value::Truthy("hit", "measure.when".into(), when));
        }
        if let Some(per) = &agg.per {
            values.push(Value::Expr("per", "measure.per".into(), per));
        }
        if let Some(cur) = &agg.currency {
            values.push(Value::Expr("cur", "measure.currency".into(), cur));
        }
        let coded = self.coded(c, facts, time, rules, &values)?;
        let from = self.place(&coded.name, placement);
        let value = ValueColumn {
            text: if agg.of.is_some() { "c.v" } else { "NULL" }.into(),
            ty: coded.ty("v"),
        };
        self.reduce_simple(&coded, &from, agg, &value)
    }

    /// The contribution of each placed fact for `agg` and its reduction per period.
    pub(super) fn reduce_simple(
        &mut self,
        coded: &Coded,
        from: &str,
        agg: &CAgg,
        value: &ValueColumn,
    ) -> Result<Cells, NoSqlForm> {
        let p = self.prefix();
        let mut codes = coded.codes.clone();
        let needs_value = !matches!(agg.agg, Agg::Count | Agg::Share);
        let v = match value.ty {
            // A distinct count reads the value's key, never the value as a number.
            _ if agg.agg == Agg::CountDistinct => "NULL".to_owned(),
            Ty::Int | Ty::Float | Ty::Null => value.text.clone(),
            Ty::Bool => format!("CAST({} AS INTEGER)", value.text),
            other if needs_value => {
                return Err(NoSqlForm::construct_at(
                    "measure.of",
                    format!("a value that is {other:?}"),
                    "the engine aggregates numbers",
                ))
            }
            _ => "NULL".to_owned(),
        };
        let per_ty = coded.ty("per");
        let mut missing = Vec::new();
        if needs_value && agg.agg != Agg::CountDistinct {
            missing.push(format!("{v} IS NULL"));
        }
        if agg.agg == Agg::RatioOfSums {
            missing.push("c.per IS NULL".to_owned());
        }
        let code = if missing.is_empty() {
            "c.code".to_owned()
        } else {
            push_code(&mut codes, &agg.missing_code);
            format!(
                "CASE WHEN c.code IS NOT NULL THEN c.code WHEN {} THEN {} END",
                missing.join(" OR "),
                self.text(&agg.missing_code)
            )
        };
        let mut row = vec!["p.key_us".to_owned(), format!("{code} AS code")];
        row.push(format!("{v} AS v"));
        if agg.when.is_some() {
            row.push("CASE WHEN c.hit THEN 1 ELSE 0 END AS hit".to_owned());
        }
        match (agg.agg, agg.per.as_ref()) {
            (Agg::RatioOfSums, Some(_)) => {
                let per = match per_ty {
                    Ty::Int | Ty::Float | Ty::Null => "c.per".to_owned(),
                    Ty::Bool => "CAST(c.per AS INTEGER)".to_owned(),
                    other => {
                        return Err(NoSqlForm::construct_at(
                            "measure.per",
                            format!("a denominator that is {other:?}"),
                            "the engine sums numbers",
                        ))
                    }
                };
                row.push(format!("{per} AS per"));
            }
            (Agg::MeanPer, Some(_)) => {
                let s = Sql {
                    text: "c.per".into(),
                    ty: per_ty,
                };
                row.push(format!("{} AS k", self.key_text("measure.per", &s)?));
            }
            _ => {}
        }
        if agg.agg == Agg::CountDistinct {
            let s = Sql {
                text: "c.v".into(),
                ty: coded.ty("v"),
            };
            row.push(format!("{} AS k", self.key_text("measure.of", &s)?));
        }
        let currency = agg.currency.is_some();
        if currency {
            let s = Sql {
                text: "c.cur".into(),
                ty: coded.ty("cur"),
            };
            row.push(format!("{} AS cur", self.key_text("measure.currency", &s)?));
        }
        self.ctes.push((
            format!("{p}_rows"),
            format!("SELECT {}\n  FROM {from}", row.join(", ")),
        ));
        let inc = |x: &str| format!("CASE WHEN code IS NULL THEN {x} END");
        let mut aggs = Vec::new();
        let (num, den, val);
        let ratio =
            |n: &str, d: &str| format!("CASE WHEN {d} <> 0 THEN CAST({n} AS DOUBLE) / {d} END");
        let any = "a.included > 0";
        match agg.agg {
            Agg::Count => {
                num = "COALESCE(a.included, 0)".to_owned();
                den = "NULL".to_owned();
                val = format!("CAST({num} AS DOUBLE)");
            }
            Agg::Sum => {
                aggs.push(format!("SUM({}) AS s", inc("v")));
                num = "COALESCE(a.s, 0)".to_owned();
                den = "NULL".to_owned();
                val = format!("CAST({num} AS DOUBLE)");
            }
            Agg::Avg => {
                aggs.push(format!("SUM({}) AS s", inc("v")));
                num = "a.s".to_owned();
                den = format!("CASE WHEN {any} THEN a.included END");
                val = ratio("a.s", "a.included");
            }
            Agg::Share if agg.value_is_count => {
                aggs.push(format!("SUM({}) AS s", inc("hit")));
                num = "COALESCE(a.s, 0)".to_owned();
                den = "COALESCE(a.included, 0)".to_owned();
                val = format!("CAST({num} AS DOUBLE)");
            }
            Agg::Share => {
                aggs.push(format!("SUM({}) AS s", inc("hit")));
                num = "a.s".to_owned();
                den = format!("CASE WHEN {any} THEN a.included END");
                val = ratio("a.s", "a.included");
            }
            Agg::RatioOfSums => {
                aggs.push(format!("SUM({}) AS s", inc("v")));
                aggs.push(format!("SUM({}) AS s2", inc("per")));
                num = "a.s".to_owned();
                den = "a.s2".to_owned();
                val = ratio("a.s", "a.s2");
            }
            Agg::CountDistinct => {
                aggs.push(format!("COUNT(DISTINCT {}) AS s", inc("k")));
                num = "COALESCE(a.s, 0)".to_owned();
                den = "NULL".to_owned();
                val = format!("CAST({num} AS DOUBLE)");
            }
            Agg::MeanPer => {
                aggs.push(format!("SUM({}) AS s", inc("v")));
                aggs.push(format!("COUNT(DISTINCT {}) AS s2", inc("k")));
                num = "a.s".to_owned();
                den = format!("CASE WHEN {any} THEN a.s2 END");
                val = ratio("a.s", "a.s2");
            }
            Agg::Min | Agg::Max => {
                let f = if agg.agg == Agg::Min { "MIN" } else { "MAX" };
                aggs.push(format!("{f}({}) AS s", inc("CAST(v AS DOUBLE)")));
                num = "NULL".to_owned();
                den = "NULL".to_owned();
                val = "a.s".to_owned();
            }
            Agg::Median | Agg::Percentile => {
                let q = self
                    .lower
                    .dialect
                    .quantile(&inc("CAST(v AS DOUBLE)"), agg.p)
                    .ok_or_else(|| NoSqlForm::Dialect {
                        key: "measure.agg".into(),
                        construct: "an exact median or percentile".into(),
                        dialect: self.lower.dialect.name(),
                    })?;
                aggs.push(format!("{q} AS s"));
                num = "NULL".to_owned();
                den = "NULL".to_owned();
                val = "a.s".to_owned();
            }
        }
        if currency {
            aggs.push(format!("MIN({}) AS cur_lo", inc("cur")));
            aggs.push(format!("MAX({}) AS cur_hi", inc("cur")));
        }
        let (val, cur) = if currency {
            (
                format!("CASE WHEN a.cur_lo <> a.cur_hi THEN NULL ELSE {val} END"),
                "CASE WHEN a.cur_lo IS NULL THEN NULL WHEN a.cur_lo <> a.cur_hi THEN 'MIXED' ELSE a.cur_lo END".to_owned(),
            )
        } else {
            (
                val,
                format!("CAST(NULL AS {})", self.lower.dialect.text_type()),
            )
        };
        let num_int = match agg.agg {
            Agg::Count | Agg::CountDistinct | Agg::Share => true,
            Agg::Min | Agg::Max | Agg::Median | Agg::Percentile => false,
            Agg::Sum | Agg::Avg | Agg::RatioOfSums | Agg::MeanPer => value.ty != Ty::Float,
        };
        let outputs = [("num", num), ("den", den), ("value", val), ("cur", cur)];
        Ok(self.cells(&p, &codes, &aggs, "", &outputs, num_int))
    }

    /// The per-period cells of rows `<p>_rows` (`key_us`, `code`, ...): counts by code and
    /// `aggs`, then `outputs` over them (`a.` columns), every period present.
    pub(super) fn cells(
        &mut self,
        p: &str,
        codes: &[String],
        aggs: &[String],
        join: &str,
        outputs: &[(&str, String)],
        num_int: bool,
    ) -> Cells {
        let mut select = vec![
            "key_us".to_owned(),
            "SUM(CASE WHEN code IS NULL THEN 1 ELSE 0 END) AS included".to_owned(),
        ];
        for (i, code) in codes.iter().enumerate() {
            select.push(format!(
                "SUM(CASE WHEN code = {} THEN 1 ELSE 0 END) AS x{i}",
                self.text(code)
            ));
        }
        select.extend(aggs.iter().cloned());
        self.ctes.push((
            format!("{p}_agg"),
            format!(
                "SELECT {}\n  FROM {p}_rows GROUP BY key_us",
                select.join(", ")
            ),
        ));
        let mut out = vec![
            "p.key_us".to_owned(),
            "COALESCE(a.included, 0) AS included".to_owned(),
        ];
        for i in 0..codes.len() {
            out.push(format!("COALESCE(a.x{i}, 0) AS x{i}"));
        }
        for (name, text) in outputs {
            out.push(format!("{text} AS {name}"));
        }
        let name = format!("{p}_cells");
        self.ctes.push((
            name.clone(),
            format!(
                "SELECT {}\n  FROM {} p LEFT JOIN {p}_agg a ON a.key_us = p.key_us{join}",
                out.join(",\n    "),
                self.periods
            ),
        ));
        Cells {
            name,
            codes: codes.to_vec(),
            num_int,
        }
    }

    /// A ratio of two inputs' cells: value n ÷ d, numerator and denominator the inputs'
    /// exact counts or values, counts added up.
    pub(super) fn ratio(&mut self, n: &Cells, d: &Cells) -> Cells {
        let p = self.prefix();
        let mut codes = n.codes.clone();
        for code in &d.codes {
            push_code(&mut codes, code);
        }
        let side = |cells: &Cells, alias: &str, code: &str| {
            cells
                .codes
                .iter()
                .position(|c| c == code)
                .map_or_else(|| "0".to_owned(), |i| format!("{alias}.x{i}"))
        };
        let mut select = vec![
            "n.key_us".to_owned(),
            "n.included + d.included AS included".to_owned(),
        ];
        for (i, code) in codes.iter().enumerate() {
            select.push(format!(
                "{} + {} AS x{i}",
                side(n, "n", code),
                side(d, "d", code)
            ));
        }
        select.push("CASE WHEN d.value <> 0 THEN n.value / d.value END AS value".to_owned());
        // The engine's numerator and denominator: an input's exact count or sum, else its value.
        let exact = |cells: &Cells, alias: &str| {
            if cells.num_int {
                format!("{alias}.num")
            } else {
                format!("{alias}.value")
            }
        };
        select.push(format!("{} AS num", exact(n, "n")));
        select.push(format!("{} AS den", exact(d, "d")));
        select.push(format!(
            "CAST(NULL AS {}) AS cur",
            self.lower.dialect.text_type()
        ));
        let name = format!("{p}_cells");
        self.ctes.push((
            name.clone(),
            format!(
                "SELECT {}\n  FROM {} n JOIN {} d ON d.key_us = n.key_us",
                select.join(",\n    "),
                n.name,
                d.name
            ),
        ));
        Cells {
            name,
            codes,
            num_int: n.num_int,
        }
    }
}
