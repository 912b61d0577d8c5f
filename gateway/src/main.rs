//! `crm`: the command-line front end of the CRM event log. Thin: parses flags with clap and
//! calls the `crm_gateway` library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use crm_gateway::config::{Config, Flags, StoreLocation};
use crm_gateway::import::{self, OnError, RunOptions};
use crm_gateway::store::{self as log_store, Create};
use crm_gateway::verbs::{self, EventsQuery};
use crm_gateway::{bench, demo, http, metric_cli, project};

/// The CRM event log: serve the HTTP API, import CRM exports, read, verify and count the log.
#[derive(Debug, Parser)]
#[command(name = "crm", version, about)]
struct Cli {
    /// Config file (TOML); also `CRM_CONFIG`.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (the log is in DIR/log); also `CRM_DATA_DIR`. Default ./crm-data.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Where the log lives: a directory (the embedded sled log; default DATA_DIR/log) or
    /// nats://HOST:PORT[,nats://HOST:PORT...] (a JetStream stream, shared by many processes);
    /// also `CRM_STORE`.
    #[arg(long, global = true, value_name = "STORE")]
    store: Option<StoreLocation>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Import a CRM export into the log (idempotent: a re-import appends nothing).
    Import(ImportArgs),
    /// Print events of a stream or of the global log, or follow the log live.
    Events(EventsArgs),
    /// Check the checksum and hash chain of every record; exit code 1 on the first bad one.
    Verify(VerifyArgs),
    /// Count events per type and stream category; show the head position and hash.
    Stats(JsonFlag),
    /// Serve the HTTP API (JSON under /v1, /openapi.json) and run the projections until
    /// SIGTERM or Ctrl-C.
    Serve(ServeArgs),
    /// Projections (read models): status, catch up to the head, rebuild one.
    Project(ProjectArgs),
    /// Load generators: `crm bench http` measures the HTTP API on a scratch log.
    Bench(BenchArgs),
    /// The metric catalog: list definitions, define a new version from a TOML file.
    Metrics(MetricsArgs),
    /// Evaluate a metric (`crm metric ID`), compare versions, or diff two report dates.
    Metric(MetricArgs),
    /// The events behind a metric's figure: included, and excluded with their rule.
    Explain(ExplainArgs),
    /// The main job: import the bundled data sets, bring the read models to the head, print
    /// a scorecard, a redefinition and an explained figure, then serve the API (Ctrl-C stops).
    Demo(DemoArgs),
    /// Follow the events `crm serve --nats` publishes: one line per event (position, stream,
    /// version, type, subject), or each event's JSON with --json. An ordered JetStream
    /// consumer: from --from POSITION (replay, then live) or only new events; Ctrl-C stops.
    Tail(crm_gateway::publish::tail::TailArgs),
}

#[derive(Debug, Args)]
struct MetricsArgs {
    #[command(subcommand)]
    action: MetricsAction,
}

#[derive(Debug, Subcommand)]
enum MetricsAction {
    /// Every definition (built-in and defined in the log) with the events it needs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Validate a TOML definition and append it as `MetricDefined` to the metric's stream.
    Define {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Query flags shared by `metric` and `explain`.
#[derive(Debug, Args, Clone, Default)]
struct QueryArgs {
    /// Start of the range (RFC 3339), inclusive.
    #[arg(long)]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// End of the range (RFC 3339), exclusive.
    #[arg(long)]
    to: Option<chrono::DateTime<chrono::Utc>>,
    /// day, week, month, quarter, year (default: the whole range).
    #[arg(long)]
    period: Option<String>,
    /// Breakdown dimensions, comma separated.
    #[arg(long, value_delimiter = ',')]
    by: Vec<String>,
    /// Count facts that occurred by this instant.
    #[arg(long)]
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Count only what the log had recorded by this instant.
    #[arg(long)]
    known_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl QueryArgs {
    fn flags(&self) -> anyhow::Result<crm_gateway::metric_cli::QueryFlags> {
        Ok(crm_gateway::metric_cli::QueryFlags {
            from: self.from,
            to: self.to,
            period: self.period.as_deref().map(str::parse).transpose()?,
            by: self.by.clone(),
            as_of: self.as_of,
            known_at: self.known_at,
        })
    }
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct MetricArgs {
    #[command(subcommand)]
    action: Option<MetricAction>,
    /// Metric id, e.g. sales.win_rate.
    id: Option<String>,
    /// Definition version (default: the metric's default version).
    #[arg(long)]
    version: Option<u32>,
    #[command(flatten)]
    query: QueryArgs,
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    #[arg(long)]
    csv: bool,
}

#[derive(Debug, Subcommand)]
enum MetricAction {
    /// Several versions side by side over the same periods, with the difference.
    Compare {
        id: String,
        /// Versions, comma separated (e.g. 1,2).
        #[arg(long, value_delimiter = ',', required = true)]
        versions: Vec<u32>,
        #[command(flatten)]
        query: QueryArgs,
        #[arg(long)]
        json: bool,
    },
    /// Why a figure moved between two report dates: the events recorded in between.
    Diff {
        id: String,
        #[arg(long)]
        version: Option<u32>,
        /// The two report dates (give the flag twice).
        #[arg(long = "known-at", num_args = 1, required = true)]
        known_at: Vec<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        period: Option<String>,
        #[arg(long, value_delimiter = ',')]
        by: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// Metric id.
    id: String,
    #[arg(long)]
    version: Option<u32>,
    #[command(flatten)]
    query: QueryArgs,
    /// One period label (e.g. 2017-Q2); all periods when absent.
    #[arg(long = "select-period")]
    select_period: Option<String>,
    /// Only `included` or `excluded` rows.
    #[arg(long)]
    decision: Option<String>,
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Page size (capped by the engine).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    #[arg(long)]
    csv: bool,
}

fn format_of(json: bool, csv: bool) -> crm_gateway::metric_cli::Format {
    use crm_gateway::metric_cli::Format;
    if json {
        Format::Json
    } else if csv {
        Format::Csv
    } else {
        Format::Text
    }
}

#[derive(Debug, Args)]
struct DemoArgs {
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

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free port); also
    /// `CRM_LISTEN` or `[serve] listen` in the config file.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Do not run the read models in this process (the read-model routes answer 503): use
    /// when `crm project run NAME` workers fold them in processes of their own.
    #[arg(long)]
    no_projections: bool,
    /// Publish every committed event to NATS JetStream at this URL (subjects
    /// crm.events.<category>.<stream id>, stream CRM_EVENTS); also `CRM_NATS_URL` or
    /// `[publish] nats_url`.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
}

#[derive(Debug, Args)]
struct ProjectArgs {
    #[command(subcommand)]
    action: ProjectAction,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ProjectAction {
    /// Phase, applied and checkpoint positions, lag and errors of every projection.
    Status,
    /// Fold every projection up to the log's head and save its snapshot.
    CatchUp,
    /// Rebuild one projection from position 0 (pipeline, churn, lifetime-value, sla).
    Rebuild {
        /// The projection.
        name: String,
    },
    /// Run one projection as its own long-lived worker process: catch up from its checkpoint,
    /// follow the log live, stop with a final snapshot on SIGTERM or Ctrl-C. Beside
    /// `crm serve` this needs a shared store (`--store nats://...`): the embedded log admits
    /// one process.
    Run {
        /// The projection: pipeline, churn, lifetime-value or sla.
        name: String,
        /// Serve /healthz, /readyz (caught up) and /metrics on this address for probes.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Save a snapshot (state + checkpoint) after this many events during a catch-up.
        #[arg(long, value_name = "EVENTS")]
        snapshot_every: Option<u64>,
    },
    /// Print one read model's report (catching it up to the head first).
    Show {
        /// The projection: pipeline, churn, lifetime-value or sla.
        name: String,
        /// "Now" for the report (RFC 3339; default the current time).
        #[arg(long, value_name = "T")]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// Most rows per breakdown.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Debug, Args)]
struct BenchArgs {
    #[command(subcommand)]
    target: BenchTarget,
}

#[derive(Debug, Subcommand)]
enum BenchTarget {
    /// Append and read latency through HTTP on loopback, beside in-process appends, on a
    /// scratch log in the system's temp directory (removed afterwards); read-model latency
    /// over the bundled Maven CRM data set when the source tree is present.
    Http {
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Requests per client in each scenario.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publication lag to NATS: commit -> a JetStream subscriber receives the event, under a
    /// steady append rate on a scratch log, beside raw JetStream publish -> receive on the
    /// same server (streams CRM_BENCH_*, deleted afterwards).
    NatsLag(crm_gateway::publish::bench::NatsLagArgs),
}

#[derive(Debug, Args)]
struct ImportArgs {
    #[command(subcommand)]
    source: Source,
    /// What to do with a bad row: stop (append nothing from its batch) or skip it and report.
    #[arg(long, global = true, value_enum)]
    on_error: Option<OnError>,
    /// Print the summary as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Source {
    /// Maven Analytics CRM + Sales Opportunities: a directory with accounts.csv, products.csv,
    /// sales_teams.csv and sales_pipeline.csv.
    MavenCrm {
        /// The directory.
        dir: PathBuf,
    },
    /// IBM Telco Customer Churn table (snapshot date 2020-01-01).
    TelcoChurn {
        /// The CSV file.
        file: PathBuf,
    },
    /// Helpdesk process-mining log (CaseID, ActivityID, CompleteTimestamp).
    Helpdesk {
        /// The CSV file.
        file: PathBuf,
    },
    /// Any CSV export, with a TOML mapping of columns to domain commands.
    Csv {
        /// The CSV file.
        file: PathBuf,
        /// The mapping (TOML).
        #[arg(long, value_name = "MAPPING.toml")]
        mapping: PathBuf,
    },
    /// Events in the JSON-lines form `crm events --json` prints.
    Jsonl {
        /// The JSON-lines file.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct EventsArgs {
    /// Read one stream (e.g. opportunity-1C1I7A6R) instead of the global log.
    #[arg(long, value_name = "ID")]
    stream: Option<String>,
    /// First global position (or stream version with --stream).
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Most events to print (at most 100000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// After the history, keep printing new events as they arrive.
    #[arg(long)]
    follow: bool,
    /// One JSON object per line (the form `crm import jsonl` reads).
    #[arg(long)]
    json: bool,
    /// Only events of this stream category (e.g. `opportunity`).
    #[arg(long)]
    category: Option<String>,
    /// Only events of this type (e.g. `OpportunityWon`).
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// Only events with this correlation id: every event one HTTP request
    /// (`X-Correlation-Id`) or one import run wrote.
    #[arg(long, value_name = "UUID")]
    correlation: Option<uuid::Uuid>,
    /// Only events with this causation id: the events one event caused.
    #[arg(long, value_name = "UUID")]
    causation: Option<uuid::Uuid>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Also check that the record at POSITION still has chain hash HASH (as printed by
    /// `crm stats` or beside a metric figure: "computed at log position P chain hash H"):
    /// with a clean chain, a match proves records 1..=POSITION unchanged since. Repeatable.
    #[arg(long = "anchor", value_name = "POSITION:HASH")]
    anchors: Vec<verbs::Anchor>,
}

#[derive(Debug, Args)]
struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn open_existing(config: &Config) -> anyhow::Result<crm_eventstore::AnyStore> {
    Ok(log_store::open(config, Create::Never).await?)
}

async fn open_or_create(config: &Config) -> anyhow::Result<crm_eventstore::AnyStore> {
    Ok(log_store::open(config, Create::IfMissing).await?)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let on_error = match &cli.verb {
        Verb::Import(args) => args.on_error,
        _ => None,
    };
    let listen = match &cli.verb {
        Verb::Serve(args) => args.listen,
        Verb::Demo(args) => args.listen,
        _ => None,
    };
    let flags = Flags {
        config_file: cli.config,
        data_dir: cli.data_dir,
        on_error,
        listen,
        store: cli.store,
        nats: match &cli.verb {
            Verb::Serve(args) => args.nats.clone(),
            _ => None,
        },
    };
    let config = Config::resolve(&flags, |k| std::env::var(k).ok())?;
    tracing::debug!(?config, "configuration");
    let mut stdout = std::io::stdout().lock();
    match cli.verb {
        Verb::Import(args) => {
            // Rows/s and events/s cover reading and deciding too, not only the appends.
            let started = std::time::Instant::now();
            let plan = match &args.source {
                Source::MavenCrm { dir } => import::maven::plan(dir)?,
                Source::TelcoChurn { file } => import::telco::plan(file)?,
                Source::Helpdesk { file } => import::helpdesk::plan(file)?,
                Source::Csv { file, mapping } => import::mapping::plan(file, mapping)?,
                Source::Jsonl { file } => import::jsonl::plan(file)?,
            };
            let store = open_or_create(&config).await?;
            let options = RunOptions {
                on_error: config.on_error,
                progress: true,
            };
            let result = import::run(&store, plan, options).await;
            store.close().await;
            let mut summary = result?;
            summary.elapsed = started.elapsed();
            if args.json {
                writeln!(stdout, "{}", serde_json::to_string(&summary)?)?;
            } else {
                write!(stdout, "{summary}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Events(args) => {
            let store = open_existing(&config).await?;
            let query = EventsQuery {
                stream: args.stream,
                from: args.from,
                limit: args.limit,
                follow: args.follow,
                json: args.json,
                filter: crm_gateway::envelope::EventFilter {
                    category: args.category,
                    event_type: args.event_type,
                    correlation_id: args.correlation,
                    causation_id: args.causation,
                },
            };
            verbs::events(&store, &query, &mut stdout).await?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Verify(args) => {
            let store = open_existing(&config).await?;
            let report = verbs::verify(&store, true).await?;
            let anchors = verbs::check_anchors(&store, &args.anchors).await;
            store.close().await;
            let anchors = anchors?;
            let ok = report.is_ok() && anchors.iter().all(|a| a.ok);
            if args.json {
                let json = serde_json::json!({
                    "ok": ok,
                    "checked": report.checked,
                    "last_good_position": report.last_good.position.0,
                    "last_good_hash": report.last_good.hash.to_hex(),
                    "first_bad_position": report.first_bad.as_ref().map(|(p, _)| p.0),
                    "first_bad_reason": report.first_bad.as_ref().map(|(_, r)| r.clone()),
                    "anchors": anchors,
                });
                writeln!(stdout, "{json}")?;
            } else {
                if let Some((position, reason)) = &report.first_bad {
                    writeln!(
                        stdout,
                        "verify FAILED at position {position}: {reason}\n{} records before it are intact (last good hash {}); restore the log from a replica or backup",
                        report.checked, report.last_good.hash
                    )?;
                } else {
                    writeln!(
                        stdout,
                        "verify ok: {} records, head position {} hash {}",
                        report.checked, report.last_good.position, report.last_good.hash
                    )?;
                }
                for anchor in &anchors {
                    writeln!(stdout, "{anchor}")?;
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Verb::Stats(args) => {
            let store = open_existing(&config).await?;
            let stats = verbs::stats(&store).await?;
            store.close().await;
            if args.json {
                writeln!(stdout, "{}", serde_json::to_string(&stats)?)?;
            } else {
                write!(stdout, "{stats}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Serve(args) => {
            let store = open_or_create(&config).await?;
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listening on {}", config.listen))?;
            let address = listener.local_addr()?;
            writeln!(
                stdout,
                "crm serve: log {}, listening on http://{address} (API under /v1, /openapi.json); Ctrl-C or SIGTERM stops",
                store.describe()
            )?;
            stdout.flush()?;
            drop(stdout);
            let projections = if args.no_projections {
                None
            } else {
                Some(
                    http::read_models::Projections::start(
                        store.clone(),
                        &config.projections_dir(),
                        &config.read_models,
                    )
                    .context("starting the projections")?,
                )
            };
            let publisher = crm_gateway::publish::Publisher::start_configured(
                store.clone(),
                &config.publish,
                &config.data_dir,
            )?;
            http::serve(
                store,
                projections,
                publisher,
                listener,
                http::shutdown_signal(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Tail(args) => {
            tokio::select! {
                printed = crm_gateway::publish::tail::run(&args, &config.publish, &mut stdout) => { printed?; }
                () = http::shutdown_signal() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Metrics(args) => {
            let store = open_existing(&config).await?;
            let result = match &args.action {
                MetricsAction::List { json } => {
                    metric_cli::list(&store, format_of(*json, false)).await
                }
                MetricsAction::Define { file, json } => {
                    let text = std::fs::read_to_string(file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    metric_cli::define_file(
                        &store,
                        &text,
                        chrono::Utc::now(),
                        format_of(*json, false),
                    )
                    .await
                }
            };
            store.close().await;
            write!(stdout, "{}", result?)?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Metric(args) => {
            let store = open_existing(&config).await?;
            let result = match args.action {
                Some(MetricAction::Compare {
                    id,
                    versions,
                    query,
                    json,
                }) => {
                    metric_cli::compare_versions(
                        &store,
                        &id,
                        &versions,
                        &query.flags()?,
                        format_of(json, false),
                    )
                    .await
                }
                Some(MetricAction::Diff {
                    id,
                    version,
                    known_at,
                    from,
                    to,
                    period,
                    by,
                }) => {
                    let [t1, t2] = known_at[..] else {
                        store.close().await;
                        bail!("give --known-at exactly twice: the two report dates to compare");
                    };
                    let query = QueryArgs {
                        from,
                        to,
                        period,
                        by,
                        ..QueryArgs::default()
                    };
                    metric_cli::diff_known_at(&store, &id, version, &query.flags()?, t1, t2).await
                }
                None => {
                    let Some(id) = args.id else {
                        store.close().await;
                        bail!("name a metric, e.g. `crm metric sales.win_rate`; `crm metrics list` shows them");
                    };
                    metric_cli::metric(
                        &store,
                        &id,
                        args.version,
                        &args.query.flags()?,
                        format_of(args.json, args.csv),
                    )
                    .await
                }
            };
            store.close().await;
            write!(stdout, "{}", result?)?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Explain(args) => {
            let store = open_existing(&config).await?;
            let select = crm_metrics::ExplainSelect {
                period: args.select_period.clone(),
                decision: args.decision.clone(),
                offset: args.offset,
                limit: args.limit,
                ..Default::default()
            };
            let result = metric_cli::explain_page(
                &store,
                &args.id,
                args.version,
                &args.query.flags()?,
                &select,
                format_of(args.json, args.csv),
            )
            .await;
            store.close().await;
            write!(stdout, "{}", result?)?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Demo(args) => {
            let store = open_or_create(&config).await?;
            let bundle = args.bundle.unwrap_or_else(demo::default_bundle);
            let report = demo::run(
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
            writeln!(
                stdout,
                "\ndemo done in {:.1} s: {} records in the log",
                report.elapsed.as_secs_f64(),
                report.head_position
            )?;
            if args.no_serve {
                store.close().await;
                return Ok(ExitCode::SUCCESS);
            }
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("listening on {}", config.listen))?;
            let address = listener.local_addr()?;
            writeln!(
                stdout,
                "serving the API on http://{address} (try http://{address}/v1/read-models/pipeline); Ctrl-C stops"
            )?;
            stdout.flush()?;
            drop(stdout);
            let projections = http::read_models::Projections::start(
                store.clone(),
                &config.projections_dir(),
                &config.read_models,
            )
            .context("starting the projections")?;
            http::serve(
                store,
                Some(projections),
                None,
                listener,
                http::shutdown_signal(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Verb::Project(args) => {
            let store = open_existing(&config).await?;
            let mut options = crm_projections::RunnerOptions::default();
            let single = match &args.action {
                ProjectAction::Run {
                    name,
                    snapshot_every,
                    ..
                } => {
                    if let Some(n) = snapshot_every {
                        options.snapshot_every_events = (*n).max(1);
                    }
                    Some(name)
                }
                ProjectAction::Show { name, .. } => Some(name),
                _ => None,
            };
            let (runner, model) = match single {
                Some(name) => {
                    let (runner, model) = project::single_runner(
                        store.clone(),
                        &config.projections_dir(),
                        &config.read_models,
                        options,
                        name,
                    )?;
                    (runner, Some(model))
                }
                _ => (
                    project::runner(
                        store.clone(),
                        &config.projections_dir(),
                        &config.read_models,
                    )?,
                    None,
                ),
            };
            let runner = std::sync::Arc::new(runner);
            let result = match &args.action {
                ProjectAction::Status => Ok(serde_json::to_value(runner.status().await)?),
                ProjectAction::CatchUp => project::catch_up(&runner)
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|s| Ok(serde_json::to_value(s)?)),
                ProjectAction::Rebuild { name } => project::rebuild(&runner, name)
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|r| Ok(serde_json::to_value(r)?)),
                ProjectAction::Show { as_of, limit, .. } => match runner.run_until_head().await {
                    Err(e) => Err(e.into()),
                    Ok(_) => match &model {
                        Some(model) => project::report_json(
                            model,
                            as_of.unwrap_or_else(chrono::Utc::now),
                            *limit,
                        )
                        .map_err(anyhow::Error::from),
                        None => Ok(serde_json::Value::Null),
                    },
                },
                ProjectAction::Run { name, listen, .. } => {
                    let listener = match listen {
                        Some(addr) => Some(
                            tokio::net::TcpListener::bind(addr)
                                .await
                                .with_context(|| format!("listening on {addr}"))?,
                        ),
                        None => None,
                    };
                    let probes = match &listener {
                        Some(l) => format!(", probes on http://{}", l.local_addr()?),
                        None => String::new(),
                    };
                    writeln!(
                        stdout,
                        "crm project run {name}: log {}{probes}; SIGTERM or Ctrl-C stops with a final snapshot",
                        store.describe()
                    )?;
                    stdout.flush()?;
                    project::run_worker(
                        std::sync::Arc::clone(&runner),
                        name,
                        listener,
                        http::shutdown_signal(),
                    )
                    .await
                    .map_err(anyhow::Error::from)
                    .map(|()| serde_json::Value::Null)
                }
            };
            drop(model);
            drop(runner);
            let publisher = match &args.action {
                ProjectAction::Status => {
                    crm_gateway::publish::PublisherStatus::offline(&store, &config.data_dir).await
                }
                _ => Ok(None),
            };
            store.close().await;
            let (value, publisher) = (result?, publisher?);
            if matches!(args.action, ProjectAction::Run { .. }) {
                writeln!(stdout, "stopped: final snapshot saved")?;
            } else if matches!(args.action, ProjectAction::Status) && args.json {
                let status = serde_json::json!({ "projections": value, "publisher": publisher });
                writeln!(stdout, "{status}")?;
            } else if args.json {
                writeln!(stdout, "{value}")?;
            } else if matches!(args.action, ProjectAction::Show { .. }) {
                write!(stdout, "{}", project::render_text(&value))?;
            } else if let Ok(status) =
                serde_json::from_value::<Vec<crm_projections::WorkerStatus>>(value.clone())
            {
                write!(stdout, "{}", project::status_table(&status))?;
                if let Some(publisher) = publisher {
                    write!(stdout, "\n{publisher}")?;
                }
            } else {
                writeln!(stdout, "{}", serde_json::to_string_pretty(&value)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Bench(BenchArgs {
            target:
                BenchTarget::Http {
                    clients,
                    requests,
                    json,
                },
        }) => {
            let scratch = std::env::temp_dir().join(format!("crm-bench-{}", std::process::id()));
            let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/maven-crm");
            let options = bench::BenchOptions {
                clients,
                requests,
                scratch,
                maven_crm: bundled.is_dir().then_some(bundled),
            };
            let report = bench::http(&options).await?;
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
            } else {
                write!(stdout, "{report}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Verb::Bench(BenchArgs {
            target: BenchTarget::NatsLag(args),
        }) => {
            let url = args
                .nats
                .clone()
                .or(config.publish.nats_url)
                .context("give --nats URL (or CRM_NATS_URL): the NATS server to measure")?;
            let scratch =
                std::env::temp_dir().join(format!("crm-bench-nats-{}", std::process::id()));
            let store = crm_eventstore::SledStore::open(scratch.join("log"))
                .with_context(|| format!("opening a scratch log in {}", scratch.display()))?;
            let report =
                crm_gateway::publish::bench::nats_lag(store.clone(), &scratch, &url, &args).await;
            store.close().await;
            let _ = std::fs::remove_dir_all(&scratch);
            let report = report?;
            if args.json {
                writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
            } else {
                write!(stdout, "{report}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
