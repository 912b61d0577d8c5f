//! A subscriber of the events `crm serve --nats URL` publishes: a durable JetStream pull
//! consumer with explicit acknowledgement that processes every log position exactly once.
//!
//! ```sh
//! crm serve --nats nats://127.0.0.1:4222 &
//! cargo run -p crm-gateway --example consumer -- nats://127.0.0.1:4222 billing 'crm.events.>'
//! ```
//!
//! The contract (see `gateway/asyncapi.json`):
//! - every committed event is one message on `crm.events.<category>.<stream id>` in the
//!   JetStream stream `CRM_EVENTS`, whose sequence equals the log position;
//! - messages are stored and delivered in position order, so a stream's events arrive in
//!   stream-version order;
//! - JetStream may deliver a message again (an acknowledgement that was lost, a consumer that
//!   restarted before acknowledging), so a consumer de-duplicates by the `crm-position`
//!   header: positions are global and increase, so "skip it unless it is above the highest
//!   position processed" is the whole rule, and one number is the whole state.
//!
//! Here that number lives in memory, which is enough while the process runs. A real
//! consumer saves it together with the effects of the event (in the same database
//! transaction), so that after a restart it skips exactly what it already applied.
//!
//! Credentials and TLS, from the environment (at most one credential):
//! - `NATS_USER` and `NATS_PASSWORD`: a user of the server's config (`crm-consumer` in
//!   `deploy/nats`: it may read `CRM_EVENTS`, create consumers on it and acknowledge, and
//!   publish nothing else);
//! - `NATS_TOKEN`: a token;
//! - `NATS_NKEY_SEED_FILE`: a file holding an NKey user seed;
//! - `NATS_CREDS`: a `.creds` file (JWT deployments);
//! - `NATS_CA`: PEM file of the CA that signed the servers' certificates;
//!   `NATS_CERT` + `NATS_KEY`: a client certificate; `NATS_TLS_REQUIRED=1`: refuse plain
//!   connections.
//!
//! ```sh
//! NATS_USER=crm-consumer NATS_PASSWORD="$(cat /run/secrets/consumer)" NATS_CA=ca.pem \
//!   cargo run -p crm-gateway --example consumer -- tls://nats-1:4222 billing
//! ```

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use crm_eventstore::jetstream::{NatsClientAuth, NatsCredentials, NatsTls, Secret, SecretSource};
use futures_util::StreamExt;

/// The credentials and TLS settings the `NATS_*` variables give.
fn auth_from_env() -> anyhow::Result<NatsClientAuth> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let value = |name: &str| {
        var(name).map(|v| SecretSource::Value {
            secret: Secret::new(v),
            origin: name.to_owned(),
        })
    };
    let mut given = Vec::new();
    match (var("NATS_USER"), value("NATS_PASSWORD")) {
        (Some(user), Some(password)) => given.push((
            "NATS_USER/NATS_PASSWORD",
            NatsCredentials::UserPassword { user, password },
        )),
        (None, None) => {}
        _ => anyhow::bail!("set both NATS_USER and NATS_PASSWORD, or neither"),
    }
    if let Some(token) = value("NATS_TOKEN") {
        given.push(("NATS_TOKEN", NatsCredentials::Token(token)));
    }
    if let Some(path) = var("NATS_NKEY_SEED_FILE") {
        given.push((
            "NATS_NKEY_SEED_FILE",
            NatsCredentials::NKeySeedFile(path.into()),
        ));
    }
    if let Some(path) = var("NATS_CREDS") {
        given.push(("NATS_CREDS", NatsCredentials::CredsFile(path.into())));
    }
    if given.len() > 1 {
        anyhow::bail!(
            "{} and {} are both set; give one credential",
            given[0].0,
            given[1].0
        );
    }
    let client_cert = match (var("NATS_CERT"), var("NATS_KEY")) {
        (Some(cert), Some(key)) => Some((cert.into(), key.into())),
        (None, None) => None,
        _ => anyhow::bail!("set both NATS_CERT and NATS_KEY, or neither"),
    };
    Ok(NatsClientAuth {
        credentials: given.pop().map(|(_, c)| c),
        tls: NatsTls {
            ca_file: var("NATS_CA").map(Into::into),
            client_cert,
            required: var("NATS_TLS_REQUIRED").is_some_and(|v| v != "0" && v != "false"),
        },
        settings: "the NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED_FILE, NATS_CREDS and NATS_CA variables".into(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("CRM_NATS_URL").ok())
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let durable = args.next().unwrap_or_else(|| "example-consumer".to_owned());
    let filter = args.next().unwrap_or_else(|| "crm.events.>".to_owned());

    let auth = auth_from_env()?;
    let client = auth
        .connect(
            async_nats::ConnectOptions::new().name("crm example consumer"),
            url.as_str(),
            &url,
        )
        .await?;
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream("CRM_EVENTS")
        .await
        .context("opening the stream CRM_EVENTS; does `crm serve --nats URL` publish to it?")?;
    // Durable: the server remembers what this consumer acknowledged, across restarts of
    // either side. A new consumer starts at position 1 (deliver all).
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: filter,
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .context("creating the durable consumer")?;

    let mut last_position = 0u64;
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                // Disconnections and missed heartbeats: the client recovers; keep going.
                eprintln!("consumer: {e}");
                continue;
            }
        };
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let Some(position) = header("crm-position").and_then(|p| p.parse::<u64>().ok()) else {
            eprintln!(
                "consumer: a message without crm-position on {}; acknowledged and skipped",
                message.subject
            );
            message.ack().await.map_err(anyhow::Error::msg)?;
            continue;
        };
        if position <= last_position {
            // Seen before: a redelivery. Acknowledge it so it is not sent again.
            message.ack().await.map_err(anyhow::Error::msg)?;
            continue;
        }
        // Process the event: here, print it. `message.payload` is the event's JSON envelope
        // (the domain payload under `payload`).
        let envelope: serde_json::Value = serde_json::from_slice(&message.payload)?;
        println!(
            "{position:>8} {} v{} {} ({})",
            header("ce-subject").unwrap_or_default(),
            header("crm-stream-version").unwrap_or_default(),
            envelope["event_type"].as_str().unwrap_or("?"),
            header("ce-time").unwrap_or_default(),
        );
        last_position = position;
        message.ack().await.map_err(anyhow::Error::msg)?;
    }
    Ok(())
}
