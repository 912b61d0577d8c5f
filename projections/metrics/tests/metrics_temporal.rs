//! Bitemporal queries, versions side by side, explain and diff: `known_at` before a batch of
//! appends returns the earlier figure and `diff` names exactly that batch; explain counts add
//! up; the same query at the same log position gives the same bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

mod metrics_support;

use std::time::Duration;

use crm_metrics::{
    compare, define, diff, evaluate, explain, to_csv, ExplainSelect, Grain, KnownAt, Num, Query,
    Registry,
};
use metrics_support::{t, Log};

fn q() -> Query {
    Query {
        from: Some(t("2024-01-01")),
        to: Some(t("2024-04-01")),
        period: Grain::All,
        ..Query::default()
    }
}

/// Batch 1: o1 won, o2 lost. Batch 2 (recorded later): o3 and o4 won, o1 reopened.
async fn two_batches() -> (Log, chrono::DateTime<chrono::Utc>, Vec<u64>) {
    let mut log = Log::new();
    let mut first = log.rep("r1", "East", "2023-12-01");
    first.extend(log.deal("o1", "r1", Some(100_000), "2024-01-01", "2024-01-11"));
    first.extend(log.deal("o2", "r1", None, "2024-01-05", "2024-01-20"));
    log.append(first).await;
    let t1 = log.all().await.last().unwrap().recorded_at;
    // recorded_at comes from the store's clock: let it move past T1.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut second = log.deal("o3", "r1", Some(300_000), "2024-01-10", "2024-02-09");
    second.extend(log.deal("o4", "r1", Some(200_000), "2024-01-15", "2024-03-01"));
    second.extend(log.reopen("o1", "2024-02-15"));
    let positions = log.append(second).await;
    (log, t1, positions)
}

#[tokio::test]
async fn known_at_returns_the_earlier_figure_and_diff_names_the_batch() {
    let (log, t1, batch) = two_batches().await;
    let reg = Registry::load(&log.store).await.unwrap();
    let now = evaluate(&log.store, &reg, "sales.win_rate", None, &q())
        .await
        .unwrap();
    assert_eq!(
        (now.figures[0].numerator, now.figures[0].denominator),
        (Some(Num::Int(2)), Some(Num::Int(3)))
    );
    let mut then = q();
    then.known_at = Some(KnownAt::Time(t1));
    let before = evaluate(&log.store, &reg, "sales.win_rate", None, &then)
        .await
        .unwrap();
    assert_eq!(before.figures[0].value, Some(0.5));
    assert_eq!(before.log.position, batch[0] - 1);
    // The same by position.
    then.known_at = Some(KnownAt::Position(batch[0] - 1));
    assert_eq!(
        evaluate(&log.store, &reg, "sales.win_rate", None, &then)
            .await
            .unwrap()
            .figures,
        before.figures
    );
    // Bitemporal: known now, but only facts that occurred by Feb 1 (o4's win and o1's reopen later).
    let mut bi = q();
    bi.as_of = Some(t("2024-02-01"));
    let e = evaluate(&log.store, &reg, "sales.win_rate", None, &bi)
        .await
        .unwrap();
    assert_eq!(e.figures[0].value, Some(0.5));

    let d = diff(
        &log.store,
        &reg,
        "sales.win_rate",
        None,
        &q(),
        KnownAt::Time(t1),
        KnownAt::Position(*batch.last().unwrap()),
    )
    .await
    .unwrap();
    let named: Vec<u64> = d.accounted_by.iter().map(|e| e.position).collect();
    assert_eq!(named, batch, "diff names exactly the second batch");
    assert_eq!(
        (d.cells[0].before, d.cells[0].after),
        (Some(0.5), Some(2.0 / 3.0))
    );
    let changes: Vec<(String, &str, &str)> = d
        .changed_facts
        .iter()
        .map(|c| (c.stream.clone(), c.before.as_str(), c.after.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            ("opportunity-o1".to_owned(), "included", "excluded:REOPENED"),
            ("opportunity-o3".to_owned(), "absent", "included"),
            ("opportunity-o4".to_owned(), "absent", "included"),
        ]
    );
}

#[tokio::test]
async fn explain_adds_up_pages_and_exports_identically() {
    let (log, _, _) = two_batches().await;
    let reg = Registry::load(&log.store).await.unwrap();
    let sel = ExplainSelect::default();
    let x = explain(&log.store, &reg, "sales.win_rate", None, &q(), &sel)
        .await
        .unwrap();
    let totals = &x.totals[""];
    let excluded: u64 = totals.excluded.values().sum();
    assert_eq!(totals.considered, totals.included + excluded);
    assert_eq!(usize::try_from(totals.considered).unwrap(), x.total_rows);
    assert_eq!(totals.excluded.get("REOPENED"), Some(&1));
    let f = &x.figures[0];
    assert_eq!(
        (totals.numerator, totals.denominator),
        (f.numerator, f.denominator)
    );
    let included_sum: i128 = x
        .rows
        .iter()
        .filter(|r| r.decision == "included")
        .map(|r| match r.numerator {
            Some(Num::Int(i)) => i,
            _ => 0,
        })
        .sum();
    assert_eq!(Some(Num::Int(included_sum)), f.numerator);
    assert_eq!(f.value, Some(2.0 / 3.0));
    let excluded_row = x.rows.iter().find(|r| r.decision == "excluded").unwrap();
    assert_eq!(
        (excluded_row.stream.as_str(), excluded_row.rule.as_deref()),
        ("opportunity-o1", Some("REOPENED"))
    );
    // Pages of one row each make the whole list.
    let mut paged = Vec::new();
    let mut sel = ExplainSelect {
        limit: 1,
        ..ExplainSelect::default()
    };
    loop {
        let p = explain(&log.store, &reg, "sales.win_rate", None, &q(), &sel)
            .await
            .unwrap();
        paged.extend(p.rows);
        match p.next_offset {
            Some(n) => sel.offset = n,
            None => break,
        }
    }
    assert_eq!(paged, x.rows);
    // Same metric, same log position: the same bytes, as CSV and as JSON.
    let again = explain(
        &log.store,
        &reg,
        "sales.win_rate",
        None,
        &q(),
        &ExplainSelect::default(),
    )
    .await
    .unwrap();
    assert_eq!(to_csv(&x), to_csv(&again));
    assert_eq!(
        serde_json::to_string(&x).unwrap(),
        serde_json::to_string(&again).unwrap()
    );
    let csv = to_csv(&x);
    assert!(csv.starts_with("position,event_id,stream,event_type,occurred_at,recorded_at,period,input,decision,rule,numerator,denominator,value\n"));
    assert_eq!(csv.lines().count(), x.rows.len() + 1);
    // Only the excluded rows, the totals unchanged.
    let only = explain(
        &log.store,
        &reg,
        "sales.win_rate",
        None,
        &q(),
        &ExplainSelect {
            decision: Some("excluded".into()),
            ..ExplainSelect::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(only.rows.len(), 1);
    assert_eq!(only.totals, x.totals);
}

const DEALS_V1: &str = r#"
id = "sales.deals_counted"
version = 1
name = "Deals won"
domain = "sales"
unit = "count"
kind = "flow"
[facts]
events = ["OpportunityWon"]
[measure]
type = "simple"
agg = "count"
"#;

#[tokio::test]
async fn versions_side_by_side_differ_as_defined() {
    let (log, _, _) = two_batches().await;
    let at = t("2024-06-01");
    define(&log.store, DEALS_V1, at).await.unwrap();
    // v2 leaves out wins that were reopened.
    let v2 = DEALS_V1.replace("version = 1", "version = 2").replace(
        "[measure]",
        "[[exclude]]\ncode = \"REOPENED\"\nwhen = \"later('OpportunityReopened')\"\n[measure]",
    );
    define(&log.store, &v2, at).await.unwrap();
    let reg = Registry::load(&log.store).await.unwrap();
    let c = compare(&log.store, &reg, "sales.deals_counted", &[1, 2], &q())
        .await
        .unwrap();
    let row = &c.rows[0];
    let vals: Vec<Option<f64>> = row
        .figures
        .iter()
        .map(|f| f.as_ref().and_then(|f| f.value))
        .collect();
    assert_eq!(vals, [Some(3.0), Some(2.0)]);
    assert_eq!(row.difference, Some(-1.0));
    assert_ne!(c.metrics[0].spec_hash, c.metrics[1].spec_hash);
    // The catalog's win rate v1 and v2 (open deals join the denominator) by month.
    let mut months = q();
    months.period = Grain::Month;
    let c = compare(&log.store, &reg, "sales.win_rate", &[1, 2], &months)
        .await
        .unwrap();
    let feb = c.rows.iter().find(|r| r.period.label == "2024-02").unwrap();
    let v: Vec<Option<f64>> = feb
        .figures
        .iter()
        .map(|f| f.as_ref().and_then(|f| f.value))
        .collect();
    // February: o3 won (o1's January win was reopened); at Mar 1 o1 is open again, o4 closes that instant.
    assert_eq!(v[0], Some(1.0));
    assert_eq!(v[1], Some(0.5));
}
