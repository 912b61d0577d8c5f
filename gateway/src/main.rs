//! `crm`: the command-line shell of the CRM event log. It parses the command line, starts the
//! runtime and hands each verb to its module in [`verbs`]; everything else lives in the
//! library crates (`crm-app`, `crm-import`, `crm-export`, `crm-http`, `crm-publish`).

mod metric_output;
mod verbs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc, with the settings `crm_app::allocator` explains.
#[global_allocator]
static ALLOCATOR: crm_app::allocator::Allocator = crm_app::allocator::ALLOCATOR;

/// The CRM event log: serve the HTTP API, import CRM exports, read, verify and count the log.
#[derive(Debug, Parser)]
#[command(name = "crm", version, about)]
struct Cli {
    #[command(flatten)]
    globals: verbs::Globals,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Import a CRM export into the log (idempotent: a re-import appends nothing).
    Import(verbs::import::ImportArgs),
    /// Print events of a stream or of the global log, or follow the log live.
    Events(verbs::events::EventsArgs),
    /// Check the checksum and hash chain of every record; exit code 1 on the first bad one.
    Verify(verbs::verify::VerifyArgs),
    /// Count events per type and stream category; show the head position and hash.
    Stats(verbs::JsonFlag),
    /// Serve the HTTP API (JSON under /v1, /openapi.json) and run the projections until
    /// SIGTERM or Ctrl-C.
    Serve(verbs::serve::ServeArgs),
    /// Projections (read models): status, catch up to the head, rebuild one.
    Project(verbs::project::ProjectArgs),
    /// The metric catalog: list definitions, define a new version from a TOML file.
    Metrics(verbs::metrics::MetricsArgs),
    /// Evaluate a metric (`crm metric ID`), compare versions, or diff two report dates.
    Metric(verbs::metric::MetricArgs),
    /// Scorecards: define a version (strategy map, measures, cascade), list them, show a
    /// node's actual, baseline, target, status and trend as of any date.
    Scorecard(verbs::scorecard::ScorecardArgs),
    /// The events behind a metric's figure: included, and excluded with their rule.
    Explain(verbs::explain::ExplainArgs),
    /// The main job: import the bundled data sets, bring the read models to the head, print
    /// a scorecard, a redefinition and an explained figure, then serve the API (Ctrl-C stops).
    Demo(verbs::demo::DemoArgs),
    /// Follow the events `crm serve --nats` publishes: one line per event (position, stream,
    /// version, type, subject), or each event's JSON with --json. An ordered JetStream
    /// consumer: from --from POSITION (replay, then live) or only new events; Ctrl-C stops.
    Tail(verbs::tail::TailArgs),
    /// Write the log's events, the read models and the metric answers as Parquet under
    /// --out DIR (events by type and month, typed columns, no personal data); a second
    /// export into DIR adds only the events recorded since.
    Export(verbs::export::ExportArgs),
    /// Access: API tokens for services and scripts (`crm auth token create|list|revoke`),
    /// with local admin access to the data directory.
    Auth(verbs::auth::AuthArgs),
    /// The master key and the key store of personal data: create a master key, rotate it,
    /// show what the key store holds.
    Keys(verbs::keys::KeysArgs),
    /// Signed checkpoints of the log's head: sign one now, list them, verify a note with the
    /// public key alone (and, with --log, against this log).
    Checkpoint(verbs::checkpoint::CheckpointArgs),
    /// Audit bundles: the evidence for one figure in one file (`bundle`), checked without
    /// the log and without a server (`check`).
    Audit(verbs::audit::AuditArgs),
    /// Erase a data subject's personal data for good: records who erased whom and why, then
    /// destroys the subject's key; reads show "[erased]" from then on.
    Erase(verbs::keys::EraseArgs),
    /// The commands and events the domain knows, and one type's fields (types, enum values,
    /// personal fields): what a mapping or a metric definition may name.
    Schema(verbs::schema::SchemaArgs),
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.globals;
    match cli.verb {
        Verb::Import(args) => verbs::import::run(g, args).await,
        Verb::Events(args) => verbs::events::run(g, args).await,
        Verb::Verify(args) => verbs::verify::run(g, args).await,
        Verb::Stats(args) => verbs::stats::run(g, args).await,
        Verb::Serve(args) => verbs::serve::run(g, args).await,
        Verb::Project(args) => verbs::project::run(g, args).await,
        Verb::Metrics(args) => verbs::metrics::run(g, args).await,
        Verb::Metric(args) => verbs::metric::run(g, args).await,
        Verb::Scorecard(args) => verbs::scorecard::run(g, args).await,
        Verb::Explain(args) => verbs::explain::run(g, args).await,
        Verb::Demo(args) => verbs::demo::run(g, args).await,
        Verb::Tail(args) => verbs::tail::run(g, args).await,
        Verb::Export(args) => verbs::export::run(g, args).await,
        Verb::Auth(args) => verbs::auth::run(g, args).await,
        Verb::Keys(args) => verbs::keys::run(g, args).await,
        Verb::Erase(args) => verbs::keys::erase(g, args).await,
        Verb::Checkpoint(args) => verbs::checkpoint::run(g, args).await,
        Verb::Audit(args) => verbs::audit::run(g, args).await,
        Verb::Schema(args) => verbs::schema::run(&args),
    }
}

/// `error` and its causes on one line, as `{:#}` shows them, but leaving out a cause whose
/// text is already shown (an error that prints its source in its own message).
fn describe(error: &anyhow::Error) -> String {
    let mut shown = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if shown.contains(&text) {
            continue;
        }
        if !shown.is_empty() {
            shown.push_str(": ");
        }
        shown.push_str(&text);
    }
    shown
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `crm verify --json` prints its report whatever happens, a bad flag included.
            let args: Vec<String> = std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            if e.use_stderr() && verbs::verify::asks_for_json_report(&args) {
                let shown = e.to_string();
                let first = shown.lines().next().unwrap_or_default();
                verbs::verify::print_failure_json(first.strip_prefix("error: ").unwrap_or(first));
            }
            e.exit()
        }
    };
    verbs::init_tracing(cli.globals.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let shown = format!("could not start the async runtime: {e}");
            if matches!(&cli.verb, Verb::Verify(args) if args.json) {
                verbs::verify::print_failure_json(&shown);
            }
            eprintln!("error: {shown}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            if let Some(remedy) = verbs::remedy(&e) {
                eprintln!("to fix: {remedy}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn a_cause_already_in_the_message_is_shown_once() {
        let inner = anyhow::anyhow!("record at position 4 is corrupt");
        let repeated =
            inner.context("reading the erasures failed: record at position 4 is corrupt");
        assert_eq!(
            describe(&repeated),
            "reading the erasures failed: record at position 4 is corrupt"
        );
        let added = anyhow::anyhow!("no such file").context("opening the mapping");
        assert_eq!(describe(&added), "opening the mapping: no such file");
    }
}
