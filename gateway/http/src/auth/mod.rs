//! Who may call what: one table of routes and the permission each requires ([`ROUTES`]),
//! and one middleware ([`authenticate`]) in front of every route that finds the caller's
//! [`Principal`] and checks the permission. The roles behind each permission are the
//! domain's table ([`crm_domain::access::Role::permissions`]).
//!
//! - No credential: 401 with `WWW-Authenticate: Bearer`, unless the route is public
//!   (`/healthz`, `/readyz`, and what `[auth] public` lists), or the server runs without
//!   authentication (loopback only; the caller is then `local:loopback` with every role).
//! - `Authorization: Bearer crm_...`: an API token of the register.
//! - `Authorization: Bearer <JWT>`: an OIDC token, when `[auth.oidc]` is configured.
//! - A valid credential without the permission: 403 naming the permission and the roles
//!   that give it.
//!
//! **Architecture Invariant:** a route missing from [`ROUTES`] answers 403 to everyone
//! (deny by default); a test checks every route of the API document has an entry.
//!
//! **Architecture Invariant:** handlers take the caller from the request's [`Principal`]
//! extension, which only this middleware sets; the recorded actor is the principal's name.

pub mod oidc;
pub mod tokens;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use crm_app::access::{Credential, Principal, TokenVerifier};
use crm_app::config::AuthSettings;
use crm_domain::access::{Permission, Role};

use super::problem::ApiError;
use super::AppState;
use oidc::OidcVerifier;

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a credential (the probes).
    Public,
    /// A caller whose roles give the permission.
    Requires(Permission),
}

/// Every route of the API with what it requires: the one place where routes declare their
/// permission. Paths are the router's templates, as in the API document.
pub const ROUTES: &[(&str, &str, Access)] = {
    use Access::{Public, Requires};
    use Permission as P;
    &[
        (
            "POST",
            "/v1/aggregates/{category}/commands",
            Requires(P::SendCommands),
        ),
        ("GET", "/v1/aggregates", Requires(P::Describe)),
        ("GET", "/v1/schema", Requires(P::Describe)),
        ("GET", "/v1/schema/{type}", Requires(P::Describe)),
        ("GET", "/v1/streams/{stream_id}", Requires(P::ReadLog)),
        ("GET", "/v1/events", Requires(P::ReadLog)),
        ("GET", "/v1/feed", Requires(P::SubscribeFeed)),
        ("GET", "/v1/read-models", Requires(P::ReadModels)),
        ("GET", "/v1/read-models/pipeline", Requires(P::ReadModels)),
        ("GET", "/v1/read-models/churn", Requires(P::ReadModels)),
        (
            "GET",
            "/v1/read-models/lifetime-value",
            Requires(P::ReadModels),
        ),
        ("GET", "/v1/read-models/sla", Requires(P::ReadModels)),
        ("GET", "/v1/metrics", Requires(P::ReadMetrics)),
        ("POST", "/v1/metrics", Requires(P::DefineMetrics)),
        ("GET", "/v1/metrics/{id}", Requires(P::ReadMetrics)),
        ("GET", "/v1/metrics/{id}/compare", Requires(P::ReadMetrics)),
        (
            "GET",
            "/v1/metrics/{id}/explain",
            Requires(P::ExplainMetrics),
        ),
        ("GET", "/v1/metrics/{id}/diff", Requires(P::ReadMetrics)),
        ("GET", "/v1/auth/whoami", Requires(P::Describe)),
        ("GET", "/v1/auth/tokens", Requires(P::ManageAccess)),
        ("POST", "/v1/auth/tokens", Requires(P::ManageAccess)),
        (
            "DELETE",
            "/v1/auth/tokens/{token}",
            Requires(P::ManageAccess),
        ),
        (
            "POST",
            "/v1/subjects/{subject}/erasure",
            Requires(P::ErasePersonalData),
        ),
        ("GET", "/v1/scorecards", Requires(P::ReadOwnScorecards)),
        ("POST", "/v1/scorecards", Requires(P::DefineScorecards)),
        ("GET", "/v1/scorecards/{id}", Requires(P::ReadOwnScorecards)),
        (
            "GET",
            "/v1/scorecards/{id}/explain",
            Requires(P::ReadOwnScorecards),
        ),
        ("GET", "/v1/checkpoints", Requires(P::ReadLog)),
        ("POST", "/v1/checkpoints", Requires(P::ReadLog)),
        ("GET", "/", Public),
        ("GET", "/cockpit/{asset}", Public),
        ("GET", "/healthz", Public),
        ("GET", "/readyz", Public),
        ("GET", "/metrics", Requires(P::Monitor)),
        ("GET", "/openapi.json", Requires(P::Describe)),
    ]
};

/// What `method path` requires, `None` for a route the table does not list.
#[must_use]
pub fn access(method: &Method, path: &str) -> Option<Access> {
    ROUTES
        .iter()
        .find(|(m, p, _)| *p == path && method.as_str() == *m)
        .map(|(_, _, a)| *a)
}

/// Name of the caller when the server runs without authentication.
pub const OPEN_PRINCIPAL: &str = "local:loopback";

/// How this server authenticates.
#[derive(Debug, Clone, Default)]
pub struct AuthPolicy {
    /// Whether a credential is needed (else the caller without one is [`OPEN_PRINCIPAL`]).
    pub required: bool,
    /// `[auth]` as configured (public routes).
    pub settings: AuthSettings,
    /// The OIDC verifier, when configured.
    pub oidc: Option<Arc<OidcVerifier>>,
}

impl AuthPolicy {
    /// No authentication: every caller is [`OPEN_PRINCIPAL`] (for a loopback server and for
    /// tests of other concerns).
    #[must_use]
    pub fn open() -> Self {
        AuthPolicy::default()
    }

    /// Credentials required, API tokens only.
    #[must_use]
    pub fn tokens_required() -> Self {
        AuthPolicy {
            required: true,
            ..AuthPolicy::default()
        }
    }
}

/// The principal of a server without authentication.
#[must_use]
pub fn open_principal() -> Principal {
    Principal {
        name: OPEN_PRINCIPAL.to_owned(),
        roles: vec![Role::Admin],
        scope: Vec::new(),
        credential: Credential::Local,
    }
}

/// Name of a caller without a credential on a route made public by `[auth] public`.
pub const ANONYMOUS_PRINCIPAL: &str = "anonymous";

/// The caller without a credential on a route made public by configuration: no role.
#[must_use]
pub fn anonymous_principal() -> Principal {
    Principal {
        name: ANONYMOUS_PRINCIPAL.to_owned(),
        roles: Vec::new(),
        scope: Vec::new(),
        credential: Credential::Local,
    }
}

/// What the middleware needs.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// The policy.
    pub policy: AuthPolicy,
    /// API tokens.
    pub tokens: TokenVerifier,
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::Unauthenticated(
            "the Authorization header is not visible ASCII; send `Authorization: Bearer <token>`"
                .to_owned(),
        )
    })?;
    let (scheme, credential) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
        return Err(ApiError::Unauthenticated(
            "the Authorization header is not a bearer token; send `Authorization: Bearer <token>`"
                .to_owned(),
        ));
    }
    Ok(Some(credential.trim()))
}

impl Authenticator {
    /// The caller of a request with `headers`.
    ///
    /// # Errors
    /// [`ApiError::Unauthenticated`] without a valid credential where one is needed;
    /// [`ApiError::Unavailable`] when the token register cannot be read now;
    /// [`ApiError::LogDamaged`] when it meets a damaged record.
    pub async fn principal(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let Some(credential) = bearer(headers)? else {
            if self.policy.required {
                return Err(ApiError::Unauthenticated(
                    "this route needs a credential; send `Authorization: Bearer <token>` (an API token from `crm auth token create`, or your identity provider's token)".to_owned(),
                ));
            }
            return Ok(open_principal());
        };
        if credential.starts_with(crm_app::access::TOKEN_PREFIX) {
            return self
                .tokens
                .verify(credential, Utc::now())
                .await
                .map_err(|e| match e {
                    crm_app::access::RegisterError::Read(read) => {
                        match crate::damage::DamageMet::of_read(&read) {
                            Some(met) => ApiError::LogDamaged(met),
                            None => ApiError::Unavailable(format!(
                                "the token register could not be read: {read}; retry shortly"
                            )),
                        }
                    }
                    e => ApiError::Unavailable(format!("{e}; retry shortly")),
                })?
                .map_err(|refused| ApiError::Unauthenticated(refused.to_string()));
        }
        match &self.policy.oidc {
            Some(oidc) => oidc
                .verify(credential)
                .await
                .map_err(|e| match e {
                    // Who the caller is was proven; it just has no role here.
                    oidc::OidcRefused::NoRole(_) => ApiError::Forbidden(e.to_string()),
                    _ => ApiError::Unauthenticated(e.to_string()),
                }),
            None => Err(ApiError::Unauthenticated(
                "the bearer token is not an API token of this server (crm_...), and no identity provider is configured ([auth.oidc])".to_owned(),
            )),
        }
    }
}

/// Middleware: finds the route's required permission, authenticates the caller, checks
/// the permission, and hands the [`Principal`] to the handler as a request extension.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(path) = path else {
        return next.run(request).await;
    };
    let Some(access) = access(request.method(), &path) else {
        crm_http_denied("undeclared");
        return ApiError::Forbidden(format!(
            "{} {path} declares no permission, so nobody may call it; this is a server bug, please report it",
            request.method()
        ))
        .into_response();
    };
    let permission = match access {
        Access::Public => return next.run(request).await,
        Access::Requires(_) if state.auth.policy.settings.is_public(&path) => {
            // Made public by configuration: a caller without a credential is anonymous,
            // with no role (personal fields stay masked); one with a credential is itself.
            let principal = if request.headers().contains_key(header::AUTHORIZATION) {
                match state.auth.principal(request.headers()).await {
                    Ok(principal) => principal,
                    Err(e) => return e.into_response(),
                }
            } else {
                anonymous_principal()
            };
            request.extensions_mut().insert(principal);
            return next.run(request).await;
        }
        Access::Requires(permission) => permission,
    };
    let principal = match state.auth.principal(request.headers()).await {
        Ok(principal) => principal,
        Err(e) => {
            if matches!(e, ApiError::Unauthenticated(_)) {
                crm_http_denied("unauthenticated");
            }
            return e.into_response();
        }
    };
    if !principal.can(permission) {
        crm_http_denied("forbidden");
        return ApiError::Forbidden(format!(
            "{} may not call {} {path}: it needs permission `{permission}`, which the roles {} give; {} holds {}",
            principal.name,
            request.method(),
            Role::names(&permission.roles()),
            principal.name,
            if principal.roles.is_empty() {
                "no role".to_owned()
            } else {
                Role::names(&principal.roles)
            }
        ))
        .into_response();
    }
    if !principal.scope.is_empty() && GLOBAL_READS.contains(&path.as_str()) {
        crm_http_denied("forbidden");
        return ApiError::Forbidden(format!(
            "{} is scoped to {}; it may read streams of those categories (/v1/streams/...), not {path}, which spans every category",
            principal.name,
            principal.scope.join(", ")
        ))
        .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// Routes that read across every stream category: refused to a scoped principal.
pub const GLOBAL_READS: [&str; 2] = ["/v1/events", "/v1/feed"];

fn crm_http_denied(reason: &'static str) {
    ::metrics::counter!("crm_http_denied_total", "reason" => reason).increment(1);
}

/// Name of the bearer security scheme in the API document.
pub const BEARER_SCHEME: &str = "bearer";

/// Declares the bearer scheme (API tokens and OIDC tokens) and each operation's
/// requirement: none for public routes, the bearer scheme (and, in the description, the
/// permission and roles) for the others.
#[must_use]
pub fn document_security(
    mut openapi: utoipa::openapi::OpenApi,
    settings: &AuthSettings,
) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    let components = openapi.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token (`crm_<id>_<secret>`, from `crm auth token create` or POST /v1/auth/tokens) or an OIDC access token of the configured identity provider",
                ))
                .build(),
        ),
    );
    for (path, item) in &mut openapi.paths.paths {
        let operations = [
            ("GET", item.get.as_mut()),
            ("POST", item.post.as_mut()),
            ("PUT", item.put.as_mut()),
            ("DELETE", item.delete.as_mut()),
            ("PATCH", item.patch.as_mut()),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let Ok(method) = Method::from_bytes(method.as_bytes()) else {
                continue;
            };
            match access(&method, path) {
                Some(Access::Requires(_)) if settings.is_public(path) => {
                    operation.security = Some(vec![SecurityRequirement::default()]);
                }
                Some(Access::Requires(permission)) => {
                    operation.security = Some(vec![SecurityRequirement::new::<_, _, &str>(
                        BEARER_SCHEME,
                        [],
                    )]);
                    let roles = Role::names(&permission.roles());
                    let note = format!("\n\nRequires permission `{permission}` (roles: {roles}).");
                    let description = operation.description.get_or_insert_with(String::new);
                    description.push_str(&note);
                    add_auth_responses(operation);
                }
                Some(Access::Public) => {
                    operation.security = Some(vec![SecurityRequirement::default()]);
                }
                None => {}
            }
        }
    }
    openapi
}

/// Adds 401 and 403 problem responses to an operation that lacks them.
fn add_auth_responses(operation: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    for (status, description) in [
        (
            "401",
            "No valid credential (header `WWW-Authenticate: Bearer`)",
        ),
        (
            "403",
            "The caller's roles do not give the permission this route requires",
        ),
    ] {
        if operation.responses.responses.contains_key(status) {
            continue;
        }
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                crate::problem::PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        operation
            .responses
            .responses
            .insert(status.to_owned(), response.into());
    }
}

/// Why the server cannot start with the authentication it was given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    /// A non-loopback address without authentication.
    #[error("crm serve refuses to listen on {0} without authentication: anyone who can reach it could write to the log. Grant an admin token first (`crm auth token create --name ops --role admin`) or configure [auth.oidc], and leave `[auth] required` unset or true (CRM_AUTH_REQUIRED); or listen on a loopback address such as 127.0.0.1:8080")]
    OpenOnNetwork(std::net::SocketAddr),
    /// The token register cannot be read.
    #[error(transparent)]
    Register(#[from] crm_app::access::RegisterError),
    /// The OIDC verifier cannot start.
    #[error(transparent)]
    Oidc(#[from] oidc::OidcSetupError),
    /// `[auth] public` names a path that is not a read route of the API.
    #[error("[auth] public lists `{path}`, which is not a GET route of the API{}; only reads can be made public (GET /openapi.json lists the routes)", .nearest.as_ref().map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default())]
    Public {
        /// The path given.
        path: String,
        /// The nearest route.
        nearest: Option<String>,
    },
    /// The bootstrap admin token's hash is unusable.
    #[error(transparent)]
    AdminHash(#[from] crm_app::config::auth::AdminHashError),
}

impl AuthPolicy {
    /// The policy `settings` give for a server on `listen` over `store`: credentials are
    /// required when configured so, or (unset) once a token was granted or OIDC is
    /// configured; a server without them listens on loopback only.
    ///
    /// # Errors
    /// [`AuthSetupError`].
    pub async fn resolve(
        settings: &AuthSettings,
        store: &crm_eventstore::AnyStore,
        listen: std::net::SocketAddr,
    ) -> Result<AuthPolicy, AuthSetupError> {
        let mut settings = settings.clone();
        for path in &settings.public {
            let get_route = ROUTES.iter().any(|(m, p, _)| *m == "GET" && p == path);
            if !get_route {
                let reads = ROUTES
                    .iter()
                    .filter(|(m, _, _)| *m == "GET")
                    .map(|(_, p, _)| *p);
                return Err(AuthSetupError::Public {
                    path: path.clone(),
                    nearest: crm_domain::registry::nearest_name(path, reads),
                });
            }
        }
        if settings.admin_token_sha256.is_none() {
            crm_app::config::auth::load_admin_hash(&mut settings)?;
        }
        let oidc = match &settings.oidc {
            Some(o) => Some(Arc::new(OidcVerifier::start(o.clone()).await?)),
            None => None,
        };
        let tokens = TokenVerifier::new(store.clone()).any_granted().await?
            || settings.admin_token_sha256.is_some();
        let required = settings.required.unwrap_or(tokens || oidc.is_some());
        if !required && !listen.ip().is_loopback() {
            return Err(AuthSetupError::OpenOnNetwork(listen));
        }
        Ok(AuthPolicy {
            required,
            settings,
            oidc,
        })
    }

    /// One line for the server's banner.
    #[must_use]
    pub fn describe(&self) -> String {
        if !self.required {
            return format!(
                "authentication: off (loopback only; callers are {OPEN_PRINCIPAL}); grant a token with `crm auth token create` to turn it on"
            );
        }
        let mut kinds = vec!["API tokens"];
        if self.settings.admin_token_sha256.is_some() {
            kinds.push("the bootstrap admin token");
        }
        if self.oidc.is_some() {
            kinds.push("OIDC bearer tokens");
        }
        format!("authentication: required ({})", kinds.join(", "))
    }
}
