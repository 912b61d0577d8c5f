//! The four read models of the CRM and their configuration, registered together.
//!
//! Each read model is a [`crate::Projection`] (state + pure fold) plus a query function
//! returning serde-serializable report structs; "now" (`as_of`) is always a query parameter.
//!
//! Reference data the metric definitions expect as events (`StageModelPublished`,
//! `SlaPolicyPublished`, `BusinessCalendarPublished`, `FxRatePublished`) has no event type in
//! `crm-domain` yet, so it is configuration here ([`ReadModelConfig`]); a configuration
//! change rebuilds the projections that depend on it. Amounts in another currency than the
//! configured reporting currency are counted apart, never converted.

pub mod cases;
pub mod churn;
pub mod lifetime_value;
pub mod pipeline;
pub mod sla;

use crm_eventstore::EventStore;
use serde::{Deserialize, Serialize};

use crate::error::ProjectionError;
use crate::runner::{ProjectionHandle, ProjectionRunner};
use crate::shared::Text;

pub use churn::{ChurnConfig, ChurnProjection};
pub use lifetime_value::{LifetimeValueConfig, LifetimeValueProjection};
pub use pipeline::{PipelineConfig, PipelineProjection};
pub use sla::{SlaConfig, SlaProjection};

/// Configuration of all read models (file section `[projections]` in the gateway).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadModelConfig {
    /// Pipeline: reporting currency, stage probabilities.
    pub pipeline: PipelineConfig,
    /// Churn signals: risk weights and windows.
    pub churn: ChurnConfig,
    /// Lifetime value: margin assumption, lifetime cap.
    pub lifetime_value: LifetimeValueConfig,
    /// SLA: policies and business calendar (also used for the churn signal "SLA breaches").
    pub sla: SlaConfig,
    /// Memory of each read-model table (cases, subscriptions, orders, ...) in MiB: its two
    /// generations of recent entries; the rest is on disk (see [`crate::table`]). More
    /// catches up faster over a long history and holds more. Default 4 (two of
    /// [`crate::table::GENERATION_BYTES_DEFAULT`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_memory_mib: Option<u64>,
}

impl ReadModelConfig {
    /// Sets the process's table generation size from `table_memory_mib` (the default when
    /// absent), for the tables created from now on. Not part of any projection's
    /// configuration: changing it does not rebuild a read model.
    pub fn apply_table_memory(&self) {
        let bytes = self
            .table_memory_mib
            .map_or(crate::table::GENERATION_BYTES_DEFAULT, |mib| {
                usize::try_from(mib.saturating_mul(1024 * 1024) / 2).unwrap_or(usize::MAX)
            });
        crate::table::set_generation_bytes(bytes);
    }
}

/// Handles on the four registered read models.
#[derive(Clone)]
pub struct ReadModels {
    /// `pipeline`.
    pub pipeline: ProjectionHandle<PipelineProjection>,
    /// `churn`.
    pub churn: ProjectionHandle<ChurnProjection>,
    /// `lifetime-value`.
    pub lifetime_value: ProjectionHandle<LifetimeValueProjection>,
    /// `sla`.
    pub sla: ProjectionHandle<SlaProjection>,
}

/// Names of the standard projections, for `crm project run NAME`.
pub const STANDARD_NAMES: [&str; 4] =
    [pipeline::NAME, churn::NAME, lifetime_value::NAME, sla::NAME];

impl ReadModels {
    /// Registers the four read models with `runner`.
    ///
    /// # Errors
    /// As [`ProjectionRunner::register`].
    pub fn register<S: EventStore>(
        runner: &mut ProjectionRunner<S>,
        config: &ReadModelConfig,
    ) -> Result<ReadModels, ProjectionError> {
        Ok(ReadModels {
            pipeline: runner.register(PipelineProjection::new(config.pipeline.clone()))?,
            churn: runner.register(ChurnProjection::new(
                config.churn.clone(),
                config.sla.clone(),
            ))?,
            lifetime_value: runner
                .register(LifetimeValueProjection::new(config.lifetime_value.clone()))?,
            sla: runner.register(SlaProjection::new(config.sla.clone()))?,
        })
    }
}

/// What every read model remembers of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountFacts {
    /// Segment.
    pub segment: Text,
    /// Region.
    pub region: Text,
    /// Internal account (left out of customer metrics).
    pub is_internal: bool,
    /// Test account.
    pub is_test: bool,
}

impl AccountFacts {
    /// Folds an account event into `accounts`.
    pub fn fold(
        accounts: &mut crate::table::Table<AccountFacts>,
        event: &crm_domain::aggregates::AccountEvent,
    ) {
        use crm_domain::aggregates::AccountEvent as E;
        match event {
            E::AccountOpened(e) => {
                accounts.insert(
                    e.account_id.as_str().into(),
                    AccountFacts {
                        segment: e.segment.as_str().into(),
                        region: e.region.as_str().into(),
                        is_internal: e.is_internal,
                        is_test: e.is_test,
                    },
                );
            }
            E::AccountSegmentChanged(e) => {
                if let Some(a) = accounts.get_mut(e.account_id.as_str()) {
                    a.segment = e.to.as_str().into();
                }
            }
            E::AccountOwnerChanged(_) => {}
        }
    }

    /// Excluded from customer metrics (`TEST`, `INTERNAL`).
    #[must_use]
    pub fn excluded(&self) -> bool {
        self.is_test || self.is_internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_memory_setting_sizes_the_generations_of_tables_made_after_it() {
        let config: ReadModelConfig = serde_json::from_str(r#"{"table_memory_mib": 16}"#).unwrap();
        config.apply_table_memory();
        assert_eq!(crate::table::generation_bytes(), 8 * 1024 * 1024);
        ReadModelConfig::default().apply_table_memory();
        assert_eq!(
            crate::table::generation_bytes(),
            crate::table::GENERATION_BYTES_DEFAULT
        );
        let err = serde_json::from_str::<ReadModelConfig>(r#"{"table_memory": 16}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `table_memory`"),
            "{err}"
        );
    }
}
