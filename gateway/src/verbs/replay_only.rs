//! The store a one-shot metric question reads through: stream reads first (the metric's
//! definitions, each in its own stream), then only whole-log replays. At the first replay
//! the embedded log lets go of its stream index ([`AnyStore::release_index`]), so the
//! index's memory (it grows with the number of appends: about 175 MiB over 10,000,000
//! events) is freed, and its pages returned to the system, before the replay's grows, so it
//! is not part of the question's peak.
//!
//! Only the CLI's questions use it: a server or the demo keeps reading streams after a
//! replay. A stream read or an append after the first replay fails with the reason.

use std::sync::Arc;

use crm_eventstore::{
    AnyStore, AppendError, AppendResult, EventStore, ExpectedVersion, Head, Position,
    ProposedEvent, ReadError, RecordedAt, RecordedEvent, SelectedPage, Selector, StreamAppend,
    StreamId, StreamVersion,
};
use tokio::sync::{watch, OnceCell};

/// See the module documentation. Clones share the release.
#[derive(Clone)]
pub(crate) struct ReplayOnly {
    store: AnyStore,
    released: Arc<OnceCell<()>>,
}

impl ReplayOnly {
    pub(crate) fn new(store: &AnyStore) -> ReplayOnly {
        ReplayOnly {
            store: store.clone(),
            released: Arc::new(OnceCell::new()),
        }
    }

    /// Whether the stream index was let go (a replay started).
    #[cfg(test)]
    pub(crate) fn released(&self) -> bool {
        self.released.initialized()
    }

    async fn before_replay(&self) {
        self.released
            .get_or_init(|| release_index(&self.store))
            .await;
    }
}

/// Lets the embedded log go of its stream index ([`AnyStore::release_index`]) and returns
/// the freed pages to the system at once (`crm_app::allocator::return_freed_memory`): jemalloc
/// would keep them in the releasing thread's arena, where the next phase's allocations on
/// other threads do not reuse them, so they would count in its peak until they decay.
pub(crate) async fn release_index(store: &AnyStore) {
    store.release_index().await;
    crm_app::allocator::return_freed_memory();
}

impl EventStore for ReplayOnly {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Result<AppendResult, AppendError> {
        self.store.append(stream, expected, events).await
    }

    async fn append_batch(
        &self,
        parts: Vec<StreamAppend>,
        recorded_at: RecordedAt,
    ) -> Result<Vec<Result<AppendResult, AppendError>>, AppendError> {
        self.store.append_batch(parts, recorded_at).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.store.read_stream(stream, from, max).await
    }

    async fn read_all(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        self.before_replay().await;
        self.store.read_all(from, max).await
    }

    async fn read_all_selected<F: Selector>(
        &self,
        from: Position,
        max: usize,
        select: F,
    ) -> Result<SelectedPage<F>, ReadError> {
        self.before_replay().await;
        self.store.read_all_selected(from, max, select).await
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, ReadError> {
        self.store.stream_version(stream).await
    }

    fn head(&self) -> Head {
        self.store.head()
    }

    fn watch_head(&self) -> watch::Receiver<Head> {
        self.store.watch_head()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_eventstore::{EventId, SledStore};

    fn event(n: u128, stream_version: u64) -> ProposedEvent {
        ProposedEvent {
            event_id: EventId(uuid::Uuid::from_u128(n)),
            event_type: "CaseOpened".into(),
            schema_version: 1,
            occurred_at: chrono::DateTime::from_timestamp(1_600_000_000, 0).unwrap_or_default(),
            causation_id: None,
            correlation_id: None,
            actor: format!("test-{stream_version}"),
            metadata: Vec::new(),
            payload: b"{}".to_vec(),
        }
    }

    /// Stream reads work until the first replay; the replay sees the whole log; after it the
    /// embedded log's index is gone, so stream reads and appends say why they fail.
    #[tokio::test]
    async fn the_first_replay_releases_the_stream_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::from(SledStore::open(dir.path()).unwrap());
        let s = StreamId::new("case-1").unwrap();
        for n in 1..=5 {
            store
                .append(&s, ExpectedVersion::Any, vec![event(n, 1)])
                .await
                .unwrap();
        }
        let question = ReplayOnly::new(&store);
        assert_eq!(question.stream_version(&s).await.unwrap(), StreamVersion(5));
        assert_eq!(
            question
                .read_stream(&s, StreamVersion(1), 10)
                .await
                .unwrap()
                .len(),
            5
        );
        assert!(!question.released());
        let all = question.read_all(Position::FIRST, 10).await.unwrap();
        assert_eq!(all.len(), 5);
        assert!(question.released());
        assert_eq!(
            question.clone().read_all(Position(3), 10).await.unwrap(),
            all[2..]
        );
        assert!(question
            .read_stream(&s, StreamVersion(1), 10)
            .await
            .is_err());
        assert!(question
            .append(&s, ExpectedVersion::Any, vec![event(9, 6)])
            .await
            .is_err());
        assert_eq!(question.head(), store.head());
    }
}
