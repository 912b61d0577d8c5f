//! `crm-publish`: event publication. Every committed event of the log, published to NATS JetStream once it
//! is durable, in log order, each position once (`crm serve --nats URL`).
//!
//! **What a subscriber sees.** One message per event on
//! `crm.events.<category>.<stream id>` (see [`message`] for the escaping rule), stored in the
//! JetStream stream `CRM_EVENTS` (file storage, created if absent). The body is the event's
//! JSON envelope (the form of `GET /v1/events`); the headers are CloudEvents 1.0 binary mode
//! (`ce-specversion`, `ce-id`, `ce-source`, `ce-type`, `ce-time`, `ce-subject`, `content-type`)
//! plus `crm-position`, `crm-stream-version`, `crm-schema-version`, `Nats-Msg-Id` (= event id)
//! and `Nats-Expected-Last-Sequence`. `gateway/asyncapi.json` is the contract;
//! `gateway/examples/consumer.rs` a durable consumer; `crm tail` a small one.
//!
//! **Ordering and exactly once.** The publisher keeps the JetStream stream's sequence equal to
//! the log position: the message of position `p` carries `Nats-Expected-Last-Sequence: p − 1`,
//! so JetStream stores it only right after position `p − 1`, never twice and never out of
//! order, even when acknowledgements are lost, the publisher restarts, or two publishers race.
//! Publishes are pipelined (up to [`WINDOW_DEFAULT`] acknowledgements in flight); the first
//! failure stops the session, the publisher asks the stream for its last sequence and resumes
//! right after it. A consumer therefore receives positions in order; after a consumer-side
//! redelivery (an ack it sent that was lost) it may see a position again, and skips every
//! message whose `crm-position` is not above the last one it processed.
//!
//! **Checkpoint and outages.** The last acknowledged position is saved durably in
//! `<data-dir>/publisher/checkpoint` ([`checkpoint`]) after each acknowledged batch. The
//! publisher is a reader of the log: appends never wait for it. While NATS is unreachable
//! or acknowledgements time out, it retries with capped exponential backoff
//! ([`BACKOFF_MIN`] .. [`BACKOFF_MAX`]) and the backlog drains, in order, when NATS returns.
//! On every (re)start it resumes after the last position the stream holds, which is the
//! checkpoint or later (an acknowledgement lost in a crash); a stream that holds less than the
//! checkpoint lost messages (it was recreated, or a server without `sync_interval: always`
//! lost them) and the missing positions are published again, with a warning.
//!
//! **Lag** (`lag_events` = head − published, `lag_seconds` = age of the oldest unpublished
//! event) is on `/metrics` (`crm_publisher_lag_events`, `crm_publisher_lag_seconds`,
//! `crm_publisher_published_position`, `crm_publisher_connected`) and in `crm project status`.
//!
//! **Architecture Invariant:** a position reaches the JetStream stream at most once and only
//! after every earlier position; the checkpoint never names a position JetStream has not
//! acknowledged; the publisher never writes to the log.

pub mod checkpoint;
pub mod message;
mod run;
mod status;
pub mod tail;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crm_eventstore::jetstream::subject::is_plain_token;
pub use crm_eventstore::jetstream::NatsClientAuth;
use crm_eventstore::EventStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use checkpoint::{Checkpoint, CheckpointError, CHECKPOINT_FORMAT};
pub use crm_app::config::publish::{
    PublishSettings, SOURCE_DEFAULT, STREAM_DEFAULT, SUBJECT_PREFIX_DEFAULT,
};
pub use status::{PublisherState, PublisherStatus};

/// Publishes whose acknowledgement may be outstanding at once.
pub const WINDOW_DEFAULT: usize = 256;
/// Most acknowledgements in flight whatever the settings say.
pub const WINDOW_MAX: usize = 4_096;
/// How long JetStream may take to acknowledge one publish before the session restarts.
pub const ACK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// How long connecting to NATS may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The stream's de-duplication window for `Nats-Msg-Id` (when the publisher creates it).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// First pause after a failed session.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between two sessions.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Shortest interval between two checkpoint saves (saves are coalesced).
pub const CHECKPOINT_SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest interval between two updates of the Prometheus gauges.
pub const GAUGE_UPDATE_INTERVAL: Duration = Duration::from_millis(100);
/// The gauges are refreshed at least this often (so `lag_seconds` grows while behind).
pub const GAUGE_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Most replicas of the stream.
pub const REPLICAS_MAX: usize = 5;

/// Everything a [`Publisher`] needs.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// NATS server URLs, comma-separated.
    pub url: String,
    /// The JetStream stream.
    pub stream: String,
    /// The subject prefix.
    pub subject_prefix: String,
    /// Replicas when creating the stream.
    pub replicas: usize,
    /// `ce-source`.
    pub source: String,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// Acknowledgements in flight at most.
    pub window: usize,
    /// How long one acknowledgement may take.
    pub ack_timeout: Duration,
    /// Credentials and TLS of the connection (`[nats.publish]`, else `[nats]`). The user
    /// needs: publish on `<subject_prefix>.>`, the JetStream API of the stream
    /// (`$JS.API.STREAM.INFO.<stream>`, `$JS.API.STREAM.CREATE.<stream>` unless the stream
    /// is created beforehand, `$JS.API.STREAM.MSG.GET.<stream>`) and `_INBOX.>` for replies.
    pub auth: NatsClientAuth,
}

impl PublisherOptions {
    /// Options from the settings, publishing to `url`, with the checkpoint in `data_dir`.
    #[must_use]
    pub fn new(settings: &PublishSettings, url: &str, data_dir: &Path) -> PublisherOptions {
        PublisherOptions {
            url: url.to_owned(),
            stream: settings.stream.clone(),
            subject_prefix: settings.subject_prefix.clone(),
            replicas: settings.replicas,
            source: settings.source.clone(),
            checkpoint: checkpoint::path(data_dir),
            window: WINDOW_DEFAULT,
            ack_timeout: ACK_TIMEOUT_DEFAULT,
            auth: NatsClientAuth::default(),
        }
    }

    fn validate(&self) -> Result<(), PublishError> {
        let invalid = |reason: String| Err(PublishError::Settings(reason));
        if self.url.trim().is_empty() {
            return invalid("the NATS URL is empty; give one such as nats://127.0.0.1:4222".into());
        }
        if !is_plain_token(&self.stream) {
            return invalid(format!(
                "stream name {:?} must be letters, digits, `-` and `_`",
                self.stream
            ));
        }
        if !self.subject_prefix.split('.').all(is_plain_token) {
            return invalid(format!(
                "subject prefix {:?} must be dot-separated tokens of letters, digits, `-` and `_` (no wildcards)",
                self.subject_prefix
            ));
        }
        if self.replicas == 0 || self.replicas > REPLICAS_MAX {
            return invalid(format!(
                "replicas = {}; use 1 on a single server, 3 in a cluster (at most {REPLICAS_MAX})",
                self.replicas
            ));
        }
        if self.source.is_empty() || self.source.contains(['\r', '\n']) {
            return invalid(format!(
                "source {:?} must be a non-empty URI reference on one line",
                self.source
            ));
        }
        if self.window == 0 || self.window > WINDOW_MAX {
            return invalid(format!("window = {}; use 1..={WINDOW_MAX}", self.window));
        }
        Ok(())
    }

    /// The subjects the stream captures: `<prefix>.>`.
    #[must_use]
    pub fn stream_subjects(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }
}

/// Why the publisher could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A setting is invalid.
    #[error("invalid publish settings: {0}")]
    Settings(String),
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// A running publisher: one task that publishes, one that saves checkpoints, one that keeps
/// the Prometheus gauges current. [`Publisher::stop`] ends them.
pub struct Publisher<S: EventStore> {
    store: S,
    stream: String,
    state: watch::Receiver<PublisherState>,
    stop: watch::Sender<bool>,
    publishing: JoinHandle<()>,
    saving: JoinHandle<()>,
    gauges: JoinHandle<()>,
}

impl<S: EventStore> Publisher<S> {
    /// Starts a publisher when the settings name a NATS URL (`--nats`, `CRM_NATS_URL`,
    /// `[publish] nats_url`), connecting with `auth`, with its checkpoint in `data_dir`.
    ///
    /// # Errors
    /// [`PublishError`] for invalid settings or an unreadable checkpoint.
    pub fn start_configured(
        store: S,
        settings: &PublishSettings,
        auth: &NatsClientAuth,
        data_dir: &Path,
    ) -> Result<Option<Publisher<S>>, PublishError> {
        let Some(url) = settings.nats_url.as_deref() else {
            return Ok(None);
        };
        let mut options = PublisherOptions::new(settings, url, data_dir);
        options.auth = auth.clone();
        eprintln!(
            "publishing committed events to NATS {url}: stream {}, subjects {}",
            options.stream,
            options.stream_subjects()
        );
        Publisher::start(store, options).map(Some)
    }

    /// Starts publishing `store`'s events (spawns on the current tokio runtime). Returns at
    /// once: connecting and catching up happen in the background, with retries.
    ///
    /// # Errors
    /// [`PublishError`] for invalid options or an unreadable checkpoint.
    pub fn start(store: S, options: PublisherOptions) -> Result<Publisher<S>, PublishError> {
        options.validate()?;
        let saved = checkpoint::load(&options.checkpoint)?;
        let initial = PublisherState {
            published_position: saved.as_ref().map_or(0, |c| c.position),
            connected: false,
            last_error: None,
        };
        // Make sure the gauges land in the process's Prometheus recorder.
        let _ = crm_app::telemetry::metrics_handle();
        let (state_tx, state) = watch::channel(initial);
        let state_tx = Arc::new(state_tx);
        let (stop, stop_rx) = watch::channel(false);
        let (saved_tx, saved_rx) = watch::channel(saved.as_ref().map_or(0, |c| c.position));
        let saving = tokio::spawn(save_checkpoints(
            options.checkpoint.clone(),
            options.stream.clone(),
            saved.map(|c| c.position),
            saved_rx,
            Arc::clone(&state_tx),
            stop_rx.clone(),
        ));
        let gauges = tokio::spawn(status::report_gauges(
            store.clone(),
            options.stream.clone(),
            state.clone(),
            stop_rx.clone(),
        ));
        let stream = options.stream.clone();
        let publishing = tokio::spawn(run::run(
            store.clone(),
            Arc::new(options),
            state_tx,
            saved_tx,
            stop_rx,
        ));
        Ok(Publisher {
            store,
            stream,
            state,
            stop,
            publishing,
            saving,
            gauges,
        })
    }

    /// The publisher's shared state (changes as acknowledgements arrive).
    #[must_use]
    pub fn state(&self) -> watch::Receiver<PublisherState> {
        self.state.clone()
    }

    /// Progress, lag and connection of this publisher.
    pub async fn status(&self) -> PublisherStatus {
        let state = self.state.borrow().clone();
        PublisherStatus::compute(
            &self.store,
            &self.stream,
            state.published_position,
            Some(state.connected),
            state.last_error,
        )
        .await
    }

    /// Stops publishing: waits for the acknowledgements in flight (each at most the ack
    /// timeout), saves the checkpoint and ends the tasks.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.publishing.await {
            tracing::warn!(error = %e, "the publisher task ended abnormally");
        }
        if let Err(e) = self.saving.await {
            tracing::warn!(error = %e, "the checkpoint task ended abnormally");
        }
        let _ = self.gauges.await;
    }
}

/// Saves the latest acknowledged position whenever it changes, at most every
/// [`CHECKPOINT_SAVE_INTERVAL`] (without pause once stopping); ends (after a last save) when
/// the publisher task ends.
async fn save_checkpoints(
    path: PathBuf,
    stream: String,
    mut saved: Option<u64>,
    mut positions: watch::Receiver<u64>,
    state: Arc<watch::Sender<PublisherState>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let changed = positions.changed().await;
        let position = *positions.borrow_and_update();
        if saved != Some(position) {
            let checkpoint = Checkpoint {
                format: CHECKPOINT_FORMAT,
                position,
                stream: stream.clone(),
            };
            let file = path.clone();
            let result = tokio::task::spawn_blocking(move || checkpoint::save(&file, &checkpoint))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            match result {
                Ok(()) => saved = Some(position),
                Err(e) => {
                    tracing::warn!(error = %e, "the publisher could not save its checkpoint");
                    state.send_modify(|s| s.last_error = Some(e));
                }
            }
        }
        if changed.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(CHECKPOINT_SAVE_INTERVAL) => {},
            _ = stop.wait_for(|stopped| *stopped) => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_before_anything_starts() {
        let dir = Path::new("/nonexistent");
        let good = PublisherOptions::new(&PublishSettings::default(), "nats://127.0.0.1:1", dir);
        assert!(good.validate().is_ok());
        assert_eq!(good.stream_subjects(), "crm.events.>");
        assert_eq!(good.checkpoint, dir.join("publisher/checkpoint"));
        let bad = |edit: fn(&mut PublisherOptions)| {
            let mut o = good.clone();
            edit(&mut o);
            o.validate().unwrap_err().to_string()
        };
        assert!(bad(|o| o.url = " ".into()).contains("URL is empty"));
        assert!(bad(|o| o.stream = "CRM.EVENTS".into()).contains("stream name"));
        assert!(bad(|o| o.subject_prefix = "crm.*".into()).contains("subject prefix"));
        assert!(bad(|o| o.subject_prefix = "crm..x".into()).contains("subject prefix"));
        assert!(bad(|o| o.replicas = 0).contains("replicas"));
        assert!(bad(|o| o.source = "a\nb".into()).contains("source"));
        assert!(bad(|o| o.window = 0).contains("window"));
    }
}
