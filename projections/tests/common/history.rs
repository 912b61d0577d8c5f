//! Hand-built histories for the read-model tests: commands through the aggregates,
//! folded with `fold_all`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, TimeZone, Utc, Weekday};
use crm_domain::aggregates::account::OpenAccount;
use crm_domain::aggregates::case::{CasePriority, OpenCase};
use crm_domain::aggregates::opportunity::{OpenOpportunity, OpportunityKind, WinOpportunity};
use crm_domain::aggregates::subscription::{
    CancelSubscription, CancellationInitiator, StartSubscription, SubscriptionKind,
};
use crm_domain::values::{
    AccountId, AgentId, CaseId, Channel, Currency, Label, Money, OpportunityId, ProductId,
    SalesChannel, SubscriptionId,
};
use crm_domain::{Aggregate, DomainEvent};
use crm_eventstore::{EventStore, MemoryStore, Position};
use crm_projections::calendar::BusinessCalendar;
use crm_projections::read_models::cases::SlaPolicy;
use crm_projections::read_models::sla::SlaConfig;
use crm_projections::{fold_all, Projection};

use crate::gen;

pub fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}
pub fn l(s: &str) -> Label {
    Label::new(s).unwrap()
}
pub fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::USD)
}

/// Collects events produced by commands, in order.
#[derive(Default)]
pub struct History(Vec<DomainEvent>);

impl History {
    pub fn run<A: Aggregate>(&mut self, agg: &mut A, cmd: impl Into<A::Command>) -> &mut Self
    where
        A::Event: Into<DomainEvent>,
    {
        let events = agg.execute(&cmd.into()).expect("command accepted");
        self.0.extend(events.into_iter().map(Into::into));
        self
    }

    pub async fn fold<P: Projection>(&self, p: &P) -> P::State {
        let store = MemoryStore::new();
        let mut serial = 0;
        for e in &self.0 {
            gen::append(&store, std::slice::from_ref(e), &mut serial).await;
        }
        let all = store.read_all(Position::FIRST, 10_000).await.unwrap();
        fold_all(p, &all).0
    }
}

pub fn open_opp(
    id: &str,
    kind: OpportunityKind,
    amount: i64,
    on: DateTime<Utc>,
) -> OpenOpportunity {
    OpenOpportunity {
        opportunity_id: OpportunityId::new(id).unwrap(),
        account_id: AccountId::new("acme").unwrap(),
        owner: AgentId::new("rep1").unwrap(),
        product: ProductId::new("gtx").unwrap(),
        amount: usd(amount),
        expected_close: NaiveDate::from_ymd_opt(2024, 3, 31).unwrap(),
        kind,
        channel: SalesChannel::Direct,
        stage: l("Prospecting"),
        probability: 10,
        lead: None,
        campaign: None,
        is_test: false,
        occurred_at: on,
    }
}

pub fn win(id: &str, amount: i64, on: DateTime<Utc>) -> WinOpportunity {
    WinOpportunity {
        opportunity_id: OpportunityId::new(id).unwrap(),
        amount: usd(amount),
        list_price: None,
        discount: None,
        competitor: None,
        occurred_at: on,
    }
}

pub fn sla_config() -> SlaConfig {
    let mut holidays = BTreeSet::new();
    holidays.insert(NaiveDate::from_ymd_opt(2024, 3, 4).unwrap()); // a Monday
    SlaConfig {
        calendar: BusinessCalendar {
            utc_offset_minutes: 0,
            day_start_minute: 9 * 60,
            day_end_minute: 17 * 60,
            weekend: vec![Weekday::Sat, Weekday::Sun],
            holidays,
        },
        policies: vec![SlaPolicy {
            name: "standard".into(),
            priority: None,
            channel: None,
            first_response_minutes: 8 * 60,
            resolution_minutes: 40 * 60,
        }],
    }
}

pub fn open_case(id: &str, on: DateTime<Utc>) -> OpenCase {
    OpenCase {
        case_id: CaseId::new(id).unwrap(),
        account_id: Some(AccountId::new("acme").unwrap()),
        contact_id: None,
        case_type: l("question"),
        category: None,
        priority: CasePriority::Normal,
        channel: Channel::Email,
        sla_policy: None,
        is_complaint: false,
        is_test: false,
        occurred_at: on,
    }
}

pub fn start_sub(
    id: &str,
    acc: &str,
    plan: &str,
    term: u32,
    monthly: i64,
    on: DateTime<Utc>,
) -> StartSubscription {
    StartSubscription {
        subscription_id: SubscriptionId::new(id).unwrap(),
        account_id: AccountId::new(acc).unwrap(),
        plan: l(plan),
        product: ProductId::new("fiber").unwrap(),
        kind: SubscriptionKind::Product,
        monthly_amount: usd(monthly),
        term_months: term,
        trial: false,
        order: None,
        opportunity: None,
        is_test: false,
        occurred_at: on,
    }
}

pub fn cancel(id: &str, on: DateTime<Utc>) -> CancelSubscription {
    CancelSubscription {
        subscription_id: SubscriptionId::new(id).unwrap(),
        reason: l("price"),
        effective_at: on,
        initiated_by: CancellationInitiator::Customer,
        occurred_at: on,
    }
}

pub fn open_account(id: &str, segment: &str, on: DateTime<Utc>) -> OpenAccount {
    OpenAccount {
        account_id: AccountId::new(id).unwrap(),
        name: l(id),
        segment: l(segment),
        region: l("EMEA"),
        industry: None,
        owner: AgentId::new("rep1").unwrap(),
        is_internal: false,
        is_test: false,
        occurred_at: on,
    }
}
