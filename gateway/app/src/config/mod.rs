//! Settings, resolved in order of precedence: defaults < file (`--config FILE` or
//! `CRM_CONFIG`, TOML) < `CRM_*` environment variables < command-line flags.
//!
//! ```toml
//! data_dir = "/var/lib/crm"     # default ./crm-data; the log lives in <data_dir>/log
//! store = "nats://10.0.0.1:4222,nats://10.0.0.2:4222"
//!                               # default <data_dir>/log (embedded sled); also CRM_STORE, --store
//! [import]
//! on_error = "skip"             # default "stop"
//! [serve]
//! listen = "0.0.0.0:8080"       # default 127.0.0.1:8080; also CRM_LISTEN, --listen
//! tls_cert_file = "/run/secrets/crm-tls/tls.crt"  # HTTPS: PEM chain, server certificate first
//! tls_key_file = "/run/secrets/crm-tls/tls.key"   # and its PEM private key; both or neither
//!                               # also CRM_TLS_CERT_FILE / CRM_TLS_KEY_FILE, serve --tls-cert / --tls-key
//! [jetstream]                   # only read when the store is nats://
//! stream_name = "CRM_LOG"       # the JetStream stream holding the log
//! subject_prefix = "crm.log"
//! replicas = 3                  # default 1; 3 in a cluster
//! [publish]
//! nats_url = "nats://127.0.0.1:4222"  # publish committed events; also CRM_NATS_URL, serve --nats
//! [auth]                        # see [`auth::AuthSettings`]
//! required = true
//! [nats]                        # credentials and TLS of every NATS connection (store, publisher, tail)
//! user = "crm-store"            # also CRM_NATS_USER
//! password_file = "/run/secrets/nats-password"   # or CRM_NATS_PASSWORD; never `password = ...`
//! # token_file, nkey_seed_file, creds_file (CRM_NATS_TOKEN, CRM_NATS_CREDS_FILE): one credential only
//! tls_ca_file = "/etc/crm/nats-ca.pem"          # tls_cert_file + tls_key_file: a client certificate
//! tls_required = true
//! [nats.publish]                # the publisher and `crm tail` as another user (CRM_PUBLISH_NATS_*)
//! user = "crm-publisher"
//! password_file = "/run/secrets/nats-publisher-password"
//! [keys]                        # the master key wrapping the data keys of personal data
//! master_key_file = "/run/secrets/crm-master-key"  # 64 hex characters; also CRM_MASTER_KEY_FILE,
//!                               # CRM_MASTER_KEY (the key itself), --master-key-file; default
//!                               # <data_dir>.master-key when that file exists (`crm keys init`)
//! dir = "/var/lib/crm-keys"     # the key store; default <data_dir>/keys; also CRM_KEYS_DIR.
//!                               # Every process that writes personal data must share it.
//! ```
//! Without `tls_cert_file` and `tls_key_file`, `crm serve` speaks plain HTTP (put a
//! TLS-terminating proxy in front, or keep it on loopback); with them, HTTPS only.
//! (`[publish]` also takes `stream`, `subject_prefix`, `replicas`, `source`: see
//! [`publish::PublishSettings`]; `[nats]` is described in [`nats`]. Secrets come only from
//! `*_file` paths or variables: a secret written in the file is refused, and `Debug` output
//! shows `***` for it.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crm_projections::ReadModelConfig;
use serde::Deserialize;

pub mod auth;
pub mod keys;
pub mod nats;
pub mod publish;

pub use auth::{AuthSettings, OidcSettings};
pub use keys::{default_master_key_file, MasterKeySource, MASTER_KEY_FILE_ENV};
pub use nats::{NatsSettings, NatsSettingsError};
pub use publish::PublishSettings;

/// What an import does with a bad row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Stop at the first bad row; nothing from its batch is appended.
    #[default]
    Stop,
    /// Report bad rows (count and the first few) and import the rest.
    Skip,
}

impl OnError {
    /// The names a flag or setting accepts.
    pub const NAMES: [&'static str; 2] = ["stop", "skip"];
}

/// A bad-row policy that is neither `stop` nor `skip`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a bad-row policy; use `stop` or `skip`")]
pub struct UnknownOnError(pub String);

impl std::str::FromStr for OnError {
    type Err = UnknownOnError;

    fn from_str(s: &str) -> Result<Self, UnknownOnError> {
        match s {
            "stop" => Ok(OnError::Stop),
            "skip" => Ok(OnError::Skip),
            other => Err(UnknownOnError(other.to_owned())),
        }
    }
}

/// Default data directory, relative to the working directory.
pub const DATA_DIR_DEFAULT: &str = "crm-data";

/// Resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Data directory; the log is in `<data_dir>/log`, projection snapshots in
    /// `<data_dir>/projections`.
    pub data_dir: PathBuf,
    /// What an import does with a bad row.
    pub on_error: OnError,
    /// Address `crm serve` listens on.
    pub listen: SocketAddr,
    /// Read-model configuration (file section `[projections]`).
    pub read_models: ReadModelConfig,
    /// Publication of committed events to NATS (file section `[publish]`).
    pub publish: PublishSettings,
    /// Where the log lives: `None` is the embedded sled log in `<data_dir>/log`.
    pub store: Option<StoreLocation>,
    /// JetStream settings (file section `[jetstream]`), used when the store is `nats://`.
    pub jetstream: JetStreamSettings,
    /// Authentication of `crm serve` (file section `[auth]`).
    pub auth: AuthSettings,
    /// Credentials and TLS of NATS connections (file sections `[nats]`, `[nats.publish]`,
    /// `CRM_NATS_*` and `CRM_PUBLISH_NATS_*` variables).
    pub nats: NatsSettings,
    /// The certificate and key `crm serve` terminates TLS with; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Where the master key of personal data comes from (file section `[keys]`).
    pub master_key: MasterKeySource,
    /// The key store's directory when not `<data_dir>/keys` (`[keys] dir`, `CRM_KEYS_DIR`).
    pub keys_dir: Option<PathBuf>,
    /// Bytes of pages the embedded log keeps in memory (`None`: sled's default, 1 GiB). Set by
    /// the verb, not by the file: `crm import` uses [`IMPORT_CACHE_BYTES`].
    pub store_cache_bytes: Option<u64>,
}

/// The embedded log's page cache during `crm import`: an import writes once and reads back
/// only the streams it continues, so its memory stays bounded whatever the file's size.
pub const IMPORT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The PEM files `crm serve` terminates TLS with (`[serve] tls_cert_file` and
/// `tls_key_file`, `CRM_TLS_CERT_FILE` and `CRM_TLS_KEY_FILE`, `--tls-cert` and
/// `--tls-key`). They are read when the server starts, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain: the server's certificate first, then its intermediates.
    pub cert_file: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Where the log lives, as `--store`, `CRM_STORE` or the file's `store` key give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A directory holding the embedded sled log.
    Sled(PathBuf),
    /// NATS server URLs (comma-separated) of a JetStream cluster or server.
    Nats(String),
}

/// A store location that names no store this program knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreLocationError {
    /// Nothing was given.
    #[error("the store is empty; give a directory or nats://HOST:PORT")]
    Empty,
    /// NATS URLs mixed with something else.
    #[error(
        "`{0}` mixes NATS URLs with something else; give nats://HOST:PORT[,nats://HOST:PORT...]"
    )]
    Mixed(String),
    /// A URL scheme other than `nats://` or `tls://`.
    #[error("`{0}` is not a store this program knows; give a directory (embedded sled log) or nats://HOST:PORT (JetStream)")]
    UnknownScheme(String),
}

impl std::str::FromStr for StoreLocation {
    type Err = StoreLocationError;

    fn from_str(s: &str) -> Result<StoreLocation, StoreLocationError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(StoreLocationError::Empty);
        }
        let is_nats = |u: &str| {
            let u = u.trim();
            u.starts_with("nats://") || u.starts_with("tls://")
        };
        if s.split(',').any(is_nats) {
            if !s.split(',').all(is_nats) {
                return Err(StoreLocationError::Mixed(s.to_owned()));
            }
            return Ok(StoreLocation::Nats(s.to_owned()));
        }
        if s.contains("://") {
            return Err(StoreLocationError::UnknownScheme(s.to_owned()));
        }
        Ok(StoreLocation::Sled(PathBuf::from(
            s.strip_prefix("sled:").unwrap_or(s),
        )))
    }
}

/// How the log is kept on JetStream (file section `[jetstream]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamSettings {
    /// The JetStream stream holding the log.
    pub stream_name: String,
    /// Subjects are `<subject_prefix>.<stream id>`.
    pub subject_prefix: String,
    /// Copies of the stream: 1 on one server, 3 in a cluster.
    pub replicas: usize,
}

impl Default for JetStreamSettings {
    fn default() -> Self {
        let defaults = crm_eventstore::JetStreamConfig::new("");
        Self {
            stream_name: defaults.stream_name,
            subject_prefix: defaults.subject_prefix,
            replicas: defaults.replicas,
        }
    }
}

/// Default listen address of `crm serve`: loopback only.
pub const LISTEN_DEFAULT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            on_error: OnError::Stop,
            listen: LISTEN_DEFAULT,
            read_models: ReadModelConfig::default(),
            store: None,
            jetstream: JetStreamSettings::default(),
            publish: PublishSettings::default(),
            auth: AuthSettings::default(),
            nats: NatsSettings::default(),
            tls: None,
            master_key: MasterKeySource::Default,
            keys_dir: None,
            store_cache_bytes: None,
        }
    }
}

/// Settings given on the command line (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--on-error`.
    pub on_error: Option<OnError>,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--store`.
    pub store: Option<StoreLocation>,
    /// `crm serve --nats`.
    pub nats: Option<String>,
    /// `crm serve --tls-cert FILE`.
    pub tls_cert: Option<PathBuf>,
    /// `crm serve --tls-key FILE`.
    pub tls_key: Option<PathBuf>,
    /// `--master-key-file FILE`.
    pub master_key_file: Option<PathBuf>,
}

/// Why the settings could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("could not read the config file {path}: {source}; check the path given by --config or CRM_CONFIG")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("config file {path} is invalid: {reason}; valid keys are `data_dir`, `store`, `[import] on_error`, `[serve]` (listen, tls_cert_file, tls_key_file), `[jetstream]` (stream_name, subject_prefix, replicas), `[projections]` (read-model settings), `[publish]` (NATS publication), `[nats]` (NATS credentials and TLS), `[auth]` (required, public, `[auth.oidc]`) and `[keys]` (master_key_file)")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        reason: String,
    },
    /// The NATS credentials or TLS settings are not usable.
    #[error("invalid NATS client settings in {section}: {reason}")]
    Nats {
        /// `[nats]` or `[nats.publish]` (with their variables).
        section: String,
        /// What is wrong.
        reason: NatsSettingsError,
    },
    /// Half of the TLS settings of `crm serve`: a certificate without its key or the reverse.
    #[error("{given} is set but {missing} is not; HTTPS in crm serve needs both the certificate and its private key: set {missing}, or neither to serve plain HTTP")]
    TlsHalf {
        /// The setting given, with its other names.
        given: &'static str,
        /// The setting missing, with its other names.
        missing: &'static str,
    },
    /// An environment variable has an invalid value.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is accepted.
        reason: &'static str,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    store: Option<String>,
    #[serde(default)]
    jetstream: Option<JetStreamSettings>,
    #[serde(default)]
    import: ImportSection,
    #[serde(default)]
    serve: ServeSection,
    #[serde(default)]
    projections: Option<ReadModelConfig>,
    #[serde(default)]
    publish: Option<PublishSettings>,
    #[serde(default)]
    auth: Option<AuthSettings>,
    nats: Option<nats::NatsSection>,
    keys: Option<keys::KeysSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeSection {
    listen: Option<SocketAddr>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportSection {
    on_error: Option<OnError>,
}

impl Config {
    /// The log directory, `<data_dir>/log`.
    #[must_use]
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }

    /// Where the log lives: the configured store, or the embedded log in `<data_dir>/log`.
    #[must_use]
    pub fn store_location(&self) -> StoreLocation {
        self.store
            .clone()
            .unwrap_or_else(|| StoreLocation::Sled(self.log_dir()))
    }

    /// The key store of personal data: `[keys] dir` (`CRM_KEYS_DIR`), by default
    /// `<data_dir>/keys`.
    #[must_use]
    pub fn keys_dir(&self) -> PathBuf {
        self.keys_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }

    /// The master key file used when none is configured: `<data_dir>.master-key`.
    #[must_use]
    pub fn default_master_key_file(&self) -> PathBuf {
        default_master_key_file(&self.data_dir)
    }

    /// The configured master key, `None` when none is configured and the default file does
    /// not exist.
    ///
    /// # Errors
    /// [`crate::keys::KeyError`] for a named file that cannot be read or holds no key.
    pub fn load_master_key(&self) -> Result<Option<crate::keys::MasterKey>, crate::keys::KeyError> {
        keys::load(&self.master_key, &self.default_master_key_file())
    }

    /// The projections' snapshot directory, `<data_dir>/projections`.
    #[must_use]
    pub fn projections_dir(&self) -> PathBuf {
        self.data_dir.join("projections")
    }

    /// Resolves the settings from `flags`, the environment (`env("CRM_DATA_DIR")`…) and the
    /// config file they name.
    ///
    /// # Errors
    /// [`ConfigError`] for an unreadable or invalid file or an invalid variable.
    pub fn resolve(
        flags: &Flags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let mut nats_section = None;
        let mut keys_section = None;
        let (mut tls_cert, mut tls_key) = (None, None);
        let file = flags
            .config_file
            .clone()
            .or_else(|| env("CRM_CONFIG").map(PathBuf::from));
        if let Some(path) = file {
            let parsed = read_file(&path)?;
            if let Some(dir) = parsed.data_dir {
                config.data_dir = dir;
            }
            if let Some(on_error) = parsed.import.on_error {
                config.on_error = on_error;
            }
            if let Some(listen) = parsed.serve.listen {
                config.listen = listen;
            }
            tls_cert = parsed.serve.tls_cert_file;
            tls_key = parsed.serve.tls_key_file;
            if let Some(read_models) = parsed.projections {
                config.read_models = read_models;
            }
            if let Some(store) = parsed.store {
                config.store = Some(store.parse().map_err(|reason| ConfigError::Parse {
                    path: path.display().to_string(),
                    reason: format!("key `store`: {reason}"),
                })?);
            }
            if let Some(jetstream) = parsed.jetstream {
                config.jetstream = jetstream;
            }
            if let Some(publish) = parsed.publish {
                config.publish = publish;
            }
            if let Some(auth) = parsed.auth {
                if let Some(problem) = auth.oidc.as_ref().and_then(OidcSettings::problem) {
                    return Err(ConfigError::Parse {
                        path: path.display().to_string(),
                        reason: problem,
                    });
                }
                config.auth = auth;
            }
            nats_section = parsed.nats;
            keys_section = parsed.keys;
        }
        config.nats = nats::resolve(nats_section.as_ref(), &env)
            .map_err(|(section, reason)| ConfigError::Nats { section, reason })?;
        if let Some(dir) = env("CRM_DATA_DIR").filter(|d| !d.is_empty()) {
            config.data_dir = PathBuf::from(dir);
        }
        if let Some(value) = env("CRM_ON_ERROR").filter(|d| !d.is_empty()) {
            config.on_error = value.parse().map_err(|_| ConfigError::Env {
                var: "CRM_ON_ERROR",
                value,
                reason: "use `stop` or `skip`",
            })?;
        }
        if let Some(value) = env("CRM_LISTEN").filter(|d| !d.is_empty()) {
            config.listen = value.parse().map_err(|_| ConfigError::Env {
                var: "CRM_LISTEN",
                value,
                reason: "use an address and port such as 127.0.0.1:8080",
            })?;
        }
        if let Some(value) = env("CRM_STORE").filter(|d| !d.is_empty()) {
            config.store = Some(value.parse().map_err(|_| ConfigError::Env {
                var: "CRM_STORE",
                value,
                reason: "use a directory (embedded sled log) or nats://HOST:PORT[,nats://HOST:PORT...] (JetStream)",
            })?);
        }
        if let Some(value) = env("CRM_AUTH_ADMIN_TOKEN_SHA256").filter(|d| !d.is_empty()) {
            config.auth.admin_token_sha256 = Some(
                auth::parse_admin_hash(&value, "CRM_AUTH_ADMIN_TOKEN_SHA256").map_err(|_| {
                    ConfigError::Env {
                        var: "CRM_AUTH_ADMIN_TOKEN_SHA256",
                        value: "(hidden)".to_owned(),
                        reason: "give the SHA-256 (64 hex characters) that `crm auth token generate` prints, not the token",
                    }
                })?,
            );
        }
        if let Some(value) = env("CRM_AUTH_REQUIRED").filter(|d| !d.is_empty()) {
            config.auth.required = Some(value.parse().map_err(|_| ConfigError::Env {
                var: "CRM_AUTH_REQUIRED",
                value,
                reason: "use `true` or `false`",
            })?);
        }
        if let Some(url) = env("CRM_NATS_URL").filter(|d| !d.is_empty()) {
            config.publish.nats_url = Some(url);
        }
        if let Some(file) = env("CRM_TLS_CERT_FILE").filter(|d| !d.is_empty()) {
            tls_cert = Some(PathBuf::from(file));
        }
        if let Some(file) = env("CRM_TLS_KEY_FILE").filter(|d| !d.is_empty()) {
            tls_key = Some(PathBuf::from(file));
        }
        if let Some(listen) = flags.listen {
            config.listen = listen;
        }
        if let Some(store) = &flags.store {
            config.store = Some(store.clone());
        }
        if let Some(url) = &flags.nats {
            config.publish.nats_url = Some(url.clone());
        }
        if let Some(dir) = &flags.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(on_error) = flags.on_error {
            config.on_error = on_error;
        }
        if let Some(file) = &flags.tls_cert {
            tls_cert = Some(file.clone());
        }
        if let Some(file) = &flags.tls_key {
            tls_key = Some(file.clone());
        }
        config.tls = tls_files(tls_cert, tls_key)?;
        config.keys_dir = env(keys::KEYS_DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| keys_section.as_ref().and_then(|k| k.dir.clone()));
        config.master_key = keys::resolve(
            keys_section.as_ref(),
            flags.master_key_file.as_ref(),
            &env,
        )
        .map_err(|_| ConfigError::Env {
            var: crate::keys::MASTER_KEY_ENV,
            value: "(hidden)".to_owned(),
            reason: "give 64 hex characters (32 bytes), e.g. from `openssl rand -hex 32`, or name a file with CRM_MASTER_KEY_FILE",
        })?;
        Ok(config)
    }
}

/// The TLS files of `crm serve`: both or neither.
fn tls_files(
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    const CERT: &str = "the TLS certificate ([serve] tls_cert_file, CRM_TLS_CERT_FILE, --tls-cert)";
    const KEY: &str = "the TLS private key ([serve] tls_key_file, CRM_TLS_KEY_FILE, --tls-key)";
    match (cert_file, key_file) {
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsFiles {
            cert_file,
            key_file,
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::TlsHalf {
            given: CERT,
            missing: KEY,
        }),
        (None, Some(_)) => Err(ConfigError::TlsHalf {
            given: KEY,
            missing: CERT,
        }),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_apply_without_file_env_or_flags() {
        let config = Config::resolve(&Flags::default(), env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.log_dir(), PathBuf::from("crm-data/log"));
    }

    #[test]
    fn file_then_env_then_flags_take_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("crm.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from-file\"\n[import]\non_error = \"skip\"\n[serve]\nlisten = \"0.0.0.0:9000\"\n[publish]\nnats_url = \"nats://file:4222\"\nstream = \"EV\"\n",
        )
        .unwrap();
        let by_file = Config::resolve(
            &Flags::default(),
            env(&[("CRM_CONFIG", file.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(by_file.data_dir, PathBuf::from("/from-file"));
        assert_eq!(by_file.on_error, OnError::Skip);
        assert_eq!(by_file.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(
            by_file.publish.nats_url.as_deref(),
            Some("nats://file:4222")
        );
        assert_eq!(by_file.publish.stream, "EV");

        let vars = [
            ("CRM_CONFIG", file.to_str().unwrap()),
            ("CRM_DATA_DIR", "/from-env"),
            ("CRM_ON_ERROR", "stop"),
            ("CRM_LISTEN", "127.0.0.1:9001"),
            ("CRM_NATS_URL", "nats://env:4222"),
        ];
        let by_env = Config::resolve(&Flags::default(), env(&vars)).unwrap();
        assert_eq!(by_env.data_dir, PathBuf::from("/from-env"));
        assert_eq!(by_env.on_error, OnError::Stop);
        assert_eq!(by_env.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(by_env.publish.nats_url.as_deref(), Some("nats://env:4222"));
        assert_eq!(by_env.publish.stream, "EV");

        let flags = Flags {
            config_file: None,
            data_dir: Some(PathBuf::from("/from-flag")),
            on_error: Some(OnError::Skip),
            listen: Some("127.0.0.1:9002".parse().unwrap()),
            store: None,
            nats: Some("nats://flag:4222".into()),
            tls_cert: None,
            tls_key: None,
            master_key_file: None,
        };
        let by_flags = Config::resolve(&flags, env(&vars)).unwrap();
        assert_eq!(by_flags.data_dir, PathBuf::from("/from-flag"));
        assert_eq!(by_flags.on_error, OnError::Skip);
        assert_eq!(by_flags.listen, "127.0.0.1:9002".parse().unwrap());
        assert_eq!(
            by_flags.publish.nats_url.as_deref(),
            Some("nats://flag:4222")
        );
    }

    #[test]
    fn serve_tls_files_come_from_file_env_or_flags_and_go_in_pairs() {
        let tls = |cert: &str, key: &str| {
            Some(TlsFiles {
                cert_file: cert.into(),
                key_file: key.into(),
            })
        };
        let (_dir, file) = with_file(
            "[serve]\ntls_cert_file = \"/file/cert.pem\"\ntls_key_file = \"/file/key.pem\"\n",
        );
        let by_file = Config::resolve(&Flags::default(), env(&[("CRM_CONFIG", &file)])).unwrap();
        assert_eq!(by_file.tls, tls("/file/cert.pem", "/file/key.pem"));

        // Each key on its own: a variable over the file, a flag over the variable.
        let vars = [
            ("CRM_CONFIG", file.as_str()),
            ("CRM_TLS_CERT_FILE", "/env/cert.pem"),
        ];
        let by_env = Config::resolve(&Flags::default(), env(&vars)).unwrap();
        assert_eq!(by_env.tls, tls("/env/cert.pem", "/file/key.pem"));
        let flags = Flags {
            tls_cert: Some("/flag/cert.pem".into()),
            tls_key: Some("/flag/key.pem".into()),
            ..Flags::default()
        };
        let by_flags = Config::resolve(&flags, env(&vars)).unwrap();
        assert_eq!(by_flags.tls, tls("/flag/cert.pem", "/flag/key.pem"));
        let by_env_only = Config::resolve(
            &Flags::default(),
            env(&[
                ("CRM_TLS_CERT_FILE", "/env/cert.pem"),
                ("CRM_TLS_KEY_FILE", "/env/key.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(by_env_only.tls, tls("/env/cert.pem", "/env/key.pem"));

        // Half a pair, from any source, is refused naming the missing half.
        let (_dir, cert_only) = with_file("[serve]\ntls_cert_file = \"/file/cert.pem\"\n");
        let err = Config::resolve(&Flags::default(), env(&[("CRM_CONFIG", &cert_only)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("but the TLS private key ([serve] tls_key_file, CRM_TLS_KEY_FILE, --tls-key) is not"),
            "{err}"
        );
        let flags = Flags {
            tls_key: Some("/flag/key.pem".into()),
            ..Flags::default()
        };
        let err = Config::resolve(&flags, env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("but the TLS certificate ([serve] tls_cert_file, CRM_TLS_CERT_FILE, --tls-cert) is not"),
            "{err}"
        );
    }

    #[test]
    fn the_store_is_a_directory_or_nats_urls_from_file_env_or_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("crm.toml");
        std::fs::write(
            &file,
            "store = \"nats://a:4222,nats://b:4222\"\n[jetstream]\nstream_name = \"LOG\"\nsubject_prefix = \"x.log\"\nreplicas = 3\n",
        )
        .unwrap();
        let defaults = Config::resolve(&Flags::default(), env(&[])).unwrap();
        assert_eq!(
            defaults.store_location(),
            StoreLocation::Sled(PathBuf::from("crm-data/log"))
        );
        let by_file = Config::resolve(
            &Flags::default(),
            env(&[("CRM_CONFIG", file.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(
            by_file.store_location(),
            StoreLocation::Nats("nats://a:4222,nats://b:4222".into())
        );
        assert_eq!(by_file.jetstream.replicas, 3);
        assert_eq!(by_file.jetstream.stream_name, "LOG");
        let by_env = Config::resolve(
            &Flags::default(),
            env(&[
                ("CRM_CONFIG", file.to_str().unwrap()),
                ("CRM_STORE", "/srv/log"),
            ]),
        )
        .unwrap();
        assert_eq!(
            by_env.store_location(),
            StoreLocation::Sled("/srv/log".into())
        );
        let flags = Flags {
            store: Some("nats://c:4222".parse().unwrap()),
            ..Flags::default()
        };
        let by_flag = Config::resolve(&flags, env(&[("CRM_STORE", "/srv/log")])).unwrap();
        assert_eq!(
            by_flag.store_location(),
            StoreLocation::Nats("nats://c:4222".into())
        );
        for bad in ["", "kafka://x:9092", "nats://a:4222,/tmp/log"] {
            let err = bad.parse::<StoreLocation>().unwrap_err();
            assert!(err.to_string().contains("nats://"), "{bad}: {err}");
        }
        let err = Config::resolve(&Flags::default(), env(&[("CRM_STORE", "redis://x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CRM_STORE"), "{err}");
    }

    #[test]
    fn invalid_settings_are_explained() {
        let err = Config::resolve(&Flags::default(), env(&[("CRM_ON_ERROR", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CRM_ON_ERROR") && err.contains("stop"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "datadir = 1\n").unwrap();
        let flags = Flags {
            config_file: Some(file),
            ..Flags::default()
        };
        let err = Config::resolve(&flags, env(&[])).unwrap_err().to_string();
        assert!(err.contains("invalid") && err.contains("data_dir"), "{err}");
    }

    fn with_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("crm.toml");
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap().to_owned();
        (dir, path)
    }

    #[test]
    fn nats_credentials_come_from_files_and_variables_and_never_show() {
        use crm_eventstore::jetstream::{NatsCredentials, SecretSource};
        let (_dir, file) = with_file(
            "[nats]\nuser = \"crm-store\"\npassword_file = \"/run/secrets/pw\"\ntls_ca_file = \"/etc/ca.pem\"\ntls_required = true\n[nats.publish]\ntoken_file = \"/run/secrets/tok\"\n",
        );
        let config = Config::resolve(&Flags::default(), env(&[("CRM_CONFIG", &file)])).unwrap();
        let store = config.nats.for_store();
        assert_eq!(
            store.credentials,
            Some(NatsCredentials::UserPassword {
                user: "crm-store".into(),
                password: SecretSource::File("/run/secrets/pw".into()),
            })
        );
        assert!(store.tls.required);
        let publish = config.nats.for_publish();
        assert_eq!(
            publish.credentials,
            Some(NatsCredentials::Token(SecretSource::File(
                "/run/secrets/tok".into()
            )))
        );
        // TLS keys [nats.publish] leaves out come from [nats].
        assert_eq!(publish.tls, store.tls);

        // A variable overrides the file's password; Debug output never shows it.
        let config = Config::resolve(
            &Flags::default(),
            env(&[("CRM_CONFIG", &file), ("CRM_NATS_PASSWORD", "s3cret-pw")]),
        )
        .unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("CRM_NATS_PASSWORD"), "{shown}");

        // Without [nats.publish] the publisher uses [nats]; CRM_PUBLISH_NATS_* make one.
        let config = Config::resolve(
            &Flags::default(),
            env(&[("CRM_NATS_USER", "u"), ("CRM_NATS_PASSWORD", "p")]),
        )
        .unwrap();
        assert_eq!(config.nats.for_publish(), config.nats.for_store());
        let config = Config::resolve(
            &Flags::default(),
            env(&[
                ("CRM_NATS_TOKEN", "t"),
                ("CRM_PUBLISH_NATS_CREDS_FILE", "/run/pub.creds"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.nats.for_publish().credentials,
            Some(NatsCredentials::CredsFile("/run/pub.creds".into()))
        );
        assert!(matches!(
            config.nats.for_store().credentials,
            Some(NatsCredentials::Token(_))
        ));
    }

    #[test]
    fn inline_nats_secrets_are_refused_with_what_to_use_instead() {
        for (text, key, instead) in [
            (
                "[nats]\nuser = \"u\"\npassword = \"x\"\n",
                "`password`",
                "CRM_NATS_PASSWORD",
            ),
            ("[nats]\ntoken = \"x\"\n", "`token`", "CRM_NATS_TOKEN"),
            (
                "[nats]\nnkey_seed = \"SUAx\"\n",
                "`nkey_seed`",
                "nkey_seed_file",
            ),
            (
                "[nats.publish]\npassword = \"x\"\n",
                "`password`",
                "CRM_PUBLISH_NATS_PASSWORD",
            ),
        ] {
            let (_dir, file) = with_file(text);
            let err = Config::resolve(&Flags::default(), env(&[("CRM_CONFIG", &file)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(key) && err.contains(instead) && err.contains("inline"),
                "{text}: {err}"
            );
            assert!(!err.contains("\"x\""), "{err}");
        }
        let (_dir, file) = with_file("[nats]\npasword_file = \"/x\"\n");
        let err = Config::resolve(&Flags::default(), env(&[("CRM_CONFIG", &file)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pasword_file"), "{err}");
    }

    #[test]
    fn two_nats_credentials_or_half_a_setting_are_refused_by_name() {
        let refused = |text: &str, vars: &[(&str, &str)]| {
            let (_dir, file) = with_file(text);
            let mut all = vec![("CRM_CONFIG", file.as_str())];
            all.extend_from_slice(vars);
            Config::resolve(&Flags::default(), env(&all))
                .unwrap_err()
                .to_string()
        };
        let err = refused(
            "[nats]\ntoken_file = \"/t\"\ncreds_file = \"/c.creds\"\n",
            &[],
        );
        assert!(
            err.contains("token_file") && err.contains("creds_file") && err.contains("[nats]"),
            "{err}"
        );
        let err = refused(
            "[nats]\nnkey_seed_file = \"/n\"\n",
            &[("CRM_NATS_USER", "u"), ("CRM_NATS_PASSWORD", "p")],
        );
        assert!(
            err.contains("CRM_NATS_PASSWORD") && err.contains("nkey_seed_file"),
            "{err}"
        );
        let err = refused("[nats]\nuser = \"u\"\n", &[]);
        assert!(
            err.contains("password_file") && err.contains("CRM_NATS_PASSWORD"),
            "{err}"
        );
        let err = refused("[nats]\npassword_file = \"/p\"\n", &[]);
        assert!(err.contains("no user"), "{err}");
        let err = refused("[nats]\ntls_cert_file = \"/c.pem\"\n", &[]);
        assert!(err.contains("tls_key_file"), "{err}");
        let err = refused(
            "[nats.publish]\ntoken_file = \"/t\"\n",
            &[
                ("CRM_PUBLISH_NATS_USER", "u"),
                ("CRM_PUBLISH_NATS_PASSWORD", "p"),
            ],
        );
        assert!(
            err.contains("[nats.publish]") && err.contains("token_file"),
            "{err}"
        );
    }

    #[test]
    fn the_deploy_configs_name_the_least_privilege_users_and_secret_files() {
        use crm_eventstore::jetstream::{NatsCredentials, SecretSource};
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        for (file, secrets) in [
            ("config/crm.toml", "/etc/crm/secrets/nats-"),
            ("k8s/crm.toml", "/run/secrets/crm-nats/"),
        ] {
            let path = deploy.join(file);
            let config = Config::resolve(
                &Flags {
                    config_file: Some(path),
                    ..Flags::default()
                },
                env(&[]),
            )
            .unwrap_or_else(|e| panic!("{file}: {e}"));
            // The master key of personal data comes from a secret file, never the config.
            match &config.master_key {
                MasterKeySource::File(path) => assert!(
                    path.starts_with(secrets.rsplit_once('/').map_or(secrets, |(dir, _)| dir))
                        || path.starts_with("/run/secrets/crm-keys"),
                    "{file}: {}",
                    path.display()
                ),
                other => panic!("{file}: master key from {other:?}"),
            }
            for (auth, user, secret) in [
                (config.nats.for_store(), "crm-store", "store-password"),
                (
                    config.nats.for_publish(),
                    "crm-publisher",
                    "publisher-password",
                ),
            ] {
                assert_eq!(
                    auth.credentials,
                    Some(NatsCredentials::UserPassword {
                        user: user.into(),
                        password: SecretSource::File(format!("{secrets}{secret}").into()),
                    }),
                    "{file}"
                );
            }
            // Authentication on, its secret a mounted file, never inline.
            assert_eq!(config.auth.required, Some(true), "{file}");
            let hash_file = config.auth.admin_token_sha256_file.as_ref().unwrap();
            assert!(
                hash_file.starts_with("/etc/crm/secrets") || hash_file.starts_with("/run/secrets"),
                "{file}"
            );
            assert!(config.auth.admin_token_sha256.is_none(), "{file}");
        }
    }
}
