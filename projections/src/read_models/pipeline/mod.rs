//! Pipeline read model: open opportunities by stage, owner, team, region, product and
//! account; pipeline value and weighted pipeline; time in stage; stage-to-stage conversion;
//! wins and losses (counts, amounts, reasons, win rate); sales cycle; average deal size;
//! coverage against a target (`sales.open_opportunities`, `sales.time_to_close`,
//! `sales.margin`, `sales.stage_duration`, `sales.cycle_duration`,
//! `sales.pipeline_coverage`, `sales.avg_deal_size`, `sales.win_rate` in the metric
//! catalog, `projections/metrics/CATALOG.md`).
//!
//! Rules: voided and test opportunities leave every figure (`VOIDED`, `TEST`); win rate,
//! deal size and cycle cover kinds new and expansion (renewals are `OUT_OF_SCOPE`); a
//! reopened deal counts by its final close; the cycle runs from opening to the final win.
//! Team and region of a closed deal are its owner's at the close (`RepAssigned`).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use crm_domain::aggregates::opportunity::{OpportunityEvent, OpportunityKind};
use crm_domain::aggregates::AgentEvent;
use crm_domain::DomainEvent;
use serde::{Deserialize, Serialize};

use super::AccountFacts;
use crate::projection::{EventContext, Projection};
use crate::shared::Text;
use crate::shared::{days_between, list_limit, Ratio, Summary};
use crate::table::Table;

/// Projection name.
pub const NAME: &str = "pipeline";
/// Code version of the fold; bump on any change of `apply` or the state.
pub const VERSION: u32 = 1;

/// Pipeline configuration (the stage model until `StageModelPublished` exists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Currency of every amount reported; others are counted apart.
    pub reporting_currency: String,
    /// Win probability (percent) per stage name; a stage not listed uses the probability
    /// recorded on the opportunity's latest stage event.
    pub stage_probabilities: BTreeMap<String, u8>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            reporting_currency: "USD".into(),
            stage_probabilities: BTreeMap::new(),
        }
    }
}

/// A rep's team and region (latest `RepAssigned`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rep {
    /// Team.
    pub team: Text,
    /// Region.
    pub region: Text,
}

/// How an opportunity stands.
///
/// In JSON (format 1 snapshots, and any human-readable form) it is internally tagged,
/// `{"status": "won", ...}`; in binary forms (snapshots of format 3 on, bincode), which cannot
/// read an internal tag, it is externally tagged (see [`status_serde`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OppStatus {
    /// In the pipeline.
    Open,
    /// Won.
    Won {
        at: DateTime<Utc>,
        amount_minor: i64,
        currency: Text,
    },
    /// Lost.
    Lost { at: DateTime<Utc>, reason: Text },
    /// Voided: out of every figure.
    Voided { at: DateTime<Utc> },
}

/// The two serialized shapes of [`OppStatus`]: the same variants and fields, tagged inside
/// the object for human-readable formats, outside it for binary ones.
mod status_serde {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::OppStatus;

    macro_rules! repr {
        ($(#[$attr:meta])* $name:ident) => {
            $(#[$attr])*
            pub(super) enum $name<T> {
                Open,
                Won {
                    #[serde(with = "crate::instants")]
                    at: DateTime<Utc>,
                    amount_minor: i64,
                    currency: T,
                },
                Lost {
                    #[serde(with = "crate::instants")]
                    at: DateTime<Utc>,
                    reason: T,
                },
                Voided {
                    #[serde(with = "crate::instants")]
                    at: DateTime<Utc>,
                },
            }

            impl<T: Into<crate::shared::Text>> From<$name<T>> for OppStatus {
                fn from(r: $name<T>) -> OppStatus {
                    match r {
                        $name::Open => OppStatus::Open,
                        $name::Won { at, amount_minor, currency } => OppStatus::Won {
                            at,
                            amount_minor,
                            currency: currency.into(),
                        },
                        $name::Lost { at, reason } => OppStatus::Lost {
                            at,
                            reason: reason.into(),
                        },
                        $name::Voided { at } => OppStatus::Voided { at },
                    }
                }
            }

            impl<'a> From<&'a OppStatus> for $name<&'a str> {
                fn from(s: &'a OppStatus) -> $name<&'a str> {
                    match s {
                        OppStatus::Open => $name::Open,
                        OppStatus::Won { at, amount_minor, currency } => $name::Won {
                            at: *at,
                            amount_minor: *amount_minor,
                            currency,
                        },
                        OppStatus::Lost { at, reason } => $name::Lost { at: *at, reason },
                        OppStatus::Voided { at } => $name::Voided { at: *at },
                    }
                }
            }
        };
    }

    repr!(
        #[derive(Serialize, Deserialize)]
        #[serde(tag = "status", rename_all = "snake_case", rename = "OppStatus")]
        Tagged
    );
    repr!(
        #[derive(Serialize, Deserialize)]
        #[serde(rename_all = "snake_case", rename = "OppStatus")]
        Plain
    );

    impl Serialize for OppStatus {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            if serializer.is_human_readable() {
                Tagged::from(self).serialize(serializer)
            } else {
                Plain::from(self).serialize(serializer)
            }
        }
    }

    impl<'de> Deserialize<'de> for OppStatus {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<OppStatus, D::Error> {
            if deserializer.is_human_readable() {
                Tagged::<String>::deserialize(deserializer).map(OppStatus::from)
            } else {
                Plain::<String>::deserialize(deserializer).map(OppStatus::from)
            }
        }
    }
}

/// One stay of an opportunity in a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    /// Stage.
    pub stage: Text,
    /// Entered.
    #[serde(with = "crate::instants")]
    pub entered_at: DateTime<Utc>,
    /// Left (`None` while it stays).
    #[serde(with = "crate::instants")]
    pub exited_at: Option<DateTime<Utc>>,
    /// Where it went: another stage, `Won`, `Lost` or `Voided`.
    pub exit_to: Option<Text>,
}

/// What the pipeline remembers of an opportunity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opp {
    pub account: Text,
    pub owner: Text,
    pub product: Text,
    pub amount_minor: i64,
    pub currency: Text,
    pub expected_close: NaiveDate,
    pub kind: OpportunityKind,
    pub stage: Text,
    pub probability: u8,
    #[serde(with = "crate::instants")]
    pub opened_at: DateTime<Utc>,
    pub is_test: bool,
    pub status: OppStatus,
    pub visits: Vec<Visit>,
    /// Owner's team and region at the final close.
    pub closed_by: Option<Rep>,
}

impl Opp {
    fn close_visit(&mut self, at: DateTime<Utc>, to: &str) {
        if let Some(v) = self.visits.last_mut().filter(|v| v.exited_at.is_none()) {
            v.exited_at = Some(at);
            v.exit_to = Some(to.into());
        }
    }

    /// Final close instant (won or lost), if closed.
    #[must_use]
    pub fn closed_at(&self) -> Option<DateTime<Utc>> {
        match self.status {
            OppStatus::Won { at, .. } | OppStatus::Lost { at, .. } => Some(at),
            _ => None,
        }
    }

    fn in_scope(&self) -> bool {
        !self.is_test && !matches!(self.status, OppStatus::Voided { .. })
    }

    fn new_business(&self) -> bool {
        matches!(self.kind, OpportunityKind::New | OpportunityKind::Expansion)
    }

    /// Open at `t`: opened by then and not closed by then.
    fn open_at(&self, t: DateTime<Utc>) -> bool {
        self.opened_at <= t && self.closed_at().is_none_or(|c| c > t)
    }

    /// Stage at `t` (the last visit entered by then).
    fn stage_at(&self, t: DateTime<Utc>) -> &str {
        self.visits
            .iter()
            .rev()
            .find(|v| v.entered_at <= t)
            .map_or(self.stage.as_str(), |v| v.stage.as_str())
    }
}

/// The pipeline state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineState {
    /// Reps by agent id.
    pub reps: BTreeMap<Text, Rep>,
    /// Accounts by id.
    pub accounts: Table<AccountFacts>,
    /// Opportunities by id.
    pub opportunities: Table<Opp>,
}

/// The pipeline projection.
#[derive(Debug, Clone, Default)]
pub struct PipelineProjection {
    config: PipelineConfig,
}

impl PipelineProjection {
    /// With `config`.
    #[must_use]
    pub fn new(config: PipelineConfig) -> Self {
        PipelineProjection { config }
    }

    /// The configuration.
    #[must_use]
    pub fn config_ref(&self) -> &PipelineConfig {
        &self.config
    }
}

fn fold_opportunity(state: &mut PipelineState, event: &OpportunityEvent) {
    use OpportunityEvent as E;
    let id = event.aggregate_id().as_str();
    if let E::OpportunityOpened(e) = event {
        state.opportunities.insert(
            id.into(),
            Opp {
                account: e.account_id.as_str().into(),
                owner: e.owner.as_str().into(),
                product: e.product.as_str().into(),
                amount_minor: e.amount.minor_units,
                currency: e.amount.currency.as_str().into(),
                expected_close: e.expected_close,
                kind: e.kind,
                stage: e.stage.as_str().into(),
                probability: e.probability.value(),
                opened_at: e.occurred_at,
                is_test: e.is_test,
                status: OppStatus::Open,
                visits: vec![Visit {
                    stage: e.stage.as_str().into(),
                    entered_at: e.occurred_at,
                    exited_at: None,
                    exit_to: None,
                }],
                closed_by: None,
            },
        );
        return;
    }
    let PipelineState {
        reps,
        opportunities,
        ..
    } = state;
    let rep_of = |owner: &str| reps.get(owner).cloned();
    let Some(o) = opportunities.get_mut(id) else {
        return;
    };
    match event {
        E::OpportunityOpened(_) => {}
        E::OpportunityStageChanged(e) => {
            o.close_visit(e.occurred_at, e.to.as_str());
            o.stage = e.to.as_str().into();
            o.probability = e.probability.value();
            o.visits.push(Visit {
                stage: o.stage.clone(),
                entered_at: e.occurred_at,
                exited_at: None,
                exit_to: None,
            });
        }
        E::OpportunityAmountChanged(e) => o.amount_minor = e.to.minor_units,
        E::OpportunityCloseDateChanged(e) => o.expected_close = e.to,
        E::OpportunityOwnerChanged(e) => o.owner = e.to.as_str().into(),
        E::CompetitorIdentified(_) | E::ProposalSent(_) => {}
        E::OpportunityWon(e) => {
            o.close_visit(e.occurred_at, "Won");
            o.status = OppStatus::Won {
                at: e.occurred_at,
                amount_minor: e.amount.minor_units,
                currency: e.amount.currency.as_str().into(),
            };
            o.closed_by = rep_of(&o.owner);
        }
        E::OpportunityLost(e) => {
            o.close_visit(e.occurred_at, "Lost");
            o.status = OppStatus::Lost {
                at: e.occurred_at,
                reason: serde_json::to_value(e.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(Text::from))
                    .unwrap_or_else(|| "other".into()),
            };
            o.closed_by = rep_of(&o.owner);
        }
        E::OpportunityReopened(e) => {
            o.status = OppStatus::Open;
            o.closed_by = None;
            o.visits.push(Visit {
                stage: o.stage.clone(),
                entered_at: e.occurred_at,
                exited_at: None,
                exit_to: None,
            });
        }
        E::OpportunityVoided(e) => {
            o.close_visit(e.occurred_at, "Voided");
            o.status = OppStatus::Voided { at: e.occurred_at };
        }
    }
}

impl Projection for PipelineProjection {
    type State = PipelineState;

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
            DomainEvent::category_of(event_type),
            Some("opportunity" | "account")
        ) || event_type == "RepAssigned"
    }

    fn fault(&self, state: &PipelineState) -> Option<String> {
        state
            .accounts
            .fault()
            .or_else(|| state.opportunities.fault())
            .map(str::to_owned)
    }

    fn apply(&self, state: &mut PipelineState, _ctx: &EventContext<'_>, event: &DomainEvent) {
        match event {
            DomainEvent::Opportunity(e) => fold_opportunity(state, e),
            DomainEvent::Account(e) => AccountFacts::fold(&mut state.accounts, e),
            DomainEvent::Agent(AgentEvent::RepAssigned(e)) => {
                state.reps.insert(
                    e.agent_id.as_str().into(),
                    Rep {
                        team: e.team.as_str().into(),
                        region: e.region.as_str().into(),
                    },
                );
            }
            _ => {}
        }
    }
}

mod report;
pub use report::*;
