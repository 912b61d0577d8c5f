//! `crm audit bundle METRIC --out FILE` (the evidence for a figure in one file) and
//! `crm audit check FILE [--key KEY]` (checked without the log and without a server); see
//! [`crm_audit`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use crm_app::access::local_principal;
use crm_app::checkpoint::{Checkpoints, VerifierKey};
use crm_app::config::Flags;
use crm_app::store::Create;
use crm_audit::Question;

use super::{with_store, Globals, JsonFlag, QueryArgs};

/// Flags of `crm audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Write one self-contained file with a metric's question, definition, figure, every
    /// event counted and left out with its rule, the log's records up to a checkpoint
    /// signed now, and the signature. Needs the master key (the signing key).
    Bundle {
        /// Metric id.
        metric: String,
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        query: QueryArgs,
        /// The bundle file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Check a bundle with nothing but its bytes and the server's public key: the
    /// checkpoint's signature, every record's checksum and chain link up to it, and that
    /// re-evaluating the definition over the records gives the figure and every row.
    /// Exit code 1 with the reason on the first fault.
    Check {
        /// The bundle file.
        file: PathBuf,
        /// The server's verifier key (`crm keys show`); without it, the key the bundle
        /// names is used and the report says so.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// Runs `crm audit`.
///
/// # Errors
/// No log or master key, an unknown metric, or a bundle that does not check.
pub async fn run(globals: &Globals, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match args.action {
        Action::Bundle {
            metric,
            version,
            query,
            out: path,
            json,
        } => {
            let config = globals.config(Flags::default())?;
            let signer = super::checkpoint::own_signer(&config)?;
            let checkpoints = Checkpoints::in_data_dir(&config.data_dir);
            let question = Question {
                metric,
                version,
                query: query.flags()?.query(),
            };
            let started = Instant::now();
            let temporary = path.with_extension("partial");
            let file = std::fs::File::create(&temporary)
                .with_context(|| format!("could not create {}", temporary.display()))?;
            let written = with_store(&config, Create::Never, async |store| {
                let writer = std::io::BufWriter::new(&file);
                Ok(crm_audit::write_bundle(
                    store,
                    question,
                    &local_principal().name,
                    &checkpoints,
                    &signer,
                    writer,
                )
                .await?)
            })
            .await;
            let written = match written {
                Ok(w) => w,
                Err(e) => {
                    let _ = std::fs::remove_file(&temporary);
                    return Err(e);
                }
            };
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            let bytes = std::fs::metadata(&path)?.len();
            let seconds = started.elapsed().as_secs_f64();
            if json.json {
                let answer = serde_json::json!({
                    "file": path,
                    "bytes": bytes,
                    "seconds": seconds,
                    "written": written,
                });
                writeln!(out, "{answer}")?;
            } else {
                writeln!(
                    out,
                    "bundle {}: {} records up to the checkpoint at {} ({}), {} explain rows, {bytes} bytes in {seconds:.2} s",
                    path.display(),
                    written.records,
                    written.checkpoint.position,
                    if written.checkpoint_new { "signed now" } else { "already signed" },
                    written.rows
                )?;
                for figure in &written.figures {
                    writeln!(out, "  {figure}")?;
                }
            }
        }
        Action::Check { file, key, json } => {
            let key: Option<VerifierKey> = key.map(|k| k.parse()).transpose()?;
            let started = Instant::now();
            let input = std::fs::File::open(&file)
                .with_context(|| format!("could not open {}", file.display()))?;
            let report = crm_audit::check_bundle(std::io::BufReader::new(input), key.as_ref())
                .await
                .with_context(|| format!("{} does not check", file.display()))?;
            let seconds = started.elapsed().as_secs_f64();
            if json.json {
                let answer = serde_json::json!({ "report": report, "seconds": seconds });
                writeln!(out, "{answer}")?;
            } else {
                writeln!(
                    out,
                    "bundle checked in {seconds:.2} s: {} v{} (spec {}), {} records chained to the checkpoint at {} signed {} by {}",
                    report.metric,
                    report.version,
                    report.spec_hash,
                    report.records,
                    report.checkpoint.position,
                    report.checkpoint.time.to_rfc3339(),
                    report.key
                )?;
                writeln!(
                    out,
                    "  {} rows re-derived ({} included, {} excluded); figures:",
                    report.rows, report.rows_included, report.rows_excluded
                )?;
                for figure in &report.figures {
                    writeln!(out, "  {figure}")?;
                }
                if !report.key_given {
                    writeln!(
                        out,
                        "  note: checked with the key the bundle names; compare it with the key the server publishes, or pass --key"
                    )?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
