//! `crm verify`: checksums and the hash chain of every record, and anchors; exit code 1 on
//! the first bad record or a failed anchor.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use crm_app::config::Flags;
use crm_app::inspect::{self, Anchor};
use crm_app::store::Create;
use crm_eventstore::{verify_with_progress, EventStore, Position};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{exit, with_store, Globals};

/// Flags of `crm verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Also check that the record at POSITION still has chain hash HASH (as printed by
    /// `crm stats` or beside a metric figure: "computed at log position P chain hash H"):
    /// with a clean chain, a match proves records 1..=POSITION unchanged since. Repeatable.
    #[arg(long = "anchor", value_name = "POSITION:HASH")]
    anchors: Vec<Anchor>,
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} verify [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Runs `crm verify`.
///
/// # Errors
/// No log, or a log that cannot be read at all (a bad record is reported, exit code 1).
pub async fn run(globals: &Globals, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let (report, anchors) = with_store(&config, Create::Never, async |store| {
        let bar = progress_bar(store.head().position.0);
        let report =
            verify_with_progress(store, Position::FIRST, None, |p| bar.set_position(p.0)).await;
        bar.finish_and_clear();
        let report = report?;
        let anchors = inspect::check_anchors(store, &args.anchors).await?;
        Ok((report, anchors))
    })
    .await?;
    let ok = report.is_ok() && anchors.iter().all(|a| a.ok);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "ok": ok,
            "checked": report.checked,
            "last_good_position": report.last_good.position.0,
            "last_good_hash": report.last_good.hash.to_hex(),
            "first_bad_position": report.first_bad.as_ref().map(|(p, _)| p.0),
            "first_bad_reason": report.first_bad.as_ref().map(|(_, r)| r.to_string()),
            "anchors": anchors,
        });
        writeln!(stdout, "{json}")?;
        return Ok(exit(ok));
    }
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
    Ok(exit(ok))
}
