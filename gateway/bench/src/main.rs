//! `crm-bench`: the load generators, on scratch logs in the system's temp directory.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Load generators of the CRM event log.
#[derive(Debug, Parser)]
#[command(name = "crm-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum Target {
    /// Append and read latency through HTTP on loopback, beside in-process appends, on a
    /// scratch log in the system's temp directory (removed afterwards); read-model latency
    /// over the bundled Maven CRM data set when the source tree is present.
    Http {
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Requests per client in each scenario.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Publication lag to NATS: commit -> a JetStream subscriber receives the event, under a
    /// steady append rate on a scratch log, beside raw JetStream publish -> receive on the
    /// same server (streams CRM_BENCH_*, deleted afterwards).
    NatsLag(crm_bench::nats_lag::NatsLagArgs),
    /// What sealing personal data costs: append and replay throughput with the sealer
    /// against without, on the demo's data sets and on contacts that all carry personal data,
    /// on scratch logs in the system's temp directory.
    Personal {
        /// Rounds per workload (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Contacts of the all-personal workload (each a subject with its own key).
        #[arg(long, default_value_t = 5000)]
        contacts: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time and peak memory (RSS) of a metric question per measure type, of the read
    /// models' catch-up from position 0 and of a plain replay, each a child process, over a
    /// generated log of customer stories kept in DIR/log (written once, then reused).
    MetricMemory {
        /// Events of the log.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Data directory (default: crm-bench-metric-memory-EVENTS in the temp directory).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// The `crm` binary (default: `crm` beside this binary).
        #[arg(long)]
        crm: Option<std::path::PathBuf>,
        /// Metrics to ask, as TYPE=ID or TYPE=ID@VERSION (default: one per measure type).
        #[arg(long = "metric", value_name = "TYPE=ID")]
        metrics: Vec<String>,
        /// Period of the metric questions.
        #[arg(long, default_value = "month")]
        period: String,
        /// Skip the read models' catch-up.
        #[arg(long)]
        no_catch_up: bool,
        /// Runs of each measurement (the median by time is reported).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Stop a child whose resident memory passes this many MiB.
        #[arg(long, default_value_t = 4096)]
        rss_cap_mib: u64,
        /// Remove the data directory afterwards.
        #[arg(long)]
        remove: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pages through a sled log with `read_all` and prints the events read (the plain
    /// replay `metric-memory` measures as a child process).
    #[command(hide = true)]
    ReplayLog {
        /// The log directory.
        log: std::path::PathBuf,
        /// The embedded log's page cache, MiB (default: the store's own default).
        #[arg(long)]
        cache_mib: Option<u64>,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match cli.target {
        Target::Http {
            clients,
            requests,
            json,
        } => {
            let scratch = std::env::temp_dir().join(format!("crm-bench-{}", std::process::id()));
            let bundled =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/maven-crm");
            let options = crm_bench::http::BenchOptions {
                clients,
                requests,
                scratch,
                maven_crm: bundled.is_dir().then_some(bundled),
            };
            let report = crm_bench::http::http(&options).await?;
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
            } else {
                write!(stdout, "{report}")?;
            }
        }
        Target::Personal {
            rounds,
            contacts,
            json,
        } => {
            let options = crm_bench::personal::PersonalOptions {
                rounds,
                contacts,
                scratch: std::env::temp_dir()
                    .join(format!("crm-bench-personal-{}", std::process::id())),
                bundle: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data"),
            };
            let report = crm_bench::personal::personal(&options).await?;
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
            } else {
                write!(stdout, "{report}")?;
            }
        }
        Target::MetricMemory {
            events,
            dir,
            crm,
            metrics,
            period,
            no_catch_up,
            rounds,
            rss_cap_mib,
            remove,
            json,
        } => {
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("crm-bench-metric-memory-{events}"))
            });
            let crm = match crm {
                Some(c) => c,
                None => std::env::current_exe()?.with_file_name("crm"),
            };
            let metrics = if metrics.is_empty() {
                crm_bench::metric_memory::DEFAULT_METRICS
                    .iter()
                    .map(|(k, m)| ((*k).to_owned(), (*m).to_owned()))
                    .collect()
            } else {
                metrics
                    .iter()
                    .map(|m| match m.split_once('=') {
                        Some((k, id)) => (k.to_owned(), id.to_owned()),
                        None => (String::new(), m.clone()),
                    })
                    .collect()
            };
            let options = crm_bench::metric_memory::MetricMemoryOptions {
                events,
                dir: dir.clone(),
                crm,
                metrics,
                period,
                catch_up: !no_catch_up,
                rounds,
                rss_cap_mib,
            };
            let report = crm_bench::metric_memory::metric_memory(&options).await;
            if remove {
                let _ = std::fs::remove_dir_all(&dir);
            }
            let report = report?;
            if json {
                writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
            } else {
                write!(stdout, "{report}")?;
            }
        }
        Target::ReplayLog { log, cache_mib } => {
            let n = crm_bench::metric_memory::replay_log(&log, cache_mib).await?;
            writeln!(stdout, "{n}")?;
        }
        Target::NatsLag(args) => {
            let url = args
                .nats
                .clone()
                .or_else(|| std::env::var("CRM_NATS_URL").ok())
                .context("give --nats URL (or CRM_NATS_URL): the NATS server to measure")?;
            let scratch =
                std::env::temp_dir().join(format!("crm-bench-nats-{}", std::process::id()));
            let store = crm_eventstore::SledStore::open(scratch.join("log"))
                .with_context(|| format!("opening a scratch log in {}", scratch.display()))?;
            let report = crm_bench::nats_lag::nats_lag(store.clone(), &scratch, &url, &args).await;
            store.close().await;
            let _ = std::fs::remove_dir_all(&scratch);
            let report = report?;
            if args.json {
                writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
            } else {
                write!(stdout, "{report}")?;
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
