//! `crm metrics list|define`: the metric catalog, and a new definition version from TOML.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use crm_app::config::Flags;
use crm_app::store::Create;

use super::{format_of, with_store, Globals};
use crate::metric_output;

/// Flags of `crm metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
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
    /// Validate a TOML definition (keys, expressions, event types and fields against the
    /// event schemas) without a log and without appending; exit code 1 if it is refused.
    Check { file: PathBuf },
    /// The dimensions of a metric: what --by and --where may name, and what each reads.
    Dimensions {
        id: String,
        #[arg(long)]
        version: Option<u32>,
        #[arg(long)]
        json: bool,
    },
}

/// Runs `crm metrics`.
///
/// # Errors
/// No log, an unreadable file, a definition the engine refuses.
pub async fn run(globals: &Globals, args: MetricsArgs) -> anyhow::Result<ExitCode> {
    if let MetricsAction::Check { file } = &args.action {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let def = crm_metrics::parse_definition(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        writeln!(
            std::io::stdout().lock(),
            "{}: {} v{} is valid (spec hash {}); `crm metrics define {}` publishes it",
            file.display(),
            def.id,
            def.version,
            def.spec_hash(),
            file.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = globals.config(Flags::default())?;
    let text = match &args.action {
        MetricsAction::Define { file, .. } => Some(
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
        ),
        MetricsAction::List { .. }
        | MetricsAction::Check { .. }
        | MetricsAction::Dimensions { .. } => None,
    };
    let output = with_store(&config, Create::Never, async |store| match &args.action {
        MetricsAction::Check { .. } => Ok(String::new()),
        MetricsAction::Dimensions { id, version, json } => {
            Ok(metric_output::dimensions(store, id, *version, format_of(*json, false)).await?)
        }
        MetricsAction::List { json } => {
            Ok(metric_output::list(store, format_of(*json, false)).await?)
        }
        MetricsAction::Define { json, .. } => {
            let text = text.as_deref().unwrap_or_default();
            Ok(metric_output::define_file(
                store,
                text,
                chrono::Utc::now(),
                &crm_app::access::local_principal().name,
                format_of(*json, false),
            )
            .await?)
        }
    })
    .await?;
    write!(std::io::stdout().lock(), "{output}")?;
    Ok(ExitCode::SUCCESS)
}
