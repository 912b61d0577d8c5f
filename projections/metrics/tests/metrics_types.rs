//! Every metric type of the definition language on small hand-computed histories: simple
//! aggregations, ratio, cumulative, derived with an offset, conversion, duration (calendar and
//! business clock with pauses), stock and semi-additive measures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

mod metrics_support;

use std::collections::BTreeMap;

use crm_metrics::{
    define, evaluate, explain, Evaluation, ExplainSelect, Grain, Num, Query, Registry,
};
use metrics_support::{t, Log};

fn q(from: &str, to: &str, period: Grain) -> Query {
    Query {
        from: Some(t(from)),
        to: Some(t(to)),
        period,
        ..Query::default()
    }
}

fn values(e: &Evaluation) -> Vec<Option<f64>> {
    e.figures.iter().map(|f| f.value).collect()
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

/// Reps r1 (East) and r2 (West) and seven deals, amounts in cents.
async fn pipeline() -> Log {
    let mut log = Log::new();
    let ev = log.two_reps_and_seven_deals();
    log.append(ev).await;
    log
}

#[tokio::test]
async fn simple_share_win_rate_by_month_and_region() {
    let log = pipeline().await;
    let reg = Registry::load(&log.store).await.unwrap();
    let e = evaluate(
        &log.store,
        &reg,
        "sales.win_rate",
        None,
        &q("2024-01-01", "2024-03-01", Grain::Month),
    )
    .await
    .unwrap();
    let jan = &e.figures[0];
    assert_eq!(jan.period.label, "2024-01");
    // o1 won, o2 lost; o4's win was reopened, o5 voided, o6 a renewal.
    assert_eq!(
        (jan.numerator, jan.denominator),
        (Some(Num::Int(1)), Some(Num::Int(2)))
    );
    assert_eq!(jan.display, "50.00%");
    let excluded: BTreeMap<String, u64> = [("OUT_OF_SCOPE", 1), ("REOPENED", 1), ("VOIDED", 1)]
        .map(|(k, v)| (k.to_owned(), v))
        .into();
    assert_eq!(jan.excluded, excluded);
    assert_eq!(jan.included, 2);
    // February: o3 won, o4 (final close) and o7 lost.
    assert!(close(e.figures[1].value, 1.0 / 3.0));
    let mut by = q("2024-01-01", "2024-03-01", Grain::All);
    by.by = vec!["region".into()];
    let e = evaluate(&log.store, &reg, "sales.win_rate", None, &by)
        .await
        .unwrap();
    let cells: Vec<(String, Option<f64>)> = e
        .figures
        .iter()
        .map(|f| (f.dims["region"].clone(), f.value))
        .collect();
    assert_eq!(cells[0].0, "East");
    assert!(close(cells[0].1, 1.0 / 3.0));
    assert_eq!(cells[1].0, "West");
    assert!(close(cells[1].1, 0.5));
    // A dimension filter narrows the cell; an undeclared dimension is refused.
    let mut west = q("2024-01-01", "2024-03-01", Grain::All);
    west.filter.insert("region".into(), "West".into());
    let e = evaluate(&log.store, &reg, "sales.win_rate", None, &west)
        .await
        .unwrap();
    assert!(close(e.figures[0].value, 0.5));
    west.by = vec!["planet".into()];
    assert!(evaluate(&log.store, &reg, "sales.win_rate", None, &west)
        .await
        .unwrap_err()
        .to_string()
        .contains("planet"));
}

const AMOUNTS: &str = r#"
id = "sales.amounts"
version = 1
name = "Won amounts"
domain = "sales"
unit = "money"
kind = "flow"
[dims]
owner = "stream.owner"
[facts]
events = ["OpportunityWon"]
[measure]
type = "simple"
agg = "count"
"#;

#[tokio::test]
async fn simple_aggregations_and_cumulative_windows() {
    let log = pipeline().await;
    let at = t("2024-06-01");
    // Version n of `sales.amounts` swaps the measure; all won amounts count (no rules).
    let measures = [
        "agg = \"count\"",
        "agg = \"count_distinct\"\nof = \"stream.owner\"",
        "agg = \"sum\"\nof = \"payload.amount.minor_units\"\ncurrency = \"payload.amount.currency\"",
        "agg = \"avg\"\nof = \"payload.amount.minor_units\"",
        "agg = \"min\"\nof = \"payload.amount.minor_units\"",
        "agg = \"max\"\nof = \"payload.amount.minor_units\"",
        "agg = \"median\"\nof = \"payload.amount.minor_units\"",
        "agg = \"percentile\"\np = 0.9\nof = \"payload.amount.minor_units\"",
        "agg = \"sum\"\nof = \"payload.amount.minor_units\"\n[measure]\ntype = \"cumulative\"\nwindow = \"31d\"",
        "agg = \"sum\"\nof = \"payload.amount.minor_units\"\n[measure]\ntype = \"cumulative\"\nto_date = \"year\"",
    ];
    for (i, m) in measures.iter().enumerate() {
        let version = i + 1;
        let text = if m.contains("cumulative") {
            let (agg, rest) = m.split_once("\n[measure]\n").unwrap();
            AMOUNTS
                .replace("version = 1", &format!("version = {version}"))
                .replace(
                    "type = \"simple\"\nagg = \"count\"",
                    &format!("{rest}\n{agg}"),
                )
        } else {
            AMOUNTS
                .replace("version = 1", &format!("version = {version}"))
                .replace("agg = \"count\"", m)
        };
        define(&log.store, &text, at).await.unwrap();
    }
    let reg = Registry::load(&log.store).await.unwrap();
    let all = q("2024-01-01", "2024-03-01", Grain::All);
    // Won amounts: 1000.00, 3000.00, 2000.00, 1500.00, 500.00 (o1, o3, o4, o5, o6).
    let expect = [
        5.0, 2.0, 800_000.0, 160_000.0, 50_000.0, 300_000.0, 150_000.0, 260_000.0,
    ];
    for (i, want) in expect.iter().enumerate() {
        let version = u32::try_from(i + 1).unwrap();
        let e = evaluate(&log.store, &reg, "sales.amounts", Some(version), &all)
            .await
            .unwrap();
        assert!(
            close(e.figures[0].value, *want),
            "v{version}: {:?} != {want}",
            e.figures[0].value
        );
    }
    let sum = evaluate(&log.store, &reg, "sales.amounts", Some(3), &all)
        .await
        .unwrap();
    assert_eq!(sum.figures[0].display, "USD 8000.00");
    assert_eq!(sum.figures[0].numerator, Some(Num::Int(800_000)));
    let months = q("2024-01-01", "2024-03-01", Grain::Month);
    let trailing = evaluate(&log.store, &reg, "sales.amounts", Some(9), &months)
        .await
        .unwrap();
    assert_eq!(values(&trailing), [Some(500_000.0), Some(300_000.0)]);
    let ytd = evaluate(&log.store, &reg, "sales.amounts", Some(10), &months)
        .await
        .unwrap();
    assert_eq!(values(&ytd), [Some(500_000.0), Some(800_000.0)]);
    // Folded (each fact added to the run of periods whose window holds it) and listed row by
    // row (period by period, as an explanation lists them), a window's figures agree, by
    // day too, where a fact counts in up to 31 periods and most windows overlap.
    let days = q("2024-01-01", "2024-03-01", Grain::Day);
    for (version, query) in [(9, &months), (10, &months), (9, &days), (10, &days)] {
        let folded = evaluate(&log.store, &reg, "sales.amounts", Some(version), query)
            .await
            .unwrap();
        let listed = explain(
            &log.store,
            &reg,
            "sales.amounts",
            Some(version),
            query,
            &ExplainSelect::default(),
        )
        .await
        .unwrap();
        assert_eq!(folded.figures.len(), listed.figures.len());
        for (f, l) in folded.figures.iter().zip(&listed.figures) {
            assert_eq!(
                (f.value, f.numerator, f.denominator, &f.display),
                (l.value, l.numerator, l.denominator, &l.display),
                "v{version} {:?}",
                f.period
            );
        }
        assert!(folded.figures.iter().filter(|f| f.value.is_some()).count() >= 2);
    }
}

#[tokio::test]
async fn derived_growth_uses_the_previous_period() {
    let log = pipeline().await;
    let reg = Registry::load(&log.store).await.unwrap();
    let e = evaluate(
        &log.store,
        &reg,
        "sales.new_revenue_growth",
        None,
        &q("2024-01-01", "2024-03-01", Grain::Month),
    )
    .await
    .unwrap();
    // New revenue: December 0, January 1000.00 (o1), February 3000.00 (o3).
    assert_eq!(e.figures[0].value, None, "growth from zero has no value");
    assert!(close(e.figures[1].value, 2.0));
    assert_eq!(e.figures[1].numerator, Some(Num::Float(200_000.0)));
    // Win rate v2 (derived): won ÷ (decided + open at p1). At Feb 1: o3, the reopened o4 and
    // o7 (opened that instant) are open; o5 is voided. January: 1 ÷ (2 + 3).
    let v2 = evaluate(
        &log.store,
        &reg,
        "sales.win_rate",
        Some(2),
        &q("2024-01-01", "2024-03-01", Grain::Month),
    )
    .await
    .unwrap();
    assert!(close(v2.figures[0].value, 1.0 / 5.0), "{:?}", v2.figures[0]);
}

/// Subscriptions of three accounts (amounts in cents per month).
async fn subscriptions() -> Log {
    let mut log = Log::new();
    let mut ev = log.subscribe("s1", "a1", "monthly", 5_000, "2023-06-01");
    ev.extend(log.subscribe("s2", "a2", "annual", 8_000, "2023-09-01"));
    ev.extend(log.subscribe("s3", "a3", "monthly", 3_000, "2024-01-10"));
    ev.extend(log.cancel("s1", "2024-01-31", "2024-01-15"));
    ev.extend(log.change_plan("s2", 10_000, "2024-01-20"));
    ev.extend(log.subscribe("s4", "a1", "annual", 2_000, "2024-02-15"));
    log.append(ev).await;
    log
}

const SUB_CHURN: &str = r#"
id = "customer.sub_churn"
version = 1
name = "Cancellations per subscription started"
domain = "customer"
unit = "%"
kind = "flow"
[dims]
plan = "stream.plan"
[measure]
type = "ratio"
[measure.numerator]
events = ["SubscriptionCancelled"]
[measure.denominator]
events = ["SubscriptionStarted"]
"#;

#[tokio::test]
async fn ratio_inputs_have_their_own_facts() {
    let log = subscriptions().await;
    define(&log.store, SUB_CHURN, t("2024-06-01"))
        .await
        .unwrap();
    let reg = Registry::load(&log.store).await.unwrap();
    let mut query = q("2023-01-01", "2025-01-01", Grain::All);
    let e = evaluate(&log.store, &reg, "customer.sub_churn", None, &query)
        .await
        .unwrap();
    assert_eq!(
        (e.figures[0].numerator, e.figures[0].denominator),
        (Some(Num::Int(1)), Some(Num::Int(4)))
    );
    query.by = vec!["plan".into()];
    let e = evaluate(&log.store, &reg, "customer.sub_churn", None, &query)
        .await
        .unwrap();
    let by: Vec<(&str, Option<f64>)> = e
        .figures
        .iter()
        .map(|f| (f.dims["plan"].as_str(), f.value))
        .collect();
    assert_eq!(by, [("annual", Some(0.0)), ("monthly", Some(0.5))]);
    // The catalog's cohort reading gives the same share.
    let v3 = evaluate(
        &log.store,
        &reg,
        "customer.churn_rate",
        Some(3),
        &q("2023-01-01", "2025-01-01", Grain::All),
    )
    .await
    .unwrap();
    assert!(close(v3.figures[0].value, 0.25));
}

#[tokio::test]
async fn stocks_are_read_at_instants_and_not_summed() {
    let log = subscriptions().await;
    let reg = Registry::load(&log.store).await.unwrap();
    let months = q("2023-12-01", "2024-03-01", Grain::Month);
    let mrr = evaluate(&log.store, &reg, "sales.recurring_revenue", None, &months)
        .await
        .unwrap();
    // End of Dec: s1 + s2; end of Jan: s1 cancelled (effective Jan 31), s2 upgraded, s3; end of Feb: + s4.
    assert_eq!(
        values(&mrr),
        [Some(13_000.0), Some(13_000.0), Some(15_000.0)]
    );
    // A quarter reads the stock at its end, never the sum of the months.
    let quarter = evaluate(
        &log.store,
        &reg,
        "sales.recurring_revenue",
        None,
        &q("2024-01-01", "2024-04-01", Grain::Quarter),
    )
    .await
    .unwrap();
    assert_eq!(values(&quarter), [Some(15_000.0)]);
    let churn = evaluate(&log.store, &reg, "customer.churn_rate", None, &months)
        .await
        .unwrap();
    // January: a1 and a2 active at the start, a1's spell ends Jan 31 (it returns in February).
    assert_eq!(churn.figures[1].numerator, Some(Num::Int(1)));
    assert_eq!(churn.figures[1].denominator, Some(Num::Int(2)));
    assert!(close(churn.figures[2].value, 0.0));
    let gross = evaluate(
        &log.store,
        &reg,
        "customer.revenue_retention",
        Some(1),
        &months,
    )
    .await
    .unwrap();
    assert!(close(gross.figures[1].value, 8_000.0 / 13_000.0));
    let net = evaluate(
        &log.store,
        &reg,
        "customer.revenue_retention",
        Some(2),
        &months,
    )
    .await
    .unwrap();
    assert!(close(net.figures[1].value, 10_000.0 / 13_000.0));
    let new = evaluate(&log.store, &reg, "sales.new_customers", None, &months)
        .await
        .unwrap();
    assert_eq!(
        values(&new),
        [Some(0.0), Some(1.0), Some(0.0)],
        "a3 is new in January; a1 returning is not new"
    );
}

#[tokio::test]
async fn conversion_within_a_window_with_pending_members() {
    let mut log = Log::new();
    let mut ev = log.capture("l1", "2024-01-01");
    ev.extend(log.capture("l2", "2024-01-05"));
    ev.extend(log.capture("l3", "2024-01-20"));
    ev.extend(log.convert("l1", "2024-01-10"));
    ev.extend(log.convert("l2", "2024-03-01"));
    log.append(ev).await;
    let text = r#"
id = "marketing.quick_conversion"
version = 1
name = "Leads converted within 30 days"
domain = "marketing"
unit = "%"
kind = "cohort"
[facts]
events = ["LeadCaptured"]
[measure]
type = "conversion"
conversion = ["LeadConverted"]
window = "30d"
"#;
    define(&log.store, text, t("2024-06-01")).await.unwrap();
    let reg = Registry::load(&log.store).await.unwrap();
    let jan = q("2024-01-01", "2024-02-01", Grain::All);
    let e = evaluate(&log.store, &reg, "marketing.quick_conversion", None, &jan)
        .await
        .unwrap();
    assert_eq!(
        (e.figures[0].numerator, e.figures[0].denominator),
        (Some(Num::Int(1)), Some(Num::Int(3)))
    );
    // As of Jan 25, l2 and l3 are still inside their window: pending, out of the denominator.
    let mut early = jan.clone();
    early.as_of = Some(t("2024-01-25"));
    let e = evaluate(&log.store, &reg, "marketing.quick_conversion", None, &early)
        .await
        .unwrap();
    assert_eq!(e.figures[0].value, Some(1.0));
    assert_eq!(e.figures[0].excluded.get("PENDING"), Some(&2));
    // The catalog's 180-day conversion counts l2 too; its time to conversion is a median duration.
    let e = evaluate(
        &log.store,
        &reg,
        "marketing.lead_conversion_rate",
        None,
        &jan,
    )
    .await
    .unwrap();
    assert!(close(e.figures[0].value, 2.0 / 3.0));
    let d = evaluate(
        &log.store,
        &reg,
        "marketing.time_to_conversion",
        None,
        &q("2024-01-01", "2024-04-01", Grain::All),
    )
    .await
    .unwrap();
    assert!(close(d.figures[0].value, (9.0 + 56.0) / 2.0 * 86_400.0));
}

#[tokio::test]
async fn durations_on_calendar_and_business_clocks() {
    use crm_domain::aggregates::case::CloseCode;
    let mut log = Log::new();
    let mut ev = log.open_case("c1", "2024-03-04T09:00:00Z", false);
    ev.extend(log.resolve("c1", "2024-03-05T17:00:00Z"));
    ev.extend(log.open_case("c2", "2024-03-08T16:00:00Z", true));
    ev.extend(log.pause("c2", "2024-03-08T16:30:00Z"));
    ev.extend(log.resume("c2", "2024-03-11T10:00:00Z"));
    ev.extend(log.resolve("c2", "2024-03-11T11:00:00Z"));
    ev.extend(log.open_case("c3", "2024-03-06T10:00:00Z", false));
    ev.extend(log.resolve("c3", "2024-03-06T12:00:00Z"));
    ev.extend(log.reopen_case("c3", "2024-03-06T13:00:00Z"));
    ev.extend(log.resolve("c3", "2024-03-07T10:00:00Z"));
    ev.extend(log.open_case("c4", "2024-03-12T09:00:00Z", false));
    ev.extend(log.resolve("c4", "2024-03-12T15:00:00Z"));
    ev.extend(log.close_case("c4", CloseCode::Resolved, "2024-03-12T16:00:00Z"));
    log.append(ev).await;
    let reg = Registry::load(&log.store).await.unwrap();
    let march = q("2024-03-01", "2024-04-01", Grain::All);
    let h = 3_600.0;
    // Calendar: 32 h, 67 h, 24 h (to the final resolution), 6 h; c3's first resolution was reopened.
    let cal = evaluate(
        &log.store,
        &reg,
        "service.time_to_resolution",
        Some(1),
        &march,
    )
    .await
    .unwrap();
    assert!(close(
        cal.figures[0].value,
        (32.0 + 67.0 + 24.0 + 6.0) / 4.0 * h
    ));
    assert_eq!(cal.figures[0].excluded.get("REOPENED"), Some(&1));
    assert_eq!(cal.figures[0].display, "1.34 d");
    // Business 09-17 mon-fri, pauses removed: 16 h, 3 h - 1.5 h paused, 8 h, 6 h.
    let biz = evaluate(
        &log.store,
        &reg,
        "service.time_to_resolution",
        Some(2),
        &march,
    )
    .await
    .unwrap();
    assert!(
        close(biz.figures[0].value, (16.0 + 1.5 + 8.0 + 6.0) / 4.0 * h),
        "{:?}",
        biz.figures[0].value
    );
    // Complaints only: c2.
    let complaints = evaluate(
        &log.store,
        &reg,
        "service.complaint_resolution_time",
        None,
        &march,
    )
    .await
    .unwrap();
    assert!(close(complaints.figures[0].value, 67.0 * h));
    // Same day: only c4, of four cases opened (the denominator is served beside the count).
    let same = evaluate(
        &log.store,
        &reg,
        "service.cases_closed_same_day",
        None,
        &march,
    )
    .await
    .unwrap();
    assert_eq!(
        (same.figures[0].value, same.figures[0].denominator),
        (Some(1.0), Some(Num::Int(4)))
    );
}

/// Orders of four customers and a guest (account `unknown`), amounts in cents.
async fn orders() -> Log {
    let mut log = Log::new();
    let mut ev = log.order("o1", "a1", 10_000, "2024-01-02");
    ev.extend(log.order("o2", "a1", 5_000, "2024-01-20"));
    ev.extend(log.order("o3", "a1", 3_000, "2024-02-05"));
    ev.extend(log.order("o4", "a2", 50_000, "2024-01-10"));
    ev.extend(log.order("o5", "a3", 2_000, "2024-02-01"));
    ev.extend(log.order("o6", "a3", 2_000, "2024-02-03"));
    ev.extend(log.cancel_order("o6", "2024-02-04"));
    ev.extend(log.order("o7", "unknown", 7_000, "2024-01-15"));
    ev.extend(log.order("o9", "a5", 1_000, "2024-02-20"));
    log.append(ev).await;
    log
}

fn counts(e: &Evaluation, dim: &str) -> BTreeMap<String, (Option<Num>, Option<Num>)> {
    e.figures
        .iter()
        .map(|f| {
            (
                f.dims.get(dim).cloned().unwrap_or_default(),
                (f.numerator, f.denominator),
            )
        })
        .collect()
}

#[tokio::test]
async fn entities_share_repeat_customers_per_period() {
    let log = orders().await;
    let reg = Registry::load(&log.store).await.unwrap();
    let ask = |q: Query| {
        let (store, reg) = (log.store.clone(), reg.clone());
        async move {
            evaluate(&store, &reg, "customer.repeat_purchase_rate", None, &q)
                .await
                .unwrap()
        }
    };
    // Over both months: a1 ordered 3 times; a2, a3 (o6 cancelled) and a5 once: 1 of 4.
    let all = ask(q("2024-01-01", "2024-03-01", Grain::All)).await;
    let f = &all.figures[0];
    assert_eq!(
        (f.numerator, f.denominator),
        (Some(Num::Int(1)), Some(Num::Int(4)))
    );
    assert!(close(f.value, 0.25));
    assert_eq!(
        f.excluded,
        BTreeMap::from([("CANCELLED".into(), 1), ("NO_CUSTOMER".into(), 1)])
    );
    // Per month: January a1 twice, a2 once (1 of 2); February a1, a3, a5 once each (0 of 3).
    let monthly = ask(q("2024-01-01", "2024-03-01", Grain::Month)).await;
    let parts: Vec<_> = monthly
        .figures
        .iter()
        .map(|f| (f.numerator, f.denominator))
        .collect();
    assert_eq!(
        parts,
        vec![
            (Some(Num::Int(1)), Some(Num::Int(2))),
            (Some(Num::Int(0)), Some(Num::Int(3)))
        ]
    );
}

#[tokio::test]
async fn rfm_scores_quintiles_at_the_period_end() {
    let log = orders().await;
    let reg = Registry::load(&log.store).await.unwrap();
    let ask = |by: &str, filter: Option<(&str, &str)>| {
        let (store, reg) = (log.store.clone(), reg.clone());
        let mut query = q("2024-01-01", "2024-03-01", Grain::All);
        query.by = vec![by.to_owned()];
        if let Some((d, v)) = filter {
            query.filter.insert(d.to_owned(), v.to_owned());
        }
        async move {
            evaluate(&store, &reg, "customer.rfm", None, &query)
                .await
                .unwrap()
        }
    };
    // At 2024-03-01, four scored customers (ranks 1..4 cut into fifths: bins 1, 2, 4, 5):
    //   recency days a5 10, a1 25, a3 29, a2 51 -> R 5, 4, 2, 1 (fewest days best);
    //   frequency a2 1, a3 1, a5 1 (ties in id order), a1 3 -> F 1, 2, 4, 5;
    //   monetary a5 10, a3 20, a1 180, a2 500 -> M 1, 2, 4, 5.
    let cells = counts(&ask("rfm", None).await, "rfm");
    let one = (Some(Num::Int(1)), None);
    assert_eq!(
        cells,
        BTreeMap::from([
            ("(not scored)".to_owned(), (Some(Num::Int(0)), None)),
            ("1-1-5".to_owned(), one),
            ("2-2-2".to_owned(), one),
            ("4-5-4".to_owned(), one),
            ("5-4-1".to_owned(), one),
        ])
    );
    // A score as a filter: only the champion of recency, a5; the unscored are not listed.
    let r5 = ask("f", Some(("r", "5"))).await;
    assert_eq!(counts(&r5, "f"), BTreeMap::from([("4".to_owned(), one)]));
    // Version 2 scores the trailing year only; here all purchases are in it: same cells.
    let mut query = q("2024-01-01", "2024-03-01", Grain::All);
    query.by = vec!["rfm".into()];
    let v2 = evaluate(&log.store, &reg, "customer.rfm", Some(2), &query)
        .await
        .unwrap();
    assert_eq!(counts(&v2, "rfm"), cells);
}
