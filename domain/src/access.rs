//! Access: who may do what. The roles a credential can hold, the permissions each role
//! gives (one table, [`Role::permissions`], read by every edge that checks a caller), and
//! the events that record API-token grants and revocations, so an auditor can see who had
//! which access when.
//!
//! API tokens live in one stream, [`API_TOKENS_STREAM`] (`access-api-tokens`), like a
//! register: [`ApiTokenGranted`] records a token (its id, name, roles, scope, expiry and the
//! hash of its secret; never the secret), [`ApiTokenRevoked`] ends it. [`ApiTokens`] folds
//! the stream and decides new grants and revocations; it is pure: the caller brings the
//! token id, the secret's hash and the principal, and appends with the stream version it
//! loaded, so two concurrent grants of one name cannot both succeed.
//!
//! Like the metric definitions ([`crate::definitions`]) these are not an aggregate of the
//! command route: only the access edges (the `crm auth` verbs and the admin routes) write
//! them.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::CodecError;
use crate::definitions::{check_stored, payload_error};
use crate::registry::nearest_name;
use crate::upcast::UpcastError;

/// Stream category of access records.
pub const ACCESS_CATEGORY: &str = "access";
/// The stream holding every API-token grant and revocation.
pub const API_TOKENS_STREAM: &str = "access-api-tokens";
/// Event type of a token grant.
pub const API_TOKEN_GRANTED: &str = "ApiTokenGranted";
/// Current schema version of [`API_TOKEN_GRANTED`].
pub const API_TOKEN_GRANTED_VERSION: u16 = 1;
/// Event type of a token revocation.
pub const API_TOKEN_REVOKED: &str = "ApiTokenRevoked";
/// Current schema version of [`API_TOKEN_REVOKED`].
pub const API_TOKEN_REVOKED_VERSION: u16 = 1;

/// Access event types with their current schema versions.
pub const ACCESS_EVENT_TYPES: &[(&str, u16)] = &[
    (API_TOKEN_GRANTED, API_TOKEN_GRANTED_VERSION),
    (API_TOKEN_REVOKED, API_TOKEN_REVOKED_VERSION),
];

/// Tokens the register holds, revoked ones included (a grant beyond is refused).
pub const API_TOKENS_MAX: usize = 10_000;
/// Longest token name, in bytes.
pub const TOKEN_NAME_SIZE_MAX_BYTES: usize = 64;
/// Characters of a token id (lowercase hex).
pub const TOKEN_ID_CHARS: usize = 16;
/// Characters of a secret's hash (SHA-256, lowercase hex).
pub const SECRET_HASH_CHARS: usize = 64;
/// Longest revocation reason, in bytes.
pub const REASON_SIZE_MAX_BYTES: usize = 256;

/// What a caller may do. Each route or verb of an edge requires exactly one permission;
/// [`Role::permissions`] says which roles give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Send domain commands.
    SendCommands,
    /// Name someone else as the one a command is sent for (`X-Actor`), recorded beside the
    /// caller, never instead of it.
    ActOnBehalf,
    /// Read streams and the global log.
    ReadLog,
    /// See personal fields unmasked in what the log returns.
    ReadPersonalData,
    /// Follow the live feed of events.
    SubscribeFeed,
    /// Read the read models (pipeline, churn, lifetime value, SLA).
    ReadModels,
    /// List and evaluate metrics, compare versions, diff report dates.
    ReadMetrics,
    /// Explain a metric: every event counted or left out, and why.
    ExplainMetrics,
    /// Publish a new version of a metric definition.
    DefineMetrics,
    /// Read what the API offers: aggregates, commands, the API document, who one is.
    Describe,
    /// Read the server's operational metrics.
    Monitor,
    /// Grant and revoke access.
    ManageAccess,
    /// Erase a data subject's personal data for good (destroys their key).
    ErasePersonalData,
    /// See the scorecard nodes one is named a viewer of, and those below them, with their
    /// figures and explanations.
    ReadOwnScorecards,
    /// See every node of every scorecard.
    ReadScorecards,
    /// Publish a new version of a scorecard.
    DefineScorecards,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 16] = [
        Permission::SendCommands,
        Permission::ActOnBehalf,
        Permission::ReadLog,
        Permission::ReadPersonalData,
        Permission::SubscribeFeed,
        Permission::ReadModels,
        Permission::ReadMetrics,
        Permission::ExplainMetrics,
        Permission::DefineMetrics,
        Permission::Describe,
        Permission::Monitor,
        Permission::ManageAccess,
        Permission::ErasePersonalData,
        Permission::ReadOwnScorecards,
        Permission::ReadScorecards,
        Permission::DefineScorecards,
    ];

    /// Stable name, as in the API's problem documents.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Permission::SendCommands => "send_commands",
            Permission::ActOnBehalf => "act_on_behalf",
            Permission::ReadLog => "read_log",
            Permission::ReadPersonalData => "read_personal_data",
            Permission::SubscribeFeed => "subscribe_feed",
            Permission::ReadModels => "read_models",
            Permission::ReadMetrics => "read_metrics",
            Permission::ExplainMetrics => "explain_metrics",
            Permission::DefineMetrics => "define_metrics",
            Permission::Describe => "describe",
            Permission::Monitor => "monitor",
            Permission::ManageAccess => "manage_access",
            Permission::ErasePersonalData => "erase_personal_data",
            Permission::ReadOwnScorecards => "read_own_scorecards",
            Permission::ReadScorecards => "read_scorecards",
            Permission::DefineScorecards => "define_scorecards",
        }
    }

    /// The roles that give this permission.
    #[must_use]
    pub fn roles(self) -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|r| r.permissions().contains(&self))
            .collect()
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A role a credential holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including grants, erasure and configuration.
    Admin,
    /// Commands (and the reads a writing service needs).
    Writer,
    /// Metrics: evaluate, compare, explain, diff, define; read models.
    Analyst,
    /// Reads the log and the feed, explains metrics; personal fields masked.
    Auditor,
    /// The live feed.
    Subscriber,
    /// Read models and metric figures.
    Viewer,
    /// The server's operational metrics (a scraper).
    Monitor,
    /// A person of the scorecard cascade: the nodes they are named a viewer of and those
    /// below, with drill-down to what the figures counted.
    Member,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 8] = [
        Role::Admin,
        Role::Writer,
        Role::Analyst,
        Role::Auditor,
        Role::Subscriber,
        Role::Viewer,
        Role::Monitor,
        Role::Member,
    ];

    /// Stable name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Writer => "writer",
            Role::Analyst => "analyst",
            Role::Auditor => "auditor",
            Role::Subscriber => "subscriber",
            Role::Viewer => "viewer",
            Role::Monitor => "monitor",
            Role::Member => "member",
        }
    }

    /// The permissions of the role: the one table of who may do what.
    #[must_use]
    pub fn permissions(self) -> &'static [Permission] {
        use Permission as P;
        match self {
            Role::Admin => &Permission::ALL,
            Role::Writer => &[
                P::SendCommands,
                P::ActOnBehalf,
                P::ReadLog,
                P::ReadPersonalData,
                P::Describe,
            ],
            Role::Analyst => &[
                P::ReadModels,
                P::ReadMetrics,
                P::ExplainMetrics,
                P::DefineMetrics,
                P::Describe,
                P::ReadOwnScorecards,
                P::ReadScorecards,
                P::DefineScorecards,
            ],
            Role::Auditor => &[
                P::ReadLog,
                P::SubscribeFeed,
                P::ReadMetrics,
                P::ExplainMetrics,
                P::Describe,
                P::ReadOwnScorecards,
                P::ReadScorecards,
            ],
            Role::Subscriber => &[P::SubscribeFeed, P::Describe],
            Role::Viewer => &[
                P::ReadModels,
                P::ReadMetrics,
                P::Describe,
                P::ReadOwnScorecards,
                P::ReadScorecards,
            ],
            Role::Monitor => &[P::Monitor, P::Describe],
            Role::Member => &[P::ReadOwnScorecards, P::Describe],
        }
    }

    /// The names of `roles`, separated by `, `.
    #[must_use]
    pub fn names(roles: &[Role]) -> String {
        roles
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether any of `roles` gives `permission`.
    #[must_use]
    pub fn any_gives(roles: &[Role], permission: Permission) -> bool {
        roles.iter().any(|r| r.permissions().contains(&permission))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A role name that is not a role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not a role{}; the roles are {}", .nearest.as_ref().map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default(), Role::names(&Role::ALL))]
pub struct UnknownRole {
    /// What was given.
    pub given: String,
    /// The closest role name.
    pub nearest: Option<String>,
}

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        let given = s.trim().to_ascii_lowercase();
        Role::ALL
            .into_iter()
            .find(|r| r.name() == given)
            .ok_or_else(|| UnknownRole {
                nearest: nearest_name(&given, Role::ALL.map(Role::name)),
                given: s.to_owned(),
            })
    }
}

/// Payload of `ApiTokenGranted`: a token came into being. The secret itself is never
/// recorded, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenGranted {
    /// Token id: [`TOKEN_ID_CHARS`] lowercase hex characters, also part of the token text.
    pub token_id: String,
    /// Unique among live tokens: what logs and events name the caller by.
    pub name: String,
    /// Roles, at least one, sorted, without repeats.
    pub roles: Vec<Role>,
    /// Stream categories the token may write and read streams of; empty means all.
    pub scope: Vec<String>,
    /// After this instant the token is refused.
    pub expires_at: Option<DateTime<Utc>>,
    /// SHA-256 of the secret, lowercase hex.
    pub secret_hash: String,
    /// The principal who granted it.
    pub granted_by: String,
}

/// Payload of `ApiTokenRevoked`: a token ends, for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenRevoked {
    /// The token.
    pub token_id: String,
    /// The principal who revoked it.
    pub revoked_by: String,
    /// Why, if given.
    pub reason: Option<String>,
}

/// Any access event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessEvent {
    /// A token was granted.
    ApiTokenGranted(ApiTokenGranted),
    /// A token was revoked.
    ApiTokenRevoked(ApiTokenRevoked),
}

impl AccessEvent {
    /// Stable stored type name.
    #[must_use]
    pub fn event_type(&self) -> &'static str {
        match self {
            AccessEvent::ApiTokenGranted(_) => API_TOKEN_GRANTED,
            AccessEvent::ApiTokenRevoked(_) => API_TOKEN_REVOKED,
        }
    }

    /// Current schema version of this event's type.
    #[must_use]
    pub fn schema_version(&self) -> u16 {
        match self {
            AccessEvent::ApiTokenGranted(_) => API_TOKEN_GRANTED_VERSION,
            AccessEvent::ApiTokenRevoked(_) => API_TOKEN_REVOKED_VERSION,
        }
    }

    /// JSON bytes of the payload only; type and version travel in the envelope.
    ///
    /// # Errors
    /// [`CodecError::Encode`] if serialization fails.
    pub fn to_payload(&self) -> Result<Vec<u8>, CodecError> {
        let json = match self {
            AccessEvent::ApiTokenGranted(e) => serde_json::to_vec(e),
            AccessEvent::ApiTokenRevoked(e) => serde_json::to_vec(e),
        };
        json.map_err(|source| CodecError::Encode {
            event_type: self.event_type(),
            source,
        })
    }

    /// Decodes a stored payload of an access event.
    ///
    /// # Errors
    /// An unknown type, a schema version this build does not know, an oversized payload, or
    /// a payload that does not match the event's struct: see [`CodecError`].
    pub fn from_payload(
        event_type: &str,
        schema_version: u16,
        payload: &[u8],
    ) -> Result<AccessEvent, CodecError> {
        let Some(current) = ACCESS_EVENT_TYPES
            .iter()
            .find(|(t, _)| *t == event_type)
            .map(|(_, v)| *v)
        else {
            return Err(UpcastError::UnknownEventType {
                event_type: event_type.to_owned(),
            }
            .into());
        };
        check_stored(event_type, schema_version, current, payload.len())?;
        let decoded = if event_type == API_TOKEN_GRANTED {
            serde_json::from_slice(payload).map(AccessEvent::ApiTokenGranted)
        } else {
            serde_json::from_slice(payload).map(AccessEvent::ApiTokenRevoked)
        };
        decoded.map_err(|source| payload_error(event_type, schema_version, source))
    }
}

/// Grant a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantApiToken {
    /// A fresh random id ([`TOKEN_ID_CHARS`] lowercase hex).
    pub token_id: String,
    /// Name: 1..=[`TOKEN_NAME_SIZE_MAX_BYTES`] of `A-Z a-z 0-9 . _ - : @`.
    pub name: String,
    /// At least one role.
    pub roles: Vec<Role>,
    /// Stream categories; empty means all.
    pub scope: Vec<String>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// SHA-256 of the secret, lowercase hex.
    pub secret_hash: String,
    /// Who grants it.
    pub granted_by: String,
}

/// Revoke a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeApiToken {
    /// The token's id or its name.
    pub token: String,
    /// Who revokes it.
    pub revoked_by: String,
    /// Why.
    pub reason: Option<String>,
}

/// Why a grant or revocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A live token already has the name.
    #[error("a live token is already named `{name}` (id {token_id}); revoke it first or choose another name")]
    NameTaken {
        /// The name.
        name: String,
        /// The live token holding it.
        token_id: String,
    },
    /// The name has characters or a length a name may not have.
    #[error(
        "token name `{0}` is not 1..={TOKEN_NAME_SIZE_MAX_BYTES} of letters, digits and . _ - : @"
    )]
    BadName(String),
    /// No role was given.
    #[error("a token needs at least one role; the roles are {}", Role::names(&Role::ALL))]
    NoRoles,
    /// The token id is not what a generated id looks like.
    #[error("token id `{0}` is not {TOKEN_ID_CHARS} lowercase hex characters")]
    BadTokenId(String),
    /// The id is already taken (a generated id repeated: generate another).
    #[error("token id `{0}` is already taken")]
    TokenIdTaken(String),
    /// The secret hash is not a SHA-256 in lowercase hex.
    #[error("the secret hash is not {SECRET_HASH_CHARS} lowercase hex characters")]
    BadSecretHash,
    /// A scope entry is not a stream category name.
    #[error("scope entry `{0}` is not a stream category (lowercase letters, digits and _)")]
    BadScope(String),
    /// The register is full.
    #[error("the register holds {API_TOKENS_MAX} tokens, the limit; no more can be granted")]
    Full,
    /// No token has that id or name.
    #[error("no token has the id or name `{0}`; `crm auth token list` lists them")]
    UnknownToken(String),
    /// The token is already revoked.
    #[error("token `{name}` (id {token_id}) is already revoked")]
    AlreadyRevoked {
        /// Its name.
        name: String,
        /// Its id.
        token_id: String,
    },
    /// The reason is too long.
    #[error("the reason is {0} bytes, the limit is {REASON_SIZE_MAX_BYTES}")]
    ReasonTooLong(usize),
}

/// One token of the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// How it was granted.
    pub grant: ApiTokenGranted,
    /// How it ended, if it did.
    pub revoked: Option<ApiTokenRevoked>,
}

impl ApiToken {
    /// True when neither revoked nor expired at `now`.
    #[must_use]
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked.is_none() && self.grant.expires_at.is_none_or(|at| now < at)
    }
}

/// The register of API tokens: the fold of [`API_TOKENS_STREAM`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiTokens {
    tokens: BTreeMap<String, ApiToken>,
}

fn is_hex(text: &str, chars: usize) -> bool {
    text.len() == chars
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ApiTokens {
    /// Folds one event. A revocation of an unknown token changes nothing.
    pub fn apply(&mut self, event: &AccessEvent) {
        match event {
            AccessEvent::ApiTokenGranted(g) => {
                self.tokens.insert(
                    g.token_id.clone(),
                    ApiToken {
                        grant: g.clone(),
                        revoked: None,
                    },
                );
            }
            AccessEvent::ApiTokenRevoked(r) => {
                if let Some(token) = self.tokens.get_mut(&r.token_id) {
                    token.revoked = Some(r.clone());
                }
            }
        }
    }

    /// The token with id `token_id`.
    #[must_use]
    pub fn get(&self, token_id: &str) -> Option<&ApiToken> {
        self.tokens.get(token_id)
    }

    /// Every token, by id.
    pub fn iter(&self) -> impl Iterator<Item = &ApiToken> {
        self.tokens.values()
    }

    /// Number of tokens, revoked ones included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when no token was ever granted.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The unrevoked token named `name` (expired ones included: a name stays taken until
    /// its token is revoked).
    #[must_use]
    pub fn unrevoked_named(&self, name: &str) -> Option<&ApiToken> {
        self.tokens
            .values()
            .find(|t| t.revoked.is_none() && t.grant.name == name)
    }

    /// Decides a grant.
    ///
    /// # Errors
    /// [`AccessError`]: a bad name, id, hash or scope, no role, a name in use, a full
    /// register.
    pub fn grant(&self, command: GrantApiToken) -> Result<AccessEvent, AccessError> {
        let name_ok = !command.name.is_empty()
            && command.name.len() <= TOKEN_NAME_SIZE_MAX_BYTES
            && command
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_:@".contains(c));
        if !name_ok {
            return Err(AccessError::BadName(command.name));
        }
        if !is_hex(&command.token_id, TOKEN_ID_CHARS) {
            return Err(AccessError::BadTokenId(command.token_id));
        }
        if !is_hex(&command.secret_hash, SECRET_HASH_CHARS) {
            return Err(AccessError::BadSecretHash);
        }
        if command.roles.is_empty() {
            return Err(AccessError::NoRoles);
        }
        if let Some(bad) = command.scope.iter().find(|c| {
            c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }) {
            return Err(AccessError::BadScope(bad.clone()));
        }
        if self.tokens.contains_key(&command.token_id) {
            return Err(AccessError::TokenIdTaken(command.token_id));
        }
        if let Some(live) = self.unrevoked_named(&command.name) {
            return Err(AccessError::NameTaken {
                name: command.name,
                token_id: live.grant.token_id.clone(),
            });
        }
        if self.tokens.len() >= API_TOKENS_MAX {
            return Err(AccessError::Full);
        }
        let mut roles = command.roles;
        roles.sort_unstable();
        roles.dedup();
        let mut scope = command.scope;
        scope.sort_unstable();
        scope.dedup();
        Ok(AccessEvent::ApiTokenGranted(ApiTokenGranted {
            token_id: command.token_id,
            name: command.name,
            roles,
            scope,
            expires_at: command.expires_at,
            secret_hash: command.secret_hash,
            granted_by: command.granted_by,
        }))
    }

    /// Decides a revocation of the token with that id, or else the unrevoked one of that
    /// name.
    ///
    /// # Errors
    /// [`AccessError::UnknownToken`], [`AccessError::AlreadyRevoked`],
    /// [`AccessError::ReasonTooLong`].
    pub fn revoke(&self, command: RevokeApiToken) -> Result<AccessEvent, AccessError> {
        if let Some(reason) = &command.reason {
            if reason.len() > REASON_SIZE_MAX_BYTES {
                return Err(AccessError::ReasonTooLong(reason.len()));
            }
        }
        let token = self
            .tokens
            .get(&command.token)
            .or_else(|| self.unrevoked_named(&command.token))
            .ok_or_else(|| AccessError::UnknownToken(command.token.clone()))?;
        if token.revoked.is_some() {
            return Err(AccessError::AlreadyRevoked {
                name: token.grant.name.clone(),
                token_id: token.grant.token_id.clone(),
            });
        }
        Ok(AccessEvent::ApiTokenRevoked(ApiTokenRevoked {
            token_id: token.grant.token_id.clone(),
            revoked_by: command.revoked_by,
            reason: command.reason,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: &str, name: &str) -> GrantApiToken {
        GrantApiToken {
            token_id: id.into(),
            name: name.into(),
            roles: vec![Role::Writer, Role::Admin, Role::Writer],
            scope: vec![],
            expires_at: None,
            secret_hash: "a".repeat(SECRET_HASH_CHARS),
            granted_by: "local:root".into(),
        }
    }

    fn given(events: &[AccessEvent]) -> ApiTokens {
        let mut tokens = ApiTokens::default();
        for e in events {
            tokens.apply(e);
        }
        tokens
    }

    #[test]
    fn a_grant_records_sorted_roles_and_round_trips() {
        let event = ApiTokens::default()
            .grant(grant("0123456789abcdef", "etl"))
            .unwrap();
        let AccessEvent::ApiTokenGranted(g) = &event else {
            panic!("not a grant: {event:?}");
        };
        assert_eq!(g.roles, vec![Role::Admin, Role::Writer]);
        let bytes = event.to_payload().unwrap();
        assert_eq!(
            AccessEvent::from_payload(API_TOKEN_GRANTED, 1, &bytes).unwrap(),
            event
        );
        assert!(matches!(
            AccessEvent::from_payload(API_TOKEN_REVOKED, 1, &bytes),
            Err(CodecError::InvalidPayload { .. })
        ));
        assert!(matches!(
            AccessEvent::from_payload(API_TOKEN_GRANTED, 2, &bytes),
            Err(CodecError::Upcast(UpcastError::FromTheFuture { .. }))
        ));
    }

    #[test]
    fn a_live_name_cannot_be_granted_twice_but_a_revoked_one_can() {
        let first = ApiTokens::default()
            .grant(grant("0123456789abcdef", "etl"))
            .unwrap();
        let tokens = given(&[first]);
        assert!(matches!(
            tokens.grant(grant("1123456789abcdef", "etl")),
            Err(AccessError::NameTaken { .. })
        ));
        assert!(matches!(
            tokens.grant(grant("0123456789abcdef", "other")),
            Err(AccessError::TokenIdTaken(_))
        ));
        let revoked = tokens
            .revoke(RevokeApiToken {
                token: "etl".into(),
                revoked_by: "local:root".into(),
                reason: Some("rotated".into()),
            })
            .unwrap();
        let mut tokens = tokens;
        tokens.apply(&revoked);
        assert!(tokens.grant(grant("1123456789abcdef", "etl")).is_ok());
        assert!(matches!(
            tokens.revoke(RevokeApiToken {
                token: "0123456789abcdef".into(),
                revoked_by: "x".into(),
                reason: None
            }),
            Err(AccessError::AlreadyRevoked { .. })
        ));
        assert!(matches!(
            tokens.revoke(RevokeApiToken {
                token: "nobody".into(),
                revoked_by: "x".into(),
                reason: None
            }),
            Err(AccessError::UnknownToken(_))
        ));
    }

    #[test]
    fn bad_grants_are_refused_with_the_rule() {
        let tokens = ApiTokens::default();
        let mut bad = grant("0123456789abcdef", "has space");
        assert!(matches!(
            tokens.grant(bad.clone()),
            Err(AccessError::BadName(_))
        ));
        bad.name = "ok".into();
        bad.roles.clear();
        assert_eq!(tokens.grant(bad.clone()), Err(AccessError::NoRoles));
        bad.roles = vec![Role::Viewer];
        bad.token_id = "XYZ".into();
        assert!(matches!(
            tokens.grant(bad.clone()),
            Err(AccessError::BadTokenId(_))
        ));
        bad.token_id = "0123456789abcdef".into();
        bad.secret_hash = "secret".into();
        assert_eq!(tokens.grant(bad.clone()), Err(AccessError::BadSecretHash));
        bad.secret_hash = "b".repeat(SECRET_HASH_CHARS);
        bad.scope = vec!["Lead".into()];
        assert!(matches!(tokens.grant(bad), Err(AccessError::BadScope(_))));
    }

    #[test]
    fn expiry_ends_a_token() {
        let mut g = grant("0123456789abcdef", "etl");
        let at = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        g.expires_at = Some(at);
        let tokens = given(&[ApiTokens::default().grant(g).unwrap()]);
        let token = tokens.get("0123456789abcdef").unwrap();
        assert!(token.is_live(at - chrono::Duration::seconds(1)));
        assert!(!token.is_live(at));
    }

    #[test]
    fn the_permission_table_is_consistent() {
        for p in Permission::ALL {
            assert!(Role::Admin.permissions().contains(&p), "admin lacks {p}");
            assert!(!p.roles().is_empty());
        }
        for r in Role::ALL {
            assert!(r.permissions().contains(&Permission::Describe), "{r}");
            assert_eq!(r.name().parse::<Role>().unwrap(), r);
        }
        assert!(!Role::any_gives(
            &[Role::Auditor],
            Permission::ReadPersonalData
        ));
        assert!(!Role::any_gives(
            &[Role::Viewer, Role::Subscriber],
            Permission::SendCommands
        ));
        let e = "wrtier".parse::<Role>().unwrap_err();
        assert_eq!(e.nearest.as_deref(), Some("writer"));
        assert!(e.to_string().contains("did you mean `writer`"));
    }
}
