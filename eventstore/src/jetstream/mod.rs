//! The NATS JetStream backend: the log as one JetStream stream, for a log
//! replicated over a NATS cluster and shared by processes on several hosts.
//!
//! **Layout.** One stream (file storage, `replicas` copies, `deny_delete`,
//! `deny_purge`, direct get and ADR-50 atomic batches allowed) with subjects
//! `<subject_prefix>.*`. Every event is one message on
//! `<subject_prefix>.<escaped stream id>` (see [`subject`]) whose payload is
//! the v1 frame of [`crate::codec`], so checksums, the hash chain, the golden
//! format and `verify` apply unchanged. The global position of an event *is*
//! its stream sequence.
//!
//! **Appends.** Because a frame embeds its position and `prev_hash`, each
//! process appends through one writer task (`writer.rs`) that commits all
//! queued appends together (group commit) as one atomic batch: up to 1,000
//! messages, stored all or none. The batch's first message carries
//! `Nats-Expected-Last-Sequence: <head>`, which fences the log: if another
//! process appended first, JetStream refuses the whole batch, the writer
//! catches up and validates the group again. The first message of each
//! append also carries `Nats-Expected-Last-Subject-Sequence` (the stream's
//! last position, 0 for a new stream) unless an earlier message of the same
//! batch writes that subject (ADR-50 cannot check it then; the global fence
//! covers it). A group of one message is a plain publish with the same
//! headers plus `Nats-Msg-Id` = event id.
//!
//! **Durability.** An append is answered `Ok` only after JetStream
//! acknowledged the batch: stored on a quorum of replicas. That ack means
//! *durable* only if every server runs with `jetstream { sync_interval:
//! always }`; with the default interval (2 minutes) an acknowledged append
//! can be lost on power loss (Jepsen, NATS 2.12.1). The test harness sets
//! it; every deployment must. Use server 2.12.3 or newer (atomic batches
//! need 2.12).
//!
//! **Idempotency.** Each process keeps an index (`index.rs`) of every event id
//! and every stream's positions, built at open by replaying the stream and
//! kept current by the writer and by a background tail (`tail.rs`). Retries
//! and conflicts are decided against it exactly as the other backends decide
//! them, for the whole history, not only the duplicate window. Across
//! processes the sequence fence makes the check exact: a process whose index
//! is behind is refused, catches up and then sees the ids. `Nats-Msg-Id`
//! on single-message appends (servers before 2.15 refuse it in atomic
//! batches) adds the server's own de-duplication within `duplicate_window`
//! as a second line of defence; nothing depends on it, so the check holds
//! beyond that window. Not covered: messages published to the stream's
//! subjects by anything but this store (they break the chain and are
//! reported as corrupt). The cost of the index: about 50 bytes
//! of memory per event, and a full replay of the stream at open.
//!
//! **Reads** are batched direct gets bounded by the head this process
//! knows; `read_stream` uses the stream's positions from the index and
//! `next_by_subj`. A replica that is behind answers with fewer messages and
//! the read is retried. `watch_head` follows the tail, so appends made by
//! other processes wake subscriptions. `verify` is the trait's default.
//!
//! **When JetStream is unavailable** (no leader, no quorum), an append is
//! retried until `append_timeout` and then answered
//! [`AppendError::Unavailable`]: its outcome is unknown, and resending it
//! unchanged is safe. A minority partition therefore refuses writes; it
//! never accepts one that the majority does not have.

pub mod auth;
mod index;
mod nats;
pub mod subject;
mod tail;
mod writer;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::{ConnectOptions, ServerAddr};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, error};

use crate::codec;
use crate::error::{AppendError, Corruption, OpenError, ReadError};
use crate::limits::{APPEND_QUEUE_DEPTH, READ_PAGE_MAX};
use crate::store::{check_append, check_batch, page_size, EventStore};
use crate::types::{
    AppendResult, ExpectedVersion, Head, Position, ProposedEvent, RecordedAt, RecordedEvent,
    StreamAppend, StreamId, StreamVersion,
};
pub use auth::{NatsClientAuth, NatsConnectError, NatsCredentials, NatsTls, Secret, SecretSource};
use index::Index;
use nats::Nats;
use writer::Request;

/// Most frame bytes one read fetches before it returns a shorter page.
pub const READ_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Where the log lives on NATS and how patiently the store talks to it.
#[derive(Clone, Debug)]
pub struct JetStreamConfig {
    /// Server URLs, comma-separated (`nats://10.0.0.1:4222,nats://10.0.0.2:4222`);
    /// the client fails over between them.
    pub url: String,
    /// The JetStream stream holding the log (letters, digits, `-`, `_`).
    pub stream_name: String,
    /// Subjects are `<subject_prefix>.<escaped stream id>` (dot-separated plain tokens).
    pub subject_prefix: String,
    /// Copies of the stream: 1 on a single server, 3 in a cluster.
    pub replicas: usize,
    /// The server's de-duplication window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// How long one request to NATS may take.
    pub request_timeout: Duration,
    /// How long an append is retried while JetStream is unavailable before
    /// it is answered [`AppendError::Unavailable`].
    pub append_timeout: Duration,
    /// How long `open` waits for the servers and the stream.
    pub open_timeout: Duration,
    /// Whether `open` creates the stream when it does not exist. Readers
    /// (verify, projections) set it to `false`, so a mistyped stream name is
    /// an error rather than a new, empty log.
    pub create_if_missing: bool,
    /// Credentials and TLS of the connection (default: none, an open server). The account
    /// of the user needs JetStream, the stream's subjects `<subject_prefix>.>`, the
    /// JetStream API of the stream (`$JS.API.STREAM.*.<stream_name>`,
    /// `$JS.API.DIRECT.GET.<stream_name>`, `$JS.API.CONSUMER.*.<stream_name>.>`,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream_name>.>`) and replies on `_INBOX.>`.
    pub auth: NatsClientAuth,
}

impl JetStreamConfig {
    /// The defaults for the servers at `url`: stream `CRM_LOG`, subjects
    /// `crm.log.*`, one replica.
    pub fn new(url: impl Into<String>) -> JetStreamConfig {
        JetStreamConfig {
            url: url.into(),
            stream_name: "CRM_LOG".into(),
            subject_prefix: "crm.log".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            request_timeout: Duration::from_secs(5),
            append_timeout: Duration::from_secs(30),
            open_timeout: Duration::from_secs(30),
            create_if_missing: true,
            auth: NatsClientAuth::default(),
        }
    }
}

pub(crate) struct Shared {
    nats: Nats,
    config: JetStreamConfig,
    index: Mutex<Index>,
    head: watch::Sender<Head>,
    /// Set when the log broke its own invariants; the store then refuses writes.
    failed: Mutex<Option<String>>,
    /// Last position of the batch the writer has in flight (0: none). The
    /// tail leaves those records to the writer, which indexes them on the
    /// ack or catches up on any failure.
    in_flight: AtomicU64,
}

impl Shared {
    fn index(&self) -> MutexGuard<'_, Index> {
        // Index::apply checks everything before it changes anything.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fail(&self, reason: String) {
        error!(stream = %self.config.stream_name, %reason, "JetStream event store refuses writes from now on");
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    fn subject(&self, stream: &StreamId) -> String {
        format!(
            "{}.{}",
            self.config.subject_prefix,
            subject::escape_token(stream.as_str())
        )
    }

    fn read_deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout * 3
    }

    /// Indexes records read or written, in order, and publishes the new head.
    fn apply(&self, records: &[RecordedEvent]) -> Result<(), Corruption> {
        let mut ix = self.index();
        for rec in records {
            ix.apply(rec)?;
        }
        let head = ix.head();
        // Published under the index lock, so heads go out in order.
        self.head.send_if_modified(|h| {
            let newer = h.position < head.position;
            if newer {
                *h = head;
            }
            newer
        });
        Ok(())
    }

    /// Records `from..from+count` (fewer if they pass [`READ_BYTES_MAX`]).
    async fn read_records(
        &self,
        from: Position,
        count: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let raw = self
            .nats
            .read_range(from.0, count, None, READ_BYTES_MAX, self.read_deadline())
            .await?;
        raw.iter().map(|(seq, frame)| decode(*seq, frame)).collect()
    }

    async fn record_at(&self, position: Position) -> Result<RecordedEvent, ReadError> {
        self.read_records(position, 1)
            .await?
            .pop()
            .ok_or_else(|| ReadError::Unavailable(format!("record {position} was not served")))
    }

    /// Reads and indexes records up to sequence `target` (the stream's last
    /// sequence if `None`).
    async fn catch_up(&self, target: Option<u64>) -> Result<(), ReadError> {
        let target = match target {
            Some(t) => t,
            None => self.nats.last_sequence().await?,
        };
        loop {
            let head = self.index().head().position.0;
            if head >= target {
                return Ok(());
            }
            let count = usize::try_from(target - head)
                .unwrap_or(READ_PAGE_MAX)
                .min(READ_PAGE_MAX);
            let from = Position(head + 1);
            let records = self.read_records(from, count).await?;
            let Some(last) = records.last().map(|r| r.position) else {
                return Err(ReadError::Unavailable(format!(
                    "record {from} was not served"
                )));
            };
            self.apply(&records).map_err(|reason| {
                self.fail(reason.to_string());
                ReadError::Corrupt {
                    position: last,
                    reason,
                }
            })?;
        }
    }
}

fn decode(seq: u64, frame: &[u8]) -> Result<RecordedEvent, ReadError> {
    codec::decode(frame, Some(Position(seq)), false).map_err(|e| ReadError::Corrupt {
        position: Position(seq),
        reason: e.into(),
    })
}

/// Drops with the last clone of the store, which stops the tail.
struct Closer(#[allow(dead_code)] watch::Sender<()>);

/// The JetStream-backed [`EventStore`]. Cheap to clone; clones share one
/// connection, one writer and one index.
#[derive(Clone)]
pub struct JetStreamStore {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Request>,
    _closer: Arc<Closer>,
}

impl JetStreamStore {
    /// Connects, creates the stream if it does not exist (or checks that the
    /// existing one fits), replays it into the index and starts the writer
    /// and the tail. Needs a Tokio runtime.
    pub async fn open(config: JetStreamConfig) -> Result<JetStreamStore, OpenError> {
        let shown = format!("{} (stream {})", config.url, config.stream_name);
        let fail = |reason: SetupError| OpenError::Unreachable {
            path: shown.clone(),
            reason: reason.to_string(),
        };
        check_config(&config).map_err(fail)?;
        let deadline = Instant::now() + config.open_timeout;
        let client = connect(&config).await.map_err(fail)?;
        ensure_stream(&client, &config, deadline)
            .await
            .map_err(fail)?;
        let (head_tx, _) = watch::channel(Head::default());
        let shared = Arc::new(Shared {
            nats: Nats::new(client, config.stream_name.clone(), config.request_timeout),
            config,
            index: Mutex::new(Index::default()),
            head: head_tx,
            failed: Mutex::new(None),
            in_flight: AtomicU64::new(0),
        });
        loop {
            match shared.catch_up(None).await {
                Ok(()) => break,
                Err(ReadError::Unavailable(e)) if Instant::now() < deadline => {
                    debug!(error = %e, "JetStream not ready; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e @ ReadError::Corrupt { .. }) => {
                    return Err(OpenError::Damaged {
                        path: shown,
                        reason: e.to_string(),
                    })
                }
                Err(e) => return Err(fail(SetupError::Replay(e))),
            }
        }
        debug!(stream = %shared.config.stream_name, head = shared.index().head().position.0, "opened JetStream event store");
        let (tx, rx) = mpsc::channel(APPEND_QUEUE_DEPTH);
        tokio::spawn(writer::run(shared.clone(), rx));
        let (closer, closed) = watch::channel(());
        tokio::spawn(tail::run(Arc::downgrade(&shared), closed));
        Ok(JetStreamStore {
            shared,
            requests: tx,
            _closer: Arc::new(Closer(closer)),
        })
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &JetStreamConfig {
        &self.shared.config
    }
}

/// Why [`JetStreamStore::open`] could not reach or set up the stream (the
/// reason of [`OpenError::Unreachable`]).
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("stream name {0:?} must be letters, digits, `-` and `_` only")]
    BadStreamName(String),
    #[error("subject prefix {0:?} must be dot-separated tokens of letters, digits, `-` and `_`")]
    BadSubjectPrefix(String),
    #[error("replicas must be 1 to 5, got {0}")]
    BadReplicas(usize),
    #[error("bad NATS url {url:?}: {reason}")]
    BadUrl { url: String, reason: std::io::Error },
    #[error("{0}")]
    Connect(NatsConnectError),
    #[error("there is no JetStream stream `{stream}` on {url} (the configured `stream_name`), and this open does not create one (`create_if_missing` is off)")]
    NoStream { stream: String, url: String },
    #[error("could not create or find the JetStream stream: {reason}; check that JetStream is enabled (server 2.12+) and that enough servers are up for {replicas} replicas")]
    StreamNotReady {
        reason: FindStreamError,
        replicas: usize,
    },
    #[error("the existing stream does not fit the event log: {}; use another stream name, or update the stream", list(.0))]
    StreamMisfits(Vec<Misfit>),
    /// Replaying the stream into the index failed for a reason other than a corrupt record.
    #[error("{0}")]
    Replay(ReadError),
}

/// Why the stream could not be looked up or created.
#[derive(Debug, thiserror::Error)]
enum FindStreamError {
    #[error(transparent)]
    Create(async_nats::jetstream::context::CreateStreamError),
    #[error(transparent)]
    Get(async_nats::jetstream::context::GetStreamError),
}

/// A setting of an existing stream that does not fit the event log.
#[derive(Debug, thiserror::Error)]
enum Misfit {
    #[error("subjects {have:?} (want {want:?})")]
    Subjects { have: Vec<String>, want: String },
    #[error("allow_atomic is off")]
    AtomicPublishOff,
    #[error("allow_direct is off")]
    DirectGetOff,
    #[error("deletes or purges are allowed")]
    DeletesAllowed,
    #[error("storage is not file")]
    NotFileStorage,
}

fn list(misfits: &[Misfit]) -> String {
    misfits
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_config(config: &JetStreamConfig) -> Result<(), SetupError> {
    if !subject::is_plain_token(&config.stream_name) {
        return Err(SetupError::BadStreamName(config.stream_name.clone()));
    }
    if !config
        .subject_prefix
        .split('.')
        .all(subject::is_plain_token)
    {
        return Err(SetupError::BadSubjectPrefix(config.subject_prefix.clone()));
    }
    if !(1..=5).contains(&config.replicas) {
        return Err(SetupError::BadReplicas(config.replicas));
    }
    Ok(())
}

async fn connect(config: &JetStreamConfig) -> Result<async_nats::Client, SetupError> {
    let addrs = config
        .url
        .split(',')
        .map(|u| u.trim().parse::<ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| SetupError::BadUrl {
            url: config.url.clone(),
            reason,
        })?;
    let options = ConnectOptions::new()
        .connection_timeout(config.request_timeout)
        .request_timeout(Some(config.request_timeout))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(u64::try_from(attempts).unwrap_or(10).min(10) * 100)
        });
    config
        .auth
        .connect(options, addrs.as_slice(), &config.url)
        .await
        .map_err(SetupError::Connect)
}

async fn ensure_stream(
    client: &async_nats::Client,
    config: &JetStreamConfig,
    deadline: Instant,
) -> Result<(), SetupError> {
    let js = async_nats::jetstream::new(client.clone());
    let subjects = format!("{}.*", config.subject_prefix);
    let wanted = StreamConfig {
        name: config.stream_name.clone(),
        subjects: vec![subjects.clone()],
        storage: StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        allow_atomic_publish: true,
        description: Some("crm event log (crm-eventstore frames v1)".into()),
        ..Default::default()
    };
    let stream = loop {
        let found = if config.create_if_missing {
            js.get_or_create_stream(wanted.clone())
                .await
                .map_err(FindStreamError::Create)
        } else {
            match js.get_stream(&config.stream_name).await {
                Err(e)
                    if matches!(
                        e.kind(),
                        async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                            if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
                    ) =>
                {
                    return Err(SetupError::NoStream {
                        stream: config.stream_name.clone(),
                        url: config.url.clone(),
                    });
                }
                other => other.map_err(FindStreamError::Get),
            }
        };
        match found {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                debug!(error = %e, "JetStream stream not ready; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(reason) => {
                return Err(SetupError::StreamNotReady {
                    reason,
                    replicas: config.replicas,
                })
            }
        }
    };
    let have = &stream.cached_info().config;
    let mut wrong = Vec::new();
    if !have.subjects.contains(&subjects) {
        wrong.push(Misfit::Subjects {
            have: have.subjects.clone(),
            want: subjects,
        });
    }
    if !have.allow_atomic_publish {
        wrong.push(Misfit::AtomicPublishOff);
    }
    if !have.allow_direct {
        wrong.push(Misfit::DirectGetOff);
    }
    if !have.deny_delete || !have.deny_purge {
        wrong.push(Misfit::DeletesAllowed);
    }
    if have.storage != StorageType::File {
        wrong.push(Misfit::NotFileStorage);
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(SetupError::StreamMisfits(wrong))
    }
}

impl EventStore for JetStreamStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Result<AppendResult, AppendError> {
        check_append(&events)?;
        if let Some(reason) = self.shared.failure() {
            return Err(AppendError::StorageFailed(reason));
        }
        let (reply, answer) = oneshot::channel();
        let request = Request {
            stream: stream.clone(),
            expected,
            events,
            recorded_at: RecordedAt::Now,
            reply,
        };
        self.requests
            .send(request)
            .await
            .map_err(|_| AppendError::Closed)?;
        answer
            .await
            .map_err(|_| AppendError::Unavailable("the writer stopped before answering".into()))?
    }

    /// The parts go to the single writer one after the other, so they keep their order (it
    /// may publish them in several atomic batches, with other processes' appends between).
    async fn append_batch(
        &self,
        parts: Vec<StreamAppend>,
        recorded_at: RecordedAt,
    ) -> Result<Vec<Result<AppendResult, AppendError>>, AppendError> {
        check_batch(&parts, recorded_at, chrono::Utc::now())?;
        if let Some(reason) = self.shared.failure() {
            return Err(AppendError::StorageFailed(reason));
        }
        let mut answers = Vec::with_capacity(parts.len());
        for part in parts {
            if let Err(e) = check_append(&part.events) {
                answers.push(Err(e));
                continue;
            }
            let (reply, answer) = oneshot::channel();
            let request = Request {
                stream: part.stream,
                expected: part.expected,
                events: part.events,
                recorded_at,
                reply,
            };
            self.requests
                .send(request)
                .await
                .map_err(|_| AppendError::Closed)?;
            answers.push(Ok(answer));
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(match answer {
                Ok(answer) => answer.await.unwrap_or_else(|_| {
                    Err(AppendError::Unavailable(
                        "the writer stopped before answering".into(),
                    ))
                }),
                Err(e) => Err(e),
            });
        }
        Ok(results)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let positions = self
            .shared
            .index()
            .stream_positions(stream, from, page_size(max));
        let Some(first) = positions.first() else {
            return Ok(Vec::new());
        };
        let subject = self.shared.subject(stream);
        let raw = self
            .shared
            .nats
            .read_range(
                first.0,
                positions.len(),
                Some(&subject),
                READ_BYTES_MAX,
                self.shared.read_deadline(),
            )
            .await?;
        let mut version = StreamVersion(from.0.max(1));
        let mut out = Vec::with_capacity(raw.len());
        for ((seq, frame), expected) in raw.iter().zip(&positions) {
            let rec = decode(*seq, frame)?;
            if rec.position != *expected
                || &rec.stream_id != stream
                || rec.stream_version != version
            {
                return Err(ReadError::Corrupt {
                    position: rec.position,
                    reason: Corruption::IndexMismatch {
                        stream: stream.clone(),
                        version,
                        indexed_at: *expected,
                        found_stream: rec.stream_id,
                        found_version: rec.stream_version,
                    },
                });
            }
            version = StreamVersion(version.0 + 1);
            out.push(rec);
        }
        Ok(out)
    }

    async fn read_all(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let from = from.max(Position::FIRST);
        let head = self.shared.index().head().position;
        if from > head || max == 0 {
            return Ok(Vec::new());
        }
        let count = usize::try_from(head.0 - from.0 + 1)
            .unwrap_or(READ_PAGE_MAX)
            .min(page_size(max));
        self.shared.read_records(from, count).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, ReadError> {
        Ok(self.shared.index().stream_version(stream))
    }

    fn head(&self) -> Head {
        *self.shared.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<Head> {
        self.shared.head.subscribe()
    }
}
