//! `crm demo`: the product in one command. Imports the bundled real data sets, brings the
//! read models to the head, prints a scorecard of baseline metrics per domain, one
//! redefinition side by side and one explained figure, then says where to go next.
//! The caller serves the API afterwards unless asked not to.
//!
//! Running it twice appends nothing the second time: imports are idempotent by event id and
//! the catalog metrics are built in, not appended.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use crm_app::config::{Flags, OnError};
use crm_app::store::{self, Create};
use crm_eventstore::{AnyStore, EventStore};
use crm_import::{ImportError, ImportSummary, RunOptions};
use crm_metrics::{
    evaluate_in, load_view, Evaluation, ExplainSelect, MetricError, Query, Registry,
};

use crm_projections::{ProjectionError, ReadModelConfig};

use super::serve::serve_api;
use super::Globals;
use crate::metric_output::{self, scorecard_line};

mod scorecard;

use scorecard::{
    scope_query, yearly_2018_2019, EXPLAINED, EXPLAIN_ROWS_SHOWN, REDEFINED, SCORECARD,
};

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
    #[error("the cockpit scorecard: {0}")]
    Scorecard(#[from] crm_metrics::scorecard::ScorecardError),
    #[error("could not write the demo output: {0}")]
    Output(#[from] std::io::Error),
}

/// The bundled exports imported by their mapping files alone: name, file, mapping.
const MAPPED: [(&str, &str, &str); 2] = [
    ("leads", "leads/Leads.csv", "leads/mapping.toml"),
    (
        "online-retail",
        "online-retail/online_retail.csv.gz",
        "online-retail/mapping.toml",
    ),
];

fn print_import(out: &mut impl Write, name: &str, summary: &ImportSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "   {name:<13} {:>6} rows -> {:>6} events ({} appended, {} already present) in {:.2} s",
        summary.rows,
        summary.events(),
        summary.appended,
        summary.already_present,
        summary.elapsed.as_secs_f64()
    )
}

/// The custom attribute the demo breaks lead conversion down by.
const BY_ORIGIN: &str = "attr.lead_origin";

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
    /// The cockpit's root node, then each of its children.
    pub cockpit: Vec<crm_metrics::scorecard::ScorecardReport>,
    pub head_position: u64,
    #[serde(serialize_with = "seconds")]
    pub elapsed: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Flags of `crm demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after printing; do not serve the API.
    #[arg(long)]
    no_serve: bool,
    /// Address to serve on afterwards (default 127.0.0.1:8080); also `CRM_LISTEN`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Directory holding the bundled data sets (default: gateway/data of this checkout).
    #[arg(long, value_name = "DIR")]
    bundle: Option<PathBuf>,
}

/// Runs `crm demo`: the demo on the configured log, then the API unless `--no-serve`.
///
/// # Errors
/// As [`demo`], or the API cannot be served.
pub async fn run(globals: &Globals, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags {
        listen: args.listen,
        ..Flags::default()
    })?;
    if let Some(created) = super::keys::ensure_default_key(&config)? {
        eprintln!(
            "demo: created the master key {} (personal data is encrypted at rest with keys it wraps); keep real data's master key in a secret store, apart from the data directory",
            created.display()
        );
    }
    let store = store::open(&config, Create::IfMissing).await?;
    let bundle = args.bundle.unwrap_or_else(default_bundle);
    let mut stdout = std::io::stdout().lock();
    let report = demo(
        &store,
        &config.projections_dir(),
        &config.read_models,
        &bundle,
        config.listen,
        &mut stdout,
    )
    .await;
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            store.close().await;
            return Err(e.into());
        }
    };
    let printed = writeln!(
        stdout,
        "\ndemo done in {:.1} s: {} records in the log",
        report.elapsed.as_secs_f64(),
        report.head_position
    );
    drop(stdout);
    if args.no_serve || printed.is_err() {
        store.close().await;
        printed?;
        return Ok(ExitCode::SUCCESS);
    }
    let banner = "serving the API on {url} (try {url}/v1/read-models/pipeline); Ctrl-C stops";
    serve_api(
        store,
        &config,
        true,
        None,
        banner,
        super::checkpoint::SIGN_EVERY_DEFAULT_S,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// The default scorecard of the bundled data (`gateway/data/scorecards/cockpit.toml`).
pub const COCKPIT: &str = "cockpit";

/// Defines the cockpit scorecard (nothing is appended when this version is there) and
/// prints its root node by perspective and its regional offices.
async fn cockpit(
    store: &AnyStore,
    bundle: &Path,
    out: &mut impl Write,
) -> Result<Vec<crm_metrics::scorecard::ScorecardReport>, DemoError> {
    use crm_metrics::scorecard;
    let file = bundle.join("scorecards").join(format!("{COCKPIT}.toml"));
    let text = std::fs::read_to_string(&file)?;
    // One replay for the registry; after the define only the new record is read.
    let registries = crm_metrics::RegistryCache::new();
    let registry = registries.get(store).await?;
    let outcome = scorecard::define_scorecard_as(
        store,
        &registry,
        &text,
        chrono::Utc::now(),
        &crm_app::access::local_principal().name,
    )
    .await?;
    let registry = registries.get(store).await?;
    writeln!(
        out,
        "   {} v{}: {} ({})",
        outcome.id,
        outcome.version,
        outcome.outcome.replace('_', " "),
        file.display()
    )?;
    let a = scorecard::assess(store, registry, COCKPIT, None, None, None).await?;
    let all = a.visible("", true);
    let root = scorecard::report(&a, None, &all)?;
    let mut reports = vec![root.clone()];
    for p in &root.perspectives {
        for o in &p.objectives {
            for m in &o.measures {
                let m = &m.reading;
                writeln!(
                    out,
                    "   {:<10} {:<34} {:>18}  target {:>16}  {}",
                    p.name,
                    m.name,
                    m.actual.display,
                    m.target.display,
                    m.status.name().replace('_', " ")
                )?;
            }
        }
    }
    for child in &root.node.children {
        let r = scorecard::report(&a, Some(&child.id), &all)?;
        let win = r
            .perspectives
            .iter()
            .flat_map(|p| &p.objectives)
            .flat_map(|o| &o.measures)
            .find(|m| m.reading.id == "win_rate")
            .map_or("-".to_owned(), |m| m.reading.actual.display.clone());
        writeln!(
            out,
            "   {:<16} win rate {win:>7}, {} below, {}",
            r.node.name,
            r.node.children.len(),
            r.status.name().replace('_', " ")
        )?;
        reports.push(r);
    }
    Ok(reports)
}

/// Runs the demo on `store`, printing to `out`.
///
/// # Errors
/// [`DemoError`] when the bundle is missing, an import or a projection fails, or a metric
/// cannot be evaluated.
pub async fn demo(
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
        (
            "maven-crm",
            crm_import::maven::plan(&bundle.join("maven-crm"))?,
        ),
        (
            "telco-churn",
            crm_import::telco::plan(&bundle.join("telco-churn/Telco-Customer-Churn.csv"))?,
        ),
        (
            "helpdesk",
            crm_import::helpdesk::plan(&bundle.join("helpdesk/helpdesk.csv"))?,
        ),
    ];
    let mut imports = Vec::new();
    let options = RunOptions {
        on_error: OnError::Stop,
        progress: true,
        ..RunOptions::default()
    };
    for (name, plan) in plans {
        let t = Instant::now();
        let mut summary = crm_import::run(store, plan, options).await?;
        summary.elapsed = t.elapsed();
        print_import(out, name, &summary)?;
        imports.push(summary);
    }
    // Exports without an importer of their own: their mapping files are all they need,
    // and they stream (the retail file is 541,909 rows).
    for (name, file, mapping) in MAPPED {
        let t = Instant::now();
        let (file, mapping) = (bundle.join(file), bundle.join(mapping));
        let import = tokio::task::spawn_blocking(move || {
            crm_import::mapping::MappingImport::open(
                &file,
                &mapping,
                &crm_domain::Registry::builtin(),
            )
        })
        .await
        .map_err(|e| ImportError::Task(e.to_string()))??;
        let loader = super::import::log_loader(store);
        let mut summary = crm_import::mapping::run(
            store,
            import,
            crm_domain::Registry::builtin(),
            loader,
            options,
        )
        .await?;
        summary.elapsed = t.elapsed();
        print_import(out, name, &summary)?;
        imports.push(summary);
    }

    writeln!(out, "\n2. Bringing the read models to the head")?;
    let runner = crm_app::projections::runner(store.clone(), projections_dir, read_models)?;
    let status = crm_app::projections::catch_up(&runner).await?;
    drop(runner);
    for line in super::project::status_table(&status).lines() {
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
    let view = load_view(store, &registry, &chosen, &Query::default()).await?;
    let mut scorecard = Vec::new();
    let mut metrics_iter = chosen.iter();
    for (domain, entries) in SCORECARD {
        writeln!(out, "   {domain}")?;
        for entry in entries.iter() {
            let Some(m) = metrics_iter.next() else { break };
            let ev = evaluate_in(&view, &registry, m, &scope_query(entry.scope))?;
            // A scope that narrows the facts says so beside the figure.
            let only: Vec<String> = ev
                .query
                .filter
                .iter()
                .map(|(dim, value)| format!("{dim}={value}"))
                .collect();
            let only = if only.is_empty() {
                String::new()
            } else {
                format!("  [only {}]", only.join(", "))
            };
            writeln!(out, "     {}{only}", scorecard_line(&ev))?;
            scorecard.push(ev);
        }
    }
    // A question asked at query time, over a custom attribute the leads' mapping set.
    let by_origin = Query {
        by: vec![BY_ORIGIN.to_owned()],
        ..Query::default()
    };
    let lead_conversion = registry.get("marketing.lead_conversion_rate", None)?;
    let origin_view = load_view(
        store,
        &registry,
        std::slice::from_ref(&lead_conversion),
        &by_origin,
    )
    .await?;
    let ev = evaluate_in(&origin_view, &registry, &lead_conversion, &by_origin)?;
    writeln!(
        out,
        "   marketing.lead_conversion_rate --by {BY_ORIGIN} (asked at query time, no new definition)"
    )?;
    for f in &ev.figures {
        writeln!(
            out,
            "     {:<28} {:>8}  ({} leads)",
            f.dims.get(BY_ORIGIN).map_or("", String::as_str),
            f.display,
            f.included
        )?;
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
    let page = metric_output::compare_versions(
        store,
        id,
        &versions,
        &yearly_2018_2019(),
        metric_output::Format::Text,
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
    let page = metric_output::explain_page(
        store,
        EXPLAINED,
        None,
        &metric_output::QueryFlags::default(),
        &sel,
        false,
        metric_output::Format::Text,
    )
    .await?;
    for line in page.lines() {
        writeln!(out, "   {line}")?;
    }

    writeln!(
        out,
        "\n6. The cockpit: scorecard `{COCKPIT}`, cascaded to offices, teams and agents"
    )?;
    let cockpit = cockpit(store, bundle, out).await?;

    let head = store.head();
    writeln!(out, "\n7. Where to go next")?;
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
    writeln!(out, "   crm scorecard show {COCKPIT} --node east            an office's measures, targets and trends")?;
    writeln!(
        out,
        "   http://{listen}/   the cockpit (strategy map, scorecard, drill-down, live)"
    )?;
    writeln!(out, "   http://{listen}/openapi.json   http://{listen}/v1/read-models/pipeline   http://{listen}/v1/feed?from=1")?;
    out.flush()?;
    Ok(DemoReport {
        imports,
        scorecard,
        cockpit,
        head_position: head.position.0,
        elapsed: started.elapsed(),
    })
}
