//! Queries of the lifetime-value read model: the purchase ledger, RFM, predicted CLV.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One purchase of a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Purchase {
    #[serde(with = "crate::instants")]
    at: DateTime<Utc>,
    net_minor: i64,
    margin_minor: i64,
    cost_known: bool,
    /// An order or a deal (not a subscription billing).
    is_order: bool,
}

#[allow(clippy::cast_possible_truncation)]
fn percent_of(v: i64, percent: u8) -> i64 {
    i64::try_from(i128::from(v) * i128::from(percent) / 100).unwrap_or(i64::MAX)
}

/// RFM of one customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rfm {
    pub recency_days: f64,
    /// Purchases in the trailing 365 days.
    pub frequency: u64,
    /// Net amount in the trailing 365 days, minor units.
    pub monetary_minor: i64,
    pub r: u8,
    pub f: u8,
    pub m: u8,
    /// `R-F-M`, e.g. `5-5-5`.
    pub cell: String,
}

/// The inputs and result of the predicted CLV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Prediction {
    pub active: bool,
    /// Margin of the trailing 12 months / 12.
    pub monthly_margin_minor: f64,
    pub segment: String,
    /// Customers of the segment churned by `as_of`.
    pub segment_churned: u64,
    /// Σ months the segment's customers were active.
    pub segment_exposure_months: f64,
    /// churned / exposure months; `None` when there is no exposure.
    pub segment_monthly_churn: Option<f64>,
    /// 1 / monthly churn, capped at the configured maximum.
    pub expected_lifetime_months: f64,
    pub assumed_margin_percent: u8,
    /// monthly margin × expected lifetime for an active customer, else 0.
    pub predicted_clv_minor: f64,
}

/// The lifetime value of one customer at `as_of`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CustomerValue {
    pub account: String,
    pub segment: String,
    pub region: String,
    pub revenue_minor: i64,
    pub margin_minor: i64,
    /// Revenue whose margin is assumed (no recorded cost).
    pub revenue_without_cost_minor: i64,
    /// Orders and won deals.
    pub order_count: u64,
    pub average_order_value_minor: Option<f64>,
    /// Subscription billings.
    pub billing_count: u64,
    pub first_purchase: DateTime<Utc>,
    pub last_purchase: DateTime<Utc>,
    pub churned_at: Option<DateTime<Utc>>,
    /// `None` without a purchase in the trailing 730 days.
    pub rfm: Option<Rfm>,
    pub prediction: Prediction,
}

/// What to compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LifetimeValueQuery {
    /// "Now".
    pub as_of: DateTime<Utc>,
    /// Only this account.
    pub account: Option<String>,
    /// Most customers listed (highest revenue first; default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// The lifetime-value report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LifetimeValueReport {
    pub as_of: DateTime<Utc>,
    pub currency: String,
    pub customers_total: u64,
    pub revenue_minor: i64,
    pub margin_minor: i64,
    /// Customers per RFM cell.
    pub rfm_cells: BTreeMap<String, u64>,
    /// Purchases left out: amounts in another currency.
    pub other_currency: u64,
    pub customers: Vec<CustomerValue>,
}

/// A row of the ledger, regrouped under its account.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum LedgerRow {
    Purchase(Purchase),
    /// A paid subscription of the account: whether it runs at `t`, and its end by `t`.
    Subscription {
        running: bool,
        #[serde(with = "crate::instants")]
        ended: Option<DateTime<Utc>>,
    },
    /// A purchase left out for its currency (counted unless the account is excluded).
    OtherCurrency,
}

/// The purchases of every customer up to `t`, regrouped by account in a
/// [`crate::table::Sorted`] (so memory stays within a table's generation budget however long
/// the history), with a row for each purchase left out for its currency. Accounts are not
/// looked up here: the first pass reads the accounts' facts in the groups' order.
struct Ledger {
    by_account: crate::table::Finished<LedgerRow>,
}

/// One customer's ledger rows, summed up.
struct Account {
    purchases: Vec<Purchase>,
    /// A paid subscription runs at `t`.
    running: bool,
    /// The latest end of a paid subscription by `t`.
    sub_end: Option<DateTime<Utc>>,
    /// Purchases left out for their currency.
    other_currency: u64,
}

impl Account {
    fn of(rows: Vec<LedgerRow>) -> Account {
        let mut a = Account {
            purchases: Vec::new(),
            running: false,
            sub_end: None,
            other_currency: 0,
        };
        for row in rows {
            match row {
                LedgerRow::Purchase(p) => a.purchases.push(p),
                LedgerRow::Subscription { running, ended } => {
                    a.running |= running;
                    a.sub_end = a.sub_end.max(ended);
                }
                LedgerRow::OtherCurrency => a.other_currency += 1,
            }
        }
        a
    }

    /// First purchase and churn instant (`None`: active at `t`).
    fn spell(&self, t: DateTime<Utc>, window: Duration) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
        let ps = &self.purchases;
        let first = ps.iter().map(|p| p.at).min().unwrap_or(t);
        let last_order = ps.iter().filter(|p| p.is_order).map(|p| p.at).max();
        let order_active = last_order.is_some_and(|x| x + window > t);
        let churned_at = if self.running || order_active {
            None
        } else {
            [self.sub_end, last_order.map(|x| x + window)]
                .into_iter()
                .flatten()
                .max()
        };
        (first, churned_at)
    }

    /// Recency (negated seconds since the last purchase), frequency and monetary value over
    /// the trailing year; `None` without a purchase in the trailing 730 days.
    fn rfm_values(&self, t: DateTime<Utc>) -> Option<[i64; 3]> {
        let ps = &self.purchases;
        let last = ps.iter().map(|p| p.at).max().unwrap_or(t);
        if last + Duration::days(730) <= t {
            return None;
        }
        let year_ago = t - Duration::days(365);
        let recent = ps.iter().filter(|p| p.at > year_ago);
        Some([
            -(t - last).num_seconds(),
            i64::try_from(recent.clone().count()).unwrap_or(i64::MAX),
            recent.map(|p| p.net_minor).sum(),
        ])
    }
}

fn ledger(state: &LifetimeValueState, config: &LifetimeValueConfig, t: DateTime<Utc>) -> Ledger {
    let cur = config.reporting_currency.as_str();
    let pct = config.assumed_margin_percent;
    let mut by_account = crate::table::Sorted::new();
    for o in state
        .orders
        .values()
        .filter(|o| !o.cancelled && !o.linked && !o.is_test && o.at <= t)
    {
        if o.currency != cur {
            by_account.push(&o.account, LedgerRow::OtherCurrency);
            continue;
        }
        let net = o.amount_minor - o.refunded_minor;
        let (margin, cost_known) = match o.cost_minor {
            Some(c) => (net - c + o.cost_reversed_minor, true),
            None => (percent_of(net, pct), false),
        };
        by_account.push(
            &o.account,
            LedgerRow::Purchase(Purchase {
                at: o.at,
                net_minor: net,
                margin_minor: margin,
                cost_known,
                is_order: true,
            }),
        );
    }
    for d in state.deals.values().filter(|d| d.at <= t) {
        if d.currency != cur {
            by_account.push(&d.account, LedgerRow::OtherCurrency);
            continue;
        }
        by_account.push(
            &d.account,
            LedgerRow::Purchase(Purchase {
                at: d.at,
                net_minor: d.amount_minor,
                margin_minor: percent_of(d.amount_minor, pct),
                cost_known: false,
                is_order: true,
            }),
        );
    }
    for s in state
        .subscriptions
        .values()
        .filter(|s| s.is_paid() && !s.linked && s.started_at <= t)
    {
        if s.currency != cur {
            by_account.push(&s.account, LedgerRow::OtherCurrency);
            continue;
        }
        by_account.push(
            &s.account,
            LedgerRow::Subscription {
                running: s.running_at(t),
                ended: s.ended_at.filter(|e| *e <= t),
            },
        );
        let t_next = t + Duration::seconds(1);
        for (at, amount) in s.billings(s.started_at, t_next) {
            by_account.push(
                &s.account,
                LedgerRow::Purchase(Purchase {
                    at,
                    net_minor: amount,
                    margin_minor: percent_of(amount, pct),
                    cost_known: false,
                    is_order: false,
                }),
            );
        }
    }
    Ledger {
        by_account: by_account.finish(),
    }
}

/// What the report keeps of one customer between its two passes: everything that does not
/// depend on the other customers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Summary {
    segment: String,
    region: String,
    #[serde(with = "crate::instants")]
    first: DateTime<Utc>,
    #[serde(with = "crate::instants")]
    last: DateTime<Utc>,
    #[serde(with = "crate::instants")]
    churned_at: Option<DateTime<Utc>>,
    revenue: i64,
    margin: i64,
    revenue_without_cost: i64,
    order_count: u64,
    order_net: i64,
    billing_count: u64,
    /// Margin of the trailing 12 months.
    year_margin: i64,
    /// Recency, frequency and monetary values (see [`Account::rfm_values`]).
    rfm_values: Option<[i64; 3]>,
}

/// Computes lifetime values at `q.as_of`, in two passes: one over the ledger regrouped by
/// account, which sums up each customer and the segments' churn and collects the RFM values,
/// then one over those summaries, which scores the RFM quintiles from the sorted values and
/// predicts each customer's value. Both the ledger and the summaries are
/// [`crate::table::Sorted`], and only the list's limit of customers is kept, so memory grows
/// with neither the history nor the customers beyond three numbers each.
///
/// # Errors
/// [`ProjectionError::ReportStorage`] when rows regrouped on disk cannot be read back.
pub fn report(
    state: &LifetimeValueState,
    config: &LifetimeValueConfig,
    q: &LifetimeValueQuery,
) -> Result<LifetimeValueReport, ProjectionError> {
    let t = q.as_of;
    let l = ledger(state, config, t);
    let window = Duration::days(config.activity_window_days);
    let year_ago = t - Duration::days(365);
    let failed = |e: crate::table::SortedError| ProjectionError::ReportStorage {
        projection: NAME.to_owned(),
        reason: e.to_string(),
    };
    // Each customer summed up; churn and exposure per segment; RFM values of customers with
    // a recent purchase.
    let mut summaries = crate::table::Sorted::new();
    let mut segments: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut rfm_values: [Vec<i64>; 3] = Default::default();
    let (mut revenue_total, mut margin_total) = (0i64, 0i64);
    let mut other_currency = 0u64;
    // The accounts' facts, read in the groups' order (both are in key order) instead of
    // looked up one account at a time.
    let mut accounts = state.accounts.ascending();
    l.by_account
        .for_each_group(|account, rows| {
            let facts = accounts.get(account);
            if facts.as_deref().is_some_and(AccountFacts::excluded) {
                return;
            }
            let a = Account::of(rows);
            other_currency = other_currency.saturating_add(a.other_currency);
            let ps = &a.purchases;
            if ps.is_empty() {
                return;
            }
            let (first, churned_at) = a.spell(t, window);
            let segment = facts
                .as_deref()
                .map_or_else(|| "unknown".to_owned(), |f| f.segment.to_string());
            let region = facts
                .as_deref()
                .map_or_else(|| "unknown".to_owned(), |f| f.region.to_string());
            let seg = segments.entry(segment.clone()).or_default();
            seg.0 += u64::from(churned_at.is_some());
            seg.1 += days_between(first, churned_at.unwrap_or(t)).max(0.0) / DAYS_PER_MONTH;
            let rfm = a.rfm_values(t);
            if let Some(values) = rfm {
                for (all, v) in rfm_values.iter_mut().zip(values) {
                    all.push(v);
                }
            }
            let orders = ps.iter().filter(|p| p.is_order);
            let order_count = u64::try_from(orders.clone().count()).unwrap_or(u64::MAX);
            let summary = Summary {
                segment,
                region,
                first,
                last: ps.iter().map(|p| p.at).max().unwrap_or(first),
                churned_at,
                revenue: ps.iter().map(|p| p.net_minor).sum(),
                margin: ps.iter().map(|p| p.margin_minor).sum(),
                revenue_without_cost: ps
                    .iter()
                    .filter(|p| !p.cost_known)
                    .map(|p| p.net_minor)
                    .sum(),
                order_count,
                order_net: orders.map(|p| p.net_minor).sum(),
                billing_count: u64::try_from(ps.len())
                    .unwrap_or(u64::MAX)
                    .saturating_sub(order_count),
                year_margin: ps
                    .iter()
                    .filter(|p| p.at > year_ago)
                    .map(|p| p.margin_minor)
                    .sum(),
                rfm_values: rfm,
            };
            revenue_total = revenue_total.saturating_add(summary.revenue);
            margin_total = margin_total.saturating_add(summary.margin);
            summaries.push(account, summary);
        })
        .map_err(failed)?;
    drop(l.by_account);
    drop(accounts);
    for values in &mut rfm_values {
        values.sort_unstable();
    }
    let limit = list_limit(q.limit);
    let by_revenue = |a: &CustomerValue, b: &CustomerValue| {
        b.revenue_minor
            .cmp(&a.revenue_minor)
            .then_with(|| a.account.cmp(&b.account))
    };
    let mut rfm_cells = BTreeMap::new();
    // The highest revenues so far: cut back to `limit` whenever it holds twice as many.
    let mut customers = Vec::new();
    let mut customers_total = 0u64;
    summaries
        .finish()
        .for_each_group(|account, summary| {
            for s in summary {
                let rfm = s.rfm_values.map(|[recency, frequency, monetary]| {
                    let [rs, fs, ms] = &rfm_values;
                    let (r, f, m) = (
                        quintile_of(rs, recency),
                        quintile_of(fs, frequency),
                        quintile_of(ms, monetary),
                    );
                    let cell = format!("{r}-{f}-{m}");
                    *rfm_cells.entry(cell.clone()).or_insert(0u64) += 1;
                    Rfm {
                        recency_days: days_between(s.last, t),
                        frequency: u64::try_from(frequency).unwrap_or(u64::MAX),
                        monetary_minor: monetary,
                        r,
                        f,
                        m,
                        cell,
                    }
                });
                if q.account.as_ref().is_some_and(|want| want != account) {
                    continue;
                }
                let (churned, exposure) = segments.get(&s.segment).copied().unwrap_or_default();
                let monthly_churn =
                    (exposure > 0.0).then(|| crate::shared::as_f64(churned) / exposure);
                let max = f64::from(config.lifetime_months_max);
                let lifetime = monthly_churn
                    .filter(|c| *c > 0.0)
                    .map_or(max, |c| (1.0 / c).min(max));
                let monthly_margin = i_as_f64(s.year_margin) / 12.0;
                let active = s.churned_at.is_none();
                customers_total = customers_total.saturating_add(1);
                customers.push(CustomerValue {
                    account: account.to_owned(),
                    region: s.region,
                    revenue_minor: s.revenue,
                    margin_minor: s.margin,
                    revenue_without_cost_minor: s.revenue_without_cost,
                    order_count: s.order_count,
                    average_order_value_minor: (s.order_count > 0)
                        .then(|| i_as_f64(s.order_net) / crate::shared::as_f64(s.order_count)),
                    billing_count: s.billing_count,
                    first_purchase: s.first,
                    last_purchase: s.last,
                    churned_at: s.churned_at,
                    rfm,
                    prediction: Prediction {
                        active,
                        monthly_margin_minor: monthly_margin,
                        segment: s.segment.clone(),
                        segment_churned: churned,
                        segment_exposure_months: exposure,
                        segment_monthly_churn: monthly_churn,
                        expected_lifetime_months: lifetime,
                        assumed_margin_percent: config.assumed_margin_percent,
                        predicted_clv_minor: if active {
                            monthly_margin * lifetime
                        } else {
                            0.0
                        },
                    },
                    segment: s.segment,
                });
                if customers.len() >= limit.saturating_mul(2).max(1) {
                    customers.sort_by(by_revenue);
                    customers.truncate(limit);
                }
            }
        })
        .map_err(failed)?;
    customers.sort_by(by_revenue);
    customers.truncate(limit);
    Ok(LifetimeValueReport {
        as_of: t,
        currency: config.reporting_currency.clone(),
        customers_total,
        revenue_minor: revenue_total,
        margin_minor: margin_total,
        rfm_cells,
        other_currency,
        customers,
    })
}
