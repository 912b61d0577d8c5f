//! `crm serve`: the HTTP API, the projections and (with a NATS URL) the publisher, until
//! SIGTERM or Ctrl-C. [`serve_api`] is the wiring `crm demo` shares.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use crm_app::config::{Config, Flags};
use crm_app::store::{self, Create};
use crm_eventstore::AnyStore;
use crm_http::auth::AuthPolicy;
use crm_http::read_models::Projections;
use crm_http::BeforeClose;

use super::Globals;

/// Flags of `crm serve`.
#[derive(Debug, Args)]
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
    let store = store::open(&config, Create::IfMissing).await?;
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
        let tls = config
            .tls
            .as_ref()
            .map(|files| crm_http::tls::server_config(&files.cert_file, &files.key_file))
            .transpose()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let address = listener.local_addr()?;
        let mut stdout = std::io::stdout().lock();
        let scheme = if tls.is_some() { "https" } else { "http" };
        // One write: a reader may stop reading after the first line (tests take the
        // address from it), and a later write to a closed pipe would fail the start.
        let text = format!(
            "{}\n{}\n",
            banner.replace("{url}", &format!("{scheme}://{address}")),
            auth.describe()
        );
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        drop(stdout);
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
        anyhow::Ok((listener, projections, auth, tls))
    }
    .await;
    let (listener, projections, auth, tls) = match started {
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
            tls,
            checkpoints,
            ..crm_http::ServeOptions::default()
        },
        crm_http::shutdown_signal(),
    )
    .await?;
    Ok(())
}
