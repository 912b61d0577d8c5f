//! `crm project ...`: the projection workers from the command line: status, catch up to the
//! head, rebuild one, print one's report, and run one as its own long-lived process
//! (`crm project run NAME`), with `/healthz`, `/readyz` and `/metrics` for probes.
//!
//! On the embedded sled log only one process can open the log, so these verbs do not run
//! beside `crm serve` there; on a JetStream store (`--store nats://...`) every worker is a
//! process of its own, on any host.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use crm_app::config::Flags;
use crm_app::projections;
use crm_app::store::Create;
use crm_projections::{RunnerOptions, WorkerStatus};

use super::{with_store, Globals};

/// Flags of `crm project`.
#[derive(Debug, Args)]
pub struct ProjectArgs {
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
        listen: Option<SocketAddr>,
        /// Save a snapshot (state + checkpoint) after this many events during a catch-up.
        #[arg(long, value_name = "EVENTS")]
        snapshot_every: Option<u64>,
    },
    /// Print one read model's report (catching it up to the head first).
    Show {
        /// The projection: pipeline, churn, lifetime-value or sla.
        name: String,
        /// "Now" for the report (YYYY-MM-DD or RFC 3339; default the current time).
        #[arg(long, value_name = "T", value_parser = super::instant)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// Most rows per breakdown.
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// What a `crm project` action produced, rendered after the store is closed.
enum Outcome {
    Status(Vec<WorkerStatus>, Option<crm_publish::PublisherStatus>),
    Value(serde_json::Value),
    Report(serde_json::Value),
    Stopped,
}

/// Runs `crm project`.
///
/// # Errors
/// No log, an unknown projection, a projection that keeps failing.
pub async fn run(globals: &Globals, args: ProjectArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let dir = config.projections_dir();
    let outcome = with_store(&config, Create::Never, async |store| {
        let store = store.clone();
        Ok(match &args.action {
            ProjectAction::Status => {
                let runner = projections::runner(store.clone(), &dir, &config.read_models)?;
                let status = runner.status().await;
                drop(runner);
                let publisher =
                    crm_publish::PublisherStatus::offline(&store, &config.data_dir).await?;
                Outcome::Status(status, publisher)
            }
            ProjectAction::CatchUp => {
                // The folds read only the whole log, never a stream: the embedded log's
                // stream index (about 175 MiB over 10,000,000 events) is let go first, so it
                // is not part of the catch-up's peak. Nothing is appended afterwards.
                super::replay_only::release_index(&store).await;
                let runner = projections::runner(store, &dir, &config.read_models)?;
                Outcome::Status(projections::catch_up(&runner).await?, None)
            }
            ProjectAction::Rebuild { name } => {
                let runner = projections::runner(store, &dir, &config.read_models)?;
                let report = projections::rebuild(&runner, name).await?;
                Outcome::Value(serde_json::to_value(report)?)
            }
            ProjectAction::Show { name, as_of, limit } => {
                let (runner, model) = projections::single_runner(
                    store,
                    &dir,
                    &config.read_models,
                    RunnerOptions::default(),
                    name,
                )?;
                runner.run_until_head().await?;
                let at = as_of.unwrap_or_else(chrono::Utc::now);
                Outcome::Report(projections::report_json(&model, at, *limit)?)
            }
            ProjectAction::Run {
                name,
                listen,
                snapshot_every,
            } => {
                let mut options = RunnerOptions::default();
                if let Some(n) = snapshot_every {
                    options.snapshot_every_events = (*n).max(1);
                }
                let description = store.describe();
                let (runner, _model) = projections::single_runner(
                    store,
                    &dir,
                    &config.read_models,
                    options,
                    name,
                )?;
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
                let mut stdout = std::io::stdout().lock();
                writeln!(
                    stdout,
                    "crm project run {name}: log {description}{probes}; SIGTERM or Ctrl-C stops with a final snapshot"
                )?;
                stdout.flush()?;
                drop(stdout);
                crm_http::probes::run_worker(
                    Arc::new(runner),
                    name,
                    listener,
                    crm_http::shutdown_signal(),
                )
                .await?;
                Outcome::Stopped
            }
        })
    })
    .await?;
    let mut stdout = std::io::stdout().lock();
    match outcome {
        Outcome::Stopped => writeln!(stdout, "stopped: final snapshot saved")?,
        Outcome::Status(status, publisher) if args.json => {
            let json = match &args.action {
                ProjectAction::Status => {
                    serde_json::json!({ "projections": status, "publisher": publisher })
                }
                _ => serde_json::to_value(&status)?,
            };
            writeln!(stdout, "{json}")?;
        }
        Outcome::Status(status, publisher) => {
            write!(stdout, "{}", status_table(&status))?;
            if let Some(publisher) = publisher {
                write!(stdout, "\n{publisher}")?;
            }
        }
        Outcome::Value(value) | Outcome::Report(value) if args.json => {
            writeln!(stdout, "{value}")?;
        }
        Outcome::Report(value) => write!(stdout, "{}", render_text(&value))?,
        Outcome::Value(value) => writeln!(stdout, "{}", serde_json::to_string_pretty(&value)?)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A JSON value as indented `key: value` lines, for reading in a terminal.
#[must_use]
pub fn render_text(value: &serde_json::Value) -> String {
    let mut out = String::new();
    render_into(&mut out, value, 0);
    out
}

fn render_into(out: &mut String, value: &serde_json::Value, depth: usize) {
    let pad = "  ".repeat(depth);
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::Object(m) if !m.is_empty() => {
                        let _ = writeln!(out, "{pad}{k}:");
                        render_into(out, v, depth + 1);
                    }
                    serde_json::Value::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}{k}: ({} rows)", a.len());
                        render_into(out, v, depth + 1);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{k}: {}", scalar(v));
                    }
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                match item {
                    serde_json::Value::Object(m)
                        if m.values().all(|v| !v.is_object() && !v.is_array()) =>
                    {
                        let row: Vec<String> = m
                            .iter()
                            .map(|(k, v)| format!("{k}={}", scalar(v)))
                            .collect();
                        let _ = writeln!(out, "{pad}- {}", row.join("  "));
                    }
                    serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                        let _ = writeln!(out, "{pad}-");
                        render_into(out, item, depth + 1);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}- {}", scalar(item));
                    }
                }
            }
        }
        _ => {
            let _ = writeln!(out, "{pad}{}", scalar(value));
        }
    }
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        serde_json::Value::Object(_) => "{}".into(),
        serde_json::Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// The status as a table: one line per projection.
#[must_use]
pub fn status_table(status: &[WorkerStatus]) -> String {
    let mut out = format!(
        "{:<16} {:>4} {:<12} {:>10} {:>10} {:>10} {:>9}\n",
        "projection", "ver", "phase", "applied", "checkpoint", "lag", "restarts"
    );
    for s in status {
        let _ = writeln!(
            out,
            "{:<16} {:>4} {:<12} {:>10} {:>10} {:>10} {:>9}",
            s.name,
            s.version,
            format!("{:?}", s.phase).to_lowercase(),
            s.applied_position.0,
            s.checkpoint_position.0,
            s.lag_events,
            s.restarts
        );
        if let Some(e) = &s.last_error {
            let _ = writeln!(out, "  last error at {}: {}", e.position.0, e.message);
        }
        if let Some(why) = &s.rebuilt_because {
            let _ = writeln!(out, "  rebuilt from 0 because {why}");
        }
    }
    out
}
