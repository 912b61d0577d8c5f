//! Given/when/then harness and small fixtures shared by the domain tests.
//!
//! ```ignore
//! given::<Opportunity>(vec![opened()]).when(win()).then(vec![won()]);
//! given::<Opportunity>(vec![opened(), lost()])
//!     .when(win())
//!     .then_err(|e| matches!(e, OpportunityError::WinAfterLoss { .. }));
//! ```
//! Every accepted event is also pushed through the codec (`to_payload` → `from_payload`) and
//! applied to the state, so each rule test doubles as a codec and fold test.

#![allow(dead_code)] // each test binary uses a subset

use std::fmt::Debug;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use crm_domain::values::{Currency, Label, Money};
use crm_domain::{replay, Aggregate, DomainEvent};

/// Past events of one aggregate instance.
pub struct Given<A: Aggregate> {
    state: A,
}

/// Result of handling one command.
pub struct When<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

/// Starts a scenario from the given history (oldest first).
pub fn given<A: Aggregate>(history: Vec<A::Event>) -> Given<A> {
    Given {
        state: replay(history.iter()),
    }
}

/// Starts a scenario for an aggregate that does not exist yet.
pub fn given_nothing<A: Aggregate>() -> Given<A> {
    Given {
        state: A::default(),
    }
}

impl<A: Aggregate> Given<A> {
    /// Handles `command` against the state built from the history.
    pub fn when(self, command: impl Into<A::Command>) -> When<A> {
        let result = self.state.handle(&command.into());
        When {
            state: self.state,
            result,
        }
    }
}

impl<A> When<A>
where
    A: Aggregate + Debug,
    A::Event: Clone + Debug + PartialEq + Into<DomainEvent>,
    A::Error: Debug,
{
    /// Asserts the command was accepted with exactly `expected`; returns the new state.
    pub fn then(self, expected: Vec<A::Event>) -> A {
        let events = match self.result {
            Ok(events) => events,
            Err(e) => panic!("expected events {expected:#?}\nbut the command was refused: {e}"),
        };
        assert_eq!(events, expected, "emitted events differ");
        let mut state = self.state;
        for event in &events {
            assert_codec_round_trip(event.clone().into());
            state.apply(event);
        }
        state
    }

    /// Asserts the command was accepted and returns the events for custom checks.
    pub fn then_ok(self) -> Vec<A::Event> {
        match self.result {
            Ok(events) => {
                for event in &events {
                    assert_codec_round_trip(event.clone().into());
                }
                events
            }
            Err(e) => panic!("expected the command to be accepted, but: {e}"),
        }
    }

    /// Asserts the command was refused with an error matching `check`; returns the message.
    pub fn then_err(self, check: impl FnOnce(&A::Error) -> bool) -> String {
        match self.result {
            Ok(events) => panic!("expected an error, but the command emitted {events:#?}"),
            Err(e) => {
                assert!(check(&e), "unexpected error: {e:?}");
                e.to_string()
            }
        }
    }
}

/// `from_payload(to_payload(e)) == e`.
pub fn assert_codec_round_trip(event: DomainEvent) {
    let payload = match event.to_payload() {
        Ok(p) => p,
        Err(e) => panic!("encoding {event:?} failed: {e}"),
    };
    match DomainEvent::from_payload(event.event_type(), event.schema_version(), &payload) {
        Ok(back) => assert_eq!(back, event, "codec round trip changed the event"),
        Err(e) => panic!(
            "decoding {} failed: {e}\npayload: {}",
            event.event_type(),
            String::from_utf8_lossy(&payload)
        ),
    }
}

/// 2024-03-`d` at 10:00 UTC.
pub fn day(d: u32) -> DateTime<Utc> {
    match Utc.with_ymd_and_hms(2024, 3, d, 10, 0, 0).single() {
        Some(t) => t,
        None => panic!("bad day {d}"),
    }
}

/// 2024-`m`-`d`.
pub fn date(m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(2024, m, d) {
        Some(t) => t,
        None => panic!("bad date {m}-{d}"),
    }
}

/// A label from a literal.
pub fn label(s: &str) -> Label {
    match Label::new(s) {
        Ok(l) => l,
        Err(e) => panic!("bad label {s:?}: {e}"),
    }
}

/// Euro amount in cents.
pub fn eur(cents: i64) -> Money {
    Money::new(cents, Currency::EUR)
}

/// US dollar amount in cents.
pub fn usd(cents: i64) -> Money {
    Money::new(cents, Currency::USD)
}

/// Parses an id of any id type from a literal.
pub fn id<T>(s: &str) -> T
where
    T: TryFrom<String>,
    T::Error: Debug,
{
    match T::try_from(s.to_owned()) {
        Ok(v) => v,
        Err(e) => panic!("bad id {s:?}: {e:?}"),
    }
}
