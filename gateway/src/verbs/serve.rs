//! `crm serve`: the HTTP API, the projections and (with a NATS URL) the publisher, until
//! SIGTERM or Ctrl-C. [`serve_api`] is the wiring `crm demo` shares. A log whose open fails
//! on damage is served not ready ([`crm_http::damage::serve_open_damaged`]) instead.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use crm_app::config::{Config, Flags};
use crm_app::damage::LogDamage;
use crm_app::store::{self, Create, StoreOpenError};
use crm_eventstore::AnyStore;
use crm_http::auth::AuthPolicy;
use crm_http::damage::DamageMet;
use crm_http::read_models::Projections;
use crm_http::BeforeClose;

use super::Globals;

/// Flags of `crm serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "A log that does not open because it is damaged is not a crash: crm serve logs the damage and the remedy once, listens as configured and answers /healthz 200, /readyz and every other route 503 `log-damaged` (no Retry-After), until SIGTERM or Ctrl-C (exit 0), so an orchestrator sees it not ready instead of restarting it in a loop; restore the log (deploy/README.md, \"Restoring a damaged log\") and restart it. Any other failure to open the log (locked, missing master key, permissions) exits 1 with its message."
)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free port); also
    /// `CRM_LISTEN` or `[serve] listen` in the config file.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Do not run the read models in this process (the read-model routes answer 503): use
    /// when `crm project run NAME` workers fold them in processes of their own.
    #[arg(long)]
    no_projections: bool,
    /// Publish every committed event to NATS JetStream at this URL (subjects
    /// crm.events.<category>.<stream id>, stream CRM_EVENTS); also `CRM_NATS_URL` or
    /// `[publish] nats_url`.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (server certificate first), with
    /// --tls-key; also `CRM_TLS_CERT_FILE` or `[serve] tls_cert_file`. Without both, plain
    /// HTTP (put a TLS-terminating proxy in front).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert; also `CRM_TLS_KEY_FILE` or `[serve] tls_key_file`.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Sign the log's head every SECONDS when it moved (0: only on `POST /v1/checkpoints`).
    /// Needs the master key, where the signing key is kept.
    #[arg(long, value_name = "SECONDS", default_value_t = super::checkpoint::SIGN_EVERY_DEFAULT_S)]
    checkpoint_every: u64,
}

/// Runs `crm serve`.
///
/// # Errors
/// The log cannot be opened, the address is taken, the projections or publisher cannot start.
pub async fn run(globals: &Globals, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags {
        listen: args.listen,
        nats: args.nats.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        ..Flags::default()
    })?;
    let store = match store::open(&config, Create::IfMissing).await {
        Ok(store) => store,
        Err(e) => match LogDamage::find(&e) {
            Some(damage) => return serve_damaged(&config, &damage, &e).await,
            None => return Err(e.into()),
        },
    };
    let publisher = match crm_publish::Publisher::start_configured(
        store.clone(),
        &config.publish,
        config.nats.for_publish(),
        &config.data_dir,
    ) {
        Ok(publisher) => publisher,
        Err(e) => {
            store.close().await;
            return Err(e.into());
        }
    };
    let before_close =
        publisher.map(|p| -> BeforeClose { Box::pin(async move { p.stop().await }) });
    let banner = format!(
        "crm serve: log {}, listening on {{url}} (API under /v1, /openapi.json); Ctrl-C or SIGTERM stops",
        store.describe()
    );
    serve_api(
        store,
        &config,
        !args.no_projections,
        before_close,
        &banner,
        args.checkpoint_every,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves a log that did not open because it is damaged: logs the damage and the remedy
/// once, then answers not ready on the configured address until SIGTERM or Ctrl-C.
///
/// # Errors
/// The TLS files cannot be used or the address is taken.
async fn serve_damaged(
    config: &Config,
    damage: &LogDamage,
    error: &StoreOpenError,
) -> anyhow::Result<ExitCode> {
    let (listener, options, url) = listen(config).await?;
    tracing::error!(
        position = damage.first_bad_position().map(|p| p.0),
        error = %error,
        remedy = %damage.remedy(),
        "the log is damaged and could not be opened: serving not ready (503 log-damaged) until stopped"
    );
    print_banner(&format!(
        "crm serve: the log is damaged {} and was not opened; listening on {url} (not ready: every route but /healthz answers 503 log-damaged until the log is restored and the server restarted); Ctrl-C or SIGTERM stops",
        damage.location
    ))?;
    crm_http::damage::serve_open_damaged(
        listener,
        &DamageMet::of_open(damage),
        options.tls,
        crm_http::shutdown_signal(),
    )
    .await;
    Ok(ExitCode::SUCCESS)
}

/// Loads the TLS certificate and key when configured and listens on the configured
/// address; the listener, the options with TLS set as configured, and the server's URL.
///
/// # Errors
/// The TLS files cannot be used or the address is taken.
async fn listen(
    config: &Config,
) -> anyhow::Result<(tokio::net::TcpListener, crm_http::ServeOptions, String)> {
    let tls = config
        .tls
        .as_ref()
        .map(|files| crm_http::tls::server_config(&files.cert_file, &files.key_file))
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr()?);
    let options = crm_http::ServeOptions {
        tls,
        ..crm_http::ServeOptions::default()
    };
    Ok((listener, options, url))
}

/// Prints `text` and a newline to stdout in one write: a reader may stop reading after the
/// first line (tests take the address from it), and a later write to a closed pipe would
/// fail the start.
fn print_banner(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(format!("{text}\n").as_bytes())?;
    stdout.flush()
}

/// Loads the TLS certificate and key when configured, listens on the configured address,
/// prints `banner` (`{url}` replaced by `http://` or `https://` and the bound address),
/// starts the projections when asked, and serves until SIGTERM or Ctrl-C; the
/// server closes the store when it stops. On an error before serving, the store is closed
/// here.
///
/// # Errors
/// The TLS files cannot be used, the address is taken, the projections cannot start, or
/// the server fails.
pub async fn serve_api(
    store: AnyStore,
    config: &Config,
    projections: bool,
    before_close: Option<BeforeClose>,
    banner: &str,
    checkpoint_every_s: u64,
) -> anyhow::Result<()> {
    let started = async {
        let auth = AuthPolicy::resolve(&config.auth, &store, config.listen).await?;
        let (listener, options, url) = listen(config).await?;
        print_banner(&format!(
            "{}\n{}",
            banner.replace("{url}", &url),
            auth.describe()
        ))?;
        let projections = if projections {
            Some(
                Projections::start(
                    store.clone(),
                    &config.projections_dir(),
                    &config.read_models,
                )
                .context("starting the projections")?,
            )
        } else {
            None
        };
        anyhow::Ok((listener, projections, auth, options))
    }
    .await;
    let (listener, projections, auth, options) = match started {
        Ok(started) => started,
        Err(e) => {
            if let Some(before_close) = before_close {
                before_close.await;
            }
            store.close().await;
            return Err(e);
        }
    };
    let checkpoints = super::checkpoint::checkpointing(config, &store, checkpoint_every_s);
    crm_http::serve_with(
        store,
        projections,
        before_close,
        listener,
        crm_http::ServeOptions {
            auth,
            checkpoints,
            ..options
        },
        crm_http::shutdown_signal(),
    )
    .await?;
    Ok(())
}
