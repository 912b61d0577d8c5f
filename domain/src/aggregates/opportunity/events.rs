//! Events of the opportunity aggregate: past-tense facts. Field changes need a new schema
//! version and an upcaster (see [`crate::upcast`]).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{LossReason, OpportunityKind, VoidReason};
use crate::values::{
    AccountId, AgentId, CampaignId, Label, LeadId, Money, OpportunityId, Probability, ProductId,
    SalesChannel,
};

/// An opportunity was opened. Creation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpportunityOpened {
    pub opportunity_id: OpportunityId,
    pub account_id: AccountId,
    pub owner: AgentId,
    pub product: ProductId,
    pub amount: Money,
    pub expected_close: NaiveDate,
    pub kind: OpportunityKind,
    pub channel: SalesChannel,
    pub stage: Label,
    pub probability: Probability,
    pub lead: Option<LeadId>,
    pub campaign: Option<CampaignId>,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The opportunity moved between stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpportunityStageChanged {
    pub opportunity_id: OpportunityId,
    pub from: Label,
    pub to: Label,
    pub probability: Probability,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The expected amount changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpportunityAmountChanged {
    pub opportunity_id: OpportunityId,
    pub from: Money,
    pub to: Money,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The expected close date changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpportunityCloseDateChanged {
    pub opportunity_id: OpportunityId,
    pub from: NaiveDate,
    pub to: NaiveDate,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The owning rep changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpportunityOwnerChanged {
    pub opportunity_id: OpportunityId,
    pub from: AgentId,
    pub to: AgentId,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A competitor was identified in the deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompetitorIdentified {
    pub opportunity_id: OpportunityId,
    pub competitor: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A proposal was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposalSent {
    pub opportunity_id: OpportunityId,
    pub revision: u32,
    pub amount: Money,
    pub valid_until: NaiveDate,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The deal was won. Schema v2: `amount` is [`Money`]; v1 stored a decimal number of major
/// units plus a `currency` string (see `upcast::opportunity_won_v1_to_v2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpportunityWon {
    pub opportunity_id: OpportunityId,
    pub amount: Money,
    pub list_price: Option<Money>,
    pub discount: Option<Money>,
    pub competitor: Option<Label>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The deal was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpportunityLost {
    pub opportunity_id: OpportunityId,
    pub reason: LossReason,
    pub competitor: Option<Label>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A won or lost opportunity was reopened; its earlier close no longer counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpportunityReopened {
    pub opportunity_id: OpportunityId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The opportunity was voided and leaves every metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpportunityVoided {
    pub opportunity_id: OpportunityId,
    pub reason: VoidReason,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the opportunity aggregate.
    pub enum OpportunityEvent {
        category: "opportunity",
        id: opportunity_id: OpportunityId,
        events: {
            OpportunityOpened = 1, OpportunityStageChanged = 1, OpportunityAmountChanged = 1,
            OpportunityCloseDateChanged = 1, OpportunityOwnerChanged = 1,
            CompetitorIdentified = 1, ProposalSent = 1, OpportunityWon = 2, OpportunityLost = 1,
            OpportunityReopened = 1, OpportunityVoided = 1,
        }
    }
}
