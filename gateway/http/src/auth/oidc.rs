//! OIDC / JWT bearer tokens for people: the signature is checked by `jsonwebtoken` against
//! the issuer's key set (JWKS, from a file or a URL), never by code of ours; `iss`, `aud`,
//! `exp` (and `nbf` when present) are checked with [`LEEWAY_SECONDS`] of leeway; the
//! accepted algorithms are pinned by configuration and never shared-secret ones (RFC 8725).
//!
//! The key set is cached. A token whose `kid` the cache does not hold makes it re-read the
//! key set (at most once per [`JWKS_REFETCH_MIN`]), so a rotation at the issuer is picked up
//! without a restart; the set is also re-read every [`JWKS_REFRESH`].

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crm_app::access::{Credential, Principal};
use crm_app::config::OidcSettings;
use crm_domain::access::Role;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tokio::sync::RwLock;

/// Clock skew accepted on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;
/// The key set is re-read this often.
pub const JWKS_REFRESH: Duration = Duration::from_secs(15 * 60);
/// An unknown `kid` re-reads the key set at most this often.
pub const JWKS_REFETCH_MIN: Duration = Duration::from_secs(30);
/// Largest key set accepted, in bytes.
pub const JWKS_SIZE_MAX_BYTES: usize = 256 * 1024;
/// Time allowed to fetch the key set from its URL.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest subject recorded as an actor, in bytes.
pub const SUBJECT_SIZE_MAX_BYTES: usize = 120;

/// Why the OIDC verifier could not start or load its keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcSetupError {
    /// An algorithm name is unknown or shared-secret.
    #[error("[auth.oidc] algorithm `{0}` is not an asymmetric JWT algorithm; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA")]
    Algorithm(String),
    /// The settings are incomplete.
    #[error("{0}")]
    Settings(String),
    /// The key set file could not be read.
    #[error("could not read the key set {path}: {source}; check [auth.oidc] jwks_file")]
    ReadFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key set could not be fetched.
    #[error("could not fetch the key set from {url}: {fault}; check [auth.oidc] jwks_url and that the identity provider is reachable")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        fault: FetchFault,
    },
    /// The key set is not a JWKS document.
    #[error("the key set from {from} is not a JWKS document: {source}")]
    Parse {
        /// Where it came from.
        from: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The key set is larger than [`JWKS_SIZE_MAX_BYTES`].
    #[error("the key set from {0} is larger than {JWKS_SIZE_MAX_BYTES} bytes")]
    TooLarge(String),
}

/// Why a bearer token was refused. Never quotes the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcRefused {
    /// The token is not a JWT.
    #[error("the bearer token is neither an API token of this server nor a JWT: {0}")]
    Malformed(String),
    /// Its algorithm is not accepted.
    #[error("the bearer token is signed with {0:?}, which this server does not accept ([auth.oidc] algorithms)")]
    Algorithm(Algorithm),
    /// No key of the issuer's set has its `kid`.
    #[error("the bearer token's key id `{0}` is not in the identity provider's key set")]
    UnknownKey(String),
    /// The token names no key and the set has more than one.
    #[error("the bearer token names no key id (`kid`) and the identity provider has several keys")]
    NoKeyId,
    /// The key set could not be loaded.
    #[error("the identity provider's keys are unavailable: {0}")]
    Keys(String),
    /// Signature, issuer, audience, expiry or another claim is wrong.
    #[error("the bearer token was refused: {0}; sign in again")]
    Invalid(jsonwebtoken::errors::Error),
    /// No `sub` claim.
    #[error("the bearer token has no subject (`sub`) claim")]
    NoSubject,
    /// No role in the roles claim.
    #[error("the bearer token's `{claim}` claim gives no role of this server; the roles are {}", Role::names(&Role::ALL), claim = .0)]
    NoRole(String),
}

/// Why fetching the key set from its URL failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchFault {
    /// The system's root certificates could not be loaded.
    #[error("no TLS root certificates: {0}")]
    Roots(std::io::Error),
    /// The URL does not parse.
    #[error("not a URL: {0}")]
    Url(hyper::http::uri::InvalidUri),
    /// The request could not be built.
    #[error("{0}")]
    Request(hyper::http::Error),
    /// Connecting or sending failed.
    #[error("{0}")]
    Send(hyper_util::client::legacy::Error),
    /// No answer in time.
    #[error("no answer within {} s", JWKS_FETCH_TIMEOUT.as_secs())]
    NoAnswer,
    /// The answer was not a success.
    #[error("HTTP {0}")]
    Status(hyper::StatusCode),
    /// The body did not arrive in time.
    #[error("the body did not arrive within {} s", JWKS_FETCH_TIMEOUT.as_secs())]
    BodyTimeout,
    /// The body could not be read, or is larger than [`JWKS_SIZE_MAX_BYTES`].
    #[error("{0} (at most {JWKS_SIZE_MAX_BYTES} bytes are read)")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

/// Where the key set comes from; a URL with the client that fetches it.
#[derive(Debug)]
enum KeySource {
    File(std::path::PathBuf),
    Url { url: String, client: HttpsClient },
}

impl KeySource {
    fn describe(&self) -> String {
        match self {
            KeySource::File(p) => p.display().to_string(),
            KeySource::Url { url, .. } => url.clone(),
        }
    }
}

#[derive(Debug)]
struct Keys {
    set: JwkSet,
    loaded: Instant,
}

/// Verifies OIDC bearer tokens against one issuer.
#[derive(Debug)]
pub struct OidcVerifier {
    settings: OidcSettings,
    algorithms: Vec<Algorithm>,
    source: KeySource,
    keys: RwLock<Keys>,
    refetch_min: Duration,
}

fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, OidcSetupError> {
    names
        .iter()
        .map(|name| {
            let algorithm =
                Algorithm::from_str(name).map_err(|_| OidcSetupError::Algorithm(name.clone()))?;
            if matches!(
                algorithm,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            ) {
                return Err(OidcSetupError::Algorithm(name.clone()));
            }
            Ok(algorithm)
        })
        .collect()
}

impl OidcVerifier {
    /// A verifier for `settings`, its key set loaded.
    ///
    /// # Errors
    /// [`OidcSetupError`] for bad settings or a key set that cannot be loaded.
    pub async fn start(settings: OidcSettings) -> Result<OidcVerifier, OidcSetupError> {
        OidcVerifier::start_with(settings, JWKS_REFETCH_MIN).await
    }

    /// As [`OidcVerifier::start`], re-reading the key set for an unknown `kid` at most every
    /// `refetch_min`.
    ///
    /// # Errors
    /// As [`OidcVerifier::start`].
    pub async fn start_with(
        settings: OidcSettings,
        refetch_min: Duration,
    ) -> Result<OidcVerifier, OidcSetupError> {
        if let Some(problem) = settings.problem() {
            return Err(OidcSetupError::Settings(problem));
        }
        let algorithms = parse_algorithms(&settings.algorithms)?;
        let source = match (&settings.jwks_file, &settings.jwks_url) {
            (Some(file), _) => KeySource::File(file.clone()),
            (None, Some(url)) => KeySource::Url {
                client: https_client().map_err(|fault| OidcSetupError::Fetch {
                    url: url.clone(),
                    fault,
                })?,
                url: url.clone(),
            },
            (None, None) => {
                return Err(OidcSetupError::Settings(
                    "[auth.oidc] needs jwks_file or jwks_url".to_owned(),
                ))
            }
        };
        let set = fetch(&source).await?;
        Ok(OidcVerifier {
            settings,
            algorithms,
            source,
            keys: RwLock::new(Keys {
                set,
                loaded: Instant::now(),
            }),
            refetch_min,
        })
    }

    /// The issuer.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    async fn reload(&self, min_age: Duration) -> Result<(), OidcRefused> {
        if self.keys.read().await.loaded.elapsed() < min_age {
            return Ok(());
        }
        let mut keys = self.keys.write().await;
        if keys.loaded.elapsed() < min_age {
            return Ok(());
        }
        match fetch(&self.source).await {
            Ok(set) => {
                *keys = Keys {
                    set,
                    loaded: Instant::now(),
                };
                Ok(())
            }
            Err(e) => {
                // Keep the old keys; try again no sooner than the refetch interval.
                keys.loaded = Instant::now();
                tracing::warn!(error = %e, "could not refresh the identity provider's key set");
                Err(OidcRefused::Keys(e.to_string()))
            }
        }
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, OidcRefused> {
        let _ = self.reload(JWKS_REFRESH).await;
        let lookup = |set: &JwkSet| -> Result<Option<DecodingKey>, OidcRefused> {
            let jwk = match kid {
                Some(kid) => set.find(kid),
                None if set.keys.len() == 1 => set.keys.first(),
                None => return Err(OidcRefused::NoKeyId),
            };
            jwk.map(|k| DecodingKey::from_jwk(k).map_err(|e| OidcRefused::Keys(e.to_string())))
                .transpose()
        };
        if let Some(key) = lookup(&self.keys.read().await.set)? {
            return Ok(key);
        }
        self.reload(self.refetch_min).await?;
        lookup(&self.keys.read().await.set)?
            .ok_or_else(|| OidcRefused::UnknownKey(kid.unwrap_or_default().to_owned()))
    }

    /// The principal of the JWT `token` (`exp` and `nbf` are checked against the system
    /// clock by `jsonwebtoken`).
    ///
    /// # Errors
    /// [`OidcRefused`] with the reason.
    pub async fn verify(&self, token: &str) -> Result<Principal, OidcRefused> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| OidcRefused::Malformed(e.to_string()))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(OidcRefused::Algorithm(header.alg));
        }
        let key = self.key_for(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(OidcRefused::Invalid)?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(OidcRefused::NoSubject)?;
        let subject: String = subject
            .chars()
            .filter(|c| !c.is_control())
            .take(SUBJECT_SIZE_MAX_BYTES)
            .collect();
        let roles = self.roles(&claims);
        if roles.is_empty() {
            return Err(OidcRefused::NoRole(self.settings.roles_claim.clone()));
        }
        Ok(Principal {
            name: format!("oidc:{subject}"),
            roles,
            scope: Vec::new(),
            credential: Credential::Oidc {
                issuer: self.settings.issuer.clone(),
            },
        })
    }

    /// The roles the configured claim gives: each value through `role_map`, else as a role
    /// name; values that are neither are the identity provider's own and count for nothing.
    fn roles(&self, claims: &Value) -> Vec<Role> {
        let mut at = claims;
        for part in self.settings.roles_claim.split('.') {
            match at.get(part) {
                Some(next) => at = next,
                None => return Vec::new(),
            }
        }
        let values: Vec<&str> = match at {
            Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
            Value::String(text) => text.split_whitespace().collect(),
            _ => Vec::new(),
        };
        let roles: BTreeSet<Role> = values
            .into_iter()
            .filter_map(|v| {
                self.settings
                    .role_map
                    .get(v)
                    .copied()
                    .or_else(|| v.parse::<Role>().ok())
            })
            .collect();
        roles.into_iter().collect()
    }
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

/// An HTTP(S) client for the key set: rustls with the ring provider and the system's root
/// certificates.
fn https_client() -> Result<HttpsClient, FetchFault> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .map_err(FetchFault::Roots)?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

async fn get(client: &HttpsClient, url: &str) -> Result<Vec<u8>, FetchFault> {
    use http_body_util::BodyExt;
    let uri: hyper::Uri = url.parse().map_err(FetchFault::Url)?;
    let request = hyper::Request::get(uri)
        .header(hyper::header::ACCEPT, "application/json")
        .body(http_body_util::Empty::new())
        .map_err(FetchFault::Request)?;
    let response = tokio::time::timeout(JWKS_FETCH_TIMEOUT, client.request(request))
        .await
        .map_err(|_| FetchFault::NoAnswer)?
        .map_err(FetchFault::Send)?;
    if !response.status().is_success() {
        return Err(FetchFault::Status(response.status()));
    }
    let body = http_body_util::Limited::new(response.into_body(), JWKS_SIZE_MAX_BYTES);
    let collected = tokio::time::timeout(JWKS_FETCH_TIMEOUT, body.collect())
        .await
        .map_err(|_| FetchFault::BodyTimeout)?
        .map_err(FetchFault::Body)?;
    Ok(collected.to_bytes().to_vec())
}

async fn fetch(source: &KeySource) -> Result<JwkSet, OidcSetupError> {
    let from = source.describe();
    let bytes = match source {
        KeySource::File(path) => {
            tokio::fs::read(path)
                .await
                .map_err(|source| OidcSetupError::ReadFile {
                    path: from.clone(),
                    source,
                })?
        }
        KeySource::Url { url, client } => {
            get(client, url)
                .await
                .map_err(|fault| OidcSetupError::Fetch {
                    url: url.clone(),
                    fault,
                })?
        }
    };
    if bytes.len() > JWKS_SIZE_MAX_BYTES {
        return Err(OidcSetupError::TooLarge(from));
    }
    serde_json::from_slice(&bytes).map_err(|source| OidcSetupError::Parse { from, source })
}
