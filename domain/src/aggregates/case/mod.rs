//! Case: a support ticket from opening to resolution and close, with its SLA clock.
//!
//! Rules: exactly one first response, not before the case was opened and not on a closed
//! case; the SLA clock pauses only while running and resumes only while paused, and only an
//! unresolved case can pause; resolving or closing a paused case resumes the clock first (two
//! events); a closed case cannot be resolved; reopen only after resolve or close; close with
//! code `resolved` or `auto` only after a resolution; a case is closed once, and a close step
//! performed again on a closed case is recorded as `CaseCloseRepeated` (only on a closed case,
//! not before its close; the case stays closed with its code); escalation levels only go up; a
//! human (non-automated) first response names its agent.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{AgentId, CaseId, Label, TeamId};

/// Highest escalation level accepted.
pub const ESCALATION_LEVEL_MAX: u8 = 5;

/// Case priority.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CasePriority {
    Low,
    Normal,
    High,
    Urgent,
}

/// Why the SLA clock stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlaPauseReason {
    /// Waiting for the customer's reply.
    WaitingOnCustomer,
    /// Waiting for a supplier or partner.
    WaitingOnThirdParty,
    /// Agreed with the customer to wait.
    ScheduledFollowUp,
}

/// Why the SLA clock runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlaResumeReason {
    /// The customer answered.
    CustomerReplied,
    /// The third party answered.
    ThirdPartyReplied,
    /// An agent resumed work.
    AgentResumed,
    /// Resumed automatically because the case was resolved.
    CaseResolved,
    /// Resumed automatically because the case was closed.
    CaseClosed,
}

/// How a case was closed; `spam`, `invalid` and `test` exclude it from service metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloseCode {
    /// Closed after a confirmed resolution.
    Resolved,
    /// Junk.
    Spam,
    /// Not a real request.
    Invalid,
    /// Test ticket.
    Test,
    /// Merged into another case.
    Merged,
    /// Closed automatically after a resolution without reply.
    Auto,
}

impl CloseCode {
    /// Whether this code requires an earlier `CaseResolved`.
    #[must_use]
    pub const fn requires_resolution(self) -> bool {
        matches!(self, Self::Resolved | Self::Auto)
    }
}

mod commands;
mod events;

pub use commands::*;
pub use events::*;

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a case command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaseError {
    #[error(
        "case `{id}` already exists; choose another id or send a command for the existing case"
    )]
    AlreadyExists { id: CaseId },
    #[error("case `{id}` does not exist; open it (OpenCase) first")]
    NotFound { id: CaseId },
    #[error("command is for case `{command}` but stream `case-{loaded}` was loaded; load stream `case-{command}` and retry")]
    WrongInstance { loaded: CaseId, command: CaseId },
    #[error("cannot {action}: case `{id}` was closed on {on}; reopen it (ReopenCase) first")]
    Closed {
        id: CaseId,
        action: &'static str,
        on: NaiveDate,
    },
    #[error("cannot {action}: case `{id}` was resolved on {on}; reopen it (ReopenCase) first")]
    Resolved {
        id: CaseId,
        action: &'static str,
        on: NaiveDate,
    },
    #[error("case `{id}` already got its first response on {on}; a case has exactly one first response, log later replies as interactions")]
    AlreadyResponded { id: CaseId, on: NaiveDate },
    #[error("case `{id}` was opened at {opened_at}; a {what} at {at} would precede it, check the timestamp")]
    BeforeOpened {
        id: CaseId,
        what: &'static str,
        opened_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    #[error("a human first response on case `{id}` must name the agent; set `agent` or mark it automated")]
    ResponseWithoutAgent { id: CaseId },
    #[error("the SLA clock of case `{id}` is already paused; resume it (ResumeCaseSla) before pausing again")]
    AlreadyPaused { id: CaseId },
    #[error("the SLA clock of case `{id}` is running; only a paused clock can be resumed")]
    NotPaused { id: CaseId },
    #[error("escalation level {level} is not accepted for case `{id}` (currently level {current}); send a level in {next}..={ESCALATION_LEVEL_MAX}")]
    EscalationLevel {
        id: CaseId,
        level: u8,
        current: u8,
        next: u8,
    },
    #[error(
        "case `{id}` is not resolved or closed; only a resolved or closed case can be reopened"
    )]
    NotClosedOrResolved { id: CaseId },
    #[error("case `{id}` is not closed; only the close of a closed case can be repeated, close it (CloseCase) instead")]
    NotClosed { id: CaseId },
    #[error("case `{id}` was closed at {closed_at}; a repeated close at {at} would precede it, check the timestamp")]
    RepeatBeforeClose {
        id: CaseId,
        closed_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    #[error("case `{id}` cannot be closed with code {code:?} before it is resolved; resolve it (ResolveCase) first or use another close code")]
    CloseWithoutResolution { id: CaseId, code: CloseCode },
    #[error("case `{id}` already has type `{case_type}`, priority {priority:?} and complaint flag {is_complaint}; send a changed classification")]
    Unchanged {
        id: CaseId,
        case_type: Label,
        priority: CasePriority,
        is_complaint: bool,
    },
    #[error("case `{id}` is already assigned to agent `{agent}` in that team; nothing to change")]
    AlreadyAssigned { id: CaseId, agent: AgentId },
}

// ---------------------------------------------------------------------------------------------
// State

/// Lifecycle status of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseStatus {
    /// Being worked on.
    Open,
    /// Resolved at `at`, not yet closed.
    Resolved { at: DateTime<Utc> },
    /// Closed at `at` with `code`.
    Closed { at: DateTime<Utc>, code: CloseCode },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    id: CaseId,
    opened_at: DateTime<Utc>,
    case_type: Label,
    priority: CasePriority,
    is_complaint: bool,
    assignee: Option<(AgentId, Option<TeamId>)>,
    first_response_at: Option<DateTime<Utc>>,
    paused: bool,
    escalation_level: u8,
    status: CaseStatus,
}

/// The case aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Case {
    state: Option<State>,
}

impl Case {
    /// Current status, `None` before opening.
    #[must_use]
    pub fn status(&self) -> Option<CaseStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    /// True while the SLA clock is paused.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.paused)
    }

    fn existing(&self, id: &CaseId) -> Result<&State, CaseError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| CaseError::NotFound { id: id.clone() })?;
        if &state.id != id {
            return Err(CaseError::WrongInstance {
                loaded: state.id.clone(),
                command: id.clone(),
            });
        }
        Ok(state)
    }

    fn open(&self, c: &OpenCase) -> Result<Vec<CaseEvent>, CaseError> {
        if self.state.is_some() {
            return Err(CaseError::AlreadyExists {
                id: c.case_id.clone(),
            });
        }
        Ok(vec![CaseOpened {
            case_id: c.case_id.clone(),
            account_id: c.account_id.clone(),
            contact_id: c.contact_id.clone(),
            case_type: c.case_type.clone(),
            category: c.category.clone(),
            priority: c.priority,
            channel: c.channel,
            sla_policy: c.sla_policy.clone(),
            is_complaint: c.is_complaint,
            is_test: c.is_test,
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

impl State {
    fn not_closed(&self, action: &'static str) -> Result<(), CaseError> {
        match self.status {
            CaseStatus::Closed { at, .. } => Err(CaseError::Closed {
                id: self.id.clone(),
                action,
                on: at.date_naive(),
            }),
            _ => Ok(()),
        }
    }

    fn unresolved(&self, action: &'static str) -> Result<(), CaseError> {
        self.not_closed(action)?;
        match self.status {
            CaseStatus::Resolved { at } => Err(CaseError::Resolved {
                id: self.id.clone(),
                action,
                on: at.date_naive(),
            }),
            _ => Ok(()),
        }
    }

    fn not_before_opened(&self, what: &'static str, at: DateTime<Utc>) -> Result<(), CaseError> {
        if at < self.opened_at {
            return Err(CaseError::BeforeOpened {
                id: self.id.clone(),
                what,
                opened_at: self.opened_at,
                at,
            });
        }
        Ok(())
    }

    /// The automatic resume emitted before resolving or closing a paused case.
    fn auto_resume(&self, reason: SlaResumeReason, at: DateTime<Utc>) -> Option<CaseEvent> {
        self.paused.then(|| {
            CaseSlaResumed {
                case_id: self.id.clone(),
                reason,
                occurred_at: at,
            }
            .into()
        })
    }

    fn reclassify(&self, c: &ReclassifyCase) -> Result<Vec<CaseEvent>, CaseError> {
        self.not_closed("reclassify it")?;
        if c.case_type == self.case_type
            && c.priority == self.priority
            && c.is_complaint == self.is_complaint
        {
            return Err(CaseError::Unchanged {
                id: self.id.clone(),
                case_type: c.case_type.clone(),
                priority: c.priority,
                is_complaint: c.is_complaint,
            });
        }
        Ok(vec![CaseReclassified {
            case_id: self.id.clone(),
            case_type: c.case_type.clone(),
            priority: c.priority,
            is_complaint: c.is_complaint,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn assign(&self, c: &AssignCase) -> Result<Vec<CaseEvent>, CaseError> {
        self.not_closed("assign it")?;
        if self.assignee.as_ref() == Some(&(c.agent.clone(), c.team.clone())) {
            return Err(CaseError::AlreadyAssigned {
                id: self.id.clone(),
                agent: c.agent.clone(),
            });
        }
        Ok(vec![CaseAssigned {
            case_id: self.id.clone(),
            agent: c.agent.clone(),
            team: c.team.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn first_response(&self, c: &RecordFirstResponse) -> Result<Vec<CaseEvent>, CaseError> {
        if let Some(at) = self.first_response_at {
            return Err(CaseError::AlreadyResponded {
                id: self.id.clone(),
                on: at.date_naive(),
            });
        }
        self.not_closed("record a first response")?;
        self.not_before_opened("first response", c.occurred_at)?;
        if !c.automated && c.agent.is_none() {
            return Err(CaseError::ResponseWithoutAgent {
                id: self.id.clone(),
            });
        }
        Ok(vec![CaseFirstResponded {
            case_id: self.id.clone(),
            agent: c.agent.clone(),
            channel: c.channel,
            automated: c.automated,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn pause(&self, c: &PauseCaseSla) -> Result<Vec<CaseEvent>, CaseError> {
        self.unresolved("pause the SLA clock")?;
        if self.paused {
            return Err(CaseError::AlreadyPaused {
                id: self.id.clone(),
            });
        }
        Ok(vec![CaseSlaPaused {
            case_id: self.id.clone(),
            reason: c.reason,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn resume(&self, c: &ResumeCaseSla) -> Result<Vec<CaseEvent>, CaseError> {
        if !self.paused {
            return Err(CaseError::NotPaused {
                id: self.id.clone(),
            });
        }
        Ok(vec![CaseSlaResumed {
            case_id: self.id.clone(),
            reason: c.reason,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn escalate(&self, c: &EscalateCase) -> Result<Vec<CaseEvent>, CaseError> {
        self.unresolved("escalate it")?;
        if c.level <= self.escalation_level || c.level > ESCALATION_LEVEL_MAX {
            return Err(CaseError::EscalationLevel {
                id: self.id.clone(),
                level: c.level,
                current: self.escalation_level,
                next: self.escalation_level.saturating_add(1),
            });
        }
        Ok(vec![CaseEscalated {
            case_id: self.id.clone(),
            level: c.level,
            reason: c.reason.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn resolve(&self, c: &ResolveCase) -> Result<Vec<CaseEvent>, CaseError> {
        self.unresolved("resolve it")?;
        self.not_before_opened("resolution", c.occurred_at)?;
        let mut events: Vec<CaseEvent> = self
            .auto_resume(SlaResumeReason::CaseResolved, c.occurred_at)
            .into_iter()
            .collect();
        events.push(
            CaseResolved {
                case_id: self.id.clone(),
                agent: c.agent.clone(),
                resolution_code: c.resolution_code.clone(),
                first_contact: c.first_contact,
                occurred_at: c.occurred_at,
            }
            .into(),
        );
        Ok(events)
    }

    fn reopen(&self, c: &ReopenCase) -> Result<Vec<CaseEvent>, CaseError> {
        if self.status == CaseStatus::Open {
            return Err(CaseError::NotClosedOrResolved {
                id: self.id.clone(),
            });
        }
        Ok(vec![CaseReopened {
            case_id: self.id.clone(),
            reason: c.reason.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn repeat_close(&self, c: &RepeatCaseClose) -> Result<Vec<CaseEvent>, CaseError> {
        let CaseStatus::Closed { at: closed_at, .. } = self.status else {
            return Err(CaseError::NotClosed {
                id: self.id.clone(),
            });
        };
        if c.occurred_at < closed_at {
            return Err(CaseError::RepeatBeforeClose {
                id: self.id.clone(),
                closed_at,
                at: c.occurred_at,
            });
        }
        Ok(vec![CaseCloseRepeated {
            case_id: self.id.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn close(&self, c: &CloseCase) -> Result<Vec<CaseEvent>, CaseError> {
        self.not_closed("close it again")?;
        if c.close_code.requires_resolution() && !matches!(self.status, CaseStatus::Resolved { .. })
        {
            return Err(CaseError::CloseWithoutResolution {
                id: self.id.clone(),
                code: c.close_code,
            });
        }
        let mut events: Vec<CaseEvent> = self
            .auto_resume(SlaResumeReason::CaseClosed, c.occurred_at)
            .into_iter()
            .collect();
        events.push(
            CaseClosed {
                case_id: self.id.clone(),
                close_code: c.close_code,
                occurred_at: c.occurred_at,
            }
            .into(),
        );
        Ok(events)
    }
}

impl Aggregate for Case {
    const CATEGORY: &'static str = CaseEvent::CATEGORY;
    type Command = CaseCommand;
    type Event = CaseEvent;
    type Error = CaseError;

    fn handle(&self, command: &CaseCommand) -> Result<Vec<CaseEvent>, CaseError> {
        use CaseCommand as C;
        if let C::OpenCase(c) = command {
            return self.open(c);
        }
        let s = self.existing(command.target_id())?;
        match command {
            C::OpenCase(c) => self.open(c),
            C::ReclassifyCase(c) => s.reclassify(c),
            C::AssignCase(c) => s.assign(c),
            C::RecordFirstResponse(c) => s.first_response(c),
            C::PauseCaseSla(c) => s.pause(c),
            C::ResumeCaseSla(c) => s.resume(c),
            C::EscalateCase(c) => s.escalate(c),
            C::ResolveCase(c) => s.resolve(c),
            C::ReopenCase(c) => s.reopen(c),
            C::CloseCase(c) => s.close(c),
            C::RepeatCaseClose(c) => s.repeat_close(c),
        }
    }

    fn apply(&mut self, event: &CaseEvent) {
        use CaseEvent as E;
        if let E::CaseOpened(e) = event {
            self.state = Some(State {
                id: e.case_id.clone(),
                opened_at: e.occurred_at,
                case_type: e.case_type.clone(),
                priority: e.priority,
                is_complaint: e.is_complaint,
                assignee: None,
                first_response_at: None,
                paused: false,
                escalation_level: 0,
                status: CaseStatus::Open,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        match event {
            E::CaseOpened(_) => {}
            E::CaseReclassified(e) => {
                s.case_type = e.case_type.clone();
                s.priority = e.priority;
                s.is_complaint = e.is_complaint;
            }
            E::CaseAssigned(e) => s.assignee = Some((e.agent.clone(), e.team.clone())),
            E::CaseFirstResponded(e) => s.first_response_at = Some(e.occurred_at),
            E::CaseSlaPaused(_) => s.paused = true,
            E::CaseSlaResumed(_) => s.paused = false,
            E::CaseEscalated(e) => s.escalation_level = e.level,
            E::CaseResolved(e) => s.status = CaseStatus::Resolved { at: e.occurred_at },
            E::CaseReopened(_) => s.status = CaseStatus::Open,
            E::CaseClosed(e) => {
                s.status = CaseStatus::Closed {
                    at: e.occurred_at,
                    code: e.close_code,
                }
            }
            // The case stays closed at its first close, with that close's code.
            E::CaseCloseRepeated(_) => {}
        }
    }
}
