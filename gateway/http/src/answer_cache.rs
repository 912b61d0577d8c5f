//! Rendered answers of the read-only analytics routes, cached by (route, query, position).
//!
//! A read-model report is a pure function of the projection's state and the query, and
//! that state is a pure function of the log up to its applied position (a rebuild from
//! zero reaches the same state as incremental processing). A metric evaluation,
//! comparison, explanation or diff is a pure function of the log up to its head (the
//! definitions are in the log too). So an answer rendered for one (route, query, position)
//! stays right until the position moves: repeated queries are served from memory, and the
//! first new event makes the next query compute afresh. Concurrent requests for an answer
//! that is being computed wait for it instead of computing it again. A failed computation
//! is not stored.
//!
//! The cache holds at most [`ANSWER_CACHE_SIZE_MAX_BYTES`] of rendered bodies; the least
//! useful entries are evicted first. Answers for older positions are never looked up again
//! and age out.
//!
//! Every answer carries an RFC 9211 `Cache-Status` header: `crm-answer-cache; hit`, or
//! `crm-answer-cache; fwd=miss; stored` when it was computed for this request; `/metrics`
//! counts both in `crm_answer_cache_requests_total{route, result}`.

use std::future::Future;

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::problem::ApiError;

/// Most bytes of rendered answers kept.
pub const ANSWER_CACHE_SIZE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The number of entries the cache is sized for (an estimate, not a limit).
const ANSWER_CACHE_ENTRIES_ESTIMATE: usize = 1_024;

/// The `Cache-Status` header (RFC 9211).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
/// `Cache-Status` of an answer served from the cache.
pub const HIT: &str = "crm-answer-cache; hit";
/// `Cache-Status` of an answer computed for this request.
pub const MISS: &str = "crm-answer-cache; fwd=miss; stored";

/// (route, canonical query, position the answer was looked up at).
type Key = (&'static str, String, u64);

/// A rendered body and its media type.
#[derive(Clone)]
pub struct Rendered {
    /// The body.
    pub body: Bytes,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

impl Rendered {
    /// A JSON body.
    ///
    /// # Errors
    /// [`ApiError::Internal`] when `value` cannot be encoded.
    pub fn json(what: &str, value: &impl serde::Serialize) -> Result<Rendered, ApiError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| ApiError::Internal(format!("the {what} could not be encoded: {e}")))?;
        Ok(Rendered {
            body: Bytes::from(body),
            content_type: "application/json",
        })
    }
}

#[derive(Clone)]
struct ByLength;

impl Weighter<Key, Rendered> for ByLength {
    fn weight(&self, key: &Key, value: &Rendered) -> u64 {
        let bytes = key.1.len().saturating_add(value.body.len());
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

/// The cache of rendered answers, shared by the handlers.
pub struct AnswerCache {
    answers: Cache<Key, Rendered, ByLength>,
}

impl Default for AnswerCache {
    fn default() -> Self {
        AnswerCache {
            answers: Cache::with_weighter(
                ANSWER_CACHE_ENTRIES_ESTIMATE,
                ANSWER_CACHE_SIZE_MAX_BYTES,
                ByLength,
            ),
        }
    }
}

impl AnswerCache {
    /// The answer of `route` to `query` at `position`: from the cache, or computed by
    /// `compute` and stored.
    ///
    /// `compute` may cover a position past `position` when an event arrived meanwhile; the
    /// answer names the position it covers, and is at least as fresh as the lookup.
    ///
    /// # Errors
    /// The error of `compute`, which is not stored.
    pub async fn answer(
        &self,
        route: &'static str,
        query: String,
        position: u64,
        compute: impl Future<Output = Result<Rendered, ApiError>>,
    ) -> Result<Response, ApiError> {
        let key: Key = (route, query, position);
        let (rendered, status, result) = match self.answers.get_value_or_guard_async(&key).await {
            Ok(rendered) => (rendered, HIT, "hit"),
            Err(guard) => {
                let rendered = compute.await?;
                let _ = guard.insert(rendered.clone());
                (rendered, MISS, "miss")
            }
        };
        metrics::counter!("crm_answer_cache_requests_total", "route" => route, "result" => result)
            .increment(1);
        Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(rendered.content_type),
                ),
                (CACHE_STATUS, HeaderValue::from_static(status)),
            ],
            rendered.body,
        )
            .into_response())
    }
}
