//! `crm export --out DIR`: the log's events, the read models and the metric answers as
//! Parquet (see the `crm-export` crate for the layout); a second export into the same
//! directory adds only the events recorded since.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use crm_app::config::Flags;
use crm_app::store::Create;
use crm_export::{ExportOptions, ExportReport, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{with_store, Globals};

/// Flags of `crm export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The output directory (created if missing; an earlier export there is continued).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// "Now" for the read models' reports (YYYY-MM-DD or RFC 3339; default the current
    /// time).
    #[arg(long, value_parser = super::instant)]
    as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Only the events: no read models, no metric answers.
    #[arg(long)]
    events_only: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} export [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} ({per_sec})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Runs `crm export`.
///
/// # Errors
/// No log, a log that no longer holds what the previous export ended at, an event that does
/// not decode, a write failure.
pub async fn run(globals: &Globals, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let options = ExportOptions {
        out: args.out.clone(),
        projections_dir: config.projections_dir(),
        read_models: config.read_models.clone(),
        as_of: args.as_of.unwrap_or_else(chrono::Utc::now),
        tables: !args.events_only,
    };
    let (report, log_bytes) = with_store(&config, Create::Never, async |store| {
        let bar = progress_bar(0);
        bar.set_message("events");
        let report = crm_export::export(store, &options, |p| match p {
            Progress::Events { position, head } => {
                bar.set_length(head);
                bar.set_position(position);
            }
            Progress::ReadModels => {
                bar.set_message("read models");
                bar.set_length(1);
                bar.set_position(0);
            }
            Progress::Metrics { done, total } => {
                bar.set_message("metrics");
                bar.set_length(u64::try_from(total).unwrap_or(u64::MAX));
                bar.set_position(u64::try_from(done).unwrap_or(u64::MAX));
            }
        })
        .await;
        bar.finish_and_clear();
        Ok((report?, store.local_size_bytes()))
    })
    .await?;
    let parquet_bytes = crm_export::size_on_disk(&args.out)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "report": report,
            "events_per_second": report.events_per_second(),
            "log_bytes": log_bytes,
            "export_bytes": parquet_bytes,
        });
        writeln!(stdout, "{json}")?;
    } else {
        write!(stdout, "{}", text(&report, log_bytes, parquet_bytes))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn mib(bytes: u64) -> String {
    // Sizes below 2^52 bytes are exact in f64.
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / (1024.0 * 1024.0);
    format!("{mib:.1} MiB")
}

fn text(report: &ExportReport, log_bytes: Option<u64>, export_bytes: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let range = match report.first_position {
        Some(first) => format!("positions {first}..={}", report.last_position),
        None => format!("nothing new after position {}", report.last_position),
    };
    let _ = writeln!(
        out,
        "{} {}: {range}",
        if report.incremental {
            "continued the export in"
        } else {
            "exported to"
        },
        report.out.display()
    );
    let _ = writeln!(
        out,
        "events: {} in {} part files, {} ({:.0} events/s over {:.1} s)",
        report.events,
        report.event_files,
        mib(report.event_bytes),
        report.events_per_second(),
        report.events_elapsed.as_secs_f64()
    );
    if report.withheld > 0 {
        let _ = writeln!(
            out,
            "withheld: {} events of the access-token register",
            report.withheld
        );
    }
    if report.table_files > 0 {
        let _ = writeln!(
            out,
            "read models and metric answers: {} files, {} (rewritten whole; read models {:.1} s, metrics {:.1} s)",
            report.table_files,
            mib(report.table_bytes),
            report.read_models_elapsed.as_secs_f64(),
            report.metrics_elapsed.as_secs_f64()
        );
    }
    for (metric, reason) in &report.metrics_skipped {
        let _ = writeln!(out, "  no file for {metric}: {reason}");
    }
    if report.orphans_removed > 0 {
        let _ = writeln!(
            out,
            "removed {} files an interrupted export had left",
            report.orphans_removed
        );
    }
    let log = log_bytes.map_or_else(|| "not on this disk".to_owned(), mib);
    let _ = writeln!(
        out,
        "size: log {log}; event files {} (all exports); export directory {}",
        mib(report.total_event_bytes),
        mib(export_bytes)
    );
    let _ = writeln!(out, "took {:.1} s", report.elapsed.as_secs_f64());
    out
}
