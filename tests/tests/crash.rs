//! Crash test of `SledStore`: a child process (`crash-writer`) appends from
//! several concurrent tasks and prints an `ACK` line for every event once its
//! append returned `Ok`; the parent kills it with SIGKILL at a random moment,
//! reopens the log and checks that every acknowledged event survived exactly
//! once, where it was acknowledged, with its content, and that the log is
//! intact. The cycles run on one directory, so crashes accumulate.
//!
//! The parent keeps what its checks read (every event id with its position,
//! stream and version, the streams' versions, the verified chain head), so an
//! ordinary cycle reads and checks only the records appended since the last
//! check; every [`FULL_CHECK_EVERY`] cycles, and in the last, it checks the
//! whole log again and that it still holds what earlier checks read.
//!
//! `CRM_CRASH_CYCLES` raises the number of cycles (default 50; a longer run prints its
//! counts every 50 cycles),
//! `CRM_CRASH_SEED` replays a run (the seed is printed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    EventStore, ExpectedVersion, Head, Position, RecordedEvent, SledStore, StreamId, StreamVersion,
};
use crm_tests::crash::{proposed, Rng};
use uuid::Uuid;

const CHILD: &str = env!("CARGO_BIN_EXE_crash-writer");
const DEFAULT_CYCLES: u64 = 50;
const DEFAULT_SEED: u64 = 0x00C0_FFEE_5EED_2024;
/// How long a child may take to print its first line before the test gives up.
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(120);
/// Cycles between full checks: the whole log read, every record's content, every
/// acknowledged event, every stream through `read_stream` and the chain from position 1
/// (the cycles between check what was appended since the previous check).
const FULL_CHECK_EVERY: u64 = 10;
/// Cycles between the counts a long run prints as it goes.
const PROGRESS_EVERY: u64 = 50;
/// Problems printed in full (all are counted).
const PROBLEMS_SHOWN: usize = 20;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One acknowledged event, as the child printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ack {
    id: Uuid,
    position: u64,
    stream: String,
    version: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.split(' ');
    if parts.next()? != "ACK" {
        return None;
    }
    let ack = Ack {
        id: Uuid::parse_str(parts.next()?).ok()?,
        position: parts.next()?.parse().ok()?,
        stream: parts.next()?.to_owned(),
        version: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(ack)
}

/// A running child and the threads draining its output.
struct Running {
    child: Child,
    /// Receives one message when the first complete stdout line arrived.
    first_line: mpsc::Receiver<()>,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

/// What a killed child left behind.
struct Killed {
    /// Complete stdout lines only: a line cut by the kill is dropped.
    lines: Vec<String>,
    stderr: String,
}

fn spawn_child(dir: &Path, seed: u64, hold: bool) -> Running {
    let mut cmd = Command::new(CHILD);
    cmd.arg(dir).arg(seed.to_string());
    if hold {
        cmd.arg("hold");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crash-writer");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let (tx, first_line) = mpsc::channel();
    let stdout = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        let mut signalled = false;
        loop {
            match out.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    all.extend_from_slice(&chunk[..n]);
                    if !signalled && chunk[..n].contains(&b'\n') {
                        signalled = true;
                        let _ = tx.send(());
                    }
                }
            }
        }
        all
    });
    let stderr = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = err.read_to_end(&mut all);
        all
    });
    Running {
        child,
        first_line,
        stdout,
        stderr,
    }
}

impl Running {
    /// Waits for the first complete line; panics with the child's stderr if
    /// it exits (or hangs) before printing one.
    fn wait_first_line(mut self) -> Running {
        if self.first_line.recv_timeout(FIRST_LINE_TIMEOUT).is_err() {
            let status = self.child.try_wait();
            let killed = self.kill();
            panic!(
                "crash-writer printed no line (exit status {status:?}); stderr:\n{}",
                killed.stderr
            );
        }
        self
    }

    fn kill(mut self) -> Killed {
        // SIGKILL on unix: no destructor, no flush, no exit handler runs.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let out = self.stdout.join().unwrap();
        let err = self.stderr.join().unwrap();
        let complete = out.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let lines = String::from_utf8_lossy(&out[..complete])
            .lines()
            .map(str::to_owned)
            .collect();
        Killed {
            lines,
            stderr: String::from_utf8_lossy(&err).into_owned(),
        }
    }
}

/// Where the check found an event: compact, one per event id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    position: u64,
    /// Index into [`Tally::streams`].
    stream: u32,
    version: u64,
}

/// What the checks have read of the log: kept across cycles, so an ordinary
/// cycle reads only the records appended since.
#[derive(Default)]
struct Seen {
    /// Every event id read, where it was first found.
    ids: HashMap<Uuid, Entry>,
    /// Per stream (by index into [`Tally::streams`]), the last version read.
    versions: Vec<u64>,
    /// The position of the last record read (the checked head).
    head: u64,
    /// Records read (a duplicate counts twice).
    records: u64,
}

/// Counts over the whole run; a problem is counted once per event id.
#[derive(Default)]
struct Tally {
    cycles: u64,
    acked: HashMap<Uuid, Ack>,
    /// Acknowledged events not yet found where they were acknowledged:
    /// this cycle's, and any earlier ones that were lost or misplaced.
    pending: Vec<Uuid>,
    present: u64,
    lost: HashSet<Uuid>,
    duplicated: HashSet<Uuid>,
    misplaced: HashSet<Uuid>,
    corrupt: HashSet<String>,
    verify_failures: u64,
    /// The streams met so far; [`Entry::stream`] indexes this.
    streams: Vec<StreamId>,
    stream_index: HashMap<StreamId, u32>,
    /// The log as checked so far.
    seen: Seen,
    /// Per stream (by index), the version up to which `read_stream` was checked.
    stream_checked: Vec<u64>,
    /// The last record whose chain `verify` checked from position 1 on
    /// (position 0: none yet); later checks link on to its hash.
    verified: Head,
    problems: Vec<String>,
}

impl Tally {
    fn problem(&mut self, cycle: u64, what: String) {
        if self.problems.len() < PROBLEMS_SHOWN {
            self.problems.push(format!("cycle {cycle}: {what}"));
        }
    }

    fn intern(&mut self, stream: &StreamId) -> u32 {
        if let Some(&i) = self.stream_index.get(stream) {
            return i;
        }
        let i = u32::try_from(self.streams.len()).unwrap();
        self.streams.push(stream.clone());
        self.stream_index.insert(stream.clone(), i);
        i
    }

    fn stream(&self, index: u32) -> &StreamId {
        &self.streams[usize::try_from(index).unwrap()]
    }

    fn clean(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.misplaced.is_empty()
            && self.corrupt.is_empty()
            && self.verify_failures == 0
    }

    fn summary(&self) -> String {
        let acked = u64::try_from(self.acked.len()).unwrap();
        format!(
            "crash test: {} cycles, {acked} acknowledged events, {} present ({} unacknowledged survived), \
             {} lost, {} duplicated, {} misplaced, {} corrupt, verify {}",
            self.cycles,
            self.present,
            self.present.saturating_sub(acked - u64::try_from(self.lost.len()).unwrap()),
            self.lost.len(),
            self.duplicated.len(),
            self.misplaced.len(),
            self.corrupt.len(),
            if self.verify_failures == 0 {
                "ok".to_owned()
            } else {
                format!("FAILED {} times", self.verify_failures)
            }
        )
    }
}

/// `12m05s`.
fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

/// Reads the log from `seen.head + 1` to its end into `seen`, page by page,
/// checking each record: positions dense, no event id twice (against
/// everything in `seen`), stream versions continuing from those in `seen`,
/// content as written. Returns how many records it read.
async fn scan(store: &SledStore, cycle: u64, seen: &mut Seen, tally: &mut Tally) -> u64 {
    let mut read = 0u64;
    let mut expected_position = seen.head + 1;
    let mut next = Position(seen.head + 1);
    loop {
        let page = match store.read_all(next, READ_PAGE_MAX).await {
            Ok(page) => page,
            Err(e) => {
                tally.corrupt.insert(format!("read error: {e}"));
                tally.problem(
                    cycle,
                    format!(
                        "read_all failed after {} records (at {next}): {e}",
                        seen.records
                    ),
                );
                return read;
            }
        };
        let Some(last) = page.last() else {
            return read;
        };
        next = last.position.next().unwrap();
        for rec in &page {
            if rec.position.0 != expected_position {
                tally
                    .corrupt
                    .insert(format!("position {expected_position}"));
                tally.problem(
                    cycle,
                    format!(
                        "record #{expected_position} says position {}: positions not dense",
                        rec.position
                    ),
                );
            }
            expected_position += 1;
            let id = rec.event_id.0;
            let stream = tally.intern(&rec.stream_id);
            let s = usize::try_from(stream).unwrap();
            if seen.versions.len() <= s {
                seen.versions.resize(s + 1, 0);
            }
            let version = seen.versions[s];
            if rec.stream_version.0 != version + 1 {
                tally
                    .corrupt
                    .insert(format!("{} version {}", rec.stream_id, rec.stream_version));
                tally.problem(
                    cycle,
                    format!(
                        "stream {} jumps from version {version} to {} at position {}",
                        rec.stream_id, rec.stream_version, rec.position
                    ),
                );
            }
            seen.versions[s] = rec.stream_version.0;
            let entry = Entry {
                position: rec.position.0,
                stream,
                version: rec.stream_version.0,
            };
            match seen.ids.entry(id) {
                MapEntry::Occupied(first) => {
                    let first = first.get().position;
                    tally.duplicated.insert(id);
                    tally.problem(
                        cycle,
                        format!(
                            "event {id} is in the log twice (at {first}, again at {})",
                            rec.position
                        ),
                    );
                }
                MapEntry::Vacant(v) => {
                    v.insert(entry);
                }
            }
            if !proposed(id).same_content(rec) {
                tally.corrupt.insert(id.to_string());
                tally.problem(
                    cycle,
                    format!(
                        "event {id} at {} has content other than written",
                        rec.position
                    ),
                );
            }
            seen.records += 1;
            seen.head = seen.head.max(rec.position.0);
            read += 1;
        }
    }
}

/// Checks the reopened log against everything acknowledged so far.
///
/// An ordinary cycle reads only the records after the head the previous
/// check reached and checks them against what earlier checks kept (every id
/// with its place, the streams' versions, the verified chain head). A full
/// check reads and checks the whole log as if nothing were kept, and
/// cross-checks that it still holds what earlier checks read, where they read it.
async fn check_store(store: &SledStore, cycle: u64, full_check: bool, tally: &mut Tally) {
    let head = store.head();
    let mut full_check = full_check;
    let checked_to = tally.seen.head.max(tally.verified.position.0);
    if head.position.0 < checked_to {
        // Records a reopened store served must never disappear.
        tally.corrupt.insert(format!("cycle {cycle}: log shrank"));
        tally.problem(
            cycle,
            format!(
                "head is {} but an earlier check read up to {checked_to}: the log shrank",
                head.position
            ),
        );
        full_check = true;
    }

    // Density, duplicates, stream versions and content of the records read.
    let (start, read) = if full_check {
        let mut fresh = Seen::default();
        let read = scan(store, cycle, &mut fresh, tally).await;
        // What earlier checks read is still there, in the same place.
        let kept = std::mem::replace(&mut tally.seen, fresh);
        let mut changed = Vec::new();
        for (id, was) in &kept.ids {
            let now = tally.seen.ids.get(id).copied();
            if now != Some(*was) {
                changed.push((*id, *was, now));
            }
        }
        for (id, was, now) in changed {
            tally.corrupt.insert(format!("{id} moved"));
            let name = |e: Entry| {
                format!(
                    "position {} in {} version {}",
                    e.position,
                    tally.stream(e.stream),
                    e.version
                )
            };
            let what = format!(
                "event {id}, read earlier at {}, is now {}",
                name(was),
                now.map_or_else(|| "gone".to_owned(), name)
            );
            tally.problem(cycle, what);
        }
        let old_range = tally
            .seen
            .ids
            .values()
            .filter(|e| e.position <= kept.head)
            .count();
        if old_range != kept.ids.len() {
            tally.corrupt.insert(format!(
                "cycle {cycle}: events appeared up to {}",
                kept.head
            ));
            tally.problem(
                cycle,
                format!(
                    "positions up to {} hold {old_range} distinct events, earlier checks read {}",
                    kept.head,
                    kept.ids.len()
                ),
            );
        }
        (0, read)
    } else {
        let start = tally.seen.head;
        let mut seen = std::mem::take(&mut tally.seen);
        let read = scan(store, cycle, &mut seen, tally).await;
        tally.seen = seen;
        (start, read)
    };
    tally.present = tally.seen.records;
    if tally.seen.head != head.position.0 || start + read != head.position.0 {
        tally
            .corrupt
            .insert(format!("cycle {cycle}: head mismatch"));
        tally.problem(
            cycle,
            format!(
                "head is {} but the log holds {} records (read {read} after {start}, the last at {})",
                head.position, tally.present, tally.seen.head
            ),
        );
    }

    // The stream index agrees with the global order: every stream's version,
    // and `read_stream` in full on a full check, otherwise from the version
    // the previous check reached (what this cycle's child wrote).
    if tally.stream_checked.len() < tally.streams.len() {
        tally.stream_checked.resize(tally.streams.len(), 0);
    }
    for s in 0..tally.streams.len() {
        let stream = tally.streams[s].clone();
        let index = u32::try_from(s).unwrap();
        let last = tally.seen.versions.get(s).copied().unwrap_or(0);
        match store.stream_version(&stream).await {
            Ok(v) if v == StreamVersion(last) => {}
            other => {
                tally
                    .corrupt
                    .insert(format!("cycle {cycle}: stream_version of {stream}"));
                tally.problem(
                    cycle,
                    format!("stream_version({stream}) = {other:?}, the log says {last}"),
                );
            }
        }
        let mut seen = if full_check {
            0
        } else {
            tally.stream_checked[s]
        };
        loop {
            let from = StreamVersion(seen + 1);
            match store.read_stream(&stream, from, READ_PAGE_MAX).await {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    for rec in &page {
                        seen += 1;
                        let in_log = tally.seen.ids.get(&rec.event_id.0).copied();
                        let expected = Entry {
                            position: rec.position.0,
                            stream: index,
                            version: seen,
                        };
                        if rec.stream_version.0 != seen || in_log != Some(expected) {
                            tally
                                .corrupt
                                .insert(format!("cycle {cycle}: read_stream {stream} at {seen}"));
                            tally.problem(
                                cycle,
                                format!("read_stream({stream}) disagrees with read_all at version {seen}"),
                            );
                        }
                    }
                }
                Err(e) => {
                    tally
                        .corrupt
                        .insert(format!("cycle {cycle}: read_stream {stream}: {e}"));
                    tally.problem(cycle, format!("read_stream({stream}) failed: {e}"));
                    break;
                }
            }
        }
        if seen != last {
            tally
                .corrupt
                .insert(format!("cycle {cycle}: read_stream {stream} length"));
            tally.problem(
                cycle,
                format!("read_stream({stream}) ends at version {seen}, the log holds {last}"),
            );
        }
        tally.stream_checked[s] = last;
    }

    // Acknowledged events are where they were acknowledged: on a full check
    // all of them, otherwise this cycle's and any not found before.
    let to_check: Vec<Uuid> = if full_check {
        tally.acked.keys().copied().collect()
    } else {
        std::mem::take(&mut tally.pending)
    };
    let mut pending = Vec::new();
    for id in to_check {
        let ack = &tally.acked[&id];
        match tally.seen.ids.get(&id).copied() {
            None => {
                pending.push(id);
                if tally.lost.insert(id) {
                    let what = format!("acknowledged event lost: {ack:?}");
                    tally.problem(cycle, what);
                }
            }
            Some(e) => {
                let stream = &tally.streams[usize::try_from(e.stream).unwrap()];
                if e.position != ack.position
                    || stream.as_str() != ack.stream
                    || e.version != ack.version
                {
                    pending.push(id);
                    if tally.misplaced.insert(id) {
                        let what = format!(
                            "acknowledged {ack:?} found at position {} in {stream} version {}",
                            e.position, e.version
                        );
                        tally.problem(cycle, what);
                    }
                }
            }
        }
    }
    tally.pending = pending;

    // The hash chain: in full from position 1 on a full check (or before
    // anything was verified); otherwise from the last verified record, whose
    // hash must be the one verified then, so that the walk checks the link
    // from it to the first new record (`verify` from a later position does
    // not check the first walked record's link to its predecessor).
    let anchor = if full_check {
        Head::default()
    } else {
        tally.verified
    };
    let from = Position(anchor.position.0.max(1));
    let expected_checked = head.position.0 + 1 - from.0;
    match store.verify(from, None).await {
        Ok(report) if report.is_ok() && report.checked == expected_checked => {
            if anchor.position.0 > 0 {
                match store.read_all(anchor.position, 1).await {
                    Ok(page) if page.first().map(RecordedEvent::as_head) == Some(anchor) => {
                        tally.verified = report.last_good;
                    }
                    other => {
                        tally.verify_failures += 1;
                        let found = other.map(|p| p.first().map(RecordedEvent::as_head));
                        tally.problem(
                            cycle,
                            format!(
                                "verify: record {} was verified as {anchor:?}, now reads {found:?}",
                                anchor.position
                            ),
                        );
                    }
                }
            } else {
                tally.verified = report.last_good;
            }
        }
        other => {
            tally.verify_failures += 1;
            tally.problem(
                cycle,
                format!("verify from {from}: {other:?} (head {})", head.position),
            );
        }
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let cycles = env_u64("CRM_CRASH_CYCLES")
        .unwrap_or(DEFAULT_CYCLES)
        .max(DEFAULT_CYCLES);
    let seed = env_u64("CRM_CRASH_SEED").unwrap_or(DEFAULT_SEED);
    eprintln!("crash test: seed {seed:#x} (CRM_CRASH_SEED), {cycles} cycles (CRM_CRASH_CYCLES)");
    let started = Instant::now();
    let mut last_progress = started;
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut tally = Tally::default();
    let mut child_seeds = HashSet::new();
    for cycle in 1..=cycles {
        let mut child_seed = rng.next();
        while !child_seeds.insert(child_seed) {
            child_seed = rng.next();
        }
        let delay = Duration::from_millis(rng.range(20, 250));
        let running = spawn_child(dir.path(), child_seed, false).wait_first_line();
        std::thread::sleep(delay);
        let killed = running.kill();
        let mut acks_this_cycle = 0u64;
        for line in &killed.lines {
            let ack = parse_ack(line)
                .unwrap_or_else(|| panic!("cycle {cycle}: bad line from crash-writer: {line:?}"));
            acks_this_cycle += 1;
            tally.pending.push(ack.id);
            if let Some(earlier) = tally.acked.insert(ack.id, ack.clone()) {
                panic!(
                    "cycle {cycle}: event {} acknowledged twice: {earlier:?} and {ack:?}",
                    ack.id
                );
            }
        }
        assert!(
            acks_this_cycle > 0,
            "cycle {cycle}: no ACK line; stderr:\n{}",
            killed.stderr
        );
        tally.cycles = cycle;

        let opened = SledStore::open(dir.path());
        let store = match opened {
            Ok(s) => s,
            Err(e) => {
                tally.problem(cycle, format!("reopen failed: {e}"));
                tally.verify_failures += 1;
                break;
            }
        };
        let full = cycle % FULL_CHECK_EVERY == 0 || cycle == cycles;
        rt.block_on(async {
            check_store(&store, cycle, full, &mut tally).await;
            store.close().await;
        });
        if cycle % PROGRESS_EVERY == 0 && cycle < cycles {
            // A long run shows its counts as it goes, so one stopped early still has them.
            let now = Instant::now();
            let _ = writeln!(
                std::io::stderr().lock(),
                "{} (so far; {} elapsed, the last {PROGRESS_EVERY} cycles took {})",
                tally.summary(),
                minutes(now - started),
                minutes(now - last_progress)
            );
            last_progress = now;
        }
    }
    let summary = tally.summary();
    // Written to the process's stderr directly (not `eprintln!`, which the
    // test harness captures), so the counts show in every test run.
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{summary}");
    let _ = writeln!(err, "crash test: {} elapsed", minutes(started.elapsed()));
    for p in &tally.problems {
        let _ = writeln!(err, "  {p}");
    }
    drop(err);
    assert!(tally.clean(), "{summary}\n{}", tally.problems.join("\n"));
    assert_eq!(tally.cycles, cycles, "{summary}");
}

/// A child killed before it acknowledged anything (while starting, while
/// opening or creating the log, or holding it open) leaves a log that opens,
/// verifies and takes appends. The delays walk through the child's start-up.
#[test]
fn a_child_killed_before_its_first_ack_leaves_a_usable_store() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let stream = StreamId::new("crash-early").unwrap();
    let mut written = 0u64;
    // `None`: kill right after the child printed `OPEN`.
    let delays = [
        Some(0),
        Some(1),
        Some(2),
        Some(3),
        Some(5),
        Some(8),
        Some(13),
        Some(21),
        Some(34),
        None,
    ];
    for (round, delay) in delays.into_iter().enumerate() {
        let mut running = spawn_child(dir.path(), 1_000 + u64::try_from(round).unwrap(), true);
        match delay {
            Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
            None => running = running.wait_first_line(),
        }
        let killed = running.kill();
        assert!(
            killed.lines.iter().all(|l| l == "OPEN"),
            "round {round}: a holding child printed {:?}",
            killed.lines
        );
        let store = SledStore::open(dir.path()).unwrap_or_else(|e| {
            panic!("round {round} (kill after {delay:?} ms): reopen failed: {e}")
        });
        rt.block_on(async {
            assert_eq!(store.head().position, Position(written), "round {round}");
            let report = store.verify(Position(1), None).await.unwrap();
            assert!(report.is_ok(), "round {round}: {report:?}");
            assert_eq!(report.checked, written, "round {round}");
            let id = Uuid::from_u64_pair(0xEA51, u64::try_from(round).unwrap() + 1);
            let result = store
                .append(
                    &stream,
                    ExpectedVersion::Exact(StreamVersion(written)),
                    vec![proposed(id)],
                )
                .await
                .unwrap();
            written += 1;
            assert_eq!(result.last_position, Position(written), "round {round}");
            store.close().await;
        });
    }
    let store = SledStore::open(dir.path()).unwrap();
    rt.block_on(async {
        let report = store.verify(Position(1), None).await.unwrap();
        assert!(report.is_ok() && report.checked == written, "{report:?}");
        let events = store
            .read_stream(&stream, StreamVersion(1), 100)
            .await
            .unwrap();
        assert_eq!(u64::try_from(events.len()).unwrap(), written);
        for e in &events {
            assert!(proposed(e.event_id.0).same_content(e), "{e:?}");
        }
        store.close().await;
    });
}
