//! The case timeline every service-facing read model folds (SLA compliance, churn signals):
//! what happened to a case, its SLA policy and its due instants (the final resolution, the
//! business clock and the SLA due instants the service metrics of the metric catalog,
//! `projections/metrics/CATALOG.md`, are defined on).
//!
//! Due instants are stored and re-derived whenever the clock's stops change (a pause, a
//! resume, a reopen), so a query at any instant `t` reports a case breached by `t` even when
//! no event arrived at the deadline. The policy is the one in force at `CaseOpened`; a
//! priority change does not re-derive it.

use chrono::{DateTime, Utc};
use crm_domain::aggregates::case::{CaseEvent, CasePriority, CloseCode};
use crm_domain::values::Channel;
use serde::{Deserialize, Serialize};

use crate::calendar::{self, BusinessCalendar, Stop};
use crate::shared::Text;

/// First-response and resolution targets for cases of a priority and channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaPolicy {
    /// Name; a case naming it in `CaseOpened.sla_policy` gets it.
    pub name: String,
    /// Priority it covers (`None`: any).
    pub priority: Option<CasePriority>,
    /// Channel it covers (`None`: any).
    pub channel: Option<Channel>,
    /// First response within this many business minutes.
    pub first_response_minutes: u32,
    /// Resolution within this many business minutes.
    pub resolution_minutes: u32,
}

/// Picks the policy of a case: the one it names, else the first matching its priority and
/// channel, else none (`NO_POLICY`).
#[must_use]
pub fn policy_for<'a>(
    policies: &'a [SlaPolicy],
    named: Option<&str>,
    priority: CasePriority,
    channel: Channel,
) -> Option<&'a SlaPolicy> {
    named
        .and_then(|n| policies.iter().find(|p| p.name == n))
        .or_else(|| {
            policies.iter().find(|p| {
                p.priority.is_none_or(|x| x == priority) && p.channel.is_none_or(|x| x == channel)
            })
        })
}

/// Everything the service read models know of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseFacts {
    pub account: Option<Text>,
    #[serde(with = "crate::instants")]
    pub opened_at: DateTime<Utc>,
    pub case_type: Text,
    pub priority: CasePriority,
    pub channel: Channel,
    pub is_complaint: bool,
    pub is_test: bool,
    /// Policy applied (`None`: no policy).
    pub policy: Option<Text>,
    pub first_response_target_s: Option<i64>,
    pub resolution_target_s: Option<i64>,
    pub team: Option<Text>,
    pub agent: Option<Text>,
    /// First response by a person (automated acknowledgements do not count).
    #[serde(with = "crate::instants")]
    pub first_response_at: Option<DateTime<Utc>>,
    /// SLA pauses (waiting on customer ...).
    #[serde(with = "crate::instants")]
    pub pauses: Vec<Stop>,
    /// Resolved → reopened gaps (the resolution clock does not run in them).
    #[serde(with = "crate::instants")]
    pub resolved_gaps: Vec<Stop>,
    /// Current (final unless reopened later) resolution.
    #[serde(with = "crate::instants")]
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<Text>,
    pub first_contact: bool,
    pub ever_resolved: bool,
    pub reopens: u32,
    #[serde(with = "crate::instants")]
    pub escalations: Vec<DateTime<Utc>>,
    /// Current close, if closed.
    #[serde(with = "crate::instants")]
    pub closed: Option<(DateTime<Utc>, CloseCode)>,
    /// Derived: when the first response is due (`None`: no policy, or the clock is stopped).
    #[serde(with = "crate::instants")]
    pub first_response_due: Option<DateTime<Utc>>,
    /// Derived: when the resolution is due.
    #[serde(with = "crate::instants")]
    pub resolution_due: Option<DateTime<Utc>>,
}

/// How one target stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TargetOutcome {
    /// Met at `at`.
    Met { at: DateTime<Utc> },
    /// Breached at its due instant.
    Breached { due: DateTime<Utc> },
    /// Not decided yet.
    Pending,
    /// The case has no policy.
    NoPolicy,
}

impl TargetOutcome {
    fn decided_at(self) -> Option<DateTime<Utc>> {
        match self {
            TargetOutcome::Met { at } => Some(at),
            TargetOutcome::Breached { due } => Some(due),
            _ => None,
        }
    }
}

fn outcome(
    target: Option<i64>,
    done: Option<DateTime<Utc>>,
    due: Option<DateTime<Utc>>,
    t: DateTime<Utc>,
) -> TargetOutcome {
    if target.is_none() {
        return TargetOutcome::NoPolicy;
    }
    match (done.filter(|d| *d <= t), due) {
        (Some(at), Some(due)) if at > due => TargetOutcome::Breached { due },
        (Some(at), _) => TargetOutcome::Met { at },
        (None, Some(due)) if due <= t => TargetOutcome::Breached { due },
        (None, _) => TargetOutcome::Pending,
    }
}

impl CaseFacts {
    /// Closed as spam, invalid or test (`INVALID`): out of SLA figures.
    #[must_use]
    pub fn is_invalid(&self) -> bool {
        matches!(
            self.closed,
            Some((_, CloseCode::Spam | CloseCode::Invalid | CloseCode::Test))
        )
    }

    /// The final resolution, if resolved by `t`.
    #[must_use]
    pub fn resolved_by_t(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.resolved_at.filter(|r| *r <= t)
    }

    /// Open at `t`: opened, neither resolved nor closed by then.
    #[must_use]
    pub fn open_at(&self, t: DateTime<Utc>) -> bool {
        self.opened_at <= t
            && self.resolved_by_t(t).is_none()
            && self.closed.is_none_or(|(at, _)| at > t)
    }

    /// First-response outcome at `t` (a resolution also answers the customer).
    #[must_use]
    pub fn first_response(&self, t: DateTime<Utc>) -> TargetOutcome {
        let done = match (self.first_response_at, self.resolved_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        outcome(
            self.first_response_target_s,
            done,
            self.first_response_due,
            t,
        )
    }

    /// Resolution outcome at `t`.
    #[must_use]
    pub fn resolution(&self, t: DateTime<Utc>) -> TargetOutcome {
        outcome(
            self.resolution_target_s,
            self.resolved_at,
            self.resolution_due,
            t,
        )
    }

    /// Whole-case outcome at `t`: met when every target is met, breached when one is.
    #[must_use]
    pub fn compliance(&self, t: DateTime<Utc>) -> TargetOutcome {
        let (fr, res) = (self.first_response(t), self.resolution(t));
        match (fr, res) {
            (TargetOutcome::NoPolicy, _) | (_, TargetOutcome::NoPolicy) => TargetOutcome::NoPolicy,
            (TargetOutcome::Breached { due: a }, TargetOutcome::Breached { due: b }) => {
                TargetOutcome::Breached { due: a.min(b) }
            }
            (TargetOutcome::Breached { due }, _) | (_, TargetOutcome::Breached { due }) => {
                TargetOutcome::Breached { due }
            }
            (TargetOutcome::Met { at: a }, TargetOutcome::Met { at: b }) => {
                TargetOutcome::Met { at: a.max(b) }
            }
            _ => TargetOutcome::Pending,
        }
    }

    /// Instant the case's compliance was decided, if decided by `t`.
    #[must_use]
    pub fn decided_at(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.compliance(t).decided_at()
    }

    fn derive_dues(&mut self, calendar: &BusinessCalendar) {
        self.first_response_due = self
            .first_response_target_s
            .and_then(|s| calendar::due(calendar, self.opened_at, s, &self.pauses));
        let mut stops = self.pauses.clone();
        stops.extend(self.resolved_gaps.iter().copied());
        self.resolution_due = self
            .resolution_target_s
            .and_then(|s| calendar::due(calendar, self.opened_at, s, &stops));
    }
}

/// Folds a case event into `cases`, deriving policies and due instants.
pub fn fold_case(
    cases: &mut crate::table::Table<CaseFacts>,
    event: &CaseEvent,
    policies: &[SlaPolicy],
    calendar: &BusinessCalendar,
) {
    use CaseEvent as E;
    let id = event.aggregate_id().as_str();
    if let E::CaseOpened(e) = event {
        let policy = policy_for(
            policies,
            e.sla_policy.as_ref().map(|l| l.as_str()),
            e.priority,
            e.channel,
        );
        let mut c = CaseFacts {
            account: e.account_id.as_ref().map(|a| a.as_str().into()),
            opened_at: e.occurred_at,
            case_type: e.case_type.as_str().into(),
            priority: e.priority,
            channel: e.channel,
            is_complaint: e.is_complaint,
            is_test: e.is_test,
            policy: policy.map(|p| p.name.as_str().into()),
            first_response_target_s: policy.map(|p| i64::from(p.first_response_minutes) * 60),
            resolution_target_s: policy.map(|p| i64::from(p.resolution_minutes) * 60),
            team: None,
            agent: None,
            first_response_at: None,
            pauses: Vec::new(),
            resolved_gaps: Vec::new(),
            resolved_at: None,
            resolved_by: None,
            first_contact: false,
            ever_resolved: false,
            reopens: 0,
            escalations: Vec::new(),
            closed: None,
            first_response_due: None,
            resolution_due: None,
        };
        c.derive_dues(calendar);
        cases.insert(id.into(), c);
        return;
    }
    let Some(c) = cases.get_mut(id) else {
        return;
    };
    match event {
        E::CaseOpened(_) => {}
        E::CaseReclassified(e) => {
            c.case_type = e.case_type.as_str().into();
            c.priority = e.priority;
            c.is_complaint = c.is_complaint || e.is_complaint;
        }
        E::CaseAssigned(e) => {
            c.agent = Some(e.agent.as_str().into());
            c.team = e.team.as_ref().map(|t| t.as_str().into());
        }
        E::CaseFirstResponded(e) => {
            if !e.automated && c.first_response_at.is_none() {
                c.first_response_at = Some(e.occurred_at);
            }
        }
        E::CaseSlaPaused(e) => {
            c.pauses.push((e.occurred_at, None));
            c.derive_dues(calendar);
        }
        E::CaseSlaResumed(e) => {
            if let Some(p) = c.pauses.iter_mut().rev().find(|p| p.1.is_none()) {
                p.1 = Some(e.occurred_at.max(p.0));
            }
            c.derive_dues(calendar);
        }
        E::CaseEscalated(e) => c.escalations.push(e.occurred_at),
        E::CaseResolved(e) => {
            c.resolved_at = Some(e.occurred_at);
            c.resolved_by = e.agent.as_ref().map(|a| a.as_str().into());
            c.first_contact = e.first_contact;
            c.ever_resolved = true;
        }
        E::CaseReopened(e) => {
            if let Some(r) = c.resolved_at.take() {
                c.resolved_gaps.push((r, Some(e.occurred_at.max(r))));
            }
            c.closed = None;
            c.reopens += 1;
            c.derive_dues(calendar);
        }
        E::CaseClosed(e) => c.closed = Some((e.occurred_at, e.close_code)),
        // The case stays closed at its first close: SLA and durations measure to that close.
        E::CaseCloseRepeated(_) => {}
    }
}
