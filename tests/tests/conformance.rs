//! The conformance suite run against the memory model and the sled backend,
//! plus sled-only durability tests (close and reopen).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crm_eventstore::{
    AnyStore, AppendError, AppendResult, EventStore, ExpectedVersion, MemoryStore, Position,
    SledStore, StreamVersion,
};
use crm_tests::conformance_tests;
use crm_tests::support::{
    assert_log_invariants, assert_same_event, event, events, read_everything, read_whole_stream,
    stream,
};

conformance_tests!(memory, || async { (MemoryStore::new(), ()) });

conformance_tests!(sled, || async {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path()).expect("open sled store");
    (store, dir)
});

// The backend-agnostic handle the gateway uses must keep every guarantee of
// the backend it wraps.
conformance_tests!(any_sled, || async {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = AnyStore::from(SledStore::open(dir.path()).expect("open sled store"));
    (store, dir)
});

/// Everything written before `close` is there after reopening: head, records,
/// stream versions, and the event ids (idempotent retries and conflicts).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = stream("case-1");
    let t = stream("case-2");
    let (log_before, head_before, first) = {
        let store = SledStore::open(dir.path()).unwrap();
        let first = store
            .append(&s, ExpectedVersion::NoStream, events(1..4))
            .await
            .unwrap();
        store
            .append(&t, ExpectedVersion::NoStream, events(4..6))
            .await
            .unwrap();
        store
            .append(&s, ExpectedVersion::Exact(StreamVersion(3)), vec![event(6)])
            .await
            .unwrap();
        let log = read_everything(&store).await;
        let head = store.head();
        store.close().await;
        (log, head, first)
    };
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.head(), head_before);
    assert_eq!(*store.watch_head().borrow(), head_before);
    let log = read_everything(&store).await;
    assert_eq!(log, log_before);
    assert_log_invariants(&log, store.head());
    assert_eq!(store.stream_version(&s).await.unwrap(), StreamVersion(4));
    assert_eq!(store.stream_version(&t).await.unwrap(), StreamVersion(2));
    assert_eq!(read_whole_stream(&store, &s).await.len(), 4);
    // Idempotency survives the reopen.
    let retry = store
        .append(&s, ExpectedVersion::NoStream, events(1..4))
        .await
        .unwrap();
    assert_eq!(
        retry,
        AppendResult {
            already_present: true,
            ..first
        }
    );
    let mut other = event(2);
    other.payload = b"changed".to_vec();
    let err = store
        .append(&t, ExpectedVersion::Any, vec![other])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::IdempotencyConflict { .. }),
        "{err:?}"
    );
    // Expected versions are checked against the reopened streams.
    let err = store
        .append(&s, ExpectedVersion::Exact(StreamVersion(3)), vec![event(7)])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AppendError::WrongExpectedVersion {
            stream: s.clone(),
            expected: ExpectedVersion::Exact(StreamVersion(3)),
            actual: StreamVersion(4),
        }
    );
    assert_eq!(read_everything(&store).await, log_before);
    let report = store.verify(Position::ZERO, None).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, 6);
    store.close().await;
}

/// Appends after a reopen continue the positions, versions and hash chain;
/// `verify` accepts the whole log, across several reopen cycles.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_appends_after_reopen_continue_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let s = stream("case-1");
    let mut expected_log = Vec::new();
    for cycle in 0..3u128 {
        let store = SledStore::open(dir.path()).unwrap();
        let before = read_everything(&store).await;
        assert_eq!(before, expected_log, "cycle {cycle}");
        let n = cycle * 10;
        let r = store
            .append(
                &s,
                ExpectedVersion::Exact(StreamVersion(before.len() as u64)),
                events(n + 1..n + 4),
            )
            .await
            .unwrap();
        assert_eq!(r.first_position, Position(before.len() as u64 + 1));
        assert_eq!(r.stream_version, StreamVersion(before.len() as u64 + 3));
        let log = read_everything(&store).await;
        assert_eq!(log[..before.len()], before[..]);
        if let Some(last) = before.last() {
            assert_eq!(log[before.len()].prev_hash, last.hash);
            assert!(log[before.len()].recorded_at >= last.recorded_at);
        }
        for (rec, k) in log[before.len()..].iter().zip(n + 1..) {
            assert_same_event(rec, &event(k));
        }
        assert_log_invariants(&log, store.head());
        let report = store.verify(Position::ZERO, None).await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.checked, log.len() as u64);
        assert_eq!(report.last_good, store.head());
        expected_log = log;
        store.close().await;
    }
    assert_eq!(expected_log.len(), 9);
}

/// After `close`, appends through another clone are refused with `Closed`
/// and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_append_after_close_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = stream("case-1");
    let store = SledStore::open(dir.path()).unwrap();
    let clone = store.clone();
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    store.close().await;
    let err = clone
        .append(&s, ExpectedVersion::Any, vec![event(2)])
        .await
        .unwrap_err();
    assert_eq!(err, AppendError::Closed);
    drop(clone);
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(read_everything(&store).await.len(), 1);
    store.close().await;
}

/// Polls a future that never waits (the memory store's appends complete at once).
fn now_or_never<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("a memory store operation waited"),
    }
}

/// The memory model's head must only move forward while OS threads append in
/// parallel, and must name the last record once they are done (a stress
/// version of the conformance case, with more parallelism than tokio tasks).
#[test]
fn memory_head_never_moves_backwards_under_parallel_threads() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let store = MemoryStore::new();
    let done = AtomicBool::new(false);
    let (regressions, stale_watch) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut rx = store.watch_head();
            let mut last = Position::ZERO;
            let mut regressions = Vec::new();
            while !done.load(Ordering::Acquire) {
                let h = store.head();
                if h.position < last && regressions.last() != Some(&(last, h.position)) {
                    regressions.push((last, h.position));
                }
                last = last.max(h.position);
                std::thread::yield_now();
            }
            let watched = *rx.borrow_and_update();
            (regressions, watched)
        });
        let appenders: Vec<_> = (0..4u128)
            .map(|t| {
                let store = &store;
                scope.spawn(move || {
                    let s = stream(&format!("thread-{t}"));
                    for i in 0..20_000u128 {
                        now_or_never(store.append(
                            &s,
                            ExpectedVersion::Any,
                            vec![event(t * 100_000 + i)],
                        ))
                        .unwrap();
                    }
                })
            })
            .collect();
        for a in appenders {
            a.join().unwrap();
        }
        done.store(true, Ordering::Release);
        watcher.join().unwrap()
    });
    let last = now_or_never(store.read_all(Position(80_000), 1)).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(
        store.head(),
        last[0].as_head(),
        "the head is stale after all appends finished"
    );
    assert_eq!(stale_watch, last[0].as_head(), "watch_head is stale");
    assert!(
        regressions.is_empty(),
        "the head moved backwards {} times, e.g. (from, to) {:?}",
        regressions.len(),
        &regressions[..regressions.len().min(5)]
    );
}
