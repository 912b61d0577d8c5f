//! `crm keys init|rotate|status|show` (the master key and the key store of personal data) and
//! `crm erase SUBJECT` (erase one data subject's personal data for good).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::{Args, Subcommand};
use crm_app::access::local_principal;
use crm_app::commands::CommandService;
use crm_app::config::{Config, Flags, MasterKeySource};
use crm_app::keys::{KeyStore, MasterKey};
use crm_app::personal::PersonalSealer;
use crm_app::store::Create;
use crm_domain::Registry;

use super::{with_store, Globals, JsonFlag};

/// Flags of `crm keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    action: KeysAction,
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Create a new master key file (mode 0600): by default `<data_dir>.master-key`, beside
    /// the data directory, where every verb finds it when no other key is configured.
    Init {
        /// Write the key here instead (then name it with --master-key-file,
        /// CRM_MASTER_KEY_FILE or `[keys] master_key_file`).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Re-wrap every data key under a new master key (create it first with
    /// `crm keys init --out FILE`); afterwards configure FILE as the master key and
    /// destroy the old one. Safe to run again if interrupted.
    Rotate {
        /// The new master key.
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
    /// Where the master key comes from and what the key store holds.
    Status(JsonFlag),
    /// The public half of the log's checkpoint signing key (created in the key store the
    /// first time), in the form `crm checkpoint verify --key` and `crm audit check --key`
    /// take: NAME+KEYID+BASE64.
    Show(JsonFlag),
}

/// Flags of `crm erase`.
#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The data subject: its stream id, e.g. `contact-c1`, `lead-l7`, `agent-a3`.
    subject: String,
    /// Why (kept in the erasure event; e.g. the request's reference, never personal data).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    json: JsonFlag,
}

fn write_new_key(path: &Path) -> anyhow::Result<()> {
    let key = MasterKey::generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "could not create {}; it may exist already (a master key is never overwritten: losing it makes every personal field unreadable)",
            path.display()
        )
    })?;
    writeln!(file, "{}", key.to_hex())?;
    file.sync_all()?;
    Ok(())
}

/// Creates the default master key file of `config` when no master key is configured at all
/// (`crm demo`'s first run); the file created, if any.
///
/// # Errors
/// The file cannot be written.
pub fn ensure_default_key(config: &Config) -> anyhow::Result<Option<PathBuf>> {
    if config.master_key != MasterKeySource::Default {
        return Ok(None);
    }
    let path = config.default_master_key_file();
    if path.exists() {
        return Ok(None);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("could not create {}", parent.display()))?;
    }
    write_new_key(&path)?;
    Ok(Some(path))
}

fn source_text(config: &Config) -> String {
    match &config.master_key {
        MasterKeySource::File(path) => format!("file {}", path.display()),
        MasterKeySource::Env(_) => "environment variable CRM_MASTER_KEY".to_owned(),
        MasterKeySource::Default => format!(
            "default file {}{}",
            config.default_master_key_file().display(),
            if config.default_master_key_file().exists() {
                ""
            } else {
                " (missing: `crm keys init` creates it)"
            }
        ),
    }
}

/// Runs `crm keys`.
///
/// # Errors
/// As each action says.
pub async fn run(globals: &Globals, args: KeysArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let mut out = std::io::stdout().lock();
    match args.action {
        KeysAction::Init { out: file } => {
            let path = file.unwrap_or_else(|| config.default_master_key_file());
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            write_new_key(&path)?;
            writeln!(
                out,
                "master key written to {} (mode 0600). Keep a copy in your secret store, apart from the data directory's backups: without it no personal field can be read, and restoring it with an old key store does not undo erasures (see the ops guide).",
                path.display()
            )?;
        }
        KeysAction::Rotate { new_key_file } => {
            let current = config
                .load_master_key()?
                .context("no master key is configured, so there is nothing to rotate")?;
            let new = MasterKey::load(Some(&new_key_file), |_| None)?;
            if new == current {
                bail!("{} holds the current master key; create a new one with `crm keys init --out FILE`", new_key_file.display());
            }
            let mut keys = KeyStore::open(&config.keys_dir(), current)?;
            let count = keys.rewrap(new)?;
            writeln!(
                out,
                "{count} data keys re-wrapped under {}. Now configure it as the master key (--master-key-file, CRM_MASTER_KEY_FILE or [keys] master_key_file{}), then destroy the old key.",
                new_key_file.display(),
                if config.master_key == MasterKeySource::Default {
                    format!(", or move it over {}", config.default_master_key_file().display())
                } else {
                    String::new()
                }
            )?;
        }
        KeysAction::Show(json) => {
            let signer = super::checkpoint::own_signer(&config)?;
            let key = signer.verifier();
            if json.json {
                let answer = serde_json::json!({
                    "checkpoint_key": key.to_string(),
                    "key_id": key.id(),
                });
                writeln!(out, "{answer}")?;
            } else {
                writeln!(out, "{key}")?;
            }
        }
        KeysAction::Status(json) => {
            let available = config.load_master_key()?.is_some();
            let (keys, erased) = KeyStore::count(&config.keys_dir())?;
            let source = source_text(&config);
            if json.json {
                let status = serde_json::json!({
                    "master_key": source,
                    "master_key_available": available,
                    "key_store": config.keys_dir(),
                    "subjects_with_key": keys,
                    "subjects_erased": erased,
                });
                writeln!(out, "{status}")?;
            } else {
                writeln!(out, "master key: {source}")?;
                writeln!(out, "key store:  {}", config.keys_dir().display())?;
                writeln!(out, "subjects with a key: {keys}; erased: {erased}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `crm erase`.
///
/// # Errors
/// No log or master key, not a subject, or the erasure failed.
pub async fn erase(globals: &Globals, args: EraseArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let erased = with_store(&config, Create::Never, async |store| {
        if PersonalSealer::of(store).and_then(PersonalSealer::keys).is_none() {
            bail!(
                "no master key: erasing destroys a key of the key store, which needs the master key; give it with --master-key-file, CRM_MASTER_KEY_FILE or CRM_MASTER_KEY ({})",
                source_text(&config)
            );
        }
        let service = CommandService::new(store.clone(), Registry::builtin());
        let actor = local_principal().name;
        Ok(crm_app::erasure::erase(&service, &args.subject, &args.reason, &actor, Utc::now()).await?)
    })
    .await?;
    let mut out = std::io::stdout().lock();
    if args.json.json {
        writeln!(out, "{}", serde_json::to_string(&erased)?)?;
    } else if erased.already_erased {
        writeln!(
            out,
            "{} was already erased ({} at position {}, by {}); its key is destroyed",
            erased.subject, erased.event_type, erased.position, erased.actor
        )?;
    } else {
        writeln!(
            out,
            "{} erased: {} recorded at position {} by {}; its key is destroyed, and every read now shows \"[erased]\" in place of its personal fields",
            erased.subject, erased.event_type, erased.position, erased.actor
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
