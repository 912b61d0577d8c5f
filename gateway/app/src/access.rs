//! Who is calling, and the register of API tokens.
//!
//! A [`Principal`] is an authenticated caller: its name (recorded as the actor of every
//! event it writes), its roles and its scope. It comes from an API token checked here
//! ([`TokenVerifier`]), from an OIDC bearer token checked by the HTTP edge, or from local
//! access to the data directory ([`local_principal`]).
//!
//! API tokens read `crm_<token id>_<secret>`: the prefix lets secret scanners find a leaked
//! one, the id (16 hex characters) finds the grant, the secret (256 random bits, 64 hex
//! characters) is never stored: the register ([`crm_domain::access`], stream
//! `access-api-tokens`) keeps its SHA-256, compared in constant time. [`TokenRegister`]
//! grants (the token text is returned once), revokes and lists them; every grant and
//! revocation is an event, so the log shows who had which access when.
//!
//! **Architecture Invariant:** the token text never reaches the log, a log line or an
//! error message; only its id and name do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crm_domain::access::{
    AccessError, AccessEvent, ApiToken, ApiTokenGranted, ApiTokenRevoked, ApiTokens, GrantApiToken,
    Permission, RevokeApiToken, Role, API_TOKENS_MAX, API_TOKENS_STREAM, TOKEN_ID_CHARS,
};
use crm_domain::CodecError;
use crm_eventstore::{
    AnyStore, AppendError, EventId, EventStore, ExpectedVersion, ProposedEvent, ReadError,
    StreamId, StreamVersion,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;
use uuid::Uuid;

use crate::envelope::hex;

/// Prefix of every API token.
pub const TOKEN_PREFIX: &str = "crm_";
/// Random bytes of a token's secret.
pub const SECRET_BYTES: usize = 32;
/// How long the verifier trusts its copy of the register before it checks the stream's
/// version again (a grant or revocation made through this process is seen at once).
pub const REGISTER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Credential {
    /// An API token of the register.
    ApiToken {
        /// The token's id.
        token_id: String,
    },
    /// An OIDC / JWT bearer token.
    Oidc {
        /// The token's issuer.
        issuer: String,
    },
    /// Local access to the data directory (the `crm` verbs), or a loopback server that runs
    /// without authentication.
    Local,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Principal {
    /// Recorded as the actor of the events it writes: `token:<name>`, `oidc:<subject>`,
    /// `local:<user>`.
    pub name: String,
    /// Its roles.
    #[schema(value_type = Vec<String>)]
    pub roles: Vec<Role>,
    /// Stream categories it may write and read streams of; empty means all.
    pub scope: Vec<String>,
    /// How it authenticated.
    pub credential: Credential,
}

impl Principal {
    /// Whether its roles give `permission`.
    #[must_use]
    pub fn can(&self, permission: Permission) -> bool {
        Role::any_gives(&self.roles, permission)
    }

    /// Whether its scope covers streams of `category`.
    #[must_use]
    pub fn covers(&self, category: &str) -> bool {
        self.scope.is_empty() || self.scope.iter().any(|c| c == category)
    }
}

/// The principal of a `crm` verb run with access to the data directory: `local:<user>`
/// (the login name from `USER` or `LOGNAME`), with every role.
#[must_use]
pub fn local_principal() -> Principal {
    let plausible = |u: &String| !u.is_empty() && u.len() <= 64 && !u.chars().any(char::is_control);
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(plausible)
        .or_else(|| os_user().filter(plausible))
        .unwrap_or_else(|| "unknown".to_owned());
    Principal {
        name: format!("local:{user}"),
        roles: vec![Role::Admin],
        scope: Vec::new(),
        credential: Credential::Local,
    }
}

/// The login name of this process's user from `/etc/passwd`, else `uid:<n>` (Unix only).
fn os_user() -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").ok()?.uid();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let name = passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let entry_uid: u32 = fields.nth(1)?.parse().ok()?;
            (entry_uid == uid).then(|| name.to_owned())
        });
        Some(name.unwrap_or_else(|| format!("uid:{uid}")))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Why a grant, revocation or listing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The register refused it (name in use, unknown token, ...).
    #[error(transparent)]
    Refused(#[from] AccessError),
    /// The register could not be read.
    #[error("the token register could not be read: {0}")]
    Read(#[from] ReadError),
    /// The register could not be written.
    #[error("the token register could not be written: {0}")]
    Append(AppendError),
    /// Someone else changed the register at the same moment.
    #[error(
        "another grant or revocation changed the token register at the same moment; run it again"
    )]
    Concurrent,
    /// A stored record of the register cannot be read by this build.
    #[error("record {position} of the token register cannot be read: {source}; is this build older than the one that wrote it?")]
    BadRecord {
        /// Its global position.
        position: u64,
        /// Why.
        source: CodecError,
    },
    /// The register's payload could not be encoded.
    #[error("the grant could not be encoded: {0}")]
    Encode(CodecError),
    /// The operating system gave no random bytes.
    #[error("no random bytes for a token secret: {0}")]
    Random(getrandom::Error),
}

/// A token as `crm auth token list` and the admin route show it (never the secret, never
/// its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenSummary {
    /// Token id.
    pub token_id: String,
    /// Name.
    pub name: String,
    /// Roles.
    #[schema(value_type = Vec<String>)]
    pub roles: Vec<Role>,
    /// Stream categories; empty means all.
    pub scope: Vec<String>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who granted it.
    pub granted_by: String,
    /// When it was granted (the log's record time).
    pub granted_at: DateTime<Utc>,
    /// `live`, `expired` or `revoked`.
    pub status: &'static str,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

/// A token just granted: the text, shown this once, and its summary.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    /// The token text: store it now, it cannot be shown again.
    pub token: String,
    /// The grant.
    pub grant: TokenSummary,
}

/// What a grant asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// Name.
    pub name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Stream categories; empty means all.
    pub scope: Vec<String>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The register as loaded: the fold, the stream version it covers, when each token was
/// granted.
#[derive(Debug, Clone, Default)]
pub struct LoadedRegister {
    /// The fold.
    pub tokens: ApiTokens,
    /// The stream version it covers.
    pub version: StreamVersion,
    granted_at: std::collections::BTreeMap<String, DateTime<Utc>>,
}

impl LoadedRegister {
    /// Summaries of every token at `now`, by id.
    #[must_use]
    pub fn summaries(&self, now: DateTime<Utc>) -> Vec<TokenSummary> {
        self.tokens.iter().map(|t| self.summary(t, now)).collect()
    }

    fn summary(&self, token: &ApiToken, now: DateTime<Utc>) -> TokenSummary {
        let g = &token.grant;
        TokenSummary {
            token_id: g.token_id.clone(),
            name: g.name.clone(),
            roles: g.roles.clone(),
            scope: g.scope.clone(),
            expires_at: g.expires_at,
            granted_by: g.granted_by.clone(),
            granted_at: self
                .granted_at
                .get(&g.token_id)
                .copied()
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            status: if token.revoked.is_some() {
                "revoked"
            } else if token.is_live(now) {
                "live"
            } else {
                "expired"
            },
            revoked_by: token.revoked.as_ref().map(|r| r.revoked_by.clone()),
        }
    }
}

fn register_stream() -> Result<StreamId, RegisterError> {
    StreamId::new(API_TOKENS_STREAM).map_err(|e| {
        RegisterError::Read(ReadError::Storage(format!(
            "the register's stream name is invalid: {e}"
        )))
    })
}

/// Reads the whole register from `store`.
///
/// # Errors
/// [`RegisterError::Read`] or [`RegisterError::BadRecord`].
pub async fn load_register(store: &AnyStore) -> Result<LoadedRegister, RegisterError> {
    let stream = register_stream()?;
    let mut loaded = LoadedRegister::default();
    let page_max = crm_eventstore::limits::READ_PAGE_MAX;
    // Each token is at most a grant and a revocation.
    let records_max = API_TOKENS_MAX.saturating_mul(2);
    let mut read = 0usize;
    loop {
        let from = StreamVersion(loaded.version.0.saturating_add(1));
        let page = store.read_stream(&stream, from, page_max).await?;
        let Some(last) = page.last() else { break };
        loaded.version = last.stream_version;
        for rec in &page {
            let event =
                AccessEvent::from_payload(&rec.event_type, rec.schema_version, &rec.payload)
                    .map_err(|source| RegisterError::BadRecord {
                        position: rec.position.0,
                        source,
                    })?;
            if let AccessEvent::ApiTokenGranted(g) = &event {
                loaded
                    .granted_at
                    .insert(g.token_id.clone(), rec.recorded_at);
            }
            loaded.tokens.apply(&event);
        }
        read = read.saturating_add(page.len());
        if page.len() < page_max || read >= records_max {
            break;
        }
    }
    Ok(loaded)
}

/// The SHA-256 of a token text, lowercase hex.
#[must_use]
pub fn secret_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Splits `crm_<id>_<secret>` into the id, or `None` when the text is not shaped like a
/// token of this server.
#[must_use]
pub fn token_id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == TOKEN_ID_CHARS && secret.len() == SECRET_BYTES * 2).then_some(id)
}

fn random_hex(bytes: usize) -> Result<String, RegisterError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(RegisterError::Random)?;
    Ok(hex(&buf))
}

/// Grants, revokes and lists API tokens in the log.
#[derive(Debug, Clone)]
pub struct TokenRegister {
    store: AnyStore,
}

impl TokenRegister {
    /// The register of `store`.
    #[must_use]
    pub fn new(store: AnyStore) -> Self {
        TokenRegister { store }
    }

    /// Every token.
    ///
    /// # Errors
    /// [`RegisterError`] when the register cannot be read.
    pub async fn list(&self, now: DateTime<Utc>) -> Result<Vec<TokenSummary>, RegisterError> {
        Ok(load_register(&self.store).await?.summaries(now))
    }

    /// Grants a token to `request` on behalf of `by`; the text is in the answer, once.
    ///
    /// # Errors
    /// [`RegisterError::Refused`] with the register's rule, or a storage error.
    pub async fn grant(
        &self,
        request: TokenRequest,
        by: &Principal,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, RegisterError> {
        let loaded = load_register(&self.store).await?;
        let token_id = random_hex(TOKEN_ID_CHARS / 2)?;
        let token = format!("{TOKEN_PREFIX}{token_id}_{}", random_hex(SECRET_BYTES)?);
        let event = loaded.tokens.grant(GrantApiToken {
            token_id: token_id.clone(),
            name: request.name,
            roles: request.roles,
            scope: request.scope,
            expires_at: request.expires_at,
            secret_hash: secret_hash(&token),
            granted_by: by.name.clone(),
        })?;
        self.append(&loaded, &event, by, now).await?;
        let mut after = loaded;
        after.granted_at.insert(token_id.clone(), now);
        after.tokens.apply(&event);
        let grant = after
            .tokens
            .get(&token_id)
            .map(|t| after.summary(t, now))
            .ok_or(RegisterError::Concurrent)?;
        Ok(IssuedToken { token, grant })
    }

    /// Revokes the token with id or name `token`.
    ///
    /// # Errors
    /// [`RegisterError::Refused`] (unknown, already revoked), or a storage error.
    pub async fn revoke(
        &self,
        token: &str,
        reason: Option<String>,
        by: &Principal,
        now: DateTime<Utc>,
    ) -> Result<ApiTokenRevoked, RegisterError> {
        let loaded = load_register(&self.store).await?;
        let event = loaded.tokens.revoke(RevokeApiToken {
            token: token.to_owned(),
            revoked_by: by.name.clone(),
            reason,
        })?;
        self.append(&loaded, &event, by, now).await?;
        match event {
            AccessEvent::ApiTokenRevoked(r) => Ok(r),
            AccessEvent::ApiTokenGranted(_) => Err(RegisterError::Concurrent),
        }
    }

    async fn append(
        &self,
        loaded: &LoadedRegister,
        event: &AccessEvent,
        by: &Principal,
        now: DateTime<Utc>,
    ) -> Result<(), RegisterError> {
        let stream = register_stream()?;
        let expected = if loaded.version == StreamVersion::NONE {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(loaded.version)
        };
        let proposed = ProposedEvent {
            event_id: EventId(Uuid::now_v7()),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            occurred_at: now,
            causation_id: None,
            correlation_id: None,
            actor: by.name.clone(),
            metadata: Vec::new(),
            payload: event.to_payload().map_err(RegisterError::Encode)?,
        };
        self.store
            .append(&stream, expected, vec![proposed])
            .await
            .map(|_| ())
            .map_err(|e| match e {
                AppendError::WrongExpectedVersion { .. } => RegisterError::Concurrent,
                other => RegisterError::Append(other),
            })
    }
}

/// Why a token was not accepted. The messages never quote the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRefused {
    /// Not shaped like a token of this server.
    #[error("the bearer token is not an API token of this server (crm_<id>_<secret>)")]
    Malformed,
    /// No grant has the id, or the secret does not match.
    #[error("the API token is not known to this server; ask an admin for a token")]
    Unknown,
    /// Revoked.
    #[error("API token `{0}` was revoked; ask an admin for a new one")]
    Revoked(String),
    /// Expired.
    #[error("API token `{0}` has expired; ask an admin for a new one")]
    Expired(String),
}

#[derive(Debug, Default)]
struct Cached {
    register: Arc<LoadedRegister>,
    checked: Option<Instant>,
}

/// Checks API tokens against the register, which it keeps in memory and re-reads when the
/// register's stream has moved (checked at most every [`REGISTER_CHECK_INTERVAL`], and at
/// once for an id it does not know).
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    store: AnyStore,
    cached: Arc<RwLock<Cached>>,
    /// SHA-256 of the bootstrap admin token, if one is configured.
    bootstrap: Option<Vec<u8>>,
}

/// Name of the bootstrap admin token's principal (`token:bootstrap-admin`).
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";

/// A fresh token and its SHA-256 (hex), for a bootstrap admin token kept as a secret.
///
/// # Errors
/// [`RegisterError::Random`] when the system gives no random bytes.
pub fn generate_token() -> Result<(String, String), RegisterError> {
    let token = format!(
        "{TOKEN_PREFIX}{}_{}",
        random_hex(TOKEN_ID_CHARS / 2)?,
        random_hex(SECRET_BYTES)?
    );
    let hash = secret_hash(&token);
    Ok((token, hash))
}

impl TokenVerifier {
    /// A verifier over the register of `store`.
    #[must_use]
    pub fn new(store: AnyStore) -> Self {
        TokenVerifier {
            store,
            cached: Arc::new(RwLock::new(Cached::default())),
            bootstrap: None,
        }
    }

    /// Also accepts the token whose SHA-256 is `sha256_hex` as `token:bootstrap-admin` with
    /// the admin role (a first admin for a fresh deployment; remove it once real tokens
    /// exist).
    #[must_use]
    pub fn with_bootstrap(mut self, sha256_hex: Option<&str>) -> Self {
        self.bootstrap = sha256_hex.map(hex_bytes).filter(|h| h.len() == 32);
        self
    }

    /// Whether a bootstrap admin token is configured.
    #[must_use]
    pub fn has_bootstrap(&self) -> bool {
        self.bootstrap.is_some()
    }

    /// The register as last read, re-read first if it may be stale.
    ///
    /// # Errors
    /// [`RegisterError`] when it cannot be read.
    pub async fn register(&self, force: bool) -> Result<Arc<LoadedRegister>, RegisterError> {
        {
            let cached = self.cached.read().await;
            let fresh = cached
                .checked
                .is_some_and(|at| at.elapsed() < REGISTER_CHECK_INTERVAL);
            if fresh && !force {
                return Ok(Arc::clone(&cached.register));
            }
        }
        let stream = register_stream()?;
        let version = self.store.stream_version(&stream).await?;
        let mut cached = self.cached.write().await;
        if cached.checked.is_none() || cached.register.version != version {
            cached.register = Arc::new(load_register(&self.store).await?);
        }
        cached.checked = Some(Instant::now());
        Ok(Arc::clone(&cached.register))
    }

    /// Whether the register holds any token (live or not).
    ///
    /// # Errors
    /// [`RegisterError`] when it cannot be read.
    pub async fn any_granted(&self) -> Result<bool, RegisterError> {
        Ok(!self.register(true).await?.tokens.is_empty())
    }

    /// The principal of `token` at `now`.
    ///
    /// # Errors
    /// `Ok(Err(TokenRefused))` when the token is refused; `Err` when the register cannot
    /// be read.
    pub async fn verify(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<Principal, TokenRefused>, RegisterError> {
        let Some(id) = token_id_of(token) else {
            return Ok(Err(TokenRefused::Malformed));
        };
        let mut register = self.register(false).await?;
        if register.tokens.get(id).is_none() {
            register = self.register(true).await?;
        }
        let given = Sha256::digest(token.as_bytes());
        let Some(grant) = register.tokens.get(id) else {
            if let Some(bootstrap) = &self.bootstrap {
                if bool::from(given.as_slice().ct_eq(bootstrap.as_slice())) {
                    return Ok(Ok(Principal {
                        name: format!("token:{BOOTSTRAP_TOKEN_NAME}"),
                        roles: vec![Role::Admin],
                        scope: Vec::new(),
                        credential: Credential::ApiToken {
                            token_id: id.to_owned(),
                        },
                    }));
                }
            }
            return Ok(Err(TokenRefused::Unknown));
        };
        let stored = hex_bytes(&grant.grant.secret_hash);
        if !bool::from(given.as_slice().ct_eq(stored.as_slice())) {
            return Ok(Err(TokenRefused::Unknown));
        }
        if grant.revoked.is_some() {
            return Ok(Err(TokenRefused::Revoked(grant.grant.name.clone())));
        }
        if !grant.is_live(now) {
            return Ok(Err(TokenRefused::Expired(grant.grant.name.clone())));
        }
        Ok(Ok(principal_of(&grant.grant)))
    }
}

fn principal_of(grant: &ApiTokenGranted) -> Principal {
    Principal {
        name: format!("token:{}", grant.name),
        roles: grant.roles.clone(),
        scope: grant.scope.clone(),
        credential: Credential::ApiToken {
            token_id: grant.token_id.clone(),
        },
    }
}

/// Bytes of a lowercase hex text (a stored hash); malformed text gives bytes no digest
/// equals.
fn hex_bytes(text: &str) -> Vec<u8> {
    crate::envelope::unhex(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_eventstore::MemoryStore;

    fn store() -> AnyStore {
        AnyStore::from(MemoryStore::new())
    }

    fn request(name: &str, roles: &[Role]) -> TokenRequest {
        TokenRequest {
            name: name.into(),
            roles: roles.to_vec(),
            scope: vec![],
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn a_granted_token_verifies_until_revoked_and_never_reaches_the_log() {
        let store = store();
        let register = TokenRegister::new(store.clone());
        let verifier = TokenVerifier::new(store.clone());
        let now = Utc::now();
        let admin = local_principal();
        let issued = register
            .grant(request("etl", &[Role::Writer]), &admin, now)
            .await
            .unwrap();
        assert!(issued.token.starts_with(TOKEN_PREFIX));
        assert_eq!(issued.token.len(), 4 + 16 + 1 + 64);
        let principal = verifier.verify(&issued.token, now).await.unwrap().unwrap();
        assert_eq!(principal.name, "token:etl");
        assert!(principal.can(Permission::SendCommands));
        assert!(!principal.can(Permission::ManageAccess));

        // A wrong secret with the right id is refused.
        let mut forged = issued.token.clone();
        forged.pop();
        forged.push(if issued.token.ends_with('0') {
            '1'
        } else {
            '0'
        });
        assert_eq!(
            verifier.verify(&forged, now).await.unwrap(),
            Err(TokenRefused::Unknown)
        );
        assert_eq!(
            verifier.verify("Bearer nonsense", now).await.unwrap(),
            Err(TokenRefused::Malformed)
        );

        // The log holds the hash, never the text.
        let all = store
            .read_all(crm_eventstore::Position(1), 100)
            .await
            .unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].actor, admin.name);
        let secret = issued.token.rsplit('_').next().unwrap();
        assert!(!String::from_utf8_lossy(&all[0].payload).contains(secret));

        register
            .revoke("etl", Some("rotated".into()), &admin, now)
            .await
            .unwrap();
        // This process revoked it: the verifier sees it at once.
        let seen = verifier.register(true).await.unwrap();
        assert!(seen
            .tokens
            .get(&issued.grant.token_id)
            .unwrap()
            .revoked
            .is_some());
        assert_eq!(
            verifier.verify(&issued.token, now).await.unwrap(),
            Err(TokenRefused::Revoked("etl".into()))
        );
        let listed = register.list(now).await.unwrap();
        assert_eq!(listed[0].status, "revoked");
        assert_eq!(listed[0].revoked_by.as_deref(), Some(admin.name.as_str()));
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_and_listed_as_expired() {
        let store = store();
        let register = TokenRegister::new(store.clone());
        let now = Utc::now();
        let mut req = request("short", &[Role::Viewer]);
        req.expires_at = Some(now + chrono::Duration::seconds(60));
        let issued = register.grant(req, &local_principal(), now).await.unwrap();
        let later = now + chrono::Duration::seconds(61);
        let verifier = TokenVerifier::new(store);
        assert!(verifier.verify(&issued.token, now).await.unwrap().is_ok());
        assert_eq!(
            verifier.verify(&issued.token, later).await.unwrap(),
            Err(TokenRefused::Expired("short".into()))
        );
        assert_eq!(register.list(later).await.unwrap()[0].status, "expired");
    }
}
