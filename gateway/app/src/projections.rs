//! The read models as the application runs them: a runner with the four standard
//! projections (or one of them), catching up, rebuilding, and one model's report as JSON.

use std::path::Path;

use chrono::{DateTime, Utc};
use crm_eventstore::AnyStore;
use crm_projections::read_models::STANDARD_NAMES;
use crm_projections::read_models::{churn, lifetime_value, pipeline, sla};
use crm_projections::read_models::{
    ChurnProjection, LifetimeValueProjection, PipelineProjection, SlaProjection,
};
use crm_projections::{
    ProjectionError, ProjectionHandle, ProjectionRunner, ReadModelConfig, ReadModels,
    RebuildReport, RunnerOptions, WorkerStatus,
};

/// A runner with the four read models registered (snapshots loaded, nothing running), and
/// their typed handles.
///
/// # Errors
/// [`ProjectionError`] when a snapshot cannot be read.
pub fn standard(
    store: AnyStore,
    dir: &Path,
    config: &ReadModelConfig,
) -> Result<(ProjectionRunner<AnyStore>, ReadModels), ProjectionError> {
    config.apply_table_memory();
    let mut runner = ProjectionRunner::new(store, dir, RunnerOptions::default());
    let models = ReadModels::register(&mut runner, config)?;
    Ok((runner, models))
}

/// As [`standard`], without the handles (status, catch-up, rebuild).
///
/// # Errors
/// [`ProjectionError`] when a snapshot cannot be read.
pub fn runner(
    store: AnyStore,
    dir: &Path,
    config: &ReadModelConfig,
) -> Result<ProjectionRunner<AnyStore>, ProjectionError> {
    standard(store, dir, config).map(|(runner, _)| runner)
}

/// One read model's typed handle.
#[derive(Clone)]
pub enum OneModel {
    /// `pipeline`.
    Pipeline(ProjectionHandle<PipelineProjection>),
    /// `churn`.
    Churn(ProjectionHandle<ChurnProjection>),
    /// `lifetime-value`.
    LifetimeValue(ProjectionHandle<LifetimeValueProjection>),
    /// `sla`.
    Sla(ProjectionHandle<SlaProjection>),
}

/// A runner with only read model `name` registered under `options` (its snapshot loaded,
/// nothing running), and its handle: what `crm project run NAME` and `show NAME` work on.
///
/// # Errors
/// [`ProjectionError::Unknown`] for an unknown name; a snapshot that cannot be read.
pub fn single_runner(
    store: AnyStore,
    dir: &Path,
    config: &ReadModelConfig,
    options: RunnerOptions,
    name: &str,
) -> Result<(ProjectionRunner<AnyStore>, OneModel), ProjectionError> {
    check_name(name)?;
    config.apply_table_memory();
    let mut runner = ProjectionRunner::new(store, dir, options);
    let model = match name {
        pipeline::NAME => {
            OneModel::Pipeline(runner.register(PipelineProjection::new(config.pipeline.clone()))?)
        }
        churn::NAME => OneModel::Churn(runner.register(ChurnProjection::new(
            config.churn.clone(),
            config.sla.clone(),
        ))?),
        lifetime_value::NAME => OneModel::LifetimeValue(
            runner.register(LifetimeValueProjection::new(config.lifetime_value.clone()))?,
        ),
        _ => OneModel::Sla(runner.register(SlaProjection::new(config.sla.clone()))?),
    };
    Ok((runner, model))
}

/// Checks that `name` is one of the four read models, with a message listing them.
///
/// # Errors
/// [`ProjectionError::Unknown`] otherwise.
pub fn check_name(name: &str) -> Result<(), ProjectionError> {
    if STANDARD_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(ProjectionError::Unknown {
            name: name.to_owned(),
            known: STANDARD_NAMES.join(", "),
        })
    }
}

/// The report of `model` as of `as_of`, as JSON, with the position it covers.
///
/// # Errors
/// A report that cannot be rendered as JSON.
pub fn report_json(
    model: &OneModel,
    as_of: DateTime<Utc>,
    limit: Option<usize>,
) -> Result<serde_json::Value, ProjectionError> {
    let (name, (report, applied)) = match model {
        OneModel::Pipeline(h) => {
            let query = pipeline::PipelineQuery {
                as_of,
                closed_from: None,
                closed_to: None,
                coverage_target_minor: None,
                coverage_close_window: None,
                limit,
            };
            let config = h.projection().config_ref();
            (
                pipeline::NAME,
                h.read_checked(|s, p| {
                    (
                        serde_json::to_value(pipeline::report(s, config, &query)),
                        p.position,
                    )
                })?,
            )
        }
        OneModel::Churn(h) => {
            let query = churn::ChurnQuery {
                as_of,
                period: None,
                limit,
            };
            let config = h.projection().config_ref();
            (
                churn::NAME,
                h.try_read_checked(|s, p| {
                    churn::report(s, config, &query).map(|r| (serde_json::to_value(r), p.position))
                })?,
            )
        }
        OneModel::LifetimeValue(h) => {
            let query = lifetime_value::LifetimeValueQuery {
                as_of,
                account: None,
                limit,
            };
            let config = h.projection().config_ref();
            (
                lifetime_value::NAME,
                h.try_read_checked(|s, p| {
                    lifetime_value::report(s, config, &query)
                        .map(|r| (serde_json::to_value(r), p.position))
                })?,
            )
        }
        OneModel::Sla(h) => {
            let query = sla::SlaQuery {
                limit,
                ..sla::SlaQuery::at(as_of)
            };
            let config = h.projection().config_ref();
            (
                sla::NAME,
                h.read_checked(|s, p| {
                    (
                        serde_json::to_value(sla::report(s, config, &query)),
                        p.position,
                    )
                })?,
            )
        }
    };
    let report = report.map_err(|e| ProjectionError::Serialize {
        projection: name.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(serde_json::json!({
        "projection": name,
        "applied_position": applied.0,
        "as_of": as_of,
        "report": report,
    }))
}

/// Brings every read model to the log's head and saves its snapshot; the status after.
///
/// # Errors
/// [`ProjectionError`] when a projection keeps failing.
pub async fn catch_up(
    runner: &ProjectionRunner<AnyStore>,
) -> Result<Vec<WorkerStatus>, ProjectionError> {
    runner.run_until_head().await?;
    Ok(runner.status().await)
}

/// Rebuilds one projection from position 0.
///
/// # Errors
/// [`ProjectionError::Unknown`] for an unknown name, or the rebuild's failure.
pub async fn rebuild(
    runner: &ProjectionRunner<AnyStore>,
    name: &str,
) -> Result<RebuildReport, ProjectionError> {
    runner.rebuild(name).await
}
