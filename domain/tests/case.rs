//! Case (support ticket) rules, given/when/then.

mod common;

use chrono::Duration;
use common::*;
use crm_domain::aggregates::case::*;
use crm_domain::values::{CaseId, Channel};

fn cid() -> CaseId {
    id("case-1")
}

fn open_cmd() -> OpenCase {
    OpenCase {
        case_id: cid(),
        account_id: Some(id("A-1")),
        contact_id: Some(id("C-1")),
        case_type: label("Incident"),
        category: Some(label("Billing")),
        priority: CasePriority::High,
        channel: Channel::Email,
        sla_policy: Some(label("gold")),
        is_complaint: false,
        is_test: false,
        occurred_at: day(1),
    }
}

fn opened() -> CaseEvent {
    let c = open_cmd();
    CaseOpened {
        case_id: c.case_id,
        account_id: c.account_id,
        contact_id: c.contact_id,
        case_type: c.case_type,
        category: c.category,
        priority: c.priority,
        channel: c.channel,
        sla_policy: c.sla_policy,
        is_complaint: c.is_complaint,
        is_test: c.is_test,
        occurred_at: c.occurred_at,
    }
    .into()
}

fn respond_cmd(d: u32) -> RecordFirstResponse {
    RecordFirstResponse {
        case_id: cid(),
        agent: Some(id("agent-5")),
        channel: Channel::Email,
        automated: false,
        occurred_at: day(d),
    }
}

fn responded(d: u32) -> CaseEvent {
    CaseFirstResponded {
        case_id: cid(),
        agent: Some(id("agent-5")),
        channel: Channel::Email,
        automated: false,
        occurred_at: day(d),
    }
    .into()
}

fn paused(d: u32) -> CaseEvent {
    CaseSlaPaused {
        case_id: cid(),
        reason: SlaPauseReason::WaitingOnCustomer,
        occurred_at: day(d),
    }
    .into()
}

fn pause_cmd(d: u32) -> PauseCaseSla {
    PauseCaseSla {
        case_id: cid(),
        reason: SlaPauseReason::WaitingOnCustomer,
        occurred_at: day(d),
    }
}

fn resume_cmd(d: u32) -> ResumeCaseSla {
    ResumeCaseSla {
        case_id: cid(),
        reason: SlaResumeReason::CustomerReplied,
        occurred_at: day(d),
    }
}

fn resumed(reason: SlaResumeReason, d: u32) -> CaseEvent {
    CaseSlaResumed {
        case_id: cid(),
        reason,
        occurred_at: day(d),
    }
    .into()
}

fn resolve_cmd(d: u32) -> ResolveCase {
    ResolveCase {
        case_id: cid(),
        agent: Some(id("agent-5")),
        resolution_code: label("fixed"),
        first_contact: false,
        occurred_at: day(d),
    }
}

fn resolved(d: u32) -> CaseEvent {
    CaseResolved {
        case_id: cid(),
        agent: Some(id("agent-5")),
        resolution_code: label("fixed"),
        first_contact: false,
        occurred_at: day(d),
    }
    .into()
}

fn close_cmd(code: CloseCode, d: u32) -> CloseCase {
    CloseCase {
        case_id: cid(),
        close_code: code,
        occurred_at: day(d),
    }
}

fn closed(code: CloseCode, d: u32) -> CaseEvent {
    CaseClosed {
        case_id: cid(),
        close_code: code,
        occurred_at: day(d),
    }
    .into()
}

fn reopen_cmd(d: u32) -> ReopenCase {
    ReopenCase {
        case_id: cid(),
        reason: label("still broken"),
        occurred_at: day(d),
    }
}

fn reopened(d: u32) -> CaseEvent {
    CaseReopened {
        case_id: cid(),
        reason: label("still broken"),
        occurred_at: day(d),
    }
    .into()
}

#[test]
fn opening_records_the_case() {
    let state = given_nothing::<Case>()
        .when(open_cmd())
        .then(vec![opened()]);
    assert_eq!(state.status(), Some(CaseStatus::Open));
}

#[test]
fn opening_twice_is_an_error() {
    given::<Case>(vec![opened()])
        .when(open_cmd())
        .then_err(|e| matches!(e, CaseError::AlreadyExists { .. }));
}

#[test]
fn commands_on_a_missing_case_are_errors() {
    given_nothing::<Case>()
        .when(resolve_cmd(2))
        .then_err(|e| matches!(e, CaseError::NotFound { .. }));
}

#[test]
fn a_case_gets_exactly_one_first_response() {
    given::<Case>(vec![opened()])
        .when(respond_cmd(2))
        .then(vec![responded(2)]);
    let msg = given::<Case>(vec![opened(), responded(2)])
        .when(respond_cmd(3))
        .then_err(|e| matches!(e, CaseError::AlreadyResponded { .. }));
    assert!(msg.contains("exactly one first response"), "{msg}");
}

#[test]
fn a_first_response_cannot_precede_the_opening() {
    let mut cmd = respond_cmd(1);
    cmd.occurred_at = day(1) - Duration::minutes(5);
    given::<Case>(vec![opened()])
        .when(cmd)
        .then_err(|e| matches!(e, CaseError::BeforeOpened { .. }));
}

#[test]
fn a_human_first_response_names_the_agent() {
    let mut cmd = respond_cmd(2);
    cmd.agent = None;
    given::<Case>(vec![opened()])
        .when(cmd.clone())
        .then_err(|e| matches!(e, CaseError::ResponseWithoutAgent { .. }));
    cmd.automated = true;
    given::<Case>(vec![opened()]).when(cmd).then_ok();
}

#[test]
fn the_sla_clock_pauses_only_while_running() {
    let state = given::<Case>(vec![opened()])
        .when(pause_cmd(2))
        .then(vec![paused(2)]);
    assert!(state.is_paused());
    given::<Case>(vec![opened(), paused(2)])
        .when(pause_cmd(3))
        .then_err(|e| matches!(e, CaseError::AlreadyPaused { .. }));
}

#[test]
fn the_sla_clock_resumes_only_while_paused() {
    given::<Case>(vec![opened()])
        .when(resume_cmd(2))
        .then_err(|e| matches!(e, CaseError::NotPaused { .. }));
    given::<Case>(vec![opened(), paused(2)])
        .when(resume_cmd(3))
        .then(vec![resumed(SlaResumeReason::CustomerReplied, 3)]);
}

#[test]
fn a_resolved_case_cannot_pause_its_clock() {
    given::<Case>(vec![opened(), resolved(2)])
        .when(pause_cmd(3))
        .then_err(|e| matches!(e, CaseError::Resolved { .. }));
}

#[test]
fn resolving_a_paused_case_resumes_the_clock_first() {
    let state = given::<Case>(vec![opened(), paused(2)])
        .when(resolve_cmd(4))
        .then(vec![resumed(SlaResumeReason::CaseResolved, 4), resolved(4)]);
    assert!(!state.is_paused());
}

#[test]
fn a_closed_case_cannot_be_resolved() {
    let msg = given::<Case>(vec![opened(), closed(CloseCode::Spam, 2)])
        .when(resolve_cmd(3))
        .then_err(|e| matches!(e, CaseError::Closed { .. }));
    assert!(msg.contains("ReopenCase"), "{msg}");
}

#[test]
fn resolving_twice_needs_a_reopen_in_between() {
    given::<Case>(vec![opened(), resolved(2)])
        .when(resolve_cmd(3))
        .then_err(|e| matches!(e, CaseError::Resolved { .. }));
    given::<Case>(vec![opened(), resolved(2), reopened(3)])
        .when(resolve_cmd(4))
        .then(vec![resolved(4)]);
}

#[test]
fn reopen_only_after_resolve_or_close() {
    given::<Case>(vec![opened()])
        .when(reopen_cmd(2))
        .then_err(|e| matches!(e, CaseError::NotClosedOrResolved { .. }));
    given::<Case>(vec![opened(), resolved(2)])
        .when(reopen_cmd(3))
        .then(vec![reopened(3)]);
    let state = given::<Case>(vec![opened(), resolved(2), closed(CloseCode::Resolved, 3)])
        .when(reopen_cmd(4))
        .then(vec![reopened(4)]);
    assert_eq!(state.status(), Some(CaseStatus::Open));
}

#[test]
fn close_code_resolved_requires_a_resolution() {
    given::<Case>(vec![opened()])
        .when(close_cmd(CloseCode::Resolved, 2))
        .then_err(|e| matches!(e, CaseError::CloseWithoutResolution { .. }));
    given::<Case>(vec![opened(), resolved(2)])
        .when(close_cmd(CloseCode::Auto, 3))
        .then(vec![closed(CloseCode::Auto, 3)]);
}

#[test]
fn spam_can_be_closed_straight_away_and_a_paused_clock_resumes() {
    given::<Case>(vec![opened(), paused(2)])
        .when(close_cmd(CloseCode::Spam, 3))
        .then(vec![
            resumed(SlaResumeReason::CaseClosed, 3),
            closed(CloseCode::Spam, 3),
        ]);
}

#[test]
fn a_case_is_closed_once() {
    given::<Case>(vec![opened(), closed(CloseCode::Invalid, 2)])
        .when(close_cmd(CloseCode::Test, 3))
        .then_err(|e| matches!(e, CaseError::Closed { .. }));
}

fn repeat_close_cmd(at: chrono::DateTime<chrono::Utc>) -> RepeatCaseClose {
    RepeatCaseClose {
        case_id: cid(),
        occurred_at: at,
    }
}

fn close_repeated(at: chrono::DateTime<chrono::Utc>) -> CaseEvent {
    CaseCloseRepeated {
        case_id: cid(),
        occurred_at: at,
    }
    .into()
}

#[test]
fn a_repeated_close_of_a_closed_case_is_recorded_and_keeps_the_close() {
    let history = vec![opened(), resolved(2), closed(CloseCode::Resolved, 3)];
    let state = given::<Case>(history.clone())
        .when(repeat_close_cmd(day(5)))
        .then(vec![close_repeated(day(5))]);
    assert_eq!(
        state.status(),
        Some(CaseStatus::Closed {
            at: day(3),
            code: CloseCode::Resolved
        })
    );
    // At the close's own instant (a duplicated row) and more than once.
    given::<Case>(history.clone())
        .when(repeat_close_cmd(day(3)))
        .then(vec![close_repeated(day(3))]);
    let mut twice = history;
    twice.push(close_repeated(day(5)));
    given::<Case>(twice.clone())
        .when(repeat_close_cmd(day(6)))
        .then(vec![close_repeated(day(6))]);
    // Still closed: a reopen works as after a single close, a plain close is refused.
    given::<Case>(twice.clone())
        .when(reopen_cmd(7))
        .then(vec![reopened(7)]);
    given::<Case>(twice)
        .when(close_cmd(CloseCode::Invalid, 7))
        .then_err(|e| matches!(e, CaseError::Closed { .. }));
}

#[test]
fn only_a_closed_case_can_repeat_its_close() {
    let msg = given::<Case>(vec![opened(), resolved(2)])
        .when(repeat_close_cmd(day(3)))
        .then_err(|e| matches!(e, CaseError::NotClosed { .. }));
    assert!(msg.contains("CloseCase"), "{msg}");
    given::<Case>(vec![opened()])
        .when(repeat_close_cmd(day(3)))
        .then_err(|e| matches!(e, CaseError::NotClosed { .. }));
    given::<Case>(vec![
        opened(),
        resolved(2),
        closed(CloseCode::Resolved, 3),
        reopened(4),
    ])
    .when(repeat_close_cmd(day(5)))
    .then_err(|e| matches!(e, CaseError::NotClosed { .. }));
}

#[test]
fn a_repeated_close_cannot_precede_the_close() {
    given::<Case>(vec![opened(), closed(CloseCode::Invalid, 3)])
        .when(repeat_close_cmd(day(3) - Duration::seconds(1)))
        .then_err(|e| matches!(e, CaseError::RepeatBeforeClose { .. }));
}

#[test]
fn escalation_levels_only_go_up() {
    let escalate = |level| EscalateCase {
        case_id: cid(),
        level,
        reason: label("VIP"),
        occurred_at: day(2),
    };
    let escalated: CaseEvent = CaseEscalated {
        case_id: cid(),
        level: 2,
        reason: label("VIP"),
        occurred_at: day(2),
    }
    .into();
    given::<Case>(vec![opened()])
        .when(escalate(2))
        .then(vec![escalated.clone()]);
    given::<Case>(vec![opened(), escalated.clone()])
        .when(escalate(2))
        .then_err(|e| matches!(e, CaseError::EscalationLevel { .. }));
    given::<Case>(vec![opened(), escalated])
        .when(escalate(ESCALATION_LEVEL_MAX + 1))
        .then_err(|e| matches!(e, CaseError::EscalationLevel { .. }));
}

#[test]
fn reclassification_must_change_something_and_can_flag_a_complaint() {
    let cmd = |is_complaint| ReclassifyCase {
        case_id: cid(),
        case_type: label("Incident"),
        priority: CasePriority::High,
        is_complaint,
        occurred_at: day(2),
    };
    given::<Case>(vec![opened()])
        .when(cmd(false))
        .then_err(|e| matches!(e, CaseError::Unchanged { .. }));
    given::<Case>(vec![opened()])
        .when(cmd(true))
        .then(vec![CaseReclassified {
            case_id: cid(),
            case_type: label("Incident"),
            priority: CasePriority::High,
            is_complaint: true,
            occurred_at: day(2),
        }
        .into()]);
}

#[test]
fn assignment_must_change_and_not_on_a_closed_case() {
    let assign = || AssignCase {
        case_id: cid(),
        agent: id("agent-5"),
        team: Some(id("tier-1")),
        occurred_at: day(2),
    };
    let assigned: CaseEvent = CaseAssigned {
        case_id: cid(),
        agent: id("agent-5"),
        team: Some(id("tier-1")),
        occurred_at: day(2),
    }
    .into();
    given::<Case>(vec![opened()])
        .when(assign())
        .then(vec![assigned.clone()]);
    given::<Case>(vec![opened(), assigned])
        .when(assign())
        .then_err(|e| matches!(e, CaseError::AlreadyAssigned { .. }));
    given::<Case>(vec![opened(), closed(CloseCode::Merged, 2)])
        .when(assign())
        .then_err(|e| matches!(e, CaseError::Closed { .. }));
}
