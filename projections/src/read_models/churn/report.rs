//! Queries of the churn read model: one customer's signals and risk score, churn rates.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One risk rule's contribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Contribution {
    /// Rule name.
    pub signal: String,
    /// Whether it fired.
    pub fired: bool,
    /// Points it adds (0 when not fired).
    pub points: u32,
    /// The facts behind it.
    pub detail: String,
}

/// The churn-risk score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RiskScore {
    /// Σ points, capped at 100.
    pub score_percent: u32,
    /// At or above the configured threshold.
    pub at_risk: bool,
    /// Every rule, fired or not.
    pub signals: Vec<Contribution>,
}

/// A customer's cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Cancellation {
    pub effective_at: DateTime<Utc>,
    pub reason: Option<String>,
    pub initiated_by: Option<String>,
}

/// Everything churn is read from, for one customer at `as_of`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CustomerSignals {
    pub account: String,
    pub segment: String,
    pub region: String,
    /// `active`, `notice_given` or `churned`.
    pub status: String,
    /// Plan of the latest paid subscription (e.g. `Month-to-month`).
    pub contract_type: String,
    pub product: String,
    pub customer_since: DateTime<Utc>,
    pub churned_at: Option<DateTime<Utc>>,
    /// Whole months from the first paid start to `as_of` (or the churn).
    pub tenure_months: u32,
    /// Monthly amount in force, or for a churned customer the amount it had when it left.
    pub monthly_amount_minor: i64,
    pub services: Vec<String>,
    pub payment_method: Option<String>,
    pub days_since_last_interaction: Option<f64>,
    /// Two-way interactions in the last `lookback_days` and in the window before.
    pub interactions_recent: u64,
    pub interactions_previous: u64,
    /// `rising`, `falling`, `flat` or `none`.
    pub interaction_trend: String,
    pub open_cases: u64,
    pub escalated_open_cases: u64,
    pub sla_breaches: u64,
    pub latest_nps: Option<u8>,
    pub latest_csat: Option<u8>,
    pub failed_payments: u64,
    pub overdue_invoices: u64,
    pub cancellation: Option<Cancellation>,
    pub risk: RiskScore,
}

fn whole_months(from: DateTime<Utc>, to: DateTime<Utc>) -> u32 {
    let (a, b) = (from.date_naive(), to.date_naive());
    let months = (b.year() - a.year()) * 12 + i32::try_from(b.month()).unwrap_or(0)
        - i32::try_from(a.month()).unwrap_or(0)
        - i32::from(b.day() < a.day());
    u32::try_from(months.max(0)).unwrap_or(0)
}

/// An account's subscriptions, cases and orders, each in the state's order.
#[derive(Default)]
struct Rows<'a> {
    subs: Vec<Cow<'a, SubscriptionFacts>>,
    cases: Vec<Cow<'a, CaseFacts>>,
    orders: Vec<Cow<'a, OrderDebts>>,
}

impl<'a> Rows<'a> {
    /// The rows of one account (one pass over each collection).
    fn of(state: &'a ChurnState, account: &str) -> Rows<'a> {
        Rows {
            subs: state
                .subscriptions
                .values()
                .filter(|s| s.account == account)
                .collect(),
            cases: state
                .cases
                .values()
                .filter(|c| c.account.as_deref() == Some(account))
                .collect(),
            orders: state
                .orders
                .values()
                .filter(|o| o.account == account)
                .collect(),
        }
    }
}

/// A row of the churn state, regrouped under its account for the report.
#[derive(Clone, Serialize, Deserialize)]
enum AccountRow {
    Subscription(SubscriptionFacts),
    Case(CaseFacts),
    Order(OrderDebts),
}

/// Calls `each` with the signals at `t` of every customer, in account order. The state's
/// subscriptions, cases and orders are regrouped by account in one pass over each
/// collection (a pass per account would take time in accounts × rows), in a
/// [`crate::table::Sorted`], so memory stays within a table's generation budget however many
/// rows the state holds. Accounts without a subscription are not customers.
fn each_customer(
    state: &ChurnState,
    config: &ChurnConfig,
    t: DateTime<Utc>,
    mut each: impl FnMut(CustomerSignals),
) -> Result<(), ProjectionError> {
    let mut by_account = crate::table::Sorted::new();
    for s in state.subscriptions.values() {
        let account = s.account.clone();
        by_account.push(&account, AccountRow::Subscription(s.into_owned()));
    }
    for c in state.cases.values() {
        if let Some(account) = c.account.clone() {
            by_account.push(&account, AccountRow::Case(c.into_owned()));
        }
    }
    for o in state.orders.values() {
        let account = o.account.clone();
        by_account.push(&account, AccountRow::Order(o.into_owned()));
    }
    // The accounts' facts and signals, read in the groups' order (all are in key order)
    // instead of looked up one account at a time.
    let mut accounts = state.accounts.ascending();
    let mut signals = state.signals.ascending();
    by_account
        .finish()
        .for_each_group(|account, rows| {
            let facts = accounts.get(account);
            let sig = signals.get(account);
            let mut grouped = Rows::default();
            for row in rows {
                match row {
                    AccountRow::Subscription(s) => grouped.subs.push(Cow::Owned(s)),
                    AccountRow::Case(c) => grouped.cases.push(Cow::Owned(c)),
                    AccountRow::Order(o) => grouped.orders.push(Cow::Owned(o)),
                }
            }
            if !grouped.subs.is_empty() {
                let of = Of {
                    account,
                    facts: facts.as_deref(),
                    signals: sig.as_deref(),
                };
                if let Some(signals) = signals_of(config, &of, &grouped, t) {
                    each(signals);
                }
            }
        })
        .map_err(|e| ProjectionError::ReportStorage {
            projection: NAME.to_owned(),
            reason: e.to_string(),
        })
}

/// The signals of `account` at `t`; `None` if it is not a customer then.
#[must_use]
pub fn customer(
    state: &ChurnState,
    config: &ChurnConfig,
    account: &str,
    t: DateTime<Utc>,
) -> Option<CustomerSignals> {
    let facts = state.accounts.get(account);
    let signals = state.signals.get(account);
    let of = Of {
        account,
        facts: facts.as_deref(),
        signals: signals.as_deref(),
    };
    signals_of(config, &of, &Rows::of(state, account), t)
}

/// An account and what the state holds of it.
struct Of<'a> {
    account: &'a str,
    facts: Option<&'a AccountFacts>,
    signals: Option<&'a AccountSignals>,
}

/// The signals at `t` of the account of `of`, from its `rows`.
fn signals_of(
    config: &ChurnConfig,
    of: &Of<'_>,
    rows: &Rows<'_>,
    t: DateTime<Utc>,
) -> Option<CustomerSignals> {
    let account = of.account;
    if of.facts.is_some_and(AccountFacts::excluded) {
        return None;
    }
    let subs: Vec<&SubscriptionFacts> = rows
        .subs
        .iter()
        .map(Cow::as_ref)
        .filter(|s| s.is_paid() && s.started_at <= t)
        .collect();
    let sp = spell(subs.iter().copied(), t)?;
    let latest = subs.iter().max_by_key(|s| s.started_at)?;
    let notice = sp.churned_at.is_none()
        && subs
            .iter()
            .filter(|s| s.running_at(t))
            .all(|s| s.ended_at.is_some());
    let monthly = if sp.churned_at.is_some() {
        subs.iter().map(|s| s.last_mrr()).sum()
    } else {
        subs.iter().map(|s| s.mrr_at(t)).sum()
    };
    let cancellation = subs
        .iter()
        .filter(|s| s.cancelled_by.is_some())
        .max_by_key(|s| s.ended_at)
        .and_then(|s| {
            s.ended_at.map(|effective_at| Cancellation {
                effective_at,
                reason: s.cancel_reason.as_ref().map(Text::to_string),
                initiated_by: s.cancelled_by.as_ref().map(label),
            })
        });
    let sig: Cow<'_, AccountSignals> = of
        .signals
        .map_or_else(|| Cow::Owned(AccountSignals::default()), Cow::Borrowed);
    let lookback = Duration::days(config.lookback_days);
    let (today, window) = (day_number(t), config.lookback_days);
    let count_days = |from: i64, to: i64| -> u64 {
        sig.interaction_days
            .range(from..to)
            .map(|(_, n)| u64::from(*n))
            .sum()
    };
    let recent = count_days(today - window + 1, today + 1);
    let previous = count_days(today - 2 * window + 1, today - window + 1);
    let last_day = sig
        .interaction_days
        .range(..=today)
        .next_back()
        .map(|(d, _)| *d);
    let trend = match (recent, previous) {
        (0, 0) => "none",
        (r, p) if r > p => "rising",
        (r, p) if r < p => "falling",
        _ => "flat",
    };
    let cases: Vec<&CaseFacts> = rows
        .cases
        .iter()
        .map(Cow::as_ref)
        .filter(|c| !c.is_test && c.opened_at <= t)
        .collect();
    let breached = |c: &&CaseFacts| {
        matches!(c.first_response(t), TargetOutcome::Breached { .. })
            || matches!(c.resolution(t), TargetOutcome::Breached { .. })
    };
    let open_cases: Vec<&&CaseFacts> = cases.iter().filter(|c| c.open_at(t)).collect();
    let overdue = rows
        .orders
        .iter()
        .map(|o| o.overdue.values().filter(|at| **at <= t).count())
        .sum::<usize>();
    let recent_escalations = cases
        .iter()
        .flat_map(|c| c.escalations.iter())
        .filter(|at| **at <= t && **at > t - lookback)
        .count();
    let nps = sig.nps.filter(|(at, _)| *at <= t).map(|(_, v)| v);
    let w = &config.weights;
    let rule = |signal: &str, fired: bool, points: u32, detail: String| Contribution {
        signal: signal.into(),
        fired,
        points: if fired { points } else { 0 },
        detail,
    };
    let downgrades = subs
        .iter()
        .flat_map(|s| s.downgrades.iter())
        .filter(|at| **at <= t && **at > t - lookback)
        .count();
    let left = sig
        .contacts_left
        .iter()
        .filter(|at| **at <= t && **at > t - lookback)
        .count();
    let silent_days = last_day.map(|d| today - d);
    let renewal_due = subs
        .iter()
        .filter(|s| {
            s.running_at(t)
                && s.term_end > t
                && s.term_end <= t + Duration::days(config.renewal_window_days)
                && s.ended_at.is_none()
        })
        .count();
    let signals = vec![
        rule(
            "mrr_decrease",
            downgrades > 0,
            w.mrr_decrease,
            format!("{downgrades} downgrade(s) in the last {window} days"),
        ),
        rule(
            "escalations",
            recent_escalations >= 2,
            w.escalations,
            format!("{recent_escalations} escalation(s) in the last {window} days (fires at 2)"),
        ),
        rule(
            "low_nps",
            nps.is_some_and(|v| v <= 6),
            w.low_nps,
            nps.map_or_else(
                || "no NPS answer".into(),
                |v| format!("latest NPS {v} (fires at 6 or less)"),
            ),
        ),
        rule(
            "payment_overdue",
            overdue > 0,
            w.payment_overdue,
            format!("{overdue} invoice(s) overdue and unpaid"),
        ),
        rule(
            "contact_left",
            left > 0,
            w.contact_left,
            format!("{left} contact(s) left in the last {window} days"),
        ),
        rule(
            "silence",
            silent_days.is_none_or(|d| d >= config.silence_days),
            w.silence,
            silent_days.map_or_else(
                || "no two-way interaction ever".into(),
                |d| {
                    format!(
                        "{d} day(s) since the last two-way interaction (fires at {})",
                        config.silence_days
                    )
                },
            ),
        ),
        rule(
            "renewal_due",
            renewal_due > 0,
            w.renewal_due,
            format!(
                "{renewal_due} term(s) ending within {} days without renewal",
                config.renewal_window_days
            ),
        ),
    ];
    let score = signals.iter().map(|s| s.points).sum::<u32>().min(100);
    Some(CustomerSignals {
        account: account.to_owned(),
        segment: of
            .facts
            .map_or_else(|| "unknown".into(), |f| f.segment.to_string()),
        region: of
            .facts
            .map_or_else(|| "unknown".into(), |f| f.region.to_string()),
        status: if sp.churned_at.is_some() {
            "churned"
        } else if notice {
            "notice_given"
        } else {
            "active"
        }
        .into(),
        contract_type: latest.plan.to_string(),
        product: latest.product.to_string(),
        customer_since: sp.start,
        churned_at: sp.churned_at,
        tenure_months: whole_months(sp.start, sp.churned_at.unwrap_or(t)),
        monthly_amount_minor: monthly,
        services: latest.services.iter().map(Text::to_string).collect(),
        payment_method: latest.payment_method.as_ref().map(Text::to_string),
        days_since_last_interaction: last_day.map(|d| crate::shared::i_as_f64(today - d)),
        interactions_recent: recent,
        interactions_previous: previous,
        interaction_trend: trend.into(),
        open_cases: u64::try_from(open_cases.len()).unwrap_or(u64::MAX),
        escalated_open_cases: u64::try_from(
            open_cases
                .iter()
                .filter(|c| c.escalations.iter().any(|e| *e <= t))
                .count(),
        )
        .unwrap_or(u64::MAX),
        sla_breaches: u64::try_from(cases.iter().filter(|c| breached(c)).count())
            .unwrap_or(u64::MAX),
        latest_nps: nps,
        latest_csat: sig.csat.filter(|(at, _)| *at <= t).map(|(_, v)| v),
        failed_payments: u64::try_from(sig.failed_payments.iter().filter(|at| **at <= t).count())
            .unwrap_or(u64::MAX),
        overdue_invoices: u64::try_from(overdue).unwrap_or(u64::MAX),
        cancellation,
        risk: RiskScore {
            score_percent: score,
            at_risk: score >= config.at_risk_percent,
            signals,
        },
    })
}

/// Every customer's signals at `t`, by account (see `each_customer`; the list itself grows
/// with the customers: the report keeps only its `limit`).
///
/// # Errors
/// [`ProjectionError::ReportStorage`] when the rows regrouped on disk cannot be read back.
pub fn customers(
    state: &ChurnState,
    config: &ChurnConfig,
    t: DateTime<Utc>,
) -> Result<Vec<CustomerSignals>, ProjectionError> {
    let mut all = Vec::new();
    each_customer(state, config, t, |c| all.push(c))?;
    Ok(all)
}

/// Highest risk first, then by account.
fn by_risk(a: &CustomerSignals, b: &CustomerSignals) -> std::cmp::Ordering {
    b.risk
        .score_percent
        .cmp(&a.risk.score_percent)
        .then_with(|| a.account.cmp(&b.account))
}

/// What to compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChurnQuery {
    /// "Now".
    pub as_of: DateTime<Utc>,
    /// Churn rates over `[from, to)` among customers active at `from` (L6); `None`: every
    /// customer started by `as_of`, churned by `as_of`.
    pub period: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Most customers listed (highest risk first; default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// Churn of one group of customers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChurnRow {
    pub key: String,
    /// Churned customers / customers in the base.
    pub by_count: Ratio,
    /// MRR of churned customers / MRR of the base.
    pub by_revenue: MoneyRatio,
}

/// The churn report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChurnReport {
    pub as_of: DateTime<Utc>,
    pub overall: ChurnRow,
    pub by_contract_type: Vec<ChurnRow>,
    pub by_segment: Vec<ChurnRow>,
    /// By year of the first paid start.
    pub by_cohort: Vec<ChurnRow>,
    pub by_product: Vec<ChurnRow>,
    pub by_payment_method: Vec<ChurnRow>,
    /// Active customers at or above the risk threshold / active customers (metric 38).
    pub at_risk: Ratio,
    /// Customers, highest risk first, cut at the limit.
    pub customers: Vec<CustomerSignals>,
    pub customers_total: u64,
}

#[derive(Default)]
struct Acc {
    base: u64,
    churned: u64,
    base_mrr: i64,
    churned_mrr: i64,
}

/// Computes churn rates and the customer list at `q.as_of`. Memory is bounded by the
/// list's limit and a table's generation budget, not by the customers.
///
/// # Errors
/// [`ProjectionError::ReportStorage`] when the rows regrouped on disk cannot be read back.
pub fn report(
    state: &ChurnState,
    config: &ChurnConfig,
    q: &ChurnQuery,
) -> Result<ChurnReport, ProjectionError> {
    let t = q.as_of;
    let limit = list_limit(q.limit);
    let mut groups: [BTreeMap<String, Acc>; 6] = Default::default();
    let (mut active, mut at_risk) = (0u64, 0u64);
    let mut customers_total = 0u64;
    // The riskiest customers so far: cut back to `limit` whenever it holds twice as many.
    let mut listed: Vec<CustomerSignals> = Vec::new();
    each_customer(state, config, t, |c| {
        customers_total = customers_total.saturating_add(1);
        if c.status != "churned" {
            active += 1;
            at_risk += u64::from(c.risk.at_risk && c.status == "active");
        }
        let (in_base, churned) = match q.period {
            None => (true, c.churned_at.is_some()),
            Some((from, to)) => (
                c.customer_since <= from && c.churned_at.is_none_or(|x| x > from),
                c.churned_at.is_some_and(|x| x > from && x < to),
            ),
        };
        if in_base {
            let keys = [
                "all".to_owned(),
                c.contract_type.clone(),
                c.segment.clone(),
                c.customer_since.year().to_string(),
                c.product.clone(),
                c.payment_method.clone().unwrap_or_else(|| "unknown".into()),
            ];
            for (g, k) in groups.iter_mut().zip(keys) {
                let a = g.entry(k).or_default();
                a.base += 1;
                a.base_mrr = a.base_mrr.saturating_add(c.monthly_amount_minor);
                if churned {
                    a.churned += 1;
                    a.churned_mrr = a.churned_mrr.saturating_add(c.monthly_amount_minor);
                }
            }
        }
        listed.push(c);
        if listed.len() >= limit.saturating_mul(2).max(1) {
            listed.sort_by(by_risk);
            listed.truncate(limit);
        }
    })?;
    let rows = |g: BTreeMap<String, Acc>| -> Vec<ChurnRow> {
        g.into_iter()
            .take(limit)
            .map(|(key, a)| ChurnRow {
                key,
                by_count: Ratio::new(a.churned, a.base),
                by_revenue: MoneyRatio::new(a.churned_mrr, a.base_mrr),
            })
            .collect()
    };
    let [overall, by_contract_type, by_segment, by_cohort, by_product, by_payment_method] = groups;
    listed.sort_by(by_risk);
    listed.truncate(limit);
    Ok(ChurnReport {
        as_of: t,
        overall: rows(overall)
            .into_iter()
            .next()
            .unwrap_or_else(|| ChurnRow {
                key: "all".into(),
                ..ChurnRow::default()
            }),
        by_contract_type: rows(by_contract_type),
        by_segment: rows(by_segment),
        by_cohort: rows(by_cohort),
        by_product: rows(by_product),
        by_payment_method: rows(by_payment_method),
        at_risk: Ratio::new(at_risk, active),
        customers: listed,
        customers_total,
    })
}
