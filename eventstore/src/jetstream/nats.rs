//! The few JetStream operations the backend needs, spoken over the core NATS
//! client: stream info, batched direct gets, and publishes (single messages
//! and ADR-50 atomic batches) whose answers are classified for the writer.

use std::time::Duration;

use async_nats::{Client, HeaderMap, Message, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::time::{sleep, timeout, Instant};

use crate::error::ReadError;

/// Pause between two tries of a read the server could not answer yet.
const READ_RETRY_PAUSE_MS: u64 = 25;
/// In an atomic batch, every this many messages the writer asks for a
/// (zero-byte) acknowledgement, so a refused batch is noticed early and the
/// client never runs far ahead of the server.
const BATCH_FLOW_CONTROL_EVERY: usize = 250;

/// JetStream API error codes the writer treats specially.
const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;
const ERR_WRONG_LAST_SEQUENCE_CONSTANT: u64 = 10164;
const ERR_JETSTREAM_UNAVAILABLE: u64 = 10008;
const ERR_BATCH_INCOMPLETE: u64 = 10176;
/// "duplicate message id is in process": an earlier publish of the same
/// `Nats-Msg-Id` is not decided yet (e.g. proposed while quorum was lost).
const ERR_MSG_ID_IN_PROCESS: u64 = 10158;

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize)]
struct PubAck {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    duplicate: bool,
}

#[derive(Debug, Deserialize)]
struct StreamState {
    #[serde(default)]
    last_seq: u64,
}

#[derive(Debug, Deserialize)]
struct StreamInfo {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    state: Option<StreamState>,
}

/// Why a publish did not produce an acknowledgement.
#[derive(Debug, thiserror::Error)]
pub(super) enum PubError {
    /// The log (or the stream) is not where the writer expected it: another
    /// writer appended. Nothing of this publish was stored.
    #[error("{0}")]
    Fenced(String),
    /// No answer, or JetStream cannot take writes now (no leader, no quorum,
    /// reconnecting). The outcome is unknown.
    #[error("{0}")]
    Unavailable(String),
    /// Refused for a reason a retry will not fix.
    #[error("{0}")]
    Refused(String),
}

/// Why a read from JetStream (stream info, direct get) gave no answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum NatsReadError {
    /// The request itself went unanswered or was refused.
    #[error(transparent)]
    Request(PubError),
    #[error("unreadable stream info from JetStream: {0}")]
    UnreadableStreamInfo(serde_json::Error),
    #[error("JetStream stream info for `{stream}` failed: {description} (error {code})")]
    StreamInfoRefused {
        stream: String,
        description: String,
        code: u64,
    },
    #[error("JetStream answered sequence {answered} where {asked} was asked for")]
    WrongSequence { answered: u64, asked: u64 },
    #[error("JetStream holds no message at or after sequence {0} though the log's head is past it (a replica may be catching up); retry")]
    NotYetServed(u64),
    #[error("could not encode a direct get request: {0}")]
    EncodeRequest(serde_json::Error),
    #[error("could not subscribe for a direct get: {0}")]
    Subscribe(async_nats::SubscribeError),
    #[error("could not send a direct get: {0}")]
    Send(async_nats::PublishError),
    #[error("direct get timed out after {0:?}")]
    TimedOut(Duration),
    #[error("the NATS connection closed during a direct get")]
    ConnectionClosed,
    #[error("a direct get answer carries no Nats-Sequence header")]
    NoSequenceHeader,
    #[error("direct get answered status {status} {description}")]
    Status { status: u16, description: String },
}

impl From<NatsReadError> for ReadError {
    fn from(e: NatsReadError) -> Self {
        ReadError::Unavailable(e.to_string())
    }
}

/// One message to publish: subject, headers, payload (a frame).
pub(super) struct OutMessage {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// The connection to one JetStream stream.
pub(super) struct Nats {
    pub client: Client,
    pub stream: String,
    pub timeout: Duration,
    direct_subject: String,
    info_subject: String,
}

impl Nats {
    pub(super) fn new(client: Client, stream: String, timeout: Duration) -> Nats {
        Nats {
            direct_subject: format!("$JS.API.DIRECT.GET.{stream}"),
            info_subject: format!("$JS.API.STREAM.INFO.{stream}"),
            client,
            stream,
            timeout,
        }
    }

    /// The stream's last sequence, as its leader reports it.
    pub(super) async fn last_sequence(&self) -> Result<u64, NatsReadError> {
        let reply = self
            .request(&self.info_subject, HeaderMap::new(), Bytes::new())
            .await
            .map_err(NatsReadError::Request)?;
        let info: StreamInfo =
            serde_json::from_slice(&reply.payload).map_err(NatsReadError::UnreadableStreamInfo)?;
        if let Some(e) = info.error {
            return Err(NatsReadError::StreamInfoRefused {
                stream: self.stream.clone(),
                description: e.description,
                code: e.err_code,
            });
        }
        Ok(info.state.map_or(0, |s| s.last_seq))
    }

    /// Reads up to `count` messages from sequence `from` (only those on
    /// `subject` when given), stopping early once `bytes_max` is reached
    /// (always at least one message). Retries while a replica that is behind
    /// answers with fewer messages than exist, until `deadline`.
    pub(super) async fn read_range(
        &self,
        from: u64,
        count: usize,
        subject: Option<&str>,
        bytes_max: usize,
        deadline: Instant,
    ) -> Result<Vec<(u64, Bytes)>, NatsReadError> {
        let mut out: Vec<(u64, Bytes)> = Vec::with_capacity(count.min(1024));
        let mut next = from;
        let mut bytes = 0usize;
        while out.len() < count && (out.is_empty() || bytes < bytes_max) {
            let want = count - out.len();
            let budget = bytes_max.saturating_sub(bytes).max(1);
            match self.direct_batch(next, want, subject, budget).await {
                Ok(got) if !got.is_empty() => {
                    for (seq, data) in got {
                        if seq < next || (subject.is_none() && seq != next) {
                            return Err(NatsReadError::WrongSequence {
                                answered: seq,
                                asked: next,
                            });
                        }
                        next = seq.saturating_add(1);
                        bytes = bytes.saturating_add(data.len());
                        out.push((seq, data));
                        if out.len() == count {
                            break;
                        }
                    }
                }
                Ok(_) if Instant::now() >= deadline => {
                    return Err(NatsReadError::NotYetServed(next));
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Ok(_) | Err(_) => sleep(Duration::from_millis(READ_RETRY_PAUSE_MS)).await,
            }
        }
        Ok(out)
    }

    /// One batched direct get (ADR-31): the messages and the end-of-batch marker.
    async fn direct_batch(
        &self,
        from: u64,
        count: usize,
        subject: Option<&str>,
        bytes_max: usize,
    ) -> Result<Vec<(u64, Bytes)>, NatsReadError> {
        let mut request =
            serde_json::json!({ "seq": from, "batch": count, "max_bytes": bytes_max });
        if let Some(s) = subject {
            request["next_by_subj"] = serde_json::Value::from(s);
        }
        let body = serde_json::to_vec(&request).map_err(NatsReadError::EncodeRequest)?;
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(NatsReadError::Subscribe)?;
        self.client
            .publish_with_reply(self.direct_subject.clone(), inbox, body.into())
            .await
            .map_err(NatsReadError::Send)?;
        let mut out = Vec::new();
        loop {
            let msg = match timeout(self.timeout, sub.next()).await {
                Err(_) => return Err(NatsReadError::TimedOut(self.timeout)),
                Ok(None) => return Err(NatsReadError::ConnectionClosed),
                Ok(Some(msg)) => msg,
            };
            match msg.status {
                None => {
                    let seq =
                        header_u64(&msg, "Nats-Sequence").ok_or(NatsReadError::NoSequenceHeader)?;
                    out.push((seq, msg.payload));
                    if out.len() >= count {
                        // The end-of-batch marker follows; not waiting for it is fine.
                        return Ok(out);
                    }
                }
                Some(StatusCode::NOT_FOUND) => return Ok(out),
                Some(s) if s.as_u16() == 204 => return Ok(out),
                Some(s) => {
                    return Err(NatsReadError::Status {
                        status: s.as_u16(),
                        description: msg.description.unwrap_or_default(),
                    })
                }
            }
        }
    }

    /// Publishes `messages` so that all or none are stored: one message as a
    /// plain JetStream publish, several as an ADR-50 atomic batch. Returns the
    /// stream sequence of the last message.
    pub(super) async fn publish(&self, mut messages: Vec<OutMessage>) -> Result<u64, PubError> {
        let total = messages.len();
        if total <= 1 {
            let Some(m) = messages.pop() else {
                return Err(PubError::Refused("nothing to publish".into()));
            };
            let reply = self.request(&m.subject, m.headers, m.payload).await?;
            return pub_ack(&reply);
        }
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        for (i, mut m) in messages.into_iter().enumerate() {
            let sequence = i + 1;
            m.headers.insert("Nats-Batch-Id", batch_id.as_str());
            m.headers
                .insert("Nats-Batch-Sequence", sequence.to_string().as_str());
            if sequence == total {
                m.headers.insert("Nats-Batch-Commit", "1");
                let reply = self.request(&m.subject, m.headers, m.payload).await?;
                return pub_ack(&reply);
            }
            if i == 0 || sequence % BATCH_FLOW_CONTROL_EVERY == 0 {
                let reply = self.request(&m.subject, m.headers, m.payload).await?;
                if !reply.payload.is_empty() {
                    pub_ack(&reply)?;
                }
            } else {
                self.client
                    .publish_with_headers(m.subject, m.headers, m.payload)
                    .await
                    .map_err(|e| PubError::Unavailable(format!("publish failed: {e}")))?;
            }
        }
        Err(PubError::Refused("an atomic batch without a commit".into()))
    }

    async fn request(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Message, PubError> {
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload)
            .timeout(Some(self.timeout));
        let reply = self
            .client
            .send_request(subject.to_owned(), request)
            .await
            .map_err(|e| {
                use async_nats::RequestErrorKind as K;
                match e.kind() {
                    K::TimedOut | K::NoResponders | K::Other => {
                        PubError::Unavailable(format!("JetStream did not answer: {e}"))
                    }
                    _ => PubError::Refused(format!("JetStream request failed: {e}")),
                }
            })?;
        if reply.status == Some(StatusCode::NO_RESPONDERS) {
            return Err(PubError::Unavailable(
                "no JetStream server answers for the stream (no responders)".into(),
            ));
        }
        Ok(reply)
    }
}

fn header_u64(msg: &Message, name: &str) -> Option<u64> {
    msg.headers.as_ref()?.get(name)?.as_str().parse().ok()
}

fn pub_ack(reply: &Message) -> Result<u64, PubError> {
    let ack: PubAck = serde_json::from_slice(&reply.payload).map_err(|e| {
        PubError::Unavailable(format!(
            "unreadable publish acknowledgement ({e}): {:?}",
            String::from_utf8_lossy(&reply.payload)
        ))
    })?;
    if let Some(e) = ack.error {
        let text = format!("{} (JetStream error {})", e.description, e.err_code);
        return Err(match (e.code, e.err_code) {
            (_, ERR_WRONG_LAST_SEQUENCE | ERR_WRONG_LAST_SEQUENCE_CONSTANT) => {
                PubError::Fenced(text)
            }
            (_, ERR_JETSTREAM_UNAVAILABLE | ERR_BATCH_INCOMPLETE | ERR_MSG_ID_IN_PROCESS)
            | (408 | 503 | 504, _) => PubError::Unavailable(text),
            _ => PubError::Refused(text),
        });
    }
    if ack.duplicate {
        return Err(PubError::Fenced(format!(
            "JetStream reports a duplicate of the message at sequence {}",
            ack.seq
        )));
    }
    Ok(ack.seq)
}
