//! Account: a customer organisation. Holds the slowly changing dimensions metrics break down
//! by (segment, owner) and the `is_internal` flag that excludes staff accounts (`INTERNAL`).
//!
//! The account name is a company name, not personal data. Rules: an account is opened once;
//! owner and segment changes must change something.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{AccountId, AgentId, Label};

// ---------------------------------------------------------------------------------------------
// Commands

/// Open a customer account (creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpenAccount {
    pub account_id: AccountId,
    pub name: Label,
    pub segment: Label,
    pub region: Label,
    pub industry: Option<Label>,
    pub owner: AgentId,
    /// Our own company or a staff account: excluded from customer-facing metrics.
    pub is_internal: bool,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Hand the account to another owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeAccountOwner {
    pub account_id: AccountId,
    pub to: AgentId,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Move the account to another segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeAccountSegment {
    pub account_id: AccountId,
    pub to: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the account aggregate.
    pub enum AccountCommand {
        id: account_id: AccountId,
        commands: { OpenAccount, ChangeAccountOwner, ChangeAccountSegment }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// An account was opened. Creation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountOpened {
    pub account_id: AccountId,
    pub name: Label,
    pub segment: Label,
    pub region: Label,
    pub industry: Option<Label>,
    pub owner: AgentId,
    pub is_internal: bool,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The account owner changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountOwnerChanged {
    pub account_id: AccountId,
    pub from: AgentId,
    pub to: AgentId,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The account segment changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountSegmentChanged {
    pub account_id: AccountId,
    pub from: Label,
    pub to: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the account aggregate.
    pub enum AccountEvent {
        category: "account",
        id: account_id: AccountId,
        events: { AccountOpened = 1, AccountOwnerChanged = 1, AccountSegmentChanged = 1 }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why an account command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    #[error("account `{id}` already exists; choose another id or send a command for the existing account")]
    AlreadyExists { id: AccountId },
    #[error("account `{id}` does not exist; open it (OpenAccount) first")]
    NotFound { id: AccountId },
    #[error("command is for account `{command}` but stream `account-{loaded}` was loaded; load stream `account-{command}` and retry")]
    WrongInstance {
        loaded: AccountId,
        command: AccountId,
    },
    #[error("account `{id}` already has {what} `{value}`; send the new value")]
    Unchanged {
        id: AccountId,
        what: &'static str,
        value: String,
    },
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    id: AccountId,
    owner: AgentId,
    segment: Label,
    is_internal: bool,
}

/// The account aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    state: Option<State>,
}

impl Account {
    /// Current owner, `None` before opening.
    #[must_use]
    pub fn owner(&self) -> Option<&AgentId> {
        self.state.as_ref().map(|s| &s.owner)
    }

    /// Current segment, `None` before opening.
    #[must_use]
    pub fn segment(&self) -> Option<&Label> {
        self.state.as_ref().map(|s| &s.segment)
    }

    /// True for internal (staff) accounts.
    #[must_use]
    pub fn is_internal(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.is_internal)
    }

    fn existing(&self, id: &AccountId) -> Result<&State, AccountError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| AccountError::NotFound { id: id.clone() })?;
        if &state.id != id {
            return Err(AccountError::WrongInstance {
                loaded: state.id.clone(),
                command: id.clone(),
            });
        }
        Ok(state)
    }
}

impl Aggregate for Account {
    const CATEGORY: &'static str = AccountEvent::CATEGORY;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::OpenAccount(c) => {
                if self.state.is_some() {
                    return Err(AccountError::AlreadyExists {
                        id: c.account_id.clone(),
                    });
                }
                Ok(vec![AccountOpened {
                    account_id: c.account_id.clone(),
                    name: c.name.clone(),
                    segment: c.segment.clone(),
                    region: c.region.clone(),
                    industry: c.industry.clone(),
                    owner: c.owner.clone(),
                    is_internal: c.is_internal,
                    is_test: c.is_test,
                    occurred_at: c.occurred_at,
                }
                .into()])
            }
            AccountCommand::ChangeAccountOwner(c) => {
                let s = self.existing(&c.account_id)?;
                if s.owner == c.to {
                    return Err(AccountError::Unchanged {
                        id: s.id.clone(),
                        what: "owner",
                        value: c.to.to_string(),
                    });
                }
                Ok(vec![AccountOwnerChanged {
                    account_id: s.id.clone(),
                    from: s.owner.clone(),
                    to: c.to.clone(),
                    occurred_at: c.occurred_at,
                }
                .into()])
            }
            AccountCommand::ChangeAccountSegment(c) => {
                let s = self.existing(&c.account_id)?;
                if s.segment == c.to {
                    return Err(AccountError::Unchanged {
                        id: s.id.clone(),
                        what: "segment",
                        value: c.to.to_string(),
                    });
                }
                Ok(vec![AccountSegmentChanged {
                    account_id: s.id.clone(),
                    from: s.segment.clone(),
                    to: c.to.clone(),
                    occurred_at: c.occurred_at,
                }
                .into()])
            }
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountOpened(e) => {
                self.state = Some(State {
                    id: e.account_id.clone(),
                    owner: e.owner.clone(),
                    segment: e.segment.clone(),
                    is_internal: e.is_internal,
                });
            }
            AccountEvent::AccountOwnerChanged(e) => {
                if let Some(s) = self.state.as_mut() {
                    s.owner = e.to.clone();
                }
            }
            AccountEvent::AccountSegmentChanged(e) => {
                if let Some(s) = self.state.as_mut() {
                    s.segment = e.to.clone();
                }
            }
        }
    }
}
