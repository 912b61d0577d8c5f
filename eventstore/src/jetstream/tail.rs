//! The background tail: follows the stream with an ordered, headers-only
//! consumer so that appends made by other processes advance this process's
//! index and head (and wake its subscriptions). It reads the records
//! themselves with batched direct gets, up to the sequence it was told of.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::Shared;

/// Pause before the tail re-creates its consumer after a failure.
const RESTART_PAUSE_MS: u64 = 250;

/// Why the tail could not start its consumer.
#[derive(Debug, thiserror::Error)]
enum ConsumerStartError {
    #[error(transparent)]
    Stream(async_nats::jetstream::context::GetStreamError),
    #[error(transparent)]
    Create(async_nats::jetstream::stream::ConsumerError),
    #[error(transparent)]
    Messages(async_nats::jetstream::consumer::StreamError),
}

pub(super) async fn run(shared: Weak<Shared>, mut closed: watch::Receiver<()>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let start = s.index().head().position.0.saturating_add(1);
        let js = async_nats::jetstream::new(s.nats.client.clone());
        let stream_name = s.nats.stream.clone();
        drop(s);
        let consumer = async {
            let stream = js
                .get_stream(stream_name)
                .await
                .map_err(ConsumerStartError::Stream)?;
            let consumer = stream
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: start,
                    },
                    headers_only: true,
                    ..Default::default()
                })
                .await
                .map_err(ConsumerStartError::Create)?;
            consumer
                .messages()
                .await
                .map_err(ConsumerStartError::Messages)
        };
        let mut messages = tokio::select! {
            _ = closed.changed() => return,
            m = consumer => match m {
                Ok(m) => m,
                Err(e) => {
                    debug!(error = %e, "the tail could not start its consumer; retrying");
                    if pause(&mut closed).await { return; }
                    continue;
                }
            },
        };
        loop {
            let next = tokio::select! {
                _ = closed.changed() => return,
                next = messages.next() => next,
            };
            let seq = match next {
                Some(Ok(msg)) => match msg.info() {
                    Ok(info) => info.stream_sequence,
                    Err(e) => {
                        debug!(error = %e, "the tail got a message without stream info");
                        continue;
                    }
                },
                Some(Err(e)) => {
                    debug!(error = %e, "the tail's consumer failed; re-creating it");
                    break;
                }
                None => break,
            };
            let Some(s) = shared.upgrade() else { return };
            let in_flight = s.in_flight.load(Ordering::Acquire);
            if seq > s.index().head().position.0 && seq > in_flight {
                if let Err(e) = s.catch_up(Some(seq)).await {
                    warn!(error = %e, seq, "the tail could not read up to a new record");
                }
            }
        }
        if pause(&mut closed).await {
            return;
        }
    }
}

/// Waits before a restart; true when the store was dropped meanwhile.
async fn pause(closed: &mut watch::Receiver<()>) -> bool {
    tokio::select! {
        _ = closed.changed() => true,
        _ = tokio::time::sleep(Duration::from_millis(RESTART_PAUSE_MS)) => false,
    }
}
