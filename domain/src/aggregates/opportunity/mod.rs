//! Opportunity: a potential deal from opening to won, lost or voided.
//!
//! Rules: stage, amount and close date change only while open; a won opportunity cannot be
//! lost (nor a lost one won) without an explicit [`ReopenOpportunity`]; a voided opportunity
//! accepts nothing; the currency is fixed at opening; proposal revisions increase; amounts are
//! never negative.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{
    AgentId, Currency, Label, Money, MoneyError, OpportunityId, Probability, ScoreError,
};

/// New business, expansion of an existing customer, or renewal (renewals are out of scope for
/// new-business metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpportunityKind {
    /// A new customer or a new product line.
    New,
    /// More of what an existing customer has.
    Expansion,
    /// Renewal of an existing contract.
    Renewal,
}

/// Why a deal was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LossReason {
    /// Too expensive.
    Price,
    /// A competitor won.
    Competitor,
    /// The buyer decided nothing.
    NoDecision,
    /// No budget.
    NoBudget,
    /// Wrong timing.
    Timing,
    /// Product does not fit the need.
    ProductFit,
    /// Anything else.
    Other,
}

/// Why an opportunity is voided (taken out of every metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoidReason {
    /// Same deal recorded twice.
    Duplicate,
    /// Test record.
    Test,
    /// Created in error.
    Error,
}

mod commands;
mod events;

pub use commands::*;
pub use events::*;

// ---------------------------------------------------------------------------------------------
// Errors

/// Why an opportunity command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpportunityError {
    #[error("opportunity `{id}` already exists; choose another id or send a command for the existing opportunity")]
    AlreadyExists { id: OpportunityId },
    #[error("opportunity `{id}` does not exist; open it (OpenOpportunity) first")]
    NotFound { id: OpportunityId },
    #[error("command is for opportunity `{command}` but stream `opportunity-{loaded}` was loaded; load stream `opportunity-{command}` and retry")]
    WrongInstance {
        loaded: OpportunityId,
        command: OpportunityId,
    },
    #[error("opportunity `{id}` was voided on {on}; it accepts no further commands, open a new opportunity instead")]
    Voided { id: OpportunityId, on: NaiveDate },
    #[error(
        "opportunity `{id}` was lost on {on}; reopen it (ReopenOpportunity) before marking it won"
    )]
    WinAfterLoss { id: OpportunityId, on: NaiveDate },
    #[error(
        "opportunity `{id}` was won on {on}; reopen it (ReopenOpportunity) before marking it lost"
    )]
    LossAfterWin { id: OpportunityId, on: NaiveDate },
    #[error("opportunity `{id}` is already won (on {on}); there is nothing to record")]
    AlreadyWon { id: OpportunityId, on: NaiveDate },
    #[error("opportunity `{id}` is already lost (on {on}); there is nothing to record")]
    AlreadyLost { id: OpportunityId, on: NaiveDate },
    #[error("cannot {action}: opportunity `{id}` was {status} on {on}; reopen it (ReopenOpportunity) first")]
    Closed {
        id: OpportunityId,
        action: &'static str,
        status: &'static str,
        on: NaiveDate,
    },
    #[error("opportunity `{id}` is open; only a won or lost opportunity can be reopened")]
    NotClosed { id: OpportunityId },
    #[error("opportunity `{id}` already has {what} `{value}`; send the new value")]
    Unchanged {
        id: OpportunityId,
        what: &'static str,
        value: String,
    },
    #[error("proposal revisions must increase: opportunity `{id}` already has revision {last}, got {got}; send revision {next} or higher")]
    StaleProposalRevision {
        id: OpportunityId,
        last: u32,
        got: u32,
        next: u32,
    },
    #[error("competitor `{competitor}` is already identified on opportunity `{id}`")]
    CompetitorAlreadyIdentified {
        id: OpportunityId,
        competitor: Label,
    },
    #[error("opportunity `{id}`: {source}")]
    Money {
        id: OpportunityId,
        source: MoneyError,
    },
    #[error("opportunity `{id}`: {source}")]
    Score {
        id: OpportunityId,
        source: ScoreError,
    },
}

// ---------------------------------------------------------------------------------------------
// State

/// Lifecycle status of an opportunity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpportunityStatus {
    /// In the pipeline.
    Open,
    /// Won at the given instant.
    Won { at: DateTime<Utc> },
    /// Lost at the given instant.
    Lost { at: DateTime<Utc> },
    /// Voided at the given instant; final.
    Voided { at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    id: OpportunityId,
    currency: Currency,
    amount: Money,
    stage: Label,
    close_date: NaiveDate,
    owner: AgentId,
    competitors: Vec<Label>,
    last_revision: Option<u32>,
    status: OpportunityStatus,
}

/// The opportunity aggregate. Start from `Opportunity::default()` and replay its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opportunity {
    state: Option<State>,
}

impl Opportunity {
    /// Current status, `None` before opening.
    #[must_use]
    pub fn status(&self) -> Option<OpportunityStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    /// Current stage, `None` before opening.
    #[must_use]
    pub fn stage(&self) -> Option<&Label> {
        self.state.as_ref().map(|s| &s.stage)
    }

    /// Current expected amount, `None` before opening.
    #[must_use]
    pub fn amount(&self) -> Option<Money> {
        self.state.as_ref().map(|s| s.amount)
    }

    fn existing(&self, id: &OpportunityId) -> Result<&State, OpportunityError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| OpportunityError::NotFound { id: id.clone() })?;
        if &state.id != id {
            return Err(OpportunityError::WrongInstance {
                loaded: state.id.clone(),
                command: id.clone(),
            });
        }
        if let OpportunityStatus::Voided { at } = state.status {
            return Err(OpportunityError::Voided {
                id: id.clone(),
                on: at.date_naive(),
            });
        }
        Ok(state)
    }

    fn open(&self, c: &OpenOpportunity) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        if self.state.is_some() {
            return Err(OpportunityError::AlreadyExists {
                id: c.opportunity_id.clone(),
            });
        }
        let id = &c.opportunity_id;
        let amount = money(id, c.amount.ensure_non_negative("opportunity amount"))?;
        let probability =
            Probability::new(c.probability).map_err(|source| OpportunityError::Score {
                id: id.clone(),
                source,
            })?;
        Ok(vec![OpportunityOpened {
            opportunity_id: id.clone(),
            account_id: c.account_id.clone(),
            owner: c.owner.clone(),
            product: c.product.clone(),
            amount,
            expected_close: c.expected_close,
            kind: c.kind,
            channel: c.channel,
            stage: c.stage.clone(),
            probability,
            lead: c.lead.clone(),
            campaign: c.campaign.clone(),
            is_test: c.is_test,
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

fn money(id: &OpportunityId, r: Result<Money, MoneyError>) -> Result<Money, OpportunityError> {
    r.map_err(|source| OpportunityError::Money {
        id: id.clone(),
        source,
    })
}

impl State {
    /// Ok while open; otherwise the error explaining that `action` needs a reopen.
    fn require_open(&self, action: &'static str) -> Result<(), OpportunityError> {
        let (status, at) = match self.status {
            OpportunityStatus::Open => return Ok(()),
            OpportunityStatus::Won { at } => ("won", at),
            OpportunityStatus::Lost { at } => ("lost", at),
            OpportunityStatus::Voided { at } => {
                return Err(OpportunityError::Voided {
                    id: self.id.clone(),
                    on: at.date_naive(),
                })
            }
        };
        Err(OpportunityError::Closed {
            id: self.id.clone(),
            action,
            status,
            on: at.date_naive(),
        })
    }

    /// A non-negative amount in the opportunity's currency.
    fn amount_in_currency(&self, m: Money, what: &'static str) -> Result<Money, OpportunityError> {
        money(
            &self.id,
            m.ensure_non_negative(what)
                .and_then(|m| m.ensure_currency(self.currency, what)),
        )
    }

    fn change_stage(
        &self,
        c: &ChangeOpportunityStage,
    ) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        self.require_open("change the stage")?;
        if c.to == self.stage {
            return Err(OpportunityError::Unchanged {
                id: self.id.clone(),
                what: "stage",
                value: c.to.to_string(),
            });
        }
        let probability =
            Probability::new(c.probability).map_err(|source| OpportunityError::Score {
                id: self.id.clone(),
                source,
            })?;
        Ok(vec![OpportunityStageChanged {
            opportunity_id: self.id.clone(),
            from: self.stage.clone(),
            to: c.to.clone(),
            probability,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn change_amount(
        &self,
        c: &ChangeOpportunityAmount,
    ) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        self.require_open("change the amount")?;
        let to = self.amount_in_currency(c.to, "opportunity amount")?;
        if to == self.amount {
            return Err(OpportunityError::Unchanged {
                id: self.id.clone(),
                what: "amount",
                value: to.to_string(),
            });
        }
        Ok(vec![OpportunityAmountChanged {
            opportunity_id: self.id.clone(),
            from: self.amount,
            to,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn change_close_date(
        &self,
        c: &ChangeOpportunityCloseDate,
    ) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        self.require_open("change the close date")?;
        if c.to == self.close_date {
            return Err(OpportunityError::Unchanged {
                id: self.id.clone(),
                what: "expected close date",
                value: c.to.to_string(),
            });
        }
        Ok(vec![OpportunityCloseDateChanged {
            opportunity_id: self.id.clone(),
            from: self.close_date,
            to: c.to,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn change_owner(
        &self,
        c: &ChangeOpportunityOwner,
    ) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        if c.to == self.owner {
            return Err(OpportunityError::Unchanged {
                id: self.id.clone(),
                what: "owner",
                value: c.to.to_string(),
            });
        }
        Ok(vec![OpportunityOwnerChanged {
            opportunity_id: self.id.clone(),
            from: self.owner.clone(),
            to: c.to.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn identify_competitor(
        &self,
        c: &IdentifyCompetitor,
    ) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        if self.competitors.contains(&c.competitor) {
            return Err(OpportunityError::CompetitorAlreadyIdentified {
                id: self.id.clone(),
                competitor: c.competitor.clone(),
            });
        }
        Ok(vec![CompetitorIdentified {
            opportunity_id: self.id.clone(),
            competitor: c.competitor.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn send_proposal(&self, c: &SendProposal) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        self.require_open("send a proposal")?;
        if let Some(last) = self.last_revision {
            if c.revision <= last {
                return Err(OpportunityError::StaleProposalRevision {
                    id: self.id.clone(),
                    last,
                    got: c.revision,
                    next: last.saturating_add(1),
                });
            }
        }
        let amount = self.amount_in_currency(c.amount, "proposal amount")?;
        Ok(vec![ProposalSent {
            opportunity_id: self.id.clone(),
            revision: c.revision,
            amount,
            valid_until: c.valid_until,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn win(&self, c: &WinOpportunity) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        match self.status {
            OpportunityStatus::Open => {}
            OpportunityStatus::Lost { at } => {
                return Err(OpportunityError::WinAfterLoss {
                    id: self.id.clone(),
                    on: at.date_naive(),
                })
            }
            OpportunityStatus::Won { at } => {
                return Err(OpportunityError::AlreadyWon {
                    id: self.id.clone(),
                    on: at.date_naive(),
                })
            }
            OpportunityStatus::Voided { .. } => self.require_open("mark it won")?,
        }
        let amount = self.amount_in_currency(c.amount, "won amount")?;
        let list_price = c
            .list_price
            .map(|m| self.amount_in_currency(m, "list price"))
            .transpose()?;
        let discount = c
            .discount
            .map(|m| self.amount_in_currency(m, "discount"))
            .transpose()?;
        Ok(vec![OpportunityWon {
            opportunity_id: self.id.clone(),
            amount,
            list_price,
            discount,
            competitor: c.competitor.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn lose(&self, c: &LoseOpportunity) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        match self.status {
            OpportunityStatus::Open => {}
            OpportunityStatus::Won { at } => {
                return Err(OpportunityError::LossAfterWin {
                    id: self.id.clone(),
                    on: at.date_naive(),
                })
            }
            OpportunityStatus::Lost { at } => {
                return Err(OpportunityError::AlreadyLost {
                    id: self.id.clone(),
                    on: at.date_naive(),
                })
            }
            OpportunityStatus::Voided { .. } => self.require_open("mark it lost")?,
        }
        Ok(vec![OpportunityLost {
            opportunity_id: self.id.clone(),
            reason: c.reason,
            competitor: c.competitor.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn reopen(&self, c: &ReopenOpportunity) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        if self.status == OpportunityStatus::Open {
            return Err(OpportunityError::NotClosed {
                id: self.id.clone(),
            });
        }
        Ok(vec![OpportunityReopened {
            opportunity_id: self.id.clone(),
            reason: c.reason.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn void(&self, c: &VoidOpportunity) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        Ok(vec![OpportunityVoided {
            opportunity_id: self.id.clone(),
            reason: c.reason,
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

impl Aggregate for Opportunity {
    const CATEGORY: &'static str = OpportunityEvent::CATEGORY;
    type Command = OpportunityCommand;
    type Event = OpportunityEvent;
    type Error = OpportunityError;

    fn handle(
        &self,
        command: &OpportunityCommand,
    ) -> Result<Vec<OpportunityEvent>, OpportunityError> {
        use OpportunityCommand as C;
        if let C::OpenOpportunity(c) = command {
            return self.open(c);
        }
        let state = self.existing(command.target_id())?;
        match command {
            C::OpenOpportunity(c) => self.open(c),
            C::ChangeOpportunityStage(c) => state.change_stage(c),
            C::ChangeOpportunityAmount(c) => state.change_amount(c),
            C::ChangeOpportunityCloseDate(c) => state.change_close_date(c),
            C::ChangeOpportunityOwner(c) => state.change_owner(c),
            C::IdentifyCompetitor(c) => state.identify_competitor(c),
            C::SendProposal(c) => state.send_proposal(c),
            C::WinOpportunity(c) => state.win(c),
            C::LoseOpportunity(c) => state.lose(c),
            C::ReopenOpportunity(c) => state.reopen(c),
            C::VoidOpportunity(c) => state.void(c),
        }
    }

    fn apply(&mut self, event: &OpportunityEvent) {
        use OpportunityEvent as E;
        if let E::OpportunityOpened(e) = event {
            self.state = Some(State {
                id: e.opportunity_id.clone(),
                currency: e.amount.currency,
                amount: e.amount,
                stage: e.stage.clone(),
                close_date: e.expected_close,
                owner: e.owner.clone(),
                competitors: Vec::new(),
                last_revision: None,
                status: OpportunityStatus::Open,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        match event {
            E::OpportunityOpened(_) => {}
            E::OpportunityStageChanged(e) => s.stage = e.to.clone(),
            E::OpportunityAmountChanged(e) => s.amount = e.to,
            E::OpportunityCloseDateChanged(e) => s.close_date = e.to,
            E::OpportunityOwnerChanged(e) => s.owner = e.to.clone(),
            E::CompetitorIdentified(e) => s.competitors.push(e.competitor.clone()),
            E::ProposalSent(e) => s.last_revision = Some(e.revision),
            E::OpportunityWon(e) => s.status = OpportunityStatus::Won { at: e.occurred_at },
            E::OpportunityLost(e) => s.status = OpportunityStatus::Lost { at: e.occurred_at },
            E::OpportunityReopened(_) => s.status = OpportunityStatus::Open,
            E::OpportunityVoided(e) => s.status = OpportunityStatus::Voided { at: e.occurred_at },
        }
    }
}
