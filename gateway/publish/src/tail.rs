//! `crm tail`: a small real consumer of the published events. It reads the JetStream stream
//! with an ordered consumer (in stream order, which is log order; recreated by the client
//! after a disconnection), from a log position (`--from`, the stream's sequence equals the
//! position) or from now on, and prints one line per event: position, stream, stream
//! version, CloudEvents type and subject; or, with `--json`, the message body (the event's
//! JSON envelope, one per line: the form `crm import jsonl` reads). Messages whose
//! `crm-position` is not above the last one printed are skipped, as every consumer should.

use std::io::Write;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::ConnectOptions;
use futures_util::StreamExt;

use super::message::{self, CE_SUBJECT, CE_TYPE, CRM_STREAM_VERSION};
use super::{PublishSettings, CONNECT_TIMEOUT};

/// What `crm tail` follows and prints.
#[derive(Debug, Clone, Default)]
pub struct TailOptions {
    /// NATS server URL(s), comma-separated (default: `CRM_NATS_URL` or `[publish] nats_url`).
    pub nats: Option<String>,
    /// Only subjects matching this filter, e.g. `crm.events.case.>` (default: every event,
    /// `<prefix>.>`).
    pub subject: Option<String>,
    /// Replay from this log position, then follow (default: only events published from now).
    pub from: Option<u64>,
    /// Stop after this many events (default: follow until Ctrl-C).
    pub limit: Option<u64>,
    /// The JetStream stream (default: `[publish] stream`, `CRM_EVENTS`).
    pub stream: Option<String>,
    /// Print each message body (the event's JSON envelope) on one line.
    pub json: bool,
    /// Credentials and TLS (`[nats.publish]`, else `[nats]`). A consumer's user needs:
    /// `$JS.API.STREAM.INFO.<stream>`, `$JS.API.CONSUMER.CREATE.<stream>.>`,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.>` and `_INBOX.>`; nothing to publish.
    pub auth: crm_eventstore::jetstream::NatsClientAuth,
}

/// Why `crm tail` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TailError {
    /// No URL anywhere.
    #[error("no NATS URL: give --nats URL, set CRM_NATS_URL, or set [publish] nats_url in the config file")]
    NoUrl,
    /// NATS refused or could not be reached.
    #[error(transparent)]
    Connect(#[from] crm_eventstore::jetstream::NatsConnectError),
    /// The stream could not be followed.
    #[error("{0}")]
    Nats(String),
    /// Writing the output failed.
    #[error("could not write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Follows the stream and prints its events until `--limit` events were printed or the
/// consumer ends; returns the number printed.
///
/// # Errors
/// [`TailError`] when NATS, the stream or the output fail.
pub async fn run(
    args: &TailOptions,
    settings: &PublishSettings,
    out: &mut impl Write,
) -> Result<u64, TailError> {
    let url = args
        .nats
        .clone()
        .or_else(|| settings.nats_url.clone())
        .ok_or(TailError::NoUrl)?;
    let stream_name = args
        .stream
        .clone()
        .unwrap_or_else(|| settings.stream.clone());
    let subject = args
        .subject
        .clone()
        .unwrap_or_else(|| format!("{}.>", settings.subject_prefix));
    let options = ConnectOptions::new()
        .name("crm tail")
        .connection_timeout(CONNECT_TIMEOUT);
    let client = args.auth.connect(options, url.as_str(), &url).await?;
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(&stream_name).await.map_err(|e| {
        TailError::Nats(format!(
            "cannot open the JetStream stream {stream_name}: {e}; does a `crm serve --nats {url}` publish to it?"
        ))
    })?;
    let deliver_policy = match args.from {
        Some(position) => DeliverPolicy::ByStartSequence {
            start_sequence: position.max(1),
        },
        None => DeliverPolicy::New,
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| TailError::Nats(format!("cannot follow {subject}: {e}")))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| TailError::Nats(format!("cannot follow {subject}: {e}")))?;
    let mut last = 0u64;
    let mut printed = 0u64;
    while args.limit.is_none_or(|limit| printed < limit) {
        let msg = match messages.next().await {
            None => break,
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the tail's consumer reported an error; it continues");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let headers = msg.headers.as_ref();
        let Some(position) = message::position_of(headers) else {
            tracing::warn!(subject = %msg.subject, "a message without crm-position; skipped");
            continue;
        };
        if position <= last {
            continue;
        }
        last = position;
        printed += 1;
        if args.json {
            out.write_all(&msg.payload)?;
            out.write_all(b"\n")?;
        } else {
            let header = |name: &str| {
                headers
                    .and_then(|h| h.get(name))
                    .map_or("?", |v| v.as_str())
                    .to_owned()
            };
            writeln!(
                out,
                "{position:>10} {} v{} {} {}",
                header(CE_SUBJECT),
                header(CRM_STREAM_VERSION),
                header(CE_TYPE),
                msg.subject
            )?;
        }
        out.flush()?;
    }
    Ok(printed)
}
