//! Damage fuzz of the embedded store: copies a closed log, damages one of its files at a
//! random place (flipped bytes, a zeroed range, a truncation, a deleted segment), then
//! opens, reads, verifies and appends. Every answer must be an error that names the
//! damage (a position, the index, or the file) or the truth: every record served equals the
//! record written at that position, and an open that succeeds has the original head.
//! Never a panic, never wrong data.
//!
//! `CRM_DAMAGE_FUZZ_SECS` runs cases for that many seconds (default: 40 cases);
//! `CRM_DAMAGE_SEED` replays a run (the seed is printed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crm_eventstore::{
    AppendError, Corruption, EventStore, ExpectedVersion, OpenError, Position, ReadError,
    RecordedEvent, SledOptions, SledStore, StreamId, StreamVersion,
};
use crm_tests::crash::{proposed, Rng};
use uuid::Uuid;

const DEFAULT_CASES: u64 = 40;
const DEFAULT_SEED: u64 = 0x0da3_a6e5_eed5;
const STREAMS: u64 = 24;
/// Small segments, so a log of a few hundred KiB has many.
const SEGMENT_BYTES: u64 = 48 * 1024;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn options() -> SledOptions {
    SledOptions {
        segment_target_bytes: Some(SEGMENT_BYTES),
        ..Default::default()
    }
}

/// The pristine log: what every case starts from, and what was written.
struct Pristine {
    dir: tempfile::TempDir,
    records: Vec<RecordedEvent>,
    streams: BTreeMap<StreamId, Vec<Position>>,
}

async fn pristine(seed: u64) -> Pristine {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open_with(dir.path(), options()).unwrap();
    let mut rng = Rng::new(seed);
    let mut n: u128 = 0;
    for _ in 0..300 {
        let stream = StreamId::new(format!("fuzz-{}", rng.range(0, STREAMS - 1))).unwrap();
        let events = (0..rng.range(1, 8))
            .map(|_| {
                n += 1;
                proposed(Uuid::from_u128((u128::from(seed) << 64) | n))
            })
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let mut records = Vec::new();
    let mut from = Position::FIRST;
    loop {
        let page = store.read_all(from, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        from = Position(last.position.0 + 1);
        records.extend(page);
    }
    let mut streams: BTreeMap<StreamId, Vec<Position>> = BTreeMap::new();
    for r in &records {
        streams
            .entry(r.stream_id.clone())
            .or_default()
            .push(r.position);
    }
    store.close().await;
    Pristine {
        dir,
        records,
        streams,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Damages one file of the log in `dir`; says what it did.
fn damage(dir: &Path, rng: &mut Rng) -> String {
    let all = files(dir);
    // Segments are where the records are: damage them most of the time.
    let segments: Vec<_> = all
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .cloned()
        .collect();
    let pool = if rng.range(0, 3) == 0 {
        &all
    } else {
        &segments
    };
    let last = u64::try_from(pool.len()).unwrap() - 1;
    let file = pool[usize::try_from(rng.range(0, last)).unwrap()].clone();
    let len = std::fs::metadata(&file).unwrap().len();
    let shown = file.strip_prefix(dir).unwrap().display().to_string();
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    if len == 0 {
        std::fs::remove_file(&file).unwrap();
        return format!("removed the empty {shown}");
    }
    match rng.range(0, 9) {
        0..=3 => {
            let flips = rng.range(1, 4);
            for _ in 0..flips {
                let at = rng.range(0, len - 1);
                let mut b = [0u8; 1];
                handle.read_exact_at(&mut b, at).unwrap();
                b[0] ^= 1 << rng.range(0, 7);
                handle.write_all_at(&b, at).unwrap();
            }
            format!("flipped {flips} bits of {shown} ({len} bytes)")
        }
        4..=5 => {
            let at = rng.range(0, len - 1);
            let n = rng.range(1, 4096).min(len - at);
            handle
                .write_all_at(&vec![0u8; usize::try_from(n).unwrap()], at)
                .unwrap();
            format!("zeroed {n} bytes of {shown} at {at}")
        }
        6..=8 => {
            let at = rng.range(0, len - 1);
            handle.set_len(at).unwrap();
            format!("truncated {shown} from {len} to {at} bytes")
        }
        _ => {
            std::fs::remove_file(&file).unwrap();
            format!("removed {shown}")
        }
    }
}

/// An error that names the damage: a position, the index, or the file it met.
fn names_the_damage(e: &ReadError) -> bool {
    match e {
        ReadError::Corrupt { .. } | ReadError::IndexDamaged { .. } => true,
        ReadError::Storage(reason) => reason.contains("segments") || reason.contains("index"),
        _ => false,
    }
}

fn check_open_error(e: &OpenError, what: &str) {
    let shown = e.to_string();
    match e {
        OpenError::Damaged { .. } => assert!(
            shown.contains("position") || shown.contains("segment"),
            "{what}: the open's error names no position: {shown}"
        ),
        OpenError::Storage { .. } => assert!(
            shown.contains("segment") || shown.contains("index"),
            "{what}: the open's error names no file: {shown}"
        ),
        _ => panic!("{what}: unexpected open error: {shown}"),
    }
}

/// What one case saw.
#[derive(Default, Debug)]
struct Tally {
    cases: u64,
    refused_open: u64,
    opened: u64,
    records_served: u64,
    errors_named: u64,
}

async fn check_case(p: &Pristine, dir: &Path, what: &str, tally: &mut Tally) {
    let store = match SledStore::open_with(dir, options()) {
        Ok(store) => store,
        Err(e) => {
            check_open_error(&e, what);
            tally.refused_open += 1;
            return;
        }
    };
    tally.opened += 1;
    let trace = std::env::var_os("CRM_DAMAGE_TRACE").is_some();
    if trace {
        eprintln!("  opened");
    }
    let last = p.records.last().unwrap();
    assert_eq!(store.head(), last.as_head(), "{what}: the head moved");
    // The whole log, page by page, stepping over what is reported damaged.
    let mut from = Position::FIRST;
    let mut met_damage = false;
    while from <= last.position {
        let answer = store.read_all(from, 97).await;
        if trace {
            eprintln!(
                "  from {from}: {:?}",
                answer.as_ref().map(|p| p.len()).map_err(|e| e.to_string())
            );
        }
        match answer {
            Ok(page) => {
                assert!(!page.is_empty(), "{what}: empty page at {from}");
                for r in &page {
                    let original = &p.records[usize::try_from(r.position.0 - 1).unwrap()];
                    assert_eq!(r, original, "{what}: wrong record served at {}", r.position);
                }
                tally.records_served += u64::try_from(page.len()).unwrap();
                from = Position(page.last().unwrap().position.0 + 1);
            }
            Err(e) => {
                assert!(names_the_damage(&e), "{what}: unnamed read error: {e}");
                tally.errors_named += 1;
                met_damage = true;
                from = match e {
                    ReadError::Corrupt {
                        reason:
                            Corruption::Unreadable {
                                next_readable: Some(next),
                                ..
                            },
                        ..
                    } if next > from => next,
                    ReadError::Corrupt {
                        reason:
                            Corruption::Unreadable {
                                next_readable: None,
                                ..
                            },
                        ..
                    } => break,
                    ReadError::Corrupt { position, .. } if position >= from => {
                        Position(position.0 + 1)
                    }
                    _ => Position(from.0 + 1),
                };
            }
        }
    }
    if trace {
        eprintln!("  read the log");
    }
    for (stream, positions) in &p.streams {
        match store.read_stream(stream, StreamVersion(1), 10_000).await {
            Ok(page) => {
                assert!(page.len() <= positions.len(), "{what}: {stream} grew");
                for (r, pos) in page.iter().zip(positions) {
                    assert_eq!(r.position, *pos, "{what}: {stream} out of place");
                    let original = &p.records[usize::try_from(pos.0 - 1).unwrap()];
                    assert_eq!(r, original, "{what}: wrong record in {stream}");
                }
                assert_eq!(
                    page.len(),
                    positions.len(),
                    "{what}: {stream} lost records silently"
                );
            }
            Err(e) => {
                assert!(
                    names_the_damage(&e),
                    "{what}: unnamed stream read error: {e}"
                );
            }
        }
        match store.stream_version(stream).await {
            Ok(v) => assert_eq!(
                v.0,
                u64::try_from(positions.len()).unwrap(),
                "{what}: version of {stream}"
            ),
            Err(e) => assert!(names_the_damage(&e), "{what}: unnamed version error: {e}"),
        }
    }
    if trace {
        eprintln!("  read the streams");
    }
    match store.verify(Position::FIRST, None).await {
        Ok(report) => assert_eq!(
            report.is_ok(),
            !met_damage,
            "{what}: verify and the reads disagree: {report:?}"
        ),
        Err(e) => assert!(names_the_damage(&e), "{what}: unnamed verify error: {e}"),
    }
    if trace {
        eprintln!("  verified");
    }
    let stream = StreamId::new("fuzz-after").unwrap();
    match store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![proposed(Uuid::from_u128(u128::MAX - 1))],
        )
        .await
    {
        Ok(r) => assert_eq!(r.last_position, Position(last.position.0 + 1), "{what}"),
        Err(AppendError::StorageFailed(reason)) => {
            assert!(!reason.is_empty(), "{what}");
        }
        Err(e) => panic!("{what}: unexpected append error: {e}"),
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_give_named_errors_or_the_truth() {
    let seed = env_u64("CRM_DAMAGE_SEED").unwrap_or(DEFAULT_SEED);
    let seconds = env_u64("CRM_DAMAGE_FUZZ_SECS");
    eprintln!("damage fuzz: seed {seed:#x} (CRM_DAMAGE_SEED), CRM_DAMAGE_FUZZ_SECS={seconds:?}");
    let p = pristine(seed).await;
    let segments = files(p.dir.path())
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "seg"))
        .count();
    assert!(
        segments >= 4,
        "the pristine log has only {segments} segments"
    );
    let started = std::time::Instant::now();
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    loop {
        let done = match seconds {
            Some(s) => started.elapsed().as_secs() >= s,
            None => tally.cases >= DEFAULT_CASES,
        };
        if done {
            break;
        }
        let case = tempfile::tempdir().unwrap();
        copy_dir(p.dir.path(), case.path());
        let what = format!(
            "case {} ({})",
            tally.cases + 1,
            damage(case.path(), &mut rng)
        );
        if std::env::var_os("CRM_DAMAGE_TRACE").is_some() {
            eprintln!("{what}");
        }
        check_case(&p, case.path(), &what, &mut tally).await;
        tally.cases += 1;
    }
    eprintln!(
        "damage fuzz: {tally:?} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(tally.refused_open > 0 && tally.opened > 0, "{tally:?}");
    assert!(tally.errors_named > 0, "{tally:?}");
}
