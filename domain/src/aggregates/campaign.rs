//! Campaign: a marketing campaign with its costs and responses.
//!
//! Rules: costs are positive and in the campaign's currency (fixed by the launch cost) and
//! may arrive after the end (late invoices); responses are refused on a cancelled campaign; a
//! campaign ends or is cancelled once, and an ended campaign cannot be cancelled (nor a
//! cancelled one ended).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{CampaignId, ContactId, Currency, Label, LeadId, Money, MoneyError, ProductId};

/// Who responded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Respondent {
    /// A lead (not yet a customer).
    Lead(LeadId),
    /// A contact at an account.
    Contact(ContactId),
}

/// What kind of response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponseType {
    Click,
    Reply,
    Form,
    Attend,
    Call,
}

// ---------------------------------------------------------------------------------------------
// Commands

/// Launch a campaign (creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LaunchCampaign {
    pub campaign_id: CampaignId,
    pub name: Label,
    /// Email, paid search, event, webinar…
    pub channel: Label,
    /// Committed cost at launch (may be zero); fixes the currency.
    pub cost: Money,
    pub product: Option<ProductId>,
    pub segment: Option<Label>,
    pub audience_size: u32,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record a cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordCampaignCost {
    pub campaign_id: CampaignId,
    pub amount: Money,
    pub category: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordCampaignResponse {
    pub campaign_id: CampaignId,
    pub respondent: Respondent,
    pub response_type: ResponseType,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// End the campaign as planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EndCampaign {
    pub campaign_id: CampaignId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Cancel the campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelCampaign {
    pub campaign_id: CampaignId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the campaign aggregate.
    pub enum CampaignCommand {
        id: campaign_id: CampaignId,
        commands: { LaunchCampaign, RecordCampaignCost, RecordCampaignResponse, EndCampaign, CancelCampaign }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// A campaign was launched. Creation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignLaunched {
    pub campaign_id: CampaignId,
    pub name: Label,
    pub channel: Label,
    pub cost: Money,
    pub product: Option<ProductId>,
    pub segment: Option<Label>,
    pub audience_size: u32,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A cost was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignCostRecorded {
    pub campaign_id: CampaignId,
    pub amount: Money,
    pub category: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Someone responded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignResponded {
    pub campaign_id: CampaignId,
    pub respondent: Respondent,
    pub response_type: ResponseType,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The campaign ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignEnded {
    pub campaign_id: CampaignId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The campaign was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignCancelled {
    pub campaign_id: CampaignId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the campaign aggregate.
    pub enum CampaignEvent {
        category: "campaign",
        id: campaign_id: CampaignId,
        events: {
            CampaignLaunched = 1, CampaignCostRecorded = 1, CampaignResponded = 1,
            CampaignEnded = 1, CampaignCancelled = 1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a campaign command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignError {
    #[error("campaign `{id}` already exists; choose another id or send a command for the existing campaign")]
    AlreadyExists { id: CampaignId },
    #[error("campaign `{id}` does not exist; launch it (LaunchCampaign) first")]
    NotFound { id: CampaignId },
    #[error("command is for campaign `{command}` but stream `campaign-{loaded}` was loaded; load stream `campaign-{command}` and retry")]
    WrongInstance {
        loaded: CampaignId,
        command: CampaignId,
    },
    #[error("cannot {action}: campaign `{id}` was {status} on {on}")]
    Finished {
        id: CampaignId,
        action: &'static str,
        status: &'static str,
        on: NaiveDate,
    },
    #[error("campaign cost on `{id}` must be greater than zero; send a positive amount")]
    ZeroCost { id: CampaignId },
    #[error("campaign `{id}`: {source}")]
    Money { id: CampaignId, source: MoneyError },
}

// ---------------------------------------------------------------------------------------------
// State

/// Lifecycle status of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignStatus {
    Running,
    Ended { at: DateTime<Utc> },
    Cancelled { at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    id: CampaignId,
    currency: Currency,
    status: CampaignStatus,
}

/// The campaign aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Campaign {
    state: Option<State>,
}

fn money(id: &CampaignId, r: Result<Money, MoneyError>) -> Result<Money, CampaignError> {
    r.map_err(|source| CampaignError::Money {
        id: id.clone(),
        source,
    })
}

impl Campaign {
    /// Current status, `None` before launch.
    #[must_use]
    pub fn status(&self) -> Option<CampaignStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    fn existing(&self, id: &CampaignId) -> Result<&State, CampaignError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| CampaignError::NotFound { id: id.clone() })?;
        if &state.id != id {
            return Err(CampaignError::WrongInstance {
                loaded: state.id.clone(),
                command: id.clone(),
            });
        }
        Ok(state)
    }

    fn launch(&self, c: &LaunchCampaign) -> Result<Vec<CampaignEvent>, CampaignError> {
        if self.state.is_some() {
            return Err(CampaignError::AlreadyExists {
                id: c.campaign_id.clone(),
            });
        }
        let cost = money(&c.campaign_id, c.cost.ensure_non_negative("campaign cost"))?;
        Ok(vec![CampaignLaunched {
            campaign_id: c.campaign_id.clone(),
            name: c.name.clone(),
            channel: c.channel.clone(),
            cost,
            product: c.product.clone(),
            segment: c.segment.clone(),
            audience_size: c.audience_size,
            is_test: c.is_test,
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

impl State {
    fn running(&self, action: &'static str) -> Result<(), CampaignError> {
        let (status, at) = match self.status {
            CampaignStatus::Running => return Ok(()),
            CampaignStatus::Ended { at } => ("ended", at),
            CampaignStatus::Cancelled { at } => ("cancelled", at),
        };
        Err(CampaignError::Finished {
            id: self.id.clone(),
            action,
            status,
            on: at.date_naive(),
        })
    }

    fn cost(&self, c: &RecordCampaignCost) -> Result<Vec<CampaignEvent>, CampaignError> {
        let amount = money(
            &self.id,
            c.amount
                .ensure_non_negative("campaign cost")
                .and_then(|m| m.ensure_currency(self.currency, "campaign cost")),
        )?;
        if amount.is_zero() {
            return Err(CampaignError::ZeroCost {
                id: self.id.clone(),
            });
        }
        Ok(vec![CampaignCostRecorded {
            campaign_id: self.id.clone(),
            amount,
            category: c.category.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn respond(&self, c: &RecordCampaignResponse) -> Result<Vec<CampaignEvent>, CampaignError> {
        if let CampaignStatus::Cancelled { .. } = self.status {
            self.running("record a response")?;
        }
        Ok(vec![CampaignResponded {
            campaign_id: self.id.clone(),
            respondent: c.respondent.clone(),
            response_type: c.response_type,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn end(&self, c: &EndCampaign) -> Result<Vec<CampaignEvent>, CampaignError> {
        self.running("end it")?;
        Ok(vec![CampaignEnded {
            campaign_id: self.id.clone(),
            reason: c.reason.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn cancel(&self, c: &CancelCampaign) -> Result<Vec<CampaignEvent>, CampaignError> {
        self.running("cancel it")?;
        Ok(vec![CampaignCancelled {
            campaign_id: self.id.clone(),
            reason: c.reason.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

impl Aggregate for Campaign {
    const CATEGORY: &'static str = CampaignEvent::CATEGORY;
    type Command = CampaignCommand;
    type Event = CampaignEvent;
    type Error = CampaignError;

    fn handle(&self, command: &CampaignCommand) -> Result<Vec<CampaignEvent>, CampaignError> {
        use CampaignCommand as C;
        if let C::LaunchCampaign(c) = command {
            return self.launch(c);
        }
        let s = self.existing(command.target_id())?;
        match command {
            C::LaunchCampaign(c) => self.launch(c),
            C::RecordCampaignCost(c) => s.cost(c),
            C::RecordCampaignResponse(c) => s.respond(c),
            C::EndCampaign(c) => s.end(c),
            C::CancelCampaign(c) => s.cancel(c),
        }
    }

    fn apply(&mut self, event: &CampaignEvent) {
        use CampaignEvent as E;
        if let E::CampaignLaunched(e) = event {
            self.state = Some(State {
                id: e.campaign_id.clone(),
                currency: e.cost.currency,
                status: CampaignStatus::Running,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        match event {
            E::CampaignLaunched(_) | E::CampaignCostRecorded(_) | E::CampaignResponded(_) => {}
            E::CampaignEnded(e) => s.status = CampaignStatus::Ended { at: e.occurred_at },
            E::CampaignCancelled(e) => s.status = CampaignStatus::Cancelled { at: e.occurred_at },
        }
    }
}
