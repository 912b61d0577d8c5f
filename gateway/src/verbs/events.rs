//! `crm events`: events of a stream or of the global log, as text or JSON lines, or followed
//! live.

use std::process::ExitCode;

use clap::Args;
use crm_app::config::Flags;
use crm_app::envelope::EventFilter;
use crm_app::inspect::{self, EventsQuery};
use crm_app::personal::{shown_by, Visibility};
use crm_app::store::Create;

use super::{with_store, Globals};

/// Flags of `crm events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
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

/// Runs `crm events`.
///
/// # Errors
/// No log, an invalid stream name, a read or output failure.
pub async fn run(globals: &Globals, args: EventsArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let query = EventsQuery {
        stream: args.stream,
        from: args.from,
        limit: args.limit,
        follow: args.follow,
        json: args.json,
        filter: EventFilter {
            category: args.category,
            event_type: args.event_type,
            correlation_id: args.correlation,
            causation_id: args.causation,
        },
    };
    with_store(&config, Create::Never, async |store| {
        let mut stdout = std::io::stdout().lock();
        // The operator at the machine holds the master key: personal fields are shown.
        let show = shown_by(store, Visibility::Reveal);
        inspect::events(store, &query, &show, &mut stdout).await?;
        Ok(())
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
