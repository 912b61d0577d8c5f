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
