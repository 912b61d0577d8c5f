//! The log reader all workers of one runner share: pages of events aligned on fixed
//! positions, cached for a while, so workers catching up together read and decode each page
//! once instead of once per projection. Each worker pulls from its own checkpoint; the cache
//! only saves work, it never orders workers.
//!
//! Workers catching up together do not drift apart by more than the cache holds: each says
//! through its [`Cursor`] which page it reads, and a worker about to read a page more than
//! [`LEAD_PAGES_MAX`] pages ahead of another one (that is still within the cache's reach)
//! waits for it, at most [`LAGGARD_WAIT_MAX`] per page. Without this the workers that fold
//! less run ahead, the pages the slowest one needs are evicted before it reads them, and it
//! reads and decodes the log a second time on its own (on a loaded machine the catch-up's
//! CPU time doubled). A worker that stops, waits in its backoff, or lies further behind than
//! the cache (a rebuild beside live workers) holds nobody back.
//!
//! While workers catch up, the feed reads ahead: a request for a full page starts loading
//! the next [`READ_AHEAD_PAGES`] full pages as tasks of their own, and a page is decoded as
//! it is read (each event whose type a registered projection consumes, once, by the store's
//! reader from the log's bytes in place, so its payload is never copied), so reading and
//! decoding run beside the folds instead of between them. Pages leaving the cache are freed
//! on the blocking pool, off the workers' path.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crm_eventstore::{EventStore, Position, ReadError, RecordView, Selector};
use tokio::sync::{Notify, OnceCell};

use crate::projection::{kind_count, kind_of, CachedEvent};

/// Events per cached page.
pub const PAGE_EVENTS: u64 = 1_024;
/// Pages kept in the cache (about 64k events).
pub const CACHE_PAGES_MAX: usize = 64;
/// Full pages loaded ahead of the page a worker asks for (well below [`CACHE_PAGES_MAX`], so
/// read-ahead never evicts pages the workers behind still need).
pub const READ_AHEAD_PAGES: u64 = 8;
/// Most pages a worker reads ahead of another worker catching up within the cache's reach
/// (the cache keeps [`CACHE_PAGES_MAX`] pages, read-ahead takes [`READ_AHEAD_PAGES`] of
/// them, and a few are left for pages in flight).
pub const LEAD_PAGES_MAX: u64 = 48;
/// Longest a worker waits for one page's laggard before it reads on.
pub const LAGGARD_WAIT_MAX: Duration = Duration::from_millis(100);

/// Where the workers reading full pages are: page index by cursor id.
#[derive(Default)]
struct Cursors {
    pages: Mutex<HashMap<u64, u64>>,
    next_id: AtomicU64,
    /// Notified whenever a cursor moves or goes.
    moved: Notify,
}

impl Cursors {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.pages.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The page of the furthest-behind other cursor whose distance to `index` the reader at
    /// `index` should wait on: more than [`LEAD_PAGES_MAX`] pages behind, and not so far
    /// behind that the cache no longer holds pages for it.
    fn laggard(&self, id: u64, index: u64) -> Option<u64> {
        let reach = u64::try_from(CACHE_PAGES_MAX).unwrap_or(u64::MAX);
        self.lock()
            .iter()
            .filter(|(other, _)| **other != id)
            .map(|(_, page)| *page)
            .filter(|page| {
                let behind = index.saturating_sub(*page);
                behind > LEAD_PAGES_MAX && behind <= reach
            })
            .min()
    }
}

/// A worker's place among the readers of a feed (see the module documentation); it leaves
/// when dropped.
pub(crate) struct Cursor {
    cursors: Arc<Cursors>,
    id: u64,
}

impl Cursor {
    fn at(&self, index: u64) {
        self.cursors.lock().insert(self.id, index);
        self.cursors.moved.notify_waiters();
    }

    /// Waits (at most [`LAGGARD_WAIT_MAX`]) until no other cursor within the cache's reach
    /// is more than [`LEAD_PAGES_MAX`] pages behind page `index`.
    async fn wait_for_laggards(&self, index: u64) {
        let deadline = tokio::time::Instant::now() + LAGGARD_WAIT_MAX;
        loop {
            let moved = self.cursors.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.cursors.laggard(self.id, index).is_none() {
                return;
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.cursors.lock().remove(&self.id);
        self.cursors.moved.notify_waiters();
    }
}

/// A run of consecutive events.
pub(crate) type Page = Vec<CachedEvent>;

/// Builds a page as the store reads it: every record becomes a [`CachedEvent`], decoded
/// right away when a registered projection consumes its kind; no record is copied out whole.
struct PageReader {
    wanted: Arc<Vec<bool>>,
    events: Page,
}

impl Selector for PageReader {
    fn select(&mut self, record: &RecordView<'_>) -> bool {
        let kind = kind_of(record.event_type);
        let decode = kind
            .and_then(|k| self.wanted.get(usize::from(k)))
            .is_some_and(|w| *w);
        CachedEvent::push_view(&mut self.events, record, kind, decode);
        false
    }
}

/// A slice of a page: the events a worker applies next.
pub(crate) struct Chunk {
    page: Arc<Page>,
    start: usize,
}

impl Chunk {
    pub(crate) fn events(&self) -> &[CachedEvent] {
        self.page.get(self.start..).unwrap_or_default()
    }
}

type Cell = Arc<OnceCell<Arc<Page>>>;

#[derive(Default)]
struct Cache {
    pages: HashMap<u64, Cell>,
    order: VecDeque<u64>,
    /// Pages being read ahead.
    loading: HashSet<u64>,
}

/// Shared, caching reader of the global log.
pub(crate) struct Feed<S: EventStore> {
    store: S,
    cache: Mutex<Cache>,
    /// By event kind: whether a registered projection consumes it (decoded on load).
    wanted: RwLock<Arc<Vec<bool>>>,
    cursors: Arc<Cursors>,
}

impl<S: EventStore> Feed<S> {
    pub(crate) fn new(store: S) -> Feed<S> {
        Feed {
            store,
            cache: Mutex::new(Cache::default()),
            wanted: RwLock::new(Arc::new(Vec::new())),
            cursors: Arc::new(Cursors::default()),
        }
    }

    /// A new reader's cursor; it keeps the others from running too far ahead of it.
    pub(crate) fn cursor(&self) -> Cursor {
        Cursor {
            cursors: Arc::clone(&self.cursors),
            id: self.cursors.next_id.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub(crate) fn store(&self) -> &S {
        &self.store
    }

    /// Adds the event types `wants` accepts to those decoded when a page is loaded.
    pub(crate) fn decode_for(&self, wants: impl Fn(&str) -> bool) {
        let mut wanted = self.wanted.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<bool> = wanted.as_ref().clone();
        next.resize(kind_count(), false);
        for (_, event_type, _) in crm_domain::DomainEvent::catalog() {
            if let Some(slot) = kind_of(event_type).and_then(|k| next.get_mut(usize::from(k))) {
                *slot = *slot || wants(event_type);
            }
        }
        *wanted = Arc::new(next);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cell of page `index`, inserted if absent; evicted cells go to `evicted`.
    fn cell(cache: &mut Cache, index: u64, evicted: &mut Vec<Cell>) -> Cell {
        if let Some(cell) = cache.pages.get(&index) {
            return Arc::clone(cell);
        }
        let cell = Arc::new(OnceCell::new());
        cache.pages.insert(index, Arc::clone(&cell));
        cache.order.push_back(index);
        while cache.order.len() > CACHE_PAGES_MAX {
            if let Some(old) = cache.order.pop_front() {
                evicted.extend(cache.pages.remove(&old));
            }
        }
        cell
    }

    /// Reads full page `index` and decodes the events a registered projection consumes.
    async fn load(store: &S, wanted: Arc<Vec<bool>>, index: u64) -> Result<Arc<Page>, ReadError> {
        let first = Position(index * PAGE_EVENTS + 1);
        let max = usize::try_from(PAGE_EVENTS).unwrap_or(1);
        Self::read(store, wanted, first, max).await.map(Arc::new)
    }

    /// Up to `max` events from `first`, those of the `wanted` kinds decoded where the store
    /// reads them (the sled backend: on its reader thread, from the log's bytes in place).
    async fn read(
        store: &S,
        wanted: Arc<Vec<bool>>,
        first: Position,
        max: usize,
    ) -> Result<Page, ReadError> {
        let reader = PageReader {
            wanted,
            events: Vec::with_capacity(max.min(usize::try_from(PAGE_EVENTS).unwrap_or(max))),
        };
        Ok(store
            .read_all_selected(first, max, reader)
            .await?
            .select
            .events)
    }

    /// Starts loading the full pages after `index` (up to [`READ_AHEAD_PAGES`], never past
    /// `head`) that are neither cached nor being loaded.
    fn read_ahead(self: &Arc<Self>, index: u64, head: Position, evicted: &mut Vec<Cell>) {
        let last_full = head.0 / PAGE_EVENTS; // pages 0..last_full are full
        let wanted = Arc::clone(&self.wanted.read().unwrap_or_else(|p| p.into_inner()));
        let mut cache = self.lock();
        for next in index + 1..=index + READ_AHEAD_PAGES {
            if next >= last_full {
                break;
            }
            let ready = cache.pages.get(&next).is_some_and(|c| c.initialized());
            if ready || !cache.loading.insert(next) {
                continue;
            }
            let cell = Self::cell(&mut cache, next, evicted);
            let feed = Arc::clone(self);
            let wanted = Arc::clone(&wanted);
            tokio::spawn(async move {
                // An error is left for the worker that needs the page: it reads it again
                // and reports the error itself.
                let _ = cell
                    .get_or_try_init(|| Self::load(&feed.store, wanted, next))
                    .await;
                feed.lock().loading.remove(&next);
            });
        }
    }

    /// As [`Feed::chunk`], for the reader at `cursor`: a full page more than
    /// [`LEAD_PAGES_MAX`] pages ahead of another reader is read once that reader has come
    /// nearer (or [`LAGGARD_WAIT_MAX`] has passed).
    pub(crate) async fn chunk_at(
        self: &Arc<Self>,
        next: Position,
        head: Position,
        cursor: &Cursor,
    ) -> Result<Chunk, ReadError> {
        let next = next.max(Position::FIRST);
        let index = (next.0 - 1) / PAGE_EVENTS;
        if next <= head && head.0 >= (index + 1) * PAGE_EVENTS {
            cursor.at(index);
            cursor.wait_for_laggards(index).await;
        }
        self.chunk(next, head).await
    }

    /// The events from `next` on, at most to the end of `next`'s page and never past `head`.
    /// Empty when `next > head`.
    pub(crate) async fn chunk(
        self: &Arc<Self>,
        next: Position,
        head: Position,
    ) -> Result<Chunk, ReadError> {
        let next = next.max(Position::FIRST);
        if next > head {
            return Ok(Chunk {
                page: Arc::new(Vec::new()),
                start: 0,
            });
        }
        let index = (next.0 - 1) / PAGE_EVENTS;
        let page_first = index * PAGE_EVENTS + 1;
        let page_last = page_first + PAGE_EVENTS - 1;
        let offset = usize::try_from(next.0 - page_first).unwrap_or(usize::MAX);
        if head.0 >= page_last {
            // A full page: read it once, share it, and read ahead.
            let mut evicted = Vec::new();
            let cell = Self::cell(&mut self.lock(), index, &mut evicted);
            self.read_ahead(index, head, &mut evicted);
            if !evicted.is_empty() {
                // Freeing a page's events is work of its own: do it off the workers' path.
                drop(tokio::task::spawn_blocking(move || drop(evicted)));
            }
            let wanted = Arc::clone(&self.wanted.read().unwrap_or_else(|p| p.into_inner()));
            let page = cell
                .get_or_try_init(|| Self::load(&self.store, wanted, index))
                .await?;
            return Ok(Chunk {
                page: Arc::clone(page),
                start: offset,
            });
        }
        // The tail of the log: read just what is durable, do not cache a partial page.
        let count = usize::try_from(head.0 - next.0 + 1).unwrap_or(usize::MAX);
        let wanted = Arc::clone(&self.wanted.read().unwrap_or_else(|p| p.into_inner()));
        Ok(Chunk {
            page: Arc::new(Self::read(&self.store, wanted, next, count).await?),
            start: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::test_events::{append_each, case_opened};
    use crm_domain::DomainEvent;
    use crm_eventstore::{EventId, ExpectedVersion, MemoryStore, ProposedEvent, StreamId};

    /// Five full pages and a partial one.
    const EVENTS: u64 = 5 * PAGE_EVENTS + 100;

    async fn store() -> MemoryStore {
        let store = MemoryStore::new();
        append_each(&store, (0..EVENTS).map(case_opened)).await;
        store
    }

    /// Reads every event from `from` to `head` in chunks; returns the positions seen.
    async fn read_to(feed: &Arc<Feed<MemoryStore>>, from: u64, head: Position) -> Vec<u64> {
        let mut seen = Vec::new();
        let mut next = Position(from);
        while next <= head {
            let chunk = feed.chunk(next, head).await.unwrap();
            assert!(!chunk.events().is_empty(), "no event at {next}");
            for e in chunk.events() {
                seen.push(e.position.0);
                next = Position(e.position.0 + 1);
            }
        }
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_readers_get_every_event_once_in_order_and_share_decoded_pages() {
        let store = store().await;
        let head = store.head().position;
        assert_eq!(head.0, EVENTS);
        let feed = Arc::new(Feed::new(store));
        feed.decode_for(|t| t == "CaseOpened");
        let mut tasks = Vec::new();
        for from in [1, 2, PAGE_EVENTS, 3 * PAGE_EVENTS + 7] {
            let feed = Arc::clone(&feed);
            tasks.push(tokio::spawn(async move {
                (from, read_to(&feed, from, head).await)
            }));
        }
        for t in tasks {
            let (from, seen) = t.await.unwrap();
            assert_eq!(seen, (from..=EVENTS).collect::<Vec<_>>());
        }
        // Full pages are shared and were decoded when loaded; the partial tail is not cached.
        let a = feed.chunk(Position(1), head).await.unwrap();
        let b = feed.chunk(Position(5), head).await.unwrap();
        assert!(Arc::ptr_eq(&a.page, &b.page));
        assert!(a.events().iter().all(CachedEvent::is_decoded));
        let tail = feed.chunk(Position(EVENTS), head).await.unwrap();
        let again = feed.chunk(Position(EVENTS), head).await.unwrap();
        assert!(!Arc::ptr_eq(&tail.page, &again.page));
        assert_eq!(tail.events().len(), 1);
    }

    #[tokio::test]
    async fn a_reader_waits_for_a_laggard_the_cache_still_serves_and_for_no_other() {
        use std::time::Duration;
        let feed = Feed::new(MemoryStore::new());
        let (a, b) = (feed.cursor(), feed.cursor());
        // Whether the wait ends at its first poll.
        async fn now(f: impl std::future::Future<Output = ()>) -> Result<(), ()> {
            tokio::time::timeout(Duration::ZERO, f)
                .await
                .map_err(|_| ())
        }
        a.at(0);
        // Within the lead: no wait.
        b.at(LEAD_PAGES_MAX);
        assert!(now(b.wait_for_laggards(LEAD_PAGES_MAX)).await.is_ok());
        // Further ahead, with `a` still within the cache's reach: waits until `a` comes nearer.
        let ahead = LEAD_PAGES_MAX + 10;
        b.at(ahead);
        assert!(now(b.wait_for_laggards(ahead)).await.is_err());
        a.at(20);
        assert!(now(b.wait_for_laggards(ahead)).await.is_ok());
        // `a` beyond the cache's reach (a rebuild behind live workers) holds nobody back.
        let far = 20 + u64::try_from(CACHE_PAGES_MAX).unwrap() + 1;
        b.at(far);
        assert!(now(b.wait_for_laggards(far)).await.is_ok());
        // Nor does a reader that left; the laggard itself never waits.
        assert!(now(a.wait_for_laggards(20)).await.is_ok());
        b.at(ahead);
        drop(a);
        assert!(now(b.wait_for_laggards(ahead)).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bounded_reader_never_reads_past_its_head_and_types_nobody_wants_stay_encoded() {
        let store = store().await;
        let feed = Arc::new(Feed::new(store));
        feed.decode_for(|t| t == "CaseClosed");
        // Bounded at a page boundary plus a few: read-ahead stops at the last full page.
        let head = Position(2 * PAGE_EVENTS + 3);
        let seen = read_to(&feed, 1, head).await;
        assert_eq!(seen, (1..=head.0).collect::<Vec<_>>());
        let chunk = feed.chunk(Position(1), head).await.unwrap();
        assert!(chunk.events().iter().all(|e| !e.is_decoded()));
        let cache = feed.lock();
        assert!(cache
            .pages
            .keys()
            .all(|index| (index + 1) * PAGE_EVENTS <= head.0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cache_keeps_the_latest_pages_and_stays_bounded() {
        // Payloads of a type this build does not know: the feed never looks inside.
        let store = MemoryStore::new();
        let pages = u64::try_from(CACHE_PAGES_MAX).unwrap() + 6;
        let per_append = 1_000u64;
        for k in 0..(pages * PAGE_EVENTS).div_ceil(per_append) {
            let batch = (0..per_append)
                .map(|i| ProposedEvent {
                    event_id: EventId(uuid::Uuid::from_u128(u128::from(k * per_append + i) + 1)),
                    event_type: "Tick".into(),
                    schema_version: 1,
                    occurred_at: chrono::DateTime::UNIX_EPOCH,
                    causation_id: None,
                    correlation_id: None,
                    actor: "test".into(),
                    metadata: Vec::new(),
                    payload: b"{}".to_vec(),
                })
                .collect();
            let stream = StreamId::new(format!("tick-{k}")).unwrap();
            store
                .append(&stream, ExpectedVersion::NoStream, batch)
                .await
                .unwrap();
        }
        let head = store.head().position;
        let feed = Arc::new(Feed::new(store));
        let seen = read_to(&feed, 1, head).await;
        assert_eq!(seen.len() as u64, head.0);
        let full = head.0 / PAGE_EVENTS;
        let cache = feed.lock();
        assert_eq!(cache.pages.len(), CACHE_PAGES_MAX);
        let oldest_kept = full - u64::try_from(CACHE_PAGES_MAX).unwrap();
        assert!(cache.pages.keys().all(|i| (oldest_kept..full).contains(i)));
        assert_eq!(cache.order.len(), cache.pages.len());
    }

    /// Records every position it folds.
    struct Positions;

    impl crate::Projection for Positions {
        type State = Vec<u64>;
        fn name(&self) -> &'static str {
            "positions"
        }
        fn version(&self) -> u32 {
            1
        }
        fn wants(&self, _: &str) -> bool {
            true
        }
        fn apply(&self, state: &mut Vec<u64>, ctx: &crate::EventContext<'_>, _: &DomainEvent) {
            state.push(ctx.position.0);
        }
    }

    // On a current-thread runtime: read-ahead tasks only run while the workers wait.
    #[tokio::test]
    async fn workers_over_many_pages_resume_after_a_crash_without_gap_or_repeat() {
        let store = store().await;
        let head = store.head().position;
        let dir = tempfile::tempdir().unwrap();
        let options = crate::RunnerOptions {
            snapshot_every_events: 700,
            ..crate::RunnerOptions::default()
        };
        let open = || {
            let mut runner =
                crate::ProjectionRunner::new(store.clone(), dir.path(), options.clone());
            let handle = runner.register(Positions).unwrap();
            (runner, handle)
        };
        // Saved at a page boundary and mid-run, then folded on without saving: a crash.
        {
            let (runner, handle) = open();
            runner.run_until(Position(PAGE_EVENTS), true).await.unwrap();
            runner
                .run_until(Position(4 * PAGE_EVENTS + 17), false)
                .await
                .unwrap();
            assert_eq!(handle.applied_position(), Position(4 * PAGE_EVENTS + 17));
        }
        let (runner, handle) = open();
        // The second run saved once, after its first page: 1,024 unsaved events reached the
        // due count max(700, checkpoint 1,024) with the head still more than that away.
        assert_eq!(handle.applied_position(), Position(2 * PAGE_EVENTS));
        runner.run_until_head().await.unwrap();
        assert_eq!(handle.snapshot().0, (1..=head.0).collect::<Vec<_>>());
    }
}
