//! The aggregate contract: decide with [`Aggregate::handle`], fold with [`Aggregate::apply`].
//!
//! **Architecture Invariant:** `handle` is a pure function of the current state and the
//! command: no clock, no randomness, no I/O. Time and ids arrive in the command. `apply` only
//! folds and never fails, so replaying a stream always yields a state.

use std::borrow::Borrow;

/// A consistency boundary: one event stream, named `"{CATEGORY}-{id}"`.
pub trait Aggregate: Default {
    /// Stream category, e.g. `"opportunity"`; the stream id is `"{CATEGORY}-{id}"`.
    const CATEGORY: &'static str;
    /// Requests to change the aggregate (imperative: `WinOpportunity`).
    type Command;
    /// Facts the aggregate records (past tense: `OpportunityWon`).
    type Event;
    /// Why a command was refused.
    type Error: std::error::Error;

    /// Decides which events a command produces, or why it is refused. Pure.
    ///
    /// # Errors
    /// The aggregate's error when a business rule forbids the command.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds one event into the state. Cannot fail: events are facts.
    fn apply(&mut self, event: &Self::Event);

    /// Handles `command` and, on success, applies the resulting events to `self`.
    ///
    /// # Errors
    /// As [`Aggregate::handle`]; the state is unchanged on error.
    fn execute(&mut self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error> {
        let events = self.handle(command)?;
        for event in &events {
            self.apply(event);
        }
        Ok(events)
    }
}

/// Rebuilds an aggregate from its stream, oldest event first.
pub fn replay<A, E>(events: impl IntoIterator<Item = E>) -> A
where
    A: Aggregate,
    E: Borrow<A::Event>,
{
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event.borrow());
    }
    aggregate
}

/// The stream id of an aggregate instance: `"{category}-{id}"`, e.g. `"opportunity-42"`.
#[must_use]
pub fn stream_id(category: &str, id: &str) -> String {
    format!("{category}-{id}")
}
