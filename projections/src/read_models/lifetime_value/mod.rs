//! Lifetime-value read model: per customer, historic revenue and margin, order count,
//! average order value, first and last purchase, RFM scores (quintiles) and a predicted CLV
//! (monthly margin × expected lifetime from the observed churn of the customer's segment)
//! with every input shown: `sales.new_revenue`, `sales.recurring_revenue`, `sales.margin`,
//! `customer.rfm`, `customer.clv` and `sales.avg_order_value` in the metric catalog,
//! `projections/metrics/CATALOG.md`.
//!
//! Purchases (the same predicate as the catalog's purchase-based metrics): won deals; orders without an opportunity link, net of
//! refunds, unless cancelled; and the monthly billings of paid subscriptions without an
//! order or opportunity link (start + k months while running). Margin uses order-line costs
//! where every line has one, else the configured assumed margin (shown as an input).
//! A customer is active while a paid subscription runs or it purchased within the activity
//! window; its churn instant is when that stops.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use crm_domain::aggregates::{OpportunityEvent, OrderEvent};
use crm_domain::DomainEvent;
use serde::{Deserialize, Serialize};

use super::AccountFacts;
use crate::error::ProjectionError;
use crate::projection::{EventContext, Projection};
use crate::shared::Text;
use crate::shared::{
    days_between, fold_subscription, i_as_f64, list_limit, quintile_of, SubscriptionFacts,
};
use crate::table::Table;

/// Projection name.
pub const NAME: &str = "lifetime-value";
/// Code version of the fold.
pub const VERSION: u32 = 1;
/// Days per average month, for exposure in months.
const DAYS_PER_MONTH: f64 = 30.4375;

/// Lifetime-value configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifetimeValueConfig {
    /// Currency of every amount; others are counted apart.
    pub reporting_currency: String,
    /// Margin (percent of revenue) assumed where no cost is recorded.
    pub assumed_margin_percent: u8,
    /// Cap on the expected lifetime, months (also used when a segment has no churn).
    pub lifetime_months_max: u32,
    /// A customer without a running subscription is active this many days after a purchase.
    pub activity_window_days: i64,
}

impl Default for LifetimeValueConfig {
    fn default() -> Self {
        LifetimeValueConfig {
            reporting_currency: "USD".into(),
            assumed_margin_percent: 100,
            lifetime_months_max: 60,
            activity_window_days: 365,
        }
    }
}

/// A won deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deal {
    pub account: Text,
    #[serde(with = "crate::instants")]
    pub at: DateTime<Utc>,
    pub amount_minor: i64,
    pub currency: Text,
}

/// An order with its refunds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFacts {
    pub account: Text,
    #[serde(with = "crate::instants")]
    pub at: DateTime<Utc>,
    pub amount_minor: i64,
    /// Σ line costs when every line has one.
    pub cost_minor: Option<i64>,
    pub refunded_minor: i64,
    pub cost_reversed_minor: i64,
    pub currency: Text,
    pub cancelled: bool,
    /// Linked to an opportunity (the won deal is the purchase).
    pub linked: bool,
    pub is_test: bool,
}

/// What an opportunity is, until it is won.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OppFacts {
    pub account: Text,
    pub is_test: bool,
}

/// The lifetime-value state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeValueState {
    pub accounts: Table<AccountFacts>,
    pub opportunities: Table<OppFacts>,
    /// Won deals by opportunity (removed on reopen or void).
    pub deals: Table<Deal>,
    pub orders: Table<OrderFacts>,
    pub subscriptions: Table<SubscriptionFacts>,
}

/// The lifetime-value projection.
#[derive(Debug, Clone, Default)]
pub struct LifetimeValueProjection {
    config: LifetimeValueConfig,
}

impl LifetimeValueProjection {
    /// With `config`.
    #[must_use]
    pub fn new(config: LifetimeValueConfig) -> Self {
        LifetimeValueProjection { config }
    }

    /// The configuration.
    #[must_use]
    pub fn config_ref(&self) -> &LifetimeValueConfig {
        &self.config
    }
}

fn fold_order(state: &mut LifetimeValueState, event: &OrderEvent) {
    let id = event.aggregate_id().as_str();
    match event {
        OrderEvent::OrderPlaced(e) => {
            let cost = e
                .lines
                .iter()
                .map(|l| l.cost.map(|c| c.minor_units))
                .sum::<Option<i64>>();
            state.orders.insert(
                id.into(),
                OrderFacts {
                    account: e.account_id.as_str().into(),
                    at: e.occurred_at,
                    amount_minor: e.total.minor_units,
                    cost_minor: cost,
                    refunded_minor: 0,
                    cost_reversed_minor: 0,
                    currency: e.total.currency.as_str().into(),
                    cancelled: false,
                    linked: e.opportunity.is_some(),
                    is_test: e.is_test,
                },
            );
        }
        OrderEvent::OrderLinesRecorded(e) => {
            // The lines of a long order beyond the first event's: their cost joins the
            // order's (unknown if any line's is).
            if let Some(o) = state.orders.get_mut(id) {
                let more = e
                    .lines
                    .iter()
                    .map(|l| l.cost.map(|c| c.minor_units))
                    .sum::<Option<i64>>();
                o.cost_minor = o.cost_minor.zip(more).map(|(a, b)| a.saturating_add(b));
            }
        }
        OrderEvent::OrderCancelled(_) => {
            if let Some(o) = state.orders.get_mut(id) {
                o.cancelled = true;
            }
        }
        OrderEvent::Refunded(e) => {
            if let Some(o) = state.orders.get_mut(id) {
                o.refunded_minor = o.refunded_minor.saturating_add(e.amount.minor_units);
                o.cost_reversed_minor = o
                    .cost_reversed_minor
                    .saturating_add(e.cost_reversed.map_or(0, |c| c.minor_units));
            }
        }
        OrderEvent::InvoiceIssued(_)
        | OrderEvent::PaymentReceived(_)
        | OrderEvent::PaymentOverdue(_) => {}
    }
}

fn fold_opportunity(state: &mut LifetimeValueState, event: &OpportunityEvent) {
    let id = event.aggregate_id().as_str();
    match event {
        OpportunityEvent::OpportunityOpened(e) => {
            state.opportunities.insert(
                id.into(),
                OppFacts {
                    account: e.account_id.as_str().into(),
                    is_test: e.is_test,
                },
            );
        }
        OpportunityEvent::OpportunityWon(e) => {
            if let Some(o) = state.opportunities.get(id).filter(|o| !o.is_test) {
                state.deals.insert(
                    id.into(),
                    Deal {
                        account: o.account.clone(),
                        at: e.occurred_at,
                        amount_minor: e.amount.minor_units,
                        currency: e.amount.currency.as_str().into(),
                    },
                );
            }
        }
        OpportunityEvent::OpportunityReopened(_)
        | OpportunityEvent::OpportunityVoided(_)
        | OpportunityEvent::OpportunityLost(_) => {
            state.deals.remove(id);
        }
        _ => {}
    }
}

impl Projection for LifetimeValueProjection {
    type State = LifetimeValueState;

    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.config).unwrap_or_default()
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "OpportunityOpened"
                | "OpportunityWon"
                | "OpportunityLost"
                | "OpportunityReopened"
                | "OpportunityVoided"
        ) || matches!(
            DomainEvent::category_of(event_type),
            Some("account" | "subscription" | "order")
        )
    }

    fn fault(&self, state: &LifetimeValueState) -> Option<String> {
        state
            .accounts
            .fault()
            .or_else(|| state.opportunities.fault())
            .or_else(|| state.deals.fault())
            .or_else(|| state.orders.fault())
            .or_else(|| state.subscriptions.fault())
            .map(str::to_owned)
    }

    fn apply(&self, state: &mut LifetimeValueState, _ctx: &EventContext<'_>, event: &DomainEvent) {
        match event {
            DomainEvent::Account(e) => AccountFacts::fold(&mut state.accounts, e),
            DomainEvent::Subscription(e) => fold_subscription(&mut state.subscriptions, e),
            DomainEvent::Order(e) => fold_order(state, e),
            DomainEvent::Opportunity(e) => fold_opportunity(state, e),
            _ => {}
        }
    }
}

mod report;
pub use report::*;
