//! The measures over coded facts that need more than one contribution per fact: entities
//! (repeat purchasers), durations from a start event, conversions within a window.

use super::*;

impl Builder<'_> {
    pub(super) fn entities(
        &mut self,
        c: &Compiled,
        facts: &CFacts,
        min_facts: u32,
    ) -> Result<Cells, NoSqlForm> {
        let values = [Value::Key(
            "ek",
            "facts.entity".into(),
            facts.entity.as_ref(),
        )];
        let coded = self.coded(c, facts, c.time.as_ref(), &[&c.rules], &values)?;
        let p = self.prefix();
        let from = self.place(&coded.name, Placement::Period);
        self.ctes.push((
            format!("{p}_rows"),
            format!("SELECT p.key_us, c.code, c.ek\n  FROM {from}"),
        ));
        self.ctes.push((
            format!("{p}_groups"),
            format!("SELECT key_us, ek, COUNT(*) AS n FROM {p}_rows WHERE code IS NULL GROUP BY key_us, ek"),
        ));
        self.ctes.push((
            format!("{p}_entities"),
            format!("SELECT key_us, SUM(CASE WHEN n >= {min_facts} THEN 1 ELSE 0 END) AS num, COUNT(*) AS den FROM {p}_groups GROUP BY key_us"),
        ));
        let text = self.lower.dialect.text_type();
        let outputs = [
            ("num", "e.num".to_owned()),
            ("den", "e.den".to_owned()),
            (
                "value",
                "CASE WHEN e.den <> 0 THEN CAST(e.num AS DOUBLE) / e.den END".to_owned(),
            ),
            ("cur", format!("CAST(NULL AS {text})")),
        ];
        let join = format!(" LEFT JOIN {p}_entities e ON e.key_us = p.key_us");
        Ok(self.cells(&p, &coded.codes, &[], &join, &outputs, true))
    }

    pub(super) fn duration(
        &mut self,
        c: &Compiled,
        facts: &CFacts,
        agg: &CAgg,
        spec: &DurationSpec<'_>,
    ) -> Result<Cells, NoSqlForm> {
        let mut values = Vec::new();
        if let Some(when) = &agg.when {
            values.push(Value::Truthy("hit", "measure.when".into(), when));
        }
        if let Some(cur) = &agg.currency {
            values.push(Value::Expr("cur", "measure.currency".into(), cur));
        }
        if agg.per.is_some() {
            return Err(NoSqlForm::construct_at(
                "measure.per",
                "a duration with `per`",
                "not translated",
            ));
        }
        let coded = self.coded(c, facts, c.time.as_ref(), &[&c.rules], &values)?;
        let p = self.prefix();
        let mut scope = Scope::new("s", spec.start.iter().cloned().collect(), &c.params, true);
        let filter = match spec.filter {
            Some(e) => truthy(&self.lower.expr(&mut scope, "measure.start_where", e)?),
            None => "TRUE".to_owned(),
        };
        self.ctes.push((
            format!("{p}_starts"),
            format!(
                "SELECT s.stream_id, s.position FROM marked s{}\n  WHERE s.event_type IN ({}) AND s.global_code IS NULL AND {filter}",
                scope.joins(),
                self.list(spec.start)
            ),
        ));
        let pick = if spec.last { "MAX" } else { "MIN" };
        self.ctes.push((
            format!("{p}_match"),
            format!(
                "SELECT c.position, {pick}(s.position) AS start_pos FROM {} c JOIN {p}_starts s ON s.stream_id = c.stream_id AND s.position < c.position GROUP BY c.position",
                coded.name
            ),
        ));
        let d = self.lower.dialect;
        let secs = d.int_div(
            "(c.occurred_us - st.occurred_us)",
            &MICROS_PER_SECOND.to_string(),
        );
        let mut codes = coded.codes.clone();
        push_code(&mut codes, "NO_START");
        push_code(&mut codes, "NEGATIVE_DURATION");
        let mut carried = vec![
            "c.t".to_owned(),
            format!(
                "CASE WHEN c.code IS NOT NULL THEN c.code WHEN st.position IS NULL THEN 'NO_START' WHEN {secs} < 0 THEN 'NEGATIVE_DURATION' END AS code"
            ),
            format!("CASE WHEN st.position IS NULL THEN NULL ELSE {secs} END AS v"),
        ];
        for (name, _) in &coded.types {
            carried.push(format!("c.{name}"));
        }
        self.ctes.push((
            format!("{p}_timed"),
            format!(
                "SELECT {}\n  FROM {} c LEFT JOIN {p}_match m ON m.position = c.position LEFT JOIN marked st ON st.position = m.start_pos",
                carried.join(", "),
                coded.name
            ),
        ));
        let timed = Coded {
            name: format!("{p}_timed"),
            codes,
            types: coded.types.clone(),
        };
        let from = self.place(&timed.name, Placement::Period);
        self.reduce_simple(
            &timed,
            &from,
            agg,
            &ValueColumn {
                text: "c.v".into(),
                ty: Ty::Int,
            },
        )
    }

    pub(super) fn conversion(
        &mut self,
        c: &Compiled,
        facts: &CFacts,
        spec: &ConversionSpec<'_>,
    ) -> Result<Cells, NoSqlForm> {
        let values = [Value::Key("ek", "measure.entity".into(), spec.entity)];
        let coded = self.coded(c, facts, c.time.as_ref(), &[&c.rules], &values)?;
        let p = self.prefix();
        let mut scope = Scope::new(
            "e",
            spec.conversion.iter().cloned().collect(),
            &c.params,
            true,
        );
        let key = match spec.conv_entity {
            Some(e) => {
                let s = self
                    .lower
                    .expr(&mut scope, "measure.conversion_entity", e)?;
                self.key_text("measure.conversion_entity", &s)?
            }
            None => "e.stream_id".to_owned(),
        };
        let filter = match spec.filter {
            Some(e) => truthy(&self.lower.expr(&mut scope, "measure.conversion_where", e)?),
            None => "TRUE".to_owned(),
        };
        self.ctes.push((
            format!("{p}_conv"),
            format!(
                "SELECT {key} AS ek, e.occurred_us AS ts FROM marked e{}\n  WHERE e.event_type IN ({}) AND e.global_code IS NULL AND {filter}",
                scope.joins(),
                self.list(spec.conversion)
            ),
        ));
        let window = i128::from(spec.window_s) * i128::from(MICROS_PER_SECOND);
        self.ctes.push((
            format!("{p}_hit"),
            format!(
                "SELECT c.position, MAX(CASE WHEN v.ts IS NULL THEN 0 ELSE 1 END) AS converted FROM {} c LEFT JOIN {p}_conv v ON v.ek = c.ek AND v.ts >= c.t AND v.ts <= c.t + {window} WHERE c.code IS NULL AND c.t IS NOT NULL GROUP BY c.position",
                coded.name
            ),
        ));
        self.lower.uses_now = true;
        let mut codes = coded.codes.clone();
        push_code(&mut codes, "PENDING");
        let from = self.place(&coded.name, Placement::Period);
        self.ctes.push((
            format!("{p}_rows"),
            format!(
                "SELECT p.key_us, CASE WHEN c.code IS NOT NULL THEN c.code WHEN COALESCE(h.converted, 0) = 0 AND c.t + {window} > (SELECT now_us FROM head) THEN 'PENDING' END AS code, COALESCE(h.converted, 0) AS hit\n  FROM {from} LEFT JOIN {p}_hit h ON h.position = c.position"
            ),
        ));
        let text = self.lower.dialect.text_type();
        let cur = format!("CAST(NULL AS {text})");
        let aggs = ["SUM(CASE WHEN code IS NULL THEN hit END) AS s".to_owned()];
        let outputs = if spec.count {
            [
                ("num", "COALESCE(a.s, 0)".to_owned()),
                ("den", "NULL".to_owned()),
                ("value", "CAST(COALESCE(a.s, 0) AS DOUBLE)".to_owned()),
                ("cur", cur),
            ]
        } else {
            [
                ("num", "a.s".to_owned()),
                (
                    "den",
                    "CASE WHEN a.included > 0 THEN a.included END".to_owned(),
                ),
                (
                    "value",
                    "CASE WHEN a.included <> 0 THEN CAST(a.s AS DOUBLE) / a.included END"
                        .to_owned(),
                ),
                ("cur", cur),
            ]
        };
        Ok(self.cells(&p, &codes, &aggs, "", &outputs, true))
    }
}

pub(super) struct DurationSpec<'a> {
    pub(super) start: &'a [String],
    pub(super) filter: Option<&'a Expr>,
    pub(super) last: bool,
}

pub(super) struct ConversionSpec<'a> {
    pub(super) entity: Option<&'a Expr>,
    pub(super) conversion: &'a [String],
    pub(super) filter: Option<&'a Expr>,
    pub(super) conv_entity: Option<&'a Expr>,
    pub(super) window_s: i64,
    pub(super) count: bool,
}
