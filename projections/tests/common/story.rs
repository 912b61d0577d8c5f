//! Customer stories for the benchmark (and a test that they are valid): each a complete
//! history over several streams, made through the aggregates.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::manual_is_multiple_of
)]

use chrono::Duration;
use crm_domain::aggregates::account::{Account, OpenAccount};
use crm_domain::aggregates::case::{
    AssignCase, Case, CloseCase, CloseCode, OpenCase, RecordFirstResponse, ResolveCase,
};
use crm_domain::aggregates::interaction::{
    Direction, Interaction, InteractionOutcome, LogInteraction, Purpose,
};
use crm_domain::aggregates::opportunity::{
    ChangeOpportunityStage, LoseOpportunity, LossReason, OpenOpportunity, Opportunity,
    OpportunityKind, WinOpportunity,
};
use crm_domain::aggregates::order::{IssueInvoice, Order, OrderLine, PlaceOrder, RecordPayment};
use crm_domain::aggregates::subscription::{
    CancelSubscription, CancellationInitiator, StartSubscription, Subscription, SubscriptionKind,
};
use crm_domain::values::{
    AccountId, AgentId, CaseId, Channel, InteractionId, InvoiceId, OpportunityId, OrderId,
    ProductId, SalesChannel, SubscriptionId, TeamId,
};
use crm_domain::{Aggregate, DomainEvent};

use crate::gen::{l, t0, usd, PRIORITIES, STAGES};

/// A realistic customer history for the benchmark: about 22 events over 8 streams. Returns
/// one event list per stream (each a complete, valid stream history).
pub fn story(i: u64) -> Vec<Vec<DomainEvent>> {
    fn go<A: Aggregate>(cmds: Vec<A::Command>) -> Vec<DomainEvent>
    where
        A::Event: Into<DomainEvent>,
    {
        let mut agg = A::default();
        cmds.into_iter()
            .flat_map(|c| agg.execute(&c).expect("valid story command"))
            .map(Into::into)
            .collect()
    }
    let day = |d: u64| {
        t0() + Duration::days(i64::try_from(d).unwrap())
            + Duration::minutes(i64::try_from(i % 600).unwrap())
    };
    let start = i % 700;
    let acc = AccountId::new(format!("acc{i}")).unwrap();
    let rep = AgentId::new(format!("rep{}", i % 40)).unwrap();
    let amount = i64::try_from(1_000 + (i * 7919) % 90_000).unwrap();
    let mut streams = vec![go::<Account>(vec![OpenAccount {
        account_id: acc.clone(),
        name: l("Customer"),
        segment: l(["SMB", "Mid", "Enterprise"][usize::try_from(i % 3).unwrap()]),
        region: l(["EMEA", "AMER", "APAC"][usize::try_from(i % 3).unwrap()]),
        industry: None,
        owner: rep.clone(),
        is_internal: false,
        is_test: false,
        occurred_at: day(start),
    }
    .into()])];
    let sub = SubscriptionId::new(format!("sub{i}")).unwrap();
    let mut sub_cmds: Vec<crm_domain::aggregates::SubscriptionCommand> = vec![StartSubscription {
        subscription_id: sub.clone(),
        account_id: acc.clone(),
        plan: l(["Month-to-month", "One year", "Two year"][usize::try_from(i % 3).unwrap()]),
        product: ProductId::new("fiber").unwrap(),
        kind: SubscriptionKind::Product,
        monthly_amount: usd(amount / 10),
        term_months: [1, 12, 24][usize::try_from(i % 3).unwrap()],
        trial: false,
        order: None,
        opportunity: None,
        is_test: false,
        occurred_at: day(start),
    }
    .into()];
    if i % 4 == 0 {
        sub_cmds.push(
            CancelSubscription {
                subscription_id: sub,
                reason: l("price"),
                effective_at: day(start + 200),
                initiated_by: CancellationInitiator::Customer,
                occurred_at: day(start + 170),
            }
            .into(),
        );
    }
    streams.push(go::<Subscription>(sub_cmds));
    for k in 0..2u64 {
        let id = OpportunityId::new(format!("opp{i}-{k}")).unwrap();
        let mut cmds: Vec<crm_domain::aggregates::OpportunityCommand> = vec![
            OpenOpportunity {
                opportunity_id: id.clone(),
                account_id: acc.clone(),
                owner: rep.clone(),
                product: ProductId::new(format!("p{}", (i + k) % 7)).unwrap(),
                amount: usd(amount),
                expected_close: day(start + 90).date_naive(),
                kind: OpportunityKind::New,
                channel: SalesChannel::Direct,
                stage: l(STAGES[0]),
                probability: 10,
                lead: None,
                campaign: None,
                is_test: false,
                occurred_at: day(start + k),
            }
            .into(),
            ChangeOpportunityStage {
                opportunity_id: id.clone(),
                to: l(STAGES[1]),
                probability: 30,
                occurred_at: day(start + k + 10),
            }
            .into(),
            ChangeOpportunityStage {
                opportunity_id: id.clone(),
                to: l(STAGES[2]),
                probability: 60,
                occurred_at: day(start + k + 25),
            }
            .into(),
        ];
        match (i + k) % 3 {
            0 => cmds.push(
                WinOpportunity {
                    opportunity_id: id,
                    amount: usd(amount),
                    list_price: None,
                    discount: None,
                    competitor: None,
                    occurred_at: day(start + k + 40),
                }
                .into(),
            ),
            1 => cmds.push(
                LoseOpportunity {
                    opportunity_id: id,
                    reason: LossReason::Price,
                    competitor: None,
                    occurred_at: day(start + k + 40),
                }
                .into(),
            ),
            _ => {}
        }
        streams.push(go::<Opportunity>(cmds));
    }
    let order = OrderId::new(format!("ord{i}")).unwrap();
    let inv = InvoiceId::new(format!("inv{i}")).unwrap();
    streams.push(go::<Order>(vec![
        PlaceOrder {
            order_id: order.clone(),
            account_id: acc.clone(),
            lines: vec![OrderLine {
                product: ProductId::new("kit").unwrap(),
                quantity: 1,
                amount: usd(amount / 3),
                cost: Some(usd(amount / 5)),
            }],
            channel: SalesChannel::Online,
            campaign: None,
            opportunity: None,
            is_test: false,
            occurred_at: day(start + 3),
        }
        .into(),
        IssueInvoice {
            order_id: order.clone(),
            invoice_id: inv.clone(),
            amount: usd(amount / 3),
            due_on: day(start + 33).date_naive(),
            occurred_at: day(start + 3),
        }
        .into(),
        RecordPayment {
            order_id: order,
            invoice_id: inv,
            amount: usd(amount / 3),
            occurred_at: day(start + 20),
        }
        .into(),
    ]));
    let case = CaseId::new(format!("case{i}")).unwrap();
    let agent = AgentId::new(format!("agent{}", i % 25)).unwrap();
    streams.push(go::<Case>(vec![
        OpenCase {
            case_id: case.clone(),
            account_id: Some(acc.clone()),
            contact_id: None,
            case_type: l("question"),
            category: None,
            priority: PRIORITIES[usize::try_from(i % 4).unwrap()],
            channel: Channel::Email,
            sla_policy: None,
            is_complaint: false,
            is_test: false,
            occurred_at: day(start + 5),
        }
        .into(),
        AssignCase {
            case_id: case.clone(),
            agent: agent.clone(),
            team: Some(TeamId::new(format!("desk{}", i % 3)).unwrap()),
            occurred_at: day(start + 5) + Duration::minutes(5),
        }
        .into(),
        RecordFirstResponse {
            case_id: case.clone(),
            agent: Some(agent.clone()),
            channel: Channel::Email,
            automated: false,
            occurred_at: day(start + 5) + Duration::hours(i64::try_from(i % 30).unwrap()),
        }
        .into(),
        ResolveCase {
            case_id: case.clone(),
            agent: Some(agent.clone()),
            resolution_code: l("fixed"),
            first_contact: i % 2 == 0,
            occurred_at: day(start + 6 + i % 5),
        }
        .into(),
        CloseCase {
            case_id: case,
            close_code: CloseCode::Resolved,
            occurred_at: day(start + 7 + i % 5),
        }
        .into(),
    ]));
    for k in 0..2u64 {
        let id = InteractionId::new(format!("int{i}-{k}")).unwrap();
        streams.push(go::<Interaction>(vec![LogInteraction {
            interaction_id: id,
            account: Some(acc.clone()),
            contact: None,
            lead: None,
            channel: Channel::Phone,
            direction: Direction::Inbound,
            purpose: Purpose::Service,
            duration_s: 120,
            hold_s: 10,
            wrap_s: 30,
            agent: Some(agent.clone()),
            outcome: InteractionOutcome::Connected,
            call_id: None,
            opportunity: None,
            case: None,
            campaign: None,
            is_test: false,
            occurred_at: day(start + 5 + k * 30),
        }
        .into()]));
    }
    streams
}
