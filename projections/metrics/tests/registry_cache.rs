//! `RegistryCache`: a definition appended after a cached load is seen, an unchanged head
//! reads nothing, a moved head reads only the new records, and a replaced log is loaded
//! from the start again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_eventstore::{
    AppendError, AppendResult, EventId, EventStore, ExpectedVersion, Head, MemoryStore, Position,
    ProposedEvent, ReadError, RecordedEvent, StreamId, StreamVersion,
};
use crm_metrics::{define, set_default, Registry, RegistryCache};
use tokio::sync::watch;
use uuid::Uuid;

const WIN_RATE_V3: &str = r#"
id = "sales.win_rate"
version = 3
name = "Win rate, new deals only"
domain = "sales"
unit = "%"
kind = "flow"
[facts]
events = ["OpportunityWon", "OpportunityLost"]
where = "stream.kind == 'new'"
[measure]
type = "simple"
agg = "share"
when = "event.type == 'OpportunityWon'"
"#;

/// A memory store that counts `read_all` calls and the records they return.
#[derive(Clone, Default)]
struct Counting {
    inner: MemoryStore,
    calls: Arc<AtomicUsize>,
    records: Arc<AtomicUsize>,
}

impl Counting {
    /// (calls, records) since the last reset.
    fn take(&self) -> (usize, usize) {
        (
            self.calls.swap(0, Ordering::SeqCst),
            self.records.swap(0, Ordering::SeqCst),
        )
    }
}

impl EventStore for Counting {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<ProposedEvent>,
    ) -> Result<AppendResult, AppendError> {
        self.inner.append(stream, expected, events).await
    }

    async fn append_batch(
        &self,
        parts: Vec<crm_eventstore::StreamAppend>,
        recorded_at: crm_eventstore::RecordedAt,
    ) -> Result<Vec<Result<AppendResult, AppendError>>, AppendError> {
        self.inner.append_batch(parts, recorded_at).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        self.inner.read_stream(stream, from, max).await
    }

    async fn read_all(&self, from: Position, max: usize) -> Result<Vec<RecordedEvent>, ReadError> {
        let page = self.inner.read_all(from, max).await?;
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.records.fetch_add(page.len(), Ordering::SeqCst);
        Ok(page)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<StreamVersion, ReadError> {
        self.inner.stream_version(stream).await
    }

    fn head(&self) -> Head {
        self.inner.head()
    }

    fn watch_head(&self) -> watch::Receiver<Head> {
        self.inner.watch_head()
    }
}

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-01-02T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Appends `n` events the registry does not read, to streams `other-<tag>-<i>`.
async fn noise<S: EventStore>(store: &S, tag: &str, n: u128) {
    for i in 0..n {
        let event = ProposedEvent {
            event_id: EventId(Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("{tag}{i}").as_bytes(),
            )),
            event_type: "NoteTaken".into(),
            schema_version: 1,
            occurred_at: at(),
            causation_id: None,
            correlation_id: None,
            actor: "test".into(),
            metadata: Vec::new(),
            payload: format!("{{\"tag\":\"{tag}\"}}").into_bytes(),
        };
        let stream = StreamId::new(format!("other-{tag}-{i}")).unwrap();
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_definition_appended_after_a_cached_load_is_seen_and_an_unchanged_head_reads_nothing() {
    let store = Counting::default();
    noise(&store, "a", 40).await;
    let cache = RegistryCache::new();
    assert_eq!(cache.covered(), None);

    let first = cache.get(&store).await.unwrap();
    assert_eq!(first.versions("sales.win_rate"), [1, 2]);
    assert_eq!(store.take().1, 40);
    assert_eq!(cache.covered(), Some(store.head()));

    // The head has not moved: the same registry, no read at all.
    let again = cache.get(&store).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_eq!(store.take(), (0, 0));

    // A definition appended after the cached load is seen, reading only past the cache.
    define(&store, WIN_RATE_V3, at()).await.unwrap();
    store.take();
    let after = cache.get(&store).await.unwrap();
    assert_eq!(after.versions("sales.win_rate"), [1, 2, 3]);
    // The covered record (checked) and the new one.
    assert_eq!(store.take().1, 2);
    assert_eq!(first.versions("sales.win_rate"), [1, 2]);

    // A default change too; the cached registry equals a full load.
    set_default(&store, "sales.win_rate", 3, at())
        .await
        .unwrap();
    noise(&store, "b", 3).await;
    store.take();
    let cached = cache.get(&store).await.unwrap();
    assert_eq!(cached.default_version("sales.win_rate"), Some(3));
    assert_eq!(store.take().1, 1 + 1 + 3);
    let loaded = Registry::load(&store).await.unwrap();
    assert_eq!(cached.list(), loaded.list());
    assert!(cached.problems.is_empty());
    assert_eq!(cache.covered().map(|h| h.position), Some(Position(45)));
}

#[tokio::test]
async fn a_replaced_log_is_loaded_from_the_start() {
    let defined = Counting::default();
    noise(&defined, "a", 5).await;
    define(&defined, WIN_RATE_V3, at()).await.unwrap();
    let cache = RegistryCache::new();
    assert_eq!(
        cache
            .get(&defined)
            .await
            .unwrap()
            .versions("sales.win_rate"),
        [1, 2, 3]
    );

    // Another log, longer, without the definition: the covered record is not there.
    let other = Counting::default();
    noise(&other, "z", 9).await;
    other.take();
    let registry = cache.get(&other).await.unwrap();
    assert_eq!(registry.versions("sales.win_rate"), [1, 2]);
    // The check of the covered record, then the whole log.
    assert_eq!(other.take().1, 1 + 9);

    // Cleared: the next call loads the whole log.
    cache.clear();
    assert_eq!(cache.covered(), None);
    cache.get(&other).await.unwrap();
    assert_eq!(other.take().1, 9);
}
