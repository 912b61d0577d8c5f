//! How a NATS client proves who it is and checks whom it talks to: one credential (user and
//! password, token, NKey seed or `.creds` file) and TLS (a CA to trust, a client
//! certificate, TLS required). The JetStream store applies it to its connection; programs
//! that make other NATS connections (a publisher, a consumer) apply the same
//! [`NatsClientAuth::connect`] so every connection is set up and explained alike.
//!
//! Secrets are held as [`Secret`], whose `Debug` prints `***`, or as paths of files read
//! when connecting; neither a secret nor a file's content is ever logged or shown in an
//! error.

use std::fmt;
use std::path::{Path, PathBuf};

use async_nats::{Client, ConnectErrorKind, ConnectOptions, ToServerAddrs};

/// A secret value; `Debug` and `Display` show `***`, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from: a value given to the program (an environment variable), or a
/// file read when connecting (a mounted secret; surrounding whitespace is dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// The value, and where it was given (e.g. `CRM_NATS_PASSWORD`), for messages.
    Value {
        /// The secret.
        secret: Secret,
        /// Where it came from, e.g. the variable's name.
        origin: String,
    },
    /// A file holding the secret.
    File(PathBuf),
}

impl SecretSource {
    fn describe(&self) -> String {
        match self {
            SecretSource::Value { origin, .. } => origin.clone(),
            SecretSource::File(path) => format!("file {}", path.display()),
        }
    }

    fn read(&self, what: &'static str) -> Result<Secret, NatsAuthError> {
        match self {
            SecretSource::Value { secret, .. } => Ok(secret.clone()),
            SecretSource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| NatsAuthError::Unreadable {
                        what,
                        path: path.clone(),
                        source,
                    })?;
                let value = text.trim();
                if value.is_empty() {
                    return Err(NatsAuthError::EmptySecret {
                        what,
                        path: path.clone(),
                    });
                }
                Ok(Secret::new(value))
            }
        }
    }
}

/// The one credential a NATS client presents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatsCredentials {
    /// A user name and its password.
    UserPassword {
        /// The user.
        user: String,
        /// Its password.
        password: SecretSource,
    },
    /// A token.
    Token(SecretSource),
    /// A file holding an NKey seed (`SU...`); the server knows the public key.
    NKeySeedFile(PathBuf),
    /// A `.creds` file (a user JWT and its NKey seed), for operator/JWT deployments.
    CredsFile(PathBuf),
}

impl NatsCredentials {
    /// What the credential is, without its secret: for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            NatsCredentials::UserPassword { user, password } => {
                format!(
                    "user `{user}` with the password from {}",
                    password.describe()
                )
            }
            NatsCredentials::Token(token) => format!("the token from {}", token.describe()),
            NatsCredentials::NKeySeedFile(path) => {
                format!("the NKey seed in {}", path.display())
            }
            NatsCredentials::CredsFile(path) => {
                format!("the credentials file {}", path.display())
            }
        }
    }
}

/// TLS towards the servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// PEM file of the CA(s) that signed the servers' certificates (besides the system's).
    pub ca_file: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for servers that verify clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Refuse to talk to a server without TLS (a `tls://` URL requires it too).
    pub required: bool,
}

/// Credentials and TLS of a NATS client; the default is neither (an open server).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsClientAuth {
    /// At most one credential.
    pub credentials: Option<NatsCredentials>,
    /// TLS settings.
    pub tls: NatsTls,
    /// Where these settings are made, named in errors so that the reader knows what to
    /// change (e.g. "the [nats] section of the config file or CRM_NATS_* variables");
    /// empty: "the NATS client settings".
    pub settings: String,
}

/// Why the credentials or TLS files could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsAuthError {
    /// A secret, key or certificate file could not be read.
    #[error("cannot read the NATS {what} {}: {source}; check that the file is mounted at that path and readable by this process's user", .path.display())]
    Unreadable {
        /// What the file holds.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A secret file is empty.
    #[error("the NATS {what} file {} is empty; put the secret in it (one line)", .path.display())]
    EmptySecret {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
}

/// Why a NATS client could not connect, with what to check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsConnectError {
    /// The credential or TLS files could not be used.
    #[error(transparent)]
    Setup(#[from] NatsAuthError),
    /// The server refused the credentials (or their absence).
    #[error("NATS at {url} refused the connection: authorization violation ({presented}); check the credentials in {settings} against the server's users (accounts and users in its config)")]
    NotAuthorized {
        /// The server(s).
        url: String,
        /// The credential presented, without its secret.
        presented: String,
        /// Where to change it.
        settings: String,
    },
    /// Signing the server's nonce with the NKey or `.creds` seed failed.
    #[error("NATS at {url}: authentication failed ({presented}): {reason}; check that the seed in {settings} is a valid user seed (SU...)")]
    Authentication {
        /// The server(s).
        url: String,
        /// The credential presented, without its secret.
        presented: String,
        /// The client's message.
        reason: String,
        /// Where to change it.
        settings: String,
    },
    /// The TLS handshake failed or TLS was required and not offered.
    #[error("TLS with NATS at {url} failed: {reason}; {advice} (TLS settings: {settings})")]
    Tls {
        /// The server(s).
        url: String,
        /// The client's message.
        reason: String,
        /// What to check for this configuration.
        advice: &'static str,
        /// Where to change it.
        settings: String,
    },
    /// Anything else: no server, a bad URL, a timeout.
    #[error("cannot connect to NATS at {url}: {source}; check that the servers run and the URL is right")]
    Other {
        /// The server(s).
        url: String,
        /// The client's error.
        source: async_nats::ConnectError,
    },
}

impl NatsConnectError {
    /// Whether the server refused the credentials (as opposed to being unreachable).
    #[must_use]
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            NatsConnectError::NotAuthorized { .. } | NatsConnectError::Authentication { .. }
        )
    }
}

fn check_readable(what: &'static str, path: &Path) -> Result<(), NatsAuthError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| NatsAuthError::Unreadable {
            what,
            path: path.to_path_buf(),
            source,
        })
}

impl NatsClientAuth {
    /// Where these settings are made, for messages.
    #[must_use]
    pub fn settings(&self) -> &str {
        if self.settings.is_empty() {
            "the NATS client settings"
        } else {
            &self.settings
        }
    }

    /// The credential presented, without its secret.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.credentials {
            Some(c) => c.describe(),
            None => "no credentials were presented".to_owned(),
        }
    }

    /// `options` with these credentials and TLS settings; reads the secret files.
    ///
    /// # Errors
    /// [`NatsAuthError`] when a file cannot be read.
    pub async fn apply(&self, options: ConnectOptions) -> Result<ConnectOptions, NatsAuthError> {
        let mut options = match &self.credentials {
            None => options,
            Some(NatsCredentials::UserPassword { user, password }) => {
                let password = password.read("password")?;
                options.user_and_password(user.clone(), password.expose().to_owned())
            }
            Some(NatsCredentials::Token(token)) => {
                let token = token.read("token")?;
                options.token(token.expose().to_owned())
            }
            Some(NatsCredentials::NKeySeedFile(path)) => {
                let seed = SecretSource::File(path.clone()).read("NKey seed")?;
                options.nkey(seed.expose().to_owned())
            }
            Some(NatsCredentials::CredsFile(path)) => options
                .credentials_file(path)
                .await
                .map_err(|source| NatsAuthError::Unreadable {
                    what: "credentials file",
                    path: path.clone(),
                    source,
                })?,
        };
        if let Some(ca) = &self.tls.ca_file {
            check_readable("TLS CA file", ca)?;
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client_cert {
            check_readable("TLS client certificate", cert)?;
            check_readable("TLS client key", key)?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls.required {
            options = options.require_tls(true);
        }
        Ok(options)
    }

    /// Applies these settings to `options` and connects to `addrs` (shown as `url` in
    /// errors); a refusal is explained as one, naming the settings to check.
    ///
    /// # Errors
    /// [`NatsConnectError`].
    pub async fn connect(
        &self,
        options: ConnectOptions,
        addrs: impl ToServerAddrs,
        url: &str,
    ) -> Result<Client, NatsConnectError> {
        let options = self.apply(options).await?;
        options
            .connect(addrs)
            .await
            .map_err(|e| self.explain(url, e))
    }

    /// The error `error` from connecting to `url` with these settings, explained.
    #[must_use]
    pub fn explain(&self, url: &str, error: async_nats::ConnectError) -> NatsConnectError {
        let url = url.to_owned();
        let settings = self.settings().to_owned();
        match error.kind() {
            ConnectErrorKind::AuthorizationViolation => NatsConnectError::NotAuthorized {
                url,
                presented: self.describe(),
                settings,
            },
            ConnectErrorKind::Authentication => NatsConnectError::Authentication {
                url,
                presented: self.describe(),
                reason: error.to_string(),
                settings,
            },
            ConnectErrorKind::Tls => NatsConnectError::Tls {
                url,
                reason: error.to_string(),
                advice: if self.tls.ca_file.is_some() {
                    "check that the TLS CA file holds the CA that signed the server's certificate and that the certificate names the host in the URL"
                } else {
                    "the server's certificate is not signed by a CA this system trusts: set the TLS CA file to the CA that signed it"
                },
                settings,
            },
            _ => {
                // A refused certificate surfaces as an I/O error of the handshake.
                let text = error.to_string();
                let lower = text.to_ascii_lowercase();
                if lower.contains("certificate") || lower.contains("tls") {
                    NatsConnectError::Tls {
                        url,
                        reason: text,
                        advice: if self.tls.ca_file.is_some() {
                            "check that the TLS CA file holds the CA that signed the server's certificate and that the certificate names the host in the URL"
                        } else if self.tls.required {
                            "the server's certificate is not signed by a CA this system trusts: set the TLS CA file to the CA that signed it, or enable TLS on the server (a `tls {}` block)"
                        } else {
                            "the server's certificate is not signed by a CA this system trusts: set the TLS CA file to the CA that signed it"
                        },
                        settings,
                    }
                } else {
                    NatsConnectError::Other { url, source: error }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let auth = NatsClientAuth {
            credentials: Some(NatsCredentials::UserPassword {
                user: "crm-store".into(),
                password: SecretSource::Value {
                    secret: Secret::new("hunter2"),
                    origin: "CRM_NATS_PASSWORD".into(),
                },
            }),
            ..NatsClientAuth::default()
        };
        let shown = format!("{auth:?} {}", auth.describe());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("***") && shown.contains("crm-store"),
            "{shown}"
        );
        assert!(shown.contains("CRM_NATS_PASSWORD"), "{shown}");
    }

    #[tokio::test]
    async fn unreadable_or_empty_secret_files_are_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let empty = dir.path().join("token");
        std::fs::write(&empty, "\n").unwrap_or_else(|e| panic!("{e}"));
        let auth = |c| NatsClientAuth {
            credentials: Some(c),
            ..NatsClientAuth::default()
        };
        let err = auth(NatsCredentials::Token(SecretSource::File(empty.clone())))
            .apply(ConnectOptions::new())
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("token") && err.contains("empty"), "{err}");
        let missing = dir.path().join("nope.creds");
        let err = auth(NatsCredentials::CredsFile(missing))
            .apply(ConnectOptions::new())
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("credentials file") && err.contains("nope.creds"),
            "{err}"
        );
    }
}
