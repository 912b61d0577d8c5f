//! Shared test support: event builders and log helpers ([`support`]), what the
//! crash test's child and parent share ([`crash`]), and the
//! backend conformance suite ([`conformance`], instantiated with
//! [`conformance_tests!`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod conformance;
pub mod crash;
pub mod nats;
pub mod support;
