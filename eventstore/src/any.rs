//! [`AnyStore`]: one type for "whichever backend the configuration chose", so
//! a program (the `crm` gateway, a projection worker process) is written once
//! and runs on the embedded sled log or on a JetStream cluster.
//!
//! Every method delegates to the backend, so the conformance suite's guarantees carry over
//! unchanged. The one addition is an optional [`Sealer`]: the program that opens the log
//! may give one, and then every append through this handle passes it first (to encrypt
//! fields the program marks as personal) and tells it what was appended (to destroy a key
//! once an erasure is recorded). The store still never interprets payloads: what is sealed,
//! and how, is the sealer's business.
//!
//! **Architecture Invariant:** with a sealer set, no append through [`AnyStore`] reaches the
//! backend without passing [`Sealer::seal`]; a refusal appends nothing.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::{AppendError, ReadError, SealRefusal};
use crate::store::{EventStore, SelectedPage, Selector, VerifyReport};
use crate::types::{
    AppendResult, ExpectedVersion, Head, Position, ProposedEvent, RecordedAt, RecordedEvent,
    StreamAppend, StreamId, StreamVersion,
};
use crate::{JetStreamStore, MemoryStore, SledStore};

/// What a [`Sealer`] has to do for one append.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealPlan {
    /// Some event holds a field to seal: [`Sealer::seal`] runs before the append.
    pub seal: bool,
    /// Some event asks for work once it is durable: [`Sealer::appended`] runs after it.
    pub after_append: bool,
}

/// Seals fields of events before the log stores them, and is told what was appended. Given to
/// an [`AnyStore`] by the program that opens it ([`AnyStore::with_sealer`]). Both
/// [`Sealer::seal`] and [`Sealer::appended`] may block (key files are synced): the store
/// runs them on a blocking thread, and only when [`Sealer::plan`] says so.
pub trait Sealer: Send + Sync + fmt::Debug + 'static {
    /// What `events` need; cheap (called on every append).
    fn plan(&self, events: &[ProposedEvent]) -> SealPlan;

    /// Rewrites `events` of `stream` in place so that the fields to protect are sealed.
    ///
    /// # Errors
    /// [`SealRefusal`] when an event cannot be written as asked; nothing is appended.
    fn seal(&self, stream: &StreamId, events: &mut [ProposedEvent]) -> Result<(), SealRefusal>;

    /// Called once `events` of `stream` are durable (or were already in the log).
    ///
    /// # Errors
    /// [`SealRefusal`] when the follow-up work failed; the events stay appended.
    fn appended(&self, stream: &StreamId, events: &[ProposedEvent]) -> Result<(), SealRefusal>;

    /// The sealer as [`Any`], so the program that set it can get its own type back.
    fn as_any(&self) -> &dyn Any;
}

/// The backend an [`AnyStore`] delegates to.
#[derive(Clone)]
enum Backend {
    Sled(SledStore),
    JetStream(JetStreamStore),
    Memory(MemoryStore),
}

/// The log, on one of the backends, with an optional [`Sealer`].
#[derive(Clone)]
pub struct AnyStore {
    backend: Backend,
    sealer: Option<Arc<dyn Sealer>>,
}

impl fmt::Debug for AnyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Calls the same method on whichever backend `self` holds.
macro_rules! delegate {
    ($self:expr, $store:ident => $call:expr) => {
        match &$self.backend {
            Backend::Sled($store) => $call,
            Backend::JetStream($store) => $call,
            Backend::Memory($store) => $call,
        }
    };
}

impl AnyStore {
    /// The same log, with every append passing `sealer` first.
    #[must_use]
    pub fn with_sealer(self, sealer: Arc<dyn Sealer>) -> AnyStore {
        AnyStore {
            backend: self.backend,
            sealer: Some(sealer),
        }
    }

    /// The sealer set with [`AnyStore::with_sealer`], if any.
    #[must_use]
    pub fn sealer(&self) -> Option<&Arc<dyn Sealer>> {
        self.sealer.as_ref()
    }

    /// Where the log lives, for messages: `sled:<dir>`, `nats:<urls>/<stream>`, `memory`.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sled(s) => format!("sled:{}", s.path().display()),
            Backend::JetStream(s) => {
                format!(
                    "{} (JetStream stream {})",
                    s.config().url,
                    s.config().stream_name
                )
            }
            Backend::Memory(_) => "memory".into(),
        }
    }

    /// Bytes the log occupies on this machine's disk, when it lives here.
    #[must_use]
    pub fn local_size_bytes(&self) -> Option<u64> {
        match &self.backend {
            Backend::Sled(s) => s.size_on_disk_bytes().ok(),
            Backend::JetStream(_) | Backend::Memory(_) => None,
        }
    }

    /// For a handle that from now on only replays the whole log (`read_all`,
    /// `read_all_selected`, `head`): the embedded backend lets go of its stream index
    /// ([`SledStore::release_index`]), after which appends and stream reads are refused;
    /// the other backends keep nothing that grows with the log, and do nothing.
    pub async fn release_index(&self) {
        match &self.backend {
            Backend::Sled(s) => s.release_index().await,
            Backend::JetStream(_) | Backend::Memory(_) => {}
        }
    }

    /// Finishes the appends already queued and releases the backend (the
    /// sled directory lock is released when the last clone is dropped).
    pub async fn close(self) {
        match self.backend {
            Backend::Sled(s) => s.close().await,
            Backend::JetStream(_) | Backend::Memory(_) => {}
        }
    }
}

impl From<SledStore> for AnyStore {
    fn from(s: SledStore) -> AnyStore {
        AnyStore {
            backend: Backend::Sled(s),
            sealer: None,
        }
    }
}

impl From<JetStreamStore> for AnyStore {
    fn from(s: JetStreamStore) -> AnyStore {
        AnyStore {
            backend: Backend::JetStream(s),
            sealer: None,
        }
    }
}

impl From<MemoryStore> for AnyStore {
    fn from(s: MemoryStore) -> AnyStore {
        AnyStore {
            backend: Backend::Memory(s),
            sealer: None,
        }
    }
}

/// Runs `work` on tokio's blocking pool (it syncs files).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SealRefusal> + Send + 'static,
) -> Result<T, AppendError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(AppendError::Sealing),
        Err(joined) => Err(AppendError::Sealing(SealRefusal::unavailable(format!(
            "the sealing task stopped ({joined})"
        )))),
    }
}

impl EventStore for AnyStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Result<AppendResult, AppendError> {
        let Some(sealer) = &self.sealer else {
            return delegate!(self, s => s.append(stream, expected, events).await);
        };
        let plan = sealer.plan(&events);
        let events = if plan.seal {
            let (sealer, stream) = (Arc::clone(sealer), stream.clone());
            blocking(move || {
                let mut events = events;
                sealer.seal(&stream, &mut events).map(|()| events)
            })
            .await?
        } else {
            events
        };
        // Kept for the sealer's follow-up only when it asked for one.
        let sealed = plan.after_append.then(|| events.clone());
        let result = delegate!(self, s => s.append(stream, expected, events).await)?;
        if let Some(events) = sealed {
            let (sealer, stream) = (Arc::clone(sealer), stream.clone());
            blocking(move || sealer.appended(&stream, &events)).await?;
        }
        Ok(result)
    }

    async fn append_batch(
        &self,
        parts: Vec<StreamAppend>,
        recorded_at: RecordedAt,
    ) -> Result<Vec<Result<AppendResult, AppendError>>, AppendError> {
        let Some(sealer) = &self.sealer else {
            return delegate!(self, s => s.append_batch(parts, recorded_at).await);
        };
        // Seal every part that needs it (one blocking task for the batch); a part the sealer
        // refuses is answered with the refusal and not sent.
        let plans: Vec<SealPlan> = parts.iter().map(|p| sealer.plan(&p.events)).collect();
        let mut sealing: Vec<Result<StreamAppend, AppendError>> =
            parts.into_iter().map(Ok).collect();
        if plans.iter().any(|p| p.seal) {
            let seal: Vec<bool> = plans.iter().map(|p| p.seal).collect();
            let sealer = Arc::clone(sealer);
            sealing = blocking(move || {
                Ok(sealing
                    .into_iter()
                    .zip(seal)
                    .map(|(part, seal)| {
                        let mut part = part?;
                        if seal {
                            sealer
                                .seal(&part.stream, &mut part.events)
                                .map_err(AppendError::Sealing)?;
                        }
                        Ok(part)
                    })
                    .collect())
            })
            .await?;
        }
        let mut follow_up: Vec<Option<(StreamId, Vec<ProposedEvent>)>> = Vec::new();
        let mut sent = Vec::new();
        let mut early: Vec<Option<AppendError>> = Vec::with_capacity(sealing.len());
        for (part, plan) in sealing.into_iter().zip(&plans) {
            match part {
                Ok(part) => {
                    follow_up.push(
                        plan.after_append
                            .then(|| (part.stream.clone(), part.events.clone())),
                    );
                    sent.push(part);
                    early.push(None);
                }
                Err(e) => early.push(Some(e)),
            }
        }
        let mut written = if sent.is_empty() {
            Vec::new()
        } else {
            delegate!(self, s => s.append_batch(sent, recorded_at).await)?
        };
        let mut after = Vec::new();
        for (result, follow) in written.iter().zip(follow_up) {
            if let (Ok(_), Some(follow)) = (result, follow) {
                after.push(follow);
            }
        }
        if !after.is_empty() {
            let sealer = Arc::clone(sealer);
            blocking(move || {
                after
                    .iter()
                    .try_for_each(|(stream, events)| sealer.appended(stream, events))
            })
            .await?;
        }
        written.reverse();
        Ok(early
            .into_iter()
            .map(|e| match e {
                Some(e) => Err(e),
                None => written.pop().unwrap_or(Err(AppendError::Closed)),
            })
            .collect())
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

    async fn read_all_selected<F: Selector>(
        &self,
        from: Position,
        max: usize,
        select: F,
    ) -> Result<SelectedPage<F>, ReadError> {
        delegate!(self, s => s.read_all_selected(from, max, select).await)
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
