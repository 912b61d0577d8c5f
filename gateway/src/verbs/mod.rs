//! One module per verb: its flags (clap) and its `run`. The helpers here own what every verb
//! shares: the global flags and the configuration they resolve to, opening and closing the
//! log, output formats, the metric query flags and logging.

pub mod audit;
pub mod auth;
pub mod checkpoint;
pub mod demo;
pub mod events;
pub mod explain;
pub mod export;
pub mod import;
pub mod keys;
pub mod metric;
pub mod metric_sql;
pub mod metrics;
pub mod project;
mod replay_only;
pub mod schema;
pub mod scorecard;
pub mod serve;
pub mod stats;
pub mod tail;
pub mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use crm_app::config::{Config, Flags, StoreLocation};
use crm_app::store::{self, Create};
use crm_eventstore::AnyStore;

use crate::metric_output::{Format, QueryFlags};

/// Flags every verb takes.
#[derive(Debug, Args)]
pub struct Globals {
    /// Config file (TOML); also `CRM_CONFIG`.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (the log is in DIR/log); also `CRM_DATA_DIR`. Default ./crm-data.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the log lives: a directory (the embedded sled log; default DATA_DIR/log) or
    /// nats://HOST:PORT[,nats://HOST:PORT...] (a JetStream stream, shared by many processes);
    /// also `CRM_STORE`.
    #[arg(long, global = true, value_name = "STORE")]
    pub store: Option<StoreLocation>,
    /// The master key of personal data (64 hex characters in a file); also
    /// `CRM_MASTER_KEY_FILE`, `CRM_MASTER_KEY`. Default DATA_DIR.master-key if it exists.
    #[arg(long, global = true, value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Globals {
    /// The configuration: defaults < file < `CRM_*` environment < these flags and `verb`'s.
    ///
    /// # Errors
    /// An unreadable or invalid config file or environment variable.
    pub fn config(&self, verb: Flags) -> anyhow::Result<Config> {
        let flags = Flags {
            config_file: self.config.clone(),
            data_dir: self.data_dir.clone(),
            store: self.store.clone(),
            master_key_file: self.master_key_file.clone(),
            ..verb
        };
        let config = Config::resolve(&flags, |k| std::env::var(k).ok())?;
        tracing::debug!(?config, "configuration");
        Ok(config)
    }
}

/// Opens the log `config` names, runs `work` on it and closes it, whatever `work` returned:
/// the one place a verb opens and closes the store.
///
/// # Errors
/// The log cannot be opened, or `work`'s error.
pub async fn with_store<T>(
    config: &Config,
    create: Create,
    work: impl AsyncFnOnce(&AnyStore) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let store = store::open(config, create).await?;
    let result = work(&store).await;
    store.close().await;
    result
}

/// `--json`.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// The output format of `--json` / `--csv` / neither.
#[must_use]
pub fn format_of(json: bool, csv: bool) -> Format {
    if json {
        Format::Json
    } else if csv {
        Format::Csv
    } else {
        Format::Text
    }
}

/// An instant from a flag (see [`crm_app::instant::parse`]).
///
/// # Errors
/// [`crm_app::instant::InstantError`] naming the accepted forms.
pub fn instant(
    text: &str,
) -> Result<chrono::DateTime<chrono::Utc>, crm_app::instant::InstantError> {
    crm_app::instant::parse(text)
}

/// Query flags shared by `metric` and `explain`.
#[derive(Debug, Args, Clone, Default)]
pub struct QueryArgs {
    /// Start of the range (YYYY-MM-DD or RFC 3339), inclusive.
    #[arg(long, value_parser = instant)]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// End of the range (YYYY-MM-DD or RFC 3339), exclusive.
    #[arg(long, value_parser = instant)]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// day, week, month, quarter, year (default: the whole range).
    #[arg(long)]
    pub period: Option<String>,
    /// Breakdown: declared dimensions (`crm metrics dimensions ID`) or expressions such as
    /// `attr.job`; comma separated or repeated.
    #[arg(long, value_delimiter = ',')]
    pub by: Vec<String>,
    /// Count facts that occurred by this instant (YYYY-MM-DD or RFC 3339).
    #[arg(long, value_parser = instant)]
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Count only what the log had recorded by this instant (YYYY-MM-DD or RFC 3339).
    #[arg(long, value_parser = instant)]
    pub known_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Only some facts, repeatable (all must hold): DIM=VALUE (a dimension's value;
    /// `crm metrics dimensions ID` lists them) or an expression of the definition language,
    /// e.g. "attr.origin == 'API'" or "payload.channel in ['web', 'email']".
    #[arg(long = "where", value_name = "DIM=VALUE|EXPR")]
    pub filter: Vec<String>,
}

impl QueryArgs {
    /// The engine's query flags.
    ///
    /// # Errors
    /// An unknown period grain.
    pub fn flags(&self) -> anyhow::Result<QueryFlags> {
        let mut query = crm_metrics::Query::default();
        for clause in &self.filter {
            query.add_where(clause);
        }
        Ok(QueryFlags {
            from: self.from,
            to: self.to,
            period: self.period.as_deref().map(str::parse).transpose()?,
            by: self.by.clone(),
            as_of: self.as_of,
            known_at: self.known_at,
            filter: query.filter,
            conditions: query.conditions,
        })
    }
}

/// Exit code 0 or 1.
#[must_use]
pub fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What the user can do about `error`, in the words of the `crm` command, when the layers
/// below described a fault without a remedy of this program's verbs. Damage to the log
/// (anywhere in the chain, also behind wrappers that show the store's error as their own)
/// is named with its position and answered with restoring, never with a retry.
#[must_use]
pub fn remedy(error: &anyhow::Error) -> Option<String> {
    use crm_app::damage::{LogDamage, OPS_GUIDE_SECTION};
    use crm_app::store::StoreOpenError;
    use crm_eventstore::{AppendError, OpenError, ReadError};
    if let Some(damage) = error.chain().find_map(LogDamage::of_error) {
        return Some(format!(
            "{}; `crm verify` names the first bad record",
            damage.remedy()
        ));
    }
    let open_remedy = |open: &OpenError| {
        match open {
        OpenError::Locked { .. } => Some(
            "a running `crm serve` or `crm project run` has the log open: stop it, or send the command to the server over HTTP".to_owned(),
        ),
        OpenError::NewerFormat { .. } => {
            Some("upgrade `crm` to a build that reads this format".to_owned())
        }
        OpenError::Storage { .. } => Some(format!(
            "if the path, its permissions and the lock are fine, the log's files may be damaged: restore the log from a replica or backup ({OPS_GUIDE_SECTION})"
        )),
        _ => None,
    }
    };
    error.chain().find_map(|cause| {
        if let Some(StoreOpenError::Open(open)) = cause.downcast_ref::<StoreOpenError>() {
            return open_remedy(open);
        }
        if let Some(open) = cause.downcast_ref::<OpenError>() {
            return open_remedy(open);
        }
        if let Some(ReadError::Storage(_)) = cause.downcast_ref::<ReadError>() {
            return Some(format!(
                "check the disk (kernel log, free space); if it is sound and the error persists, run `crm verify`: if it names a bad record, restore the log from a replica or backup ({OPS_GUIDE_SECTION})"
            ));
        }
        match cause.downcast_ref::<AppendError>() {
            Some(AppendError::StorageFailed(_)) => Some(
                "writes are refused until the log is reopened: check the disk, run the command again, then `crm verify`".to_owned(),
            ),
            Some(_) | None => None,
        }
    })
}

/// Logs to stderr at the level `-v` asks for, unless `RUST_LOG` says otherwise.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_app::store::StoreOpenError;
    use crm_eventstore::{OpenError, Position, ReadError};

    #[test]
    fn faults_of_the_store_get_a_remedy_in_crm_s_verbs() {
        let locked = anyhow::Error::from(StoreOpenError::Open(OpenError::Locked {
            path: "/data/log".into(),
        }));
        assert!(remedy(&locked).unwrap().contains("`crm serve`"));
        let corrupt = anyhow::Error::from(ReadError::Corrupt {
            position: Position(7),
            reason: crm_eventstore::Corruption::Missing,
        })
        .context("reading the log");
        let shown = remedy(&corrupt).unwrap();
        assert!(shown.contains("`crm verify`"), "{shown}");
        assert!(shown.contains("damaged at position 7"), "{shown}");
        assert!(shown.contains("replica or backup"), "{shown}");
        assert!(shown.contains("Restoring a damaged log"), "{shown}");
        assert_eq!(remedy(&anyhow::anyhow!("no such metric")), None);
    }

    #[test]
    fn damage_behind_a_transparent_wrapper_still_gets_the_restore_remedy() {
        let hidden = anyhow::Error::from(crm_app::inspect::VerbError::Read(ReadError::Corrupt {
            position: Position(4),
            reason: crm_eventstore::Corruption::Missing,
        }));
        let shown = remedy(&hidden).unwrap();
        assert!(shown.contains("damaged at position 4"), "{shown}");
        let damaged = anyhow::Error::from(StoreOpenError::Open(OpenError::Damaged {
            path: "/data/log".into(),
            reason: "records 3 to 9 are missing".into(),
        }));
        assert!(remedy(&damaged).unwrap().contains("replica or backup"));
        let io = anyhow::Error::from(ReadError::Storage("EIO".into()));
        assert!(remedy(&io).unwrap().contains("`crm verify`"));
    }
}
