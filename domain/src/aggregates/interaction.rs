//! Interaction: one call, email, meeting, chat… between the company and a person. Feeds
//! handle time, contact rates, first-contact resolution and campaign touches.
//!
//! Durations are whole seconds (`_s`): `duration_s` is the time on the line or in the meeting
//! (hold included), `hold_s` the part spent on hold, `wrap_s` the after-call work. Rules: an
//! interaction is logged once; `hold_s <= duration_s`; each duration is at most
//! [`DURATION_MAX_S`]; the outcome must be possible on the channel (no voicemail for an email,
//! no bounce for a call) and `abandoned` exists only for inbound contacts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{
    AccountId, AgentId, CampaignId, CaseId, Channel, ContactId, InteractionId, Label, LeadId,
    OpportunityId,
};

/// Longest duration accepted for one interaction, in seconds (24 h).
pub const DURATION_MAX_S: u32 = 24 * 60 * 60;

/// Who started the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The person contacted us.
    Inbound,
    /// We contacted the person.
    Outbound,
}

/// What the interaction was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Sales,
    Service,
    Marketing,
}

/// How the attempt ended; only `connected` is a live two-way exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InteractionOutcome {
    /// A live two-way exchange (or a delivered and answered message).
    Connected,
    /// Nobody picked up.
    NoAnswer,
    /// Left a voicemail.
    Voicemail,
    /// Line busy.
    Busy,
    /// The caller hung up before reaching an agent.
    Abandoned,
    /// Message not delivered.
    Bounced,
    /// Only an automatic reply came back.
    AutoReply,
}

impl InteractionOutcome {
    /// Whether this outcome can happen on `channel`.
    #[must_use]
    pub fn possible_on(self, channel: Channel) -> bool {
        use Channel as Ch;
        match self {
            Self::Connected => true,
            Self::NoAnswer | Self::Busy | Self::Voicemail => {
                matches!(channel, Ch::Phone | Ch::Video)
            }
            Self::Abandoned => matches!(channel, Ch::Phone | Ch::Video | Ch::Chat),
            Self::Bounced | Self::AutoReply => {
                matches!(
                    channel,
                    Ch::Email | Ch::Sms | Ch::Social | Ch::Mail | Ch::Web
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

/// Log an interaction (creation; the only command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogInteraction {
    pub interaction_id: InteractionId,
    pub account: Option<AccountId>,
    pub contact: Option<ContactId>,
    pub lead: Option<LeadId>,
    pub channel: Channel,
    pub direction: Direction,
    pub purpose: Purpose,
    pub duration_s: u32,
    pub hold_s: u32,
    pub wrap_s: u32,
    /// `None` for bots and unattended systems.
    pub agent: Option<AgentId>,
    pub outcome: InteractionOutcome,
    /// Telephony system's call id, linking legs of one call.
    pub call_id: Option<Label>,
    pub opportunity: Option<OpportunityId>,
    pub case: Option<CaseId>,
    pub campaign: Option<CampaignId>,
    pub is_test: bool,
    /// Start of the interaction.
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the interaction aggregate.
    pub enum InteractionCommand {
        id: interaction_id: InteractionId,
        commands: { LogInteraction }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// An interaction took place. Creation event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InteractionLogged {
    pub interaction_id: InteractionId,
    pub account: Option<AccountId>,
    pub contact: Option<ContactId>,
    pub lead: Option<LeadId>,
    pub channel: Channel,
    pub direction: Direction,
    pub purpose: Purpose,
    pub duration_s: u32,
    pub hold_s: u32,
    pub wrap_s: u32,
    pub agent: Option<AgentId>,
    pub outcome: InteractionOutcome,
    pub call_id: Option<Label>,
    pub opportunity: Option<OpportunityId>,
    pub case: Option<CaseId>,
    pub campaign: Option<CampaignId>,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the interaction aggregate.
    pub enum InteractionEvent {
        category: "interaction",
        id: interaction_id: InteractionId,
        events: { InteractionLogged = 1 }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why an interaction command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InteractionError {
    #[error("interaction `{id}` is already logged; interactions are logged once, use a new id for a new interaction")]
    AlreadyExists { id: InteractionId },
    #[error("interaction `{id}`: {what} is {value_s} s, above the limit of {DURATION_MAX_S} s; check the unit (seconds) or split the interaction")]
    TooLong {
        id: InteractionId,
        what: &'static str,
        value_s: u32,
    },
    #[error("interaction `{id}`: hold time {hold_s} s exceeds the duration {duration_s} s; the duration includes hold time")]
    HoldExceedsDuration {
        id: InteractionId,
        hold_s: u32,
        duration_s: u32,
    },
    #[error("interaction `{id}`: outcome {outcome:?} is not possible on channel {channel:?}; send an outcome that fits the channel")]
    OutcomeChannelMismatch {
        id: InteractionId,
        outcome: InteractionOutcome,
        channel: Channel,
    },
    #[error("interaction `{id}`: only an inbound contact can be abandoned; use no_answer for an outbound attempt")]
    AbandonedOutbound { id: InteractionId },
}

// ---------------------------------------------------------------------------------------------
// State

/// The interaction aggregate: a single logged fact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interaction {
    logged: Option<InteractionId>,
}

impl Interaction {
    /// True once logged.
    #[must_use]
    pub fn is_logged(&self) -> bool {
        self.logged.is_some()
    }

    fn log(&self, c: &LogInteraction) -> Result<Vec<InteractionEvent>, InteractionError> {
        let id = &c.interaction_id;
        if self.logged.is_some() {
            return Err(InteractionError::AlreadyExists { id: id.clone() });
        }
        for (what, value_s) in [
            ("duration", c.duration_s),
            ("hold time", c.hold_s),
            ("wrap time", c.wrap_s),
        ] {
            if value_s > DURATION_MAX_S {
                return Err(InteractionError::TooLong {
                    id: id.clone(),
                    what,
                    value_s,
                });
            }
        }
        if c.hold_s > c.duration_s {
            return Err(InteractionError::HoldExceedsDuration {
                id: id.clone(),
                hold_s: c.hold_s,
                duration_s: c.duration_s,
            });
        }
        if !c.outcome.possible_on(c.channel) {
            return Err(InteractionError::OutcomeChannelMismatch {
                id: id.clone(),
                outcome: c.outcome,
                channel: c.channel,
            });
        }
        if c.outcome == InteractionOutcome::Abandoned && c.direction == Direction::Outbound {
            return Err(InteractionError::AbandonedOutbound { id: id.clone() });
        }
        Ok(vec![InteractionLogged {
            interaction_id: id.clone(),
            account: c.account.clone(),
            contact: c.contact.clone(),
            lead: c.lead.clone(),
            channel: c.channel,
            direction: c.direction,
            purpose: c.purpose,
            duration_s: c.duration_s,
            hold_s: c.hold_s,
            wrap_s: c.wrap_s,
            agent: c.agent.clone(),
            outcome: c.outcome,
            call_id: c.call_id.clone(),
            opportunity: c.opportunity.clone(),
            case: c.case.clone(),
            campaign: c.campaign.clone(),
            is_test: c.is_test,
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

impl Aggregate for Interaction {
    const CATEGORY: &'static str = InteractionEvent::CATEGORY;
    type Command = InteractionCommand;
    type Event = InteractionEvent;
    type Error = InteractionError;

    fn handle(
        &self,
        command: &InteractionCommand,
    ) -> Result<Vec<InteractionEvent>, InteractionError> {
        match command {
            InteractionCommand::LogInteraction(c) => self.log(c),
        }
    }

    fn apply(&mut self, event: &InteractionEvent) {
        match event {
            InteractionEvent::InteractionLogged(e) => self.logged = Some(e.interaction_id.clone()),
        }
    }
}
