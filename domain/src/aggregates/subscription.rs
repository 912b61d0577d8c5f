//! Subscription: a recurring contract (product plan or service contract) with a monthly amount
//! and a term. Feeds MRR, renewals and churn.
//!
//! Rules: the term is 1..=[`TERM_MONTHS_MAX`] months; a cancelled or expired subscription
//! cannot be changed, renewed or cancelled again; renewal only while active; a subscription
//! expires only at or after its term end; cancellation cannot take effect before the start;
//! amounts are non-negative and keep the subscription's currency; details (services, payment
//! method) are recorded only while active and only when they change.

use chrono::{DateTime, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::values::{
    AccountId, Currency, Label, Money, MoneyError, OpportunityId, OrderId, ProductId,
    SubscriptionId,
};

/// Longest term accepted for one start or renewal, in months.
pub const TERM_MONTHS_MAX: u32 = 120;

/// What is subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionKind {
    /// A product plan (SaaS seat, licence).
    Product,
    /// A service or maintenance contract.
    ServiceContract,
}

/// Who ended the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancellationInitiator {
    /// The customer cancelled (voluntary churn).
    Customer,
    /// We cancelled (non-payment, breach).
    Company,
}

/// Direction of a plan change, by monthly amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanChange {
    /// Monthly amount went up.
    Upgrade,
    /// Monthly amount went down.
    Downgrade,
    /// Same amount, different plan.
    Lateral,
}

// ---------------------------------------------------------------------------------------------
// Commands

/// Start a subscription (creation). The term starts at `occurred_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StartSubscription {
    pub subscription_id: SubscriptionId,
    pub account_id: AccountId,
    pub plan: Label,
    pub product: ProductId,
    pub kind: SubscriptionKind,
    pub monthly_amount: Money,
    pub term_months: u32,
    pub trial: bool,
    pub order: Option<OrderId>,
    pub opportunity: Option<OpportunityId>,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Change plan and/or monthly amount of an active subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChangeSubscription {
    pub subscription_id: SubscriptionId,
    pub plan: Label,
    pub monthly_amount: Money,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Extend the term of an active subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RenewSubscription {
    pub subscription_id: SubscriptionId,
    pub term_months: u32,
    pub monthly_amount: Money,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Cancel an active subscription, effective at `effective_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelSubscription {
    pub subscription_id: SubscriptionId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub effective_at: DateTime<Utc>,
    pub initiated_by: CancellationInitiator,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record that the term ended without renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExpireSubscription {
    pub subscription_id: SubscriptionId,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Record what the subscription includes and how it is paid (services, payment method,
/// paperless billing), as a source system states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecordSubscriptionDetails {
    pub subscription_id: SubscriptionId,
    /// Services or add-ons included (`"Online backup"`), in the source's order.
    pub services: Vec<Label>,
    pub payment_method: Option<Label>,
    pub paperless_billing: Option<bool>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

command_enum! {
    /// Commands of the subscription aggregate.
    pub enum SubscriptionCommand {
        id: subscription_id: SubscriptionId,
        commands: {
            StartSubscription, ChangeSubscription, RenewSubscription, CancelSubscription,
            ExpireSubscription, RecordSubscriptionDetails,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Events

/// A subscription started. Creation event. `term_end = occurred_at + term_months`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionStarted {
    pub subscription_id: SubscriptionId,
    pub account_id: AccountId,
    pub plan: Label,
    pub product: ProductId,
    pub kind: SubscriptionKind,
    pub monthly_amount: Money,
    pub term_months: u32,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub term_end: DateTime<Utc>,
    pub trial: bool,
    pub order: Option<OrderId>,
    pub opportunity: Option<OpportunityId>,
    pub is_test: bool,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Plan or monthly amount changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionChanged {
    pub subscription_id: SubscriptionId,
    pub from_plan: Label,
    pub to_plan: Label,
    pub from_monthly_amount: Money,
    pub to_monthly_amount: Money,
    pub change: PlanChange,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The term was extended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRenewed {
    pub subscription_id: SubscriptionId,
    pub term_months: u32,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub new_term_end: DateTime<Utc>,
    pub monthly_amount: Money,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The subscription was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionCancelled {
    pub subscription_id: SubscriptionId,
    pub reason: Label,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub effective_at: DateTime<Utc>,
    pub initiated_by: CancellationInitiator,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// The term ended without renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionExpired {
    pub subscription_id: SubscriptionId,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub term_end: DateTime<Utc>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

/// Services, payment method or billing preference of the subscription were recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionDetailsRecorded {
    pub subscription_id: SubscriptionId,
    pub services: Vec<Label>,
    pub payment_method: Option<Label>,
    pub paperless_billing: Option<bool>,
    #[serde(deserialize_with = "crate::values::instant::deserialize")]
    pub occurred_at: DateTime<Utc>,
}

event_enum! {
    /// Events of the subscription aggregate.
    pub enum SubscriptionEvent {
        category: "subscription",
        id: subscription_id: SubscriptionId,
        events: {
            SubscriptionStarted = 1, SubscriptionChanged = 1, SubscriptionRenewed = 1,
            SubscriptionCancelled = 1, SubscriptionExpired = 1, SubscriptionDetailsRecorded = 1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a subscription command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    #[error("subscription `{id}` already exists; choose another id or send a command for the existing subscription")]
    AlreadyExists { id: SubscriptionId },
    #[error("subscription `{id}` does not exist; start it (StartSubscription) first")]
    NotFound { id: SubscriptionId },
    #[error("command is for subscription `{command}` but stream `subscription-{loaded}` was loaded; load stream `subscription-{command}` and retry")]
    WrongInstance {
        loaded: SubscriptionId,
        command: SubscriptionId,
    },
    #[error("cannot {action}: subscription `{id}` was {status} on {on}; start a new subscription instead")]
    Ended {
        id: SubscriptionId,
        action: &'static str,
        status: &'static str,
        on: NaiveDate,
    },
    #[error("term of {term_months} months is not accepted; use 1..={TERM_MONTHS_MAX} months")]
    InvalidTerm { term_months: u32 },
    #[error("subscription `{id}` already has plan `{plan}` at {amount}; send a different plan or amount")]
    Unchanged {
        id: SubscriptionId,
        plan: Label,
        amount: Money,
    },
    #[error("cancellation of subscription `{id}` would take effect on {effective_on}, before it started on {started_on}; send an effective date on or after the start")]
    EffectiveBeforeStart {
        id: SubscriptionId,
        effective_on: NaiveDate,
        started_on: NaiveDate,
    },
    #[error("subscription `{id}` runs until {term_end}; it cannot expire on {on}, cancel it (CancelSubscription) to end it early")]
    ExpiryBeforeTermEnd {
        id: SubscriptionId,
        term_end: NaiveDate,
        on: NaiveDate,
    },
    #[error("subscription `{id}` already has these services, payment method and billing preference; send changed details")]
    DetailsUnchanged { id: SubscriptionId },
    #[error(
        "subscription `{id}`: the term end falls outside the supported calendar; check the dates"
    )]
    TermOutOfRange { id: SubscriptionId },
    #[error("subscription `{id}`: {source}")]
    Money {
        id: SubscriptionId,
        source: MoneyError,
    },
}

// ---------------------------------------------------------------------------------------------
// State

/// Lifecycle status of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    /// Running (or trial).
    Active,
    /// Cancelled at `at`, effective at `effective_at`.
    Cancelled {
        at: DateTime<Utc>,
        effective_at: DateTime<Utc>,
    },
    /// Ran out at `at`.
    Expired { at: DateTime<Utc> },
}

/// Services, payment method and billing preference last recorded.
type Details = (Vec<Label>, Option<Label>, Option<bool>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    id: SubscriptionId,
    details: Option<Details>,
    currency: Currency,
    plan: Label,
    monthly_amount: Money,
    started_at: DateTime<Utc>,
    term_end: DateTime<Utc>,
    status: SubscriptionStatus,
}

/// The subscription aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    state: Option<State>,
}

fn check_term(term_months: u32) -> Result<Months, SubscriptionError> {
    if (1..=TERM_MONTHS_MAX).contains(&term_months) {
        Ok(Months::new(term_months))
    } else {
        Err(SubscriptionError::InvalidTerm { term_months })
    }
}

fn money(id: &SubscriptionId, r: Result<Money, MoneyError>) -> Result<Money, SubscriptionError> {
    r.map_err(|source| SubscriptionError::Money {
        id: id.clone(),
        source,
    })
}

impl Subscription {
    /// Current status, `None` before start.
    #[must_use]
    pub fn status(&self) -> Option<SubscriptionStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    /// End of the current term, `None` before start.
    #[must_use]
    pub fn term_end(&self) -> Option<DateTime<Utc>> {
        self.state.as_ref().map(|s| s.term_end)
    }

    fn existing(&self, id: &SubscriptionId) -> Result<&State, SubscriptionError> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| SubscriptionError::NotFound { id: id.clone() })?;
        if &state.id != id {
            return Err(SubscriptionError::WrongInstance {
                loaded: state.id.clone(),
                command: id.clone(),
            });
        }
        Ok(state)
    }

    fn start(&self, c: &StartSubscription) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        let id = &c.subscription_id;
        if self.state.is_some() {
            return Err(SubscriptionError::AlreadyExists { id: id.clone() });
        }
        let term = check_term(c.term_months)?;
        let monthly_amount = money(id, c.monthly_amount.ensure_non_negative("monthly amount"))?;
        let term_end = c
            .occurred_at
            .checked_add_months(term)
            .ok_or_else(|| SubscriptionError::TermOutOfRange { id: id.clone() })?;
        Ok(vec![SubscriptionStarted {
            subscription_id: id.clone(),
            account_id: c.account_id.clone(),
            plan: c.plan.clone(),
            product: c.product.clone(),
            kind: c.kind,
            monthly_amount,
            term_months: c.term_months,
            term_end,
            trial: c.trial,
            order: c.order.clone(),
            opportunity: c.opportunity.clone(),
            is_test: c.is_test,
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

impl State {
    fn require_active(&self, action: &'static str) -> Result<(), SubscriptionError> {
        let (status, at) = match self.status {
            SubscriptionStatus::Active => return Ok(()),
            SubscriptionStatus::Cancelled { at, .. } => ("cancelled", at),
            SubscriptionStatus::Expired { at } => ("expired", at),
        };
        Err(SubscriptionError::Ended {
            id: self.id.clone(),
            action,
            status,
            on: at.date_naive(),
        })
    }

    fn amount(&self, m: Money) -> Result<Money, SubscriptionError> {
        money(
            &self.id,
            m.ensure_non_negative("monthly amount")
                .and_then(|m| m.ensure_currency(self.currency, "monthly amount")),
        )
    }

    fn change(&self, c: &ChangeSubscription) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        self.require_active("change it")?;
        let to = self.amount(c.monthly_amount)?;
        if c.plan == self.plan && to == self.monthly_amount {
            return Err(SubscriptionError::Unchanged {
                id: self.id.clone(),
                plan: self.plan.clone(),
                amount: self.monthly_amount,
            });
        }
        let change = match to.minor_units.cmp(&self.monthly_amount.minor_units) {
            std::cmp::Ordering::Greater => PlanChange::Upgrade,
            std::cmp::Ordering::Less => PlanChange::Downgrade,
            std::cmp::Ordering::Equal => PlanChange::Lateral,
        };
        Ok(vec![SubscriptionChanged {
            subscription_id: self.id.clone(),
            from_plan: self.plan.clone(),
            to_plan: c.plan.clone(),
            from_monthly_amount: self.monthly_amount,
            to_monthly_amount: to,
            change,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn renew(&self, c: &RenewSubscription) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        self.require_active("renew it")?;
        let term = check_term(c.term_months)?;
        let monthly_amount = self.amount(c.monthly_amount)?;
        let new_term_end = self.term_end.checked_add_months(term).ok_or_else(|| {
            SubscriptionError::TermOutOfRange {
                id: self.id.clone(),
            }
        })?;
        Ok(vec![SubscriptionRenewed {
            subscription_id: self.id.clone(),
            term_months: c.term_months,
            new_term_end,
            monthly_amount,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn cancel(&self, c: &CancelSubscription) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        self.require_active("cancel it")?;
        if c.effective_at < self.started_at {
            return Err(SubscriptionError::EffectiveBeforeStart {
                id: self.id.clone(),
                effective_on: c.effective_at.date_naive(),
                started_on: self.started_at.date_naive(),
            });
        }
        Ok(vec![SubscriptionCancelled {
            subscription_id: self.id.clone(),
            reason: c.reason.clone(),
            effective_at: c.effective_at,
            initiated_by: c.initiated_by,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn record_details(
        &self,
        c: &RecordSubscriptionDetails,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        self.require_active("record its details")?;
        let next = (
            c.services.clone(),
            c.payment_method.clone(),
            c.paperless_billing,
        );
        if self.details.as_ref() == Some(&next) {
            return Err(SubscriptionError::DetailsUnchanged {
                id: self.id.clone(),
            });
        }
        Ok(vec![SubscriptionDetailsRecorded {
            subscription_id: self.id.clone(),
            services: c.services.clone(),
            payment_method: c.payment_method.clone(),
            paperless_billing: c.paperless_billing,
            occurred_at: c.occurred_at,
        }
        .into()])
    }

    fn expire(&self, c: &ExpireSubscription) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        self.require_active("expire it")?;
        if c.occurred_at < self.term_end {
            return Err(SubscriptionError::ExpiryBeforeTermEnd {
                id: self.id.clone(),
                term_end: self.term_end.date_naive(),
                on: c.occurred_at.date_naive(),
            });
        }
        Ok(vec![SubscriptionExpired {
            subscription_id: self.id.clone(),
            term_end: self.term_end,
            occurred_at: c.occurred_at,
        }
        .into()])
    }
}

impl Aggregate for Subscription {
    const CATEGORY: &'static str = SubscriptionEvent::CATEGORY;
    type Command = SubscriptionCommand;
    type Event = SubscriptionEvent;
    type Error = SubscriptionError;

    fn handle(
        &self,
        command: &SubscriptionCommand,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        use SubscriptionCommand as C;
        if let C::StartSubscription(c) = command {
            return self.start(c);
        }
        let s = self.existing(command.target_id())?;
        match command {
            C::StartSubscription(c) => self.start(c),
            C::ChangeSubscription(c) => s.change(c),
            C::RenewSubscription(c) => s.renew(c),
            C::CancelSubscription(c) => s.cancel(c),
            C::ExpireSubscription(c) => s.expire(c),
            C::RecordSubscriptionDetails(c) => s.record_details(c),
        }
    }

    fn apply(&mut self, event: &SubscriptionEvent) {
        use SubscriptionEvent as E;
        if let E::SubscriptionStarted(e) = event {
            self.state = Some(State {
                id: e.subscription_id.clone(),
                details: None,
                currency: e.monthly_amount.currency,
                plan: e.plan.clone(),
                monthly_amount: e.monthly_amount,
                started_at: e.occurred_at,
                term_end: e.term_end,
                status: SubscriptionStatus::Active,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        match event {
            E::SubscriptionStarted(_) => {}
            E::SubscriptionChanged(e) => {
                s.plan = e.to_plan.clone();
                s.monthly_amount = e.to_monthly_amount;
            }
            E::SubscriptionRenewed(e) => {
                s.term_end = e.new_term_end;
                s.monthly_amount = e.monthly_amount;
            }
            E::SubscriptionCancelled(e) => {
                s.status = SubscriptionStatus::Cancelled {
                    at: e.occurred_at,
                    effective_at: e.effective_at,
                }
            }
            E::SubscriptionExpired(e) => {
                s.status = SubscriptionStatus::Expired { at: e.occurred_at }
            }
            E::SubscriptionDetailsRecorded(e) => {
                s.details = Some((
                    e.services.clone(),
                    e.payment_method.clone(),
                    e.paperless_billing,
                ));
            }
        }
    }
}
