//! [`AnyStore`]: one type for "whichever backend the configuration chose", so
//! a program (the `crm` gateway, a projection worker process) is written once
//! and runs on the embedded sled log or on a JetStream cluster.
//!
//! Every method delegates to the backend; no behaviour is added, so the
//! conformance suite's guarantees carry over unchanged.

use std::fmt;

use tokio::sync::watch;

use crate::error::{AppendError, ReadError};
use crate::store::{EventStore, VerifyReport};
use crate::types::{
    AppendResult, ExpectedVersion, Head, Position, ProposedEvent, RecordedEvent, StreamId,
    StreamVersion,
};
use crate::{JetStreamStore, MemoryStore, SledStore};

/// The log, on one of the backends.
#[derive(Clone)]
#[non_exhaustive]
pub enum AnyStore {
    /// The embedded default: a sled database in one directory, one process.
    Sled(SledStore),
    /// A NATS JetStream stream: replicated, shared by many processes.
    JetStream(JetStreamStore),
    /// The in-memory reference model (tests, scratch work).
    Memory(MemoryStore),
}

impl fmt::Debug for AnyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Calls the same method on whichever backend `self` holds.
macro_rules! delegate {
    ($self:expr, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sled($store) => $call,
            AnyStore::JetStream($store) => $call,
            AnyStore::Memory($store) => $call,
        }
    };
}

impl AnyStore {
    /// Where the log lives, for messages: `sled:<dir>`, `nats:<urls>/<stream>`, `memory`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            AnyStore::Sled(s) => format!("sled:{}", s.path().display()),
            AnyStore::JetStream(s) => {
                format!(
                    "{} (JetStream stream {})",
                    s.config().url,
                    s.config().stream_name
                )
            }
            AnyStore::Memory(_) => "memory".into(),
        }
    }

    /// Bytes the log occupies on this machine's disk, when it lives here.
    #[must_use]
    pub fn local_size_bytes(&self) -> Option<u64> {
        match self {
            AnyStore::Sled(s) => s.size_on_disk_bytes().ok(),
            AnyStore::JetStream(_) | AnyStore::Memory(_) => None,
        }
    }

    /// Finishes the appends already queued and releases the backend (the
    /// sled directory lock is released when the last clone is dropped).
    pub async fn close(self) {
        match self {
            AnyStore::Sled(s) => s.close().await,
            AnyStore::JetStream(_) | AnyStore::Memory(_) => {}
        }
    }
}

impl From<SledStore> for AnyStore {
    fn from(s: SledStore) -> AnyStore {
        AnyStore::Sled(s)
    }
}

impl From<JetStreamStore> for AnyStore {
    fn from(s: JetStreamStore) -> AnyStore {
        AnyStore::JetStream(s)
    }
}

impl From<MemoryStore> for AnyStore {
    fn from(s: MemoryStore) -> AnyStore {
        AnyStore::Memory(s)
    }
}

impl EventStore for AnyStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Result<AppendResult, AppendError> {
        delegate!(self, s => s.append(stream, expected, events).await)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        delegate!(self, s => s.read_stream(stream, from, max).await)
    }

    async fn read_all(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        delegate!(self, s => s.read_all(from, max).await)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, ReadError> {
        delegate!(self, s => s.stream_version(stream).await)
    }

    fn head(&self) -> Head {
        delegate!(self, s => s.head())
    }

    fn watch_head(&self) -> watch::Receiver<Head> {
        delegate!(self, s => s.watch_head())
    }

    async fn verify(
        &self,
        from: Position,
        to: Option<Position>,
    ) -> Result<VerifyReport, ReadError> {
        delegate!(self, s => s.verify(from, to).await)
    }
}
