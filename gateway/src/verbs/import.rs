//! `crm import SOURCE`: a CRM export into the log, through the domain's commands.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use crm_app::config::{Flags, OnError};
use crm_app::store::Create;
use crm_import::RunOptions;

use crm_eventstore::AnyStore;

use super::{with_store, Globals};

/// Flags of `crm import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    source: Source,
    /// What to do with a bad row: stop (append nothing from its batch) or skip it and report.
    #[arg(long, global = true, value_parser = on_error_parser())]
    on_error: Option<OnError>,
    /// Print the summary as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Read and decide every row without opening the log or appending anything: the rows,
    /// the events they would give and the first refused rows; exit code 1 if any row is
    /// refused. Decisions see the file alone (not what the log already holds).
    #[arg(long, global = true)]
    check: bool,
    /// Record every appended event at this time (RFC 3339) instead of the import's start:
    /// the time an earlier import printed (its records' `recorded_at`) repeats that import
    /// byte for byte, hash for hash, in an empty log. Not later than now; raised to the
    /// log's newest record when earlier.
    #[arg(long, global = true, value_name = "TIME")]
    recorded_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Refused rows `--check` prints, at most.
const CHECK_ERRORS_SHOWN_MAX: usize = 10;

/// What `--check` found.
#[derive(Debug, serde::Serialize)]
struct CheckReport {
    files: Vec<String>,
    rows: u64,
    rows_refused: u64,
    events: u64,
    first_refused: Vec<String>,
    notes: Vec<String>,
}

fn on_error_parser() -> impl clap::builder::TypedValueParser<Value = OnError> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(OnError::NAMES).try_map(|s| s.parse::<OnError>())
}

#[derive(Debug, Subcommand)]
enum Source {
    /// Maven Analytics CRM + Sales Opportunities: a directory with accounts.csv, products.csv,
    /// sales_teams.csv and sales_pipeline.csv.
    MavenCrm {
        /// The directory.
        dir: PathBuf,
    },
    /// IBM Telco Customer Churn table (snapshot date 2020-01-01).
    TelcoChurn {
        /// The CSV file.
        file: PathBuf,
    },
    /// Helpdesk process-mining log (CaseID, ActivityID, CompleteTimestamp).
    Helpdesk {
        /// The CSV file.
        file: PathBuf,
    },
    /// Any CSV export (or .csv.gz), with a TOML mapping of columns to domain commands.
    Csv {
        /// The CSV file.
        file: PathBuf,
        /// The mapping (TOML).
        #[arg(long, value_name = "MAPPING.toml", required_unless_present = "infer")]
        mapping: Option<PathBuf>,
        /// Print a mapping skeleton inferred from the header and the first rows (delimiter,
        /// column types and formats; with --command, that command's fields matched to
        /// columns) instead of importing.
        #[arg(long)]
        infer: bool,
        /// With --infer: the command each row makes (`crm schema` lists them).
        #[arg(long, value_name = "NAME", requires = "infer")]
        command: Option<String>,
    },
    /// Events in the JSON-lines form `crm events --json` prints.
    Jsonl {
        /// The JSON-lines file.
        file: PathBuf,
    },
}

/// Runs `crm import`.
///
/// # Errors
/// An unreadable source, a bad row with `--on-error=stop`, or a storage failure.
pub async fn run(globals: &Globals, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let mut config = globals.config(Flags {
        on_error: args.on_error,
        ..Flags::default()
    })?;
    // An import writes once: a small page cache keeps its memory bounded.
    config.store_cache_bytes = Some(crm_app::config::IMPORT_CACHE_BYTES);
    // Rows/s and events/s cover reading and deciding too, not only the appends.
    let started = std::time::Instant::now();
    if let Source::Csv {
        file,
        infer: true,
        command,
        ..
    } = &args.source
    {
        let skeleton = crm_import::mapping::infer::infer(
            file,
            command.as_deref(),
            &crm_domain::Registry::builtin(),
        )?;
        write!(std::io::stdout().lock(), "{skeleton}")?;
        return Ok(ExitCode::SUCCESS);
    }
    let plan = match &args.source {
        Source::MavenCrm { dir } => crm_import::maven::plan(dir)?,
        Source::TelcoChurn { file } => crm_import::telco::plan(file)?,
        Source::Helpdesk { file } => crm_import::helpdesk::plan(file)?,
        // A mapping import streams instead of planning the whole file.
        Source::Csv {
            file,
            mapping: Some(mapping),
            ..
        } => {
            let mapping_import = MappingArgs {
                file: file.clone(),
                mapping: mapping.clone(),
                check: args.check,
                json: args.json,
                recorded_at: args.recorded_at,
            };
            return import_mapping(&config, mapping_import, started).await;
        }
        Source::Csv { mapping: None, .. } => {
            anyhow::bail!("give --mapping MAPPING.toml (or --infer to write one)")
        }
        Source::Jsonl { file } => crm_import::jsonl::plan(file)?,
    };
    if args.check {
        let refused: Vec<String> = plan
            .units
            .iter()
            .filter_map(|u| u.as_ref().err().map(ToString::to_string))
            .collect();
        let report = CheckReport {
            files: plan.files.clone(),
            rows: plan.rows(),
            rows_refused: u64::try_from(refused.len()).unwrap_or(u64::MAX),
            events: plan
                .units
                .iter()
                .filter_map(|u| u.as_ref().ok())
                .map(|u| u64::try_from(u.events.len()).unwrap_or(u64::MAX))
                .sum(),
            first_refused: refused.into_iter().take(CHECK_ERRORS_SHOWN_MAX).collect(),
            notes: plan.notes.clone(),
        };
        return print_check(&report, args.json);
    }
    let options = RunOptions {
        on_error: config.on_error,
        progress: true,
        recorded_at: args.recorded_at,
    };
    let mut summary = with_store(&config, Create::IfMissing, async |store| {
        Ok(crm_import::run(store, plan, options).await?)
    })
    .await?;
    summary.elapsed = started.elapsed();
    print_summary(&summary, args.json)
}

fn print_summary(summary: &crm_import::ImportSummary, json: bool) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{}", serde_json::to_string(summary)?)?;
    } else {
        write!(stdout, "{summary}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What a mapping import was asked.
struct MappingArgs {
    file: PathBuf,
    mapping: PathBuf,
    check: bool,
    json: bool,
    recorded_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Runs a mapping import: the mapping checked and the file read once (rows counted, content
/// hashed), then the rows decided against what the log already holds while the batches
/// decided before are appended; with `--check`, decided against the file alone.
async fn import_mapping(
    config: &crm_app::config::Config,
    args: MappingArgs,
    started: std::time::Instant,
) -> anyhow::Result<ExitCode> {
    let MappingArgs {
        file,
        mapping,
        check,
        json,
        recorded_at,
    } = args;
    let import = tokio::task::spawn_blocking(move || {
        crm_import::mapping::MappingImport::open(&file, &mapping, &crm_domain::Registry::builtin())
    })
    .await??;
    if check {
        let report = tokio::task::spawn_blocking(move || check_mapping(&import)).await??;
        return print_check(&report, json);
    }
    let options = RunOptions {
        on_error: config.on_error,
        progress: true,
        recorded_at,
    };
    let mut summary = with_store(config, Create::IfMissing, async |store| {
        Ok(crm_import::mapping::run(
            store,
            import,
            crm_domain::Registry::builtin(),
            log_loader(store),
            options,
        )
        .await?)
    })
    .await?;
    summary.elapsed = started.elapsed();
    print_summary(&summary, json)
}

/// Prints what `--check` found; exit code 1 if any row is refused.
fn print_check(report: &CheckReport, json: bool) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{}", serde_json::to_string(report)?)?;
    } else {
        writeln!(
            stdout,
            "{}: {} rows, {} refused, {} events would be appended (nothing was)",
            report.files.join(", "),
            report.rows,
            report.rows_refused,
            report.events
        )?;
        for line in &report.first_refused {
            writeln!(stdout, "  refused: {line}")?;
        }
        for note in &report.notes {
            writeln!(stdout, "  note: {note}")?;
        }
    }
    Ok(if report.rows_refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Decides every row of a mapping import against the file alone, keeping only counts and
/// the first refusals.
fn check_mapping(
    import: &crm_import::mapping::MappingImport,
) -> Result<CheckReport, crm_import::ImportError> {
    let mut report = CheckReport {
        files: vec![import.file().to_owned()],
        rows: import.rows(),
        rows_refused: 0,
        events: 0,
        first_refused: Vec::new(),
        notes: Vec::new(),
    };
    report.notes = import.decide(
        &crm_domain::Registry::builtin(),
        &mut |_| Ok(Vec::new()),
        &mut |batch| {
            for unit in batch.units {
                match unit {
                    Ok(unit) => {
                        report.events += u64::try_from(unit.events.len()).unwrap_or(u64::MAX);
                    }
                    Err(row) => {
                        report.rows_refused += 1;
                        if report.first_refused.len() < CHECK_ERRORS_SHOWN_MAX {
                            report.first_refused.push(row.to_string());
                        }
                    }
                }
            }
            Ok(())
        },
    )?;
    Ok(report)
}

/// Reads a stream of `store` for a mapping import's decisions, from the thread that decides.
pub(crate) fn log_loader(store: &AnyStore) -> Box<crm_import::mapping::SendStreamLoader> {
    let store = store.clone();
    let handle = tokio::runtime::Handle::current();
    Box::new(move |name: &str| {
        let error = |reason: String| crm_import::ImportError::ReadLog {
            stream: name.to_owned(),
            reason,
        };
        let stream =
            crm_eventstore::StreamId::new(name.to_owned()).map_err(|e| error(e.to_string()))?;
        handle
            .block_on(crm_app::commands::load_stream(&store, &stream))
            .map_err(|e| error(e.to_string()))
    })
}
