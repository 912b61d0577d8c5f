//! `crm checkpoint sign|list|verify`: signed checkpoints of the log's head
//! (see [`crm_app::checkpoint`]).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use crm_app::checkpoint::{
    read_note, CheckpointSigner, Checkpoints, SignedCheckpoint, VerifierKey, CHECKPOINTS_LISTED_MAX,
};
use crm_app::config::{Config, Flags};
use crm_app::keys::KeyStore;
use crm_app::store::Create;
use crm_eventstore::EventStore as _;

use super::{with_store, Globals, JsonFlag};

/// Flags of `crm checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Sign the log's head now with the server's key and keep the checkpoint (an unchanged
    /// head gives the checkpoint kept for it); prints the signed note.
    Sign(JsonFlag),
    /// The kept checkpoints, newest first, each checked with the server's key.
    List {
        /// At most this many (capped at 1,000).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Check a checkpoint note: its signature by KEY (the key `crm keys show` prints; with
    /// no --key, this server's own key), and with --log that this log holds its head.
    Verify {
        /// The note file.
        note: PathBuf,
        /// The verifier key, NAME+KEYID+BASE64.
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Also check that the log in the data directory holds the checkpoint's head.
        #[arg(long)]
        log: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// How often `crm serve` signs a moved head by default, in seconds.
pub const SIGN_EVERY_DEFAULT_S: u64 = 600;

/// What a server signs checkpoints with: `None` (with a warning) when the log was opened
/// without a master key. `every_s` 0 signs on demand only.
pub fn checkpointing(
    config: &Config,
    store: &crm_eventstore::AnyStore,
    every_s: u64,
) -> Option<std::sync::Arc<crm_app::checkpoint::Checkpointing>> {
    match CheckpointSigner::of(store) {
        Ok(signer) => Some(std::sync::Arc::new(crm_app::checkpoint::Checkpointing {
            kept: Checkpoints::in_data_dir(&config.data_dir),
            signer,
            every: (every_s > 0).then(|| std::time::Duration::from_secs(every_s)),
        })),
        Err(e) => {
            eprintln!("warning: no signed checkpoints: {e}");
            None
        }
    }
}

/// The server's own signing key (needs the master key).
pub fn own_signer(config: &Config) -> anyhow::Result<CheckpointSigner> {
    let master = config.load_master_key()?.context(
        "no master key: the log's signing key is kept in the key store; give the master key with --master-key-file, CRM_MASTER_KEY_FILE or CRM_MASTER_KEY (`crm keys init` creates one)",
    )?;
    let keys = KeyStore::open(&config.keys_dir(), master)?;
    Ok(CheckpointSigner::from_keys(&keys)?)
}

/// Runs `crm checkpoint`.
///
/// # Errors
/// No log or master key, or a checkpoint that does not verify.
pub async fn run(globals: &Globals, args: CheckpointArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let kept = Checkpoints::in_data_dir(&config.data_dir);
    let mut out = std::io::stdout().lock();
    match args.action {
        Action::Sign(json) => {
            let signer = own_signer(&config)?;
            let signed = with_store(&config, Create::Never, async |store| {
                Ok(kept.sign_head(store.head(), &signer)?)
            })
            .await?;
            if json.json {
                writeln!(out, "{}", serde_json::to_string(&signed)?)?;
            } else {
                // The note alone on stdout (a file `crm checkpoint verify` reads), the rest on
                // stderr.
                write!(out, "{}", signed.checkpoint.note)?;
                eprintln!(
                    "{} {}",
                    if signed.new {
                        "kept as"
                    } else {
                        "already kept in"
                    },
                    kept.dir().display()
                );
            }
        }
        Action::List { limit, json } => {
            let signer = own_signer(&config)?;
            let listed = kept.list(signer.verifier(), limit.min(CHECKPOINTS_LISTED_MAX))?;
            if json.json {
                let answer = serde_json::json!({
                    "key": signer.verifier().to_string(),
                    "checkpoints": listed,
                });
                writeln!(out, "{answer}")?;
            } else {
                writeln!(out, "key {}", signer.verifier())?;
                for c in &listed {
                    writeln!(
                        out,
                        "{:>12}  {}  {}",
                        c.checkpoint.position,
                        c.checkpoint.hash,
                        c.checkpoint.time.to_rfc3339()
                    )?;
                }
                if listed.is_empty() {
                    writeln!(out, "no checkpoints yet: `crm checkpoint sign` makes one")?;
                }
            }
        }
        Action::Verify {
            note,
            key,
            log,
            json,
        } => {
            let key: VerifierKey = match key {
                Some(text) => text.parse()?,
                None => own_signer(&config)?.verifier().clone(),
            };
            let text = read_note(&note)?;
            let checked = SignedCheckpoint::verify(&text, &key)?;
            if log {
                with_store(&config, Create::Never, async |store| {
                    Ok(checked.check_log(store).await?)
                })
                .await?;
            }
            if json.json {
                let answer = serde_json::json!({
                    "key": key.to_string(),
                    "checkpoint": checked.checkpoint,
                    "log_checked": log,
                });
                writeln!(out, "{answer}")?;
            } else {
                writeln!(
                    out,
                    "checkpoint verified: position {} hash {} signed {} by {}{}",
                    checked.checkpoint.position,
                    checked.checkpoint.hash,
                    checked.checkpoint.time.to_rfc3339(),
                    key,
                    if log { "; the log holds it" } else { "" }
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
