//! The read models and the metric answers, rewritten whole by every export.
//!
//! A read model's report is a nested document (totals, breakdowns, lists), so its file is in
//! long form: one row per value, named by `section` (the path of the object holding it, list
//! indices left out: `open.by_stage.rows`), `row` (its index in the innermost list, null
//! outside lists) and `field` (`value_minor`), with the value in the column of its type.
//! `SELECT row, field, value_int FROM ... WHERE section = 'open.by_stage.rows'` gives one
//! breakdown; `PIVOT` turns it into one column per field.
//!
//! A metric's file holds the answers of its default version by month over the whole log (an
//! RFM scoring: one period, the whole log):
//! the totals (`breakdown` null) and one breakdown by each dimension its definition declares
//! (`breakdown` = the dimension's name, its value in the column of that name), with the
//! value, numerator, denominator and count (`included`) of each figure.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field, TimeUnit};
use chrono::{DateTime, Utc};
use crm_app::projections::{report_json, standard, OneModel};
use crm_eventstore::AnyStore;
use crm_metrics::definition::MeasureType;
use crm_metrics::{
    evaluate_in, load_view, Evaluation, Grain, LogView, MetricSummary, Num, Query,
    RegisteredMetric, Registry, Status,
};
use serde_json::Value;

use crate::error::ExportError;
use crate::manifest::{relative, TableEntry};
use crate::{parquet_file, ExportOptions, Progress, METRICS_DIR, READ_MODELS_DIR};

/// Most rows of one breakdown of a read model's report (the reports' own cap).
pub const READ_MODEL_ROWS_MAX: usize = 10_000;
/// Threads evaluating metrics at once (at most one per core).
pub const METRIC_WORKERS_MAX: usize = 8;
/// The period of the metric answers.
pub const METRIC_GRAIN: Grain = Grain::Month;
/// Prefix of a dimension's column whose name a fixed column of the metric file has.
const DIMENSION_CLASH_PREFIX: &str = "dim_";
/// The fixed columns of a metric file.
const METRIC_COLUMNS: &[&str] = &[
    "metric_id",
    "version",
    "spec_hash",
    "unit",
    "breakdown",
    "period",
    "period_start",
    "period_end",
    "value",
    "display",
    "numerator",
    "denominator",
    "currency",
    "included",
    "excluded",
    "log_position",
    "chain_hash",
];

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn timestamp_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// Brings the four read models to the head and writes each report as
/// `read_models/<name>.parquet`.
pub(crate) async fn write_read_models(
    store: AnyStore,
    options: &ExportOptions,
) -> Result<Vec<TableEntry>, ExportError> {
    let (runner, models) = standard(store, &options.projections_dir, &options.read_models)?;
    runner.run_until_head().await?;
    let all = [
        OneModel::Pipeline(models.pipeline.clone()),
        OneModel::Churn(models.churn.clone()),
        OneModel::LifetimeValue(models.lifetime_value.clone()),
        OneModel::Sla(models.sla.clone()),
    ];
    let mut entries = Vec::new();
    for model in &all {
        let json = report_json(model, options.as_of, Some(READ_MODEL_ROWS_MAX))?;
        entries.push(write_report(&options.out, &json, options.as_of)?);
    }
    Ok(entries)
}

/// One value of a report.
struct Leaf {
    section: String,
    row: Option<u64>,
    field: String,
    path: String,
    value: Value,
}

fn leaves(
    value: &Value,
    section: &str,
    field: &str,
    path: &str,
    row: Option<u64>,
    out: &mut Vec<Leaf>,
) {
    let join = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_owned()
        } else {
            format!("{a}.{b}")
        }
    };
    match value {
        Value::Object(fields) => {
            let inner_section = join(section, field);
            for (name, inner) in fields {
                leaves(inner, &inner_section, name, &join(path, name), row, out);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let row = u64::try_from(index).ok();
                leaves(item, section, field, &format!("{path}[{index}]"), row, out);
            }
        }
        scalar => out.push(Leaf {
            section: section.to_owned(),
            row,
            field: field.to_owned(),
            path: path.to_owned(),
            value: scalar.clone(),
        }),
    }
}

fn write_report(out: &Path, json: &Value, as_of: DateTime<Utc>) -> Result<TableEntry, ExportError> {
    let name = json
        .get("projection")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let applied = json
        .get("applied_position")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut rows = Vec::new();
    if let Some(Value::Object(report)) = json.get("report") {
        for (field, value) in report {
            leaves(value, "", field, field, None, &mut rows);
        }
    }
    let mut read_model = StringBuilder::new();
    let mut applied_position = UInt64Builder::new();
    let mut as_of_column = timestamp_builder();
    let mut section = StringBuilder::new();
    let mut row = UInt64Builder::new();
    let mut field = StringBuilder::new();
    let mut path = StringBuilder::new();
    let mut value_text = StringBuilder::new();
    let mut value_int = Int64Builder::new();
    let mut value_float = Float64Builder::new();
    let mut value_bool = BooleanBuilder::new();
    for leaf in &rows {
        read_model.append_value(&name);
        applied_position.append_value(applied);
        as_of_column.append_value(as_of.timestamp_micros());
        section.append_value(&leaf.section);
        row.append_option(leaf.row);
        field.append_value(&leaf.field);
        path.append_value(&leaf.path);
        value_text.append_option(leaf.value.as_str());
        value_int.append_option(leaf.value.as_i64());
        value_float.append_option(leaf.value.as_f64());
        value_bool.append_option(leaf.value.as_bool());
    }
    let fields = vec![
        Field::new("read_model", DataType::Utf8, false),
        Field::new("applied_position", DataType::UInt64, false),
        Field::new("as_of", timestamp(), false),
        Field::new("section", DataType::Utf8, false),
        Field::new("row", DataType::UInt64, true),
        Field::new("field", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("value_text", DataType::Utf8, true),
        Field::new("value_int", DataType::Int64, true),
        Field::new("value_float", DataType::Float64, true),
        Field::new("value_bool", DataType::Boolean, true),
    ];
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(read_model.finish()),
        Arc::new(applied_position.finish()),
        Arc::new(as_of_column.finish()),
        Arc::new(section.finish()),
        Arc::new(row.finish()),
        Arc::new(field.finish()),
        Arc::new(path.finish()),
        Arc::new(value_text.finish()),
        Arc::new(value_int.finish()),
        Arc::new(value_float.finish()),
        Arc::new(value_bool.finish()),
    ];
    let file = out
        .join(READ_MODELS_DIR)
        .join(format!("{}.parquet", safe_name(&name)));
    let bytes = parquet_file::write(&file, fields, arrays)?;
    Ok(TableEntry {
        name,
        path: relative(out, &file),
        rows: u64::try_from(rows.len()).unwrap_or(u64::MAX),
        bytes,
        log_position: applied,
    })
}

/// The metric files written and the metrics without one.
pub(crate) struct MetricsWritten {
    pub written: Vec<TableEntry>,
    pub skipped: Vec<(String, String)>,
}

/// Evaluates the default version of every metric of the registry at the head (one replay
/// shared by all) and writes `metrics/<id>/v<version>.parquet` for each.
pub(crate) async fn write_metrics(
    store: &AnyStore,
    out: &Path,
    progress: &mut (impl FnMut(Progress) + Send),
) -> Result<MetricsWritten, ExportError> {
    let registry = Registry::load(store).await?;
    let mut written = Vec::new();
    let mut skipped = Vec::new();
    let mut metrics = Vec::new();
    for summary in registry.list().into_iter().filter(|m| m.is_default) {
        if let Some(needs) = &summary.unsupported {
            skipped.push((
                format!("{}@{}", summary.id, summary.version),
                format!("not computable yet: needs {needs}"),
            ));
            continue;
        }
        let metric = registry.get(&summary.id, Some(summary.version))?;
        metrics.push((summary, metric));
    }
    let base = Query {
        period: METRIC_GRAIN,
        ..Query::default()
    };
    let all: Vec<_> = metrics.iter().map(|(_, m)| Arc::clone(m)).collect();
    let view = load_view(store, &registry, &all, &base).await?;
    let total = metrics.len();
    progress(Progress::Metrics { done: 0, total });
    // Evaluations are pure CPU over the shared view: one worker per core; files are written
    // here, in the order the answers arrive, and listed by name.
    let workers = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, METRIC_WORKERS_MAX);
    let next = AtomicUsize::new(0);
    let (sender, answers) = mpsc::channel();
    let written_all = std::thread::scope(|scope| {
        for _ in 0..workers {
            let (sender, next, metrics, view, registry, base) =
                (sender.clone(), &next, &metrics, &view, &registry, &base);
            scope.spawn(move || loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some((summary, metric)) = metrics.get(index) else {
                    break;
                };
                let started = std::time::Instant::now();
                let answer = answers_of(view, registry, summary, metric, base);
                tracing::debug!(
                    metric = %summary.id,
                    elapsed_ms = started.elapsed().as_millis(),
                    "metric answers computed"
                );
                if sender.send((index, answer)).is_err() {
                    break;
                }
            });
        }
        drop(sender);
        for (done, (index, answer)) in answers.iter().enumerate() {
            progress(Progress::Metrics { done, total });
            let Some((summary, _)) = metrics.get(index) else {
                continue;
            };
            let name = format!("{}@{}", summary.id, summary.version);
            match answer {
                Err(problem) => skipped.push((name, problem.to_string())),
                Ok((dimensions, evaluations)) => {
                    let file = out
                        .join(METRICS_DIR)
                        .join(safe_name(&summary.id))
                        .join(format!("v{}.parquet", summary.version));
                    // An error drops `answers`, so the workers stop at their next send.
                    written.push(write_metric(out, &file, &name, &dimensions, &evaluations)?);
                }
            }
        }
        Ok::<(), ExportError>(())
    });
    written_all?;
    written.sort_by(|a, b| a.name.cmp(&b.name));
    skipped.sort();
    progress(Progress::Metrics { done: total, total });
    Ok(MetricsWritten { written, skipped })
}

/// Why a metric has no answers to export.
#[derive(Debug, thiserror::Error)]
enum NoAnswers {
    #[error("no data: needs {}", .needs.join(", "))]
    NoData { needs: Vec<String> },
    #[error("not computable yet: needs {needs}")]
    Unsupported { needs: String },
    #[error("{what}: {source}")]
    Failed {
        what: String,
        source: crm_metrics::MetricError,
    },
}

/// The declared dimensions of a metric and its answers (totals, then one breakdown by each
/// dimension), or why it has none.
fn answers_of(
    view: &LogView,
    registry: &Registry,
    summary: &MetricSummary,
    metric: &RegisteredMetric,
    base: &Query,
) -> Result<Answers, NoAnswers> {
    let dimensions: Vec<String> = summary.dimensions.keys().cloned().collect();
    let period = grain_of(summary);
    let mut evaluations = Vec::new();
    for by in std::iter::once(None).chain(dimensions.iter().map(Some)) {
        let query = Query {
            by: by.cloned().into_iter().collect(),
            period,
            ..base.clone()
        };
        match evaluate_in(view, registry, metric, &query) {
            Ok(ev) => match &ev.status {
                Status::Ok => evaluations.push((by.cloned(), ev)),
                Status::NoData { needs } => {
                    return Err(NoAnswers::NoData {
                        needs: needs.clone(),
                    })
                }
                Status::Unsupported { needs } => {
                    return Err(NoAnswers::Unsupported {
                        needs: needs.clone(),
                    })
                }
            },
            Err(source) => {
                let what = by.map_or_else(|| "totals".to_owned(), |d| format!("by {d}"));
                return Err(NoAnswers::Failed { what, source });
            }
        }
    }
    Ok((dimensions, evaluations))
}

/// The period of a metric's answers: [`METRIC_GRAIN`], but one period over the whole log
/// for an RFM scoring (a scoring of every entity at each month's end costs minutes on the
/// demo data and is seldom read; `crm metric ID --to DATE` scores at any date).
fn grain_of(summary: &MetricSummary) -> Grain {
    if summary.measure == MeasureType::Rfm {
        Grain::All
    } else {
        METRIC_GRAIN
    }
}

/// A metric's declared dimensions and its evaluations, each with the dimension it is broken
/// down by (`None`: the totals).
type Answers = (Vec<String>, Vec<(Option<String>, Evaluation)>);

fn write_metric(
    out: &Path,
    file: &Path,
    name: &str,
    dimensions: &[String],
    evaluations: &[(Option<String>, Evaluation)],
) -> Result<TableEntry, ExportError> {
    let mut metric_id = StringBuilder::new();
    let mut version = UInt32Builder::new();
    let mut spec_hash = StringBuilder::new();
    let mut unit = StringBuilder::new();
    let mut breakdown = StringBuilder::new();
    let mut period = StringBuilder::new();
    let mut period_start = timestamp_builder();
    let mut period_end = timestamp_builder();
    let mut dims: Vec<StringBuilder> = dimensions.iter().map(|_| StringBuilder::new()).collect();
    let mut value = Float64Builder::new();
    let mut display = StringBuilder::new();
    let mut numerator = Float64Builder::new();
    let mut denominator = Float64Builder::new();
    let mut currency = StringBuilder::new();
    let mut included = UInt64Builder::new();
    let mut excluded = StringBuilder::new();
    let mut log_position = UInt64Builder::new();
    let mut chain_hash = StringBuilder::new();
    let mut rows = 0u64;
    let mut covered = 0;
    for (by, ev) in evaluations {
        covered = ev.log.position;
        let unit_text = serde_json::to_value(ev.metric.unit)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        for f in &ev.figures {
            rows += 1;
            metric_id.append_value(&ev.metric.id);
            version.append_value(ev.metric.version);
            spec_hash.append_value(&ev.metric.spec_hash);
            unit.append_value(&unit_text);
            breakdown.append_option(by.as_deref());
            period.append_value(&f.period.label);
            period_start.append_value(f.period.start.timestamp_micros());
            period_end.append_value(f.period.end.timestamp_micros());
            for (dim, builder) in dimensions.iter().zip(dims.iter_mut()) {
                builder.append_option(f.dims.get(dim));
            }
            value.append_option(f.value);
            display.append_value(&f.display);
            numerator.append_option(f.numerator.map(Num::to_f64));
            denominator.append_option(f.denominator.map(Num::to_f64));
            currency.append_option(f.currency.as_deref());
            included.append_value(f.included);
            let reasons: BTreeMap<&String, &u64> = f.excluded.iter().collect();
            let text = serde_json::to_string(&reasons).map_err(|source| ExportError::Json {
                what: "a figure's exclusions",
                source,
            })?;
            excluded.append_value(text);
            log_position.append_value(ev.log.position);
            chain_hash.append_value(&ev.log.chain_hash);
        }
    }
    let mut fields = vec![
        Field::new("metric_id", DataType::Utf8, false),
        Field::new("version", DataType::UInt32, false),
        Field::new("spec_hash", DataType::Utf8, false),
        Field::new("unit", DataType::Utf8, false),
        Field::new("breakdown", DataType::Utf8, true),
        Field::new("period", DataType::Utf8, false),
        Field::new("period_start", timestamp(), false),
        Field::new("period_end", timestamp(), false),
    ];
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(metric_id.finish()),
        Arc::new(version.finish()),
        Arc::new(spec_hash.finish()),
        Arc::new(unit.finish()),
        Arc::new(breakdown.finish()),
        Arc::new(period.finish()),
        Arc::new(period_start.finish()),
        Arc::new(period_end.finish()),
    ];
    for (dim, mut builder) in dimensions.iter().zip(dims) {
        fields.push(Field::new(dimension_column(dim), DataType::Utf8, true));
        arrays.push(Arc::new(builder.finish()));
    }
    fields.extend([
        Field::new("value", DataType::Float64, true),
        Field::new("display", DataType::Utf8, false),
        Field::new("numerator", DataType::Float64, true),
        Field::new("denominator", DataType::Float64, true),
        Field::new("currency", DataType::Utf8, true),
        Field::new("included", DataType::UInt64, false),
        Field::new("excluded", DataType::Utf8, false),
        Field::new("log_position", DataType::UInt64, false),
        Field::new("chain_hash", DataType::Utf8, false),
    ]);
    arrays.extend([
        Arc::new(value.finish()) as ArrayRef,
        Arc::new(display.finish()),
        Arc::new(numerator.finish()),
        Arc::new(denominator.finish()),
        Arc::new(currency.finish()),
        Arc::new(included.finish()),
        Arc::new(excluded.finish()),
        Arc::new(log_position.finish()),
        Arc::new(chain_hash.finish()),
    ]);
    let bytes = parquet_file::write(file, fields, arrays)?;
    Ok(TableEntry {
        name: name.to_owned(),
        path: relative(out, file),
        rows,
        bytes,
        log_position: covered,
    })
}

/// The column of dimension `dim` in a metric file: its name, or `dim_<name>` when a fixed
/// column has that name.
#[must_use]
pub fn dimension_column(dim: &str) -> String {
    if METRIC_COLUMNS.contains(&dim) {
        format!("{DIMENSION_CLASH_PREFIX}{dim}")
    } else {
        dim.to_owned()
    }
}

/// `name` for a file or folder name: every byte outside `[A-Za-z0-9_.-]` percent-encoded.
pub(crate) fn safe_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
