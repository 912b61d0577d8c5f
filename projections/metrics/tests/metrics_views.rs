//! One question, answered three ways with the same figures: `evaluate` (the question's own
//! view, holding only what its dimensions read, each fact folded into its cell),
//! `evaluate_in` over `load_view` (the whole definition's view, as the server keeps it) and
//! `explain_in` (the derivation rows, kept and reduced). And the global exclusions, which
//! depend on events later in the log: a test flag, a retraction, a merge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod metrics_support;

use crm_domain::aggregates::case::CloseCode;
use crm_domain::aggregates::opportunity::OpportunityKind;
use crm_eventstore::{EventId, EventStore, ExpectedVersion, ProposedEvent, StreamId};
use crm_metrics::{
    evaluate, evaluate_in, explain_in, load_view, ExplainSelect, Grain, Num, Query, Registry,
};
use metrics_support::{t, Log};
use uuid::Uuid;

/// Appends an event that is not a domain event (the corrections the global rules read).
async fn raw(log: &Log, n: u128, stream: &str, event_type: &str, payload: serde_json::Value) {
    let proposed = ProposedEvent {
        event_id: EventId(Uuid::from_u128(1_000_000 + n)),
        event_type: event_type.to_owned(),
        schema_version: 1,
        occurred_at: t("2024-03-01"),
        causation_id: None,
        correlation_id: None,
        actor: "auditor".into(),
        metadata: Vec::new(),
        payload: serde_json::to_vec(&payload).unwrap(),
    };
    log.store
        .append(
            &StreamId::new(stream).unwrap(),
            ExpectedVersion::Any,
            vec![proposed],
        )
        .await
        .unwrap();
}

/// The id of the first `event_type` event of `stream`.
async fn id_of(log: &Log, stream: &str, event_type: &str) -> Uuid {
    log.all()
        .await
        .into_iter()
        .find(|r| r.stream_id.as_str() == stream && r.event_type == event_type)
        .unwrap()
        .event_id
        .0
}

/// Deals (won, lost, reopened, voided, a renewal), cases with pauses, subscriptions that
/// change and end, orders, leads, custom attributes, and three corrections: deal `o2`
/// flagged as test data, the win of `o3` retracted, deal `o1` merged into another.
async fn history() -> Log {
    let mut log = Log::new();
    let mut ev = log.two_reps_and_seven_deals();
    ev.extend(log.open_opp("o8", "r2", OpportunityKind::New, 70_000, "2024-02-12"));
    ev.extend(log.open_case("c1", "2024-01-02T09:00:00Z", false));
    ev.extend(log.pause("c1", "2024-01-02T12:00:00Z"));
    ev.extend(log.resume("c1", "2024-01-03T10:00:00Z"));
    ev.extend(log.resolve("c1", "2024-01-04T16:00:00Z"));
    ev.extend(log.close_case("c1", CloseCode::Resolved, "2024-01-05T09:00:00Z"));
    ev.extend(log.open_case("c2", "2024-01-20T09:00:00Z", true));
    ev.extend(log.resolve("c2", "2024-02-03T09:00:00Z"));
    ev.extend(log.reopen_case("c2", "2024-02-04T09:00:00Z"));
    ev.extend(log.open_case("c3", "2024-02-10T09:00:00Z", false));
    ev.extend(log.subscribe("s1", "acme", "Gold", 5_000, "2023-11-01"));
    ev.extend(log.change_plan("s1", 7_000, "2024-01-15"));
    ev.extend(log.subscribe("s2", "globex", "Silver", 2_000, "2023-12-15"));
    ev.extend(log.cancel("s2", "2024-02-15", "2024-01-20"));
    ev.extend(log.subscribe("s3", "initech", "Gold", 4_000, "2024-02-01"));
    ev.extend(log.order("d1", "acme", 12_000, "2024-01-07"));
    ev.extend(log.order("d2", "acme", 8_000, "2024-02-07"));
    ev.extend(log.order("d3", "globex", 5_000, "2024-02-08"));
    ev.extend(log.cancel_order("d3", "2024-02-09"));
    ev.extend(log.capture("l1", "2024-01-03"));
    ev.extend(log.capture("l2", "2024-01-04"));
    ev.extend(log.convert("l1", "2024-01-30"));
    log.append(ev).await;
    log.set_attributes(
        "opportunity-o1",
        serde_json::json!({"origin": "API"}),
        "2024-01-02",
    )
    .await;
    raw(
        &log,
        1,
        "opportunity-o2",
        "RecordFlaggedTest",
        serde_json::json!({"reason": "demo"}),
    )
    .await;
    let o3_won = id_of(&log, "opportunity-o3", "OpportunityWon").await;
    raw(
        &log,
        2,
        "correction-1",
        "EventRetracted",
        serde_json::json!({"event_id": o3_won.to_string()}),
    )
    .await;
    raw(
        &log,
        3,
        "opportunity-o1",
        "RecordMerged",
        serde_json::json!({"into": "opportunity-o9"}),
    )
    .await;
    log
}

/// The same question by the three ways; `Err` texts compared when it has no answer.
async fn three_ways(log: &Log, reg: &Registry, id: &str, version: u32, q: &Query) {
    let m = reg.get(id, Some(version)).unwrap();
    let own = evaluate(&log.store, reg, id, Some(version), q).await;
    let whole = async {
        let view = load_view(&log.store, reg, std::slice::from_ref(&m), q).await?;
        let e = evaluate_in(&view, reg, &m, q)?;
        let x = explain_in(&view, reg, &m, q, &ExplainSelect::default())?;
        Ok::<_, crm_metrics::MetricError>((e, x))
    }
    .await;
    match (own, whole) {
        (Ok(own), Ok((e, x))) => {
            assert_eq!(
                own, e,
                "{id}@{version} {q:?}: own view against the whole view"
            );
            assert_eq!(
                x.figures, e.figures,
                "{id}@{version} {q:?}: rows against folds"
            );
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{id}@{version}"),
        (a, b) => panic!("{id}@{version} {q:?}: {a:?} against {b:?}"),
    }
}

/// Every built-in definition, over the whole range, by month, and by each of its
/// dimensions, gives the same answer by the three ways.
#[tokio::test]
async fn every_definition_answers_alike_from_its_own_view_the_whole_view_and_its_rows() {
    let log = history().await;
    let reg = Registry::load(&log.store).await.unwrap();
    let mut asked = 0;
    for s in reg.list() {
        let month = Query {
            from: Some(t("2023-11-01")),
            to: Some(t("2024-04-01")),
            period: Grain::Month,
            ..Query::default()
        };
        let mut queries = vec![Query::default(), month.clone()];
        for dim in s.dimensions.keys() {
            queries.push(Query {
                by: vec![dim.clone()],
                ..month.clone()
            });
        }
        if let Some(dim) = s.dimensions.keys().next() {
            let mut filtered = Query {
                period: Grain::Quarter,
                by: vec!["attr.origin".into()],
                ..Query::default()
            };
            filtered.filter.insert(dim.clone(), "East".into());
            queries.push(filtered);
        }
        for q in &queries {
            three_ways(&log, &reg, &s.id, s.version, q).await;
            asked += 1;
        }
    }
    assert!(asked > 300, "{asked} questions asked");
}

/// A deal flagged as test data, a retracted win and a merged deal are left out with their
/// codes, though each correction comes after the events it touches.
#[tokio::test]
async fn later_corrections_exclude_the_facts_they_touch() {
    let log = history().await;
    let reg = Registry::load(&log.store).await.unwrap();
    let all = Query::default();
    let win = evaluate(&log.store, &reg, "sales.win_rate", None, &all)
        .await
        .unwrap();
    let f = &win.figures[0];
    // o1 and o4 (final close) decided; o2 is test data, o3's win retracted, o4's first win
    // reopened, o5 voided, o6 a renewal, o7 lost.
    assert_eq!(f.excluded.get("TEST"), Some(&1));
    assert_eq!(f.excluded.get("RETRACTED"), Some(&1));
    assert_eq!(
        (f.numerator, f.denominator),
        (Some(Num::Int(1)), Some(Num::Int(3)))
    );
    let close = evaluate(&log.store, &reg, "sales.close_rate", None, &all)
        .await
        .unwrap();
    // o1's opening is a duplicate of the deal it was merged into; o2's is test data.
    assert_eq!(close.figures[0].excluded.get("DUPLICATE"), Some(&1));
    assert_eq!(close.figures[0].excluded.get("TEST"), Some(&1));
}

static VIEWS_LOADED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_view_loaded() {
    VIEWS_LOADED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// The function set with `on_view_loaded` runs when a replay has loaded a view (the `crm`
/// binary returns freed memory there), and the figures are those of the same question
/// asked again. Other tests of this file may load views at the same time, so the count only
/// ever grows by at least one a load.
#[tokio::test]
async fn the_view_loaded_hook_runs_after_each_replay() {
    let log = history().await;
    let reg = Registry::load(&log.store).await.unwrap();
    crm_metrics::on_view_loaded(count_view_loaded);
    let q = Query::default();
    let before = VIEWS_LOADED.load(std::sync::atomic::Ordering::SeqCst);
    let first = evaluate(&log.store, &reg, "sales.win_rate", None, &q)
        .await
        .unwrap();
    let after_one = VIEWS_LOADED.load(std::sync::atomic::Ordering::SeqCst);
    assert!(after_one > before, "{before} then {after_one}");
    let again = evaluate(&log.store, &reg, "sales.win_rate", None, &q)
        .await
        .unwrap();
    assert!(VIEWS_LOADED.load(std::sync::atomic::Ordering::SeqCst) > after_one);
    assert_eq!(first, again);
}
