//! Queries of the lifetime-value read model: the purchase ledger, RFM, predicted CLV.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One purchase of a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Purchase {
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

struct Ledger {
    purchases: BTreeMap<String, Vec<Purchase>>,
    running: BTreeMap<String, bool>,
    sub_end: BTreeMap<String, DateTime<Utc>>,
    other_currency: u64,
}

fn ledger(state: &LifetimeValueState, config: &LifetimeValueConfig, t: DateTime<Utc>) -> Ledger {
    let cur = config.reporting_currency.as_str();
    let pct = config.assumed_margin_percent;
    let excluded = |a: &str| {
        state
            .accounts
            .get(a)
            .as_deref()
            .is_some_and(AccountFacts::excluded)
    };
    let mut l = Ledger {
        purchases: BTreeMap::new(),
        running: BTreeMap::new(),
        sub_end: BTreeMap::new(),
        other_currency: 0,
    };
    let push = |l: &mut Ledger, account: &str, p: Purchase| {
        l.purchases.entry(account.to_owned()).or_default().push(p)
    };
    for o in state
        .orders
        .values()
        .filter(|o| !o.cancelled && !o.linked && !o.is_test && o.at <= t && !excluded(&o.account))
    {
        if o.currency != cur {
            l.other_currency += 1;
            continue;
        }
        let net = o.amount_minor - o.refunded_minor;
        let (margin, cost_known) = match o.cost_minor {
            Some(c) => (net - c + o.cost_reversed_minor, true),
            None => (percent_of(net, pct), false),
        };
        push(
            &mut l,
            &o.account,
            Purchase {
                at: o.at,
                net_minor: net,
                margin_minor: margin,
                cost_known,
                is_order: true,
            },
        );
    }
    for d in state
        .deals
        .values()
        .filter(|d| d.at <= t && !excluded(&d.account))
    {
        if d.currency != cur {
            l.other_currency += 1;
            continue;
        }
        push(
            &mut l,
            &d.account,
            Purchase {
                at: d.at,
                net_minor: d.amount_minor,
                margin_minor: percent_of(d.amount_minor, pct),
                cost_known: false,
                is_order: true,
            },
        );
    }
    for s in state
        .subscriptions
        .values()
        .filter(|s| s.is_paid() && !s.linked && s.started_at <= t && !excluded(&s.account))
    {
        if s.currency != cur {
            l.other_currency += 1;
            continue;
        }
        let running = s.running_at(t);
        *l.running.entry(s.account.to_string()).or_default() |= running;
        if let Some(end) = s.ended_at.filter(|e| *e <= t) {
            let e = l.sub_end.entry(s.account.to_string()).or_insert(end);
            *e = (*e).max(end);
        }
        let t_next = t + Duration::seconds(1);
        for (at, amount) in s.billings(s.started_at, t_next) {
            push(
                &mut l,
                &s.account,
                Purchase {
                    at,
                    net_minor: amount,
                    margin_minor: percent_of(amount, pct),
                    cost_known: false,
                    is_order: false,
                },
            );
        }
    }
    l
}

/// Computes lifetime values at `q.as_of`.
#[must_use]
pub fn report(
    state: &LifetimeValueState,
    config: &LifetimeValueConfig,
    q: &LifetimeValueQuery,
) -> LifetimeValueReport {
    let t = q.as_of;
    let l = ledger(state, config, t);
    let window = Duration::days(config.activity_window_days);
    let year_ago = t - Duration::days(365);
    // Churn instants and exposure per customer, then per segment.
    let segment_of = |a: &str| {
        state
            .accounts
            .get(a)
            .map_or_else(|| "unknown".to_owned(), |f| f.segment.to_string())
    };
    let mut spells: BTreeMap<&str, (DateTime<Utc>, Option<DateTime<Utc>>)> = BTreeMap::new();
    let mut segments: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for (account, ps) in &l.purchases {
        let first = ps.iter().map(|p| p.at).min().unwrap_or(t);
        let last_order = ps.iter().filter(|p| p.is_order).map(|p| p.at).max();
        let running = l.running.get(account).copied().unwrap_or(false);
        let order_active = last_order.is_some_and(|x| x + window > t);
        let churned_at = if running || order_active {
            None
        } else {
            [
                l.sub_end.get(account).copied(),
                last_order.map(|x| x + window),
            ]
            .into_iter()
            .flatten()
            .max()
        };
        spells.insert(account, (first, churned_at));
        let seg = segments.entry(segment_of(account)).or_default();
        seg.0 += u64::from(churned_at.is_some());
        seg.1 += days_between(first, churned_at.unwrap_or(t)).max(0.0) / DAYS_PER_MONTH;
    }
    // RFM over customers with a purchase in the trailing 730 days.
    let mut r_vals = Vec::new();
    let mut f_vals = Vec::new();
    let mut m_vals = Vec::new();
    for (account, ps) in &l.purchases {
        let last = ps.iter().map(|p| p.at).max().unwrap_or(t);
        if last + Duration::days(730) <= t {
            continue;
        }
        let recent: Vec<&Purchase> = ps.iter().filter(|p| p.at > year_ago).collect();
        r_vals.push((account.clone(), -(t - last).num_seconds()));
        f_vals.push((
            account.clone(),
            i64::try_from(recent.len()).unwrap_or(i64::MAX),
        ));
        m_vals.push((
            account.clone(),
            recent.iter().map(|p| p.net_minor).sum::<i64>(),
        ));
    }
    let (rq, fq, mq) = (quintiles(&r_vals), quintiles(&f_vals), quintiles(&m_vals));
    let mut rfm_cells = BTreeMap::new();
    let mut customers = Vec::new();
    let (mut revenue_total, mut margin_total) = (0i64, 0i64);
    for (account, ps) in &l.purchases {
        let (first, churned_at) = spells.get(account.as_str()).copied().unwrap_or((t, None));
        let revenue: i64 = ps.iter().map(|p| p.net_minor).sum();
        let margin: i64 = ps.iter().map(|p| p.margin_minor).sum();
        revenue_total = revenue_total.saturating_add(revenue);
        margin_total = margin_total.saturating_add(margin);
        let rfm = match (rq.get(account), fq.get(account), mq.get(account)) {
            (Some(&r), Some(&f), Some(&m)) => {
                let recent: Vec<&Purchase> = ps.iter().filter(|p| p.at > year_ago).collect();
                let last = ps.iter().map(|p| p.at).max().unwrap_or(t);
                let cell = format!("{r}-{f}-{m}");
                *rfm_cells.entry(cell.clone()).or_insert(0u64) += 1;
                Some(Rfm {
                    recency_days: days_between(last, t),
                    frequency: u64::try_from(recent.len()).unwrap_or(u64::MAX),
                    monetary_minor: recent.iter().map(|p| p.net_minor).sum(),
                    r,
                    f,
                    m,
                    cell,
                })
            }
            _ => None,
        };
        if q.account.as_ref().is_some_and(|a| a != account) {
            continue;
        }
        let orders: Vec<&Purchase> = ps.iter().filter(|p| p.is_order).collect();
        let order_count = u64::try_from(orders.len()).unwrap_or(u64::MAX);
        let segment = segment_of(account);
        let (churned, exposure) = segments.get(&segment).copied().unwrap_or_default();
        let monthly_churn = (exposure > 0.0).then(|| crate::shared::as_f64(churned) / exposure);
        let max = f64::from(config.lifetime_months_max);
        let lifetime = monthly_churn
            .filter(|c| *c > 0.0)
            .map_or(max, |c| (1.0 / c).min(max));
        let monthly_margin = i_as_f64(
            ps.iter()
                .filter(|p| p.at > year_ago)
                .map(|p| p.margin_minor)
                .sum::<i64>(),
        ) / 12.0;
        let active = churned_at.is_none();
        customers.push(CustomerValue {
            account: account.clone(),
            region: state
                .accounts
                .get(account.as_str())
                .map_or_else(|| "unknown".to_owned(), |f| f.region.to_string()),
            revenue_minor: revenue,
            margin_minor: margin,
            revenue_without_cost_minor: ps
                .iter()
                .filter(|p| !p.cost_known)
                .map(|p| p.net_minor)
                .sum(),
            order_count,
            average_order_value_minor: (order_count > 0).then(|| {
                i_as_f64(orders.iter().map(|p| p.net_minor).sum::<i64>())
                    / crate::shared::as_f64(order_count)
            }),
            billing_count: u64::try_from(ps.len() - orders.len()).unwrap_or(0),
            first_purchase: first,
            last_purchase: ps.iter().map(|p| p.at).max().unwrap_or(first),
            churned_at,
            rfm,
            prediction: Prediction {
                active,
                monthly_margin_minor: monthly_margin,
                segment: segment.clone(),
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
            segment,
        });
    }
    let customers_total = u64::try_from(customers.len()).unwrap_or(u64::MAX);
    customers.sort_by(|a, b| {
        b.revenue_minor
            .cmp(&a.revenue_minor)
            .then_with(|| a.account.cmp(&b.account))
    });
    customers.truncate(list_limit(q.limit));
    LifetimeValueReport {
        as_of: t,
        currency: config.reporting_currency.clone(),
        customers_total,
        revenue_minor: revenue_total,
        margin_minor: margin_total,
        rfm_cells,
        other_currency: l.other_currency,
        customers,
    }
}
