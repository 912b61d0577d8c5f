//! Lead rules, given/when/then.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use crm_domain::aggregates::lead::*;
use crm_domain::personal::{PersonalData, PersonalDataError};
use crm_domain::values::{Channel, LeadId, LeadScore};

fn lid() -> LeadId {
    id("L-1")
}

fn person() -> PersonalData {
    PersonalData {
        full_name: Some("Ada Lovelace".into()),
        email: Some("ada@example.org".into()),
        phone: None,
    }
}

fn capture_cmd() -> CaptureLead {
    CaptureLead {
        lead_id: lid(),
        source: label("Web form"),
        channel: Channel::Web,
        campaign: Some(id("spring-2024")),
        product: None,
        industry: Some(label("Retail")),
        region: Some(label("EMEA")),
        referred_by: None,
        personal: person(),
        is_test: false,
        occurred_at: day(1),
    }
}

fn captured() -> LeadEvent {
    let c = capture_cmd();
    LeadCaptured {
        lead_id: c.lead_id,
        source: c.source,
        channel: c.channel,
        campaign: c.campaign,
        product: c.product,
        industry: c.industry,
        region: c.region,
        referred_by: c.referred_by,
        personal: Some(c.personal),
        is_test: c.is_test,
        occurred_at: c.occurred_at,
    }
    .into()
}

fn qualify_cmd(d: u32) -> QualifyLead {
    QualifyLead {
        lead_id: lid(),
        budget: true,
        authority: true,
        need: true,
        timeline: false,
        score: Some(72),
        occurred_at: day(d),
    }
}

fn qualified(d: u32) -> LeadEvent {
    LeadQualified {
        lead_id: lid(),
        budget: true,
        authority: true,
        need: true,
        timeline: false,
        score: Some(LeadScore::new(72).unwrap()),
        occurred_at: day(d),
    }
    .into()
}

fn disqualified(d: u32) -> LeadEvent {
    LeadDisqualified {
        lead_id: lid(),
        reason: DisqualificationReason::NoFit,
        occurred_at: day(d),
    }
    .into()
}

fn recycled(d: u32) -> LeadEvent {
    LeadRecycled {
        lead_id: lid(),
        reason: label("budget next year"),
        occurred_at: day(d),
    }
    .into()
}

fn convert_cmd(d: u32) -> ConvertLead {
    ConvertLead {
        lead_id: lid(),
        account_id: id("A-1"),
        contact_id: id("C-1"),
        opportunity_id: Some(id("O-1")),
        occurred_at: day(d),
    }
}

fn converted(d: u32) -> LeadEvent {
    LeadConverted {
        lead_id: lid(),
        account_id: id("A-1"),
        contact_id: id("C-1"),
        opportunity_id: Some(id("O-1")),
        occurred_at: day(d),
    }
    .into()
}

fn erase_cmd(d: u32) -> EraseLeadPersonalData {
    EraseLeadPersonalData {
        lead_id: lid(),
        reason: label("GDPR art. 17 request"),
        occurred_at: day(d),
    }
}

#[test]
fn capturing_records_the_lead_in_nurture() {
    let state = given_nothing::<Lead>()
        .when(capture_cmd())
        .then(vec![captured()]);
    assert_eq!(state.status(), Some(LeadStatus::Nurture));
}

#[test]
fn capturing_twice_is_an_error() {
    given::<Lead>(vec![captured()])
        .when(capture_cmd())
        .then_err(|e| matches!(e, LeadError::AlreadyExists { .. }));
}

#[test]
fn commands_on_a_missing_lead_are_errors() {
    given_nothing::<Lead>()
        .when(qualify_cmd(2))
        .then_err(|e| matches!(e, LeadError::NotFound { .. }));
}

#[test]
fn invalid_personal_data_is_refused() {
    let mut cmd = capture_cmd();
    cmd.personal.email = Some("not-an-email".into());
    given_nothing::<Lead>().when(cmd).then_err(|e| {
        matches!(
            e,
            LeadError::PersonalData {
                source: PersonalDataError::InvalidEmail,
                ..
            }
        )
    });
}

#[test]
fn a_lead_in_nurture_cannot_convert() {
    let msg = given::<Lead>(vec![captured()])
        .when(convert_cmd(3))
        .then_err(|e| matches!(e, LeadError::NotQualified { .. }));
    assert!(msg.contains("QualifyLead"), "{msg}");
}

#[test]
fn a_qualified_lead_converts() {
    let state = given::<Lead>(vec![captured(), qualified(2)])
        .when(convert_cmd(3))
        .then(vec![converted(3)]);
    assert_eq!(state.status(), Some(LeadStatus::Converted { at: day(3) }));
}

#[test]
fn a_disqualified_lead_cannot_convert() {
    let msg = given::<Lead>(vec![captured(), qualified(2), disqualified(3)])
        .when(convert_cmd(4))
        .then_err(|e| matches!(e, LeadError::Disqualified { .. }));
    assert!(msg.contains("RecycleLead"), "{msg}");
}

#[test]
fn a_recycled_lead_must_be_qualified_again_before_converting() {
    given::<Lead>(vec![captured(), qualified(2), recycled(3)])
        .when(convert_cmd(4))
        .then_err(|e| matches!(e, LeadError::NotQualified { .. }));
    given::<Lead>(vec![captured(), qualified(2), recycled(3), qualified(4)])
        .when(convert_cmd(5))
        .then(vec![converted(5)]);
}

#[test]
fn a_disqualified_lead_must_be_recycled_before_qualifying() {
    given::<Lead>(vec![captured(), disqualified(2)])
        .when(qualify_cmd(3))
        .then_err(|e| matches!(e, LeadError::Disqualified { .. }));
    given::<Lead>(vec![captured(), disqualified(2), recycled(3)])
        .when(qualify_cmd(4))
        .then(vec![qualified(4)]);
}

#[test]
fn qualifying_twice_is_refused() {
    given::<Lead>(vec![captured(), qualified(2)])
        .when(qualify_cmd(3))
        .then_err(|e| matches!(e, LeadError::AlreadyQualified { .. }));
}

#[test]
fn recycling_a_lead_in_nurture_is_refused() {
    given::<Lead>(vec![captured()])
        .when(RecycleLead {
            lead_id: lid(),
            reason: label("x"),
            occurred_at: day(2),
        })
        .then_err(|e| matches!(e, LeadError::AlreadyInNurture { .. }));
}

#[test]
fn disqualifying_twice_is_refused() {
    given::<Lead>(vec![captured(), disqualified(2)])
        .when(DisqualifyLead {
            lead_id: lid(),
            reason: DisqualificationReason::Spam,
            occurred_at: day(3),
        })
        .then_err(|e| matches!(e, LeadError::AlreadyDisqualified { .. }));
}

#[test]
fn a_converted_lead_is_final() {
    given::<Lead>(vec![captured(), qualified(2), converted(3)])
        .when(DisqualifyLead {
            lead_id: lid(),
            reason: DisqualificationReason::Duplicate,
            occurred_at: day(4),
        })
        .then_err(|e| matches!(e, LeadError::Converted { .. }));
    given::<Lead>(vec![captured(), qualified(2), converted(3)])
        .when(convert_cmd(4))
        .then_err(|e| matches!(e, LeadError::Converted { .. }));
}

#[test]
fn lead_scores_are_within_0_to_100() {
    let cmd = |score| ScoreLead {
        lead_id: lid(),
        score,
        model_version: label("v3"),
        occurred_at: day(2),
    };
    given::<Lead>(vec![captured()]).when(cmd(100)).then_ok();
    given::<Lead>(vec![captured()])
        .when(cmd(101))
        .then_err(|e| matches!(e, LeadError::Score { .. }));
}

#[test]
fn personal_data_is_erased_once_in_any_state() {
    let erased: LeadEvent = LeadPersonalDataErased {
        lead_id: lid(),
        reason: label("GDPR art. 17 request"),
        occurred_at: day(5),
    }
    .into();
    let state = given::<Lead>(vec![captured(), qualified(2), converted(3)])
        .when(erase_cmd(5))
        .then(vec![erased.clone()]);
    assert!(state.is_erased());
    given::<Lead>(vec![captured(), erased])
        .when(erase_cmd(6))
        .then_err(|e| matches!(e, LeadError::AlreadyErased { .. }));
}

#[test]
fn personal_data_sits_in_its_own_field() {
    let payload = crm_domain::DomainEvent::from(captured())
        .to_payload()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(json["personal"]["email"], "ada@example.org");
    let text = String::from_utf8(payload).unwrap();
    assert_eq!(text.matches("ada@example.org").count(), 1);
    assert_eq!(text.matches("Ada Lovelace").count(), 1);
}
