//! Queries of the pipeline read model.

#[allow(clippy::wildcard_imports)]
use super::*;

/// What to compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PipelineQuery {
    /// "Now": open deals are those open at this instant.
    pub as_of: DateTime<Utc>,
    /// Closes counted from this instant (inclusive); all history if `None`.
    pub closed_from: Option<DateTime<Utc>>,
    /// Closes counted before this instant (exclusive); `as_of` if `None`.
    pub closed_to: Option<DateTime<Utc>>,
    /// Target for coverage, minor units of the reporting currency.
    pub coverage_target_minor: Option<i64>,
    /// Coverage counts open deals expected to close in `[from, to]` (all if `None`).
    pub coverage_close_window: Option<(NaiveDate, NaiveDate)>,
    /// Most rows per breakdown (default 100, at most 10,000).
    pub limit: Option<usize>,
}

impl PipelineQuery {
    /// Everything known at `as_of`.
    #[must_use]
    pub fn at(as_of: DateTime<Utc>) -> Self {
        PipelineQuery {
            as_of,
            closed_from: None,
            closed_to: None,
            coverage_target_minor: None,
            coverage_close_window: None,
            limit: None,
        }
    }
}

/// One row of a breakdown of open deals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GroupRow {
    /// Dimension value.
    pub key: String,
    /// Open deals.
    pub count: u64,
    /// Σ amount, minor units.
    pub value_minor: i64,
    /// Σ amount × stage probability, minor units.
    pub weighted_minor: i64,
}

/// A breakdown, largest value first, cut at the query's limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Breakdown {
    /// Distinct keys in total.
    pub total_keys: usize,
    /// The rows returned.
    pub rows: Vec<GroupRow>,
}

/// Open pipeline at `as_of`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpenPipeline {
    pub count: u64,
    pub value_minor: i64,
    pub weighted_minor: i64,
    pub by_stage: Breakdown,
    pub by_owner: Breakdown,
    pub by_team: Breakdown,
    pub by_region: Breakdown,
    pub by_product: Breakdown,
    pub by_account: Breakdown,
}

/// Time spent in one stage, in days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StageTime {
    pub stage: String,
    /// Completed visits (left by `as_of`).
    pub completed: Summary,
    /// Age of the visits still open at `as_of`.
    pub current_age: Summary,
}

/// Moves out of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Conversion {
    pub from: String,
    /// Next stage, or `Won` / `Lost`.
    pub to: String,
    pub count: u64,
    /// Share of all exits from `from`.
    pub share: Ratio,
}

/// Wins and losses closed in the period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WinLoss {
    pub won: u64,
    pub won_amount_minor: i64,
    pub lost: u64,
    /// won / (won + lost), new and expansion deals.
    pub win_rate: Ratio,
    /// Mean won amount, major units of the reporting currency × 10^exponent (minor units).
    pub avg_deal_size_minor: Option<f64>,
    /// Losses per reason.
    pub loss_reasons: BTreeMap<String, u64>,
    /// Days from opening to the final win (metric 24).
    pub cycle_days: Summary,
}

/// Pipeline against a target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Coverage {
    pub target_minor: i64,
    pub pipeline_minor: i64,
    pub weighted_minor: i64,
    /// pipeline / target.
    pub ratio: Option<f64>,
    pub weighted_ratio: Option<f64>,
}

/// Deals left out, per reason code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PipelineExclusions {
    pub voided: u64,
    pub test: u64,
    /// Renewals (out of scope of win rate, deal size and cycle).
    pub renewal: u64,
    /// Amounts in another currency than the reporting one.
    pub other_currency: u64,
}

/// The pipeline report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PipelineReport {
    pub as_of: DateTime<Utc>,
    pub currency: String,
    pub open: OpenPipeline,
    pub stage_time: Vec<StageTime>,
    pub conversions: Vec<Conversion>,
    pub closed: WinLoss,
    pub coverage: Option<Coverage>,
    pub excluded: PipelineExclusions,
}

#[allow(clippy::cast_possible_truncation)]
fn weighted(amount_minor: i64, probability: u8) -> i64 {
    // amount × p / 100 in i128, rounded half away from zero; fits i64 since p ≤ 100.
    let v = i128::from(amount_minor) * i128::from(probability);
    let rounded = if v >= 0 {
        (v + 50) / 100
    } else {
        (v - 50) / 100
    };
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

fn breakdown(groups: BTreeMap<String, GroupRow>, limit: usize) -> Breakdown {
    let total_keys = groups.len();
    let mut rows: Vec<GroupRow> = groups.into_values().collect();
    rows.sort_by(|a, b| {
        b.value_minor
            .cmp(&a.value_minor)
            .then_with(|| a.key.cmp(&b.key))
    });
    rows.truncate(limit);
    Breakdown { total_keys, rows }
}

fn add(groups: &mut BTreeMap<String, GroupRow>, key: &str, value: i64, weighted: i64) {
    let row = groups.entry(key.to_owned()).or_insert_with(|| GroupRow {
        key: key.to_owned(),
        ..GroupRow::default()
    });
    row.count += 1;
    row.value_minor = row.value_minor.saturating_add(value);
    row.weighted_minor = row.weighted_minor.saturating_add(weighted);
}

/// Computes the pipeline report.
#[must_use]
pub fn report(state: &PipelineState, config: &PipelineConfig, q: &PipelineQuery) -> PipelineReport {
    let t = q.as_of;
    let currency = config.reporting_currency.as_str();
    let limit = list_limit(q.limit);
    let closed_to = q.closed_to.unwrap_or(t).min(t);
    let in_period = |at: DateTime<Utc>| q.closed_from.is_none_or(|f| at >= f) && at < closed_to;
    let mut excluded = PipelineExclusions::default();
    let mut open = OpenPipeline::default();
    let mut dims: [BTreeMap<String, GroupRow>; 6] = Default::default();
    let mut closed = WinLoss::default();
    let mut cycle = Vec::new();
    let mut stage_done: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut stage_age: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut moves: BTreeMap<(String, String), u64> = BTreeMap::new();
    let (mut cov_value, mut cov_weighted) = (0i64, 0i64);
    for o in state.opportunities.values() {
        if o.is_test {
            excluded.test += 1;
            continue;
        }
        if !o.in_scope() {
            excluded.voided += 1;
            continue;
        }
        for v in o.visits.iter().filter(|v| v.entered_at <= t) {
            match (v.exited_at, &v.exit_to) {
                (Some(out), Some(to)) if out <= t => {
                    stage_done
                        .entry(v.stage.to_string())
                        .or_default()
                        .push(days_between(v.entered_at, out));
                    *moves
                        .entry((v.stage.to_string(), to.to_string()))
                        .or_default() += 1;
                }
                _ => stage_age
                    .entry(v.stage.to_string())
                    .or_default()
                    .push(days_between(v.entered_at, t)),
            }
        }
        if o.open_at(t) {
            let Some(amount) = (o.currency == currency).then_some(o.amount_minor) else {
                excluded.other_currency += 1;
                continue;
            };
            let stage = o.stage_at(t);
            let p = config
                .stage_probabilities
                .get(stage)
                .copied()
                .unwrap_or(o.probability);
            let w = weighted(amount, p);
            open.count += 1;
            open.value_minor = open.value_minor.saturating_add(amount);
            open.weighted_minor = open.weighted_minor.saturating_add(w);
            let rep = state.reps.get(&o.owner);
            let region = rep
                .map(|r| r.region.clone())
                .or_else(|| state.accounts.get(&o.account).map(|a| a.region.clone()));
            let keys = [
                stage,
                o.owner.as_str(),
                rep.map_or("unknown", |r| r.team.as_str()),
                region.as_deref().unwrap_or("unknown"),
                o.product.as_str(),
                o.account.as_str(),
            ];
            for (groups, key) in dims.iter_mut().zip(keys) {
                add(groups, key, amount, w);
            }
            let in_window = q
                .coverage_close_window
                .is_none_or(|(a, b)| o.expected_close >= a && o.expected_close <= b);
            if o.new_business() && in_window {
                cov_value = cov_value.saturating_add(amount);
                cov_weighted = cov_weighted.saturating_add(w);
            }
            continue;
        }
        if !o.new_business() {
            excluded.renewal += 1;
            continue;
        }
        match &o.status {
            OppStatus::Won {
                at,
                amount_minor,
                currency: c,
            } if in_period(*at) => {
                let Some(amount) = (c == currency).then_some(*amount_minor) else {
                    excluded.other_currency += 1;
                    continue;
                };
                closed.won += 1;
                closed.won_amount_minor = closed.won_amount_minor.saturating_add(amount);
                cycle.push(days_between(o.opened_at, *at));
            }
            OppStatus::Lost { at, reason } if in_period(*at) => {
                closed.lost += 1;
                *closed.loss_reasons.entry(reason.to_string()).or_default() += 1;
            }
            _ => {}
        }
    }
    let [by_stage, by_owner, by_team, by_region, by_product, by_account] = dims;
    open.by_stage = breakdown(by_stage, limit);
    open.by_owner = breakdown(by_owner, limit);
    open.by_team = breakdown(by_team, limit);
    open.by_region = breakdown(by_region, limit);
    open.by_product = breakdown(by_product, limit);
    open.by_account = breakdown(by_account, limit);
    closed.win_rate = Ratio::new(closed.won, closed.won + closed.lost);
    closed.avg_deal_size_minor = (closed.won > 0).then(|| {
        crate::shared::i_as_f64(closed.won_amount_minor) / crate::shared::as_f64(closed.won)
    });
    closed.cycle_days = Summary::of(&mut cycle);
    let mut stages: Vec<String> = stage_done.keys().chain(stage_age.keys()).cloned().collect();
    stages.sort();
    stages.dedup();
    let stage_time = stages
        .into_iter()
        .take(limit)
        .map(|stage| StageTime {
            completed: Summary::of(
                stage_done
                    .get_mut(&stage)
                    .map_or(&mut [][..], |v| &mut v[..]),
            ),
            current_age: Summary::of(
                stage_age
                    .get_mut(&stage)
                    .map_or(&mut [][..], |v| &mut v[..]),
            ),
            stage,
        })
        .collect();
    let mut exits: BTreeMap<&str, u64> = BTreeMap::new();
    for ((from, _), n) in &moves {
        *exits.entry(from.as_str()).or_default() += n;
    }
    let conversions = moves
        .iter()
        .take(limit)
        .map(|((from, to), n)| Conversion {
            from: from.clone(),
            to: to.clone(),
            count: *n,
            share: Ratio::new(*n, exits.get(from.as_str()).copied().unwrap_or(0)),
        })
        .collect();
    let ratio = |v: i64, target: i64| {
        (target != 0).then(|| crate::shared::i_as_f64(v) / crate::shared::i_as_f64(target))
    };
    let coverage = q.coverage_target_minor.map(|target| Coverage {
        target_minor: target,
        pipeline_minor: cov_value,
        weighted_minor: cov_weighted,
        ratio: ratio(cov_value, target),
        weighted_ratio: ratio(cov_weighted, target),
    });
    PipelineReport {
        as_of: t,
        currency: currency.to_owned(),
        open,
        stage_time,
        conversions,
        closed,
        coverage,
        excluded,
    }
}
