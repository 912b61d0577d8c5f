//! Valid domain event histories for tests and the benchmark: commands go through the
//! aggregates' `handle`, only accepted ones become events. Shared by `tests/` and `benches/`
//! via `#[path]`.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::manual_range_patterns,
    clippy::manual_is_multiple_of
)]

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use crm_domain::aggregates::account::{Account, OpenAccount};
use crm_domain::aggregates::agent::{Agent, AssignRep};
use crm_domain::aggregates::case::{
    AssignCase, Case, CasePriority, CloseCase, CloseCode, EscalateCase, OpenCase, PauseCaseSla,
    RecordFirstResponse, ReopenCase, ResolveCase, ResumeCaseSla, SlaPauseReason, SlaResumeReason,
};
use crm_domain::aggregates::contact::{AddContact, Contact, RecordContactDeparture};
use crm_domain::aggregates::feedback::{AnswerSurvey, Feedback};
use crm_domain::aggregates::interaction::{
    Direction, Interaction, InteractionOutcome, LogInteraction, Purpose,
};
use crm_domain::aggregates::opportunity::{
    ChangeOpportunityAmount, ChangeOpportunityStage, LoseOpportunity, LossReason, OpenOpportunity,
    Opportunity, OpportunityKind, ReopenOpportunity, VoidOpportunity, VoidReason, WinOpportunity,
};
use crm_domain::aggregates::order::{
    CancelOrder, IssueInvoice, Order, OrderLine, PlaceOrder, RecordPayment, RecordPaymentOverdue,
    RefundOrder,
};
use crm_domain::aggregates::subscription::{
    CancelSubscription, CancellationInitiator, ChangeSubscription, ExpireSubscription,
    RenewSubscription, StartSubscription, Subscription, SubscriptionKind,
};
use crm_domain::values::{
    AccountId, AgentId, CaseId, Channel, ContactId, Currency, FeedbackId, InteractionId, InvoiceId,
    Label, Money, OpportunityId, OrderId, ProductId, SalesChannel, SubscriptionId, SurveyKind,
    TeamId,
};
use crm_domain::{Aggregate, DomainEvent, PersonalData};
use crm_eventstore::{EventId, EventStore, ExpectedVersion, ProposedEvent, StreamId};
use uuid::Uuid;

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 8, 0, 0).unwrap()
}

pub fn l(s: &str) -> Label {
    Label::new(s).unwrap()
}

pub fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::USD)
}

/// Aggregates by id, one map per kind.
#[derive(Default)]
pub struct Gen {
    pub clock: DateTime<Utc>,
    accounts: HashMap<String, Account>,
    agents: HashMap<String, Agent>,
    opps: HashMap<String, Opportunity>,
    subs: HashMap<String, Subscription>,
    orders: HashMap<String, Order>,
    cases: HashMap<String, Case>,
    contacts: HashMap<String, Contact>,
    interactions: HashMap<String, Interaction>,
    feedback: HashMap<String, Feedback>,
    invoices: HashMap<String, u32>,
    serial: u64,
}

fn run<A: Aggregate>(map: &mut HashMap<String, A>, id: &str, cmd: A::Command) -> Vec<DomainEvent>
where
    A::Event: Into<DomainEvent> + Clone,
{
    let agg = map.entry(id.to_owned()).or_default();
    match agg.execute(&cmd) {
        Ok(events) => events.into_iter().map(Into::into).collect(),
        Err(_) => Vec::new(),
    }
}

/// One random step: `(kind, a, b, n)`.
pub type Op = (u8, u8, u8, u16);

pub const STAGES: [&str; 4] = ["Prospecting", "Qualify", "Propose", "Negotiate"];
pub const PRIORITIES: [CasePriority; 4] = [
    CasePriority::Low,
    CasePriority::Normal,
    CasePriority::High,
    CasePriority::Urgent,
];

impl Gen {
    pub fn new(clock: DateTime<Utc>) -> Gen {
        Gen {
            clock,
            ..Gen::default()
        }
    }

    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// Interprets one random op as a command; returns the events it produced (one stream).
    pub fn op(&mut self, (kind, a, b, n): Op) -> Vec<DomainEvent> {
        // Business time moves forward by 0..=16 hours per op, sometimes by days.
        self.clock += Duration::minutes(i64::from(n % 17) * 60 + i64::from(n % 7));
        if kind % 29 == 28 {
            self.clock += Duration::days(i64::from(n % 45));
        }
        let at = self.clock;
        let acc = format!("a{}", a % 4);
        let agent = format!("rep{}", b % 3);
        match kind % 29 {
            0 => run(
                &mut self.accounts,
                &acc,
                OpenAccount {
                    account_id: AccountId::new(&acc).unwrap(),
                    name: l(&acc),
                    segment: l(["SMB", "Enterprise"][usize::from(b % 2)]),
                    region: l(["EMEA", "AMER"][usize::from(n % 2)]),
                    industry: None,
                    owner: AgentId::new(&agent).unwrap(),
                    is_internal: false,
                    is_test: n % 50 == 0,
                    occurred_at: at,
                }
                .into(),
            ),
            1 => run(
                &mut self.agents,
                &agent,
                AssignRep {
                    agent_id: AgentId::new(&agent).unwrap(),
                    team: TeamId::new(format!("team{}", a % 2)).unwrap(),
                    region: l(["EMEA", "AMER"][usize::from(n % 2)]),
                    manager: None,
                    occurred_at: at,
                }
                .into(),
            ),
            2 => {
                let id = format!("o{}", b % 6);
                run(
                    &mut self.opps,
                    &id,
                    OpenOpportunity {
                        opportunity_id: OpportunityId::new(&id).unwrap(),
                        account_id: AccountId::new(&acc).unwrap(),
                        owner: AgentId::new(&agent).unwrap(),
                        product: ProductId::new(format!("p{}", n % 3)).unwrap(),
                        amount: usd(i64::from(n) * 100),
                        expected_close: NaiveDate::from_ymd_opt(2024, 6, 30).unwrap(),
                        kind: [
                            OpportunityKind::New,
                            OpportunityKind::Expansion,
                            OpportunityKind::Renewal,
                        ][usize::from(a % 3)],
                        channel: SalesChannel::Direct,
                        stage: l(STAGES[0]),
                        probability: 10,
                        lead: None,
                        campaign: None,
                        is_test: false,
                        occurred_at: at,
                    }
                    .into(),
                )
            }
            3 | 4 => {
                let id = format!("o{}", b % 6);
                let stage = usize::from(a) % STAGES.len();
                run(
                    &mut self.opps,
                    &id,
                    ChangeOpportunityStage {
                        opportunity_id: OpportunityId::new(&id).unwrap(),
                        to: l(STAGES[stage]),
                        probability: u8::try_from(stage * 25).unwrap(),
                        occurred_at: at,
                    }
                    .into(),
                )
            }
            5 => {
                let id = format!("o{}", b % 6);
                run(
                    &mut self.opps,
                    &id,
                    WinOpportunity {
                        opportunity_id: OpportunityId::new(&id).unwrap(),
                        amount: usd(i64::from(n) * 90),
                        list_price: None,
                        discount: None,
                        competitor: None,
                        occurred_at: at,
                    }
                    .into(),
                )
            }
            6 => {
                let id = format!("o{}", b % 6);
                run(
                    &mut self.opps,
                    &id,
                    LoseOpportunity {
                        opportunity_id: OpportunityId::new(&id).unwrap(),
                        reason: [
                            LossReason::Price,
                            LossReason::Competitor,
                            LossReason::NoDecision,
                        ][usize::from(a % 3)],
                        competitor: None,
                        occurred_at: at,
                    }
                    .into(),
                )
            }
            7 => {
                let id = format!("o{}", b % 6);
                if a % 3 == 0 {
                    run(
                        &mut self.opps,
                        &id,
                        VoidOpportunity {
                            opportunity_id: OpportunityId::new(&id).unwrap(),
                            reason: VoidReason::Duplicate,
                            occurred_at: at,
                        }
                        .into(),
                    )
                } else if a % 3 == 1 {
                    run(
                        &mut self.opps,
                        &id,
                        ChangeOpportunityAmount {
                            opportunity_id: OpportunityId::new(&id).unwrap(),
                            to: usd(i64::from(n) * 110 + 1),
                            occurred_at: at,
                        }
                        .into(),
                    )
                } else {
                    run(
                        &mut self.opps,
                        &id,
                        ReopenOpportunity {
                            opportunity_id: OpportunityId::new(&id).unwrap(),
                            reason: l("customer came back"),
                            occurred_at: at,
                        }
                        .into(),
                    )
                }
            }
            8 => {
                let id = format!("s{}", b % 5);
                run(
                    &mut self.subs,
                    &id,
                    StartSubscription {
                        subscription_id: SubscriptionId::new(&id).unwrap(),
                        account_id: AccountId::new(&acc).unwrap(),
                        plan: l(["Month-to-month", "One year"][usize::from(n % 2)]),
                        product: ProductId::new("internet").unwrap(),
                        kind: SubscriptionKind::Product,
                        monthly_amount: usd(i64::from(n % 200) * 100 + 500),
                        term_months: [1, 12][usize::from(n % 2)],
                        trial: n % 13 == 0,
                        order: None,
                        opportunity: None,
                        is_test: false,
                        occurred_at: at,
                    }
                    .into(),
                )
            }
            9 => {
                let id = format!("s{}", b % 5);
                run(
                    &mut self.subs,
                    &id,
                    ChangeSubscription {
                        subscription_id: SubscriptionId::new(&id).unwrap(),
                        plan: l("Two year"),
                        monthly_amount: usd(i64::from(n % 300) * 100),
                        occurred_at: at,
                    }
                    .into(),
                )
            }
            10 => {
                let id = format!("s{}", b % 5);
                if a % 4 == 0 {
                    run(
                        &mut self.subs,
                        &id,
                        ExpireSubscription {
                            subscription_id: SubscriptionId::new(&id).unwrap(),
                            occurred_at: at + Duration::days(400),
                        }
                        .into(),
                    )
                } else if a % 4 == 1 {
                    run(
                        &mut self.subs,
                        &id,
                        RenewSubscription {
                            subscription_id: SubscriptionId::new(&id).unwrap(),
                            term_months: 12,
                            monthly_amount: usd(1_000),
                            occurred_at: at,
                        }
                        .into(),
                    )
                } else {
                    run(
                        &mut self.subs,
                        &id,
                        CancelSubscription {
                            subscription_id: SubscriptionId::new(&id).unwrap(),
                            reason: l("price"),
                            effective_at: at + Duration::days(i64::from(n % 40)),
                            initiated_by: CancellationInitiator::Customer,
                            occurred_at: at,
                        }
                        .into(),
                    )
                }
            }
            11 => {
                let id = format!("d{}", b % 5);
                run(
                    &mut self.orders,
                    &id,
                    PlaceOrder {
                        order_id: OrderId::new(&id).unwrap(),
                        account_id: AccountId::new(&acc).unwrap(),
                        lines: vec![OrderLine {
                            product: ProductId::new("kit").unwrap(),
                            quantity: 1 + u32::from(a % 3),
                            amount: usd(i64::from(n) * 50 + 100),
                            cost: (n % 3 != 0).then(|| usd(i64::from(n) * 20)),
                        }],
                        channel: SalesChannel::Online,
                        campaign: None,
                        opportunity: None,
                        is_test: false,
                        occurred_at: at,
                    }
                    .into(),
                )
            }
            12 => {
                let id = format!("d{}", b % 5);
                match a % 5 {
                    0 => run(
                        &mut self.orders,
                        &id,
                        CancelOrder {
                            order_id: OrderId::new(&id).unwrap(),
                            reason: l("changed mind"),
                            occurred_at: at,
                        }
                        .into(),
                    ),
                    1 => run(
                        &mut self.orders,
                        &id,
                        RefundOrder {
                            order_id: OrderId::new(&id).unwrap(),
                            amount: usd(100),
                            cost_reversed: None,
                            reason: l("damaged"),
                            occurred_at: at,
                        }
                        .into(),
                    ),
                    2 => {
                        let k = self.invoices.entry(id.clone()).or_default();
                        *k += 1;
                        let inv = format!("{id}-i{k}");
                        run(
                            &mut self.orders,
                            &id,
                            IssueInvoice {
                                order_id: OrderId::new(&id).unwrap(),
                                invoice_id: InvoiceId::new(inv).unwrap(),
                                amount: usd(100),
                                due_on: at.date_naive(),
                                occurred_at: at,
                            }
                            .into(),
                        )
                    }
                    3 => {
                        let k = self.invoices.get(&id).copied().unwrap_or(1);
                        run(
                            &mut self.orders,
                            &id,
                            RecordPaymentOverdue {
                                order_id: OrderId::new(&id).unwrap(),
                                invoice_id: InvoiceId::new(format!("{id}-i{k}")).unwrap(),
                                days_overdue: 3,
                                occurred_at: at + Duration::days(3),
                            }
                            .into(),
                        )
                    }
                    _ => {
                        let k = self.invoices.get(&id).copied().unwrap_or(1);
                        run(
                            &mut self.orders,
                            &id,
                            RecordPayment {
                                order_id: OrderId::new(&id).unwrap(),
                                invoice_id: InvoiceId::new(format!("{id}-i{k}")).unwrap(),
                                amount: usd(100),
                                occurred_at: at,
                            }
                            .into(),
                        )
                    }
                }
            }
            13 | 14 => {
                let id = format!("c{}", b % 6);
                run(
                    &mut self.cases,
                    &id,
                    OpenCase {
                        case_id: CaseId::new(&id).unwrap(),
                        account_id: (a % 5 != 4).then(|| AccountId::new(&acc).unwrap()),
                        contact_id: None,
                        case_type: l("question"),
                        category: None,
                        priority: PRIORITIES[usize::from(n % 4)],
                        channel: [Channel::Phone, Channel::Email][usize::from(a % 2)],
                        sla_policy: None,
                        is_complaint: n % 5 == 0,
                        is_test: false,
                        occurred_at: at,
                    }
                    .into(),
                )
            }
            15 => self.case_step(b, a, n, at),
            16 | 17 => self.case_step(b, a.wrapping_add(3), n, at),
            18 => {
                let id = format!("k{}", b % 4);
                if a % 3 == 0 {
                    run(
                        &mut self.contacts,
                        &id,
                        RecordContactDeparture {
                            contact_id: ContactId::new(&id).unwrap(),
                            occurred_at: at,
                        }
                        .into(),
                    )
                } else {
                    run(
                        &mut self.contacts,
                        &id,
                        AddContact {
                            contact_id: ContactId::new(&id).unwrap(),
                            account_id: AccountId::new(&acc).unwrap(),
                            role: l("champion"),
                            personal: PersonalData {
                                full_name: Some("A Person".into()),
                                ..PersonalData::default()
                            },
                            is_test: false,
                            occurred_at: at,
                        }
                        .into(),
                    )
                }
            }
            19 | 20 | 21 => {
                let id = format!("i{}", self.next_serial());
                let channel = [Channel::Phone, Channel::Chat, Channel::Email][usize::from(a % 3)];
                let outcome = if channel == Channel::Email || n % 4 != 0 {
                    InteractionOutcome::Connected
                } else {
                    InteractionOutcome::NoAnswer
                };
                run(
                    &mut self.interactions,
                    &id,
                    LogInteraction {
                        interaction_id: InteractionId::new(&id).unwrap(),
                        account: (b % 3 != 0).then(|| AccountId::new(&acc).unwrap()),
                        contact: (b % 3 == 0)
                            .then(|| ContactId::new(format!("k{}", a % 4)).unwrap()),
                        lead: None,
                        channel,
                        direction: if n % 2 == 0 {
                            Direction::Inbound
                        } else {
                            Direction::Outbound
                        },
                        purpose: [Purpose::Service, Purpose::Sales][usize::from(b % 2)],
                        duration_s: if outcome == InteractionOutcome::Connected {
                            u32::from(n % 600)
                        } else {
                            0
                        },
                        hold_s: 0,
                        wrap_s: u32::from(n % 30),
                        agent: Some(AgentId::new(&agent).unwrap()),
                        outcome,
                        call_id: None,
                        opportunity: None,
                        case: None,
                        campaign: None,
                        is_test: false,
                        occurred_at: at,
                    }
                    .into(),
                )
            }
            22 => {
                let id = format!("f{}", self.next_serial());
                let (kind, score) = if a % 2 == 0 {
                    (SurveyKind::Nps, u8::try_from(n % 11).unwrap())
                } else {
                    (SurveyKind::Csat, 1 + u8::try_from(n % 5).unwrap())
                };
                run(
                    &mut self.feedback,
                    &id,
                    AnswerSurvey {
                        feedback_id: FeedbackId::new(&id).unwrap(),
                        kind,
                        score,
                        contact: Some(ContactId::new(format!("k{}", b % 4)).unwrap()),
                        trigger: None,
                        by_employee: false,
                        is_test: false,
                        occurred_at: at,
                    }
                    .into(),
                )
            }
            _ => Vec::new(),
        }
    }

    fn case_step(&mut self, b: u8, a: u8, n: u16, at: DateTime<Utc>) -> Vec<DomainEvent> {
        let id = format!("c{}", b % 6);
        let case_id = CaseId::new(&id).unwrap();
        let agent = AgentId::new(format!("agent{}", n % 3)).unwrap();
        let cmd = match a % 9 {
            0 => AssignCase {
                case_id,
                agent,
                team: Some(TeamId::new(format!("desk{}", n % 2)).unwrap()),
                occurred_at: at,
            }
            .into(),
            1 => RecordFirstResponse {
                case_id,
                agent: Some(agent),
                channel: Channel::Email,
                automated: n % 4 == 0,
                occurred_at: at,
            }
            .into(),
            2 => PauseCaseSla {
                case_id,
                reason: SlaPauseReason::WaitingOnCustomer,
                occurred_at: at,
            }
            .into(),
            3 => ResumeCaseSla {
                case_id,
                reason: SlaResumeReason::CustomerReplied,
                occurred_at: at,
            }
            .into(),
            4 => EscalateCase {
                case_id,
                level: 1 + u8::try_from(n % 3).unwrap(),
                reason: l("angry"),
                occurred_at: at,
            }
            .into(),
            5 | 6 => ResolveCase {
                case_id,
                agent: Some(agent),
                resolution_code: l("fixed"),
                first_contact: n % 2 == 0,
                occurred_at: at,
            }
            .into(),
            7 => ReopenCase {
                case_id,
                reason: l("not fixed"),
                occurred_at: at,
            }
            .into(),
            _ => CloseCase {
                case_id,
                close_code: [CloseCode::Resolved, CloseCode::Invalid, CloseCode::Spam]
                    [usize::from(n % 3)],
                occurred_at: at,
            }
            .into(),
        };
        run(&mut self.cases, &id, cmd)
    }
}

/// Envelope for a domain event, with a deterministic non-nil id.
pub fn proposed(event: &DomainEvent, serial: u64) -> ProposedEvent {
    let encoded = event.encode().unwrap();
    ProposedEvent {
        event_id: EventId(Uuid::from_u128(u128::from(serial) + 1)),
        event_type: encoded.event_type.to_owned(),
        schema_version: encoded.schema_version,
        occurred_at: encoded.occurred_at,
        causation_id: None,
        correlation_id: None,
        actor: "test".into(),
        metadata: Vec::new(),
        payload: encoded.payload,
    }
}

/// Appends the events of one command (one stream); returns how many.
pub async fn append<S: EventStore>(store: &S, events: &[DomainEvent], serial: &mut u64) -> usize {
    let Some(first) = events.first() else {
        return 0;
    };
    let stream = StreamId::new(first.stream_id()).unwrap();
    let batch: Vec<ProposedEvent> = events
        .iter()
        .map(|e| {
            *serial += 1;
            proposed(e, *serial)
        })
        .collect();
    store
        .append(&stream, ExpectedVersion::Any, batch)
        .await
        .unwrap();
    events.len()
}
