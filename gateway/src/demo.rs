//! `crm demo`: the product in one command. Imports the bundled real data sets, brings the
//! read models to the head, prints a scorecard of baseline metrics per domain, one
//! redefinition side by side and one explained figure, then says where to go next.
//! The caller serves the API afterwards unless asked not to.
//!
//! Running it twice appends nothing the second time: imports are idempotent by event id and
//! the catalog metrics are built in, not appended.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crm_eventstore::{AnyStore, EventStore};
use crm_projections::metrics::{
    self, evaluate_in, load_view, Evaluation, ExplainSelect, MetricError, Query, Registry, Status,
};
use crm_projections::{ProjectionError, ReadModelConfig};

use crate::import::{self, ImportError, ImportSummary, OnError, RunOptions};
use crate::{metric_cli, project};

/// The scorecard: a domain and its baseline metrics (default versions of the catalog).
pub const SCORECARD: &[(&str, &[&str])] = &[
    (
        "sales",
        &[
            "sales.win_rate",
            "sales.new_revenue",
            "sales.avg_deal_size",
            "sales.cycle_duration",
        ],
    ),
    (
        "marketing",
        &[
            "marketing.new_leads",
            "marketing.lead_conversion_rate",
            "marketing.campaigns",
        ],
    ),
    (
        "service",
        &[
            "service.cases_opened",
            "service.cases_closed_same_day",
            "service.time_to_resolution",
        ],
    ),
    (
        "retention",
        &[
            "customer.churn_rate",
            "customer.active_customers",
            "sales.recurring_revenue",
        ],
    ),
];

/// The scorecard's query for a domain: all of history, except retention, which is read over
/// the last full year of the Telco snapshot (2019): churn needs a period whose start finds
/// customers active.
fn domain_query(domain: &str) -> Query {
    if domain == "retention" {
        Query {
            from: Some(utc(2019)),
            to: Some(utc(2020)),
            ..Query::default()
        }
    } else {
        Query::default()
    }
}

/// 2018 and 2019, one period each.
fn yearly_2018_2019() -> metric_cli::QueryFlags {
    metric_cli::QueryFlags {
        from: Some(utc(2018)),
        to: Some(utc(2020)),
        period: Some(metrics::Grain::Year),
        ..metric_cli::QueryFlags::default()
    }
}

fn utc(year: i32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc
        .with_ymd_and_hms(year, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The redefinition shown: churn by customers (v1) beside churn by revenue (v2).
pub const REDEFINED: (&str, [u32; 2]) = ("customer.churn_rate", [1, 2]);

/// The figure explained.
pub const EXPLAINED: &str = "sales.win_rate";

/// Rows of the explained figure printed (the rest is one `crm explain` away).
const EXPLAIN_ROWS_SHOWN: usize = 5;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    #[error("the bundled data sets are not at {0}; run `crm demo` from a checkout of the repository, or pass --bundle DIR pointing at gateway/data")]
    NoBundle(PathBuf),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("could not write the demo output: {0}")]
    Output(#[from] std::io::Error),
}

/// Where the bundled data sets live in a checkout.
#[must_use]
pub fn default_bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// What the demo did, for the caller and for tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoReport {
    pub imports: Vec<ImportSummary>,
    pub scorecard: Vec<Evaluation>,
    pub head_position: u64,
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Runs the demo on `store`, printing to `out`.
///
/// # Errors
/// [`DemoError`] when the bundle is missing, an import or a projection fails, or a metric
/// cannot be evaluated.
pub async fn run(
    store: &AnyStore,
    projections_dir: &Path,
    read_models: &ReadModelConfig,
    bundle: &Path,
    listen: std::net::SocketAddr,
    out: &mut impl Write,
) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    if !bundle.join("maven-crm").is_dir() {
        return Err(DemoError::NoBundle(bundle.to_path_buf()));
    }
    writeln!(out, "crm demo: log {}", store.describe())?;
    writeln!(
        out,
        "\n1. Importing the bundled CRM data sets (idempotent: a second run appends nothing)"
    )?;
    let plans = [
        ("maven-crm", import::maven::plan(&bundle.join("maven-crm"))?),
        (
            "telco-churn",
            import::telco::plan(&bundle.join("telco-churn/Telco-Customer-Churn.csv"))?,
        ),
        (
            "helpdesk",
            import::helpdesk::plan(&bundle.join("helpdesk/helpdesk.csv"))?,
        ),
    ];
    let mut imports = Vec::new();
    for (name, plan) in plans {
        let t = Instant::now();
        let options = RunOptions {
            on_error: OnError::Stop,
            progress: true,
        };
        let mut summary = import::run(store, plan, options).await?;
        summary.elapsed = t.elapsed();
        writeln!(
            out,
            "   {name:<12} {:>6} rows -> {:>6} events ({} appended, {} already present) in {:.2} s",
            summary.rows,
            summary.events(),
            summary.appended,
            summary.already_present,
            summary.elapsed.as_secs_f64()
        )?;
        imports.push(summary);
    }

    writeln!(out, "\n2. Bringing the read models to the head")?;
    let runner = project::runner(store.clone(), projections_dir, read_models)?;
    let status = project::catch_up(&runner).await?;
    drop(runner);
    for line in project::status_table(&status).lines() {
        writeln!(out, "   {line}")?;
    }

    writeln!(
        out,
        "\n3. Scorecard: baseline metrics per domain, over all of history"
    )?;
    let registry = Registry::load(store).await?;
    let chosen = SCORECARD
        .iter()
        .flat_map(|(_, ids)| ids.iter())
        .map(|id| registry.get(id, None))
        .collect::<Result<Vec<_>, _>>()?;
    let view = load_view(store, &registry, &chosen, None, None).await?;
    let mut scorecard = Vec::new();
    let mut metrics_iter = chosen.iter();
    for (domain, ids) in SCORECARD {
        let query = domain_query(domain);
        writeln!(out, "   {domain}")?;
        for _ in ids.iter() {
            let Some(m) = metrics_iter.next() else { break };
            let ev = evaluate_in(&view, &registry, m, &query)?;
            writeln!(out, "     {}", scorecard_line(&ev))?;
            scorecard.push(ev);
        }
    }
    let mark = &view.mark;
    writeln!(
        out,
        "   computed at log position {} (chain hash {}…)",
        mark.position,
        mark.chain_hash.get(..16).unwrap_or(&mark.chain_hash)
    )?;

    let (id, versions) = REDEFINED;
    writeln!(
        out,
        "\n4. A redefinition: {id} v{} beside v{}",
        versions[0], versions[1]
    )?;
    let page = metric_cli::compare_versions(
        store,
        id,
        &versions,
        &yearly_2018_2019(),
        metric_cli::Format::Text,
    )
    .await?;
    for line in page.lines() {
        writeln!(out, "   {line}")?;
    }

    writeln!(out, "\n5. An explained figure: {EXPLAINED}")?;
    let sel = ExplainSelect {
        limit: EXPLAIN_ROWS_SHOWN,
        ..ExplainSelect::default()
    };
    let page = metric_cli::explain_page(
        store,
        EXPLAINED,
        None,
        &metric_cli::QueryFlags::default(),
        &sel,
        metric_cli::Format::Text,
    )
    .await?;
    for line in page.lines() {
        writeln!(out, "   {line}")?;
    }

    let head = store.head();
    writeln!(out, "\n6. Where to go next")?;
    writeln!(out, "   crm metrics list                                  the catalog and what each metric needs")?;
    writeln!(
        out,
        "   crm metric sales.win_rate --period quarter --by region"
    )?;
    writeln!(
        out,
        "   crm metric compare customer.churn_rate --versions 1,2"
    )?;
    writeln!(out, "   crm explain sales.win_rate --csv > win_rate.csv   every event counted or left out, and why")?;
    writeln!(out, "   crm verify                                        checksums and hash chain of all {} records", head.position)?;
    writeln!(out, "   http://{listen}/openapi.json   http://{listen}/v1/read-models/pipeline   http://{listen}/v1/feed?from=1")?;
    out.flush()?;
    Ok(DemoReport {
        imports,
        scorecard,
        head_position: head.position.0,
        elapsed: started.elapsed(),
    })
}

/// `sales.win_rate v1  Win rate  63.15%  (2016-10-20..2018-01-01; 4238 / 6711)`.
#[must_use]
pub fn scorecard_line(ev: &Evaluation) -> String {
    let head = format!(
        "{:<34} v{}  {:<34}",
        ev.metric.id, ev.metric.version, ev.metric.name
    );
    match &ev.status {
        Status::Ok => match ev.figures.first() {
            Some(f) => {
                let ratio = match (&f.numerator, &f.denominator) {
                    (Some(n), Some(d)) => {
                        format!("; {} / {}", metric_cli::num(n), metric_cli::num(d))
                    }
                    _ => String::new(),
                };
                format!("{head} {:>16}  ({}{ratio})", f.display, f.period.label)
            }
            None => format!("{head} {:>16}", "no value"),
        },
        Status::NoData { needs } => format!("{head} no data: needs {}", needs.join(", ")),
        Status::Unsupported { needs } => format!("{head} not computable yet: needs {needs}"),
    }
}

/// Keeps `metrics` used by name in docs and the scorecard consistent with the catalog.
#[must_use]
pub fn scorecard_ids() -> Vec<&'static str> {
    SCORECARD
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .chain([REDEFINED.0, EXPLAINED])
        .collect()
}

/// Builds the registry of built-in metrics (for a test that every demo metric exists).
///
/// # Errors
/// [`MetricError`] when the catalog does not parse.
pub fn builtin_registry() -> Result<Registry, MetricError> {
    metrics::Registry::builtin()
}
