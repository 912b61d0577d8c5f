//! Events of the case aggregate: past-tense facts. Field changes need a new schema
//! version and an upcaster (see [`crate::upcast`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CasePriority, CloseCode, SlaPauseReason, SlaResumeReason};
use crate::values::{AccountId, AgentId, CaseId, Channel, ContactId, Label, TeamId};

/// A case was opened. Creation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseOpened {
    pub case_id: CaseId,
    pub account_id: Option<AccountId>,
    pub contact_id: Option<ContactId>,
    pub case_type: Label,
    pub category: Option<Label>,
    pub priority: CasePriority,
    pub channel: Channel,
    pub sla_policy: Option<Label>,
    pub is_complaint: bool,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Type, priority or complaint flag changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseReclassified {
    pub case_id: CaseId,
    pub case_type: Label,
    pub priority: CasePriority,
    pub is_complaint: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The case was assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseAssigned {
    pub case_id: CaseId,
    pub agent: AgentId,
    pub team: Option<TeamId>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The customer got a first response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseFirstResponded {
    pub case_id: CaseId,
    pub agent: Option<AgentId>,
    pub channel: Channel,
    pub automated: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The SLA clock stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseSlaPaused {
    pub case_id: CaseId,
    pub reason: SlaPauseReason,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The SLA clock runs again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseSlaResumed {
    pub case_id: CaseId,
    pub reason: SlaResumeReason,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The case was escalated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseEscalated {
    pub case_id: CaseId,
    pub level: u8,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The case was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseResolved {
    pub case_id: CaseId,
    pub agent: Option<AgentId>,
    pub resolution_code: Label,
    pub first_contact: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The case was reopened; the earlier resolution or close no longer counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseReopened {
    pub case_id: CaseId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The case was closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseClosed {
    pub case_id: CaseId,
    pub close_code: CloseCode,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The close step was performed again on a case that was already closed. The case stays
/// closed with its first close's code; the fact keeps the later close activity's time, which
/// process-mining readings ("closed on the day opened" by the last close) count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseCloseRepeated {
    pub case_id: CaseId,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the case aggregate.
    pub enum CaseEvent {
        category: "case",
        id: case_id: CaseId,
        events: {
            CaseOpened = 1, CaseReclassified = 1, CaseAssigned = 1, CaseFirstResponded = 1,
            CaseSlaPaused = 1, CaseSlaResumed = 1, CaseEscalated = 1, CaseResolved = 1,
            CaseReopened = 1, CaseClosed = 1, CaseCloseRepeated = 1,
        }
    }
}
