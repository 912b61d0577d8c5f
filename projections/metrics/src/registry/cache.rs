//! [`RegistryCache`]: the registry kept between requests, with the log head it covers.
//!
//! [`Registry::load`] replays the whole log for the definition events in it. A server that
//! answers many metric questions keeps one `RegistryCache` instead: while the head has not
//! moved, [`RegistryCache::get`] returns the cached registry without reading the log; when
//! it has moved, it reads only the records after the covered position (`read_all` pages)
//! and applies their definition events to a copy of the cached registry. The covered
//! record is checked first: if the log no longer holds it with the same chain hash (the log
//! was replaced or restored), the registry is loaded from the start again.

use std::sync::{Arc, Mutex, PoisonError};

use crm_eventstore::{record_at, EventStore, Head, Position};

use super::Registry;
use crate::error::MetricError;

/// A registry and the log head it covers.
#[derive(Debug, Clone)]
struct Covered {
    registry: Arc<Registry>,
    head: Head,
}

/// The registry of a log, kept and brought up to date by log position. Share one per store
/// (e.g. in the server state behind an `Arc`); it is `Send + Sync` and cheap to query.
#[derive(Debug, Default)]
pub struct RegistryCache {
    covered: Mutex<Option<Covered>>,
}

impl RegistryCache {
    /// An empty cache: the first [`RegistryCache::get`] loads the whole log.
    #[must_use]
    pub fn new() -> RegistryCache {
        RegistryCache::default()
    }

    /// The registry (built-in catalog plus the log's definitions) as of the store's head
    /// now: the cached one while the head is unchanged, else the cached one extended with
    /// the records after the position it covers (from the start when the log no longer
    /// holds that position's record).
    ///
    /// Concurrent callers may each read the same new records; the last one to finish
    /// leaves its registry in the cache, and a later call brings it up to the head.
    ///
    /// # Errors
    /// A read error, or a built-in catalog that does not validate.
    pub async fn get<S: EventStore>(&self, store: &S) -> Result<Arc<Registry>, MetricError> {
        let head = store.head();
        let cached = self.lock().clone();
        if let Some(c) = &cached {
            if c.head == head {
                return Ok(Arc::clone(&c.registry));
            }
        }
        let extended = match cached {
            Some(c) if c.head.position < head.position && still_holds(store, c.head).await? => {
                let mut registry = Registry::clone(&c.registry);
                let from = c.head.position.next().unwrap_or(head.position);
                registry.read_log(store, from, head.position).await?;
                registry
            }
            _ => {
                let mut registry = Registry::builtin()?;
                registry
                    .read_log(store, Position::FIRST, head.position)
                    .await?;
                registry
            }
        };
        let registry = Arc::new(extended);
        *self.lock() = Some(Covered {
            registry: Arc::clone(&registry),
            head,
        });
        Ok(registry)
    }

    /// The log head the cached registry covers, `None` before the first load.
    #[must_use]
    pub fn covered(&self) -> Option<Head> {
        self.lock().as_ref().map(|c| c.head)
    }

    /// Forgets the cached registry: the next [`RegistryCache::get`] loads the whole log.
    pub fn clear(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Covered>> {
        // The guarded value is replaced whole, never left half-written: a panic elsewhere
        // while holding the lock leaves a usable value.
        self.covered.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether the log still holds the record `head` names (position 0: the empty log, a prefix
/// of every log).
async fn still_holds<S: EventStore>(store: &S, head: Head) -> Result<bool, MetricError> {
    if head.position == Position::ZERO {
        return Ok(true);
    }
    Ok(record_at(store, head.position)
        .await?
        .is_some_and(|r| r.hash == head.hash))
}
