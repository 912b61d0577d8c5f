//! `crm explain ID`: the events behind a metric's figure, included and excluded with the rule.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use crm_app::config::Flags;
use crm_app::store::Create;
use crm_metrics::ExplainSelect;

use super::replay_only::ReplayOnly;
use super::{format_of, with_store, Globals, QueryArgs};
use crate::metric_output;

/// Flags of `crm explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
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
    /// With --csv: every row, page after page (one header), not one page.
    #[arg(long, requires = "csv")]
    all: bool,
}

/// Runs `crm explain`.
///
/// # Errors
/// An unknown metric or version, an invalid query, no log.
pub async fn run(globals: &Globals, args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    // As for `crm metric`: the pages the replay freed are returned before the evaluation.
    crm_metrics::on_view_loaded(crm_app::allocator::return_freed_memory);
    let select = ExplainSelect {
        period: args.select_period.clone(),
        decision: args.decision.clone(),
        offset: args.offset,
        limit: args.limit,
        ..Default::default()
    };
    let flags = args.query.flags()?;
    let format = format_of(args.json, args.csv);
    let output = with_store(&config, Create::Never, async |store| {
        let store = &ReplayOnly::new(store);
        Ok(metric_output::explain_page(
            store,
            &args.id,
            args.version,
            &flags,
            &select,
            args.all,
            format,
        )
        .await?)
    })
    .await?;
    write!(std::io::stdout().lock(), "{output}")?;
    Ok(ExitCode::SUCCESS)
}
