//! [`BundleStore`]: the records of an audit bundle as a read-only [`EventStore`], so the
//! metric engine re-evaluates a question over them exactly as it did over the log.

use std::collections::HashMap;
use std::sync::Arc;

use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    AppendError, AppendResult, EventStore, ExpectedVersion, Head, Position, ProposedEvent,
    RecordedAt, RecordedEvent, StreamAppend, StreamId, StreamVersion,
};
use tokio::sync::watch;

/// What an append to a bundle answers.
const READ_ONLY: &str = "an audit bundle is read-only: it holds what the log held";

/// The records of a bundle, from position 1 on, dense and checked, held in memory.
#[derive(Clone)]
pub struct BundleStore {
    inner: Arc<Inner>,
}

struct Inner {
    records: Vec<RecordedEvent>,
    streams: HashMap<StreamId, Vec<usize>>,
    head: watch::Sender<Head>,
}

impl BundleStore {
    /// A store of `records`, which must be the positions 1..=n in order (the bundle check
    /// makes sure of that before it builds one).
    pub fn new(records: Vec<RecordedEvent>) -> BundleStore {
        let mut streams: HashMap<StreamId, Vec<usize>> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            streams.entry(r.stream_id.clone()).or_default().push(i);
        }
        let head = records
            .last()
            .map_or(Head::default(), RecordedEvent::as_head);
        let (head, _) = watch::channel(head);
        BundleStore {
            inner: Arc::new(Inner {
                records,
                streams,
                head,
            }),
        }
    }
}

fn page(max: usize) -> usize {
    if max == 0 {
        READ_PAGE_MAX
    } else {
        max.min(READ_PAGE_MAX)
    }
}

fn index(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl EventStore for BundleStore {
    async fn append(
        &self,
        _stream: &StreamId,
        _expected: ExpectedVersion,
        _events: Vec<ProposedEvent>,
    ) -> Result<AppendResult, AppendError> {
        Err(AppendError::Unavailable(READ_ONLY.into()))
    }

    async fn append_batch(
        &self,
        _parts: Vec<StreamAppend>,
        _recorded_at: RecordedAt,
    ) -> Result<Vec<Result<AppendResult, AppendError>>, AppendError> {
        Err(AppendError::Unavailable(READ_ONLY.into()))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, crm_eventstore::ReadError> {
        let skip = index(from.0.saturating_sub(1));
        Ok(self
            .inner
            .streams
            .get(stream)
            .map(|at| {
                at.iter()
                    .skip(skip)
                    .take(page(max))
                    .filter_map(|&i| self.inner.records.get(i).cloned())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn read_all(
        &self,
        from: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, crm_eventstore::ReadError> {
        let skip = index(from.0.saturating_sub(1));
        Ok(self
            .inner
            .records
            .iter()
            .skip(skip)
            .take(page(max))
            .cloned()
            .collect())
    }

    async fn stream_version(
        &self,
        stream: &StreamId,
    ) -> Result<StreamVersion, crm_eventstore::ReadError> {
        let n = self.inner.streams.get(stream).map_or(0, Vec::len);
        Ok(StreamVersion(u64::try_from(n).unwrap_or(u64::MAX)))
    }

    fn head(&self) -> Head {
        *self.inner.head.borrow()
    }

    fn watch_head(&self) -> watch::Receiver<Head> {
        self.inner.head.subscribe()
    }
}
