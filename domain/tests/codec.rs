//! Codec, upcasting and event-catalog tests: golden payloads (incl. the OpportunityWon v1
//! upcast), decoding errors and type-name uniqueness. Property test: `codec_roundtrip.rs`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::*;
use crm_domain::aggregates::case::CasePriority;
use crm_domain::aggregates::opportunity::{Opportunity, OpportunityEvent, OpportunityWon};
use crm_domain::aggregates::CaseEvent;
use crm_domain::values::{Currency, Money};
use crm_domain::{Aggregate, CodecError, DomainEvent, UpcastError, EVENT_CATALOG};

// ---------------------------------------------------------------------------------------------
// Catalog

#[test]
fn every_event_type_name_is_unique() {
    let mut seen = HashSet::new();
    for (category, event_type, version) in DomainEvent::catalog() {
        assert!(seen.insert(event_type), "duplicate event type {event_type}");
        assert!(version >= 1, "{event_type} has version 0");
        assert_eq!(DomainEvent::category_of(event_type), Some(category));
        assert!(
            event_type
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase()),
            "{event_type} is not PascalCase"
        );
    }
    let listed: usize = EVENT_CATALOG.iter().map(|(_, types)| types.len()).sum();
    assert_eq!(seen.len(), listed);
    assert!(listed >= 50, "only {listed} event types");
}

#[test]
fn every_category_is_unique_and_matches_its_aggregate() {
    let categories: Vec<_> = EVENT_CATALOG.iter().map(|(c, _)| *c).collect();
    let unique: HashSet<_> = categories.iter().collect();
    assert_eq!(unique.len(), categories.len());
    assert_eq!(categories.len(), 12);
    assert_eq!(Opportunity::CATEGORY, "opportunity");
    assert_eq!(OpportunityEvent::CATEGORY, Opportunity::CATEGORY);
}

#[test]
fn opportunity_won_is_at_schema_version_2() {
    assert_eq!(OpportunityWon::SCHEMA_VERSION, 2);
    assert_eq!(
        DomainEvent::current_schema_version("OpportunityWon"),
        Some(2)
    );
    assert_eq!(DomainEvent::current_schema_version("CaseOpened"), Some(1));
    assert_eq!(DomainEvent::current_schema_version("Nope"), None);
}

// ---------------------------------------------------------------------------------------------
// Metadata

fn won_event() -> DomainEvent {
    OpportunityEvent::from(OpportunityWon {
        opportunity_id: id("42"),
        amount: eur(123_450),
        list_price: Some(eur(150_000)),
        discount: Some(eur(26_550)),
        competitor: None,
        occurred_at: day(1),
    })
    .into()
}

#[test]
fn envelope_metadata() {
    let e = won_event();
    assert_eq!(e.event_type(), "OpportunityWon");
    assert_eq!(e.schema_version(), 2);
    assert_eq!(e.category(), "opportunity");
    assert_eq!(e.aggregate_id(), "42");
    assert_eq!(e.stream_id(), "opportunity-42");
    assert_eq!(e.occurred_at(), day(1));
    assert!(!e.carries_personal_data());
    let encoded = e.encode().unwrap();
    assert_eq!(encoded.stream_id, "opportunity-42");
    assert_eq!(encoded.event_type, "OpportunityWon");
    assert_eq!(encoded.schema_version, 2);
    assert_eq!(encoded.payload, e.to_payload().unwrap());
}

#[test]
fn converting_to_the_wrong_aggregate_event_is_an_error() {
    let err = CaseEvent::try_from(won_event()).unwrap_err();
    assert_eq!(err.expected, "case");
    assert_eq!(err.found, "opportunity");
    assert!(OpportunityEvent::try_from(won_event()).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Golden payloads

#[test]
fn current_payload_is_pinned() {
    // The stored format of OpportunityWon v2. Changing this string means a new schema version.
    let golden = r#"{"opportunity_id":"42","amount":{"minor_units":123450,"currency":"EUR"},"list_price":{"minor_units":150000,"currency":"EUR"},"discount":{"minor_units":26550,"currency":"EUR"},"competitor":null,"occurred_at":"2024-03-01T10:00:00Z"}"#;
    let payload = won_event().to_payload().unwrap();
    assert_eq!(String::from_utf8(payload).unwrap(), golden);
    assert_eq!(
        DomainEvent::from_payload("OpportunityWon", 2, golden.as_bytes()).unwrap(),
        won_event()
    );
}

#[test]
fn opportunity_won_v1_is_upcast_to_money() {
    let v1 = br#"{"opportunity_id":"42","amount":1234.5,"currency":"EUR","competitor":"Acme","occurred_at":"2024-03-01T10:00:00Z"}"#;
    let event = DomainEvent::from_payload("OpportunityWon", 1, v1).unwrap();
    let expected: DomainEvent = OpportunityEvent::from(OpportunityWon {
        opportunity_id: id("42"),
        amount: eur(123_450),
        list_price: None,
        discount: None,
        competitor: Some(label("Acme")),
        occurred_at: day(1),
    })
    .into();
    assert_eq!(event, expected);
    assert_eq!(event.schema_version(), 2);
}

#[test]
fn opportunity_won_v1_respects_the_currency_exponent() {
    let jpy = br#"{"opportunity_id":"7","amount":150000,"currency":"JPY","competitor":null,"occurred_at":"2024-03-01T10:00:00Z"}"#;
    let DomainEvent::Opportunity(OpportunityEvent::OpportunityWon(won)) =
        DomainEvent::from_payload("OpportunityWon", 1, jpy).unwrap()
    else {
        panic!("wrong event");
    };
    assert_eq!(won.amount, Money::new(150_000, Currency::JPY));

    let kwd = br#"{"opportunity_id":"8","amount":12.345,"currency":"KWD","competitor":null,"occurred_at":"2024-03-01T10:00:00Z"}"#;
    let DomainEvent::Opportunity(OpportunityEvent::OpportunityWon(won)) =
        DomainEvent::from_payload("OpportunityWon", 1, kwd).unwrap()
    else {
        panic!("wrong event");
    };
    assert_eq!(won.amount.minor_units, 12_345);
}

#[test]
fn opportunity_won_v1_with_sub_cent_amount_is_refused_not_rounded() {
    let v1 = br#"{"opportunity_id":"42","amount":12.345,"currency":"EUR","competitor":null,"occurred_at":"2024-03-01T10:00:00Z"}"#;
    let err = DomainEvent::from_payload("OpportunityWon", 1, v1).unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::Upcast(UpcastError::StepFailed {
                from_version: 1,
                ..
            })
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Decoding errors

#[test]
fn decoding_errors_are_explicit() {
    let payload = won_event().to_payload().unwrap();
    assert!(matches!(
        DomainEvent::from_payload("OpportunityWonn", 2, &payload),
        Err(CodecError::Upcast(UpcastError::UnknownEventType { .. }))
    ));
    let err = DomainEvent::from_payload("OpportunityWon", 3, &payload).unwrap_err();
    assert!(err.to_string().contains("upgrade crm-domain"), "{err}");
    assert!(matches!(
        DomainEvent::from_payload("OpportunityWon", 2, b"{not json"),
        Err(CodecError::InvalidJson { .. })
    ));
    // A v2 payload labelled v1 fails in the upcaster (no `currency` field at top level).
    assert!(matches!(
        DomainEvent::from_payload("OpportunityWon", 1, &payload),
        Err(CodecError::Upcast(UpcastError::StepFailed { .. }))
    ));
    // A v1 payload labelled v2 does not match the current struct.
    let v1 = br#"{"opportunity_id":"42","amount":1234.5,"currency":"EUR","competitor":null,"occurred_at":"2024-03-01T10:00:00Z"}"#;
    assert!(matches!(
        DomainEvent::from_payload("OpportunityWon", 2, v1),
        Err(CodecError::InvalidPayload { .. })
    ));
}

#[test]
fn unknown_fields_and_invalid_values_are_refused() {
    let extra = br#"{"case_id":"c1","account_id":null,"contact_id":null,"case_type":"Incident","category":null,"priority":"high","channel":"email","sla_policy":null,"is_complaint":false,"is_test":false,"occurred_at":"2024-03-01T10:00:00Z","surprise":1}"#;
    assert!(matches!(
        DomainEvent::from_payload("CaseOpened", 1, extra),
        Err(CodecError::InvalidPayload { .. })
    ));
    let bad_id = br#"{"case_id":"c 1","account_id":null,"contact_id":null,"case_type":"Incident","category":null,"priority":"high","channel":"email","sla_policy":null,"is_complaint":false,"is_test":false,"occurred_at":"2024-03-01T10:00:00Z"}"#;
    assert!(matches!(
        DomainEvent::from_payload("CaseOpened", 1, bad_id),
        Err(CodecError::InvalidPayload { .. })
    ));
    let good = br#"{"case_id":"c1","account_id":null,"contact_id":null,"case_type":"Incident","category":null,"priority":"high","channel":"email","sla_policy":null,"is_complaint":true,"is_test":false,"occurred_at":"2024-03-01T10:00:00Z"}"#;
    let DomainEvent::Case(CaseEvent::CaseOpened(opened)) =
        DomainEvent::from_payload("CaseOpened", 1, good).unwrap()
    else {
        panic!("wrong event");
    };
    assert!(opened.is_complaint);
    assert_eq!(opened.priority, CasePriority::High);
}
