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
use crm_metrics::{
    self as metrics, evaluate_in, load_view, Evaluation, ExplainSelect, MetricError, Query,
    Registry, Status,
};
use crm_projections::{ProjectionError, ReadModelConfig};

use crate::import::{self, ImportError, ImportSummary, OnError, RunOptions};
use crate::{metric_cli, project};

/// Where a scorecard figure is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// All of history, one period.
    AllHistory,
    /// 2019, the last full year of the Telco snapshot: a stock (active customers, MRR)
    /// needs a period whose start finds customers active.
    Year2019,
}

/// One scorecard figure: a metric, its version (`None`: the catalog's default) and scope.
#[derive(Debug, Clone, Copy)]
pub struct ScoreEntry {
    /// Metric id.
    pub id: &'static str,
    /// Pinned version, where the default is not the reading of the data set's published
    /// reference figure.
    pub version: Option<u32>,
    /// Where it is read.
    pub scope: Scope,
}

const fn all(id: &'static str) -> ScoreEntry {
    ScoreEntry {
        id,
        version: None,
        scope: Scope::AllHistory,
    }
}

/// The scorecard: a domain and its baseline metrics. Two versions are pinned to the reading
/// of the bundled data sets' reference figures (their SOURCE.md): the helpdesk's share of
/// cases closed on the day opened (v4) and the Telco churn share (v3).
pub const SCORECARD: &[(&str, &[ScoreEntry])] = &[
    (
        "sales",
        &[
            all("sales.win_rate"),
            all("sales.new_revenue"),
            all("sales.avg_deal_size"),
            all("sales.cycle_duration"),
        ],
    ),
    (
        "marketing",
        &[
            all("marketing.new_leads"),
            all("marketing.lead_conversion_rate"),
            all("marketing.campaigns"),
        ],
    ),
    (
        "service",
        &[
            all("service.cases_opened"),
            ScoreEntry {
                id: "service.cases_closed_same_day",
                version: Some(4),
                scope: Scope::AllHistory,
            },
            all("service.time_to_resolution"),
        ],
    ),
    (
        "retention",
        &[
            ScoreEntry {
                id: "customer.churn_rate",
                version: Some(3),
                scope: Scope::AllHistory,
            },
            ScoreEntry {
                id: "customer.active_customers",
                version: None,
                scope: Scope::Year2019,
            },
            ScoreEntry {
                id: "sales.recurring_revenue",
                version: None,
                scope: Scope::Year2019,
            },
        ],
    ),
];

/// The query of a scope.
fn scope_query(scope: Scope) -> Query {
    match scope {
        Scope::AllHistory => Query::default(),
        Scope::Year2019 => Query {
            from: Some(utc(2019)),
            to: Some(utc(2020)),
            ..Query::default()
        },
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
        "\n3. Scorecard: baseline metrics per domain, over all of history (active customers and MRR: 2019)"
    )?;
    let registry = Registry::load(store).await?;
    let chosen = SCORECARD
        .iter()
        .flat_map(|(_, entries)| entries.iter())
        .map(|e| registry.get(e.id, e.version))
        .collect::<Result<Vec<_>, _>>()?;
    let view = load_view(store, &registry, &chosen, None, None).await?;
    let mut scorecard = Vec::new();
    let mut metrics_iter = chosen.iter();
    for (domain, entries) in SCORECARD {
        writeln!(out, "   {domain}")?;
        for entry in entries.iter() {
            let Some(m) = metrics_iter.next() else { break };
            let ev = evaluate_in(&view, &registry, m, &scope_query(entry.scope))?;
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
    writeln!(
        out,
        "   crm verify --anchor {}:{}\n                                                     proves later that the log these figures\n                                                     were computed from is unchanged",
        head.position, head.hash
    )?;
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
                let excluded = if f.excluded.is_empty() {
                    String::new()
                } else {
                    let codes: Vec<String> = f
                        .excluded
                        .iter()
                        .map(|(code, n)| format!("{code} {n}"))
                        .collect();
                    format!("; excluded {}", codes.join(", "))
                };
                format!(
                    "{head} {:>16}  ({}{ratio}{excluded})",
                    f.display, f.period.label
                )
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
        .flat_map(|(_, entries)| entries.iter().map(|e| e.id))
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
