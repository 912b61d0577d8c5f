//! The whole query: the events, the kept events and their global exclusions, the periods,
//! the lookups, the measure's CTEs and the answer.

use super::*;

impl Builder<'_> {
    /// The whole query: the events, the kept events and their global exclusions, the
    /// periods, the lookups, the measure's CTEs and the answer.
    pub(super) fn finish(
        &mut self,
        m: &RegisteredMetric,
        top: &Cells,
        options: &SqlOptions,
    ) -> Result<String, SqlError> {
        let d = options.dialect;
        let req = self.registry.requirements(m)?;
        let layout = self.lower.layout;
        let mut kept_types: Vec<String> = req.types.iter().cloned().collect();
        for t in CORRECTION_TYPES {
            if !kept_types.iter().any(|k| k == t) {
                kept_types.push((*t).to_owned());
            }
        }
        if req.attrs {
            kept_types.push(crm_domain::attributes::ATTRIBUTES_SET.to_owned());
        }
        let creation: BTreeSet<String> = req
            .types
            .iter()
            .filter_map(|t| crm_domain::DomainEvent::category_of(t))
            .map(str::to_owned)
            .collect();
        let facts: Vec<String> = req.fact_types.iter().cloned().collect();
        let is_test = layout.column_of(None, "is_test");
        let retracted = layout.column_of(Some("EventRetracted"), "event_id");
        let mut columns = self.lower.columns.clone();
        for (name, kind) in is_test.iter().chain(retracted.iter()) {
            columns.insert(name.clone(), *kind);
        }
        // A retraction names the retracted event's id; without a typed column it is in the
        // untyped payload's JSON (the engine parses it as a UUID: compared in lower case).
        let retracted_id = match &retracted {
            Some((name, _)) => format!("lower({})", d.ident(name)),
            None => {
                columns.insert(UNTYPED_PAYLOAD_COLUMN.to_owned(), ColumnKind::Json);
                format!(
                    "CASE WHEN event_type = 'EventRetracted' THEN lower({}) END",
                    d.json_text(&d.ident(UNTYPED_PAYLOAD_COLUMN), "event_id")
                )
            }
        };

        let mut sql = String::new();
        let _ = writeln!(
            sql,
            "-- {} v{}: {} (spec hash {})",
            m.definition.id, m.definition.version, m.definition.name, m.spec_hash
        );
        let _ = writeln!(
            sql,
            "-- `crm metric sql {} --version {} --period {} --dialect {}`: the figures of `crm metric {} --version {} --period {}`",
            m.definition.id,
            m.definition.version,
            options.grain,
            d,
            m.definition.id,
            m.definition.version,
            options.grain
        );
        let _ = writeln!(
            sql,
            "-- over the Parquet export (`crm export --out DIR`), at the export's last position, one row per period:"
        );
        let _ = writeln!(
            sql,
            "-- period, period_start, period_end (UTC), value, numerator, denominator, currency, included, excluded_<CODE>."
        );
        match d {
            Dialect::DuckDb => {}
            Dialect::Spark => {
                let _ = writeln!(sql, "-- Spark SQL: register the event files as the table `events` and use UTC, e.g.");
                let _ = writeln!(
                    sql,
                    "--   spark.conf.set(\"spark.sql.session.timeZone\", \"UTC\")"
                );
                let _ = writeln!(sql, "--   spark.read.option(\"mergeSchema\", \"true\").parquet(\"DIR/events\").createOrReplaceTempView(\"events\")");
            }
            Dialect::Trino => {
                let _ = writeln!(sql, "-- Trino: a table `events` over DIR/events (Parquet, partitioned by event_type and month).");
            }
        }
        if !columns.is_empty() {
            let names: Vec<String> = columns
                .iter()
                .map(|(name, kind)| format!("{name} {}", kind.sql_type(d)))
                .collect();
            let _ = writeln!(sql, "-- Payload columns read: {}.", names.join(", "));
            if d != Dialect::DuckDb {
                let _ = writeln!(
                    sql,
                    "-- `events` must have each of them: add one no event file has yet as a typed null column."
                );
            }
        }
        sql.push_str("WITH\n");
        let mut ctes: Vec<(String, String)> = Vec::new();
        if d == Dialect::DuckDb {
            let dir = options.export_dir.trim_end_matches('/');
            let mut source = format!(
                "SELECT * FROM read_parquet({}, hive_partitioning = true, union_by_name = true)",
                d.text(&format!("{dir}/{EVENT_FILES_GLOB}"))
            );
            if !columns.is_empty() {
                // Columns no exported event has yet are still there (null), so the query runs
                // on an export of any part of the log.
                let typed: Vec<String> = columns
                    .iter()
                    .map(|(name, kind)| {
                        format!("CAST(NULL AS {}) AS {}", kind.duckdb(), d.ident(name))
                    })
                    .collect();
                source.push_str(&format!(
                    "\n  UNION ALL BY NAME SELECT {} WHERE FALSE",
                    typed.join(", ")
                ));
            }
            ctes.push(("events".into(), source));
        }
        let mut kept = vec![
            "position".to_owned(),
            "stream_id".to_owned(),
            "stream_category".to_owned(),
            "stream_version".to_owned(),
            "event_id".to_owned(),
            "event_type".to_owned(),
            "actor".to_owned(),
            format!("{} AS occurred_us", d.epoch_us("occurred_at")),
            format!("{} AS recorded_us", d.epoch_us("recorded_at")),
            match &is_test {
                Some((name, _)) => format!("{} AS is_test_flag", d.ident(name)),
                None => "CAST(NULL AS BOOLEAN) AS is_test_flag".to_owned(),
            },
            format!("{retracted_id} AS retracted_id"),
        ];
        kept.extend(self.lower.columns.keys().map(|n| d.ident(n)));
        let mut keep = vec![format!("event_type IN ({})", self.list(&kept_types))];
        if !req.ref_categories.is_empty() {
            let cats: Vec<String> = req.ref_categories.iter().cloned().collect();
            keep.push(format!("stream_category IN ({})", self.list(&cats)));
        }
        if !creation.is_empty() {
            let cats: Vec<String> = creation.into_iter().collect();
            keep.push(format!(
                "(stream_version = 1 AND stream_category IN ({}))",
                self.list(&cats)
            ));
        }
        ctes.push((
            "kept".into(),
            format!(
                "SELECT {}\n  FROM events\n  WHERE {}",
                kept.join(", "),
                keep.join("\n     OR ")
            ),
        ));
        ctes.push((
            "test_streams".into(),
            "SELECT DISTINCT stream_id FROM kept WHERE (stream_version = 1 AND COALESCE(is_test_flag, FALSE)) OR event_type = 'RecordFlaggedTest'".into(),
        ));
        ctes.push((
            "merged_streams".into(),
            "SELECT DISTINCT stream_id FROM kept WHERE event_type = 'RecordMerged'".into(),
        ));
        ctes.push((
            "retracted".into(),
            "SELECT DISTINCT retracted_id AS event_id FROM kept WHERE event_type = 'EventRetracted' AND retracted_id IS NOT NULL".into(),
        ));
        ctes.push((
            "marked".into(),
            "SELECT k.*, CASE WHEN t.stream_id IS NOT NULL THEN 'TEST' WHEN m.stream_id IS NOT NULL AND k.stream_version = 1 THEN 'DUPLICATE' WHEN r.event_id IS NOT NULL THEN 'RETRACTED' END AS global_code\n  FROM kept k\n  LEFT JOIN test_streams t ON t.stream_id = k.stream_id\n  LEFT JOIN merged_streams m ON m.stream_id = k.stream_id\n  LEFT JOIN retracted r ON r.event_id = k.event_id".into(),
        ));
        if self.lower.uses_now {
            ctes.push((
                "head".into(),
                format!(
                    "SELECT MAX({}) AS now_us FROM events",
                    d.epoch_us("recorded_at")
                ),
            ));
        }
        ctes.push((
            "bounds".into(),
            format!(
                "SELECT MIN(occurred_us) AS lo, MAX(occurred_us) + {MICROS_PER_SECOND} AS hi, SUM(CASE WHEN {} THEN 1 ELSE 0 END) AS facts_n FROM kept",
                self.is_in("event_type", &facts)
            ),
        ));
        ctes.push(("periods".into(), d.periods(options.grain)));
        for (i, l) in self.lower.lookups.iter().enumerate() {
            let mut select = vec![
                "e.stream_id".to_owned(),
                "MIN(e.position) AS first_pos".to_owned(),
                "MAX(e.position) AS last_pos".to_owned(),
                "COUNT(*) AS n".to_owned(),
            ];
            for (j, s) in l.sums.iter().enumerate() {
                select.push(format!(
                    "CASE WHEN COUNT(*) = COUNT({v}) THEN SUM({v}) END AS sum{j}",
                    v = s.text
                ));
            }
            let cond = l
                .cond
                .as_ref()
                .map_or_else(String::new, |c| format!(" AND {c}"));
            ctes.push((
                format!("lk{i}"),
                format!(
                    "SELECT {}\n  FROM marked e WHERE e.event_type = {} AND e.global_code IS NULL{cond}\n  GROUP BY e.stream_id",
                    select.join(", "),
                    d.text(&l.ty)
                ),
            ));
        }
        ctes.append(&mut self.ctes);
        let body: Vec<String> = ctes
            .iter()
            .map(|(name, text)| format!("{name} AS (\n  {text}\n)"))
            .collect();
        sql.push_str(&body.join(",\n"));
        let mut answer = vec![
            "p.period".to_owned(),
            format!("{} AS period_start", d.ts("p.start_us")),
            format!("{} AS period_end", d.ts("p.end_us")),
            "c.value".to_owned(),
            "c.num AS numerator".to_owned(),
            "c.den AS denominator".to_owned(),
            "c.cur AS currency".to_owned(),
            "c.included".to_owned(),
        ];
        for (i, code) in top.codes.iter().enumerate() {
            answer.push(format!(
                "c.x{i} AS {}",
                d.ident(&format!("excluded_{code}"))
            ));
        }
        let _ = write!(
            sql,
            "\nSELECT {}\nFROM periods p JOIN {} c ON c.key_us = p.key_us\nORDER BY p.start_us\n",
            answer.join(",\n  "),
            top.name
        );
        Ok(sql)
    }
}
