//! The publishing task: sessions against JetStream, each resuming after the last position
//! the stream holds, with capped exponential backoff between failed sessions.
//!
//! A session: make sure the stream exists and captures `<prefix>.>`; read its last sequence
//! `L` and check that its last message is the log's event at position `L` (else the stream
//! holds another log and the session stops with an error that says so); follow the log from
//! `L + 1` with a catch-up subscription; publish each event with
//! `Nats-Expected-Last-Sequence: position − 1`, up to `window` acknowledgements in flight,
//! advancing the published position over the acknowledged prefix only. The first failure
//! (a refused publish, a timed-out acknowledgement, a lost connection) ends the session; the
//! next one starts again from the stream's own last sequence, so nothing is skipped and
//! nothing is stored twice. A session that meets a damaged record of the log publishes what
//! was acknowledged before it, reports the damage once (log, `last_error`) and stops: no
//! retry reads a damaged record intact, so none is made.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::{PublishAckFuture, PublishError};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{Config as StreamConfig, RawMessageErrorKind, StorageType};
use async_nats::{Client, ConnectOptions};
use crm_app::damage::{LogDamage, UpToDamage};
use crm_eventstore::{EventStore, Position, ReadError};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::message::{self, NATS_MSG_ID};
use super::{
    PublisherOptions, PublisherState, BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT, DUPLICATE_WINDOW,
};

/// Longest pause between two reconnection attempts of the NATS client.
const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(2);

/// How a session ended without error.
enum End {
    /// `stop` was signalled.
    Stopped,
    /// The store was closed: nothing more to read.
    StoreClosed,
}

/// Why a session ended; `progressed` when it published something first (the backoff then
/// starts again from [`BACKOFF_MIN`]); `damaged` when it met a damaged record of the log,
/// which no retry gets past.
struct Failure {
    message: String,
    progressed: bool,
    damaged: bool,
}

fn fail(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        progressed: false,
        damaged: false,
    }
}

/// A failed read of the log: damage (named, with the remedy, and final) or a fault a later
/// session may get past.
fn read_failed(what: &str, error: &ReadError, progressed: bool) -> Failure {
    match LogDamage::of_read(error) {
        Some(damage) => Failure {
            message: format!(
                "{what}: {error}; publication stops here until the log is restored and the server restarted: {}",
                damage.remedy()
            ),
            progressed,
            damaged: true,
        },
        None => Failure {
            message: format!("{what}: {error}"),
            progressed,
            damaged: false,
        },
    }
}

pub(super) async fn run<S: EventStore>(
    store: S,
    options: Arc<PublisherOptions>,
    state: Arc<watch::Sender<PublisherState>>,
    acknowledged: watch::Sender<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut client: Option<Client> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        match session(
            &store,
            &options,
            &mut client,
            &state,
            &acknowledged,
            &mut stop,
        )
        .await
        {
            Ok(End::Stopped) => return,
            Ok(End::StoreClosed) => {
                debug!("the store closed; the publisher waits for its stop");
                let _ = stop.wait_for(|stopped| *stopped).await;
                return;
            }
            Err(failure) if failure.damaged => {
                // Reading the damaged record again will not heal it: report once, stop
                // publishing, and wait for the stop (the events before it are published).
                error!(error = %failure.message, "publishing to NATS stopped: the log is damaged");
                state.send_modify(|s| {
                    s.connected = false;
                    s.last_error = Some(failure.message);
                });
                let _ = stop.wait_for(|stopped| *stopped).await;
                return;
            }
            Err(failure) => {
                if failure.progressed {
                    backoff = BACKOFF_MIN;
                }
                warn!(
                    error = %failure.message,
                    retry_in_ms = backoff.as_millis(),
                    "publishing to NATS failed; resuming from the stream's last sequence"
                );
                state.send_modify(|s| {
                    s.connected = false;
                    s.last_error = Some(failure.message);
                });
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(backoff) => {},
                }
                backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn connect(options: &PublisherOptions) -> Result<Client, Failure> {
    let connect = ConnectOptions::new()
        .name("crm publisher")
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(options.ack_timeout))
        .reconnect_delay_callback(|attempts| {
            let ms = 50u64.saturating_mul(u64::try_from(attempts).unwrap_or(u64::MAX));
            Duration::from_millis(ms).min(RECONNECT_DELAY_MAX)
        });
    options
        .auth
        .connect(connect, options.url.as_str(), &options.url)
        .await
        .map_err(|e| fail(e.to_string()))
}

/// The stream, created if absent, and its last sequence.
async fn open_stream(
    js: &jetstream::Context,
    options: &PublisherOptions,
) -> Result<(jetstream::stream::Stream, u64), Failure> {
    let subjects = options.stream_subjects();
    let config = StreamConfig {
        name: options.stream.clone(),
        subjects: vec![subjects.clone()],
        storage: StorageType::File,
        num_replicas: options.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        allow_direct: true,
        ..StreamConfig::default()
    };
    let mut stream = js.get_or_create_stream(config).await.map_err(|e| {
        fail(format!(
            "cannot open or create the JetStream stream {}: {e}; check that the server runs with JetStream enabled",
            options.stream
        ))
    })?;
    let info = stream.info().await.map_err(|e| {
        fail(format!(
            "cannot read the state of stream {}: {e}",
            options.stream
        ))
    })?;
    if !info.config.subjects.iter().any(|s| s == &subjects) {
        return Err(fail(format!(
            "stream {} exists but captures {:?}, not {subjects}; point [publish] stream or subject_prefix elsewhere, or add the subject to the stream",
            options.stream, info.config.subjects
        )));
    }
    let last = info.state.last_sequence;
    Ok((stream, last))
}

/// Checks that the stream's last message (sequence `last`) is this log's event at position
/// `last`, so that sequence = position holds.
async fn check_stream_matches_log<S: EventStore>(
    store: &S,
    stream: &jetstream::stream::Stream,
    options: &PublisherOptions,
    last: u64,
) -> Result<(), Failure> {
    if last == 0 {
        return Ok(());
    }
    let head = store.head().position.0;
    let other_log = |detail: String| {
        fail(format!(
            "stream {} does not hold this log: {detail}; it belongs to another log (or this log was replaced). Set [publish] stream to another name, or delete the stream to publish this log from position 1",
            options.stream
        ))
    };
    if last > head {
        return Err(other_log(format!(
            "its last sequence is {last} but the log's head is {head}"
        )));
    }
    let message = match stream.get_raw_message(last).await {
        Ok(m) => m,
        // Removed by the stream's limits: nothing to compare against.
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
        Err(e) => {
            return Err(fail(format!(
                "cannot read message {last} of stream {}: {e}",
                options.stream
            )))
        }
    };
    let page = store.read_all(Position(last), 1).await.map_err(|e| {
        read_failed(
            &format!("cannot read position {last} of the log"),
            &e,
            false,
        )
    })?;
    let expected = page.first().map(|e| e.event_id.0.to_string());
    let found = message
        .headers
        .get(NATS_MSG_ID)
        .map(|v| v.as_str().to_owned());
    if expected.is_none() || expected != found {
        return Err(other_log(format!(
            "its message {last} has {NATS_MSG_ID} {found:?}, the log's event at position {last} is {expected:?}"
        )));
    }
    Ok(())
}

/// A position and the outcome of its publish.
type AckResult = (u64, Result<PublishAck, PublishError>);
/// The acknowledgements in flight, yielded in publish order.
type Acks = FuturesOrdered<Pin<Box<dyn Future<Output = AckResult> + Send>>>;

fn pending(
    position: u64,
    ack: PublishAckFuture,
) -> Pin<Box<dyn Future<Output = AckResult> + Send>> {
    Box::pin(async move { (position, ack.await) })
}

async fn session<S: EventStore>(
    store: &S,
    options: &PublisherOptions,
    client: &mut Option<Client>,
    state: &watch::Sender<PublisherState>,
    acknowledged: &watch::Sender<u64>,
    stop: &mut watch::Receiver<bool>,
) -> Result<End, Failure> {
    // Connecting and checking the stream can each take a timeout; a stop cuts them short.
    let setup = async {
        let nats = match client {
            Some(c) => c.clone(),
            None => {
                let c = connect(options).await?;
                *client = Some(c.clone());
                c
            }
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(options.ack_timeout)
            .max_ack_inflight(options.window)
            .backpressure_on_inflight(true)
            .build(nats);
        let (stream, last) = open_stream(&js, options).await?;
        check_stream_matches_log(store, &stream, options, last).await?;
        Ok::<_, Failure>((js, last))
    };
    let mut stopping = stop.clone();
    let (js, last) = tokio::select! {
        ready = setup => ready?,
        _ = stopping.wait_for(|stopped| *stopped) => return Ok(End::Stopped),
    };
    let before = state.borrow().published_position;
    if last < before {
        warn!(
            stream = %options.stream,
            stream_last = last,
            checkpoint = before,
            "the stream holds fewer events than were acknowledged (recreated, or lost by a server without sync_interval: always); publishing them again"
        );
    }
    info!(stream = %options.stream, from = last + 1, "publishing to NATS");
    state.send_modify(|s| {
        s.published_position = last;
        s.connected = true;
        s.last_error = None;
    });
    acknowledged.send_replace(last);

    let mut published = last;
    // At a damaged record, the intact events before it are published first.
    let mut subscription = UpToDamage::new(store, Position(last.saturating_add(1)));
    let mut acks: Acks = FuturesOrdered::new();
    let failed = |message: String, published: u64| Failure {
        message,
        progressed: published > last,
        damaged: false,
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                drain(&mut acks, &mut published, state, acknowledged).await;
                return Ok(End::Stopped);
            }
            Some((position, result)) = acks.next(), if !acks.is_empty() => {
                match result {
                    Ok(ack) if ack.sequence == position => {
                        published = position;
                        state.send_modify(|s| s.published_position = position);
                        acknowledged.send_replace(position);
                    }
                    Ok(ack) => {
                        return Err(failed(format!(
                            "JetStream stored position {position} at sequence {} of stream {}: something else publishes to {}; only the publisher may",
                            ack.sequence, options.stream, options.stream_subjects()
                        ), published));
                    }
                    Err(e) => {
                        return Err(failed(format!(
                            "publishing position {position} was not acknowledged: {e}"
                        ), published));
                    }
                }
            }
            next = subscription.next(), if acks.len() < options.window => {
                let event = match next {
                    None => {
                        drain(&mut acks, &mut published, state, acknowledged).await;
                        return Ok(End::StoreClosed);
                    }
                    Some(Err(e)) => {
                        // The acknowledged prefix is kept (and checkpointed) before stopping.
                        drain(&mut acks, &mut published, state, acknowledged).await;
                        return Err(read_failed("cannot read the log", &e, published > last));
                    }
                    Some(Ok(event)) => event,
                };
                let body = message::body(&event).map_err(|e| {
                    failed(format!("cannot encode position {}: {e}", event.position), published)
                })?;
                let ack = js
                    .publish_with_headers(
                        message::subject(&options.subject_prefix, &event),
                        message::headers(&options.source, &event),
                        body,
                    )
                    .await
                    .map_err(|e| {
                        failed(format!("cannot publish position {}: {e}", event.position), published)
                    })?;
                acks.push_back(pending(event.position.0, ack));
            }
        }
    }
}

/// Waits for the acknowledgements in flight (each bounded by the ack timeout) and advances
/// the published position over their acknowledged prefix.
async fn drain(
    acks: &mut Acks,
    published: &mut u64,
    state: &watch::Sender<PublisherState>,
    acknowledged: &watch::Sender<u64>,
) {
    while let Some((position, result)) = acks.next().await {
        match result {
            Ok(ack) if ack.sequence == position => {
                *published = position;
            }
            _ => break,
        }
    }
    let position = *published;
    state.send_modify(|s| s.published_position = position);
    acknowledged.send_replace(position);
}
