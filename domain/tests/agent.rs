//! Agent rules, given/when/then.

mod common;

use common::*;
use crm_domain::aggregates::agent::*;
use crm_domain::personal::PersonalData;
use crm_domain::DomainEvent;

fn register_cmd(name: &str) -> RegisterAgent {
    RegisterAgent {
        agent_id: id("a-1"),
        personal: Some(PersonalData {
            full_name: Some(name.to_owned()),
            email: None,
            phone: None,
        }),
        occurred_at: day(1),
    }
}

fn registered() -> AgentEvent {
    let c = register_cmd("Anna Snelling");
    AgentRegistered {
        agent_id: c.agent_id,
        personal: c.personal,
        occurred_at: c.occurred_at,
    }
    .into()
}

fn assign_cmd(team: &str, manager: &str) -> AssignRep {
    AssignRep {
        agent_id: id("a-1"),
        team: id(team),
        region: label("Central"),
        manager: Some(id(manager)),
        occurred_at: day(2),
    }
}

fn assigned(team: &str, manager: &str) -> AgentEvent {
    let c = assign_cmd(team, manager);
    RepAssigned {
        agent_id: c.agent_id,
        team: c.team,
        region: c.region,
        manager: c.manager,
        occurred_at: c.occurred_at,
    }
    .into()
}

#[test]
fn registering_records_the_agent_with_personal_data_apart() {
    given_nothing::<Agent>()
        .when(register_cmd("Anna Snelling"))
        .then(vec![registered()]);
    assert!(DomainEvent::from(registered()).carries_personal_data());
}

#[test]
fn an_agent_is_registered_once() {
    given::<Agent>(vec![registered()])
        .when(register_cmd("Anna Snelling"))
        .then_err(|e| matches!(e, AgentError::AlreadyExists { .. }));
}

#[test]
fn invalid_personal_data_is_refused() {
    given_nothing::<Agent>()
        .when(register_cmd(" "))
        .then_err(|e| matches!(e, AgentError::PersonalData { .. }));
}

#[test]
fn only_a_registered_agent_can_be_assigned() {
    given_nothing::<Agent>()
        .when(assign_cmd("central", "m-1"))
        .then_err(|e| matches!(e, AgentError::NotFound { .. }));
    let state = given::<Agent>(vec![registered()])
        .when(assign_cmd("central", "m-1"))
        .then(vec![assigned("central", "m-1")]);
    assert_eq!(state.team().map(|t| t.as_str()), Some("central"));
}

#[test]
fn an_assignment_must_change_something() {
    given::<Agent>(vec![registered(), assigned("central", "m-1")])
        .when(assign_cmd("central", "m-1"))
        .then_err(|e| matches!(e, AgentError::Unchanged { .. }));
    given::<Agent>(vec![registered(), assigned("central", "m-1")])
        .when(assign_cmd("central", "m-2"))
        .then(vec![assigned("central", "m-2")]);
}

#[test]
fn an_agent_is_not_their_own_manager() {
    given::<Agent>(vec![registered()])
        .when(assign_cmd("central", "a-1"))
        .then_err(|e| matches!(e, AgentError::OwnManager { .. }));
}

fn erase_cmd() -> EraseAgentPersonalData {
    EraseAgentPersonalData {
        agent_id: id("a-1"),
        reason: label("left the company, asked for erasure"),
        occurred_at: day(3),
    }
}

#[test]
fn erasing_an_agent_records_the_erasure_once_and_keeps_assignments() {
    let c = erase_cmd();
    let erased: AgentEvent = AgentPersonalDataErased {
        agent_id: c.agent_id.clone(),
        reason: c.reason.clone(),
        occurred_at: c.occurred_at,
    }
    .into();
    given::<Agent>(vec![registered(), assigned("central", "m-1")])
        .when(erase_cmd())
        .then(vec![erased.clone()]);
    assert!(!DomainEvent::from(erased.clone()).carries_personal_data());
    assert!(crm_domain::is_erasure("AgentPersonalDataErased"));
    given::<Agent>(vec![registered(), erased.clone()])
        .when(erase_cmd())
        .then_err(|e| matches!(e, AgentError::AlreadyErased { .. }));
    given_nothing::<Agent>()
        .when(erase_cmd())
        .then_err(|e| matches!(e, AgentError::NotFound { .. }));
    let state = given::<Agent>(vec![registered(), erased])
        .when(assign_cmd("east", "m-2"))
        .then(vec![assigned("east", "m-2")]);
    assert_eq!(state.team().map(|t| t.as_str()), Some("east"));
}
