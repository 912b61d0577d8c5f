//! The `[nats]` section: credentials and TLS of every NATS connection the process makes
//! (the JetStream store, the publisher, `crm tail`), and its `[nats.publish]` sub-section
//! for the publisher and `crm tail` when they connect as another user (the store and the
//! published events live in different accounts in `deploy/nats`).
//!
//! ```toml
//! [nats]
//! user = "crm-store"                         # with password_file or CRM_NATS_PASSWORD
//! password_file = "/run/secrets/nats-password"
//! # token_file = "/run/secrets/nats-token"   # or CRM_NATS_TOKEN
//! # nkey_seed_file = "/run/secrets/nats.nk"  # an NKey user seed (SU...)
//! # creds_file = "/run/secrets/crm.creds"    # a JWT user's .creds file; or CRM_NATS_CREDS_FILE
//! tls_ca_file = "/etc/crm/nats-ca.pem"       # CA of the servers' certificates
//! # tls_cert_file = "/etc/crm/client.pem"    # client certificate, with tls_key_file
//! # tls_key_file = "/run/secrets/client-key.pem"
//! tls_required = true                        # refuse servers without TLS (default false)
//!
//! [nats.publish]                             # the publisher and `crm tail`; TLS keys it
//! user = "crm-publisher"                     # leaves out are taken from [nats]
//! password_file = "/run/secrets/nats-publisher-password"
//! ```
//!
//! At most one credential: user + password, a token, an NKey seed or a creds file; two are
//! an error naming both. Secrets are never written in the config file: `password`, `token`
//! or `nkey_seed` keys are refused with the file key or variable to use instead. Variables
//! (over the file, key by key): `CRM_NATS_USER`, `CRM_NATS_PASSWORD`, `CRM_NATS_TOKEN`,
//! `CRM_NATS_CREDS_FILE`; for `[nats.publish]` the same with `CRM_PUBLISH_NATS_`.

use std::path::PathBuf;

use crm_eventstore::jetstream::{NatsClientAuth, NatsCredentials, NatsTls, Secret, SecretSource};
use serde::Deserialize;

/// The resolved NATS client settings: `[nats]` for every connection, `[nats.publish]` (when
/// given) for the publisher and `crm tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// `[nats]`: the JetStream store and, without `[nats.publish]`, every connection.
    pub client: NatsClientAuth,
    /// `[nats.publish]`.
    pub publish: Option<NatsClientAuth>,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            client: NatsClientAuth {
                settings: hint("[nats]", &STORE_VARS),
                ..NatsClientAuth::default()
            },
            publish: None,
        }
    }
}

fn hint(name: &str, vars: &Vars) -> String {
    format!(
        "the {name} section of the config file (user + password_file, token_file, nkey_seed_file, creds_file, tls_*) or the {}* variables",
        vars.prefix
    )
}

impl NatsSettings {
    /// Credentials and TLS of the JetStream store's connection.
    #[must_use]
    pub fn for_store(&self) -> &NatsClientAuth {
        &self.client
    }

    /// Credentials and TLS of the publisher's and `crm tail`'s connections.
    #[must_use]
    pub fn for_publish(&self) -> &NatsClientAuth {
        self.publish.as_ref().unwrap_or(&self.client)
    }
}

/// Why the `[nats]` settings are not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatsSettingsError {
    /// Two kinds of credential.
    #[error("{first} and {second} are both set; a NATS client presents one credential: keep one of them")]
    TwoCredentials {
        /// One credential's setting.
        first: String,
        /// The other's.
        second: String,
    },
    /// A password without a user.
    #[error("a password is set ({0}) but no user; set `user` (or {1}) too")]
    PasswordWithoutUser(String, String),
    /// A user without a password.
    #[error("user `{user}` has no password; set `password_file` or {var}")]
    UserWithoutPassword {
        /// The user.
        user: String,
        /// The password variable.
        var: String,
    },
    /// Half a client certificate.
    #[error("`{0}` is set without `{1}`; a client certificate needs both tls_cert_file and tls_key_file")]
    HalfClientCertificate(&'static str, &'static str),
    /// `[nats.publish.publish]`.
    #[error("[nats.publish] cannot hold a `publish` section of its own; move its keys into [nats.publish]")]
    NestedPublish,
    /// A secret written in the file.
    #[error("`{key}` holds a secret inline, and secrets are never read from the config file; use {instead}")]
    InlineSecret {
        /// The refused key.
        key: &'static str,
        /// What to use instead.
        instead: String,
    },
}

/// The `[nats]` / `[nats.publish]` file section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NatsSection {
    user: Option<String>,
    password_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    nkey_seed_file: Option<PathBuf>,
    creds_file: Option<PathBuf>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_required: Option<bool>,
    /// Refused: a secret inline.
    password: Option<toml::Value>,
    /// Refused: a secret inline.
    token: Option<toml::Value>,
    /// Refused: a secret inline.
    nkey_seed: Option<toml::Value>,
    /// Refused: a secret inline.
    nkey: Option<toml::Value>,
    /// `[nats.publish]` (only in `[nats]`).
    publish: Option<Box<NatsSection>>,
}

/// One scope's variables: `CRM_NATS_` or `CRM_PUBLISH_NATS_`.
struct Vars {
    prefix: &'static str,
}

impl Vars {
    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

const STORE_VARS: Vars = Vars {
    prefix: "CRM_NATS_",
};
const PUBLISH_VARS: Vars = Vars {
    prefix: "CRM_PUBLISH_NATS_",
};

impl NatsSection {
    fn refuse_inline(&self, vars: &Vars) -> Result<(), NatsSettingsError> {
        let refused = [
            (
                "password",
                self.password.is_some(),
                format!("`password_file` or {}", vars.name("PASSWORD")),
            ),
            (
                "token",
                self.token.is_some(),
                format!("`token_file` or {}", vars.name("TOKEN")),
            ),
            (
                "nkey_seed",
                self.nkey_seed.is_some(),
                "`nkey_seed_file`".to_owned(),
            ),
            ("nkey", self.nkey.is_some(), "`nkey_seed_file`".to_owned()),
        ];
        for (key, given, instead) in refused {
            if given {
                return Err(NatsSettingsError::InlineSecret { key, instead });
            }
        }
        Ok(())
    }
}

/// Resolves `[nats]` (and `[nats.publish]`) from the file section and the variables; an
/// error names the section it is about.
pub(crate) fn resolve(
    section: Option<&NatsSection>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<NatsSettings, (String, NatsSettingsError)> {
    let empty = NatsSection::default();
    let section = section.unwrap_or(&empty);
    let scope = |name: &str, e| (name.to_owned(), e);
    section
        .refuse_inline(&STORE_VARS)
        .map_err(|e| scope("[nats]", e))?;
    let client =
        resolve_scope(section, None, &STORE_VARS, env, "[nats]").map_err(|e| scope("[nats]", e))?;
    let publish_vars_set = ["USER", "PASSWORD", "TOKEN", "CREDS_FILE"]
        .iter()
        .any(|k| env(&PUBLISH_VARS.name(k)).is_some_and(|v| !v.is_empty()));
    let publish = match (&section.publish, publish_vars_set) {
        (None, false) => None,
        (publish, _) => {
            let publish = publish.as_deref().unwrap_or(&empty);
            publish
                .refuse_inline(&PUBLISH_VARS)
                .map_err(|e| scope("[nats.publish]", e))?;
            if publish.publish.is_some() {
                return Err(scope("[nats.publish]", NatsSettingsError::NestedPublish));
            }
            Some(
                resolve_scope(publish, Some(section), &PUBLISH_VARS, env, "[nats.publish]")
                    .map_err(|e| scope("[nats.publish]", e))?,
            )
        }
    };
    Ok(NatsSettings { client, publish })
}

fn var(env: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

fn resolve_scope(
    section: &NatsSection,
    tls_from: Option<&NatsSection>,
    vars: &Vars,
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> Result<NatsClientAuth, NatsSettingsError> {
    let (user_var, password_var, token_var, creds_var) = (
        vars.name("USER"),
        vars.name("PASSWORD"),
        vars.name("TOKEN"),
        vars.name("CREDS_FILE"),
    );
    let user = var(env, &user_var).or_else(|| section.user.clone());
    let password = match var(env, &password_var) {
        Some(value) => Some((
            SecretSource::Value {
                secret: Secret::new(value),
                origin: password_var.clone(),
            },
            password_var.clone(),
        )),
        None => section
            .password_file
            .clone()
            .map(|p| (SecretSource::File(p), "`password_file`".to_owned())),
    };
    let token = match var(env, &token_var) {
        Some(value) => Some((
            SecretSource::Value {
                secret: Secret::new(value),
                origin: token_var.clone(),
            },
            token_var.clone(),
        )),
        None => section
            .token_file
            .clone()
            .map(|p| (SecretSource::File(p), "`token_file`".to_owned())),
    };
    let creds = match var(env, &creds_var) {
        Some(path) => Some((PathBuf::from(path), creds_var.clone())),
        None => section
            .creds_file
            .clone()
            .map(|p| (p, "`creds_file`".to_owned())),
    };
    let nkey = section
        .nkey_seed_file
        .clone()
        .map(|p| (p, "`nkey_seed_file`".to_owned()));

    let mut kinds: Vec<(String, NatsCredentials)> = Vec::new();
    match (user, password) {
        (Some(user), Some((password, origin))) => kinds.push((
            format!("user + password ({origin})"),
            NatsCredentials::UserPassword { user, password },
        )),
        (Some(user), None) => {
            return Err(NatsSettingsError::UserWithoutPassword {
                user,
                var: password_var,
            })
        }
        (None, Some((_, origin))) => {
            return Err(NatsSettingsError::PasswordWithoutUser(origin, user_var))
        }
        (None, None) => {}
    }
    if let Some((token, origin)) = token {
        kinds.push((format!("a token ({origin})"), NatsCredentials::Token(token)));
    }
    if let Some((path, origin)) = nkey {
        kinds.push((
            format!("an NKey seed ({origin})"),
            NatsCredentials::NKeySeedFile(path),
        ));
    }
    if let Some((path, origin)) = creds {
        kinds.push((
            format!("a creds file ({origin})"),
            NatsCredentials::CredsFile(path),
        ));
    }
    if kinds.len() > 1 {
        return Err(NatsSettingsError::TwoCredentials {
            first: kinds[0].0.clone(),
            second: kinds[1].0.clone(),
        });
    }
    let credentials = kinds.pop().map(|(_, c)| c);

    let pick = |own: &Option<PathBuf>, inherited: fn(&NatsSection) -> &Option<PathBuf>| {
        own.clone()
            .or_else(|| tls_from.and_then(|s| inherited(s).clone()))
    };
    let ca_file = pick(&section.tls_ca_file, |s| &s.tls_ca_file);
    let (cert, key) = if section.tls_cert_file.is_some() || section.tls_key_file.is_some() {
        (section.tls_cert_file.clone(), section.tls_key_file.clone())
    } else {
        (
            tls_from.and_then(|s| s.tls_cert_file.clone()),
            tls_from.and_then(|s| s.tls_key_file.clone()),
        )
    };
    let client_cert = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (Some(_), None) => {
            return Err(NatsSettingsError::HalfClientCertificate(
                "tls_cert_file",
                "tls_key_file",
            ))
        }
        (None, Some(_)) => {
            return Err(NatsSettingsError::HalfClientCertificate(
                "tls_key_file",
                "tls_cert_file",
            ))
        }
        (None, None) => None,
    };
    let required = section
        .tls_required
        .or_else(|| tls_from.and_then(|s| s.tls_required))
        .unwrap_or(false);
    Ok(NatsClientAuth {
        credentials,
        tls: NatsTls {
            ca_file,
            client_cert,
            required,
        },
        settings: hint(name, vars),
    })
}
