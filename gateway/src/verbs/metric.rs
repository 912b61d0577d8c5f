//! `crm metric ID`: a metric's figures; `crm metric compare` (versions side by side) and
//! `crm metric diff` (why a figure moved between two report dates); `crm metric sql` (the
//! definition as SQL over the Parquet export, in `metric_sql.rs`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use crm_app::config::Flags;
use crm_app::store::Create;

use super::replay_only::ReplayOnly;
use super::{format_of, with_store, Globals, QueryArgs};
use crate::metric_output;

/// The embedded log's page cache while a question is answered.
const QUESTION_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Flags of `crm metric`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MetricArgs {
    #[command(subcommand)]
    action: Option<MetricAction>,
    /// Metric ids, e.g. sales.win_rate (several: one output, one CSV header).
    ids: Vec<String>,
    /// Definition version (default: the metric's default version).
    #[arg(long)]
    version: Option<u32>,
    #[command(flatten)]
    query: QueryArgs,
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Tidy CSV: one column per dimension of --by, period start and end apart.
    #[arg(long)]
    csv: bool,
    /// Order of the figures: value, -value (largest first), period, -period.
    #[arg(long, allow_hyphen_values = true)]
    order: Option<metric_output::Order>,
    /// At most this many figures per metric (after --order).
    #[arg(long)]
    limit: Option<usize>,
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
        /// Every figure, fact and event as JSON (default: a summary).
        #[arg(long)]
        json: bool,
    },
    /// The definition compiled to SQL over the Parquet export (`crm export --out DIR`) for
    /// DuckDB, Spark SQL or Trino; exit code 1 with the reason when it has no SQL form.
    Sql(super::metric_sql::SqlArgs),
}

/// Runs `crm metric`.
///
/// # Errors
/// No metric named, an unknown metric or version, an invalid query, no log.
pub async fn run(globals: &Globals, args: MetricArgs) -> anyhow::Result<ExitCode> {
    if let Some(MetricAction::Sql(sql)) = args.action {
        return super::metric_sql::run(globals, sql).await;
    }
    let mut config = globals.config(Flags::default())?;
    // A question replays the log once, page after page: the embedded log's page cache would
    // only hold pages already read (up to 1 GiB by default over a long log).
    config.store_cache_bytes = Some(QUESTION_CACHE_BYTES);
    // The replay frees what it read and what its columns outgrew; the evaluation allocates on
    // other threads' arenas, so those pages would count in its peak until they decay.
    crm_metrics::on_view_loaded(crm_app::allocator::return_freed_memory);
    let output = match args.action {
        Some(MetricAction::Sql(_)) => String::new(),
        Some(MetricAction::Compare {
            id,
            versions,
            query,
            json,
        }) => {
            let flags = query.flags()?;
            with_store(&config, Create::Never, async |store| {
                let store = &ReplayOnly::new(store);
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
            json,
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
                let store = &ReplayOnly::new(store);
                Ok(metric_output::diff_known_at(
                    store,
                    &id,
                    version,
                    &flags,
                    t1,
                    t2,
                    format_of(json, false),
                )
                .await?)
            })
            .await?
        }
        None => {
            if args.ids.is_empty() {
                bail!("name a metric, e.g. `crm metric sales.win_rate`; `crm metrics list` shows them");
            }
            let flags = args.query.flags()?;
            let format = format_of(args.json, args.csv);
            let shape = metric_output::Shape {
                order: args.order,
                limit: args.limit,
            };
            with_store(&config, Create::Never, async |store| {
                let store = &ReplayOnly::new(store);
                Ok(
                    metric_output::metrics(store, &args.ids, args.version, &flags, shape, format)
                        .await?,
                )
            })
            .await?
        }
    };
    write!(std::io::stdout().lock(), "{output}")?;
    Ok(ExitCode::SUCCESS)
}
