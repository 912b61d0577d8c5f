//! The compiler's own checks, without an export: what the SQL says for catalog definitions,
//! what it refuses and why, and the engine's semantics in the lowered expressions (the
//! figures themselves are compared with the engine's in DuckDB by the gateway's
//! `tests/metric_sql.rs`).

use std::collections::{BTreeMap, BTreeSet};

use crm_domain::DomainEvent;

use super::lower::{Lower, Scope};
use super::*;
use crate::expr::parse;

/// Every event type of the domain, with a few typed columns the tests read.
fn layout() -> EventLayout {
    let column = |name: &str, path: &str, kind: ColumnKind| LayoutColumn {
        name: name.into(),
        path: path.into(),
        kind,
    };
    let mut l = EventLayout::new();
    for (_, t, _) in DomainEvent::catalog() {
        l.insert(t, TypeLayout::default());
    }
    l.insert(
        "OpportunityOpened",
        TypeLayout {
            columns: vec![
                column("kind", "kind", ColumnKind::Text),
                column("is_test", "is_test", ColumnKind::Bool),
            ],
            withheld: vec![],
        },
    );
    l.insert(
        "OpportunityWon",
        TypeLayout {
            columns: vec![
                column("amount_minor_units", "amount.minor_units", ColumnKind::Int),
                column("amount_currency", "amount.currency", ColumnKind::Text),
                column("competitor", "competitor", ColumnKind::Text),
                column("closed_at", "closed_at", ColumnKind::Timestamp),
            ],
            withheld: vec![],
        },
    );
    l
}

fn options(dialect: Dialect) -> SqlOptions {
    SqlOptions {
        dialect,
        grain: Grain::Month,
        export_dir: "/data/export/".into(),
    }
}

fn sql_of(id: &str, version: Option<u32>, dialect: Dialect) -> Result<String, SqlError> {
    let registry = Registry::builtin().unwrap();
    let m = registry.get(id, version).unwrap();
    to_sql(&registry, &m, &layout(), &options(dialect))
}

fn reason(id: &str, version: Option<u32>) -> NoSqlForm {
    match sql_of(id, version, Dialect::DuckDb) {
        Err(SqlError::NoSqlForm { reason, .. }) => reason,
        other => panic!("{id}: {other:?}"),
    }
}

#[test]
fn the_win_rate_reads_the_export_and_follows_the_engine() {
    let sql = sql_of("sales.win_rate", None, Dialect::DuckDb).unwrap();
    for part in [
        "read_parquet('/data/export/events/**/*.parquet', hive_partitioning = true, union_by_name = true)",
        // The global exclusions and the rules, in the engine's order.
        "THEN 'TEST' WHEN",
        "WHEN r0 THEN 'VOIDED' WHEN r1 THEN 'OUT_OF_SCOPE' WHEN r2 THEN 'REOPENED'",
        // `stream.kind` is the creation event's, compared null-safely.
        "f_c.\"kind\" IS NOT DISTINCT FROM 'renewal'",
        // `later('OpportunityReopened')`: a lookup after the fact's position.
        "last_pos > f.position",
        "strftime(s, '%Y-%m') AS period",
        "\"excluded_REOPENED\"",
    ] {
        assert!(sql.contains(part), "{part} not in\n{sql}");
    }
    let spark = sql_of("sales.win_rate", None, Dialect::Spark).unwrap();
    assert!(!spark.contains("read_parquet"));
    assert!(spark.contains("FROM events") && spark.contains("<=> 'renewal'"));
    assert!(spark.contains("`excluded_REOPENED`"));
    let trino = sql_of("sales.win_rate", None, Dialect::Trino).unwrap();
    assert!(trino.contains("CROSS JOIN UNNEST(sequence("));
}

#[test]
fn what_has_no_sql_form_names_the_construct_and_where_it_is() {
    match reason("sales.margin", None) {
        NoSqlForm::Construct { key, construct, .. } => {
            assert_eq!(
                (key.as_str(), construct.as_str()),
                ("measure.of", "`sum_field(..)`")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        reason("sales.pipeline_coverage", None),
        NoSqlForm::Unsupported { .. }
    ));
    assert_eq!(reason("customer.rfm", None).construct(), "rfm measure");
    assert_eq!(
        reason("service.time_to_resolution", Some(2)).construct(),
        "a duration on the business clock"
    );
    // An input without a SQL form is named with its reason.
    let acquisition = NoSqlForm::Input {
        input: "denominator".into(),
        metric: "x@1".into(),
        source: Box::new(NoSqlForm::Unsupported { needs: "y".into() }),
    };
    assert!(acquisition
        .to_string()
        .contains("input `denominator` (x@1)"));
    // Trino has no exact median.
    let registry = Registry::builtin().unwrap();
    let m = registry.get("sales.avg_deal_size", Some(2)).unwrap();
    assert!(matches!(
        to_sql(&registry, &m, &layout(), &options(Dialect::Trino)),
        Err(SqlError::NoSqlForm {
            reason: NoSqlForm::Dialect { .. },
            ..
        })
    ));
}

fn lower(text: &str) -> Result<Sql, NoSqlForm> {
    let layout = layout();
    let mut lower = Lower {
        dialect: Dialect::DuckDb,
        layout: &layout,
        lookups: Vec::new(),
        columns: BTreeMap::new(),
        uses_now: false,
        vars: BTreeMap::new(),
    };
    let params = BTreeMap::from([("grace_s".to_owned(), crate::definition::Param::Int(30))]);
    let types: BTreeSet<String> = ["OpportunityWon".to_owned()].into();
    let mut scope = Scope::new("f", types, &params, true);
    lower.expr(&mut scope, "k", &parse(text).unwrap())
}

#[test]
fn lowered_expressions_keep_the_engines_semantics() {
    // Null-safe equality, never null; `!=` of null and a text is true.
    assert_eq!(
        lower("payload.competitor == null").unwrap().text,
        "(f.\"competitor\" IS NULL)"
    );
    assert_eq!(
        lower("payload.competitor != 'x'").unwrap().text,
        "(NOT (f.\"competitor\" IS NOT DISTINCT FROM 'x'))"
    );
    // `and` is true or false, a null operand false.
    let and = lower("payload.amount.minor_units > 5 and payload.competitor == 'x'").unwrap();
    assert!(
        and.text
            .starts_with("(COALESCE((f.\"amount_minor_units\" > CAST(5 AS BIGINT)), FALSE) AND"),
        "{}",
        and.text
    );
    // `in` with a null item matches a missing value.
    let member = lower("payload.competitor in ['a', null]").unwrap().text;
    assert!(
        member.contains("IN ('a')") && member.contains("IS NULL"),
        "{member}"
    );
    // Instants are microseconds: seconds added, differences truncated to whole seconds.
    let due = lower("time(payload.closed_at) + params.grace_s")
        .unwrap()
        .text;
    assert_eq!(
        due,
        "(epoch_us(f.\"closed_at\") + CAST(30 AS BIGINT) * 1000000)"
    );
    let secs = lower("occurred_at - time(payload.closed_at)").unwrap().text;
    assert!(secs.ends_with("// 1000000)"), "{secs}");
    // A division is a float with no division by zero; `??` is COALESCE.
    let ratio = lower("payload.amount.minor_units / 2 ?? 0").unwrap().text;
    assert!(ratio.contains("NULLIF(CAST(2 AS BIGINT), 0)") && ratio.starts_with("COALESCE("));
    // A missing field is null; a text against a number, an object, `attr.x` are refused.
    assert_eq!(lower("payload.nothing").unwrap().text, "NULL");
    assert!(matches!(
        lower("payload.competitor == 5"),
        Err(NoSqlForm::Construct { .. })
    ));
    assert!(matches!(
        lower("payload.amount == null"),
        Err(NoSqlForm::Column { .. })
    ));
    assert!(matches!(
        lower("attr.region == 'x'"),
        Err(NoSqlForm::Construct { .. })
    ));
    // A lookup joins the stream's aggregate; its condition reads the looked-up event.
    let has = lower("has('OpportunityVoided', payload.reason == 'x')").unwrap();
    assert_eq!(has.text, "(f_lk0.stream_id IS NOT NULL)");
    let later = lower("later('OpportunityReopened')").unwrap();
    assert_eq!(later.text, "COALESCE(f_lk0.last_pos > f.position, FALSE)");
}
