//! The aggregate registry: one list, every name it gives is one the domain knows, and the
//! type-erased handle decides and folds exactly like the typed aggregate.
#![allow(clippy::unwrap_used)] // test helpers

use crm_domain::aggregates::{Account, AccountCommand, AccountEvent};
use crm_domain::registry::DecideError;
use crm_domain::{Aggregate, DomainEvent, Registry, EVENT_CATALOG};
use serde_json::{json, Map, Value};

fn fields(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

#[test]
fn the_builtin_registry_lists_every_category_of_the_event_catalog_once() {
    let registry = Registry::builtin();
    let categories = registry.categories();
    let catalog: Vec<&str> = EVENT_CATALOG.iter().map(|(c, _)| *c).collect();
    assert_eq!(categories, catalog);
    for (category, types) in EVENT_CATALOG {
        let kind = registry.get(category).unwrap();
        assert_eq!(kind.event_types(), *types, "{category}");
        assert!(!kind.command_types().is_empty(), "{category}");
    }
    assert!(registry.get("nosuch").is_none());
}

#[test]
fn every_listed_command_name_is_a_command_serde_knows() {
    for kind in Registry::builtin().kinds() {
        for name in kind.command_types() {
            // No fields: the name must be known, so the error is about a missing field.
            let err = kind.parse_command(name, Map::new()).unwrap_err();
            assert!(
                err.to_string().contains("missing field"),
                "{}/{name}: {err}",
                kind.category()
            );
        }
        let err = kind.parse_command("NoSuchCommand", Map::new()).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }
}

#[test]
fn the_erased_handle_decides_and_folds_like_the_typed_aggregate() {
    let kind = Registry::builtin().get("account").unwrap();
    let open = fields(json!({
        "account_id": "acme", "name": "Acme", "segment": "smb", "region": "East",
        "owner": "agent-1", "is_internal": false, "is_test": false,
        "occurred_at": "2026-01-01T00:00:00Z",
    }));
    let command = kind.parse_command("OpenAccount", open.clone()).unwrap();
    assert_eq!(
        (command.command_type(), command.target()),
        ("OpenAccount", "acme")
    );

    let mut state = kind.new_state();
    let decided = state.decide(command.as_ref()).unwrap();
    // The typed aggregate decides the same events.
    let typed: AccountCommand =
        serde_json::from_value(json!({ "OpenAccount": Value::Object(open) })).unwrap();
    let expected: Vec<_> = Account::default()
        .handle(&typed)
        .unwrap()
        .into_iter()
        .map(|e| DomainEvent::from(e).encode().unwrap())
        .collect();
    assert_eq!(decided, expected);

    // Deciding did not change the state; folding the stored events does.
    assert_eq!(state.decide(command.as_ref()).unwrap(), expected);
    for e in &decided {
        state
            .fold(e.event_type, e.schema_version, &e.payload)
            .unwrap();
    }
    let again = state.decide(command.as_ref()).unwrap_err();
    assert!(matches!(again, DecideError::Rejected(_)), "{again}");

    // A command of another aggregate is refused, not misapplied.
    let case = Registry::builtin().get("case").unwrap();
    let err = case.new_state().decide(command.as_ref()).unwrap_err();
    assert!(matches!(err, DecideError::WrongAggregate { .. }), "{err}");
    // An event of another aggregate does not fold.
    let event = &decided[0];
    assert!(case
        .new_state()
        .fold(event.event_type, event.schema_version, &event.payload)
        .is_err());
    assert_eq!(AccountEvent::CATEGORY, kind.category());
}

#[test]
fn a_field_the_command_lacks_is_refused_with_the_nearest_real_one() {
    let kind = Registry::builtin().get("account").unwrap();
    let mut open = fields(json!({
        "account_id": "acme", "name": "Acme", "segment": "smb", "region": "East",
        "owner": "agent-1", "is_internal": false, "is_test": false,
        "occurred_at": "2026-01-01T00:00:00Z",
    }));
    assert!(kind.parse_command("OpenAccount", open.clone()).is_ok());
    open.insert("industy".into(), json!("Retail"));
    let err = kind.parse_command("OpenAccount", open.clone()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("unknown field `industy`"), "{text}");
    assert!(text.contains("did you mean `industry`?"), "{text}");
    // A name far from every field gets no suggestion, but the list of fields.
    open.remove("industy");
    open.insert("zzzzzzzz".into(), json!(1));
    let text = kind
        .parse_command("OpenAccount", open)
        .unwrap_err()
        .to_string();
    assert!(!text.contains("did you mean"), "{text}");
    assert!(text.contains("account_id"), "{text}");
}

#[test]
fn every_event_type_has_a_payload_schema_naming_its_fields() {
    let mut generator = schemars::SchemaGenerator::default();
    let schemas = crm_domain::DomainEvent::event_schemas(&mut generator);
    let catalog: Vec<&str> = crm_domain::DomainEvent::catalog()
        .map(|(_, t, _)| t)
        .collect();
    assert_eq!(schemas.iter().map(|(t, _)| *t).collect::<Vec<_>>(), catalog);
    let fields = crm_domain::DomainEvent::payload_fields("OpportunityWon").unwrap();
    assert!(fields.iter().any(|f| f == "opportunity_id"), "{fields:?}");
    assert!(fields.iter().any(|f| f == "occurred_at"), "{fields:?}");
    let lead = crm_domain::DomainEvent::payload_fields("LeadCaptured").unwrap();
    assert!(lead.iter().any(|f| f == "source") && lead.iter().any(|f| f == "personal"));
    assert_eq!(crm_domain::DomainEvent::payload_fields("NoSuchEvent"), None);
}

#[test]
fn attributes_ride_on_any_command_and_change_by_their_own_command() {
    let kind = Registry::builtin().get("account").unwrap();
    let mut open = fields(json!({
        "account_id": "acme", "name": "Acme", "segment": "smb", "region": "East",
        "owner": "agent-1", "is_internal": false, "is_test": false,
        "occurred_at": "2026-01-01T00:00:00Z",
    }));
    open.insert(
        "attributes".into(),
        json!({"industry_code": "C25", "employees": 120, "listed": false}),
    );
    let mut state = kind.new_state();
    // Attributes of an instance that does not exist are refused.
    let early = kind
        .parse_command(
            "SetAttributes",
            fields(json!({"id": "acme", "attributes": {"tier": "gold"},
                          "occurred_at": "2026-01-02T00:00:00Z"})),
        )
        .unwrap();
    let err = state.decide(early.as_ref()).unwrap_err();
    assert!(
        err.to_string().contains("account-acme` does not exist"),
        "{err}"
    );

    let command = kind.parse_command("OpenAccount", open).unwrap();
    let decided = state.execute(command.as_ref()).unwrap();
    let types: Vec<&str> = decided.iter().map(|e| e.event_type).collect();
    assert_eq!(types, ["AccountOpened", "AttributesSet"]);
    let set: Value = serde_json::from_slice(&decided[1].payload).unwrap();
    assert_eq!(
        set,
        json!({"attributes": {"employees": 120, "industry_code": "C25", "listed": false},
               "occurred_at": "2026-01-01T00:00:00Z"})
    );
    assert_eq!(decided[1].stream_id, "account-acme");

    // Only what changes is recorded; the same values record nothing.
    let change = |attrs: Value| {
        kind.parse_command(
            "SetAttributes",
            fields(json!({"id": "acme", "attributes": attrs,
                          "occurred_at": "2026-02-01T00:00:00Z"})),
        )
        .unwrap()
    };
    assert!(state
        .decide(change(json!({"employees": 120})).as_ref())
        .unwrap()
        .is_empty());
    let decided = state
        .execute(change(json!({"employees": 130, "listed": null, "tier": "gold"})).as_ref())
        .unwrap();
    let set: Value = serde_json::from_slice(&decided[0].payload).unwrap();
    assert_eq!(
        set["attributes"],
        json!({"employees": 130, "listed": null, "tier": "gold"})
    );

    // A stream with attributes folds like any other.
    let mut folded = kind.new_state();
    for e in state
        .clone_state()
        .decide(change(json!({"tier": "silver"})).as_ref())
        .unwrap()
    {
        folded
            .fold(e.event_type, e.schema_version, &e.payload)
            .unwrap();
    }
    // Bad names and shapes are refused with the rule.
    let err = kind
        .parse_command(
            "SetAttributes",
            fields(json!({"id": "acme", "attributes": {"Tier": 1},
                          "occurred_at": "2026-02-01T00:00:00Z"})),
        )
        .unwrap_err();
    assert!(err.to_string().contains("lower_snake_case"), "{err}");
    let mut bad = fields(json!({"account_id": "x", "name": "X", "segment": "smb",
        "region": "East", "owner": "a", "is_internal": false, "is_test": false,
        "occurred_at": "2026-01-01T00:00:00Z"}));
    bad.insert("attributes".into(), json!({"notes": {"nested": true}}));
    let err = kind.parse_command("OpenAccount", bad).unwrap_err();
    assert!(
        err.to_string().contains("`attributes` must be an object"),
        "{err}"
    );
    // Every command schema names the field.
    let mut generator = schemars::SchemaGenerator::default();
    for (name, schema) in kind.command_schemas(&mut generator) {
        assert!(
            schema
                .get("properties")
                .unwrap()
                .get("attributes")
                .is_some(),
            "{name}"
        );
    }
}
