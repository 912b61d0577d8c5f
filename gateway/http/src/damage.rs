//! A damaged log, as the server answers it: the request that meets damage gets **500**
//! `log-damaged` (no `Retry-After`: reading a damaged record again does not heal it), and
//! the server remembers the first damage it met ([`DamageLatch`]), so that `/readyz`
//! answers **503** `log-damaged` from then on and a load balancer takes the server out of
//! rotation until the operator has restored the log and restarted it.
//!
//! **Invariant:** once latched, the state is never cleared in this process: the damage is in
//! the log's files, and only a restore (and a restart) removes it.

use std::sync::{Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use crm_app::damage::{LogDamage, RESTORE_REMEDY};
use crm_eventstore::ReadError;

use super::problem::PROBLEM_JSON;
use super::AppState;

/// The slug of the problem type (`urn:crm:problem:log-damaged`).
pub const LOG_DAMAGED: &str = "log-damaged";

/// Damage a request met: carried by its response (an extension) to [`latch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamageMet {
    /// The damaged record's position, when the store named one.
    pub position: Option<u64>,
    /// The problem's detail: what was found, where, and what to do.
    pub detail: String,
}

impl DamageMet {
    /// The damage of a read error: [`ReadError::Corrupt`] only.
    #[must_use]
    pub fn of_read(error: &ReadError) -> Option<DamageMet> {
        let damage = LogDamage::of_read(error)?;
        Some(DamageMet {
            position: damage.location.first_bad_position(),
            detail: format!("{error}; retrying will not help: the operator must {RESTORE_REMEDY}"),
        })
    }
}

/// The first damage this server met, kept for the life of the process.
#[derive(Debug, Default)]
pub struct DamageLatch {
    first: Mutex<Option<DamageMet>>,
}

impl DamageLatch {
    /// Records `met` unless damage was recorded before; whether this was the first.
    pub fn latch(&self, met: &DamageMet) -> bool {
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_some() {
            return false;
        }
        *first = Some(met.clone());
        drop(first);
        tracing::error!(
            position = met.position,
            detail = %met.detail,
            "the log is damaged: /readyz answers not ready from now on"
        );
        metrics::gauge!("crm_log_damaged").set(1.0);
        true
    }

    /// The first damage met, if any.
    #[must_use]
    pub fn get(&self) -> Option<DamageMet> {
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Middleware: latches the damage a response carries (see [`DamageMet`]).
pub async fn latch(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(met) = response.extensions().get::<DamageMet>() {
        state.damage.latch(met);
    }
    response
}

/// Documents the `log-damaged` answer (500) on every `/v1` operation: each authenticates
/// its caller against the token register in the log, and most read the log besides.
#[must_use]
pub fn document(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    for (path, item) in &mut openapi.paths.paths {
        if !path.starts_with("/v1/") {
            continue;
        }
        let operations = [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for operation in operations.into_iter().flatten() {
            if operation.responses.responses.contains_key("500") {
                continue;
            }
            let response = ResponseBuilder::new()
                .description(
                    "The log is damaged where this request read it (`urn:crm:problem:log-damaged`; `damaged_position` names the record): retrying will not help, the operator restores the log from a replica or backup. No `Retry-After`; `/readyz` answers 503 from then on.",
                )
                .content(
                    PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build();
            operation
                .responses
                .responses
                .insert("500".to_owned(), response.into());
        }
    }
    openapi
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_eventstore::{Corruption, Position};

    #[test]
    fn the_first_damage_is_kept_and_names_its_position_and_the_remedy() {
        let latch = DamageLatch::default();
        assert_eq!(latch.get(), None);
        let corrupt = |p| ReadError::Corrupt {
            position: Position(p),
            reason: Corruption::Missing,
        };
        let first = DamageMet::of_read(&corrupt(4)).unwrap();
        assert!(first.detail.contains("position 4"), "{}", first.detail);
        assert!(
            first.detail.contains("replica or backup"),
            "{}",
            first.detail
        );
        assert!(latch.latch(&first));
        assert!(!latch.latch(&DamageMet::of_read(&corrupt(9)).unwrap()));
        assert_eq!(latch.get().and_then(|m| m.position), Some(4));
        assert_eq!(DamageMet::of_read(&ReadError::Closed), None);
    }
}
