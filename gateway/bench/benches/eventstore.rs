//! Throughput and latency of the event log, against the disk's raw fsync rate.
//!
//! `cargo bench -p crm-eventstore` prints a table and one JSON line per
//! scenario. Every scenario runs in the same process on the same disk: a
//! temporary directory under `target/` (never `/tmp`, which may be tmpfs).
//! `CRM_BENCH_QUICK=1` shrinks every scenario for a smoke run.
//! `CRM_BENCH_ONLY=sled_append_w16_b100,memory_append` runs only the scenarios whose
//! names contain one of the comma-separated words (the fsync baselines always run), for
//! profiling one scenario or alternating two builds on it.
//!
//! Scenarios:
//! - `fsync_baseline` (first) and `fsync_baseline_end` (last): append 4 KiB
//!   to a file and `sync_data` it, in a loop; ratios compare with the faster run;
//! - `{sled,memory}_append_w{W}_b{B}`: W concurrent writers (tokio tasks on a
//!   multi-thread runtime), each appending batches of B events of ~300 bytes
//!   to its own share of 1,000 streams with `Exact` expected versions;
//!   latency is per `append` call;
//! - `sled_load_w16_b100`: writes the replay data set (16 writers, 100-event batches);
//! - `sled_replay_read_all`: pages through the whole log with `read_all`
//!   (`READ_PAGE_MAX` per page); latency is per page;
//! - `sled_replay_subscribe`: `subscribe(Position(0))` until the head;
//!   latency is per `next` call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;
use crm_bench::stats::quantile_ms;
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    EventId, EventStore, ExpectedVersion, MemoryStore, Position, ProposedEvent, SledStore,
    StreamId, StreamVersion,
};
use tokio::runtime::Runtime;
use uuid::Uuid;

const STREAMS: usize = 1_000;
const PAYLOAD_BYTES: usize = 300;

struct Config {
    scenario_time: Duration,
    fsync_time: Duration,
    replay_events: u64,
    /// Words of `CRM_BENCH_ONLY`; empty runs every scenario.
    only: Vec<String>,
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var("CRM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let only = std::env::var("CRM_BENCH_ONLY")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect();
        if quick {
            Config {
                scenario_time: Duration::from_millis(500),
                fsync_time: Duration::from_millis(500),
                replay_events: 50_000,
                only,
            }
        } else {
            Config {
                scenario_time: Duration::from_secs(2),
                fsync_time: Duration::from_secs(2),
                replay_events: 1_000_000,
                only,
            }
        }
    }

    /// Whether the scenario named `name` runs.
    fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| name.contains(w.as_str()))
    }
}

/// One measured scenario.
struct Outcome {
    scenario: String,
    events: u64,
    seconds: f64,
    /// Latency of each measured call.
    latencies: Vec<Duration>,
}

impl Outcome {
    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    /// The latency at `permille` / 1000 (nearest rank), in milliseconds.
    fn percentile_ms(&self, permille: u32) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        Some(quantile_ms(&sorted, f64::from(permille) / 1000.0))
    }
}

/// The scenarios measured, printed at the end as JSON lines and a table.
struct Report {
    fsync_per_s: Option<f64>,
    rows: Vec<(Outcome, Option<f64>)>,
}

fn json_number(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.6}"),
        _ => "null".into(),
    }
}

impl Report {
    /// Records a scenario; `compare_to_fsync` marks it for a ratio to the fsync baseline.
    fn add(&mut self, outcome: Outcome, compare_to_fsync: bool) {
        eprintln!(
            "  {:<26} {:>12.0} events/s",
            outcome.scenario,
            outcome.events_per_s()
        );
        self.rows
            .push((outcome, compare_to_fsync.then_some(f64::NAN)));
    }

    /// Fills in the ratios once the baseline is known.
    fn set_fsync_baseline(&mut self, fsync_per_s: f64) {
        self.fsync_per_s = Some(fsync_per_s);
        for (o, ratio) in &mut self.rows {
            if ratio.is_some() {
                *ratio = Some(o.events_per_s() / fsync_per_s);
            }
        }
    }

    fn json_lines(&self) -> String {
        let mut out = String::new();
        for (o, ratio) in &self.rows {
            out.push_str(&format!(
                "{{\"scenario\":\"{}\",\"events\":{},\"seconds\":{},\"events_per_s\":{},\"p50_ms\":{},\"p99_ms\":{},\"ratio_to_fsync\":{}}}\n",
                o.scenario,
                o.events,
                json_number(Some(o.seconds)),
                json_number(Some(o.events_per_s())),
                json_number(o.percentile_ms(500)),
                json_number(o.percentile_ms(990)),
                json_number(*ratio),
            ));
        }
        out
    }

    fn table(&self) -> String {
        let fmt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "-".into(),
        };
        let mut out = format!(
            "{:<26} {:>10} {:>8} {:>12} {:>9} {:>9} {:>9}\n",
            "scenario", "events", "seconds", "events/s", "p50 ms", "p99 ms", "x fsync"
        );
        for (o, ratio) in &self.rows {
            out.push_str(&format!(
                "{:<26} {:>10} {:>8.2} {:>12.0} {:>9} {:>9} {:>9}\n",
                o.scenario,
                o.events,
                o.seconds,
                o.events_per_s(),
                fmt(o.percentile_ms(500), 3),
                fmt(o.percentile_ms(990), 3),
                fmt(*ratio, 1),
            ));
        }
        out
    }

    fn rate(&self, scenario: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|(o, _)| o.scenario == scenario)
            .map(|(o, _)| o.events_per_s())
    }
}

fn fsync_baseline(dir: &Path, name: &str, duration: Duration) -> Outcome {
    let path = dir.join("fsync-baseline");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    let block = vec![0xA5u8; 4096];
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        latencies.push(t.elapsed());
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).unwrap();
    Outcome {
        scenario: name.into(),
        events: latencies.len() as u64,
        seconds,
        latencies,
    }
}

fn event(id: u128, payload: &Arc<Vec<u8>>) -> ProposedEvent {
    ProposedEvent {
        event_id: EventId(Uuid::from_u128(id)),
        event_type: "BenchEventRecorded".into(),
        schema_version: 1,
        occurred_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        causation_id: None,
        correlation_id: None,
        actor: "bench".into(),
        metadata: Vec::new(),
        payload: payload.as_ref().clone(),
    }
}

/// The streams writer `w` of `writers` owns.
fn own_streams(w: usize, writers: usize) -> Vec<StreamId> {
    (0..STREAMS)
        .filter(|s| s % writers == w)
        .map(|s| StreamId::new(format!("bench-{s}")).unwrap())
        .collect()
}

/// `writers` tasks append batches of `batch` events until `deadline` or
/// until `events_cap` events were appended in all.
async fn append_load<S: EventStore>(
    store: &S,
    name: String,
    writers: usize,
    batch: usize,
    duration: Duration,
    events_cap: u64,
) -> Outcome {
    let payload = Arc::new(
        (0..PAYLOAD_BYTES)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect::<Vec<u8>>(),
    );
    let per_writer_cap = events_cap.div_ceil(writers as u64);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let streams = own_streams(w, writers);
            let mut versions = vec![StreamVersion(0); streams.len()];
            let mut latencies = Vec::new();
            let mut written = 0u64;
            let mut next_id = ((w as u128) << 64) | 1;
            let mut turn = 0usize;
            while written < per_writer_cap && Instant::now() < deadline {
                let s = turn % streams.len();
                turn += 1;
                let events: Vec<ProposedEvent> = (0..batch)
                    .map(|_| {
                        next_id += 1;
                        event(next_id, &payload)
                    })
                    .collect();
                let t = Instant::now();
                let result = store
                    .append(&streams[s], ExpectedVersion::Exact(versions[s]), events)
                    .await
                    .unwrap();
                latencies.push(t.elapsed());
                versions[s] = result.stream_version;
                written += batch as u64;
            }
            (written, latencies)
        }));
    }
    let mut events = 0;
    let mut latencies = Vec::new();
    for t in tasks {
        let (n, l) = t.await.unwrap();
        events += n;
        latencies.extend(l);
    }
    Outcome {
        scenario: name,
        events,
        seconds: start.elapsed().as_secs_f64(),
        latencies,
    }
}

async fn replay_read_all(store: &SledStore) -> Outcome {
    let head = store.head().position;
    let mut latencies = Vec::new();
    let mut events = 0u64;
    let mut next = Position::FIRST;
    let start = Instant::now();
    while next <= head {
        let t = Instant::now();
        let page = store.read_all(next, READ_PAGE_MAX).await.unwrap();
        latencies.push(t.elapsed());
        let last = page.last().expect("a page below the head is never empty");
        next = last.position.next().unwrap();
        events += page.len() as u64;
        std::hint::black_box(&page);
    }
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(
        events, head.0,
        "read_all replayed a different number of events"
    );
    Outcome {
        scenario: "sled_replay_read_all".into(),
        events,
        seconds,
        latencies,
    }
}

async fn replay_subscribe(store: &SledStore) -> Outcome {
    let head = store.head().position;
    let mut latencies = Vec::with_capacity(usize::try_from(head.0).unwrap_or(0));
    let mut events = 0u64;
    let start = Instant::now();
    let mut sub = store.subscribe(Position(0));
    while events < head.0 {
        let t = Instant::now();
        let e = sub.next().await.unwrap().unwrap();
        latencies.push(t.elapsed());
        events += 1;
        assert_eq!(
            e.position.0, events,
            "subscription skipped or repeated a position"
        );
        std::hint::black_box(&e);
    }
    Outcome {
        scenario: "sled_replay_subscribe".into(),
        events,
        seconds: start.elapsed().as_secs_f64(),
        latencies,
    }
}

/// A 1 ms timer's lateness on the runtime while `readers` tasks read 10,000-event pages
/// of `store` without pause: reads run on the blocking pool, so the timer keeps time.
async fn timer_jitter(store: &SledStore, readers: usize, duration: Duration) -> Outcome {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let head = store.head().position.0;
    let mut tasks = Vec::new();
    for r in 0..readers {
        let (store, stop) = (store.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut next = 1 + (r as u64 * 250_000) % head.max(1);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let page = store.read_all(Position(next), READ_PAGE_MAX).await.unwrap();
                next = page.last().map_or(1, |l| l.position.0 + 1);
                if next > head {
                    next = 1;
                }
                std::hint::black_box(&page);
            }
        }));
    }
    let tick = Duration::from_millis(1);
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let due = Instant::now() + tick;
        tokio::time::sleep_until(due.into()).await;
        latencies.push(Instant::now().saturating_duration_since(due));
    }
    let seconds = start.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    Outcome {
        scenario: format!("timer_lateness_{readers}_readers"),
        events: latencies.len() as u64,
        seconds,
        latencies,
    }
}

fn bench_dir() -> tempfile::TempDir {
    // Benches get a scratch directory inside `target/`: the same disk as the
    // build, and not a tmpfs.
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    tempfile::Builder::new()
        .prefix("crm-eventstore-bench-")
        .tempdir_in(base)
        .unwrap()
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let config = Config::from_env();
    let dir = bench_dir();
    eprintln!(
        "crm-eventstore bench: dir {}, {:?} per scenario, {} replay events",
        dir.path().display(),
        config.scenario_time,
        config.replay_events
    );
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut report = Report {
        fsync_per_s: None,
        rows: Vec::new(),
    };

    let fsync = fsync_baseline(dir.path(), "fsync_baseline", config.fsync_time);
    report.add(fsync, false);

    let shapes = [(1, 1), (16, 1), (1, 10), (16, 10), (1, 100), (16, 100)];
    for (n, &(writers, batch)) in shapes.iter().enumerate() {
        let name = format!("sled_append_w{writers}_b{batch}");
        if !config.runs(&name) {
            continue;
        }
        let path = dir.path().join(format!("append-{n}"));
        let store = SledStore::open(&path).unwrap();
        let outcome = rt.block_on(append_load(
            &store,
            name,
            writers,
            batch,
            config.scenario_time,
            u64::MAX,
        ));
        rt.block_on(store.close());
        std::fs::remove_dir_all(&path).unwrap();
        report.add(outcome, true);
    }
    for &(writers, batch) in &shapes {
        let name = format!("memory_append_w{writers}_b{batch}");
        if !config.runs(&name) {
            continue;
        }
        let store = MemoryStore::new();
        let outcome = rt.block_on(append_load(
            &store,
            name,
            writers,
            batch,
            config.scenario_time,
            u64::MAX,
        ));
        report.add(outcome, true);
    }

    if ["sled_load", "sled_replay", "timer_lateness"]
        .iter()
        .any(|name| config.runs(name))
    {
        replay_scenarios(&rt, dir.path(), &config, &mut report);
    }

    // The disk's fsync rate drifts (shared VMs, other load): measure it again
    // at the end and compare against the faster of the two runs.
    let fsync_end = fsync_baseline(dir.path(), "fsync_baseline_end", config.fsync_time);
    report.add(fsync_end, false);
    let fsync = ["fsync_baseline", "fsync_baseline_end"]
        .iter()
        .filter_map(|s| report.rate(s))
        .fold(0.0, f64::max);
    report.set_fsync_baseline(fsync);

    print!("{}", report.json_lines());
    println!();
    print!("{}", report.table());
    let check = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let w16 = report.rate("sled_append_w16_b1").unwrap_or(0.0);
    let batched = [
        "sled_append_w1_b100",
        "sled_append_w16_b100",
        "sled_append_w16_b10",
    ]
    .iter()
    .filter_map(|s| report.rate(s))
    .fold(0.0, f64::max);
    let replay = report.rate("sled_replay_read_all").unwrap_or(0.0);
    println!();
    println!(
        "target: 16 single-event writers >= 10x fsync: {:.1}x ({:.0} vs {fsync:.0}/s) {}",
        w16 / fsync,
        w16,
        check(w16 >= 10.0 * fsync)
    );
    println!(
        "target: batched append >= 200,000 events/s: {batched:.0} {}",
        check(batched >= 200_000.0)
    );
    println!(
        "target: read_all replay >= 1,000,000 events/s: {replay:.0} {}",
        check(replay >= 1_000_000.0)
    );
}

/// Writes the replay data set, then replays it and measures a timer's lateness beside readers.
fn replay_scenarios(rt: &Runtime, dir: &Path, config: &Config, report: &mut Report) {
    let path = dir.join("replay");
    let store = SledStore::open(&path).unwrap();
    let load = rt.block_on(append_load(
        &store,
        "sled_load_w16_b100".into(),
        16,
        100,
        Duration::from_secs(3_600),
        config.replay_events,
    ));
    assert_eq!(store.head().position.0, load.events);
    report.add(load, true);
    let outcome = rt.block_on(replay_read_all(&store));
    report.add(outcome, false);
    let outcome = rt.block_on(replay_subscribe(&store));
    report.add(outcome, false);
    for readers in [0, 4] {
        let outcome = rt.block_on(timer_jitter(&store, readers, config.scenario_time));
        eprintln!(
            "timer lateness with {readers} readers of 10,000-event pages: max {:.2} ms",
            outcome
                .latencies
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e3
        );
        report.add(outcome, false);
    }
    rt.block_on(store.close());
}
