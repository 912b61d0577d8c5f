//! Questions asked at query time: a breakdown by a custom attribute or any expression, and
//! conditions on the facts, over a catalog metric without a new definition.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

mod metrics_support;

use crm_metrics::{evaluate, Grain, Num, Query, Registry, WhereClause};
use metrics_support::{t, Log};

/// Reps r1 (East) and r2 (West), five decided deals, custom attributes on some of them.
async fn pipeline() -> Log {
    let mut log = Log::new();
    let mut ev = log.rep("r1", "East", "2023-12-01");
    ev.extend(log.rep("r2", "West", "2023-12-01"));
    ev.extend(log.deal("o1", "r1", Some(100_000), "2024-01-01", "2024-01-11"));
    ev.extend(log.deal("o2", "r1", None, "2024-01-05", "2024-01-20"));
    ev.extend(log.deal("o3", "r2", Some(300_000), "2024-01-10", "2024-02-09"));
    ev.extend(log.deal("o4", "r2", None, "2024-01-15", "2024-01-20"));
    ev.extend(log.deal("o7", "r1", None, "2024-02-01", "2024-02-10"));
    log.append(ev).await;
    let attrs = |v: serde_json::Value| v;
    log.set_attributes(
        "opportunity-o1",
        attrs(serde_json::json!({"source": "web"})),
        "2024-01-01",
    )
    .await;
    log.set_attributes(
        "opportunity-o2",
        attrs(serde_json::json!({"source": "web"})),
        "2024-01-05",
    )
    .await;
    // Changed after the deal closed: the close still counts under the earlier value.
    log.set_attributes(
        "opportunity-o2",
        attrs(serde_json::json!({"source": "partner"})),
        "2024-03-01",
    )
    .await;
    log.set_attributes(
        "opportunity-o3",
        attrs(serde_json::json!({"source": "event", "score": 7})),
        "2024-01-10",
    )
    .await;
    // Set only after the close: the first value given is the best known.
    log.set_attributes(
        "opportunity-o7",
        attrs(serde_json::json!({"source": "late"})),
        "2024-03-01",
    )
    .await;
    log.set_attributes(
        "agent-r1",
        attrs(serde_json::json!({"desk": "north"})),
        "2023-12-01",
    )
    .await;
    log
}

fn query() -> Query {
    Query {
        from: Some(t("2024-01-01")),
        to: Some(t("2024-03-01")),
        period: Grain::All,
        ..Query::default()
    }
}

fn cells(e: &crm_metrics::Evaluation, dim: &str) -> Vec<(String, Option<Num>, Option<Num>)> {
    e.figures
        .iter()
        .map(|f| (f.dims[dim].clone(), f.numerator, f.denominator))
        .collect()
}

#[tokio::test]
async fn a_catalog_metric_breaks_down_by_a_custom_attribute() {
    let log = pipeline().await;
    let reg = Registry::load(&log.store).await.unwrap();
    let mut q = query();
    q.by = vec!["attr.source".into()];
    let e = evaluate(&log.store, &reg, "sales.win_rate", None, &q)
        .await
        .unwrap();
    let one = |n| Some(Num::Int(n));
    assert_eq!(
        cells(&e, "attr.source"),
        vec![
            ("(none)".to_owned(), one(0), one(1)),
            ("event".to_owned(), one(1), one(1)),
            ("late".to_owned(), one(0), one(1)),
            ("web".to_owned(), one(1), one(2)),
        ]
    );
    // Beside a declared dimension, and through a reference to another stream.
    q.by = vec![
        "region".into(),
        "ref('agent', stream.owner).attr.desk".into(),
    ];
    let e = evaluate(&log.store, &reg, "sales.win_rate", None, &q)
        .await
        .unwrap();
    let desks: Vec<(String, String)> = e
        .figures
        .iter()
        .map(|f| {
            (
                f.dims["region"].clone(),
                f.dims["ref('agent', stream.owner).attr.desk"].clone(),
            )
        })
        .collect();
    assert_eq!(
        desks,
        vec![
            ("East".into(), "north".into()),
            ("West".into(), "(none)".into())
        ]
    );
}

#[tokio::test]
async fn conditions_narrow_the_facts_and_are_checked_like_definitions() {
    let log = pipeline().await;
    let reg = Registry::load(&log.store).await.unwrap();
    let mut q = query();
    q.add_where("attr.source == 'web'");
    let e = evaluate(&log.store, &reg, "sales.win_rate", None, &q)
        .await
        .unwrap();
    assert_eq!(
        (e.figures[0].numerator, e.figures[0].denominator),
        (Some(Num::Int(1)), Some(Num::Int(2)))
    );
    // A condition and a dimension value together; numbers compare as numbers.
    let mut q = query();
    q.add_where("region=West");
    q.add_where("attr.score > 5");
    assert_eq!(q.filter.len(), 1);
    assert_eq!(q.conditions, ["attr.score > 5"]);
    let e = evaluate(&log.store, &reg, "sales.win_rate", None, &q)
        .await
        .unwrap();
    assert_eq!(e.figures[0].value, Some(1.0));
    // A field the facts do not have is refused with the nearest real one.
    let mut q = query();
    q.add_where("payload.amout > 1");
    let err = evaluate(&log.store, &reg, "sales.win_rate", None, &q)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("amout") && err.contains("`payload.amount`"),
        "{err}"
    );
    let mut q = query();
    q.by = vec!["attr.Source".into()];
    let err = evaluate(&log.store, &reg, "sales.win_rate", None, &q)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("lower_snake_case"), "{err}");
    assert_eq!(
        WhereClause::parse("region = East"),
        WhereClause::Dimension("region".into(), "East".into())
    );
    assert_eq!(
        WhereClause::parse("x == 1"),
        WhereClause::Condition("x == 1".into())
    );
}
