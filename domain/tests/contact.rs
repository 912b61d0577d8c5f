//! Contact rules (incl. personal-data erasure), given/when/then.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use crm_domain::aggregates::contact::*;
use crm_domain::personal::PersonalData;
use crm_domain::values::{Channel, ContactId};
use crm_domain::{DomainEvent, PERSONAL_DATA_FIELD};

fn cid() -> ContactId {
    id("C-9")
}

fn person() -> PersonalData {
    PersonalData {
        full_name: Some("Grace Hopper".into()),
        email: Some("grace@example.org".into()),
        phone: Some("+1 555 0100".into()),
    }
}

fn add_cmd() -> AddContact {
    AddContact {
        contact_id: cid(),
        account_id: id("A-1"),
        role: label("Champion"),
        personal: person(),
        is_test: false,
        occurred_at: day(1),
    }
}

fn added() -> ContactEvent {
    ContactAdded {
        contact_id: cid(),
        account_id: id("A-1"),
        role: label("Champion"),
        personal: Some(person()),
        is_test: false,
        occurred_at: day(1),
    }
    .into()
}

fn erased(d: u32) -> ContactEvent {
    ContactPersonalDataErased {
        contact_id: cid(),
        reason: label("erasure request"),
        occurred_at: day(d),
    }
    .into()
}

fn erase_cmd(d: u32) -> EraseContactPersonalData {
    EraseContactPersonalData {
        contact_id: cid(),
        reason: label("erasure request"),
        occurred_at: day(d),
    }
}

fn opt_out(channel: Channel, d: u32) -> OptOutContact {
    OptOutContact {
        contact_id: cid(),
        channel,
        occurred_at: day(d),
    }
}

#[test]
fn adding_records_personal_data_apart_from_other_facts() {
    given_nothing::<Contact>()
        .when(add_cmd())
        .then(vec![added()]);
    let payload = DomainEvent::from(added()).to_payload().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    let obj = json.as_object().unwrap();
    assert_eq!(obj[PERSONAL_DATA_FIELD]["full_name"], "Grace Hopper");
    assert_eq!(obj["account_id"], "A-1");
    assert_eq!(obj["role"], "Champion");
    // Nothing personal outside the `personal` field.
    for (key, value) in obj {
        if key != PERSONAL_DATA_FIELD {
            let text = value.to_string();
            assert!(
                !text.contains("grace@") && !text.contains("Hopper"),
                "{key}"
            );
        }
    }
    assert!(DomainEvent::from(added()).carries_personal_data());
}

#[test]
fn adding_twice_is_an_error() {
    given::<Contact>(vec![added()])
        .when(add_cmd())
        .then_err(|e| matches!(e, ContactError::AlreadyExists { .. }));
}

#[test]
fn commands_on_a_missing_contact_are_errors() {
    given_nothing::<Contact>()
        .when(erase_cmd(2))
        .then_err(|e| matches!(e, ContactError::NotFound { .. }));
}

#[test]
fn erasure_is_recorded_once() {
    let state = given::<Contact>(vec![added()])
        .when(erase_cmd(2))
        .then(vec![erased(2)]);
    assert!(state.is_erased());
    given::<Contact>(vec![added(), erased(2)])
        .when(erase_cmd(3))
        .then_err(|e| matches!(e, ContactError::Erased { .. }));
}

#[test]
fn an_erased_contact_accepts_no_new_personal_data() {
    let msg = given::<Contact>(vec![added(), erased(2)])
        .when(ChangeContactPersonalData {
            contact_id: cid(),
            personal: person(),
            occurred_at: day(3),
        })
        .then_err(|e| matches!(e, ContactError::Erased { .. }));
    assert!(msg.contains("add a new contact"), "{msg}");
}

#[test]
fn an_erased_contact_still_records_non_personal_facts() {
    given::<Contact>(vec![added(), erased(2)])
        .when(opt_out(Channel::Email, 3))
        .then_ok();
    given::<Contact>(vec![added(), erased(2)])
        .when(RecordContactDeparture {
            contact_id: cid(),
            occurred_at: day(3),
        })
        .then_ok();
}

#[test]
fn a_shredded_payload_still_decodes() {
    // After crypto-shredding the store hands back `personal: null`.
    let payload = br#"{"contact_id":"C-9","account_id":"A-1","role":"Champion","personal":null,"is_test":false,"occurred_at":"2024-03-01T10:00:00Z"}"#;
    let event = DomainEvent::from_payload("ContactAdded", 1, payload).unwrap();
    let ContactEvent::ContactAdded(added) = ContactEvent::try_from(event).unwrap() else {
        panic!("wrong event");
    };
    assert_eq!(added.personal, None);
}

#[test]
fn personal_data_changes_are_validated() {
    let mut bad = person();
    bad.phone = Some("call me maybe".into());
    given::<Contact>(vec![added()])
        .when(ChangeContactPersonalData {
            contact_id: cid(),
            personal: bad,
            occurred_at: day(3),
        })
        .then_err(|e| matches!(e, ContactError::PersonalData { .. }));
}

#[test]
fn a_contact_leaves_once_with_its_account_and_role() {
    let left: ContactEvent = ContactLeft {
        contact_id: cid(),
        account_id: id("A-1"),
        role: label("Champion"),
        occurred_at: day(4),
    }
    .into();
    let leave = || RecordContactDeparture {
        contact_id: cid(),
        occurred_at: day(4),
    };
    given::<Contact>(vec![added()])
        .when(leave())
        .then(vec![left.clone()]);
    given::<Contact>(vec![added(), left])
        .when(leave())
        .then_err(|e| matches!(e, ContactError::AlreadyLeft { .. }));
}

#[test]
fn opting_out_of_the_same_channel_twice_is_refused() {
    let opted: ContactEvent = ContactOptedOut {
        contact_id: cid(),
        channel: Channel::Sms,
        occurred_at: day(2),
    }
    .into();
    let state = given::<Contact>(vec![added()])
        .when(opt_out(Channel::Sms, 2))
        .then(vec![opted.clone()]);
    assert_eq!(state.opted_out(), &[Channel::Sms]);
    given::<Contact>(vec![added(), opted.clone()])
        .when(opt_out(Channel::Sms, 3))
        .then_err(|e| matches!(e, ContactError::AlreadyOptedOut { .. }));
    given::<Contact>(vec![added(), opted])
        .when(opt_out(Channel::Email, 3))
        .then_ok();
}
