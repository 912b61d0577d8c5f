//! Contact: a person at an account.
//!
//! **Architecture Invariant:** the person's name, email and phone travel only in the
//! `personal` field ([`PersonalData`]); account, role and opted-out channels are non-personal
//! facts in their own fields. [`EraseContactPersonalData`] records [`ContactPersonalDataErased`]
//! so the store can shred the person's key (see [`crate::personal`]); after that the contact
//! accepts no new personal data, while non-personal facts (departure, opt-outs) still work.
//!
//! Other rules: a contact leaves its account once; opting out of a channel twice is refused.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::personal::{PersonalData, PersonalDataError};
use crate::values::{AccountId, Channel, ContactId, Label};

// ---------------------------------------------------------------------------------------------
// Commands

/// Add a contact to an account (creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AddContact {
    pub contact_id: ContactId,
    pub account_id: AccountId,
    /// Champion, economic buyer, user, billing…
    pub role: Label,
    pub personal: PersonalData,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record that the contact left the account (a departed champion is a churn signal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordContactDeparture {
    pub contact_id: ContactId,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The contact opts out of being reached on a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OptOutContact {
    pub contact_id: ContactId,
    pub channel: Channel,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Replace the contact's personal data (new email, corrected name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeContactPersonalData {
    pub contact_id: ContactId,
    pub personal: PersonalData,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Erase the contact's personal data (right to erasure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EraseContactPersonalData {
    pub contact_id: ContactId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the contact aggregate.
    pub enum ContactCommand {
        id: contact_id: ContactId,
        commands: {
            AddContact, RecordContactDeparture, OptOutContact, ChangeContactPersonalData,
            EraseContactPersonalData,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// A contact was added to an account. Creation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactAdded {
    pub contact_id: ContactId,
    pub account_id: AccountId,
    pub role: Label,
    /// `Some` when written; `None` once sealed or shredded (see [`crate::personal`]).
    #[serde(default, deserialize_with = "crate::personal::stored")]
    #[schemars(with = "Option<crate::personal::StoredPersonalData>")]
    pub personal: Option<PersonalData>,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The contact left the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactLeft {
    pub contact_id: ContactId,
    pub account_id: AccountId,
    pub role: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The contact opted out of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactOptedOut {
    pub contact_id: ContactId,
    pub channel: Channel,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The contact's personal data was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactPersonalDataChanged {
    pub contact_id: ContactId,
    /// `Some` when written; `None` once sealed or shredded (see [`crate::personal`]).
    #[serde(default, deserialize_with = "crate::personal::stored")]
    #[schemars(with = "Option<crate::personal::StoredPersonalData>")]
    pub personal: Option<PersonalData>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The contact's personal data was erased; the store shreds the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactPersonalDataErased {
    pub contact_id: ContactId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the contact aggregate.
    pub enum ContactEvent {
        category: "contact",
        id: contact_id: ContactId,
        events: {
            ContactAdded = 1, ContactLeft = 1, ContactOptedOut = 1,
            ContactPersonalDataChanged = 1, ContactPersonalDataErased = 1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a contact command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContactError {
    #[error("contact `{id}` already exists; choose another id or send a command for the existing contact")]
    AlreadyExists { id: ContactId },
    #[error("contact `{id}` does not exist; add it (AddContact) first")]
    NotFound { id: ContactId },
    #[error("command is for contact `{command}` but stream `contact-{loaded}` was loaded; load stream `contact-{command}` and retry")]
    WrongInstance {
        loaded: ContactId,
        command: ContactId,
    },
    #[error("contact `{id}` already left account `{account}` on {on}; there is nothing to record")]
    AlreadyLeft {
        id: ContactId,
        account: AccountId,
        on: NaiveDate,
    },
    #[error("contact `{id}` has already opted out of {channel:?}; there is nothing to record")]
    AlreadyOptedOut { id: ContactId, channel: Channel },
    #[error("personal data of contact `{id}` was erased on {on}; it cannot receive new personal data, add a new contact if the person comes back")]
    Erased { id: ContactId, on: NaiveDate },
    #[error("contact `{id}`: {source}")]
    PersonalData {
        id: ContactId,
        source: PersonalDataError,
    },
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    id: ContactId,
    account_id: AccountId,
    role: Label,
    left_at: Option<DateTime<Utc>>,
    opted_out: Vec<Channel>,
    erased_at: Option<DateTime<Utc>>,
}

/// The contact aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    state: Option<State>,
}

impl Contact {
    /// True once the personal data was erased.
    #[must_use]
    pub fn is_erased(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.erased_at.is_some())
    }

    /// Channels the contact opted out of.
    #[must_use]
    pub fn opted_out(&self) -> &[Channel] {
        self.state.as_ref().map_or(&[], |s| s.opted_out.as_slice())
    }

    fn existing(&self, id: &ContactId) -> Result<&State, ContactError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| ContactError::NotFound { id: id.clone() })?;
        if &state.id != id {
            return Err(ContactError::WrongInstance {
                loaded: state.id.clone(),
                command: id.clone(),
            });
        }
        Ok(state)
    }

    fn add(&self, c: &AddContact) -> Result<Vec<ContactEvent>, ContactError> {
        if self.state.is_some() {
            return Err(ContactError::AlreadyExists {
                id: c.contact_id.clone(),
            });
        }
        validate(&c.contact_id, &c.personal)?;
        Ok(vec![ContactAdded {
            contact_id: c.contact_id.clone(),
            account_id: c.account_id.clone(),
            role: c.role.clone(),
            personal: Some(c.personal.clone()),
            is_test: c.is_test,
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

fn validate(id: &ContactId, personal: &PersonalData) -> Result<(), ContactError> {
    personal
        .validate()
        .map_err(|source| ContactError::PersonalData {
            id: id.clone(),
            source,
        })
}

impl State {
    fn depart(&self, c: &RecordContactDeparture) -> Result<Vec<ContactEvent>, ContactError> {
        if let Some(at) = self.left_at {
            return Err(ContactError::AlreadyLeft {
                id: self.id.clone(),
                account: self.account_id.clone(),
                on: at.date_naive(),
            });
        }
        Ok(vec![ContactLeft {
            contact_id: self.id.clone(),
            account_id: self.account_id.clone(),
            role: self.role.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn opt_out(&self, c: &OptOutContact) -> Result<Vec<ContactEvent>, ContactError> {
        if self.opted_out.contains(&c.channel) {
            return Err(ContactError::AlreadyOptedOut {
                id: self.id.clone(),
                channel: c.channel,
            });
        }
        Ok(vec![ContactOptedOut {
            contact_id: self.id.clone(),
            channel: c.channel,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn not_erased(&self) -> Result<(), ContactError> {
        match self.erased_at {
            Some(at) => Err(ContactError::Erased {
                id: self.id.clone(),
                on: at.date_naive(),
            }),
            None => Ok(()),
        }
    }

    fn change_personal(
        &self,
        c: &ChangeContactPersonalData,
    ) -> Result<Vec<ContactEvent>, ContactError> {
        self.not_erased()?;
        validate(&self.id, &c.personal)?;
        Ok(vec![ContactPersonalDataChanged {
            contact_id: self.id.clone(),
            personal: Some(c.personal.clone()),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn erase(&self, c: &EraseContactPersonalData) -> Result<Vec<ContactEvent>, ContactError> {
        self.not_erased()?;
        Ok(vec![ContactPersonalDataErased {
            contact_id: self.id.clone(),
            reason: c.reason.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

impl Aggregate for Contact {
    const CATEGORY: &'static str = ContactEvent::CATEGORY;
    type Command = ContactCommand;
    type Event = ContactEvent;
    type Error = ContactError;

    fn handle(&self, command: &ContactCommand) -> Result<Vec<ContactEvent>, ContactError> {
        use ContactCommand as C;
        if let C::AddContact(c) = command {
            return self.add(c);
        }
        let s = self.existing(command.target_id())?;
        match command {
            C::AddContact(c) => self.add(c),
            C::RecordContactDeparture(c) => s.depart(c),
            C::OptOutContact(c) => s.opt_out(c),
            C::ChangeContactPersonalData(c) => s.change_personal(c),
            C::EraseContactPersonalData(c) => s.erase(c),
        }
    }

    fn apply(&mut self, event: &ContactEvent) {
        use ContactEvent as E;
        if let E::ContactAdded(e) = event {
            self.state = Some(State {
                id: e.contact_id.clone(),
                account_id: e.account_id.clone(),
                role: e.role.clone(),
                left_at: None,
                opted_out: Vec::new(),
                erased_at: None,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        match event {
            E::ContactAdded(_) | E::ContactPersonalDataChanged(_) => {}
            E::ContactLeft(e) => s.left_at = Some(e.occurred_at),
            E::ContactOptedOut(e) => s.opted_out.push(e.channel),
            E::ContactPersonalDataErased(e) => s.erased_at = Some(e.occurred_at),
        }
    }
}
