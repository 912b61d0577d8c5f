//! Crash test of `SledStore`: a child process (`crash-writer`) appends from
//! several concurrent tasks and prints an `ACK` line for every event once its
//! append returned `Ok`; the parent kills it with SIGKILL at a random moment,
//! reopens the log and checks that every acknowledged event survived exactly
//! once, where it was acknowledged, with its content, and that the log is
//! intact. The cycles run on one directory, so crashes accumulate.
//!
//! `CRM_CRASH_CYCLES` raises the number of cycles (default 50; a longer run prints its
//! counts every 50 cycles),
//! `CRM_CRASH_SEED` replays a run (the seed is printed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    EventStore, ExpectedVersion, Position, ReadError, RecordedEvent, SledStore, StreamId,
    StreamVersion,
};
use crm_tests::crash::{proposed, Rng};
use uuid::Uuid;

const CHILD: &str = env!("CARGO_BIN_EXE_crash-writer");
const DEFAULT_CYCLES: u64 = 50;
const DEFAULT_SEED: u64 = 0x00C0_FFEE_5EED_2024;
/// How long a child may take to print its first line before the test gives up.
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(120);
/// Cycles between full checks of every record's content and every stream through `read_stream`.
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

/// Counts over the whole run; a problem is counted once per event id.
#[derive(Default)]
struct Tally {
    cycles: u64,
    acked: HashMap<Uuid, Ack>,
    present: u64,
    lost: HashSet<Uuid>,
    duplicated: HashSet<Uuid>,
    misplaced: HashSet<Uuid>,
    corrupt: HashSet<String>,
    verify_failures: u64,
    /// Records up to this position had their content checked.
    content_checked_to: u64,
    /// Per stream, the version up to which `read_stream` was last checked.
    stream_checked: HashMap<String, u64>,
    problems: Vec<String>,
}

impl Tally {
    fn problem(&mut self, cycle: u64, what: String) {
        if self.problems.len() < PROBLEMS_SHOWN {
            self.problems.push(format!("cycle {cycle}: {what}"));
        }
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

/// Reads the whole log in global order; a read error ends the scan and is returned with what was read.
async fn read_log(store: &SledStore) -> (Vec<RecordedEvent>, Option<ReadError>) {
    let mut all = Vec::new();
    let mut next = Position::FIRST;
    loop {
        match store.read_all(next, READ_PAGE_MAX).await {
            Ok(page) => {
                let Some(last) = page.last() else {
                    return (all, None);
                };
                next = last.position.next().unwrap();
                all.extend(page);
            }
            Err(e) => return (all, Some(e)),
        }
    }
}

/// Checks the reopened log against everything acknowledged so far.
async fn check_store(store: &SledStore, cycle: u64, full_check: bool, tally: &mut Tally) {
    let head = store.head();
    let (log, error) = read_log(store).await;
    if let Some(e) = error {
        tally.corrupt.insert(format!("read error: {e}"));
        tally.problem(
            cycle,
            format!("read_all failed after {} records: {e}", log.len()),
        );
    }
    tally.present = u64::try_from(log.len()).unwrap();
    if tally.present != head.position.0 {
        tally
            .corrupt
            .insert(format!("cycle {cycle}: head mismatch"));
        tally.problem(
            cycle,
            format!(
                "head is {} but the log holds {} records",
                head.position,
                log.len()
            ),
        );
    }

    let mut by_id: HashMap<Uuid, &RecordedEvent> = HashMap::with_capacity(log.len());
    let mut versions: HashMap<&StreamId, u64> = HashMap::new();
    for (i, rec) in log.iter().enumerate() {
        let expected_position = u64::try_from(i).unwrap() + 1;
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
        let id = rec.event_id.0;
        if by_id.insert(id, rec).is_some() {
            tally.duplicated.insert(id);
            tally.problem(
                cycle,
                format!("event {id} is in the log twice (again at {})", rec.position),
            );
        }
        let version = versions.entry(&rec.stream_id).or_insert(0);
        if rec.stream_version.0 != *version + 1 {
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
        *version = rec.stream_version.0;
        // Older records were checked by earlier cycles; `verify` rechecks their hashes.
        let new = rec.position.0 > tally.content_checked_to;
        if (new || full_check) && !proposed(id).same_content(rec) {
            tally.corrupt.insert(id.to_string());
            tally.problem(
                cycle,
                format!(
                    "event {id} at {} has content other than written",
                    rec.position
                ),
            );
        }
    }

    tally.content_checked_to = tally.content_checked_to.max(tally.present);

    // The stream index agrees with the global order: in full every
    // `FULL_CHECK_EVERY` cycles and in the last, otherwise from the
    // versions the previous check saw on (what this cycle's child wrote).
    for (stream, &last) in &versions {
        match store.stream_version(stream).await {
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
        let checked_before = if full_check {
            0
        } else {
            tally
                .stream_checked
                .get(stream.as_str())
                .copied()
                .unwrap_or(0)
        };
        let mut seen = checked_before;
        loop {
            let from = StreamVersion(seen + 1);
            match store.read_stream(stream, from, READ_PAGE_MAX).await {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    for rec in &page {
                        seen += 1;
                        let in_log = by_id.get(&rec.event_id.0).map(|r| r.position);
                        if rec.stream_version.0 != seen || in_log != Some(rec.position) {
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
        tally
            .stream_checked
            .insert(stream.as_str().to_owned(), last);
    }

    // Every acknowledged event, from this cycle and all before, is where it was acknowledged.
    let mut lost = Vec::new();
    let mut misplaced = Vec::new();
    for ack in tally.acked.values() {
        match by_id.get(&ack.id) {
            None => lost.push(ack.clone()),
            Some(rec) => {
                if rec.position.0 != ack.position
                    || rec.stream_id.as_str() != ack.stream
                    || rec.stream_version.0 != ack.version
                {
                    misplaced.push((
                        ack.clone(),
                        rec.position,
                        rec.stream_id.clone(),
                        rec.stream_version,
                    ));
                }
            }
        }
    }
    for ack in lost {
        if tally.lost.insert(ack.id) {
            tally.problem(cycle, format!("acknowledged event lost: {ack:?}"));
        }
    }
    for (ack, position, stream, version) in misplaced {
        if tally.misplaced.insert(ack.id) {
            tally.problem(cycle, format!("acknowledged {ack:?} found at position {position} in {stream} version {version}"));
        }
    }

    match store.verify(Position(1), None).await {
        Ok(report) if report.is_ok() && report.checked == head.position.0 => {}
        other => {
            tally.verify_failures += 1;
            tally.problem(cycle, format!("verify: {other:?} (head {})", head.position));
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
            let _ = writeln!(std::io::stderr().lock(), "{} (so far)", tally.summary());
        }
    }
    let summary = tally.summary();
    // Written to the process's stderr directly (not `eprintln!`, which the
    // test harness captures), so the counts show in every test run.
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{summary}");
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
