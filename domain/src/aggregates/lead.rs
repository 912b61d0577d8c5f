//! Lead: a prospect from capture through qualification to conversion into an account,
//! contact and (optionally) opportunity.
//!
//! Lifecycle: captured → nurture → qualified → converted; disqualified and recycled branch off.
//! Rules: a lead converts only when qualified (never when disqualified or in nurture); a
//! recycled lead goes back to nurture and must be qualified again; a converted lead is final
//! (only erasure is accepted). The lead's name and email are [`PersonalData`], kept in the
//! `personal` field and erasable with [`EraseLeadPersonalData`] (see [`crate::personal`]).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::personal::{PersonalData, PersonalDataError};
use crate::values::{
    AccountId, CampaignId, Channel, ContactId, Label, LeadId, LeadScore, OpportunityId, ProductId,
    ScoreError,
};

/// Why a lead was disqualified; `spam` excludes it from lead metrics (`SPAM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisqualificationReason {
    /// Junk submission.
    Spam,
    /// Not our target customer.
    NoFit,
    /// Already known as another lead.
    Duplicate,
    /// Never answered.
    NoResponse,
    /// Chose or is a competitor.
    Competitor,
    /// Anything else.
    Other,
}

// ---------------------------------------------------------------------------------------------
// Commands

/// Capture a new lead (creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CaptureLead {
    pub lead_id: LeadId,
    /// Where the lead came from (web form, trade show, referral…).
    pub source: Label,
    pub channel: Channel,
    pub campaign: Option<CampaignId>,
    pub product: Option<ProductId>,
    pub industry: Option<Label>,
    pub region: Option<Label>,
    /// The customer account that referred the lead.
    pub referred_by: Option<AccountId>,
    /// The lead's name, email and phone, when known (absent or `null`: none).
    #[serde(default, deserialize_with = "crate::personal::or_none")]
    pub personal: PersonalData,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record a score from a scoring model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScoreLead {
    pub lead_id: LeadId,
    /// 0..=100.
    pub score: u8,
    pub model_version: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Qualify a lead in nurture (BANT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct QualifyLead {
    pub lead_id: LeadId,
    pub budget: bool,
    pub authority: bool,
    pub need: bool,
    pub timeline: bool,
    /// 0..=100, when a score was used.
    pub score: Option<u8>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Disqualify a lead in nurture or qualified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DisqualifyLead {
    pub lead_id: LeadId,
    pub reason: DisqualificationReason,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Send a qualified or disqualified lead back to nurture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecycleLead {
    pub lead_id: LeadId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Convert a qualified lead into an account, a contact and maybe an opportunity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConvertLead {
    pub lead_id: LeadId,
    pub account_id: AccountId,
    pub contact_id: ContactId,
    pub opportunity_id: Option<OpportunityId>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Erase the lead's personal data (right to erasure). Accepted in every state, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EraseLeadPersonalData {
    pub lead_id: LeadId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the lead aggregate.
    pub enum LeadCommand {
        id: lead_id: LeadId,
        commands: {
            CaptureLead, ScoreLead, QualifyLead, DisqualifyLead, RecycleLead, ConvertLead,
            EraseLeadPersonalData,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// A lead was captured. Creation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadCaptured {
    pub lead_id: LeadId,
    pub source: Label,
    pub channel: Channel,
    pub campaign: Option<CampaignId>,
    pub product: Option<ProductId>,
    pub industry: Option<Label>,
    pub region: Option<Label>,
    pub referred_by: Option<AccountId>,
    /// `Some` when written; `None` once sealed or shredded (see [`crate::personal`]).
    #[serde(default, deserialize_with = "crate::personal::stored")]
    #[schemars(with = "Option<crate::personal::StoredPersonalData>")]
    pub personal: Option<PersonalData>,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A scoring model scored the lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadScored {
    pub lead_id: LeadId,
    pub score: LeadScore,
    pub model_version: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The lead was qualified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadQualified {
    pub lead_id: LeadId,
    pub budget: bool,
    pub authority: bool,
    pub need: bool,
    pub timeline: bool,
    pub score: Option<LeadScore>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The lead was disqualified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadDisqualified {
    pub lead_id: LeadId,
    pub reason: DisqualificationReason,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The lead went back to nurture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadRecycled {
    pub lead_id: LeadId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The lead became an account and contact (and maybe an opportunity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadConverted {
    pub lead_id: LeadId,
    pub account_id: AccountId,
    pub contact_id: ContactId,
    pub opportunity_id: Option<OpportunityId>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The lead's personal data was erased; the store shreds its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadPersonalDataErased {
    pub lead_id: LeadId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the lead aggregate.
    pub enum LeadEvent {
        category: "lead",
        id: lead_id: LeadId,
        events: {
            LeadCaptured = 1, LeadScored = 1, LeadQualified = 1, LeadDisqualified = 1,
            LeadRecycled = 1, LeadConverted = 1, LeadPersonalDataErased = 1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a lead command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeadError {
    #[error(
        "lead `{id}` already exists; choose another id or send a command for the existing lead"
    )]
    AlreadyExists { id: LeadId },
    #[error("lead `{id}` does not exist; capture it (CaptureLead) first")]
    NotFound { id: LeadId },
    #[error("command is for lead `{command}` but stream `lead-{loaded}` was loaded; load stream `lead-{command}` and retry")]
    WrongInstance { loaded: LeadId, command: LeadId },
    #[error(
        "lead `{id}` is in nurture, not qualified; qualify it (QualifyLead) before converting it"
    )]
    NotQualified { id: LeadId },
    #[error("cannot {action}: lead `{id}` is disqualified; recycle it (RecycleLead) back to nurture first")]
    Disqualified { id: LeadId, action: &'static str },
    #[error(
        "lead `{id}` was converted on {on}; a converted lead is final, work on its account instead"
    )]
    Converted { id: LeadId, on: NaiveDate },
    #[error("lead `{id}` is already qualified; convert it (ConvertLead) or recycle it first")]
    AlreadyQualified { id: LeadId },
    #[error("lead `{id}` is already disqualified; there is nothing to record")]
    AlreadyDisqualified { id: LeadId },
    #[error(
        "lead `{id}` is already in nurture; only a qualified or disqualified lead can be recycled"
    )]
    AlreadyInNurture { id: LeadId },
    #[error("personal data of lead `{id}` was already erased; there is nothing left to erase")]
    AlreadyErased { id: LeadId },
    #[error("lead `{id}`: {source}")]
    PersonalData {
        id: LeadId,
        source: PersonalDataError,
    },
    #[error("lead `{id}`: {source}")]
    Score { id: LeadId, source: ScoreError },
}

// ---------------------------------------------------------------------------------------------
// State

/// Where a lead is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadStatus {
    /// Captured or recycled; not (or no longer) qualified.
    Nurture,
    /// Qualified and ready to convert.
    Qualified,
    /// Disqualified for the given reason.
    Disqualified(DisqualificationReason),
    /// Converted at the given instant; final.
    Converted { at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    id: LeadId,
    status: LeadStatus,
    erased: bool,
}

/// The lead aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lead {
    state: Option<State>,
}

impl Lead {
    /// Current status, `None` before capture.
    #[must_use]
    pub fn status(&self) -> Option<LeadStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    /// True once the personal data was erased.
    #[must_use]
    pub fn is_erased(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.erased)
    }

    fn capture(&self, c: &CaptureLead) -> Result<Vec<LeadEvent>, LeadError> {
        if self.state.is_some() {
            return Err(LeadError::AlreadyExists {
                id: c.lead_id.clone(),
            });
        }
        // An anonymous lead (an export without names) records no personal data at all.
        let anonymous = c.personal == PersonalData::default();
        if !anonymous {
            c.personal
                .validate()
                .map_err(|source| LeadError::PersonalData {
                    id: c.lead_id.clone(),
                    source,
                })?;
        }
        Ok(vec![LeadCaptured {
            lead_id: c.lead_id.clone(),
            source: c.source.clone(),
            channel: c.channel,
            campaign: c.campaign.clone(),
            product: c.product.clone(),
            industry: c.industry.clone(),
            region: c.region.clone(),
            referred_by: c.referred_by.clone(),
            personal: (!anonymous).then(|| c.personal.clone()),
            is_test: c.is_test,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn existing(&self, id: &LeadId) -> Result<&State, LeadError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| LeadError::NotFound { id: id.clone() })?;
        if &state.id != id {
            return Err(LeadError::WrongInstance {
                loaded: state.id.clone(),
                command: id.clone(),
            });
        }
        Ok(state)
    }
}

impl State {
    fn not_converted(&self) -> Result<(), LeadError> {
        match self.status {
            LeadStatus::Converted { at } => Err(LeadError::Converted {
                id: self.id.clone(),
                on: at.date_naive(),
            }),
            _ => Ok(()),
        }
    }

    fn score_value(&self, raw: u8) -> Result<LeadScore, LeadError> {
        LeadScore::new(raw).map_err(|source| LeadError::Score {
            id: self.id.clone(),
            source,
        })
    }

    fn score(&self, c: &ScoreLead) -> Result<Vec<LeadEvent>, LeadError> {
        self.not_converted()?;
        Ok(vec![LeadScored {
            lead_id: self.id.clone(),
            score: self.score_value(c.score)?,
            model_version: c.model_version.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn qualify(&self, c: &QualifyLead) -> Result<Vec<LeadEvent>, LeadError> {
        self.not_converted()?;
        match self.status {
            LeadStatus::Qualified => {
                return Err(LeadError::AlreadyQualified {
                    id: self.id.clone(),
                })
            }
            LeadStatus::Disqualified(_) => {
                return Err(LeadError::Disqualified {
                    id: self.id.clone(),
                    action: "qualify it",
                })
            }
            LeadStatus::Nurture | LeadStatus::Converted { .. } => {}
        }
        Ok(vec![LeadQualified {
            lead_id: self.id.clone(),
            budget: c.budget,
            authority: c.authority,
            need: c.need,
            timeline: c.timeline,
            score: c.score.map(|s| self.score_value(s)).transpose()?,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn disqualify(&self, c: &DisqualifyLead) -> Result<Vec<LeadEvent>, LeadError> {
        self.not_converted()?;
        if let LeadStatus::Disqualified(_) = self.status {
            return Err(LeadError::AlreadyDisqualified {
                id: self.id.clone(),
            });
        }
        Ok(vec![LeadDisqualified {
            lead_id: self.id.clone(),
            reason: c.reason,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn recycle(&self, c: &RecycleLead) -> Result<Vec<LeadEvent>, LeadError> {
        self.not_converted()?;
        if self.status == LeadStatus::Nurture {
            return Err(LeadError::AlreadyInNurture {
                id: self.id.clone(),
            });
        }
        Ok(vec![LeadRecycled {
            lead_id: self.id.clone(),
            reason: c.reason.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn convert(&self, c: &ConvertLead) -> Result<Vec<LeadEvent>, LeadError> {
        self.not_converted()?;
        match self.status {
            LeadStatus::Qualified => Ok(vec![LeadConverted {
                lead_id: self.id.clone(),
                account_id: c.account_id.clone(),
                contact_id: c.contact_id.clone(),
                opportunity_id: c.opportunity_id.clone(),
                occurred_at: c.occurred_at,
            }
            .into()]),
            LeadStatus::Disqualified(_) => Err(LeadError::Disqualified {
                id: self.id.clone(),
                action: "convert it",
            }),
            LeadStatus::Nurture | LeadStatus::Converted { .. } => Err(LeadError::NotQualified {
                id: self.id.clone(),
            }),
        }
    }

    fn erase(&self, c: &EraseLeadPersonalData) -> Result<Vec<LeadEvent>, LeadError> {
        if self.erased {
            return Err(LeadError::AlreadyErased {
                id: self.id.clone(),
            });
        }
        Ok(vec![LeadPersonalDataErased {
            lead_id: self.id.clone(),
            reason: c.reason.clone(),
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

impl Aggregate for Lead {
    const CATEGORY: &'static str = LeadEvent::CATEGORY;
    type Command = LeadCommand;
    type Event = LeadEvent;
    type Error = LeadError;

    fn handle(&self, command: &LeadCommand) -> Result<Vec<LeadEvent>, LeadError> {
        use LeadCommand as C;
        if let C::CaptureLead(c) = command {
            return self.capture(c);
        }
        let s = self.existing(command.target_id())?;
        match command {
            C::CaptureLead(c) => self.capture(c),
            C::ScoreLead(c) => s.score(c),
            C::QualifyLead(c) => s.qualify(c),
            C::DisqualifyLead(c) => s.disqualify(c),
            C::RecycleLead(c) => s.recycle(c),
            C::ConvertLead(c) => s.convert(c),
            C::EraseLeadPersonalData(c) => s.erase(c),
        }
    }

    fn apply(&mut self, event: &LeadEvent) {
        use LeadEvent as E;
        if let E::LeadCaptured(e) = event {
            self.state = Some(State {
                id: e.lead_id.clone(),
                status: LeadStatus::Nurture,
                erased: false,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        match event {
            E::LeadCaptured(_) | E::LeadScored(_) => {}
            E::LeadQualified(_) => s.status = LeadStatus::Qualified,
            E::LeadDisqualified(e) => s.status = LeadStatus::Disqualified(e.reason),
            E::LeadRecycled(_) => s.status = LeadStatus::Nurture,
            E::LeadConverted(e) => s.status = LeadStatus::Converted { at: e.occurred_at },
            E::LeadPersonalDataErased(_) => s.erased = true,
        }
    }
}
