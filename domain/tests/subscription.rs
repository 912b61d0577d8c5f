//! Subscription rules, given/when/then.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use chrono::{TimeZone, Utc};
use common::*;
use crm_domain::aggregates::subscription::*;
use crm_domain::values::{MoneyError, SubscriptionId};

fn sid() -> SubscriptionId {
    id("S-1")
}

fn start_cmd() -> StartSubscription {
    StartSubscription {
        subscription_id: sid(),
        account_id: id("A-1"),
        plan: label("Pro"),
        product: id("crm-cloud"),
        kind: SubscriptionKind::Product,
        monthly_amount: eur(9_900),
        term_months: 12,
        trial: false,
        order: None,
        opportunity: Some(id("O-1")),
        is_test: false,
        occurred_at: day(1),
    }
}

fn term_end_2025() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap()
}

fn started() -> SubscriptionEvent {
    let c = start_cmd();
    SubscriptionStarted {
        subscription_id: c.subscription_id,
        account_id: c.account_id,
        plan: c.plan,
        product: c.product,
        kind: c.kind,
        monthly_amount: c.monthly_amount,
        term_months: c.term_months,
        term_end: term_end_2025(),
        trial: c.trial,
        order: c.order,
        opportunity: c.opportunity,
        is_test: c.is_test,
        occurred_at: c.occurred_at,
    }
    .into()
}

fn cancel_cmd(d: u32) -> CancelSubscription {
    CancelSubscription {
        subscription_id: sid(),
        reason: label("too expensive"),
        effective_at: day(d),
        initiated_by: CancellationInitiator::Customer,
        occurred_at: day(d),
    }
}

fn cancelled(d: u32) -> SubscriptionEvent {
    SubscriptionCancelled {
        subscription_id: sid(),
        reason: label("too expensive"),
        effective_at: day(d),
        initiated_by: CancellationInitiator::Customer,
        occurred_at: day(d),
    }
    .into()
}

fn change_cmd(plan: &str, cents: i64) -> ChangeSubscription {
    ChangeSubscription {
        subscription_id: sid(),
        plan: label(plan),
        monthly_amount: eur(cents),
        occurred_at: day(5),
    }
}

fn renew_cmd() -> RenewSubscription {
    RenewSubscription {
        subscription_id: sid(),
        term_months: 12,
        monthly_amount: eur(9_900),
        occurred_at: day(20),
    }
}

fn expired() -> SubscriptionEvent {
    SubscriptionExpired {
        subscription_id: sid(),
        term_end: term_end_2025(),
        occurred_at: term_end_2025(),
    }
    .into()
}

#[test]
fn starting_derives_the_term_end() {
    let state = given_nothing::<Subscription>()
        .when(start_cmd())
        .then(vec![started()]);
    assert_eq!(state.term_end(), Some(term_end_2025()));
    assert_eq!(state.status(), Some(SubscriptionStatus::Active));
}

#[test]
fn starting_twice_is_an_error() {
    given::<Subscription>(vec![started()])
        .when(start_cmd())
        .then_err(|e| matches!(e, SubscriptionError::AlreadyExists { .. }));
}

#[test]
fn commands_on_a_missing_subscription_are_errors() {
    given_nothing::<Subscription>()
        .when(cancel_cmd(2))
        .then_err(|e| matches!(e, SubscriptionError::NotFound { .. }));
}

#[test]
fn the_term_is_1_to_120_months() {
    for bad in [0, 121] {
        let mut cmd = start_cmd();
        cmd.term_months = bad;
        given_nothing::<Subscription>()
            .when(cmd)
            .then_err(|e| matches!(e, SubscriptionError::InvalidTerm { .. }));
    }
}

#[test]
fn a_negative_monthly_amount_is_refused() {
    let mut cmd = start_cmd();
    cmd.monthly_amount = eur(-100);
    given_nothing::<Subscription>().when(cmd).then_err(|e| {
        matches!(
            e,
            SubscriptionError::Money {
                source: MoneyError::Negative { .. },
                ..
            }
        )
    });
}

#[test]
fn a_plan_change_is_classified_as_upgrade_or_downgrade() {
    let events = given::<Subscription>(vec![started()])
        .when(change_cmd("Enterprise", 19_900))
        .then_ok();
    assert!(matches!(
        &events[..],
        [SubscriptionEvent::SubscriptionChanged(
            SubscriptionChanged {
                change: PlanChange::Upgrade,
                ..
            }
        )]
    ));
    let events = given::<Subscription>(vec![started()])
        .when(change_cmd("Basic", 4_900))
        .then_ok();
    assert!(matches!(
        &events[..],
        [SubscriptionEvent::SubscriptionChanged(
            SubscriptionChanged {
                change: PlanChange::Downgrade,
                ..
            }
        )]
    ));
}

#[test]
fn a_change_must_change_something() {
    given::<Subscription>(vec![started()])
        .when(change_cmd("Pro", 9_900))
        .then_err(|e| matches!(e, SubscriptionError::Unchanged { .. }));
}

#[test]
fn a_change_keeps_the_currency() {
    let mut cmd = change_cmd("Pro", 0);
    cmd.monthly_amount = usd(10_000);
    given::<Subscription>(vec![started()])
        .when(cmd)
        .then_err(|e| {
            matches!(
                e,
                SubscriptionError::Money {
                    source: MoneyError::CurrencyMismatch { .. },
                    ..
                }
            )
        });
}

#[test]
fn cancelling_records_effective_date_and_initiator() {
    let state = given::<Subscription>(vec![started()])
        .when(cancel_cmd(10))
        .then(vec![cancelled(10)]);
    assert!(matches!(
        state.status(),
        Some(SubscriptionStatus::Cancelled { .. })
    ));
}

#[test]
fn a_subscription_cannot_be_cancelled_twice() {
    let msg = given::<Subscription>(vec![started(), cancelled(10)])
        .when(cancel_cmd(11))
        .then_err(|e| {
            matches!(
                e,
                SubscriptionError::Ended {
                    status: "cancelled",
                    ..
                }
            )
        });
    assert!(msg.contains("cancelled on 2024-03-10"), "{msg}");
}

#[test]
fn a_cancelled_subscription_cannot_be_changed() {
    given::<Subscription>(vec![started(), cancelled(10)])
        .when(change_cmd("Enterprise", 19_900))
        .then_err(|e| matches!(e, SubscriptionError::Ended { .. }));
}

#[test]
fn renewal_extends_the_term_while_active() {
    given::<Subscription>(vec![started()])
        .when(renew_cmd())
        .then(vec![SubscriptionRenewed {
            subscription_id: sid(),
            term_months: 12,
            new_term_end: Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap(),
            monthly_amount: eur(9_900),
            occurred_at: day(20),
        }
        .into()]);
}

#[test]
fn renewal_only_while_active() {
    given::<Subscription>(vec![started(), cancelled(10)])
        .when(renew_cmd())
        .then_err(|e| {
            matches!(
                e,
                SubscriptionError::Ended {
                    status: "cancelled",
                    ..
                }
            )
        });
    given::<Subscription>(vec![started(), expired()])
        .when(renew_cmd())
        .then_err(|e| {
            matches!(
                e,
                SubscriptionError::Ended {
                    status: "expired",
                    ..
                }
            )
        });
}

#[test]
fn expiry_only_at_or_after_the_term_end() {
    given::<Subscription>(vec![started()])
        .when(ExpireSubscription {
            subscription_id: sid(),
            occurred_at: day(20),
        })
        .then_err(|e| matches!(e, SubscriptionError::ExpiryBeforeTermEnd { .. }));
    given::<Subscription>(vec![started()])
        .when(ExpireSubscription {
            subscription_id: sid(),
            occurred_at: term_end_2025(),
        })
        .then(vec![expired()]);
}

#[test]
fn cancellation_cannot_take_effect_before_the_start() {
    let mut cmd = cancel_cmd(10);
    cmd.effective_at = Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap();
    given::<Subscription>(vec![started()])
        .when(cmd)
        .then_err(|e| matches!(e, SubscriptionError::EffectiveBeforeStart { .. }));
}

fn details_cmd(method: &str) -> RecordSubscriptionDetails {
    RecordSubscriptionDetails {
        subscription_id: sid(),
        services: vec![label("Online backup"), label("Streaming TV")],
        payment_method: Some(label(method)),
        paperless_billing: Some(true),
        occurred_at: day(2),
    }
}

fn details_recorded(method: &str) -> SubscriptionEvent {
    let c = details_cmd(method);
    SubscriptionDetailsRecorded {
        subscription_id: c.subscription_id,
        services: c.services,
        payment_method: c.payment_method,
        paperless_billing: c.paperless_billing,
        occurred_at: c.occurred_at,
    }
    .into()
}

#[test]
fn details_are_recorded_on_an_active_subscription() {
    given::<Subscription>(vec![started()])
        .when(details_cmd("Mailed check"))
        .then(vec![details_recorded("Mailed check")]);
    given::<Subscription>(vec![started(), details_recorded("Mailed check")])
        .when(details_cmd("Electronic check"))
        .then(vec![details_recorded("Electronic check")]);
}

#[test]
fn details_must_change_something() {
    given::<Subscription>(vec![started(), details_recorded("Mailed check")])
        .when(details_cmd("Mailed check"))
        .then_err(|e| matches!(e, SubscriptionError::DetailsUnchanged { .. }));
}

#[test]
fn details_of_a_cancelled_or_missing_subscription_are_refused() {
    given::<Subscription>(vec![started(), cancelled(5)])
        .when(details_cmd("Mailed check"))
        .then_err(|e| matches!(e, SubscriptionError::Ended { .. }));
    given_nothing::<Subscription>()
        .when(details_cmd("Mailed check"))
        .then_err(|e| matches!(e, SubscriptionError::NotFound { .. }));
}
