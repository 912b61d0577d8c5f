//! Loaded metric views, shared by the metric questions asked at one log position.
//!
//! A metric request replays the log into a view of the events its definitions read
//! ([`metrics::load_view`]); the figures are then computed from the view for the request's
//! periods, dimensions and filters. The view depends only on the log up to its position, on
//! `as_of` / `known_at`, and on the definitions read (by spec hash), so the questions an
//! analyst asks one after another (by region, then by quarter, then explained) share one
//! replay until the next event. Concurrent requests for a view being loaded wait for that
//! load. At most [`VIEWS_MAX`] views are kept; a view holds the kept events in memory.

use std::sync::Arc;

use crm_eventstore::{AnyStore, EventStore};
use crm_metrics::{self as metrics, LogView, MetricError, Query, RegisteredMetric, Registry};
use quick_cache::sync::Cache;

/// Views kept at most.
pub const VIEWS_MAX: usize = 4;

/// (log head at lookup, `as_of`, `known_at`, spec hashes of the definitions read).
type Key = (u64, String, String, String, Vec<String>);

/// The cache of loaded views.
pub struct ViewCache {
    views: Cache<Key, Arc<LogView>>,
}

impl Default for ViewCache {
    fn default() -> Self {
        ViewCache {
            views: Cache::new(VIEWS_MAX),
        }
    }
}

impl ViewCache {
    /// The view for `defs` under `query`'s `as_of` / `known_at`, at the log's head: the one
    /// already loaded at this head, or a new replay.
    ///
    /// # Errors
    /// As [`metrics::load_view`].
    pub async fn view(
        &self,
        store: &AnyStore,
        registry: &Registry,
        defs: &[Arc<RegisteredMetric>],
        query: &Query,
    ) -> Result<Arc<LogView>, MetricError> {
        let mut hashes: Vec<String> = defs.iter().map(|m| m.spec_hash.clone()).collect();
        hashes.sort();
        let key: Key = (
            store.head().position.0,
            format!("{:?}", query.as_of),
            format!("{:?}", query.known_at),
            // Breakdown expressions and conditions read parts of the log of their own.
            format!(
                "{:?} {:?}",
                query
                    .by
                    .iter()
                    .filter(|b| !metrics::adhoc::is_dimension_name(b))
                    .collect::<Vec<_>>(),
                query.conditions
            ),
            hashes,
        );
        match self.views.get_value_or_guard_async(&key).await {
            Ok(view) => Ok(view),
            Err(guard) => {
                let view = Arc::new(metrics::load_view(store, registry, defs, query).await?);
                let _ = guard.insert(Arc::clone(&view));
                Ok(view)
            }
        }
    }

    /// Views held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.views.len()
    }

    /// Whether no view is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_eventstore::{EventId, ExpectedVersion, MemoryStore, ProposedEvent, StreamId};

    async fn append_one(store: &AnyStore, n: u128) {
        let event = ProposedEvent {
            event_id: EventId(uuid::Uuid::from_u128(n)),
            event_type: "AccountSegmentChanged".to_owned(),
            schema_version: 1,
            occurred_at: chrono::DateTime::from_timestamp(1_600_000_000, 0).unwrap(),
            causation_id: None,
            correlation_id: None,
            actor: "test".to_owned(),
            metadata: Vec::new(),
            payload: br#"{"account_id":"a","from":"smb","to":"enterprise"}"#.to_vec(),
        };
        let stream = StreamId::new("account-a").unwrap();
        store
            .append(&stream, ExpectedVersion::Any, vec![event])
            .await
            .unwrap();
    }

    /// Questions at one head share a view; another `as_of`, or a new event, loads another.
    #[tokio::test]
    async fn one_view_per_head_and_instant() {
        let store = AnyStore::from(MemoryStore::new());
        append_one(&store, 1).await;
        let registry = Registry::load(&store).await.unwrap();
        let m = registry.get("sales.win_rate", None).unwrap();
        let defs = std::slice::from_ref(&m);
        let cache = ViewCache::default();
        let by_quarter = Query::default();
        let first = cache
            .view(&store, &registry, defs, &by_quarter)
            .await
            .unwrap();
        let by_region = Query {
            by: vec!["region".to_owned()],
            ..Query::default()
        };
        let again = cache
            .view(&store, &registry, defs, &by_region)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again), "same head, same definitions");
        let as_of = Query {
            as_of: chrono::DateTime::from_timestamp(1_500_000_000, 0),
            ..Query::default()
        };
        let earlier = cache.view(&store, &registry, defs, &as_of).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &earlier));
        append_one(&store, 2).await;
        let after = cache
            .view(&store, &registry, defs, &by_quarter)
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &after), "a new event loads a new view");
        assert_eq!(after.mark.position, 2);
        assert_eq!(first.mark.position, 1);
        assert_eq!(cache.len(), 3);
    }
}
