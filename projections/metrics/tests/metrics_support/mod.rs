//! Shared helpers of the metric tests: small histories built through the domain aggregates
//! (so every event is one the rules allow) and appended to a `MemoryStore`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use crm_domain::aggregates::agent::{AssignRep, RegisterAgent};
use crm_domain::aggregates::case::{
    CasePriority, CloseCase, CloseCode, OpenCase, PauseCaseSla, ReopenCase, ResolveCase,
    ResumeCaseSla, SlaPauseReason, SlaResumeReason,
};
use crm_domain::aggregates::lead::{CaptureLead, ConvertLead, QualifyLead};
use crm_domain::aggregates::opportunity::{
    LoseOpportunity, LossReason, OpenOpportunity, OpportunityKind, ReopenOpportunity,
    VoidOpportunity, VoidReason, WinOpportunity,
};
use crm_domain::aggregates::subscription::{
    CancelSubscription, CancellationInitiator, ChangeSubscription, StartSubscription,
    SubscriptionKind,
};
use crm_domain::aggregates::{Agent, Case, Lead, Opportunity, Subscription};
use crm_domain::values::{
    AccountId, AgentId, CaseId, Channel, ContactId, Currency, Label, LeadId, Money, OpportunityId,
    ProductId, SalesChannel, SubscriptionId, TeamId,
};
use crm_domain::{Aggregate, DomainEvent};
use crm_eventstore::{
    EventId, EventStore, ExpectedVersion, MemoryStore, ProposedEvent, RecordedEvent, StreamId,
};
use uuid::Uuid;

/// `2024-03-05` (midnight UTC) or a full RFC 3339 instant.
pub fn t(s: &str) -> DateTime<Utc> {
    if s.len() == 10 {
        let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        return Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap());
    }
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

pub fn usd(minor_units: i64) -> Money {
    Money::new(minor_units, Currency::USD)
}

fn label(s: &str) -> Label {
    Label::new(s).unwrap()
}

/// Runs a command on an aggregate and returns its events as domain events.
pub fn exec<A>(state: &mut A, cmd: impl Into<A::Command>) -> Vec<DomainEvent>
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

/// A memory store and a counter for event ids.
pub struct Log {
    pub store: MemoryStore,
    seq: u128,
    pub opps: HashMap<String, Opportunity>,
    pub cases: HashMap<String, Case>,
    pub subs: HashMap<String, Subscription>,
    pub leads: HashMap<String, Lead>,
    pub orders: HashMap<String, crm_domain::aggregates::Order>,
}

impl Log {
    pub fn new() -> Log {
        Log {
            store: MemoryStore::new(),
            seq: 0,
            opps: HashMap::new(),
            cases: HashMap::new(),
            subs: HashMap::new(),
            leads: HashMap::new(),
            orders: HashMap::new(),
        }
    }

    /// Appends events, each to its stream, in order; returns their positions.
    pub async fn append(&mut self, events: Vec<DomainEvent>) -> Vec<u64> {
        let mut positions = Vec::new();
        for e in events {
            self.seq += 1;
            let enc = e.encode().unwrap();
            let proposed = ProposedEvent {
                event_id: EventId(Uuid::from_u128(self.seq)),
                event_type: enc.event_type.to_owned(),
                schema_version: enc.schema_version,
                occurred_at: enc.occurred_at,
                causation_id: None,
                correlation_id: None,
                actor: "test".into(),
                metadata: Vec::new(),
                payload: enc.payload,
            };
            let stream = StreamId::new(enc.stream_id).unwrap();
            let r = self
                .store
                .append(&stream, ExpectedVersion::Any, vec![proposed])
                .await
                .unwrap();
            positions.push(r.first_position.0);
        }
        positions
    }

    /// Records custom attributes (an `AttributesSet` event) on `stream`.
    pub async fn set_attributes(&mut self, stream: &str, attributes: serde_json::Value, at: &str) {
        self.seq += 1;
        let payload = serde_json::json!({ "attributes": attributes, "occurred_at": t(at) });
        let proposed = ProposedEvent {
            event_id: EventId(Uuid::from_u128(self.seq)),
            event_type: crm_domain::attributes::ATTRIBUTES_SET.to_owned(),
            schema_version: crm_domain::attributes::ATTRIBUTES_SET_VERSION,
            occurred_at: t(at),
            causation_id: None,
            correlation_id: None,
            actor: "test".into(),
            metadata: Vec::new(),
            payload: serde_json::to_vec(&payload).unwrap(),
        };
        let stream = StreamId::new(stream).unwrap();
        self.store
            .append(&stream, ExpectedVersion::Any, vec![proposed])
            .await
            .unwrap();
    }

    /// Every recorded event.
    pub async fn all(&self) -> Vec<RecordedEvent> {
        self.store
            .read_all(crm_eventstore::Position::FIRST, 10_000)
            .await
            .unwrap()
    }

    /// Reps r1 (East) and r2 (West) and seven deals o1 to o7, amounts in cents: o4 reopened
    /// and lost, o5 voided, o6 a renewal. The events, not yet appended.
    pub fn two_reps_and_seven_deals(&mut self) -> Vec<DomainEvent> {
        let mut ev = self.rep("r1", "East", "2023-12-01");
        ev.extend(self.rep("r2", "West", "2023-12-01"));
        ev.extend(self.deal("o1", "r1", Some(100_000), "2024-01-01", "2024-01-11"));
        ev.extend(self.deal("o2", "r1", None, "2024-01-05", "2024-01-20"));
        ev.extend(self.deal("o3", "r2", Some(300_000), "2024-01-10", "2024-02-09"));
        ev.extend(self.deal("o4", "r2", Some(200_000), "2024-01-15", "2024-01-20"));
        ev.extend(self.reopen("o4", "2024-01-25"));
        ev.extend(self.lose("o4", "2024-02-05"));
        ev.extend(self.deal("o5", "r1", Some(150_000), "2024-01-02", "2024-01-12"));
        ev.extend(self.void("o5", "2024-01-13"));
        ev.extend(self.open_opp("o6", "r2", OpportunityKind::Renewal, 50_000, "2024-01-03"));
        ev.extend(self.win("o6", 50_000, "2024-01-08"));
        ev.extend(self.deal("o7", "r1", None, "2024-02-01", "2024-02-10"));
        ev
    }

    pub fn rep(&mut self, id: &str, region: &str, at: &str) -> Vec<DomainEvent> {
        let mut a = Agent::default();
        let agent_id = AgentId::new(id).unwrap();
        let mut out = exec(
            &mut a,
            RegisterAgent {
                agent_id: agent_id.clone(),
                personal: None,
                occurred_at: t(at),
            },
        );
        out.extend(exec(
            &mut a,
            AssignRep {
                agent_id,
                team: TeamId::new(format!("team-{region}")).unwrap(),
                region: label(region),
                manager: None,
                occurred_at: t(at),
            },
        ));
        out
    }

    pub fn open_opp(
        &mut self,
        id: &str,
        owner: &str,
        kind: OpportunityKind,
        amount: i64,
        at: &str,
    ) -> Vec<DomainEvent> {
        let mut o = Opportunity::default();
        let ev = exec(
            &mut o,
            OpenOpportunity {
                opportunity_id: OpportunityId::new(id).unwrap(),
                account_id: AccountId::new("acme").unwrap(),
                owner: AgentId::new(owner).unwrap(),
                product: ProductId::new("gtx").unwrap(),
                amount: usd(amount),
                expected_close: t(at).date_naive(),
                kind,
                channel: SalesChannel::Direct,
                stage: label("Prospecting"),
                probability: 10,
                lead: None,
                campaign: None,
                is_test: false,
                occurred_at: t(at),
            },
        );
        self.opps.insert(id.to_owned(), o);
        ev
    }

    pub fn win(&mut self, id: &str, amount: i64, at: &str) -> Vec<DomainEvent> {
        let o = self.opps.get_mut(id).unwrap();
        exec(
            o,
            WinOpportunity {
                opportunity_id: OpportunityId::new(id).unwrap(),
                amount: usd(amount),
                list_price: None,
                discount: None,
                competitor: None,
                occurred_at: t(at),
            },
        )
    }

    pub fn lose(&mut self, id: &str, at: &str) -> Vec<DomainEvent> {
        let o = self.opps.get_mut(id).unwrap();
        exec(
            o,
            LoseOpportunity {
                opportunity_id: OpportunityId::new(id).unwrap(),
                reason: LossReason::Price,
                competitor: None,
                occurred_at: t(at),
            },
        )
    }

    pub fn reopen(&mut self, id: &str, at: &str) -> Vec<DomainEvent> {
        let o = self.opps.get_mut(id).unwrap();
        exec(
            o,
            ReopenOpportunity {
                opportunity_id: OpportunityId::new(id).unwrap(),
                reason: label("customer came back"),
                occurred_at: t(at),
            },
        )
    }

    pub fn void(&mut self, id: &str, at: &str) -> Vec<DomainEvent> {
        let o = self.opps.get_mut(id).unwrap();
        exec(
            o,
            VoidOpportunity {
                opportunity_id: OpportunityId::new(id).unwrap(),
                reason: VoidReason::Duplicate,
                occurred_at: t(at),
            },
        )
    }

    /// A deal opened at `open` and won or lost at `close`.
    pub fn deal(
        &mut self,
        id: &str,
        owner: &str,
        won: Option<i64>,
        open: &str,
        close: &str,
    ) -> Vec<DomainEvent> {
        let mut ev = self.open_opp(id, owner, OpportunityKind::New, won.unwrap_or(10_000), open);
        ev.extend(match won {
            Some(a) => self.win(id, a, close),
            None => self.lose(id, close),
        });
        ev
    }

    pub fn open_case(&mut self, id: &str, at: &str, complaint: bool) -> Vec<DomainEvent> {
        let mut c = Case::default();
        let ev = exec(
            &mut c,
            OpenCase {
                case_id: CaseId::new(id).unwrap(),
                account_id: None,
                contact_id: None,
                case_type: label("ticket"),
                category: None,
                priority: CasePriority::Normal,
                channel: Channel::Web,
                sla_policy: None,
                is_complaint: complaint,
                is_test: false,
                occurred_at: t(at),
            },
        );
        self.cases.insert(id.to_owned(), c);
        ev
    }

    pub fn resolve(&mut self, id: &str, at: &str) -> Vec<DomainEvent> {
        let c = self.cases.get_mut(id).unwrap();
        exec(
            c,
            ResolveCase {
                case_id: CaseId::new(id).unwrap(),
                agent: Some(AgentId::new("agent-1").unwrap()),
                resolution_code: label("fixed"),
                first_contact: false,
                occurred_at: t(at),
            },
        )
    }

    pub fn reopen_case(&mut self, id: &str, at: &str) -> Vec<DomainEvent> {
        let c = self.cases.get_mut(id).unwrap();
        exec(
            c,
            ReopenCase {
                case_id: CaseId::new(id).unwrap(),
                reason: label("not fixed"),
                occurred_at: t(at),
            },
        )
    }

    pub fn close_case(&mut self, id: &str, code: CloseCode, at: &str) -> Vec<DomainEvent> {
        let c = self.cases.get_mut(id).unwrap();
        exec(
            c,
            CloseCase {
                case_id: CaseId::new(id).unwrap(),
                close_code: code,
                occurred_at: t(at),
            },
        )
    }

    pub fn pause(&mut self, id: &str, at: &str) -> Vec<DomainEvent> {
        let c = self.cases.get_mut(id).unwrap();
        exec(
            c,
            PauseCaseSla {
                case_id: CaseId::new(id).unwrap(),
                reason: SlaPauseReason::WaitingOnCustomer,
                occurred_at: t(at),
            },
        )
    }

    pub fn resume(&mut self, id: &str, at: &str) -> Vec<DomainEvent> {
        let c = self.cases.get_mut(id).unwrap();
        exec(
            c,
            ResumeCaseSla {
                case_id: CaseId::new(id).unwrap(),
                reason: SlaResumeReason::CustomerReplied,
                occurred_at: t(at),
            },
        )
    }

    pub fn subscribe(
        &mut self,
        id: &str,
        account: &str,
        plan: &str,
        monthly: i64,
        at: &str,
    ) -> Vec<DomainEvent> {
        let mut s = Subscription::default();
        let ev = exec(
            &mut s,
            StartSubscription {
                subscription_id: SubscriptionId::new(id).unwrap(),
                account_id: AccountId::new(account).unwrap(),
                plan: label(plan),
                product: ProductId::new("internet").unwrap(),
                kind: SubscriptionKind::Product,
                monthly_amount: usd(monthly),
                term_months: 12,
                trial: false,
                order: None,
                opportunity: None,
                is_test: false,
                occurred_at: t(at),
            },
        );
        self.subs.insert(id.to_owned(), s);
        ev
    }

    pub fn change_plan(&mut self, id: &str, monthly: i64, at: &str) -> Vec<DomainEvent> {
        let s = self.subs.get_mut(id).unwrap();
        exec(
            s,
            ChangeSubscription {
                subscription_id: SubscriptionId::new(id).unwrap(),
                plan: label("changed"),
                monthly_amount: usd(monthly),
                occurred_at: t(at),
            },
        )
    }

    pub fn cancel(&mut self, id: &str, effective: &str, at: &str) -> Vec<DomainEvent> {
        let s = self.subs.get_mut(id).unwrap();
        exec(
            s,
            CancelSubscription {
                subscription_id: SubscriptionId::new(id).unwrap(),
                reason: label("price"),
                effective_at: t(effective),
                initiated_by: CancellationInitiator::Customer,
                occurred_at: t(at),
            },
        )
    }

    /// Order `id` of `account`: one line of `amount` cents, placed at `at`.
    pub fn order(&mut self, id: &str, account: &str, amount: i64, at: &str) -> Vec<DomainEvent> {
        let mut o = crm_domain::aggregates::Order::default();
        let ev = exec(
            &mut o,
            crm_domain::aggregates::order::PlaceOrder {
                order_id: crm_domain::values::OrderId::new(id).unwrap(),
                account_id: AccountId::new(account).unwrap(),
                lines: vec![crm_domain::aggregates::order::OrderLine {
                    product: ProductId::new("P-1").unwrap(),
                    quantity: 1,
                    amount: usd(amount),
                    cost: None,
                }],
                channel: SalesChannel::Online,
                campaign: None,
                opportunity: None,
                is_test: false,
                occurred_at: t(at),
            },
        );
        self.orders.insert(id.to_owned(), o);
        ev
    }

    /// Cancels order `id`.
    pub fn cancel_order(&mut self, id: &str, at: &str) -> Vec<DomainEvent> {
        let o = self.orders.get_mut(id).unwrap();
        exec(
            o,
            crm_domain::aggregates::order::CancelOrder {
                order_id: crm_domain::values::OrderId::new(id).unwrap(),
                reason: label("changed mind"),
                occurred_at: t(at),
            },
        )
    }

    pub fn capture(&mut self, id: &str, at: &str) -> Vec<DomainEvent> {
        let mut l = Lead::default();
        let ev = exec(
            &mut l,
            CaptureLead {
                lead_id: LeadId::new(id).unwrap(),
                source: label("web"),
                channel: Channel::Web,
                campaign: None,
                product: None,
                industry: None,
                region: None,
                referred_by: None,
                personal: crm_domain::PersonalData {
                    full_name: Some(format!("Lead {id}")),
                    ..Default::default()
                },
                is_test: false,
                occurred_at: t(at),
            },
        );
        self.leads.insert(id.to_owned(), l);
        ev
    }

    pub fn convert(&mut self, id: &str, at: &str) -> Vec<DomainEvent> {
        let l = self.leads.get_mut(id).unwrap();
        let mut ev = exec(
            l,
            QualifyLead {
                lead_id: LeadId::new(id).unwrap(),
                budget: true,
                authority: true,
                need: true,
                timeline: false,
                score: Some(70),
                occurred_at: t(at),
            },
        );
        ev.extend(exec(
            l,
            ConvertLead {
                lead_id: LeadId::new(id).unwrap(),
                account_id: AccountId::new("acme").unwrap(),
                contact_id: ContactId::new(format!("c-{id}")).unwrap(),
                opportunity_id: None,
                occurred_at: t(at),
            },
        ));
        ev
    }
}
