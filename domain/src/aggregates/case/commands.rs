//! Commands of the case aggregate: imperative requests, validated by `handle`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CasePriority, CloseCode, SlaPauseReason, SlaResumeReason};
use crate::values::{AccountId, AgentId, CaseId, Channel, ContactId, Label, TeamId};

/// Open a case (creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpenCase {
    pub case_id: CaseId,
    pub account_id: Option<AccountId>,
    pub contact_id: Option<ContactId>,
    pub case_type: Label,
    pub category: Option<Label>,
    pub priority: CasePriority,
    pub channel: Channel,
    /// SLA policy in force; `None` means no SLA (`NO_POLICY`).
    pub sla_policy: Option<Label>,
    pub is_complaint: bool,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Change type, priority or complaint flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReclassifyCase {
    pub case_id: CaseId,
    pub case_type: Label,
    pub priority: CasePriority,
    pub is_complaint: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Assign the case to an agent (and team).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AssignCase {
    pub case_id: CaseId,
    pub agent: AgentId,
    pub team: Option<TeamId>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record the first response to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordFirstResponse {
    pub case_id: CaseId,
    /// Required unless `automated`.
    pub agent: Option<AgentId>,
    pub channel: Channel,
    pub automated: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Stop the SLA clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PauseCaseSla {
    pub case_id: CaseId,
    pub reason: SlaPauseReason,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Restart the SLA clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResumeCaseSla {
    pub case_id: CaseId,
    pub reason: SlaResumeReason,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Escalate to a higher level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EscalateCase {
    pub case_id: CaseId,
    /// 1..=[`super::ESCALATION_LEVEL_MAX`], above the current level.
    pub level: u8,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Resolve the case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResolveCase {
    pub case_id: CaseId,
    pub agent: Option<AgentId>,
    pub resolution_code: Label,
    /// The agent's flag: solved in the first contact.
    pub first_contact: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Reopen a resolved or closed case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReopenCase {
    pub case_id: CaseId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Close the case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CloseCase {
    pub case_id: CaseId,
    pub close_code: CloseCode,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record that the close step was performed again on a case that is already closed (source
/// systems and process logs do this); the case stays closed with its close code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RepeatCaseClose {
    pub case_id: CaseId,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the case aggregate.
    pub enum CaseCommand {
        id: case_id: CaseId,
        commands: {
            OpenCase, ReclassifyCase, AssignCase, RecordFirstResponse, PauseCaseSla,
            ResumeCaseSla, EscalateCase, ResolveCase, ReopenCase, CloseCase, RepeatCaseClose,
        }
    }
}
