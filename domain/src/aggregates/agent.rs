//! Agent: a person on staff (sales rep, manager, service agent) as reference data, and the
//! rep's place in the organisation (team, region, manager) for breakdowns by rep and team.
//!
//! The agent's name is personal data and lives only in the `personal` field of
//! [`AgentRegistered`]; ids are opaque so the name can be erased.
//!
//! Rules: an agent is registered once, with valid personal data if any; only a registered
//! agent can be assigned; an assignment must change team, region or manager; an agent is not
//! their own manager.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::personal::{PersonalData, PersonalDataError};
use crate::values::{AgentId, Label, TeamId};

// ---------------------------------------------------------------------------------------------
// Commands

/// Register a staff member (creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegisterAgent {
    pub agent_id: AgentId,
    pub personal: Option<PersonalData>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Place a rep in a team and region, under a manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AssignRep {
    pub agent_id: AgentId,
    pub team: TeamId,
    pub region: Label,
    pub manager: Option<AgentId>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Erase the agent's personal data (right to erasure). Accepted once, for a registered agent;
/// assignments stay, since they name no person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EraseAgentPersonalData {
    pub agent_id: AgentId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the agent aggregate.
    pub enum AgentCommand {
        id: agent_id: AgentId,
        commands: { RegisterAgent, AssignRep, EraseAgentPersonalData }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// A staff member was registered. Creation event; carries personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRegistered {
    pub agent_id: AgentId,
    /// `Some` when written; `None` once sealed or shredded (see [`crate::personal`]).
    #[serde(default, deserialize_with = "crate::personal::stored")]
    #[schemars(with = "Option<crate::personal::StoredPersonalData>")]
    pub personal: Option<PersonalData>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// A rep was placed in a team and region (valid from `occurred_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepAssigned {
    pub agent_id: AgentId,
    pub team: TeamId,
    pub region: Label,
    pub manager: Option<AgentId>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The agent's personal data was erased; the store shreds their key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentPersonalDataErased {
    pub agent_id: AgentId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the agent aggregate.
    pub enum AgentEvent {
        category: "agent",
        id: agent_id: AgentId,
        events: { AgentRegistered = 1, RepAssigned = 1, AgentPersonalDataErased = 1 }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why an agent command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("agent `{id}` is already registered; choose another id")]
    AlreadyExists { id: AgentId },
    #[error("agent `{id}` is not registered; register it (RegisterAgent) first")]
    NotFound { id: AgentId },
    #[error("command is for agent `{command}` but stream `agent-{loaded}` was loaded; load stream `agent-{command}` and retry")]
    WrongInstance { loaded: AgentId, command: AgentId },
    #[error("agent `{id}`: {source}")]
    PersonalData {
        id: AgentId,
        source: PersonalDataError,
    },
    #[error("agent `{id}` is already in team `{team}`, region `{region}` under that manager; send a changed assignment")]
    Unchanged {
        id: AgentId,
        team: TeamId,
        region: Label,
    },
    #[error("agent `{id}` cannot be their own manager; name another manager or none")]
    OwnManager { id: AgentId },
    #[error("the personal data of agent `{id}` is already erased; nothing to do")]
    AlreadyErased { id: AgentId },
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    id: AgentId,
    assignment: Option<(TeamId, Label, Option<AgentId>)>,
    erased: bool,
}

/// The agent aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Agent {
    state: Option<State>,
}

impl Agent {
    /// Current team, `None` before an assignment.
    #[must_use]
    pub fn team(&self) -> Option<&TeamId> {
        self.state
            .as_ref()
            .and_then(|s| s.assignment.as_ref())
            .map(|(team, _, _)| team)
    }
}

impl Agent {
    /// The state of registered agent `id`: refused when no agent is registered, or another one
    /// was loaded.
    fn registered(&self, id: &AgentId) -> Result<&State, AgentError> {
        let s = self
            .state
            .as_ref()
            .ok_or_else(|| AgentError::NotFound { id: id.clone() })?;
        if s.id != *id {
            return Err(AgentError::WrongInstance {
                loaded: s.id.clone(),
                command: id.clone(),
            });
        }
        Ok(s)
    }
}

impl Aggregate for Agent {
    const CATEGORY: &'static str = AgentEvent::CATEGORY;
    type Command = AgentCommand;
    type Event = AgentEvent;
    type Error = AgentError;

    fn handle(&self, command: &AgentCommand) -> Result<Vec<AgentEvent>, AgentError> {
        match command {
            AgentCommand::RegisterAgent(c) => {
                if self.state.is_some() {
                    return Err(AgentError::AlreadyExists {
                        id: c.agent_id.clone(),
                    });
                }
                if let Some(personal) = &c.personal {
                    personal
                        .validate()
                        .map_err(|source| AgentError::PersonalData {
                            id: c.agent_id.clone(),
                            source,
                        })?;
                }
                Ok(vec![AgentRegistered {
                    agent_id: c.agent_id.clone(),
                    personal: c.personal.clone(),
                    occurred_at: c.occurred_at,
                }
                .into()])
            }
            AgentCommand::AssignRep(c) => {
                let s = self.registered(&c.agent_id)?;
                if c.manager.as_ref() == Some(&c.agent_id) {
                    return Err(AgentError::OwnManager {
                        id: c.agent_id.clone(),
                    });
                }
                let next = (c.team.clone(), c.region.clone(), c.manager.clone());
                if s.assignment.as_ref() == Some(&next) {
                    return Err(AgentError::Unchanged {
                        id: c.agent_id.clone(),
                        team: c.team.clone(),
                        region: c.region.clone(),
                    });
                }
                Ok(vec![RepAssigned {
                    agent_id: c.agent_id.clone(),
                    team: c.team.clone(),
                    region: c.region.clone(),
                    manager: c.manager.clone(),
                    occurred_at: c.occurred_at,
                }
                .into()])
            }
            AgentCommand::EraseAgentPersonalData(c) => {
                let s = self.registered(&c.agent_id)?;
                if s.erased {
                    return Err(AgentError::AlreadyErased {
                        id: c.agent_id.clone(),
                    });
                }
                Ok(vec![AgentPersonalDataErased {
                    agent_id: c.agent_id.clone(),
                    reason: c.reason.clone(),
                    occurred_at: c.occurred_at,
                }
                .into()])
            }
        }
    }

    fn apply(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::AgentRegistered(e) => {
                self.state = Some(State {
                    id: e.agent_id.clone(),
                    assignment: None,
                    erased: false,
                });
            }
            AgentEvent::RepAssigned(e) => {
                if let Some(s) = self.state.as_mut() {
                    s.assignment = Some((e.team.clone(), e.region.clone(), e.manager.clone()));
                }
            }
            AgentEvent::AgentPersonalDataErased(_) => {
                if let Some(s) = self.state.as_mut() {
                    s.erased = true;
                }
            }
        }
    }
}
