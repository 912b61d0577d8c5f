//! The publisher's progress against the log: [`PublisherStatus`] (published position, head,
//! lag in events and seconds, connection, last error) for `crm project status`, and the
//! `crm_publisher_*` Prometheus gauges a running publisher keeps current.

use std::fmt;
use std::path::Path;

use chrono::Utc;
use crm_eventstore::{EventStore, Position};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::checkpoint::{self, CheckpointError};
use super::{GAUGE_REFRESH_INTERVAL, GAUGE_UPDATE_INTERVAL};

/// What the publisher task shares with the status readers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublisherState {
    /// The last position JetStream acknowledged (or that the stream was found to hold).
    pub published_position: u64,
    /// Whether the current session reached the JetStream stream.
    pub connected: bool,
    /// The last failure, until the next successful session.
    pub last_error: Option<String>,
}

/// The publisher's progress against the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublisherStatus {
    /// The JetStream stream.
    pub stream: String,
    /// The last position published and acknowledged.
    pub published_position: u64,
    /// The log's head.
    pub head_position: u64,
    /// Events committed but not yet published.
    pub lag_events: u64,
    /// Age of the oldest unpublished event (since it was recorded), 0 when caught up.
    pub lag_seconds: f64,
    /// Whether the publisher reaches JetStream; `None` when it is not running in this
    /// process (the figures then come from its checkpoint).
    pub connected: Option<bool>,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

impl PublisherStatus {
    /// The status of a publisher at `published` over `store`.
    pub async fn compute<S: EventStore>(
        store: &S,
        stream: &str,
        published: u64,
        connected: Option<bool>,
        last_error: Option<String>,
    ) -> PublisherStatus {
        let head = store.head().position.0;
        let lag_events = head.saturating_sub(published);
        let mut lag_seconds = 0.0;
        if lag_events > 0 {
            if let Ok(page) = store
                .read_all(Position(published.saturating_add(1)), 1)
                .await
            {
                if let Some(oldest) = page.first() {
                    let age = Utc::now().signed_duration_since(oldest.recorded_at);
                    lag_seconds = age.to_std().map_or(0.0, |d| d.as_secs_f64());
                }
            }
        }
        PublisherStatus {
            stream: stream.to_owned(),
            published_position: published,
            head_position: head,
            lag_events,
            lag_seconds,
            connected,
            last_error,
        }
    }

    /// The status recorded in the checkpoint of `data_dir`, against `store` (for
    /// `crm project status`, when `crm serve` is not running); `None` without a checkpoint.
    ///
    /// # Errors
    /// [`CheckpointError`] when the checkpoint cannot be read.
    pub async fn offline<S: EventStore>(
        store: &S,
        data_dir: &Path,
    ) -> Result<Option<PublisherStatus>, CheckpointError> {
        let Some(saved) = checkpoint::load(&checkpoint::path(data_dir))? else {
            return Ok(None);
        };
        Ok(Some(
            PublisherStatus::compute(store, &saved.stream, saved.position, None, None).await,
        ))
    }
}

impl fmt::Display for PublisherStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let connected = match self.connected {
            Some(true) => "connected",
            Some(false) => "not connected",
            None => "not running (from its checkpoint)",
        };
        writeln!(
            f,
            "publisher -> NATS stream {}: published {} of {}, lag {} events ({:.1} s), {connected}",
            self.stream,
            self.published_position,
            self.head_position,
            self.lag_events,
            self.lag_seconds
        )?;
        if let Some(e) = &self.last_error {
            writeln!(f, "  last error: {e}")?;
        }
        Ok(())
    }
}

/// Keeps `crm_publisher_*` gauges current: on every head or progress change (at most every
/// [`GAUGE_UPDATE_INTERVAL`]) and at least every [`GAUGE_REFRESH_INTERVAL`].
pub(super) async fn report_gauges<S: EventStore>(
    store: S,
    stream: String,
    mut state: watch::Receiver<PublisherState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut head = store.watch_head();
    let mut head_open = true;
    loop {
        let current = state.borrow_and_update().clone();
        let status = PublisherStatus::compute(
            &store,
            &stream,
            current.published_position,
            Some(current.connected),
            None,
        )
        .await;
        set_gauges(&status);
        tokio::select! {
            _ = stop.changed() => return,
            changed = head.changed(), if head_open => head_open = changed.is_ok(),
            _ = state.changed() => {},
            () = tokio::time::sleep(GAUGE_REFRESH_INTERVAL) => {},
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(GAUGE_UPDATE_INTERVAL) => {},
        }
    }
}

#[allow(clippy::cast_precision_loss)] // gauges; exact below 2^53
fn set_gauges(status: &PublisherStatus) {
    metrics::gauge!("crm_publisher_published_position").set(status.published_position as f64);
    metrics::gauge!("crm_publisher_lag_events").set(status.lag_events as f64);
    metrics::gauge!("crm_publisher_lag_seconds").set(status.lag_seconds);
    metrics::gauge!("crm_publisher_connected").set(if status.connected == Some(true) {
        1.0
    } else {
        0.0
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpoint::{Checkpoint, CHECKPOINT_FORMAT};

    #[tokio::test]
    async fn status_counts_the_lag_from_the_oldest_unpublished_event() {
        use crm_eventstore::{EventId, ExpectedVersion, MemoryStore, ProposedEvent, StreamId};
        let store = MemoryStore::new();
        let stream = StreamId::new("case-1").unwrap();
        let events = (0..3)
            .map(|i| ProposedEvent {
                event_id: EventId(uuid::Uuid::from_u128(i + 1)),
                event_type: "CaseOpened".into(),
                schema_version: 1,
                occurred_at: Utc::now(),
                causation_id: None,
                correlation_id: None,
                actor: "test".into(),
                metadata: Vec::new(),
                payload: b"{}".to_vec(),
            })
            .collect();
        store
            .append(&stream, ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        let behind = PublisherStatus::compute(&store, "S", 1, Some(true), None).await;
        assert_eq!((behind.head_position, behind.lag_events), (3, 2));
        assert!(behind.lag_seconds >= 0.0);
        let caught_up = PublisherStatus::compute(&store, "S", 3, Some(false), None).await;
        assert_eq!((caught_up.lag_events, caught_up.lag_seconds), (0, 0.0));
        assert!(caught_up.to_string().contains("published 3 of 3"));

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            PublisherStatus::offline(&store, dir.path()).await.unwrap(),
            None
        );
        checkpoint::save(
            &checkpoint::path(dir.path()),
            &Checkpoint {
                format: CHECKPOINT_FORMAT,
                position: 2,
                stream: "CRM_EVENTS".into(),
            },
        )
        .unwrap();
        let offline = PublisherStatus::offline(&store, dir.path())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                offline.published_position,
                offline.lag_events,
                offline.connected
            ),
            (2, 1, None)
        );
        assert!(offline.to_string().contains("not running"));
    }
}
