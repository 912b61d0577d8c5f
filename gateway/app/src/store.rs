//! Opening the log the configuration names: the embedded sled log in a directory, or a
//! JetStream stream on NATS servers. Everything above this module works on
//! [`AnyStore`] and does not care which.
//!
//! Every log opened here carries the [`crate::personal::PersonalSealer`] over the key store in
//! `<data_dir>/keys`: a verb that may write ([`Create::IfMissing`]) needs the master key and
//! refuses to start without it; a reading verb without it shows sealed values as `[sealed]`.
//! Opening applies the erasures the log records and the key store has not (see
//! [`crate::personal::PersonalSealer::reconcile`]).

use std::path::Path;

use crm_eventstore::{AnyStore, JetStreamConfig, JetStreamStore, OpenError, SledStore};

use crate::config::{Config, JetStreamSettings, StoreLocation};
use crate::keys::KeyError;
use crate::personal::{self, ReconcileError};

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreOpenError {
    /// The embedded log does not exist and the verb only reads.
    #[error("there is no log at {0}; import data first (crm import ...) or point --data-dir / CRM_DATA_DIR (or --store / CRM_STORE) at the log")]
    Missing(String),
    /// The backend refused to open (its message names the place and what to do).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The master key is missing or unreadable, or the key store cannot be opened.
    #[error("{source} (needed to {purpose})")]
    Keys {
        /// What the key is needed for.
        purpose: &'static str,
        /// Why it could not be had.
        source: KeyError,
    },
    /// The key store could not be brought in line with the erasures the log records.
    #[error("{0}; the log was not opened, so nothing erased can be shown")]
    Reconcile(#[from] ReconcileError),
    /// The data directory could not be created.
    #[error("could not create {path}: {source}; check the parent directory's permissions or choose another --data-dir")]
    CreateDir {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Whether opening may create an empty log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Create the log when it does not exist (import, serve, demo).
    IfMissing,
    /// Only open an existing log (reads, verify, stats, projections).
    Never,
}

/// Opens the log at `config`'s store location.
///
/// # Errors
/// [`StoreOpenError`] when the embedded log is missing (with [`Create::Never`]) or the
/// backend cannot be opened (locked directory, unreachable NATS, newer format...).
pub async fn open(config: &Config, create: Create) -> Result<AnyStore, StoreOpenError> {
    // The master key first: a writer without it must not even create the log.
    let master = match config.load_master_key() {
        Ok(master) => master,
        Err(source) if create == Create::IfMissing => {
            return Err(StoreOpenError::Keys {
                purpose: "read and write personal data",
                source,
            })
        }
        // A reader (a projection worker, `crm verify` on a backup) needs no key: sealed
        // fields then show as `[sealed]`.
        Err(e) => {
            tracing::warn!(error = %e, "no master key: personal fields show as [sealed]");
            None
        }
    };
    if master.is_none() && create == Create::IfMissing {
        return Err(StoreOpenError::Keys {
            purpose: "write personal data, which is encrypted at rest; for a first try, `crm keys init` creates one beside the data directory",
            source: KeyError::NoMasterKey,
        });
    }
    let store = open_backend(config, create).await?;
    let sealer = personal::sealer(&config.keys_dir(), master, create == Create::IfMissing)
        .map_err(|source| StoreOpenError::Keys {
            purpose: "open the key store",
            source,
        })?;
    let store = store.with_sealer(sealer.clone());
    sealer.reconcile(&store).await?;
    Ok(store)
}

/// Opens the existing log at `config`'s store location to check it (`crm verify`): without
/// the key store and the sealer, so nothing is reconciled or written by this program (a
/// read-only backup can be checked) and a damaged record is left for the check to name.
/// Personal fields stay sealed; a verb that shows or writes events uses [`open`].
///
/// # Errors
/// [`StoreOpenError`] when the log is missing or the backend cannot be opened.
pub async fn open_to_check(config: &Config) -> Result<AnyStore, StoreOpenError> {
    match (
        config.store_location(),
        open_backend(config, Create::Never).await,
    ) {
        // The log is in use (a server holds it) or cannot be written (a read-only copy, a
        // backup on read-only media): check it read-only, without writing or locking
        // anything. A writable open comes first because it knows how far the index reached,
        // which tells a log cut short from a write a crash left unfinished.
        (
            StoreLocation::Sled(dir),
            Err(StoreOpenError::Open(OpenError::Locked { .. } | OpenError::Storage { .. })),
        ) if dir.join("segments").is_dir() => Ok(AnyStore::from(SledStore::open_read_only(&dir)?)),
        (_, opened) => opened,
    }
}

async fn open_backend(config: &Config, create: Create) -> Result<AnyStore, StoreOpenError> {
    match config.store_location() {
        StoreLocation::Sled(dir) => {
            if create == Create::IfMissing && !dir.exists() {
                if dir.starts_with(&config.data_dir) {
                    create_private_dir(&config.data_dir)?;
                }
                create_private_dir(&dir)?;
            }
            open_sled(&dir, create, config.store_cache_bytes).map(AnyStore::from)
        }
        StoreLocation::Nats(urls) => {
            let mut js = jetstream_config(&urls, &config.jetstream);
            js.create_if_missing = create == Create::IfMissing;
            js.auth = config.nats.for_store().clone();
            Ok(AnyStore::from(JetStreamStore::open(js).await?))
        }
    }
}

/// Creates `dir` and its missing parents readable by the owner only (mode 0700 on Unix): the
/// data directory holds the log, snapshots and keys.
///
/// # Errors
/// [`StoreOpenError::CreateDir`] when it cannot be created.
pub fn create_private_dir(dir: &Path) -> Result<(), StoreOpenError> {
    create_owner_only(dir).map_err(|source| StoreOpenError::CreateDir {
        path: dir.display().to_string(),
        source,
    })
}

/// Creates `dir` and its missing parents with mode 0700 on Unix (the data directory, the
/// key store).
///
/// # Errors
/// The OS error.
pub fn create_owner_only(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn open_sled(
    dir: &Path,
    create: Create,
    cache_bytes: Option<u64>,
) -> Result<SledStore, StoreOpenError> {
    if create == Create::Never && !dir.exists() {
        return Err(StoreOpenError::Missing(dir.display().to_string()));
    }
    Ok(SledStore::open_with(
        dir,
        crm_eventstore::SledOptions {
            cache_bytes,
            ..Default::default()
        },
    )?)
}

/// The JetStream store's configuration for `urls` with the file's `[jetstream]` settings.
#[must_use]
pub fn jetstream_config(urls: &str, settings: &JetStreamSettings) -> JetStreamConfig {
    let mut js = JetStreamConfig::new(urls);
    js.stream_name.clone_from(&settings.stream_name);
    js.subject_prefix.clone_from(&settings.subject_prefix);
    js.replicas = settings.replicas;
    js
}
