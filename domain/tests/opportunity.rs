//! Opportunity rules, given/when/then.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use crm_domain::aggregates::opportunity::*;
use crm_domain::values::{MoneyError, OpportunityId, SalesChannel, ScoreError};
use crm_domain::{replay, Aggregate};

fn oid() -> OpportunityId {
    id("42")
}

fn open_cmd() -> OpenOpportunity {
    OpenOpportunity {
        opportunity_id: oid(),
        account_id: id("1C1I7A6R"),
        owner: id("rep-1"),
        product: id("GTX-Pro"),
        amount: eur(500_000),
        expected_close: date(6, 30),
        kind: OpportunityKind::New,
        channel: SalesChannel::Direct,
        stage: label("Prospecting"),
        probability: 10,
        lead: Some(id("lead-7")),
        campaign: None,
        is_test: false,
        occurred_at: day(1),
    }
}

fn opened() -> OpportunityEvent {
    let c = open_cmd();
    OpportunityOpened {
        opportunity_id: c.opportunity_id,
        account_id: c.account_id,
        owner: c.owner,
        product: c.product,
        amount: c.amount,
        expected_close: c.expected_close,
        kind: c.kind,
        channel: c.channel,
        stage: c.stage,
        probability: crm_domain::values::Probability::new(10).unwrap(),
        lead: c.lead,
        campaign: c.campaign,
        is_test: c.is_test,
        occurred_at: c.occurred_at,
    }
    .into()
}

fn win_cmd(d: u32) -> WinOpportunity {
    WinOpportunity {
        opportunity_id: oid(),
        amount: eur(450_000),
        list_price: Some(eur(500_000)),
        discount: Some(eur(50_000)),
        competitor: None,
        occurred_at: day(d),
    }
}

fn won(d: u32) -> OpportunityEvent {
    OpportunityWon {
        opportunity_id: oid(),
        amount: eur(450_000),
        list_price: Some(eur(500_000)),
        discount: Some(eur(50_000)),
        competitor: None,
        occurred_at: day(d),
    }
    .into()
}

fn lose_cmd(d: u32) -> LoseOpportunity {
    LoseOpportunity {
        opportunity_id: oid(),
        reason: LossReason::Price,
        competitor: Some(label("Acme")),
        occurred_at: day(d),
    }
}

fn lost(d: u32) -> OpportunityEvent {
    OpportunityLost {
        opportunity_id: oid(),
        reason: LossReason::Price,
        competitor: Some(label("Acme")),
        occurred_at: day(d),
    }
    .into()
}

fn reopen_cmd(d: u32) -> ReopenOpportunity {
    ReopenOpportunity {
        opportunity_id: oid(),
        reason: label("buyer came back"),
        occurred_at: day(d),
    }
}

fn reopened(d: u32) -> OpportunityEvent {
    OpportunityReopened {
        opportunity_id: oid(),
        reason: label("buyer came back"),
        occurred_at: day(d),
    }
    .into()
}

fn voided(d: u32) -> OpportunityEvent {
    OpportunityVoided {
        opportunity_id: oid(),
        reason: VoidReason::Duplicate,
        occurred_at: day(d),
    }
    .into()
}

fn stage_cmd(to: &str, d: u32) -> ChangeOpportunityStage {
    ChangeOpportunityStage {
        opportunity_id: oid(),
        to: label(to),
        probability: 40,
        occurred_at: day(d),
    }
}

#[test]
fn opening_records_the_opportunity() {
    let state = given_nothing::<Opportunity>()
        .when(open_cmd())
        .then(vec![opened()]);
    assert_eq!(state.status(), Some(OpportunityStatus::Open));
}

#[test]
fn opening_twice_is_an_error() {
    given::<Opportunity>(vec![opened()])
        .when(open_cmd())
        .then_err(|e| matches!(e, OpportunityError::AlreadyExists { .. }));
}

#[test]
fn commands_on_a_missing_opportunity_are_errors() {
    let msg = given_nothing::<Opportunity>()
        .when(win_cmd(2))
        .then_err(|e| matches!(e, OpportunityError::NotFound { .. }));
    assert!(msg.contains("OpenOpportunity"), "{msg}");
}

#[test]
fn a_command_for_another_instance_is_refused() {
    let mut cmd = win_cmd(2);
    cmd.opportunity_id = id("43");
    given::<Opportunity>(vec![opened()])
        .when(cmd)
        .then_err(|e| matches!(e, OpportunityError::WrongInstance { .. }));
}

#[test]
fn an_open_opportunity_can_be_won() {
    let state = given::<Opportunity>(vec![opened()])
        .when(win_cmd(5))
        .then(vec![won(5)]);
    assert_eq!(state.status(), Some(OpportunityStatus::Won { at: day(5) }));
}

#[test]
fn a_lost_opportunity_cannot_be_won_without_reopen() {
    let msg = given::<Opportunity>(vec![opened(), lost(1)])
        .when(win_cmd(5))
        .then_err(|e| matches!(e, OpportunityError::WinAfterLoss { .. }));
    assert_eq!(
        msg,
        "opportunity `42` was lost on 2024-03-01; reopen it (ReopenOpportunity) before marking it won"
    );
}

#[test]
fn a_won_opportunity_cannot_be_lost_without_reopen() {
    given::<Opportunity>(vec![opened(), won(3)])
        .when(lose_cmd(5))
        .then_err(|e| matches!(e, OpportunityError::LossAfterWin { .. }));
}

#[test]
fn after_reopen_a_lost_opportunity_can_be_won() {
    given::<Opportunity>(vec![opened(), lost(2), reopened(3)])
        .when(win_cmd(5))
        .then(vec![won(5)]);
}

#[test]
fn winning_twice_is_refused() {
    given::<Opportunity>(vec![opened(), won(3)])
        .when(win_cmd(5))
        .then_err(|e| matches!(e, OpportunityError::AlreadyWon { .. }));
}

#[test]
fn losing_twice_is_refused() {
    given::<Opportunity>(vec![opened(), lost(3)])
        .when(lose_cmd(5))
        .then_err(|e| matches!(e, OpportunityError::AlreadyLost { .. }));
}

#[test]
fn only_a_closed_opportunity_can_be_reopened() {
    given::<Opportunity>(vec![opened()])
        .when(reopen_cmd(2))
        .then_err(|e| matches!(e, OpportunityError::NotClosed { .. }));
    given::<Opportunity>(vec![opened(), won(2)])
        .when(reopen_cmd(3))
        .then(vec![reopened(3)]);
}

#[test]
fn a_voided_opportunity_accepts_nothing() {
    let history = || vec![opened(), voided(2)];
    let commands: Vec<OpportunityCommand> = vec![
        win_cmd(3).into(),
        lose_cmd(3).into(),
        reopen_cmd(3).into(),
        stage_cmd("Negotiation", 3).into(),
        ChangeOpportunityOwner {
            opportunity_id: oid(),
            to: id("rep-2"),
            occurred_at: day(3),
        }
        .into(),
        VoidOpportunity {
            opportunity_id: oid(),
            reason: VoidReason::Test,
            occurred_at: day(3),
        }
        .into(),
    ];
    for command in commands {
        let msg = given::<Opportunity>(history())
            .when(command)
            .then_err(|e| matches!(e, OpportunityError::Voided { .. }));
        assert!(msg.contains("voided on 2024-03-02"), "{msg}");
    }
}

#[test]
fn stage_changes_record_from_and_to() {
    let state = given::<Opportunity>(vec![opened()])
        .when(stage_cmd("Negotiation", 2))
        .then(vec![OpportunityStageChanged {
            opportunity_id: oid(),
            from: label("Prospecting"),
            to: label("Negotiation"),
            probability: crm_domain::values::Probability::new(40).unwrap(),
            occurred_at: day(2),
        }
        .into()]);
    assert_eq!(state.stage(), Some(&label("Negotiation")));
}

#[test]
fn stage_changes_only_while_open() {
    let msg = given::<Opportunity>(vec![opened(), won(2)])
        .when(stage_cmd("Negotiation", 3))
        .then_err(|e| matches!(e, OpportunityError::Closed { .. }));
    assert!(msg.contains("cannot change the stage"), "{msg}");
}

#[test]
fn moving_to_the_current_stage_is_refused() {
    given::<Opportunity>(vec![opened()])
        .when(stage_cmd("Prospecting", 2))
        .then_err(|e| matches!(e, OpportunityError::Unchanged { what: "stage", .. }));
}

#[test]
fn probability_must_be_a_percentage() {
    let mut cmd = stage_cmd("Negotiation", 2);
    cmd.probability = 101;
    given::<Opportunity>(vec![opened()])
        .when(cmd)
        .then_err(|e| {
            matches!(
                e,
                OpportunityError::Score {
                    source: ScoreError::OutOfRange { .. },
                    ..
                }
            )
        });
}

#[test]
fn a_negative_amount_is_refused() {
    let mut cmd = open_cmd();
    cmd.amount = eur(-1);
    given_nothing::<Opportunity>().when(cmd).then_err(|e| {
        matches!(
            e,
            OpportunityError::Money {
                source: MoneyError::Negative { .. },
                ..
            }
        )
    });
}

#[test]
fn the_currency_is_fixed_at_opening() {
    let mut cmd = win_cmd(3);
    cmd.amount = usd(100);
    cmd.list_price = None;
    cmd.discount = None;
    given::<Opportunity>(vec![opened()])
        .when(cmd)
        .then_err(|e| {
            matches!(
                e,
                OpportunityError::Money {
                    source: MoneyError::CurrencyMismatch { .. },
                    ..
                }
            )
        });
}

#[test]
fn amount_changes_record_from_and_to() {
    given::<Opportunity>(vec![opened()])
        .when(ChangeOpportunityAmount {
            opportunity_id: oid(),
            to: eur(600_000),
            occurred_at: day(2),
        })
        .then(vec![OpportunityAmountChanged {
            opportunity_id: oid(),
            from: eur(500_000),
            to: eur(600_000),
            occurred_at: day(2),
        }
        .into()]);
}

#[test]
fn proposal_revisions_must_increase() {
    let proposal = |revision| SendProposal {
        opportunity_id: oid(),
        revision,
        amount: eur(480_000),
        valid_until: date(4, 30),
        occurred_at: day(2),
    };
    let sent: OpportunityEvent = ProposalSent {
        opportunity_id: oid(),
        revision: 2,
        amount: eur(480_000),
        valid_until: date(4, 30),
        occurred_at: day(2),
    }
    .into();
    given::<Opportunity>(vec![opened()])
        .when(proposal(2))
        .then(vec![sent.clone()]);
    let msg = given::<Opportunity>(vec![opened(), sent])
        .when(proposal(2))
        .then_err(|e| matches!(e, OpportunityError::StaleProposalRevision { last: 2, .. }));
    assert!(msg.contains("send revision 3"), "{msg}");
}

#[test]
fn a_competitor_is_identified_once() {
    let cmd = || IdentifyCompetitor {
        opportunity_id: oid(),
        competitor: label("Acme"),
        occurred_at: day(2),
    };
    let identified: OpportunityEvent = CompetitorIdentified {
        opportunity_id: oid(),
        competitor: label("Acme"),
        occurred_at: day(2),
    }
    .into();
    given::<Opportunity>(vec![opened()])
        .when(cmd())
        .then(vec![identified.clone()]);
    given::<Opportunity>(vec![opened(), identified])
        .when(cmd())
        .then_err(|e| matches!(e, OpportunityError::CompetitorAlreadyIdentified { .. }));
}

#[test]
fn owner_changes_are_allowed_after_close_but_must_change() {
    let cmd = |to: &str| ChangeOpportunityOwner {
        opportunity_id: oid(),
        to: id(to),
        occurred_at: day(4),
    };
    given::<Opportunity>(vec![opened(), won(3)])
        .when(cmd("rep-2"))
        .then_ok();
    given::<Opportunity>(vec![opened()])
        .when(cmd("rep-1"))
        .then_err(|e| matches!(e, OpportunityError::Unchanged { what: "owner", .. }));
}

#[test]
fn replay_and_execute_agree() {
    let history = vec![opened(), lost(2), reopened(3), won(4)];
    let replayed: Opportunity = replay(&history);
    let mut executed = Opportunity::default();
    executed.execute(&open_cmd().into()).unwrap();
    executed.execute(&lose_cmd(2).into()).unwrap();
    executed.execute(&reopen_cmd(3).into()).unwrap();
    let mut win = win_cmd(4);
    win.occurred_at = day(4);
    executed.execute(&win.into()).unwrap();
    assert_eq!(replayed, executed);
    assert_eq!(
        replayed.status(),
        Some(OpportunityStatus::Won { at: day(4) })
    );
}

#[test]
fn a_refused_command_leaves_the_state_unchanged() {
    let mut state: Opportunity = replay(vec![opened(), lost(2)]);
    let before = state.clone();
    assert!(state.execute(&win_cmd(3).into()).is_err());
    assert_eq!(state, before);
}
