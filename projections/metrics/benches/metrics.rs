//! Metric evaluation over a large log, beside raw replay speed from the same run.
//!
//! `cargo bench -p crm-metrics --bench metrics` writes 1,000,000 domain events (deals,
//! cases and leads, ~110,000 of each kind of stream, built through the aggregates) to a sled
//! store under `target/`, then measures on the same store: raw `read_all` replay, loading the
//! registry, and catalog metrics evaluated by replay (a simple share by month and by region,
//! a duration, a stock by month), plus `known_at` and `as_of` queries and an explain page.
//! `CRM_BENCH_QUICK=1` makes a 30,000-event smoke run. Prints a table and one JSON line per
//! scenario.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use crm_domain::aggregates::case::{CasePriority, CloseCase, CloseCode, OpenCase, ResolveCase};
use crm_domain::aggregates::lead::{CaptureLead, ConvertLead, QualifyLead};
use crm_domain::aggregates::opportunity::{
    ChangeOpportunityStage, LoseOpportunity, LossReason, OpenOpportunity, OpportunityKind,
    WinOpportunity,
};
use crm_domain::aggregates::{Case, Lead, Opportunity};
use crm_domain::values::{
    AccountId, AgentId, CaseId, Channel, ContactId, Currency, Label, LeadId, Money, OpportunityId,
    ProductId, SalesChannel,
};
use crm_domain::{Aggregate, DomainEvent, PersonalData};
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    EventId, EventStore, ExpectedVersion, Position, ProposedEvent, SledStore, StreamId,
};
use crm_metrics::{evaluate, explain, ExplainSelect, Grain, KnownAt, Query, Registry};
use uuid::Uuid;

const WRITERS: usize = 32;

fn exec<A>(state: &mut A, cmd: impl Into<A::Command>) -> Vec<DomainEvent>
where
    A: Aggregate,
    A::Event: Into<DomainEvent>,
    A::Error: std::fmt::Debug,
{
    state
        .execute(&cmd.into())
        .unwrap()
        .into_iter()
        .map(Into::into)
        .collect()
}

fn label(s: &str) -> Label {
    Label::new(s).unwrap()
}

/// The three streams of unit `i`: a deal, a case and a lead, 9 events.
fn unit(i: u64, base: DateTime<Utc>) -> Vec<Vec<DomainEvent>> {
    // Units spread over a year, one hour apart; `d` days after the unit's start.
    let day =
        |d: i64| base + Duration::hours(i64::try_from(i % 8_760).unwrap()) + Duration::days(d);
    let at = day(0);
    let id = format!("{i}");
    let mut o = Opportunity::default();
    let oid = OpportunityId::new(format!("o{id}")).unwrap();
    let mut deal = exec(
        &mut o,
        OpenOpportunity {
            opportunity_id: oid.clone(),
            account_id: AccountId::new(format!("a{}", i % 5_000)).unwrap(),
            owner: AgentId::new(format!("r{}", i % 30)).unwrap(),
            product: ProductId::new(format!("p{}", i % 7)).unwrap(),
            amount: Money::new(100_000, Currency::USD),
            expected_close: day(30).date_naive(),
            kind: OpportunityKind::New,
            channel: SalesChannel::Direct,
            stage: label("Prospecting"),
            probability: 10,
            lead: None,
            campaign: None,
            is_test: false,
            occurred_at: at,
        },
    );
    deal.extend(exec(
        &mut o,
        ChangeOpportunityStage {
            opportunity_id: oid.clone(),
            to: label("Engaging"),
            probability: 40,
            occurred_at: day(3),
        },
    ));
    if i.is_multiple_of(3) {
        deal.extend(exec(
            &mut o,
            LoseOpportunity {
                opportunity_id: oid,
                reason: LossReason::Price,
                competitor: None,
                occurred_at: day(20),
            },
        ));
    } else {
        let amount = Money::new(
            i64::try_from(50_000 + (i % 97) * 1_000).unwrap(),
            Currency::USD,
        );
        deal.extend(exec(
            &mut o,
            WinOpportunity {
                opportunity_id: oid,
                amount,
                list_price: None,
                discount: None,
                competitor: None,
                occurred_at: day(40),
            },
        ));
    }
    let mut c = Case::default();
    let cid = CaseId::new(format!("c{id}")).unwrap();
    let mut case = exec(
        &mut c,
        OpenCase {
            case_id: cid.clone(),
            account_id: None,
            contact_id: None,
            case_type: label(if i.is_multiple_of(2) {
                "question"
            } else {
                "incident"
            }),
            category: None,
            priority: CasePriority::Normal,
            channel: Channel::Web,
            sla_policy: None,
            is_complaint: i.is_multiple_of(10),
            is_test: false,
            occurred_at: at,
        },
    );
    case.extend(exec(
        &mut c,
        ResolveCase {
            case_id: cid.clone(),
            agent: Some(AgentId::new("agent").unwrap()),
            resolution_code: label("fixed"),
            first_contact: true,
            occurred_at: at + Duration::hours(i64::try_from(i % 50).unwrap()),
        },
    ));
    case.extend(exec(
        &mut c,
        CloseCase {
            case_id: cid,
            close_code: CloseCode::Resolved,
            occurred_at: at + Duration::hours(60),
        },
    ));
    let mut l = Lead::default();
    let lid = LeadId::new(format!("l{id}")).unwrap();
    let mut lead = exec(
        &mut l,
        CaptureLead {
            lead_id: lid.clone(),
            source: label("web"),
            channel: Channel::Web,
            campaign: None,
            product: None,
            industry: None,
            region: None,
            referred_by: None,
            personal: PersonalData {
                full_name: Some("Bench Lead".into()),
                ..PersonalData::default()
            },
            is_test: false,
            occurred_at: at,
        },
    );
    lead.extend(exec(
        &mut l,
        QualifyLead {
            lead_id: lid.clone(),
            budget: true,
            authority: true,
            need: true,
            timeline: true,
            score: Some(80),
            occurred_at: day(2),
        },
    ));
    lead.extend(exec(
        &mut l,
        ConvertLead {
            lead_id: lid,
            account_id: AccountId::new("acme").unwrap(),
            contact_id: ContactId::new(format!("k{id}")).unwrap(),
            opportunity_id: None,
            occurred_at: day(5),
        },
    ));
    vec![deal, case, lead]
}

fn proposed(seq: u64, e: &DomainEvent) -> ProposedEvent {
    let enc = e.encode().unwrap();
    ProposedEvent {
        event_id: EventId(Uuid::from_u64_pair(0xbe_4c, seq)),
        event_type: enc.event_type.to_owned(),
        schema_version: enc.schema_version,
        occurred_at: enc.occurred_at,
        causation_id: None,
        correlation_id: None,
        actor: "bench".into(),
        metadata: Vec::new(),
        payload: enc.payload,
    }
}

async fn load(store: &SledStore, units: u64) {
    let base = Utc.with_ymd_and_hms(2023, 1, 1, 8, 0, 0).unwrap();
    // Reps and their regions first.
    for r in 0..30u64 {
        use crm_domain::aggregates::agent::{AssignRep, RegisterAgent};
        use crm_domain::aggregates::Agent;
        let mut a = Agent::default();
        let agent_id = AgentId::new(format!("r{r}")).unwrap();
        let mut ev = exec(
            &mut a,
            RegisterAgent {
                agent_id: agent_id.clone(),
                personal: None,
                occurred_at: base,
            },
        );
        let region = ["East", "West", "Central"][usize::try_from(r % 3).unwrap()];
        ev.extend(exec(
            &mut a,
            AssignRep {
                agent_id,
                team: crm_domain::values::TeamId::new("t").unwrap(),
                region: label(region),
                manager: None,
                occurred_at: base,
            },
        ));
        let stream = StreamId::new(ev[0].stream_id()).unwrap();
        let batch = ev
            .iter()
            .enumerate()
            .map(|(k, e)| proposed(u64::MAX - r * 2 - u64::try_from(k).unwrap(), e))
            .collect();
        store
            .append(&stream, ExpectedVersion::NoStream, batch)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = u64::try_from(w).unwrap();
            while i < units {
                for (s, events) in unit(i, base).into_iter().enumerate() {
                    let stream = StreamId::new(events[0].stream_id()).unwrap();
                    let batch = events
                        .iter()
                        .enumerate()
                        .map(|(k, e)| proposed(i * 16 + u64::try_from(s * 4 + k).unwrap(), e))
                        .collect();
                    store
                        .append(&stream, ExpectedVersion::NoStream, batch)
                        .await
                        .unwrap();
                }
                i += u64::try_from(WRITERS).unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

struct Row {
    scenario: String,
    seconds: f64,
    events: u64,
    note: String,
}

fn report(rows: &[Row]) {
    println!(
        "\n{:<44} {:>10} {:>14} {:>12}  figure",
        "scenario", "seconds", "events/s", "events"
    );
    for r in rows {
        #[allow(clippy::cast_precision_loss)]
        let rate = r.events as f64 / r.seconds;
        println!(
            "{:<44} {:>10.3} {:>14.0} {:>12}  {}",
            r.scenario, r.seconds, rate, r.events, r.note
        );
    }
    for r in rows {
        println!(
            "{}",
            serde_json::json!({"bench": "metrics", "scenario": r.scenario, "seconds": r.seconds, "events": r.events, "note": r.note})
        );
    }
}

fn main() {
    let quick = std::env::var("CRM_BENCH_QUICK").is_ok_and(|v| v == "1");
    // `CRM_BENCH_UNITS` overrides the size (9 events per unit), e.g. for profiling.
    let units: u64 = std::env::var("CRM_BENCH_UNITS")
        .ok()
        .and_then(|u| u.parse().ok())
        .unwrap_or(if quick { 3_333 } else { 111_111 });
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("crm-metrics-bench-")
        .tempdir_in(base)
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = SledStore::open(dir.path().join("log")).unwrap();
    let started = Instant::now();
    rt.block_on(load(&store, units));
    let head = store.head().position.0;
    eprintln!(
        "metrics bench: {head} events written in {:.1} s to {}",
        started.elapsed().as_secs_f64(),
        dir.path().display()
    );
    let mut rows = Vec::new();

    let started = Instant::now();
    let mut n = 0u64;
    let mut next = Position::FIRST;
    rt.block_on(async {
        loop {
            let page = store.read_all(next, READ_PAGE_MAX).await.unwrap();
            let Some(last) = page.last() else { break };
            next = last.position.next().unwrap();
            n += u64::try_from(page.len()).unwrap();
            std::hint::black_box(&page);
        }
    });
    rows.push(Row {
        scenario: "raw replay, read_all pages".into(),
        seconds: started.elapsed().as_secs_f64(),
        events: n,
        note: String::new(),
    });

    let started = Instant::now();
    let reg = rt.block_on(Registry::load(&store)).unwrap();
    rows.push(Row {
        scenario: "registry load (catalog + log scan)".into(),
        seconds: started.elapsed().as_secs_f64(),
        events: head,
        note: format!("{} definitions", reg.list().len()),
    });

    let all = Query {
        period: Grain::Month,
        ..Query::default()
    };
    let by_region = Query {
        by: vec!["region".into()],
        ..Query::default()
    };
    let mut known = all.clone();
    known.known_at = Some(KnownAt::Position(head / 2));
    let mut as_of = all.clone();
    as_of.as_of = Some(Utc.with_ymd_and_hms(2023, 7, 1, 0, 0, 0).unwrap());
    let mut bitemporal = as_of.clone();
    bitemporal.known_at = Some(KnownAt::Position(head / 2));
    let scenarios: Vec<(&str, &str, Option<u32>, &Query)> = vec![
        ("sales.win_rate by month", "sales.win_rate", Some(1), &all),
        (
            "sales.win_rate by region",
            "sales.win_rate",
            Some(1),
            &by_region,
        ),
        (
            "sales.win_rate known_at half the log",
            "sales.win_rate",
            Some(1),
            &known,
        ),
        (
            "sales.win_rate as_of 2023-07-01",
            "sales.win_rate",
            Some(1),
            &as_of,
        ),
        (
            "sales.win_rate as_of + known_at",
            "sales.win_rate",
            Some(1),
            &bitemporal,
        ),
        (
            "sales.avg_deal_size by region",
            "sales.avg_deal_size",
            Some(1),
            &by_region,
        ),
        (
            "service.time_to_resolution by month",
            "service.time_to_resolution",
            Some(1),
            &all,
        ),
        (
            "sales.open_opportunities (stock) by month",
            "sales.open_opportunities",
            Some(1),
            &all,
        ),
        (
            "marketing.lead_conversion_rate by month",
            "marketing.lead_conversion_rate",
            Some(1),
            &all,
        ),
        (
            "sales.win_rate v2 (derived, 3 inputs)",
            "sales.win_rate",
            Some(2),
            &all,
        ),
    ];
    for (name, id, version, query) in scenarios {
        let started = Instant::now();
        let e = rt
            .block_on(evaluate(&store, &reg, id, version, query))
            .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let first = e
            .figures
            .iter()
            .find(|f| f.value.is_some())
            .map(|f| format!("{} {}", f.period.label, f.display))
            .unwrap_or_default();
        rows.push(Row {
            scenario: name.into(),
            seconds,
            events: e.log.events_scanned,
            note: format!(
                "{} figures, kept {}, e.g. {first}",
                e.figures.len(),
                e.log.events_kept
            ),
        });
    }
    let started = Instant::now();
    let x = rt
        .block_on(explain(
            &store,
            &reg,
            "sales.win_rate",
            Some(1),
            &Query::default(),
            &ExplainSelect {
                limit: 1_000,
                ..ExplainSelect::default()
            },
        ))
        .unwrap();
    rows.push(Row {
        scenario: "explain sales.win_rate (page of 1,000)".into(),
        seconds: started.elapsed().as_secs_f64(),
        events: x.log.events_scanned,
        note: format!("{} rows in all", x.total_rows),
    });
    report(&rows);
    rt.block_on(store.close());
}
