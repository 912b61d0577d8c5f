//! A copy of `segments/` taken while appends run (what deploy/README.md's backup section
//! allows) is a prefix of the log: it opens (its index rebuilt, an unfinished last write
//! set aside), verifies, holds every record that was durable when the copy began, and
//! each of its records is the source's record at that position (equal chain hash at its
//! head, so equal all the way back). A copy that catches a group half written is rare
//! here (a group is one `write`); the store's unit test `an_unfinished_write_at_the_end_is_
//! set_aside` covers that path on its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crm_eventstore::{EventStore, ExpectedVersion, Position, SledOptions, SledStore, StreamId};
use crm_tests::crash::{proposed, Rng};
use uuid::Uuid;

const COPIES: usize = 12;
const WRITERS: u64 = 4;
/// Small segments, so the copies cross segment boundaries and catch new ones being started.
const SEGMENT_BYTES: u64 = 64 * 1024;

/// Copies every file of `from` into `to` in the directory's own order, as `cp` does.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_copy_of_the_segments_taken_during_appends_is_a_prefix_of_the_log() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("log");
    let store = SledStore::open_with(
        &source,
        SledOptions {
            segment_target_bytes: Some(SEGMENT_BYTES),
            ..Default::default()
        },
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let stop = stop.clone();
            rt.spawn(async move {
                let mut rng = Rng::new(0x0c0f_fee0 + w);
                let stream = StreamId::new(format!("copy-{w}")).unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let events = (0..rng.range(1, 20))
                        .map(|_| {
                            n += 1;
                            proposed(Uuid::from_u64_pair(w + 1, n))
                        })
                        .collect();
                    store
                        .append(&stream, ExpectedVersion::Any, events)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut copies = Vec::new();
    for c in 0..COPIES {
        std::thread::sleep(Duration::from_millis(40));
        let durable_before = store.head().position;
        let to = dir.path().join(format!("copy-{c}"));
        copy_dir(&source.join("segments"), &to.join("segments"));
        copies.push((to, durable_before));
    }
    stop.store(true, Ordering::Release);
    for w in writers {
        rt.block_on(w).unwrap();
    }
    let head = store.head().position;
    assert!(head > Position(1_000), "the writers appended only {head}");
    let mut torn = 0usize;
    let mut behind = 0u64;
    for (to, durable_before) in copies {
        let copy = SledStore::open(&to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
        let copy_head = copy.head();
        assert!(
            copy_head.position >= durable_before,
            "{}: the copy ends at {}, {durable_before} was durable when it began",
            to.display(),
            copy_head.position
        );
        assert!(copy_head.position <= head);
        torn += std::fs::read_dir(to.join("segments"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains(".torn-"))
            })
            .count();
        behind += head.0 - copy_head.position.0;
        let report = rt.block_on(copy.verify(Position(1), None)).unwrap();
        assert!(report.is_ok(), "{}: {report:?}", to.display());
        let original = rt
            .block_on(store.read_all(copy_head.position, 1))
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(original.hash, copy_head.hash, "{}", to.display());
        // The copy is a log in its own right: it takes appends.
        let more = rt
            .block_on(copy.append(
                &StreamId::new("copy-after").unwrap(),
                ExpectedVersion::NoStream,
                vec![proposed(Uuid::from_u64_pair(99, 1))],
            ))
            .unwrap();
        assert_eq!(more.first_position, Position(copy_head.position.0 + 1));
        rt.block_on(copy.close());
    }
    eprintln!(
        "hot copy: {COPIES} copies of a log growing to {head} events; {torn} unfinished writes \
         set aside; the copies end {behind} records before the final head in all"
    );
    rt.block_on(store.close());
}
