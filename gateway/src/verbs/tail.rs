//! `crm tail`: a small ordered consumer of the events `crm serve --nats` publishes. It
//! connects with the credentials and TLS of `[nats.publish]` (else `[nats]`), or the
//! `CRM_PUBLISH_NATS_*` variables: on the deploy cluster, user `crm-consumer`.

use std::process::ExitCode;

use clap::Args;
use crm_app::config::Flags;
use crm_publish::tail::TailOptions;

use super::Globals;

/// Flags of `crm tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// NATS server URL(s), comma-separated (default: `CRM_NATS_URL` or `[publish] nats_url`).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Only subjects matching this filter, e.g. `crm.events.case.>` (default: every event,
    /// `<prefix>.>`).
    #[arg(long, value_name = "SUBJECT")]
    subject: Option<String>,
    /// Replay from this log position, then follow (default: only events published from now).
    #[arg(long, value_name = "POSITION")]
    from: Option<u64>,
    /// Stop after this many events (default: follow until Ctrl-C).
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// The JetStream stream (default: `[publish] stream`, `CRM_EVENTS`).
    #[arg(long, value_name = "NAME")]
    stream: Option<String>,
    /// Print each message body (the event's JSON envelope) on one line.
    #[arg(long)]
    json: bool,
}

/// Runs `crm tail` until `--limit` events were printed, the consumer ends, or Ctrl-C.
///
/// # Errors
/// No NATS URL, NATS or the stream unreachable, an output failure.
pub async fn run(globals: &Globals, args: TailArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let options = TailOptions {
        nats: args.nats,
        subject: args.subject,
        from: args.from,
        limit: args.limit,
        stream: args.stream,
        json: args.json,
        auth: config.nats.for_publish().clone(),
    };
    let mut stdout = std::io::stdout().lock();
    tokio::select! {
        printed = crm_publish::tail::run(&options, &config.publish, &mut stdout) => { printed?; }
        () = crm_http::shutdown_signal() => {}
    }
    Ok(ExitCode::SUCCESS)
}
