//! The backend conformance suite: every case is a generic async function that
//! takes a fresh, empty store and uses nothing but the [`EventStore`] trait,
//! so any backend (memory, sled, NATS JetStream, ...) can be checked against
//! the same contract.
//!
//! Instantiate it with [`conformance_tests!`](crate::conformance_tests), which
//! expands into one `#[tokio::test]` per case (so failures are named), given a
//! factory that returns the store and a guard kept alive for the store's life:
//!
//! ```text
//! crm_tests::conformance_tests!(memory, || async { (MemoryStore::new(), ()) });
//! crm_tests::conformance_tests!(sled, || async {
//!     let dir = tempfile::tempdir().unwrap();
//!     (SledStore::open(dir.path()).unwrap(), dir)
//! });
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::DateTime;
use crm_eventstore::limits::BATCH_PARTS_MAX;
use crm_eventstore::limits::{
    ACTOR_SIZE_MAX_BYTES, APPEND_EVENTS_MAX, APPEND_SIZE_MAX_BYTES, EVENT_SIZE_MAX_BYTES,
    EVENT_TYPE_SIZE_MAX_BYTES, READ_PAGE_MAX, STREAM_ID_SIZE_MAX_BYTES,
};
use crm_eventstore::{
    AppendError, AppendResult, ChainHash, EventId, EventStore, ExpectedVersion, Head, MemoryStore,
    Position, ProposedEvent, RecordedAt, RecordedEvent, StreamAppend, StreamId, StreamIdError,
    StreamVersion,
};
use uuid::Uuid;

use crate::support::{
    assert_log_invariants, assert_same_event, event, event_id, events, no_hang, read_everything,
    read_whole_stream, snapshot, stream,
};

/// Expands into one `#[tokio::test]` per conformance case, in a module named
/// `$name`. `$make` is a closure returning a future of `(store, guard)`: a
/// fresh empty store per case, and whatever must outlive it (a temp dir).
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $make:expr) => {
        $crate::conformance_tests!(@cases $name, $make;
            append_to_new_stream_with_no_stream,
            append_to_new_stream_with_any,
            append_to_new_stream_with_exact_zero,
            wrong_expected_version_is_refused_and_writes_nothing,
            exact_version_on_existing_stream,
            multi_event_append_is_atomic_and_consecutive,
            read_stream_pages_by_version,
            read_all_pages_by_position,
            read_all_selected_shows_every_record_and_keeps_the_chosen,
            read_pages_are_capped,
            positions_are_dense_across_interleaved_streams,
            idempotent_retry_returns_the_original_result,
            same_id_with_other_content_conflicts,
            partially_existing_ids_conflict,
            same_id_in_another_stream_conflicts,
            duplicate_id_inside_one_append_is_invalid,
            empty_append_is_refused,
            too_many_events_are_refused,
            event_too_large_is_refused,
            append_too_large_is_refused,
            invalid_event_fields_are_refused,
            invalid_stream_ids_are_refused,
            head_and_watch_head_track_appends,
            hash_chain_links_every_record,
            recorded_at_never_decreases,
            fields_round_trip_exactly,
            verify_accepts_a_good_log,
            subscription_from_zero_catches_up_then_follows,
            subscription_from_the_middle_catches_up_then_follows,
            concurrent_appenders_to_own_streams,
            concurrent_appenders_to_a_shared_stream,
            concurrent_retries_of_one_append_write_it_once,
            head_never_moves_backwards_under_concurrent_appends,
            stream_version_tracks_appends,
            batch_parts_land_in_order_each_with_its_own_result,
            batch_with_a_stated_recording_time_gives_the_same_chain,
            batch_limits_and_future_times_are_refused_whole,
        );
    };
    (@cases $name:ident, $make:expr; $($case:ident),* $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let (store, guard) = ($make)().await;
                    $crate::conformance::$case(store).await;
                    drop(guard);
                }
            )*
        }
    };
}

async fn append_ok<S: EventStore>(
    store: &S,
    s: &StreamId,
    expected: ExpectedVersion,
    evs: Vec<ProposedEvent>,
) -> AppendResult {
    store
        .append(s, expected, evs)
        .await
        .unwrap_or_else(|e| panic!("append to `{s}` with {expected:?} failed: {e}"))
}

async fn append_err<S: EventStore>(
    store: &S,
    s: &StreamId,
    expected: ExpectedVersion,
    evs: Vec<ProposedEvent>,
) -> AppendError {
    match store.append(s, expected, evs).await {
        Ok(r) => panic!("append to `{s}` with {expected:?} should fail, got {r:?}"),
        Err(e) => e,
    }
}

fn written(first: u64, last: u64, version: u64) -> AppendResult {
    AppendResult {
        first_position: Position(first),
        last_position: Position(last),
        stream_version: StreamVersion(version),
        already_present: false,
    }
}

fn exact(v: u64) -> ExpectedVersion {
    ExpectedVersion::Exact(StreamVersion(v))
}

fn positions(recs: &[RecordedEvent]) -> Vec<u64> {
    recs.iter().map(|r| r.position.0).collect()
}

fn versions(recs: &[RecordedEvent]) -> Vec<u64> {
    recs.iter().map(|r| r.stream_version.0).collect()
}

fn assert_conflict(err: &AppendError, id: EventId) {
    match err {
        AppendError::IdempotencyConflict { event_id, .. } => assert_eq!(*event_id, id, "{err}"),
        other => panic!("expected an idempotency conflict on {id}, got {other:?}"),
    }
}

/// A fresh store whose first append uses `NoStream` gets position 1, version 1.
pub async fn append_to_new_stream_with_no_stream<S: EventStore>(store: S) {
    let s = stream("case-1");
    let r = append_ok(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    assert_eq!(r, written(1, 1, 1));
    assert_eq!(store.stream_version(&s).await.unwrap(), StreamVersion(1));
    let t = stream("case-2");
    let r = append_ok(&store, &t, ExpectedVersion::NoStream, vec![event(2)]).await;
    assert_eq!(r, written(2, 2, 1));
    let log = read_everything(&store).await;
    assert_eq!(log.len(), 2);
    assert_same_event(&log[0], &event(1));
    assert_eq!(
        (&log[0].stream_id, log[0].stream_version),
        (&s, StreamVersion(1))
    );
    assert_same_event(&log[1], &event(2));
    assert_eq!(
        (&log[1].stream_id, log[1].stream_version),
        (&t, StreamVersion(1))
    );
}

/// `Any` creates a stream and appends to an existing one.
pub async fn append_to_new_stream_with_any<S: EventStore>(store: S) {
    let s = stream("case-1");
    let r = append_ok(&store, &s, ExpectedVersion::Any, vec![event(1)]).await;
    assert_eq!(r, written(1, 1, 1));
    let r = append_ok(&store, &s, ExpectedVersion::Any, vec![event(2), event(3)]).await;
    assert_eq!(r, written(2, 3, 3));
    let recs = read_whole_stream(&store, &s).await;
    assert_eq!(versions(&recs), [1, 2, 3]);
    assert_eq!(positions(&recs), [1, 2, 3]);
}

/// `Exact(0)` means "no stream": it creates a stream, and is refused once the stream exists.
pub async fn append_to_new_stream_with_exact_zero<S: EventStore>(store: S) {
    let s = stream("case-1");
    let r = append_ok(&store, &s, exact(0), vec![event(1)]).await;
    assert_eq!(r, written(1, 1, 1));
    let err = append_err(&store, &s, exact(0), vec![event(2)]).await;
    assert_eq!(
        err,
        AppendError::WrongExpectedVersion {
            stream: s.clone(),
            expected: exact(0),
            actual: StreamVersion(1),
        }
    );
    assert_eq!(read_everything(&store).await.len(), 1);
}

/// A wrong expectation is refused with the stream, the expectation and the
/// actual version, and writes nothing; the refused ids stay unused.
pub async fn wrong_expected_version_is_refused_and_writes_nothing<S: EventStore>(store: S) {
    let s = stream("case-1");
    let t = stream("case-2");
    let u = stream("case-3");
    append_ok(&store, &s, ExpectedVersion::NoStream, events(1..3)).await;
    append_ok(&store, &t, ExpectedVersion::NoStream, vec![event(3)]).await;
    let before = snapshot(&store, &[&s, &t, &u]).await;
    let cases = [
        (&s, ExpectedVersion::NoStream, 2),
        (&s, exact(0), 2),
        (&s, exact(1), 2),
        (&s, exact(3), 2),
        (&t, exact(2), 1),
        (&u, exact(1), 0),
        (&u, exact(7), 0),
    ];
    for (i, (st, expected, actual)) in cases.into_iter().enumerate() {
        let n = 100 + 10 * i as u128;
        let err = append_err(&store, st, expected, events(n..n + 2)).await;
        assert_eq!(
            err,
            AppendError::WrongExpectedVersion {
                stream: st.clone(),
                expected,
                actual: StreamVersion(actual),
            }
        );
        assert_eq!(snapshot(&store, &[&s, &t, &u]).await, before, "{err} wrote");
    }
    // The refused events were not remembered: they append as new events.
    let r = append_ok(&store, &s, exact(2), events(100..102)).await;
    assert_eq!(r, written(4, 5, 4));
}

/// `Exact(n)` on a stream at version n appends after it.
pub async fn exact_version_on_existing_stream<S: EventStore>(store: S) {
    let s = stream("case-1");
    append_ok(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    let r = append_ok(&store, &s, exact(1), events(2..4)).await;
    assert_eq!(r, written(2, 3, 3));
    let r = append_ok(&store, &s, exact(3), vec![event(4)]).await;
    assert_eq!(r, written(4, 4, 4));
    let recs = read_whole_stream(&store, &s).await;
    assert_eq!(versions(&recs), [1, 2, 3, 4]);
    for (rec, n) in recs.iter().zip(1..) {
        assert_same_event(rec, &event(n));
    }
}

/// A multi-event append gets consecutive positions and versions, in order; an
/// append with one bad event writes none of its events.
pub async fn multi_event_append_is_atomic_and_consecutive<S: EventStore>(store: S) {
    let s = stream("case-1");
    let t = stream("case-2");
    append_ok(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    let r = append_ok(&store, &t, ExpectedVersion::NoStream, events(2..7)).await;
    assert_eq!(r, written(2, 6, 5));
    let r = append_ok(&store, &s, exact(1), events(7..10)).await;
    assert_eq!(r, written(7, 9, 4));
    let recs = read_whole_stream(&store, &t).await;
    assert_eq!(positions(&recs), [2, 3, 4, 5, 6]);
    assert_eq!(versions(&recs), [1, 2, 3, 4, 5]);
    for (rec, n) in recs.iter().zip(2..) {
        assert_same_event(rec, &event(n));
    }
    let recs = read_whole_stream(&store, &s).await;
    assert_eq!(positions(&recs), [1, 7, 8, 9]);
    assert_eq!(versions(&recs), [1, 2, 3, 4]);

    let before = snapshot(&store, &[&s, &t]).await;
    let mut batch = events(20..25);
    batch[3].event_type = String::new();
    let err = append_err(&store, &t, exact(5), batch).await;
    assert!(
        matches!(err, AppendError::InvalidEvent { index: 3, event_id, .. } if event_id == event_id_of(23)),
        "{err:?}"
    );
    assert_eq!(snapshot(&store, &[&s, &t]).await, before);
}

fn event_id_of(n: u128) -> EventId {
    event_id(n)
}

/// Appends `count` events numbered from `first`, alternating between `main`
/// and a noise stream so that stream versions and positions differ.
async fn interleaved<S: EventStore>(store: &S, main: &StreamId, first: u128, count: u128) {
    let noise = stream("noise-1");
    for n in first..first + count {
        append_ok(store, main, ExpectedVersion::Any, vec![event(n)]).await;
        if n % 3 == 0 {
            append_ok(
                store,
                &noise,
                ExpectedVersion::Any,
                vec![event(n + 100_000)],
            )
            .await;
        }
    }
}

/// `read_stream` pages by stream version (0 and 1 both start at the beginning).
pub async fn read_stream_pages_by_version<S: EventStore>(store: S) {
    let s = stream("case-1");
    interleaved(&store, &s, 1, 25).await;
    let all = read_whole_stream(&store, &s).await;
    assert_eq!(all.len(), 25);
    for (from, max, expected) in [
        (0u64, 10usize, 1..=10u64),
        (1, 10, 1..=10),
        (11, 10, 11..=20),
        (21, 10, 21..=25),
        (5, 1, 5..=5),
        (25, 100, 25..=25),
    ] {
        let page = store
            .read_stream(&s, StreamVersion(from), max)
            .await
            .unwrap();
        assert_eq!(
            versions(&page),
            expected.clone().collect::<Vec<_>>(),
            "read_stream(from {from}, max {max})"
        );
        for rec in &page {
            assert_eq!(
                rec,
                &all[usize::try_from(rec.stream_version.0 - 1).unwrap()]
            );
            assert_same_event(rec, &event(u128::from(rec.stream_version.0)));
        }
    }
    for (from, max) in [(26u64, 10usize), (1000, 10), (1, 0)] {
        let page = store
            .read_stream(&s, StreamVersion(from), max)
            .await
            .unwrap();
        assert!(page.is_empty(), "read_stream(from {from}, max {max})");
    }
    let none = store
        .read_stream(&stream("case-404"), StreamVersion(0), 10)
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// `read_all` pages by position (0 and 1 both start at the beginning).
pub async fn read_all_pages_by_position<S: EventStore>(store: S) {
    let s = stream("case-1");
    interleaved(&store, &s, 1, 19).await;
    let all = read_everything(&store).await;
    assert_eq!(all.len(), 25);
    for (from, max, expected) in [
        (0u64, 10usize, 1..=10u64),
        (1, 10, 1..=10),
        (11, 10, 11..=20),
        (21, 10, 21..=25),
        (7, 1, 7..=7),
        (25, 100, 25..=25),
    ] {
        let page = store.read_all(Position(from), max).await.unwrap();
        assert_eq!(
            positions(&page),
            expected.clone().collect::<Vec<_>>(),
            "read_all(from {from}, max {max})"
        );
        for rec in &page {
            assert_eq!(rec, &all[usize::try_from(rec.position.0 - 1).unwrap()]);
        }
    }
    for (from, max) in [(26u64, 10usize), (1000, 10), (1, 0), (u64::MAX, 10)] {
        let page = store.read_all(Position(from), max).await.unwrap();
        assert!(page.is_empty(), "read_all(from {from}, max {max})");
    }
}

/// `read_all_selected` reads what `read_all` reads: its selector sees every record of the
/// page in order, the page holds exactly the records it chose, and `last` is the last
/// position read.
pub async fn read_all_selected_shows_every_record_and_keeps_the_chosen<S: EventStore>(store: S) {
    let s = stream("case-1");
    interleaved(&store, &s, 1, 19).await;
    for (from, max) in [
        (0u64, 10usize),
        (11, 10),
        (21, 10),
        (7, 1),
        (25, 100),
        (26, 10),
        (1, 0),
    ] {
        let page = store.read_all(Position(from), max).await.unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = std::sync::Arc::clone(&seen);
        let selected = store
            .read_all_selected(
                Position(from),
                max,
                move |v: &crm_eventstore::RecordView<'_>| {
                    log.lock().unwrap().push((
                        v.position,
                        v.stream_id.to_owned(),
                        v.stream_version,
                        v.event_type.to_owned(),
                        v.hash,
                    ));
                    v.position.0.is_multiple_of(3) || v.stream_id == "case-1"
                },
            )
            .await
            .unwrap();
        let what = format!("read_all_selected(from {from}, max {max})");
        let expected_seen: Vec<_> = page
            .iter()
            .map(|r| {
                (
                    r.position,
                    r.stream_id.as_str().to_owned(),
                    r.stream_version,
                    r.event_type.clone(),
                    r.hash,
                )
            })
            .collect();
        assert_eq!(*seen.lock().unwrap(), expected_seen, "{what}");
        let chosen: Vec<_> = page
            .iter()
            .filter(|r| r.position.0.is_multiple_of(3) || r.stream_id.as_str() == "case-1")
            .cloned()
            .collect();
        assert_eq!(selected.records, chosen, "{what}");
        assert_eq!(selected.last, page.last().map(|r| r.position), "{what}");
    }
}

/// A read never returns more than `READ_PAGE_MAX` events, whatever it asks for.
pub async fn read_pages_are_capped<S: EventStore>(store: S) {
    let s = stream("big-1");
    let total = READ_PAGE_MAX + 1;
    let mut n = 0usize;
    while n < total {
        let k = APPEND_EVENTS_MAX.min(total - n);
        let batch = (n..n + k)
            .map(|i| {
                let mut e = event(i as u128 + 1);
                e.payload = Vec::new();
                e
            })
            .collect();
        append_ok(&store, &s, exact(n as u64), batch).await;
        n += k;
    }
    let page = store.read_all(Position(0), usize::MAX).await.unwrap();
    assert_eq!(page.len(), READ_PAGE_MAX);
    assert_eq!(
        page.last().unwrap().position,
        Position(READ_PAGE_MAX as u64)
    );
    let rest = store
        .read_all(Position(READ_PAGE_MAX as u64 + 1), usize::MAX)
        .await
        .unwrap();
    assert_eq!(positions(&rest), [total as u64]);
    let page = store
        .read_stream(&s, StreamVersion(0), usize::MAX)
        .await
        .unwrap();
    assert_eq!(page.len(), READ_PAGE_MAX);
    assert_eq!(
        page.last().unwrap().stream_version,
        StreamVersion(READ_PAGE_MAX as u64)
    );
    let rest = store
        .read_stream(
            &s,
            StreamVersion(READ_PAGE_MAX as u64 + 1),
            READ_PAGE_MAX + 5,
        )
        .await
        .unwrap();
    assert_eq!(versions(&rest), [total as u64]);
}

/// Positions are 1, 2, 3, ... across appends to several streams, and each
/// append's result names exactly the positions its events got.
pub async fn positions_are_dense_across_interleaved_streams<S: EventStore>(store: S) {
    let streams = [stream("a-1"), stream("b-1"), stream("c-1")];
    let mut next_position = 1u64;
    let mut expected_versions = [0u64; 3];
    let mut n = 1u128;
    for round in 0..30usize {
        let which = (round * 7) % 3;
        let size = 1 + (round % 3);
        let batch = events(n..n + size as u128);
        n += size as u128;
        let r = append_ok(
            &store,
            &streams[which],
            exact(expected_versions[which]),
            batch,
        )
        .await;
        expected_versions[which] += size as u64;
        assert_eq!(
            r,
            written(
                next_position,
                next_position + size as u64 - 1,
                expected_versions[which]
            )
        );
        next_position += size as u64;
    }
    let log = read_everything(&store).await;
    assert_log_invariants(&log, store.head());
    assert_eq!(log.len() as u64, next_position - 1);
    for (rec, n) in log.iter().zip(1..) {
        assert_same_event(rec, &event(n));
    }
    for (s, v) in streams.iter().zip(expected_versions) {
        assert_eq!(store.stream_version(s).await.unwrap(), StreamVersion(v));
        assert_eq!(read_whole_stream(&store, s).await.len() as u64, v);
    }
}

/// Resending an append (same ids, same content) returns the original result
/// with `already_present`, writes nothing, and ignores the expected version.
pub async fn idempotent_retry_returns_the_original_result<S: EventStore>(store: S) {
    let s = stream("case-1");
    let t = stream("case-2");
    append_ok(&store, &t, ExpectedVersion::NoStream, vec![event(1)]).await;
    let original = append_ok(&store, &s, ExpectedVersion::NoStream, events(2..5)).await;
    assert_eq!(original, written(2, 4, 3));
    append_ok(&store, &t, exact(1), vec![event(5)]).await;
    append_ok(&store, &s, exact(3), vec![event(6)]).await;
    let retry_result = AppendResult {
        already_present: true,
        ..original.clone()
    };
    let before = snapshot(&store, &[&s, &t]).await;
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        exact(0),
        exact(3),
        exact(4),
        exact(99),
    ] {
        let r = append_ok(&store, &s, expected, events(2..5)).await;
        assert_eq!(r, retry_result, "retry with {expected:?}");
        assert_eq!(snapshot(&store, &[&s, &t]).await, before);
    }
    // A single-event append retried is idempotent too.
    let r = append_ok(&store, &t, ExpectedVersion::NoStream, vec![event(1)]).await;
    assert_eq!(
        r,
        AppendResult {
            already_present: true,
            ..written(1, 1, 1)
        }
    );
    assert_eq!(snapshot(&store, &[&s, &t]).await, before);
}

/// An id already in the log with any field changed is a conflict.
pub async fn same_id_with_other_content_conflicts<S: EventStore>(store: S) {
    let s = stream("case-1");
    let mut original = event(1);
    original.causation_id = Some(Uuid::from_u128(11));
    original.correlation_id = Some(Uuid::from_u128(12));
    original.metadata = b"{\"m\":1}".to_vec();
    append_ok(
        &store,
        &s,
        ExpectedVersion::NoStream,
        vec![original.clone()],
    )
    .await;
    let before = snapshot(&store, &[&s]).await;
    type Change = fn(&mut ProposedEvent);
    let changes: [(&str, Change); 9] = [
        ("payload", |e| e.payload.push(b' ')),
        ("metadata", |e| e.metadata.clear()),
        ("event_type", |e| e.event_type = "CaseClosed".into()),
        ("schema_version", |e| e.schema_version += 1),
        ("occurred_at", |e| {
            e.occurred_at += chrono::Duration::nanoseconds(1)
        }),
        ("causation_id", |e| e.causation_id = None),
        ("correlation_id", |e| {
            e.correlation_id = Some(Uuid::from_u128(13))
        }),
        ("actor", |e| e.actor.push('x')),
        ("actor to empty", |e| e.actor.clear()),
    ];
    for (what, change) in changes {
        let mut other = original.clone();
        change(&mut other);
        for expected in [ExpectedVersion::Any, exact(1)] {
            let err = append_err(&store, &s, expected, vec![other.clone()]).await;
            assert_conflict(&err, original.event_id);
            assert_eq!(snapshot(&store, &[&s]).await, before, "{what} changed");
        }
    }
}

/// An append mixing ids already in the log with new ones, or resending them in
/// another order, is a conflict and writes none of its new events.
pub async fn partially_existing_ids_conflict<S: EventStore>(store: S) {
    let s = stream("case-1");
    append_ok(&store, &s, ExpectedVersion::NoStream, events(1..3)).await;
    let before = snapshot(&store, &[&s]).await;
    let mixes = [
        vec![event(1), event(3)],
        vec![event(3), event(1)],
        vec![event(1), event(2), event(3)],
        vec![event(3), event(1), event(2)],
        vec![event(2), event(1)],
    ];
    for batch in mixes {
        let ids: Vec<_> = batch.iter().map(|e| e.event_id).collect();
        let err = append_err(&store, &s, ExpectedVersion::Any, batch).await;
        assert!(
            matches!(err, AppendError::IdempotencyConflict { event_id, .. } if ids.contains(&event_id)),
            "{err:?}"
        );
        assert_eq!(snapshot(&store, &[&s]).await, before);
    }
    // The new event of the refused mixes was never written.
    let r = append_ok(&store, &s, exact(2), vec![event(3)]).await;
    assert_eq!(r, written(3, 3, 3));
}

/// An id is global: reusing it in another stream is a conflict.
pub async fn same_id_in_another_stream_conflicts<S: EventStore>(store: S) {
    let s = stream("case-1");
    let t = stream("case-2");
    append_ok(&store, &s, ExpectedVersion::NoStream, events(1..3)).await;
    let before = snapshot(&store, &[&s, &t]).await;
    for (batch, expected) in [
        (vec![event(1)], ExpectedVersion::NoStream),
        (events(1..3), ExpectedVersion::Any),
        (vec![event(2)], exact(0)),
    ] {
        let first = batch[0].event_id;
        let err = append_err(&store, &t, expected, batch).await;
        assert_conflict(&err, first);
        assert_eq!(snapshot(&store, &[&s, &t]).await, before);
    }
    assert_eq!(store.stream_version(&t).await.unwrap(), StreamVersion(0));
}

/// The same id twice in one append is an invalid event.
pub async fn duplicate_id_inside_one_append_is_invalid<S: EventStore>(store: S) {
    let s = stream("case-1");
    append_ok(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    let before = snapshot(&store, &[&s]).await;
    let mut dup = event(2);
    dup.payload = b"other".to_vec();
    let err = append_err(&store, &s, exact(1), vec![event(2), event(3), dup]).await;
    assert!(
        matches!(err, AppendError::InvalidEvent { index: 2, event_id, .. } if event_id == event_id_of(2)),
        "{err:?}"
    );
    let err = append_err(&store, &s, exact(1), vec![event(4), event(4)]).await;
    assert!(
        matches!(err, AppendError::InvalidEvent { index: 1, event_id, .. } if event_id == event_id_of(4)),
        "{err:?}"
    );
    assert_eq!(snapshot(&store, &[&s]).await, before);
}

/// An append without events is refused.
pub async fn empty_append_is_refused<S: EventStore>(store: S) {
    let s = stream("case-1");
    let t = stream("case-2");
    append_ok(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    let before = snapshot(&store, &[&s, &t]).await;
    for (st, expected) in [
        (&s, ExpectedVersion::Any),
        (&s, exact(1)),
        (&t, ExpectedVersion::NoStream),
    ] {
        let err = append_err(&store, st, expected, Vec::new()).await;
        assert_eq!(err, AppendError::Empty);
    }
    assert_eq!(snapshot(&store, &[&s, &t]).await, before);
}

/// More than `APPEND_EVENTS_MAX` events in one append are refused; exactly that many are fine.
pub async fn too_many_events_are_refused<S: EventStore>(store: S) {
    let s = stream("case-1");
    append_ok(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    let before = snapshot(&store, &[&s]).await;
    let max = APPEND_EVENTS_MAX as u128;
    let err = append_err(&store, &s, ExpectedVersion::Any, events(10..10 + max + 1)).await;
    assert_eq!(
        err,
        AppendError::TooManyEvents {
            count: APPEND_EVENTS_MAX + 1,
            max: APPEND_EVENTS_MAX,
        }
    );
    assert_eq!(snapshot(&store, &[&s]).await, before);
    let r = append_ok(&store, &s, exact(1), events(10..10 + max)).await;
    assert_eq!(
        r,
        written(
            2,
            1 + APPEND_EVENTS_MAX as u64,
            1 + APPEND_EVENTS_MAX as u64
        )
    );
}

fn event_of_size(n: u128, size: usize) -> ProposedEvent {
    let mut e = event(n);
    e.metadata = b"{}".to_vec();
    let fixed = e.event_type.len() + e.actor.len() + e.metadata.len();
    e.payload = vec![0xA5; size - fixed];
    assert_eq!(e.size_bytes(), size);
    e
}

/// An event over `EVENT_SIZE_MAX_BYTES` is refused (naming it); one at the limit is fine.
pub async fn event_too_large_is_refused<S: EventStore>(store: S) {
    let s = stream("case-1");
    append_ok(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    let before = snapshot(&store, &[&s]).await;
    let big = event_of_size(3, EVENT_SIZE_MAX_BYTES + 1);
    let err = append_err(&store, &s, exact(1), vec![event(2), big]).await;
    assert_eq!(
        err,
        AppendError::EventTooLarge {
            index: 1,
            event_id: event_id(3),
            size: EVENT_SIZE_MAX_BYTES + 1,
            max: EVENT_SIZE_MAX_BYTES,
        }
    );
    assert_eq!(snapshot(&store, &[&s]).await, before);
    let at_limit = event_of_size(3, EVENT_SIZE_MAX_BYTES);
    let r = append_ok(&store, &s, exact(1), vec![event(2), at_limit.clone()]).await;
    assert_eq!(r, written(2, 3, 3));
    let back = store.read_all(Position(3), 1).await.unwrap();
    assert_same_event(&back[0], &at_limit);
}

/// An append over `APPEND_SIZE_MAX_BYTES` in total is refused, though each event is within limits.
pub async fn append_too_large_is_refused<S: EventStore>(store: S) {
    let s = stream("case-1");
    append_ok(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    let before = snapshot(&store, &[&s]).await;
    let count = APPEND_SIZE_MAX_BYTES / EVENT_SIZE_MAX_BYTES + 1;
    let batch: Vec<_> = (0..count)
        .map(|i| event_of_size(10 + i as u128, EVENT_SIZE_MAX_BYTES))
        .collect();
    let err = append_err(&store, &s, exact(1), batch).await;
    assert_eq!(
        err,
        AppendError::AppendTooLarge {
            size: count * EVENT_SIZE_MAX_BYTES,
            max: APPEND_SIZE_MAX_BYTES,
        }
    );
    assert_eq!(snapshot(&store, &[&s]).await, before);
}

/// Events with a nil id, a bad type or an oversized actor are refused, naming the event.
pub async fn invalid_event_fields_are_refused<S: EventStore>(store: S) {
    let s = stream("case-1");
    append_ok(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    let before = snapshot(&store, &[&s]).await;
    type Break = fn(&mut ProposedEvent);
    let breaks: [(&str, Break); 6] = [
        ("nil id", |e| e.event_id = EventId(Uuid::nil())),
        ("empty type", |e| e.event_type.clear()),
        ("type with a space", |e| e.event_type = "Case Opened".into()),
        ("type with a newline", |e| e.event_type = "Case\n".into()),
        ("type too long", |e| {
            e.event_type = "T".repeat(EVENT_TYPE_SIZE_MAX_BYTES + 1)
        }),
        ("actor too long", |e| {
            e.actor = "a".repeat(ACTOR_SIZE_MAX_BYTES + 1)
        }),
    ];
    for (what, f) in breaks {
        let mut bad = event(3);
        f(&mut bad);
        let bad_id = bad.event_id;
        let err = append_err(&store, &s, exact(1), vec![event(2), bad]).await;
        assert!(
            matches!(err, AppendError::InvalidEvent { index: 1, event_id, .. } if event_id == bad_id),
            "{what}: {err:?}"
        );
        assert_eq!(snapshot(&store, &[&s]).await, before, "{what}");
    }
    // The limits themselves are allowed.
    let mut edge = event(3);
    edge.event_type = "T".repeat(EVENT_TYPE_SIZE_MAX_BYTES);
    edge.actor = "a".repeat(ACTOR_SIZE_MAX_BYTES);
    append_ok(&store, &s, exact(1), vec![edge.clone()]).await;
    assert_same_event(&read_everything(&store).await[1], &edge);
}

/// `StreamId::new` refuses empty, too long and whitespace/control names; the
/// store takes the longest and non-ASCII names.
pub async fn invalid_stream_ids_are_refused<S: EventStore>(store: S) {
    assert_eq!(StreamId::new(""), Err(StreamIdError::Empty));
    let long = "x".repeat(STREAM_ID_SIZE_MAX_BYTES + 1);
    assert_eq!(
        StreamId::new(long),
        Err(StreamIdError::TooLong {
            len: STREAM_ID_SIZE_MAX_BYTES + 1,
            max: STREAM_ID_SIZE_MAX_BYTES,
        })
    );
    // 128 two-byte characters: 256 bytes though only 128 chars.
    assert!(matches!(
        StreamId::new("é".repeat(128)),
        Err(StreamIdError::TooLong { len: 256, .. })
    ));
    for bad in [
        "case 1",
        "case-1\n",
        "\tcase",
        "case\u{0}1",
        "case\u{85}",
        "a\u{3000}b",
    ] {
        assert!(
            matches!(StreamId::new(bad), Err(StreamIdError::BadCharacter { .. })),
            "{bad:?} accepted"
        );
    }
    let longest = stream(&"x".repeat(STREAM_ID_SIZE_MAX_BYTES));
    let unicode = stream("opportunité-42—ü🦀");
    assert_eq!(unicode.category(), "opportunité");
    let prefix = stream("x");
    append_ok(&store, &longest, ExpectedVersion::NoStream, vec![event(1)]).await;
    append_ok(&store, &unicode, ExpectedVersion::NoStream, vec![event(2)]).await;
    append_ok(&store, &prefix, ExpectedVersion::NoStream, vec![event(3)]).await;
    for (st, n) in [(&longest, 1), (&unicode, 2), (&prefix, 3)] {
        let recs = read_whole_stream(&store, st).await;
        assert_eq!(recs.len(), 1, "stream {st}");
        assert_eq!(&recs[0].stream_id, st);
        assert_same_event(&recs[0], &event(n));
        assert_eq!(store.stream_version(st).await.unwrap(), StreamVersion(1));
    }
}

/// `head` and `watch_head` follow appends and name the last record's hash;
/// refused appends and retries leave the head alone.
pub async fn head_and_watch_head_track_appends<S: EventStore>(store: S) {
    assert_eq!(
        store.head(),
        Head {
            position: Position::ZERO,
            hash: ChainHash::GENESIS,
        }
    );
    let mut rx = store.watch_head();
    assert_eq!(*rx.borrow_and_update(), Head::default());
    let s = stream("case-1");
    append_ok(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    let log = read_everything(&store).await;
    assert_eq!(store.head(), log[0].as_head());
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), log[0].as_head());

    append_ok(&store, &s, exact(1), events(2..5)).await;
    let log = read_everything(&store).await;
    assert_eq!(store.head().position, Position(4));
    assert_eq!(store.head().hash, log[3].hash);
    assert_eq!(*rx.borrow_and_update(), log[3].as_head());

    let head = store.head();
    append_err(&store, &s, exact(1), vec![event(9)]).await;
    append_ok(&store, &s, ExpectedVersion::Any, events(2..5)).await;
    assert_eq!(store.head(), head);
    assert_eq!(*rx.borrow_and_update(), head);

    // A waiting receiver wakes for an append made by another task.
    let writer = store.clone();
    let task = tokio::spawn(async move {
        append_ok(
            &writer,
            &stream("case-2"),
            ExpectedVersion::NoStream,
            vec![event(5)],
        )
        .await
    });
    no_hang("watch_head().changed()", async {
        while rx.borrow_and_update().position < Position(5) {
            rx.changed().await.unwrap();
        }
    })
    .await;
    assert_eq!(task.await.unwrap(), written(5, 5, 1));
    let log = read_everything(&store).await;
    assert_eq!(*rx.borrow(), log[4].as_head());
    assert_eq!(store.head(), log[4].as_head());
}

/// Every record links to its predecessor's hash; the first to genesis.
pub async fn hash_chain_links_every_record<S: EventStore>(store: S) {
    let s = stream("case-1");
    let t = stream("case-2");
    append_ok(&store, &s, ExpectedVersion::NoStream, events(1..4)).await;
    append_ok(&store, &t, ExpectedVersion::NoStream, vec![event(4)]).await;
    append_ok(&store, &s, exact(3), events(5..7)).await;
    let log = read_everything(&store).await;
    assert_eq!(log.len(), 6);
    assert_eq!(log[0].prev_hash, ChainHash::GENESIS);
    for pair in log.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "at {}", pair[1].position);
    }
    let distinct: HashSet<_> = log.iter().map(|r| r.hash).collect();
    assert_eq!(distinct.len(), log.len());
    assert!(!distinct.contains(&ChainHash::GENESIS));
    assert_log_invariants(&log, store.head());
    // Stream reads carry the same chain fields as global reads.
    for rec in read_whole_stream(&store, &s).await {
        assert_eq!(rec, log[usize::try_from(rec.position.0 - 1).unwrap()]);
    }
}

/// `recorded_at` never decreases along positions, also under concurrent appends.
pub async fn recorded_at_never_decreases<S: EventStore>(store: S) {
    let mut tasks = Vec::new();
    for t in 0..4u128 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = stream(&format!("case-{t}"));
            for i in 0..25u128 {
                let mut e = event(t * 1000 + i);
                // Business time goes backwards: it must not influence recorded_at.
                e.occurred_at =
                    DateTime::from_timestamp(2_000_000_000 - i64::try_from(i).unwrap() * 1000, 0)
                        .expect("valid timestamp");
                append_ok(&store, &s, ExpectedVersion::Any, vec![e]).await;
            }
        }));
    }
    no_hang("appenders", async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
    let log = read_everything(&store).await;
    assert_eq!(log.len(), 100);
    for pair in log.windows(2) {
        assert!(
            pair[1].recorded_at >= pair[0].recorded_at,
            "recorded_at decreases at {}",
            pair[1].position
        );
    }
    assert_log_invariants(&log, store.head());
}

/// Every caller-supplied field comes back exactly as sent.
pub async fn fields_round_trip_exactly<S: EventStore>(store: S) {
    let s = stream("opportunité-7");
    let mut a = event(1);
    a.event_type = "OpportunityWon".into();
    a.schema_version = u16::MAX;
    a.occurred_at = DateTime::from_timestamp(1_712_345_678, 123_456_789).unwrap();
    a.causation_id = Some(Uuid::from_u128(0xDEAD_BEEF));
    a.correlation_id = Some(Uuid::from_u128(u128::MAX));
    a.actor = "user:zoë@example.com".into();
    a.metadata = br#"{"source":"import","row":17}"#.to_vec();
    a.payload = (0..=255u8).collect();
    let mut b = event(2);
    b.schema_version = 0;
    b.occurred_at = DateTime::from_timestamp(-86_400 * 365 * 30 - 1, 999_999_999).unwrap();
    b.actor = String::new();
    b.metadata = Vec::new();
    b.payload = Vec::new();
    let mut c = event(3);
    c.occurred_at = DateTime::from_timestamp(0, 0).unwrap();
    c.causation_id = Some(Uuid::from_u128(0xC));
    c.correlation_id = None;
    c.payload = "Größe: 10 €, 東京 🦀".as_bytes().to_vec();
    let mut d = event(4);
    d.occurred_at = DateTime::from_timestamp(253_402_300_799, 1).unwrap(); // 9999-12-31T23:59:59
    d.causation_id = None;
    d.correlation_id = Some(Uuid::from_u128(0xD));
    d.payload = vec![0, 0, 0xFF, 0, 0xFF];
    let sent = vec![a, b, c, d];
    append_ok(&store, &s, ExpectedVersion::NoStream, sent[..2].to_vec()).await;
    append_ok(&store, &s, exact(2), sent[2..].to_vec()).await;
    let global = read_everything(&store).await;
    let by_stream = read_whole_stream(&store, &s).await;
    assert_eq!(global, by_stream);
    for (rec, e) in global.iter().zip(&sent) {
        assert_same_event(rec, e);
        assert_eq!(rec.stream_id, s);
    }
    let mut sub = store.subscribe(Position::ZERO);
    for e in &sent {
        let rec = no_hang("subscription", sub.next()).await.unwrap().unwrap();
        assert_same_event(&rec, e);
    }
}

/// `verify` accepts a good log, counting every record it checked.
pub async fn verify_accepts_a_good_log<S: EventStore>(store: S) {
    let report = store.verify(Position::ZERO, None).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, 0);
    assert_eq!(report.last_good, Head::default());
    let s = stream("case-1");
    let t = stream("case-2");
    for i in 0..8u128 {
        let st = if i % 2 == 0 { &s } else { &t };
        append_ok(
            &store,
            st,
            ExpectedVersion::Any,
            events(i * 3 + 1..i * 3 + 4),
        )
        .await;
    }
    let log = read_everything(&store).await;
    assert_eq!(log.len(), 24);
    let report = store.verify(Position::ZERO, None).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, 24);
    assert_eq!(report.last_good, store.head());
    let report = store.verify(Position(1), None).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, 24);
    let report = store.verify(Position(3), Some(Position(10))).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, 8);
    assert_eq!(report.last_good, log[9].as_head());
    let report = store
        .verify(Position(20), Some(Position(1000)))
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, 5);
    assert_eq!(report.last_good, store.head());
}

/// Spawns `tasks` appenders, each appending `per_task` single events to its
/// own stream `live-<t>`; event numbers start at `base`.
fn spawn_appenders<S: EventStore>(
    store: &S,
    tasks: u128,
    per_task: u128,
    base: u128,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = stream(&format!("live-{t}"));
                for i in 0..per_task {
                    let n = base + t * 1000 + i;
                    let r = append_ok(&store, &s, exact(u64::try_from(i).unwrap()), vec![event(n)])
                        .await;
                    assert_eq!(
                        r.stream_version,
                        StreamVersion(u64::try_from(i).unwrap() + 1)
                    );
                }
            })
        })
        .collect()
}

async fn take<S: EventStore>(
    sub: &mut crm_eventstore::Subscription<S>,
    count: usize,
) -> Vec<RecordedEvent> {
    let mut got = Vec::with_capacity(count);
    no_hang("subscription catching up", async {
        while got.len() < count {
            let rec = sub
                .next()
                .await
                .expect("store closed")
                .expect("read failed");
            got.push(rec);
        }
    })
    .await;
    got
}

/// A subscription from 0 yields the history, then live events appended
/// concurrently after it started, without gap or duplicate.
pub async fn subscription_from_zero_catches_up_then_follows<S: EventStore>(store: S) {
    let s = stream("history-1");
    append_ok(&store, &s, ExpectedVersion::NoStream, events(1..6)).await;
    append_ok(&store, &s, exact(5), events(6..11)).await;
    let mut sub = store.subscribe(Position::ZERO);
    assert_eq!(sub.position(), Position(1));
    let history = take(&mut sub, 10).await;
    assert_eq!(positions(&history), (1..=10).collect::<Vec<_>>());
    let appenders = spawn_appenders(&store, 4, 25, 1_000_000);
    let live = take(&mut sub, 100).await;
    no_hang("appenders", async {
        for a in appenders {
            a.await.unwrap();
        }
    })
    .await;
    let log = read_everything(&store).await;
    assert_eq!(log.len(), 110);
    let got: Vec<_> = history.into_iter().chain(live).collect();
    assert_eq!(got, log);
    assert_eq!(sub.position(), Position(111));
    // Still live after catching up.
    append_ok(&store, &s, exact(10), vec![event(99)]).await;
    let more = take(&mut sub, 1).await;
    assert_eq!(more[0].position, Position(111));
    assert_same_event(&more[0], &event(99));
}

/// Subscriptions from a middle position, and from just past the head, yield
/// from there on, then live events.
pub async fn subscription_from_the_middle_catches_up_then_follows<S: EventStore>(store: S) {
    let s = stream("history-1");
    for n in 1..=10u128 {
        append_ok(&store, &s, ExpectedVersion::Any, vec![event(n)]).await;
    }
    let mut middle = store.subscribe(Position(6));
    let mut ahead = store.subscribe(Position(11));
    assert_eq!(middle.position(), Position(6));
    let appenders = spawn_appenders(&store, 3, 20, 1_000_000);
    let got_middle = take(&mut middle, 65).await;
    let got_ahead = take(&mut ahead, 60).await;
    no_hang("appenders", async {
        for a in appenders {
            a.await.unwrap();
        }
    })
    .await;
    let log = read_everything(&store).await;
    assert_eq!(log.len(), 70);
    assert_eq!(got_middle, log[5..]);
    assert_eq!(got_ahead, log[10..]);
    assert_log_invariants(&log, store.head());
}

/// 16 tasks × 50 appends to their own streams: all succeed, positions dense,
/// every stream at 1..=50 holding its task's events in order.
pub async fn concurrent_appenders_to_own_streams<S: EventStore>(store: S) {
    let tasks: Vec<_> = (0..16u128)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = stream(&format!("own-{t}"));
                let mut results = Vec::new();
                for i in 0..50u128 {
                    let expected = if i % 2 == 0 {
                        exact(u64::try_from(i).unwrap())
                    } else {
                        ExpectedVersion::Any
                    };
                    let e = event(t * 1000 + i);
                    let r = append_ok(&store, &s, expected, vec![e.clone()]).await;
                    assert_eq!(
                        r.stream_version,
                        StreamVersion(u64::try_from(i).unwrap() + 1)
                    );
                    assert!(!r.already_present);
                    assert_eq!(r.first_position, r.last_position);
                    results.push((r, e));
                }
                results
            })
        })
        .collect();
    let mut results = Vec::new();
    no_hang("appenders", async {
        for t in tasks {
            results.extend(t.await.unwrap());
        }
    })
    .await;
    let log = read_everything(&store).await;
    assert_eq!(log.len(), 800);
    assert_log_invariants(&log, store.head());
    for (r, e) in &results {
        assert_same_event(&log[usize::try_from(r.first_position.0 - 1).unwrap()], e);
    }
    for t in 0..16u128 {
        let s = stream(&format!("own-{t}"));
        let recs = read_whole_stream(&store, &s).await;
        assert_eq!(versions(&recs), (1..=50).collect::<Vec<_>>());
        for (rec, i) in recs.iter().zip(0..) {
            assert_same_event(rec, &event(t * 1000 + i));
        }
        assert_eq!(store.stream_version(&s).await.unwrap(), StreamVersion(50));
    }
    let report = store.verify(Position::ZERO, None).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, 800);
}

/// 8 tasks append to one shared stream with exact expected versions, retrying
/// on conflict, while 8 others append to their own streams: every append
/// lands exactly once, the shared stream is at 1..=80 without gap.
pub async fn concurrent_appenders_to_a_shared_stream<S: EventStore>(store: S) {
    let shared = stream("shared-1");
    let mut tasks = Vec::new();
    for t in 0..8u128 {
        let store = store.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..10u128 {
                let e = event(50_000 + t * 100 + i);
                loop {
                    let v = store.stream_version(&shared).await.unwrap();
                    match store
                        .append(&shared, ExpectedVersion::Exact(v), vec![e.clone()])
                        .await
                    {
                        Ok(r) => {
                            assert!(!r.already_present);
                            assert_eq!(r.stream_version, StreamVersion(v.0 + 1));
                            mine.push((r, e));
                            break;
                        }
                        Err(AppendError::WrongExpectedVersion {
                            stream,
                            expected,
                            actual,
                        }) => {
                            assert_eq!(stream, shared);
                            assert_eq!(expected, ExpectedVersion::Exact(v));
                            assert!(actual > v, "stream went from {v} back to {actual}");
                            tokio::task::yield_now().await;
                        }
                        Err(e) => panic!("append to the shared stream failed: {e}"),
                    }
                }
            }
            mine
        }));
    }
    let own = spawn_appenders(&store, 8, 20, 0);
    let mut results = Vec::new();
    no_hang("appenders", async {
        for t in tasks {
            results.push(t.await.unwrap());
        }
        for t in own {
            t.await.unwrap();
        }
    })
    .await;
    let log = read_everything(&store).await;
    assert_eq!(log.len(), 80 + 160);
    assert_log_invariants(&log, store.head());
    let recs = read_whole_stream(&store, &shared).await;
    assert_eq!(versions(&recs), (1..=80).collect::<Vec<_>>());
    for mine in &results {
        let mut last = Position::ZERO;
        for (r, e) in mine {
            let rec = &log[usize::try_from(r.first_position.0 - 1).unwrap()];
            assert_same_event(rec, e);
            assert_eq!(rec.stream_id, shared);
            assert_eq!(rec.stream_version, r.stream_version);
            assert!(rec.position > last, "a task's appends are out of order");
            last = rec.position;
        }
    }
}

/// Many tasks resending the same append at once: it is written once, one
/// caller sees it written, all others see `already_present` with the same positions.
pub async fn concurrent_retries_of_one_append_write_it_once<S: EventStore>(store: S) {
    let s = stream("case-1");
    append_ok(
        &store,
        &stream("case-0"),
        ExpectedVersion::NoStream,
        vec![event(1)],
    )
    .await;
    let batch = events(10..13);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let s = s.clone();
            let batch = batch.clone();
            tokio::spawn(async move { store.append(&s, ExpectedVersion::NoStream, batch).await })
        })
        .collect();
    let mut results = Vec::new();
    no_hang("retries", async {
        for t in tasks {
            results.push(t.await.unwrap().expect("a retry failed"));
        }
    })
    .await;
    let fresh = results.iter().filter(|r| !r.already_present).count();
    assert_eq!(fresh, 1, "{results:?}");
    for r in &results {
        assert_eq!(
            AppendResult {
                already_present: false,
                ..r.clone()
            },
            written(2, 4, 3)
        );
    }
    let log = read_everything(&store).await;
    assert_eq!(log.len(), 4);
    assert_log_invariants(&log, store.head());
}

/// Under concurrent appends the head only moves forward, and ends at the last record.
pub async fn head_never_moves_backwards_under_concurrent_appends<S: EventStore>(store: S) {
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut last = Position::ZERO;
            let mut regressions = Vec::new();
            while !done.load(Ordering::Acquire) {
                let h = store.head();
                if h.position < last {
                    regressions.push((last, h.position));
                }
                last = last.max(h.position);
                tokio::task::yield_now().await;
            }
            regressions
        })
    };
    let appenders = spawn_appenders(&store, 8, 150, 0);
    no_hang("appenders", async {
        for a in appenders {
            a.await.unwrap();
        }
    })
    .await;
    done.store(true, Ordering::Release);
    let regressions = watcher.await.unwrap();
    let log = read_everything(&store).await;
    assert_eq!(log.len(), 1200);
    assert_eq!(
        store.head(),
        log.last().unwrap().as_head(),
        "the head is stale after all appends finished"
    );
    assert_eq!(
        *store.watch_head().borrow(),
        log.last().unwrap().as_head(),
        "watch_head is stale after all appends finished"
    );
    assert!(
        regressions.is_empty(),
        "the head moved backwards (from, to): {regressions:?}"
    );
}

/// `stream_version` follows successful appends only.
pub async fn stream_version_tracks_appends<S: EventStore>(store: S) {
    let s = stream("case-1");
    let t = stream("case-2");
    let v = |st: &StreamId| {
        let st = st.clone();
        let store = store.clone();
        async move { store.stream_version(&st).await.unwrap().0 }
    };
    assert_eq!((v(&s).await, v(&t).await), (0, 0));
    append_ok(&store, &s, ExpectedVersion::NoStream, vec![event(1)]).await;
    assert_eq!((v(&s).await, v(&t).await), (1, 0));
    append_ok(&store, &s, exact(1), events(2..4)).await;
    append_ok(&store, &t, ExpectedVersion::Any, events(4..8)).await;
    assert_eq!((v(&s).await, v(&t).await), (3, 4));
    append_err(&store, &s, exact(1), vec![event(9)]).await;
    append_err(&store, &t, ExpectedVersion::Any, vec![event(1)]).await;
    append_ok(&store, &s, exact(0), events(2..4)).await; // retry
    assert_eq!((v(&s).await, v(&t).await), (3, 4));
    let mut counts: HashMap<StreamId, u64> = HashMap::new();
    for rec in read_everything(&store).await {
        *counts.entry(rec.stream_id).or_default() += 1;
    }
    assert_eq!(counts.get(&s), Some(&3));
    assert_eq!(counts.get(&t), Some(&4));
}

fn part(name: &str, expected: ExpectedVersion, evs: Vec<ProposedEvent>) -> StreamAppend {
    StreamAppend {
        stream: stream(name),
        expected,
        events: evs,
    }
}

/// A batch's parts are appended in the order given, each atomic on its own with its own
/// result: a refused part writes nothing and the parts after it still land. Sending the same
/// batch again finds every written part present.
pub async fn batch_parts_land_in_order_each_with_its_own_result<S: EventStore>(store: S) {
    let batch = || {
        vec![
            part("case-a", ExpectedVersion::NoStream, events(1..3)),
            part("case-b", ExpectedVersion::NoStream, events(3..4)),
            part("case-a", ExpectedVersion::NoStream, events(4..5)),
            part("case-c", exact(0), events(5..6)),
            part("case-d", ExpectedVersion::Any, Vec::new()),
            part("case-a", exact(2), events(6..7)),
        ]
    };
    let results = no_hang("batch", store.append_batch(batch(), RecordedAt::Now))
        .await
        .expect("batch taken");
    assert_eq!(results.len(), 6);
    assert_eq!(results[0], Ok(written(1, 2, 2)));
    assert_eq!(results[1], Ok(written(3, 3, 1)));
    assert!(
        matches!(
            results[2],
            Err(AppendError::WrongExpectedVersion { ref stream, .. }) if stream.as_str() == "case-a"
        ),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3], Ok(written(4, 4, 1)));
    assert_eq!(results[4], Err(AppendError::Empty));
    assert_eq!(results[5], Ok(written(5, 5, 3)));
    let log = read_everything(&store).await;
    assert_eq!(positions(&log), [1, 2, 3, 4, 5]);
    let streams: Vec<&str> = log.iter().map(|r| r.stream_id.as_str()).collect();
    assert_eq!(streams, ["case-a", "case-a", "case-b", "case-c", "case-a"]);
    assert_log_invariants(&log, store.head());
    // The same batch again: what was written is present, what was refused still is.
    let again = store
        .append_batch(batch(), RecordedAt::Now)
        .await
        .expect("batch taken");
    for i in [0, 1, 3, 5] {
        let r = again[i]
            .as_ref()
            .unwrap_or_else(|e| panic!("part {i}: {e}"));
        assert!(r.already_present, "part {i} should be present: {r:?}");
        assert_eq!(
            Ok(AppendResult {
                already_present: false,
                ..r.clone()
            }),
            results[i]
        );
    }
    assert_eq!(read_everything(&store).await.len(), 5);
}

/// Records appended with a stated recording time carry exactly it (in a log whose last
/// record is not later), so the same batches give the same chain hashes on any backend; a
/// later append by the store's clock comes after it, and a stated time earlier than the last
/// record is raised to it.
pub async fn batch_with_a_stated_recording_time_gives_the_same_chain<S: EventStore>(store: S) {
    let stated = DateTime::from_timestamp(1_750_000_000, 0).expect("valid timestamp");
    let batches = || {
        vec![
            vec![
                part("case-a", ExpectedVersion::NoStream, events(1..4)),
                part("case-b", ExpectedVersion::NoStream, events(4..5)),
            ],
            vec![
                part("case-b", exact(1), events(5..7)),
                part("case-c", exact(0), events(7..8)),
                part("case-a", exact(3), events(8..9)),
            ],
        ]
    };
    let reference = MemoryStore::new();
    for (b, batch) in batches().into_iter().enumerate() {
        let ours = store
            .append_batch(batch.clone(), RecordedAt::Stated(stated))
            .await
            .expect("batch taken");
        let theirs = reference
            .append_batch(batch, RecordedAt::Stated(stated))
            .await
            .expect("batch taken");
        assert_eq!(ours, theirs, "batch {b}");
        assert!(ours.iter().all(Result::is_ok), "batch {b}: {ours:?}");
    }
    assert_eq!(
        store.head(),
        reference.head(),
        "the same batches, another chain"
    );
    let log = read_everything(&store).await;
    assert_eq!(log.len(), 8);
    assert!(log.iter().all(|r| r.recorded_at == stated));
    assert_log_invariants(&log, store.head());

    append_ok(
        &store,
        &stream("case-d"),
        ExpectedVersion::Any,
        events(9..10),
    )
    .await;
    let now = read_everything(&store).await[8].recorded_at;
    assert!(now > stated);
    let late = store
        .append_batch(
            vec![part("case-d", exact(1), events(10..11))],
            RecordedAt::Stated(stated),
        )
        .await
        .expect("batch taken");
    assert_eq!(late, [Ok(written(10, 10, 2))]);
    let log = read_everything(&store).await;
    assert_eq!(
        log[9].recorded_at, now,
        "a stated time before the last record"
    );
    assert_log_invariants(&log, store.head());
}

/// A batch over the part limit, or stating a recording time still to come, is refused
/// whole: nothing of it is written.
pub async fn batch_limits_and_future_times_are_refused_whole<S: EventStore>(store: S) {
    let future = chrono::Utc::now() + chrono::Duration::days(1);
    let refused = store
        .append_batch(
            vec![part("case-a", ExpectedVersion::Any, events(1..2))],
            RecordedAt::Stated(future),
        )
        .await;
    assert!(
        matches!(refused, Err(AppendError::RecordedInFuture { stated, .. }) if stated == future),
        "{refused:?}"
    );
    let parts: Vec<StreamAppend> = (0..=BATCH_PARTS_MAX)
        .map(|i| {
            let i = u128::try_from(i).expect("small");
            part(
                &format!("case-{i}"),
                ExpectedVersion::Any,
                events(i + 10..i + 11),
            )
        })
        .collect();
    let refused = store.append_batch(parts, RecordedAt::Now).await;
    assert!(
        matches!(refused, Err(AppendError::TooManyParts { parts, max }) if parts == BATCH_PARTS_MAX + 1 && max == BATCH_PARTS_MAX),
        "{refused:?}"
    );
    assert!(read_everything(&store).await.is_empty());
    assert_eq!(store.head(), Head::default());
    let empty = store
        .append_batch(Vec::new(), RecordedAt::Now)
        .await
        .expect("an empty batch is taken");
    assert!(empty.is_empty());
}
