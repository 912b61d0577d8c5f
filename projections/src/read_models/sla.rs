//! SLA compliance read model: per-case target clocks on a business calendar with pauses,
//! breaches detected at query time `t` (no event needed at the deadline), compliance by
//! team, agent, priority and channel; first-contact resolution, average handle time,
//! backlog, reopen and escalation rates, and the service summary (case count, time to close,
//! closed the same day): `service.cases_closed_same_day`, `service.sla_compliance`,
//! `service.first_contact_resolution`, `service.avg_handle_time`,
//! `service.sla_first_response` and `service.sla_resolution` in the metric catalog,
//! `projections/metrics/CATALOG.md`.
//!
//! Rules: test cases leave every figure; cases closed as spam/invalid/test leave SLA figures
//! (`INVALID`); cases without a policy are counted as `NO_POLICY`; undecided cases are
//! `PENDING` (out of the denominator, counted beside it). First-contact resolution: finally
//! resolved with the agent's first-contact flag, never escalated, never reopened. Handle
//! time: connected service interactions on phone or chat of at least 10 s, over all history.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_domain::aggregates::case::CasePriority;
use crm_domain::aggregates::interaction::{InteractionEvent, InteractionOutcome, Purpose};
use crm_domain::values::Channel;
use crm_domain::DomainEvent;
use serde::{Deserialize, Serialize};

use super::cases::{fold_case, CaseFacts, SlaPolicy, TargetOutcome};
use crate::calendar::BusinessCalendar;
use crate::projection::{EventContext, Projection};
use crate::shared::Text;
use crate::shared::{as_f64, list_limit, Ratio, Summary};
use crate::table::Table;

/// Projection name.
pub const NAME: &str = "sla";
/// Code version of the fold.
pub const VERSION: u32 = 1;
/// Interactions shorter than this are misdials, not handled contacts.
pub const HANDLE_TIME_MIN_S: u32 = 10;

/// SLA policies and the business calendar (until `SlaPolicyPublished` and
/// `BusinessCalendarPublished` exist as events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlaConfig {
    /// The calendar every policy's clock runs on.
    pub calendar: BusinessCalendar,
    /// Policies, tried in order.
    pub policies: Vec<SlaPolicy>,
}

impl Default for SlaConfig {
    /// Business hours Mon–Fri 09–17 UTC; by priority: urgent 1 h / 8 h, high 4 h / 16 h,
    /// normal 8 h / 40 h, low 16 h / 80 h (first response / resolution, business time).
    fn default() -> Self {
        let policy = |name: &str, priority, fr_h: u32, res_h: u32| SlaPolicy {
            name: name.into(),
            priority: Some(priority),
            channel: None,
            first_response_minutes: fr_h * 60,
            resolution_minutes: res_h * 60,
        };
        SlaConfig {
            calendar: BusinessCalendar::default(),
            policies: vec![
                policy("urgent", CasePriority::Urgent, 1, 8),
                policy("high", CasePriority::High, 4, 16),
                policy("normal", CasePriority::Normal, 8, 40),
                policy("low", CasePriority::Low, 16, 80),
            ],
        }
    }
}

/// Handle-time totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleTotals {
    /// Interactions handled.
    pub count: u64,
    /// Σ (talk + hold + wrap) seconds.
    pub total_s: u64,
}

/// The SLA state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaState {
    /// Cases by id.
    pub cases: Table<CaseFacts>,
    /// Handle time per agent (`unknown` when none is named).
    pub handle_by_agent: BTreeMap<Text, HandleTotals>,
    /// Handle time per channel.
    pub handle_by_channel: BTreeMap<Text, HandleTotals>,
}

/// The SLA projection.
#[derive(Debug, Clone, Default)]
pub struct SlaProjection {
    config: SlaConfig,
}

impl SlaProjection {
    /// With `config`.
    #[must_use]
    pub fn new(config: SlaConfig) -> Self {
        SlaProjection { config }
    }

    /// The configuration.
    #[must_use]
    pub fn config_ref(&self) -> &SlaConfig {
        &self.config
    }
}

pub(crate) fn label<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

impl Projection for SlaProjection {
    type State = SlaState;

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
        event_type == "InteractionLogged" || DomainEvent::category_of(event_type) == Some("case")
    }

    fn fault(&self, state: &SlaState) -> Option<String> {
        state.cases.fault().map(str::to_owned)
    }

    fn apply(&self, state: &mut SlaState, _ctx: &EventContext<'_>, event: &DomainEvent) {
        match event {
            DomainEvent::Case(e) => fold_case(
                &mut state.cases,
                e,
                &self.config.policies,
                &self.config.calendar,
            ),
            DomainEvent::Interaction(InteractionEvent::InteractionLogged(e)) => {
                let handled = e.purpose == Purpose::Service
                    && e.outcome == InteractionOutcome::Connected
                    && matches!(e.channel, Channel::Phone | Channel::Chat)
                    && e.duration_s >= HANDLE_TIME_MIN_S
                    && !e.is_test;
                if handled {
                    let secs = u64::from(e.duration_s) + u64::from(e.hold_s) + u64::from(e.wrap_s);
                    let agent = e.agent.as_ref().map_or("unknown", |a| a.as_str()).into();
                    for totals in [
                        state.handle_by_agent.entry(agent).or_default(),
                        state
                            .handle_by_channel
                            .entry(label(&e.channel).into())
                            .or_default(),
                    ] {
                        totals.count += 1;
                        totals.total_s += secs;
                    }
                }
            }
            _ => {}
        }
    }
}

/// What to compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SlaQuery {
    /// "Now": cases are evaluated as of this instant.
    pub as_of: DateTime<Utc>,
    /// Compliance counts cases decided from this instant (all if `None`).
    pub decided_from: Option<DateTime<Utc>>,
    /// ... and before this one (`as_of` if `None`).
    pub decided_to: Option<DateTime<Utc>>,
    /// Most rows per list (default 100, at most 10,000).
    pub limit: Option<usize>,
}

impl SlaQuery {
    /// Everything as of `as_of`.
    #[must_use]
    pub fn at(as_of: DateTime<Utc>) -> Self {
        SlaQuery {
            as_of,
            decided_from: None,
            decided_to: None,
            limit: None,
        }
    }
}

/// Compliance of one group of cases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ComplianceRow {
    /// Group key (`all` for the total).
    pub key: String,
    /// Cases with every target met / cases decided.
    pub compliance: Ratio,
    /// First response met / decided.
    pub first_response: Ratio,
    /// Resolution met / decided.
    pub resolution: Ratio,
    /// Cases not decided yet.
    pub pending: u64,
}

#[derive(Default)]
struct Tally {
    met: u64,
    decided: u64,
    fr_met: u64,
    fr_decided: u64,
    res_met: u64,
    res_decided: u64,
    pending: u64,
}

impl Tally {
    fn row(&self, key: String) -> ComplianceRow {
        ComplianceRow {
            key,
            compliance: Ratio::new(self.met, self.decided),
            first_response: Ratio::new(self.fr_met, self.fr_decided),
            resolution: Ratio::new(self.res_met, self.res_decided),
            pending: self.pending,
        }
    }
}

/// A case breached by `as_of`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Breach {
    pub case: String,
    pub policy: String,
    /// `first_response` or `resolution`.
    pub target: String,
    pub due: DateTime<Utc>,
    pub team: Option<String>,
    pub agent: Option<String>,
    pub priority: String,
}

/// Average handle time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HandleTimeRow {
    pub key: String,
    pub count: u64,
    /// Mean seconds per handled interaction.
    pub average_s: Option<f64>,
}

/// Open cases at `as_of`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Backlog {
    pub open: u64,
    /// Of which with a paused clock.
    pub paused: u64,
    pub by_priority: BTreeMap<String, u64>,
}

/// Case counts and durations (all non-test cases, invalid ones included).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceSummary {
    /// Cases opened by `as_of`.
    pub cases: u64,
    /// Closed by `as_of`.
    pub closed: u64,
    /// Closed as spam, invalid or test.
    pub invalid: u64,
    /// Hours from opening to the (current) close.
    pub hours_to_close: Summary,
    /// Hours from opening to the final resolution.
    pub hours_to_resolve: Summary,
    /// Closed on the local date they opened / closed.
    pub closed_same_day: Ratio,
}

/// Cases left out of SLA figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SlaExclusions {
    pub test: u64,
    pub invalid: u64,
    pub no_policy: u64,
}

/// The SLA report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SlaReport {
    pub as_of: DateTime<Utc>,
    pub overall: ComplianceRow,
    pub by_team: Vec<ComplianceRow>,
    pub by_agent: Vec<ComplianceRow>,
    pub by_priority: Vec<ComplianceRow>,
    pub by_channel: Vec<ComplianceRow>,
    /// Targets breached by `as_of`, latest due first (cut at the limit).
    pub breaches: Vec<Breach>,
    pub breaches_total: u64,
    pub first_contact_resolution: Ratio,
    pub handle_time: HandleTimeRow,
    pub handle_time_by_agent: Vec<HandleTimeRow>,
    pub handle_time_by_channel: Vec<HandleTimeRow>,
    pub backlog: Backlog,
    /// Cases reopened / cases ever resolved.
    pub reopen_rate: Ratio,
    /// Cases escalated / cases opened.
    pub escalation_rate: Ratio,
    pub excluded: SlaExclusions,
    pub service: ServiceSummary,
}

fn handle_row(key: String, t: HandleTotals) -> HandleTimeRow {
    HandleTimeRow {
        key,
        count: t.count,
        average_s: (t.count > 0).then(|| as_f64(t.total_s) / as_f64(t.count)),
    }
}

fn hours(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    crate::shared::i_as_f64((b - a).num_seconds()) / 3600.0
}

/// Computes the SLA report at `q.as_of`.
#[must_use]
pub fn report(state: &SlaState, config: &SlaConfig, q: &SlaQuery) -> SlaReport {
    let t = q.as_of;
    let limit = list_limit(q.limit);
    let decided_to = q.decided_to.unwrap_or(t).min(t);
    let in_period = |at: DateTime<Utc>| q.decided_from.is_none_or(|f| at >= f) && at < decided_to;
    let mut excluded = SlaExclusions::default();
    let mut overall = Tally::default();
    let mut groups: [BTreeMap<String, Tally>; 4] = Default::default();
    let mut breaches = Vec::new();
    let (mut fcr, mut resolved, mut reopened, mut ever_resolved, mut escalated, mut opened) =
        (0, 0, 0, 0, 0, 0);
    let mut backlog = Backlog::default();
    let mut service = ServiceSummary::default();
    let (mut to_close, mut to_resolve, mut same_day) = (Vec::new(), Vec::new(), 0u64);
    for (id, c) in &state.cases {
        if c.is_test {
            excluded.test += 1;
            continue;
        }
        if c.opened_at > t {
            continue;
        }
        // Service summary: every case.
        service.cases += 1;
        opened += 1;
        if let Some((closed_at, _)) = c.closed.filter(|(at, _)| *at <= t) {
            service.closed += 1;
            to_close.push(hours(c.opened_at, closed_at));
            if config.calendar.local_date(closed_at) == config.calendar.local_date(c.opened_at) {
                same_day += 1;
            }
        }
        if c.is_invalid() {
            service.invalid += 1;
            excluded.invalid += 1;
            continue;
        }
        if c.escalations.iter().any(|e| *e <= t) {
            escalated += 1;
        }
        if c.ever_resolved {
            ever_resolved += 1;
            if c.reopens > 0 {
                reopened += 1;
            }
        }
        if let Some(r) = c.resolved_by_t(t) {
            resolved += 1;
            to_resolve.push(hours(c.opened_at, r));
            if c.first_contact && c.reopens == 0 && c.escalations.is_empty() {
                fcr += 1;
            }
        }
        if c.open_at(t) {
            backlog.open += 1;
            if c.pauses
                .iter()
                .any(|(s, e)| *s <= t && e.is_none_or(|e| e > t))
            {
                backlog.paused += 1;
            }
            *backlog.by_priority.entry(label(&c.priority)).or_default() += 1;
        }
        let Some(policy) = c.policy.as_ref() else {
            excluded.no_policy += 1;
            continue;
        };
        let (fr, res) = (c.first_response(t), c.resolution(t));
        for (name, o) in [("first_response", fr), ("resolution", res)] {
            if let TargetOutcome::Breached { due } = o {
                breaches.push(Breach {
                    case: id.to_string(),
                    policy: policy.to_string(),
                    target: name.into(),
                    due,
                    team: c.team.as_ref().map(Text::to_string),
                    agent: c.agent.as_ref().map(Text::to_string),
                    priority: label(&c.priority),
                });
            }
        }
        let keys = [
            c.team.as_deref().unwrap_or("unassigned").to_owned(),
            c.resolved_by
                .as_deref()
                .or(c.agent.as_deref())
                .unwrap_or("unassigned")
                .to_owned(),
            label(&c.priority),
            label(&c.channel),
        ];
        let whole = c.compliance(t);
        let tallies = std::iter::once(&mut overall).chain(
            groups
                .iter_mut()
                .zip(keys)
                .map(|(g, k)| g.entry(k).or_default()),
        );
        for tally in tallies {
            match whole {
                TargetOutcome::Met { at } if in_period(at) => {
                    tally.met += 1;
                    tally.decided += 1;
                }
                TargetOutcome::Breached { due } if in_period(due) => tally.decided += 1,
                TargetOutcome::Pending => tally.pending += 1,
                _ => {}
            }
            for (o, met, decided) in [
                (fr, &mut tally.fr_met, &mut tally.fr_decided),
                (res, &mut tally.res_met, &mut tally.res_decided),
            ] {
                match o {
                    TargetOutcome::Met { at } if in_period(at) => {
                        *met += 1;
                        *decided += 1;
                    }
                    TargetOutcome::Breached { due } if in_period(due) => *decided += 1,
                    _ => {}
                }
            }
        }
    }
    let rows = |g: BTreeMap<String, Tally>| -> Vec<ComplianceRow> {
        g.into_iter().take(limit).map(|(k, t)| t.row(k)).collect()
    };
    let [by_team, by_agent, by_priority, by_channel] = groups;
    breaches.sort_by(|a, b| b.due.cmp(&a.due).then_with(|| a.case.cmp(&b.case)));
    let breaches_total = u64::try_from(breaches.len()).unwrap_or(u64::MAX);
    breaches.truncate(limit);
    let total = state
        .handle_by_channel
        .values()
        .fold(HandleTotals::default(), |a, b| HandleTotals {
            count: a.count + b.count,
            total_s: a.total_s + b.total_s,
        });
    service.hours_to_close = Summary::of(&mut to_close);
    service.hours_to_resolve = Summary::of(&mut to_resolve);
    service.closed_same_day = Ratio::new(same_day, service.closed);
    SlaReport {
        as_of: t,
        overall: overall.row("all".into()),
        by_team: rows(by_team),
        by_agent: rows(by_agent),
        by_priority: rows(by_priority),
        by_channel: rows(by_channel),
        breaches,
        breaches_total,
        first_contact_resolution: Ratio::new(fcr, resolved),
        handle_time: handle_row("all".into(), total),
        handle_time_by_agent: state
            .handle_by_agent
            .iter()
            .take(limit)
            .map(|(k, v)| handle_row(k.to_string(), *v))
            .collect(),
        handle_time_by_channel: state
            .handle_by_channel
            .iter()
            .take(limit)
            .map(|(k, v)| handle_row(k.to_string(), *v))
            .collect(),
        backlog,
        reopen_rate: Ratio::new(reopened, ever_resolved),
        escalation_rate: Ratio::new(escalated, opened),
        excluded,
        service,
    }
}

/// One case's evaluation at `as_of` (for `crm sla case ID`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CaseSla {
    pub case: String,
    pub policy: Option<String>,
    pub first_response_due: Option<DateTime<Utc>>,
    pub resolution_due: Option<DateTime<Utc>>,
    pub first_response: TargetOutcome,
    pub resolution: TargetOutcome,
    pub compliance: TargetOutcome,
}

/// Evaluates one case at `as_of`; `None` if unknown.
#[must_use]
pub fn case_at(state: &SlaState, case: &str, as_of: DateTime<Utc>) -> Option<CaseSla> {
    state.cases.get(case).map(|c| CaseSla {
        case: case.to_owned(),
        policy: c.policy.as_ref().map(Text::to_string),
        first_response_due: c.first_response_due,
        resolution_due: c.resolution_due,
        first_response: c.first_response(as_of),
        resolution: c.resolution(as_of),
        compliance: c.compliance(as_of),
    })
}
