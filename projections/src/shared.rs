//! Shared predicates and helpers, linked into every read model (the predicates the metric
//! catalog, `projections/metrics/CATALOG.md`, defines its metrics with): projections
//! never read each other's state, they fold the same facts with the same functions, so
//! "running subscription" or "churned customer" means one thing everywhere.

use chrono::{DateTime, Months, Utc};
use crm_domain::aggregates::subscription::{
    CancellationInitiator, SubscriptionEvent, SubscriptionKind,
};
use crm_domain::values::Money;
use serde::{Deserialize, Serialize};

/// Text held in read-model state (ids, labels, currency codes): up to 24 bytes inline, so
/// the millions of short keys a large log brings cost no heap allocation each. It reads and
/// writes as a plain string, so snapshots are the same bytes as with `String`.
pub type Text = compact_str::CompactString;

/// Most rows any list query returns; larger requests are capped.
pub const LIST_LIMIT_MAX: usize = 10_000;
/// Rows a list query returns when the caller names no limit.
pub const LIST_LIMIT_DEFAULT: usize = 100;
/// Longest billing walk over one subscription, in months (100 years).
pub const BILLING_MONTHS_MAX: u32 = 1_200;
/// Seconds per day.
pub const DAY_SECONDS: f64 = 86_400.0;

/// Caps a requested list length.
#[must_use]
pub fn list_limit(requested: Option<usize>) -> usize {
    requested.unwrap_or(LIST_LIMIT_DEFAULT).min(LIST_LIMIT_MAX)
}

/// A share kept as numerator and denominator (ratios roll up from these, never by averaging).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Ratio {
    /// Counted cases.
    pub numerator: u64,
    /// Cases in scope.
    pub denominator: u64,
    /// `100 × numerator / denominator`, `None` when the denominator is 0.
    pub percent: Option<f64>,
}

/// u64 → f64 for reporting; exact below 2^53.
#[allow(clippy::cast_precision_loss)]
#[must_use]
pub fn as_f64(v: u64) -> f64 {
    v as f64
}

/// i64 → f64 for reporting; exact below 2^53.
#[allow(clippy::cast_precision_loss)]
#[must_use]
pub fn i_as_f64(v: i64) -> f64 {
    v as f64
}

impl Ratio {
    /// `numerator / denominator`.
    #[must_use]
    pub fn new(numerator: u64, denominator: u64) -> Ratio {
        Ratio {
            numerator,
            denominator,
            percent: (denominator > 0).then(|| 100.0 * as_f64(numerator) / as_f64(denominator)),
        }
    }
}

/// A money ratio (revenue churn, margin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MoneyRatio {
    /// Numerator, minor units of the reporting currency.
    pub numerator_minor: i64,
    /// Denominator, minor units.
    pub denominator_minor: i64,
    /// Percent, `None` when the denominator is 0.
    pub percent: Option<f64>,
}

impl MoneyRatio {
    /// `numerator / denominator`.
    #[must_use]
    pub fn new(numerator_minor: i64, denominator_minor: i64) -> MoneyRatio {
        MoneyRatio {
            numerator_minor,
            denominator_minor,
            percent: (denominator_minor != 0)
                .then(|| 100.0 * i_as_f64(numerator_minor) / i_as_f64(denominator_minor)),
        }
    }
}

/// Mean and median of a set of values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    /// How many values.
    pub count: u64,
    /// Their mean, `None` if there are none.
    pub mean: Option<f64>,
    /// Their median, `None` if there are none.
    pub median: Option<f64>,
}

impl Summary {
    /// Summarises `values` (sorted in place).
    #[must_use]
    pub fn of(values: &mut [f64]) -> Summary {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let count = u64::try_from(n).unwrap_or(u64::MAX);
        if n == 0 {
            return Summary::default();
        }
        let mean = values.iter().sum::<f64>() / as_f64(count);
        let median = if n % 2 == 1 {
            values.get(n / 2).copied()
        } else {
            match (values.get(n / 2 - 1), values.get(n / 2)) {
                (Some(a), Some(b)) => Some((a + b) / 2.0),
                _ => None,
            }
        };
        Summary {
            count,
            mean: Some(mean),
            median,
        }
    }
}

/// Days from `a` to `b` as a fraction.
#[must_use]
pub fn days_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    i_as_f64((b - a).num_seconds()) / DAY_SECONDS
}

/// The quintile score 1..=5 of `v` among `sorted` (ascending; higher value, higher score):
/// the value's rank among all values, ties sharing the rank of the first of them, cut into
/// five equal groups.
#[must_use]
pub fn quintile_of(sorted: &[i64], v: i64) -> u8 {
    let rank = sorted.partition_point(|x| *x < v);
    let score = 1 + (rank * 5) / sorted.len().max(1);
    u8::try_from(score.min(5)).unwrap_or(5)
}

/// `amount` in minor units when it is in the reporting `currency`, else `None` (amounts are
/// never converted implicitly; FX rates are not events yet).
#[must_use]
pub fn in_currency(amount: Money, currency: &str) -> Option<i64> {
    (amount.currency.as_str() == currency).then_some(amount.minor_units)
}

/// What every read model remembers of a subscription (folded by [`fold_subscription`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionFacts {
    /// Owning account.
    pub account: Text,
    /// Plan (the contract type, e.g. `Month-to-month`).
    pub plan: Text,
    /// Product.
    pub product: Text,
    /// Product or service contract.
    pub kind: SubscriptionKind,
    /// Trial (not a purchase).
    pub trial: bool,
    /// Linked order or opportunity (then not a purchase of its own).
    pub linked: bool,
    /// Test record.
    pub is_test: bool,
    /// Start.
    #[serde(with = "crate::instants")]
    pub started_at: DateTime<Utc>,
    /// End of the current term.
    #[serde(with = "crate::instants")]
    pub term_end: DateTime<Utc>,
    /// Monthly amount in force from each instant (first entry = at start), minor units.
    #[serde(with = "crate::instants")]
    pub mrr: Vec<(DateTime<Utc>, i64)>,
    /// Currency of the amounts.
    pub currency: Text,
    /// When it stops running: cancellation `effective_at` or expiry.
    #[serde(with = "crate::instants")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Who cancelled, if cancelled.
    pub cancelled_by: Option<CancellationInitiator>,
    /// Cancellation reason.
    pub cancel_reason: Option<Text>,
    /// Services recorded.
    pub services: Vec<Text>,
    /// Payment method recorded.
    pub payment_method: Option<Text>,
    /// Instants of downgrades.
    #[serde(with = "crate::instants")]
    pub downgrades: Vec<DateTime<Utc>>,
    /// Renewals (instants).
    #[serde(with = "crate::instants")]
    pub renewals: Vec<DateTime<Utc>>,
}

impl SubscriptionFacts {
    /// Paid and not a trial.
    #[must_use]
    pub fn is_paid(&self) -> bool {
        !self.trial && !self.is_test
    }

    /// Running at `t`: started, not yet ended. A term end without renewal does not end it
    /// (the data sets bill monthly past the first term); only a cancellation's `effective_at`
    /// or an expiry event does.
    #[must_use]
    pub fn running_at(&self, t: DateTime<Utc>) -> bool {
        self.started_at <= t && self.ended_at.is_none_or(|e| t < e)
    }

    /// Monthly amount in force at `t` (0 if not running).
    #[must_use]
    pub fn mrr_at(&self, t: DateTime<Utc>) -> i64 {
        if !self.running_at(t) {
            return 0;
        }
        self.mrr
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, m)| *m)
    }

    /// The last monthly amount before the subscription ended (or now in force).
    #[must_use]
    pub fn last_mrr(&self) -> i64 {
        self.mrr.last().map_or(0, |(_, m)| *m)
    }

    /// Billing instants (start + k months) in `[from, to)` while running, with the amount in
    /// force; bounded by [`BILLING_MONTHS_MAX`].
    #[must_use]
    pub fn billings(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(DateTime<Utc>, i64)> {
        let end = self.ended_at.map_or(to, |e| e.min(to));
        let mut out = Vec::new();
        for k in 0..BILLING_MONTHS_MAX {
            let Some(at) = self.started_at.checked_add_months(Months::new(k)) else {
                break;
            };
            if at >= end {
                break;
            }
            if at >= from {
                out.push((at, self.mrr_at(at)));
            }
        }
        out
    }
}

/// Folds a subscription event into `subs` (keyed by subscription id).
pub fn fold_subscription(
    subs: &mut crate::table::Table<SubscriptionFacts>,
    event: &SubscriptionEvent,
) {
    use SubscriptionEvent as E;
    let id = event.aggregate_id().as_str().into();
    if let E::SubscriptionStarted(e) = event {
        subs.insert(
            id,
            SubscriptionFacts {
                account: e.account_id.as_str().into(),
                plan: e.plan.as_str().into(),
                product: e.product.as_str().into(),
                kind: e.kind,
                trial: e.trial,
                linked: e.order.is_some() || e.opportunity.is_some(),
                is_test: e.is_test,
                started_at: e.occurred_at,
                term_end: e.term_end,
                mrr: vec![(e.occurred_at, e.monthly_amount.minor_units)],
                currency: e.monthly_amount.currency.as_str().into(),
                ended_at: None,
                cancelled_by: None,
                cancel_reason: None,
                services: Vec::new(),
                payment_method: None,
                downgrades: Vec::new(),
                renewals: Vec::new(),
            },
        );
        return;
    }
    let Some(s) = subs.get_mut(&id) else {
        return;
    };
    match event {
        E::SubscriptionStarted(_) => {}
        E::SubscriptionChanged(e) => {
            s.plan = e.to_plan.as_str().into();
            s.mrr.push((e.occurred_at, e.to_monthly_amount.minor_units));
            if e.to_monthly_amount.minor_units < e.from_monthly_amount.minor_units {
                s.downgrades.push(e.occurred_at);
            }
        }
        E::SubscriptionRenewed(e) => {
            s.term_end = e.new_term_end;
            s.mrr.push((e.occurred_at, e.monthly_amount.minor_units));
            s.renewals.push(e.occurred_at);
        }
        E::SubscriptionCancelled(e) => {
            s.ended_at = Some(e.effective_at);
            s.cancelled_by = Some(e.initiated_by);
            s.cancel_reason = Some(e.reason.as_str().into());
        }
        E::SubscriptionExpired(e) => {
            s.ended_at = Some(e.term_end.min(e.occurred_at).max(s.started_at))
        }
        E::SubscriptionDetailsRecorded(e) => {
            s.services = e.services.iter().map(|l| l.as_str().into()).collect();
            s.payment_method = e.payment_method.as_ref().map(|l| l.as_str().into());
        }
    }
    // Keep the amounts ordered by time (business time may be backdated).
    s.mrr.sort_by_key(|(at, _)| *at);
}

/// A customer's paid relationship: the first paid start and, if every paid subscription has
/// ended by `t`, the churn instant (the last end). Reactivations are not split into spells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spell {
    /// First paid start.
    pub start: DateTime<Utc>,
    /// Churn instant, if churned by `t`.
    pub churned_at: Option<DateTime<Utc>>,
}

/// The spell of the subscriptions `subs` (one account's) as known at `t`; `None` if no paid
/// subscription started by `t`.
pub fn spell<'a>(
    subs: impl IntoIterator<Item = &'a SubscriptionFacts>,
    t: DateTime<Utc>,
) -> Option<Spell> {
    let mut start: Option<DateTime<Utc>> = None;
    let mut last_end: Option<DateTime<Utc>> = None;
    let mut running = false;
    for s in subs {
        if !s.is_paid() || s.started_at > t {
            continue;
        }
        start = Some(start.map_or(s.started_at, |x| x.min(s.started_at)));
        match s.ended_at {
            Some(e) if e <= t => last_end = Some(last_end.map_or(e, |x| x.max(e))),
            _ => running = true,
        }
    }
    start.map(|start| Spell {
        start,
        churned_at: if running { None } else { last_end },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn quintiles_share_ties_and_cut_five_groups() {
        let sorted: Vec<i64> = (0..10).map(|k| k / 2).collect();
        let q: Vec<u8> = sorted.iter().map(|v| quintile_of(&sorted, *v)).collect();
        assert_eq!(q[0], 1);
        assert_eq!(q[1], 1); // tied with 0
        assert_eq!(q[9], 5);
        assert_eq!(q.iter().filter(|s| **s == 3).count(), 2);
    }

    #[test]
    fn summary_and_ratios() {
        let s = Summary::of(&mut [4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.count, s.mean, s.median), (4, Some(2.5), Some(2.5)));
        assert_eq!(Summary::of(&mut []).median, None);
        assert_eq!(Ratio::new(1, 4).percent, Some(25.0));
        assert_eq!(Ratio::new(1, 0).percent, None);
        assert_eq!(list_limit(Some(1_000_000)), LIST_LIMIT_MAX);
    }
}
