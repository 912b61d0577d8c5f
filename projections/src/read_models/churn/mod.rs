//! Churn-signals read model: per customer, the facts churn is read from (contract type,
//! tenure, monthly amount, services, payment method, interaction recency and trend, open and
//! escalated cases, SLA breaches suffered, latest NPS/CSAT, failed payments, cancellation),
//! an explainable churn-risk score whose every signal shows its contribution, and churn
//! rates by cohort and segment, by count and by revenue: `service.defection_propensity` and
//! `customer.churn_rate` v1 in the metric catalog, `projections/metrics/CATALOG.md`.
//!
//! A customer is an account (not test, not internal) with a paid subscription started by
//! the query instant. It has churned once every paid subscription has ended (cancellation
//! `effective_at` or expiry) by then; a cancellation that takes effect later is a notice.
//! Risk v1 (the propensity for customer defection): capped sum of rule points, weights in
//! [`RiskWeights`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Utc};
use crm_domain::aggregates::interaction::{Direction, InteractionOutcome};
use crm_domain::aggregates::{ContactEvent, FeedbackEvent, InteractionEvent, OrderEvent};
use crm_domain::values::SurveyScore;
use crm_domain::DomainEvent;
use serde::{Deserialize, Serialize};

use super::cases::{fold_case, CaseFacts, TargetOutcome};
use super::sla::{label, SlaConfig};
use super::AccountFacts;
use crate::error::ProjectionError;
use crate::projection::{EventContext, Projection};
use crate::shared::Text;
use crate::shared::{fold_subscription, list_limit, spell, MoneyRatio, Ratio, SubscriptionFacts};
use crate::table::Table;

/// Projection name.
pub const NAME: &str = "churn";
/// Code version of the fold.
pub const VERSION: u32 = 1;

/// Points (percent of the score) each risk rule adds when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskWeights {
    pub mrr_decrease: u32,
    pub escalations: u32,
    pub low_nps: u32,
    pub payment_overdue: u32,
    pub contact_left: u32,
    pub silence: u32,
    pub renewal_due: u32,
}

impl Default for RiskWeights {
    fn default() -> Self {
        RiskWeights {
            mrr_decrease: 20,
            escalations: 20,
            low_nps: 20,
            payment_overdue: 15,
            contact_left: 15,
            silence: 10,
            renewal_due: 10,
        }
    }
}

/// Churn configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChurnConfig {
    /// Currency of the amounts reported.
    pub reporting_currency: String,
    pub weights: RiskWeights,
    /// Window of the recent-change rules (MRR decrease, escalations, contact left), days.
    pub lookback_days: i64,
    /// No two-way interaction for this many days fires "silence".
    pub silence_days: i64,
    /// A term ending within this many days without renewal fires "renewal due".
    pub renewal_window_days: i64,
    /// Score (percent) from which a customer counts as at risk.
    pub at_risk_percent: u32,
}

impl Default for ChurnConfig {
    fn default() -> Self {
        ChurnConfig {
            reporting_currency: "USD".into(),
            weights: RiskWeights::default(),
            lookback_days: 90,
            silence_days: 60,
            renewal_window_days: 90,
            at_risk_percent: 50,
        }
    }
}

/// Per-account facts besides subscriptions and cases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSignals {
    /// Two-way interactions per day (days since 1970-01-01).
    pub interaction_days: BTreeMap<i64, u32>,
    /// Latest NPS answer (instant, score).
    #[serde(with = "crate::instants")]
    pub nps: Option<(DateTime<Utc>, u8)>,
    /// Latest CSAT answer.
    #[serde(with = "crate::instants")]
    pub csat: Option<(DateTime<Utc>, u8)>,
    /// Contacts who left.
    #[serde(with = "crate::instants")]
    pub contacts_left: Vec<DateTime<Utc>>,
    /// `PaymentOverdue` instants.
    #[serde(with = "crate::instants")]
    pub failed_payments: Vec<DateTime<Utc>>,
}

/// An order's account and its invoices overdue and not paid since.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDebts {
    pub account: Text,
    /// Invoice → first overdue instant.
    #[serde(with = "crate::instants")]
    pub overdue: BTreeMap<Text, DateTime<Utc>>,
}

/// The churn state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChurnState {
    pub accounts: Table<AccountFacts>,
    pub subscriptions: Table<SubscriptionFacts>,
    /// Contact → account.
    pub contacts: Table<Text>,
    pub orders: Table<OrderDebts>,
    pub cases: Table<CaseFacts>,
    pub signals: Table<AccountSignals>,
}

/// The churn projection.
#[derive(Debug, Clone, Default)]
pub struct ChurnProjection {
    config: ChurnConfig,
    sla: SlaConfig,
}

impl ChurnProjection {
    /// With `config`; `sla` decides SLA breaches suffered.
    #[must_use]
    pub fn new(config: ChurnConfig, sla: SlaConfig) -> Self {
        ChurnProjection { config, sla }
    }

    /// The configuration.
    #[must_use]
    pub fn config_ref(&self) -> &ChurnConfig {
        &self.config
    }
}

fn day_number(at: DateTime<Utc>) -> i64 {
    i64::from(at.date_naive().num_days_from_ce())
}

impl Projection for ChurnProjection {
    type State = ChurnState;

    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "churn": self.config, "sla": self.sla })
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "SurveyAnswered"
                | "OrderPlaced"
                | "PaymentOverdue"
                | "PaymentReceived"
                | "ContactAdded"
                | "ContactLeft"
        ) || matches!(
            DomainEvent::category_of(event_type),
            Some("account" | "subscription" | "case" | "interaction")
        )
    }

    fn fault(&self, state: &ChurnState) -> Option<String> {
        state
            .accounts
            .fault()
            .or_else(|| state.subscriptions.fault())
            .or_else(|| state.contacts.fault())
            .or_else(|| state.orders.fault())
            .or_else(|| state.cases.fault())
            .or_else(|| state.signals.fault())
            .map(str::to_owned)
    }

    fn apply(&self, state: &mut ChurnState, _ctx: &EventContext<'_>, event: &DomainEvent) {
        match event {
            DomainEvent::Account(e) => AccountFacts::fold(&mut state.accounts, e),
            DomainEvent::Subscription(e) => fold_subscription(&mut state.subscriptions, e),
            DomainEvent::Case(e) => {
                fold_case(&mut state.cases, e, &self.sla.policies, &self.sla.calendar)
            }
            DomainEvent::Contact(ContactEvent::ContactAdded(e)) => {
                state
                    .contacts
                    .insert(e.contact_id.as_str().into(), e.account_id.as_str().into());
            }
            DomainEvent::Contact(ContactEvent::ContactLeft(e)) => {
                let s = state.signals.get_or_default(e.account_id.as_str());
                s.contacts_left.push(e.occurred_at);
            }
            DomainEvent::Interaction(InteractionEvent::InteractionLogged(e)) => {
                let two_way =
                    e.direction == Direction::Inbound || e.outcome == InteractionOutcome::Connected;
                let account = e.account.as_ref().map(|a| a.as_str().into()).or_else(|| {
                    e.contact
                        .as_ref()
                        .and_then(|c| state.contacts.get(c.as_str()).map(Cow::into_owned))
                });
                if let (true, Some(account), false) = (two_way, account, e.is_test) {
                    let s = state.signals.get_or_default(&account);
                    *s.interaction_days
                        .entry(day_number(e.occurred_at))
                        .or_default() += 1;
                }
            }
            DomainEvent::Feedback(FeedbackEvent::SurveyAnswered(e)) => {
                let account = e
                    .contact
                    .as_ref()
                    .and_then(|c| state.contacts.get(c.as_str()).map(Cow::into_owned));
                if let (Some(account), false, false) = (account, e.is_test, e.by_employee) {
                    let s = state.signals.get_or_default(&account);
                    let latest = |old: Option<(DateTime<Utc>, u8)>, v: u8| match old {
                        Some((at, _)) if at > e.occurred_at => old,
                        _ => Some((e.occurred_at, v)),
                    };
                    match e.answer {
                        SurveyScore::Nps(v) => s.nps = latest(s.nps, v.value()),
                        SurveyScore::Csat(v) => s.csat = latest(s.csat, v.value()),
                        SurveyScore::Ces(_) => {}
                    }
                }
            }
            DomainEvent::Order(OrderEvent::OrderPlaced(e)) => {
                state.orders.insert(
                    e.order_id.as_str().into(),
                    OrderDebts {
                        account: e.account_id.as_str().into(),
                        overdue: BTreeMap::new(),
                    },
                );
            }
            DomainEvent::Order(OrderEvent::PaymentOverdue(e)) => {
                if let Some(o) = state.orders.get_mut(e.order_id.as_str()) {
                    o.overdue
                        .entry(e.invoice_id.as_str().into())
                        .or_insert(e.occurred_at);
                    let account = o.account.clone();
                    state
                        .signals
                        .get_or_default(&account)
                        .failed_payments
                        .push(e.occurred_at);
                }
            }
            DomainEvent::Order(OrderEvent::PaymentReceived(e)) => {
                if let Some(o) = state.orders.get_mut(e.order_id.as_str()) {
                    o.overdue.remove(e.invoice_id.as_str());
                }
            }
            _ => {}
        }
    }
}

mod report;
pub use report::*;
