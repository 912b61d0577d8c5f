//! Definitions: TOML validation names the offending key, the spec hash covers meaning and not
//! wording, the built-in catalog covers every metric of the business catalog (documented in
//! `projections/metrics/CATALOG.md`), and definitions are stored as events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod metrics_support;

use crm_eventstore::{EventStore, StreamId, StreamVersion};
use crm_metrics::{
    define, define_as, evaluate, parse_definition, set_default, DefinitionError, MetricError,
    Query, Registry, Status,
};
use metrics_support::{t, Log};

const WIN_RATE_V3: &str = r#"
id = "sales.win_rate"
version = 3
name = "Win rate, new deals only"
domain = "sales"
unit = "%"
kind = "flow"
formula = "won / decided, kind = new"
[dims]
owner = "stream.owner"
[facts]
events = ["OpportunityWon", "OpportunityLost"]
where = "stream.kind == 'new'"
[[exclude]]
code = "REOPENED"
when = "later('OpportunityReopened')"
[measure]
type = "simple"
agg = "share"
when = "event.type == 'OpportunityWon'"
"#;

fn invalid_key(text: &str) -> String {
    match parse_definition(text) {
        Err(DefinitionError::Invalid { key, .. })
        | Err(DefinitionError::Expression { key, .. }) => key,
        Err(DefinitionError::Syntax { message }) => format!("syntax: {message}"),
        Err(other) => format!("other: {other}"),
        Ok(_) => "accepted".into(),
    }
}

#[test]
fn validation_errors_name_the_key() {
    assert!(parse_definition(WIN_RATE_V3).is_ok());
    let cases: &[(&str, &str, &str)] = &[
        (
            "id = \"sales.win_rate\"",
            "id = \"marketing.win_rate\"",
            "id",
        ),
        ("version = 3", "version = 0", "version"),
        (
            "events = [\"OpportunityWon\", \"OpportunityLost\"]",
            "events = [\"opportunity won\"]",
            "facts.events",
        ),
        (
            "where = \"stream.kind == 'new'\"",
            "where = \"stream.kind ==\"",
            "facts.where",
        ),
        (
            "when = \"later('OpportunityReopened')\"",
            "when = \"later(payload.x)\"",
            "exclude[0].when",
        ),
        (
            "code = \"REOPENED\"",
            "code = \"reopened\"",
            "exclude[0].code",
        ),
        ("agg = \"share\"", "agg = \"sum\"", "measure.of"),
        (
            "when = \"event.type == 'OpportunityWon'\"",
            "of = \"1\"",
            "measure.when",
        ),
        (
            "owner = \"stream.owner\"",
            "owner = \"params.missing\"",
            "dims.owner",
        ),
        (
            "type = \"simple\"",
            "type = \"simple\"\nwindow = \"30d\"",
            "measure.window",
        ),
    ];
    for (from, to, key) in cases {
        let text = WIN_RATE_V3.replacen(from, to, 1);
        assert_eq!(invalid_key(&text), *key, "replacing {from:?} by {to:?}");
    }
    // Unknown keys and wrong types are reported by the TOML reader with the key's name.
    let unknown = invalid_key(&WIN_RATE_V3.replacen("[measure]", "[measure]\nagregation = 1", 1));
    assert!(unknown.contains("agregation"), "{unknown}");
    let bad_enum = invalid_key(&WIN_RATE_V3.replacen("agg = \"share\"", "agg = \"mode\"", 1));
    assert!(bad_enum.contains("mode"), "{bad_enum}");
    // Messages say what to do.
    let e = parse_definition(&WIN_RATE_V3.replacen("later('OpportunityReopened')", "frob(1)", 1))
        .unwrap_err();
    assert!(
        e.to_string().contains("exclude[0].when") && e.to_string().contains("known functions"),
        "{e}"
    );
}

/// The message of the definition error `text` gives.
fn refusal(text: &str) -> String {
    parse_definition(text).unwrap_err().to_string()
}

#[test]
fn definitions_are_checked_against_the_event_schemas() {
    // An event type that does not exist, in the facts or in a function: refused with the
    // nearest real one.
    let e = refusal(&WIN_RATE_V3.replacen("\"OpportunityLost\"", "\"OpportunityLots\"", 1));
    assert!(
        e.contains("facts.events")
            && e.contains("no event type `OpportunityLots`")
            && e.contains("`OpportunityLost`"),
        "{e}"
    );
    let e = refusal(&WIN_RATE_V3.replacen("\"OpportunityWon\", ", "\"NoSuchEvent\", ", 1));
    assert!(e.contains("no event type `NoSuchEvent`"), "{e}");
    let e = refusal(&WIN_RATE_V3.replacen("OpportunityReopened", "OpportunityReopen", 1));
    assert!(
        e.contains("exclude[0].when") && e.contains("did you mean `OpportunityReopened`"),
        "{e}"
    );
    // A payload field the named types lack, a misspelt stream attribute, a field of a
    // referenced stream: refused with the key and the nearest field.
    let e = refusal(&WIN_RATE_V3.replacen(
        "when = \"event.type == 'OpportunityWon'\"",
        "when = \"payload.ammount > 0\"",
        1,
    ));
    assert!(
        e.contains("measure.when")
            && e.contains("`payload.ammount` is not a field of OpportunityLost, OpportunityReopened, OpportunityWon")
            && e.contains("did you mean `payload.amount`"),
        "{e}"
    );
    let e = refusal(&WIN_RATE_V3.replacen("stream.owner", "stream.ownr", 1));
    assert!(
        e.contains("dims.owner") && e.contains("did you mean `stream.owner`"),
        "{e}"
    );
    let e = refusal(&WIN_RATE_V3.replacen(
        "stream.owner",
        "ref('account', stream.account_id).segmnt",
        1,
    ));
    assert!(
        e.contains("dims.owner") && e.contains("did you mean `ref('account', ..).segment`"),
        "{e}"
    );
    // The same with the right names is accepted.
    assert!(parse_definition(&WIN_RATE_V3.replacen(
        "stream.owner",
        "ref('account', stream.account_id).segment",
        1
    ))
    .is_ok());
}

#[test]
fn spec_hash_covers_meaning_not_wording() {
    let a = parse_definition(WIN_RATE_V3).unwrap();
    let reworded =
        parse_definition(&WIN_RATE_V3.replace("Win rate, new deals only", "Win rate (new)"))
            .unwrap();
    let reordered = parse_definition(
        &WIN_RATE_V3
            .replace("name = \"Win rate, new deals only\"\n", "")
            .replace("formula = ", "name = \"x\"\nformula = "),
    )
    .unwrap();
    let changed =
        parse_definition(&WIN_RATE_V3.replace("stream.kind == 'new'", "stream.kind != 'renewal'"))
            .unwrap();
    assert_eq!(a.spec_hash(), reworded.spec_hash());
    assert_eq!(a.spec_hash(), reordered.spec_hash());
    assert_ne!(a.spec_hash(), changed.spec_hash());
    assert_eq!(a.spec_hash().len(), 64);
}

#[test]
fn catalog_covers_metrics_md() {
    let reg = Registry::builtin().unwrap();
    let list = reg.list();
    let ids: std::collections::BTreeSet<&str> = list.iter().map(|m| m.id.as_str()).collect();
    // The 38 numbered metrics, the lifecycle (L1-L18 without the aliases L9, L16), relationship
    // (R1-R7) and supplementary (S1-S10) entries.
    let expected = [
        "marketing.campaigns",
        "marketing.new_customer_retention",
        "marketing.campaign_responses",
        "marketing.campaign_purchases",
        "marketing.campaign_revenue",
        "marketing.campaign_cost_per_interaction",
        "marketing.campaign_new_customers",
        "marketing.customer_retention",
        "marketing.new_leads",
        "marketing.customer_referrals",
        "sales.prospects",
        "sales.new_customers",
        "sales.retained_customers",
        "sales.open_opportunities",
        "sales.close_rate",
        "sales.renewal_rate",
        "sales.sales_calls",
        "sales.calls_per_opportunity",
        "sales.new_revenue",
        "sales.recurring_revenue",
        "sales.time_to_close",
        "sales.margin",
        "sales.stage_duration",
        "sales.cycle_duration",
        "sales.sales_calls_made",
        "sales.proposals",
        "sales.competitive_knockouts",
        "service.cases_closed_same_day",
        "service.cases_handled",
        "service.service_calls",
        "service.requests_by_type",
        "service.time_to_resolution",
        "service.service_calls_per_day",
        "service.sla_compliance",
        "service.service_renewal_rate",
        "service.csat",
        "service.complaint_resolution_time",
        "service.defection_propensity",
        "customer.rfm",
        "customer.clv",
        "marketing.lead_score",
        "marketing.lead_conversion_rate",
        "marketing.time_to_conversion",
        "customer.churn_rate",
        "customer.revenue_retention",
        "customer.nps",
        "service.first_contact_resolution",
        "service.avg_handle_time",
        "service.sla_first_response",
        "service.sla_resolution",
        "sales.pipeline_coverage",
        "sales.avg_deal_size",
        "sales.win_rate",
        "customer.review_rating",
        "relationship.tenure",
        "relationship.product_breadth",
        "relationship.engagement_frequency",
        "relationship.contact_coverage",
        "relationship.customer_effort",
        "relationship.advocacy_rate",
        "relationship.channel_switch_rate",
        "marketing.acquisition_cost",
        "marketing.campaign_roi",
        "sales.avg_order_value",
        "sales.discount_rate",
        "sales.stage_conversion",
        "service.abandonment_rate",
        "service.avg_hold_time",
        "service.repeat_contact_rate",
        "service.occupancy",
        "sales.revenue_per_rep",
    ];
    assert_eq!(expected.len(), 71);
    for id in expected {
        assert!(ids.contains(id), "catalog lacks {id}");
        assert!(reg.default_version(id).is_some());
    }
    // Most are expressed in the language; the rest say what they need.
    let unsupported: Vec<_> = list.iter().filter(|m| m.unsupported.is_some()).collect();
    assert!(unsupported.len() <= 20, "{} unsupported", unsupported.len());
    let win = list
        .iter()
        .find(|m| m.id == "sales.win_rate" && m.version == 1)
        .unwrap();
    assert_eq!(win.needs, ["OpportunityLost", "OpportunityWon"]);
    assert!(win.is_default);
    // Derived metrics list what their inputs need.
    let v2 = list
        .iter()
        .find(|m| m.id == "sales.win_rate" && m.version == 2)
        .unwrap();
    assert!(
        v2.needs.contains(&"OpportunityOpened".to_owned()),
        "{:?}",
        v2.needs
    );
    assert_eq!(v2.inputs.len(), 3);
}

#[tokio::test]
async fn evaluation_without_events_says_what_it_needs() {
    let log = Log::new();
    let reg = Registry::load(&log.store).await.unwrap();
    let e = evaluate(&log.store, &reg, "sales.win_rate", None, &Query::default())
        .await
        .unwrap();
    assert_eq!(
        e.status,
        Status::NoData {
            needs: vec!["OpportunityLost".into(), "OpportunityWon".into()]
        }
    );
    assert!(e.figures.is_empty());
    let u = evaluate(
        &log.store,
        &reg,
        "service.sla_compliance",
        None,
        &Query::default(),
    )
    .await
    .unwrap();
    assert!(matches!(u.status, Status::Unsupported { .. }));
    let err = evaluate(&log.store, &reg, "sales.nope", None, &Query::default())
        .await
        .unwrap_err();
    // The engine names what is missing; the remedy (which verb lists the catalog) is the
    // caller's to give.
    assert!(
        matches!(&err, MetricError::UnknownMetric { id } if id == "sales.nope"),
        "{err}"
    );
    assert!(err.to_string().contains("`sales.nope`"), "{err}");
}

#[tokio::test]
async fn definitions_are_events_and_versions_are_frozen() {
    let log = Log::new();
    let at = t("2024-01-01");
    let out = define(&log.store, WIN_RATE_V3, at).await.unwrap();
    assert_eq!(
        (out.outcome, out.version, out.stream.as_str()),
        ("appended", 3, "metric-sales.win_rate")
    );
    // The same text again writes nothing.
    assert_eq!(
        define(&log.store, WIN_RATE_V3, at).await.unwrap().outcome,
        "already_defined"
    );
    // Wording only: recorded as a revision of the same version.
    let reworded = WIN_RATE_V3.replace("Win rate, new deals only", "Win rate of new deals");
    assert_eq!(
        define(&log.store, &reworded, at).await.unwrap().outcome,
        "wording_revised"
    );
    // The first wording again, later and by someone else: a no-op naming where it was
    // published, whatever came in between.
    let again = define_as(&log.store, WIN_RATE_V3, t("2024-02-01"), "token:other")
        .await
        .unwrap();
    assert_eq!(
        (again.outcome, again.position),
        ("already_defined", out.position)
    );
    // Another spec under version 3 is refused, naming the next free version.
    let changed = WIN_RATE_V3.replace("stream.kind == 'new'", "stream.kind == 'expansion'");
    match define(&log.store, &changed, at).await {
        Err(MetricError::VersionConflict {
            version: 3,
            next: 4,
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Versions are dense.
    match define(
        &log.store,
        &changed.replace("version = 3", "version = 7"),
        at,
    )
    .await
    {
        Err(MetricError::VersionOutOfSequence { next: 4, .. }) => {}
        other => panic!("expected out of sequence, got {other:?}"),
    }
    // A built-in version with another spec is refused too.
    assert!(matches!(
        define(
            &log.store,
            &changed.replace("version = 3", "version = 1"),
            at
        )
        .await,
        Err(MetricError::VersionConflict { .. })
    ));
    let stream = StreamId::new("metric-sales.win_rate").unwrap();
    assert_eq!(
        log.store.stream_version(&stream).await.unwrap(),
        StreamVersion(2)
    );
    let reg = Registry::load(&log.store).await.unwrap();
    assert_eq!(reg.versions("sales.win_rate"), [1, 2, 3]);
    assert_eq!(
        reg.get("sales.win_rate", Some(3)).unwrap().definition.name,
        "Win rate of new deals"
    );
    assert_eq!(reg.default_version("sales.win_rate"), Some(1));
    set_default(&log.store, "sales.win_rate", 3, at)
        .await
        .unwrap();
    let reg = Registry::load(&log.store).await.unwrap();
    assert_eq!(reg.default_version("sales.win_rate"), Some(3));
    assert!(reg.problems.is_empty());
}
