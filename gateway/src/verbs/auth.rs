//! `crm auth token create|list|revoke`: the API-token register, with local admin access to
//! the data directory (the caller is `local:<user>`). A grant prints the token once.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use clap::{Args, Subcommand};
use crm_app::access::{local_principal, TokenRegister, TokenRequest, TokenSummary};
use crm_app::config::Flags;
use crm_app::store::Create;
use crm_domain::access::Role;

use super::{with_store, Globals};

/// Flags of `crm auth`.
#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    what: AuthWhat,
}

#[derive(Debug, Subcommand)]
enum AuthWhat {
    /// API tokens for services and scripts.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Grant a token and print it, this once (only its hash is kept).
    Create {
        /// Unique name among live tokens; events it writes record `token:<name>` as actor.
        #[arg(long)]
        name: String,
        /// A role (repeat, or separate with commas): admin, writer, analyst, auditor,
        /// subscriber, viewer, monitor, member (a person of the scorecard cascade).
        #[arg(long = "role", required = true, value_delimiter = ',')]
        roles: Vec<Role>,
        /// Limit commands and stream reads to these aggregate categories (repeat or commas).
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
        /// Expiry: RFC 3339 instant (2027-01-31T00:00:00Z) or a number of days (90d).
        #[arg(long)]
        expires: Option<String>,
        /// Print the grant as JSON (with the token).
        #[arg(long)]
        json: bool,
    },
    /// Every token: id, name, roles, scope, status, who granted and revoked it.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a new token and its SHA-256 without granting it: for a first admin of a fresh
    /// deployment, give the hash to the server (`[auth] admin_token_sha256_file` or
    /// `CRM_AUTH_ADMIN_TOKEN_SHA256`) and keep the token. Needs no data directory.
    Generate,
    /// Revoke a token by id or name; it is refused from then on.
    Revoke {
        /// The token's id or name.
        token: String,
        /// Why (recorded).
        #[arg(long)]
        reason: Option<String>,
    },
}

fn expiry(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Some(days) = text.strip_suffix('d') {
        let days: i64 = days
            .parse()
            .with_context(|| format!("--expires {text}: give a number of days such as 90d"))?;
        anyhow::ensure!(days > 0, "--expires {text}: give a positive number of days");
        return now
            .checked_add_signed(Duration::days(days))
            .context("--expires is too far in the future");
    }
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| {
            format!(
                "--expires {text}: give an RFC 3339 instant (2027-01-31T00:00:00Z) or days (90d)"
            )
        })?
        .with_timezone(&Utc))
}

fn table(tokens: &[TokenSummary]) -> String {
    let mut out = format!(
        "{:<16}  {:<24}  {:<8}  {:<24}  {:<20}  {}\n",
        "ID", "NAME", "STATUS", "ROLES", "EXPIRES", "GRANTED BY"
    );
    for t in tokens {
        let roles = t
            .roles
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(",");
        let roles = if t.scope.is_empty() {
            roles
        } else {
            format!("{roles} [{}]", t.scope.join(","))
        };
        out.push_str(&format!(
            "{:<16}  {:<24}  {:<8}  {:<24}  {:<20}  {}\n",
            t.token_id,
            t.name,
            t.status,
            roles,
            t.expires_at.map_or_else(
                || "never".to_owned(),
                |e| e.format("%Y-%m-%d %H:%M").to_string()
            ),
            t.granted_by
        ));
    }
    out
}

/// Runs `crm auth`.
///
/// # Errors
/// No log, a refused grant or revocation, a storage error.
pub async fn run(globals: &Globals, args: AuthArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let AuthWhat::Token { action } = args.what;
    if matches!(action, TokenAction::Generate) {
        let (token, hash) = crm_app::access::generate_token()?;
        writeln!(
            std::io::stdout().lock(),
            "token:  {token}\nsha256: {hash}\n\nGive the server the sha256 (a mounted secret named by [auth] admin_token_sha256_file, or CRM_AUTH_ADMIN_TOKEN_SHA256); keep the token in a secret manager. The server accepts it as token:{} (admin) until the setting is removed; grant real tokens with it (POST /v1/auth/tokens) and then remove it.",
            crm_app::access::BOOTSTRAP_TOKEN_NAME
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let me = local_principal();
    let now = Utc::now();
    let create = match action {
        TokenAction::Create { .. } => Create::IfMissing,
        _ => Create::Never,
    };
    let output = with_store(&config, create, async |store| {
        let register = TokenRegister::new(store.clone());
        Ok(match action {
            TokenAction::Create {
                name,
                roles,
                scope,
                expires,
                json,
            } => {
                let expires_at = expires.as_deref().map(|e| expiry(e, now)).transpose()?;
                let issued = register
                    .grant(
                        TokenRequest {
                            name,
                            roles,
                            scope,
                            expires_at,
                        },
                        &me,
                        now,
                    )
                    .await?;
                if json {
                    format!("{}\n", serde_json::to_string_pretty(&issued)?)
                } else {
                    format!(
                        "{}\n\ngranted token `{}` (id {}, roles {}) by {}.\nThis is the only time the token is shown: store it in a secret manager now.\nUse it as `Authorization: Bearer <token>`; revoke it with `crm auth token revoke {}`.\n",
                        issued.token,
                        issued.grant.name,
                        issued.grant.token_id,
                        Role::names(&issued.grant.roles),
                        me.name,
                        issued.grant.token_id
                    )
                }
            }
            TokenAction::List { json } => {
                let tokens = register.list(now).await?;
                if json {
                    format!("{}\n", serde_json::to_string_pretty(&tokens)?)
                } else if tokens.is_empty() {
                    "no API tokens; grant one with `crm auth token create --name NAME --role ROLE`\n"
                        .to_owned()
                } else {
                    table(&tokens)
                }
            }
            TokenAction::Generate => String::new(),
            TokenAction::Revoke { token, reason } => {
                let revoked = register.revoke(&token, reason, &me, now).await?;
                format!(
                    "revoked token {} by {}; a server refuses it within a second\n",
                    revoked.token_id, revoked.revoked_by
                )
            }
        })
    })
    .await?;
    write!(std::io::stdout().lock(), "{output}")?;
    Ok(ExitCode::SUCCESS)
}
