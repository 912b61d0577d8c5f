//! `crm metric ID`: a metric's figures; `crm metric compare` (versions side by side) and
//! `crm metric diff` (why a figure moved between two report dates).

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use crm_app::config::Flags;
use crm_app::store::Create;

use super::{format_of, with_store, Globals, QueryArgs};
use crate::metric_output;

/// Flags of `crm metric`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MetricArgs {
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
        #[arg(long = "known-at", num_args = 1, required = true, value_parser = super::instant)]
        known_at: Vec<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_parser = super::instant)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_parser = super::instant)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long)]
        period: Option<String>,
        #[arg(long, value_delimiter = ',')]
        by: Vec<String>,
    },
}

/// Runs `crm metric`.
///
/// # Errors
/// No metric named, an unknown metric or version, an invalid query, no log.
pub async fn run(globals: &Globals, args: MetricArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let output = match args.action {
        Some(MetricAction::Compare {
            id,
            versions,
            query,
            json,
        }) => {
            let flags = query.flags()?;
            with_store(&config, Create::Never, async |store| {
                Ok(metric_output::compare_versions(
                    store,
                    &id,
                    &versions,
                    &flags,
                    format_of(json, false),
                )
                .await?)
            })
            .await?
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
                bail!("give --known-at exactly twice: the two report dates to compare");
            };
            let query = QueryArgs {
                from,
                to,
                period,
                by,
                ..QueryArgs::default()
            };
            let flags = query.flags()?;
            with_store(&config, Create::Never, async |store| {
                Ok(metric_output::diff_known_at(store, &id, version, &flags, t1, t2).await?)
            })
            .await?
        }
        None => {
            let Some(id) = args.id else {
                bail!("name a metric, e.g. `crm metric sales.win_rate`; `crm metrics list` shows them");
            };
            let flags = args.query.flags()?;
            let format = format_of(args.json, args.csv);
            with_store(&config, Create::Never, async |store| {
                Ok(metric_output::metric(store, &id, args.version, &flags, format).await?)
            })
            .await?
        }
    };
    write!(std::io::stdout().lock(), "{output}")?;
    Ok(ExitCode::SUCCESS)
}
