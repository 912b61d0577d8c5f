//! Account rules, given/when/then.

mod common;

use common::*;
use crm_domain::aggregates::account::*;
use crm_domain::values::AccountId;

fn aid() -> AccountId {
    id("1C1I7A6R")
}

fn open_cmd() -> OpenAccount {
    OpenAccount {
        account_id: aid(),
        name: label("Acme Corp"),
        segment: label("SMB"),
        region: label("EMEA"),
        industry: Some(label("Manufacturing")),
        owner: id("rep-1"),
        is_internal: false,
        is_test: false,
        occurred_at: day(1),
    }
}

fn opened() -> AccountEvent {
    let c = open_cmd();
    AccountOpened {
        account_id: c.account_id,
        name: c.name,
        segment: c.segment,
        region: c.region,
        industry: c.industry,
        owner: c.owner,
        is_internal: c.is_internal,
        is_test: c.is_test,
        occurred_at: c.occurred_at,
    }
    .into()
}

#[test]
fn opening_records_the_account() {
    let state = given_nothing::<Account>()
        .when(open_cmd())
        .then(vec![opened()]);
    assert_eq!(state.owner(), Some(&id("rep-1")));
    assert!(!state.is_internal());
}

#[test]
fn opening_twice_is_an_error() {
    given::<Account>(vec![opened()])
        .when(open_cmd())
        .then_err(|e| matches!(e, AccountError::AlreadyExists { .. }));
}

#[test]
fn commands_on_a_missing_account_are_errors() {
    given_nothing::<Account>()
        .when(ChangeAccountOwner {
            account_id: aid(),
            to: id("rep-2"),
            occurred_at: day(2),
        })
        .then_err(|e| matches!(e, AccountError::NotFound { .. }));
}

#[test]
fn owner_changes_record_from_and_to() {
    given::<Account>(vec![opened()])
        .when(ChangeAccountOwner {
            account_id: aid(),
            to: id("rep-2"),
            occurred_at: day(2),
        })
        .then(vec![AccountOwnerChanged {
            account_id: aid(),
            from: id("rep-1"),
            to: id("rep-2"),
            occurred_at: day(2),
        }
        .into()]);
}

#[test]
fn an_owner_change_must_change_the_owner() {
    given::<Account>(vec![opened()])
        .when(ChangeAccountOwner {
            account_id: aid(),
            to: id("rep-1"),
            occurred_at: day(2),
        })
        .then_err(|e| matches!(e, AccountError::Unchanged { what: "owner", .. }));
}

#[test]
fn segment_changes_record_from_and_to_and_must_change() {
    let state = given::<Account>(vec![opened()])
        .when(ChangeAccountSegment {
            account_id: aid(),
            to: label("Enterprise"),
            occurred_at: day(2),
        })
        .then(vec![AccountSegmentChanged {
            account_id: aid(),
            from: label("SMB"),
            to: label("Enterprise"),
            occurred_at: day(2),
        }
        .into()]);
    assert_eq!(state.segment(), Some(&label("Enterprise")));
    given::<Account>(vec![opened()])
        .when(ChangeAccountSegment {
            account_id: aid(),
            to: label("SMB"),
            occurred_at: day(2),
        })
        .then_err(|e| {
            matches!(
                e,
                AccountError::Unchanged {
                    what: "segment",
                    ..
                }
            )
        });
}
