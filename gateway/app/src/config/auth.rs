//! Authentication settings of `crm serve` (file section `[auth]`).
//!
//! ```toml
//! [auth]
//! required = true                   # default: true once a token is granted, an admin token
//!                                   # hash is given or [auth.oidc] is set
//! admin_token_sha256_file = "/run/secrets/crm-admin-token-sha256"
//!                                   # a first admin token for a fresh deployment: the SHA-256
//!                                   # that `crm auth token generate` prints (also the variable
//!                                   # CRM_AUTH_ADMIN_TOKEN_SHA256); the token itself stays
//!                                   # with the operator
//! public = ["/metrics"]             # routes answered without a credential (default: none
//!                                   # but /healthz and /readyz)
//! [auth.oidc]                       # people sign in with an identity provider
//! issuer = "https://id.example.com/realms/crm"
//! audience = "crm"
//! jwks_url = "https://id.example.com/realms/crm/protocol/openid-connect/certs"
//! # or jwks_file = "/etc/crm/jwks.json"
//! roles_claim = "realm_access.roles"  # default "roles"; a dotted path into the claims
//! algorithms = ["RS256"]            # default ["RS256", "ES256", "EdDSA"]; never HS*
//! [auth.oidc.role_map]              # claim value -> role; default: values that are role names
//! "crm-admins" = "admin"
//! ```
//! `CRM_AUTH_REQUIRED=true|false` overrides `required`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crm_domain::access::Role;
use serde::Deserialize;

/// Routes that never need a credential: the probes an orchestrator calls.
pub const ALWAYS_PUBLIC: [&str; 2] = ["/healthz", "/readyz"];

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Whether every route but the public ones needs a credential. `None`: yes once a token
    /// was granted or OIDC is configured.
    pub required: Option<bool>,
    /// Route paths (as in the API document, e.g. `/metrics`, `/openapi.json`) answered
    /// without a credential, besides [`ALWAYS_PUBLIC`].
    pub public: Vec<String>,
    /// People's bearer tokens, from an identity provider.
    pub oidc: Option<OidcSettings>,
    /// A file holding the SHA-256 (hex) of a bootstrap admin token.
    pub admin_token_sha256_file: Option<PathBuf>,
    /// The SHA-256 (hex) of the bootstrap admin token, read from
    /// [`AuthSettings::admin_token_sha256_file`] or `CRM_AUTH_ADMIN_TOKEN_SHA256`.
    #[serde(skip)]
    pub admin_token_sha256: Option<String>,
}

/// Why the bootstrap admin token's hash is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminHashError {
    /// The file could not be read.
    #[error("could not read the admin token hash {path}: {source}; check [auth] admin_token_sha256_file and the mounted secret")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a SHA-256 in hex.
    #[error("the admin token hash from {from} is not a SHA-256 (64 hex characters); give the hash `crm auth token generate` prints, not the token")]
    NotAHash {
        /// Where it came from.
        from: String,
    },
}

/// Checks and normalises a SHA-256 given in hex (lowercase).
///
/// # Errors
/// [`AdminHashError::NotAHash`].
pub fn parse_admin_hash(text: &str, from: &str) -> Result<String, AdminHashError> {
    let hash = text.trim().to_ascii_lowercase();
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash)
    } else {
        Err(AdminHashError::NotAHash {
            from: from.to_owned(),
        })
    }
}

/// Reads the hash file named by `settings`, if any, into `admin_token_sha256`.
///
/// # Errors
/// [`AdminHashError`].
pub fn load_admin_hash(settings: &mut AuthSettings) -> Result<(), AdminHashError> {
    if let Some(path) = &settings.admin_token_sha256_file {
        let from = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AdminHashError::Read {
            path: from.clone(),
            source,
        })?;
        settings.admin_token_sha256 = Some(parse_admin_hash(&text, &from)?);
    }
    Ok(())
}

/// `[auth.oidc]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    /// Accepted `iss`.
    pub issuer: String,
    /// Accepted `aud`.
    pub audience: String,
    /// The issuer's key set, from a file.
    pub jwks_file: Option<PathBuf>,
    /// The issuer's key set, from a URL (fetched at start, cached, refreshed).
    pub jwks_url: Option<String>,
    /// Dotted path of the claim holding the roles (an array of strings, or a string of
    /// space-separated values).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Accepted signing algorithms (asymmetric only).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Claim value → role; values not in the map that are role names count as themselves.
    #[serde(default)]
    pub role_map: BTreeMap<String, Role>,
}

fn default_roles_claim() -> String {
    "roles".to_owned()
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(str::to_owned).to_vec()
}

impl OidcSettings {
    /// What is wrong with these settings, if anything.
    #[must_use]
    pub fn problem(&self) -> Option<String> {
        if self.issuer.trim().is_empty() || self.audience.trim().is_empty() {
            return Some("[auth.oidc] needs `issuer` and `audience`".to_owned());
        }
        match (&self.jwks_file, &self.jwks_url) {
            (None, None) => {
                return Some(
                    "[auth.oidc] needs the issuer's keys: `jwks_file` or `jwks_url`".to_owned(),
                )
            }
            (Some(_), Some(_)) => {
                return Some("[auth.oidc] takes `jwks_file` or `jwks_url`, not both".to_owned())
            }
            _ => {}
        }
        if self.algorithms.is_empty() {
            return Some(
                "[auth.oidc] algorithms is empty; name at least one (RS256, ES256, EdDSA, ...)"
                    .to_owned(),
            );
        }
        if let Some(hs) = self.algorithms.iter().find(|a| a.starts_with("HS")) {
            return Some(format!(
                "[auth.oidc] algorithm {hs} is a shared-secret algorithm; an identity provider's tokens are verified with its public keys (RS256, PS256, ES256, EdDSA)"
            ));
        }
        None
    }
}

impl AuthSettings {
    /// Whether `path` is answered without a credential.
    #[must_use]
    pub fn is_public(&self, path: &str) -> bool {
        ALWAYS_PUBLIC.contains(&path) || self.public.iter().any(|p| p == path)
    }
}
