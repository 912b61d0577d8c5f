//! Interaction rules, given/when/then.

mod common;

use common::*;
use crm_domain::aggregates::interaction::*;
use crm_domain::values::{Channel, InteractionId};

fn iid() -> InteractionId {
    id("call-77")
}

fn call() -> LogInteraction {
    LogInteraction {
        interaction_id: iid(),
        account: Some(id("A-1")),
        contact: Some(id("C-1")),
        lead: None,
        channel: Channel::Phone,
        direction: Direction::Inbound,
        purpose: Purpose::Service,
        duration_s: 420,
        hold_s: 60,
        wrap_s: 90,
        agent: Some(id("agent-5")),
        outcome: InteractionOutcome::Connected,
        call_id: Some(label("PBX-123")),
        opportunity: None,
        case: Some(id("case-1")),
        campaign: None,
        is_test: false,
        occurred_at: day(1),
    }
}

fn logged(c: &LogInteraction) -> InteractionEvent {
    InteractionLogged {
        interaction_id: c.interaction_id.clone(),
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
    .into()
}

#[test]
fn logging_records_the_interaction() {
    let state = given_nothing::<Interaction>()
        .when(call())
        .then(vec![logged(&call())]);
    assert!(state.is_logged());
}

#[test]
fn logging_twice_is_an_error() {
    given::<Interaction>(vec![logged(&call())])
        .when(call())
        .then_err(|e| matches!(e, InteractionError::AlreadyExists { .. }));
}

#[test]
fn hold_time_is_part_of_the_duration() {
    let mut c = call();
    c.hold_s = 421;
    given_nothing::<Interaction>()
        .when(c)
        .then_err(|e| matches!(e, InteractionError::HoldExceedsDuration { .. }));
}

#[test]
fn durations_are_capped_at_a_day() {
    let mut c = call();
    c.wrap_s = DURATION_MAX_S + 1;
    let msg = given_nothing::<Interaction>().when(c).then_err(|e| {
        matches!(
            e,
            InteractionError::TooLong {
                what: "wrap time",
                ..
            }
        )
    });
    assert!(msg.contains("seconds"), "{msg}");
}

#[test]
fn the_outcome_must_fit_the_channel() {
    let mut voicemail_email = call();
    voicemail_email.channel = Channel::Email;
    voicemail_email.outcome = InteractionOutcome::Voicemail;
    voicemail_email.hold_s = 0;
    given_nothing::<Interaction>()
        .when(voicemail_email)
        .then_err(|e| matches!(e, InteractionError::OutcomeChannelMismatch { .. }));

    let mut bounced_email = call();
    bounced_email.channel = Channel::Email;
    bounced_email.direction = Direction::Outbound;
    bounced_email.outcome = InteractionOutcome::Bounced;
    bounced_email.duration_s = 0;
    bounced_email.hold_s = 0;
    bounced_email.wrap_s = 0;
    given_nothing::<Interaction>()
        .when(bounced_email.clone())
        .then(vec![logged(&bounced_email)]);
}

#[test]
fn only_inbound_contacts_can_be_abandoned() {
    let mut c = call();
    c.outcome = InteractionOutcome::Abandoned;
    c.direction = Direction::Outbound;
    given_nothing::<Interaction>()
        .when(c.clone())
        .then_err(|e| matches!(e, InteractionError::AbandonedOutbound { .. }));
    c.direction = Direction::Inbound;
    given_nothing::<Interaction>().when(c).then_ok();
}
