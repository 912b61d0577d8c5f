//! Commands of the opportunity aggregate: imperative requests, validated by `handle`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{LossReason, OpportunityKind, VoidReason};
use crate::values::{
    AccountId, AgentId, CampaignId, Label, LeadId, Money, OpportunityId, ProductId, SalesChannel,
};

/// Open a new opportunity (creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpenOpportunity {
    pub opportunity_id: OpportunityId,
    pub account_id: AccountId,
    pub owner: AgentId,
    pub product: ProductId,
    /// Expected deal amount; fixes the opportunity's currency.
    pub amount: Money,
    pub expected_close: NaiveDate,
    pub kind: OpportunityKind,
    pub channel: SalesChannel,
    /// Initial pipeline stage.
    pub stage: Label,
    /// Win probability of the initial stage, percent.
    pub probability: u8,
    pub lead: Option<LeadId>,
    pub campaign: Option<CampaignId>,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Move an open opportunity to another stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeOpportunityStage {
    pub opportunity_id: OpportunityId,
    pub to: Label,
    /// Win probability of the new stage, percent.
    pub probability: u8,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Change the expected amount of an open opportunity (same currency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeOpportunityAmount {
    pub opportunity_id: OpportunityId,
    pub to: Money,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Change the expected close date of an open opportunity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeOpportunityCloseDate {
    pub opportunity_id: OpportunityId,
    pub to: NaiveDate,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Hand the opportunity to another rep (allowed unless voided).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeOpportunityOwner {
    pub opportunity_id: OpportunityId,
    pub to: AgentId,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record a competitor in the deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IdentifyCompetitor {
    pub opportunity_id: OpportunityId,
    pub competitor: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record a proposal sent to the buyer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SendProposal {
    pub opportunity_id: OpportunityId,
    /// Must be higher than every earlier revision.
    pub revision: u32,
    pub amount: Money,
    pub valid_until: NaiveDate,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Mark an open opportunity won.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WinOpportunity {
    pub opportunity_id: OpportunityId,
    /// Final deal amount (net of discount).
    pub amount: Money,
    pub list_price: Option<Money>,
    pub discount: Option<Money>,
    pub competitor: Option<Label>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Mark an open opportunity lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LoseOpportunity {
    pub opportunity_id: OpportunityId,
    pub reason: LossReason,
    pub competitor: Option<Label>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Reopen a won or lost opportunity (supersedes the close for metrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReopenOpportunity {
    pub opportunity_id: OpportunityId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Take the opportunity out of every metric (duplicate, test, error). Final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VoidOpportunity {
    pub opportunity_id: OpportunityId,
    pub reason: VoidReason,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the opportunity aggregate.
    pub enum OpportunityCommand {
        id: opportunity_id: OpportunityId,
        commands: {
            OpenOpportunity, ChangeOpportunityStage, ChangeOpportunityAmount,
            ChangeOpportunityCloseDate, ChangeOpportunityOwner, IdentifyCompetitor, SendProposal,
            WinOpportunity, LoseOpportunity, ReopenOpportunity, VoidOpportunity,
        }
    }
}
