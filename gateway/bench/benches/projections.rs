//! Projection throughput and latency, against raw replay of the same log, in one run.
//!
//! `cargo bench -p crm-projections` writes 1,000,000 synthetic but valid domain events
//! (customer stories made through the aggregates) into a `SledStore` under
//! `CARGO_TARGET_TMPDIR`, then measures:
//! - `raw_read_all`: paging through the log with `read_all` (events/s; the median of all,
//!   two a round);
//! - `raw_read_all_decoded`: the same, decoding every payload once (one thread);
//! - `catch_up_all_four`: the four read models catching up from position 0 together, each as
//!   its own worker, until all have folded the head and saved their snapshot (events/s, and
//!   the median of five ratios, each to the raw replay measured just before the catch-up);
//! - `catch_up_fold_only`: the same fold without the snapshots at the head (likewise);
//! - `append_to_projection`: under a steady load of single-event appends (2,000/s for 5 s),
//!   the time from each append's acknowledgement until each projection's served state covers
//!   its position (p50/p99 per projection).
//!
//! `CRM_BENCH_QUICK=1` makes a short smoke run. `CRM_BENCH_LOG_DIR=DIR` keeps the log in
//! `DIR` and reuses it on the next run (it is loaded only when empty), so repeated runs, e.g.
//! under a profiler, skip the load. `CRM_BENCH_ROUNDS=N` sets the rounds (default 5; 1 for a
//! profiler). `CRM_BENCH_TABLE_MEMORY_MIB=N` sets the read models' `table_memory_mib`
//! (default 4), to weigh memory against catch-up time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation
)]

#[path = "../../../projections/tests/common/gen.rs"]
mod gen;
#[path = "../../../projections/tests/common/story.rs"]
mod story;

/// The `crm` binary's allocator, so the catch-up and the raw replay run as `crm` runs them.
#[global_allocator]
static ALLOCATOR: crm_app::allocator::Allocator = crm_app::allocator::ALLOCATOR;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crm_bench::stats::quantile_ms;
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{EventStore, ExpectedVersion, Position, SledStore, StreamId};
use crm_projections::read_models::{ReadModelConfig, ReadModels};
use crm_projections::{ProjectionRunner, RunnerOptions};
use tokio::sync::mpsc;

struct Config {
    events: u64,
    load_per_s: u64,
    load_time: Duration,
}

fn config() -> Config {
    let quick = std::env::var("CRM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    if quick {
        Config {
            events: 50_000,
            load_per_s: 2_000,
            load_time: Duration::from_secs(1),
        }
    } else {
        Config {
            events: 1_000_000,
            load_per_s: 2_000,
            load_time: Duration::from_secs(5),
        }
    }
}

fn percentile_ms(sorted: &[Duration], permille: u32) -> f64 {
    quantile_ms(sorted, f64::from(permille) / 1000.0)
}

async fn load(store: &SledStore, target: u64) -> u64 {
    let (tx, rx) = async_channel_pair();
    let writers = 16;
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = store.clone();
        let rx = Arc::clone(&rx);
        tasks.push(tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some((serial, events)) = next else { break };
                let events: Vec<crm_domain::DomainEvent> = events;
                let stream = StreamId::new(events[0].stream_id()).unwrap();
                let batch = events
                    .iter()
                    .enumerate()
                    .map(|(k, e)| gen::proposed(e, serial + k as u64))
                    .collect();
                store
                    .append(&stream, ExpectedVersion::NoStream, batch)
                    .await
                    .unwrap();
            }
        }));
    }
    let mut written = 0u64;
    let mut serial = 0u64;
    let mut i = 0u64;
    while written < target {
        for events in story::story(i) {
            if events.is_empty() {
                continue;
            }
            written += events.len() as u64;
            let n = events.len() as u64;
            tx.send((serial, events)).await.unwrap();
            serial += n;
        }
        i += 1;
    }
    drop(tx);
    for t in tasks {
        t.await.unwrap();
    }
    written
}

type Batch = (u64, Vec<crm_domain::DomainEvent>);

fn async_channel_pair() -> (mpsc::Sender<Batch>, mpsc::Receiver<Batch>) {
    mpsc::channel(1_024)
}

/// CPU time of this process so far (all threads, user + system), from `/proc/self/stat`
/// (Linux; clock ticks of 10 ms). Beside each wall time it shows how much of the machine a
/// measurement used: the machine is shared, so wall times vary with the load of others.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(14) + ticks(15)) * 10)
}

/// Rounds measured by default: each a raw replay, a full catch-up, a raw replay and a fold
/// without the final snapshots (the medians count). `CRM_BENCH_ROUNDS=N` sets another
/// number, from 1 (a profiler's run) to [`ROUNDS_MAX`].
const ROUNDS: usize = 5;
const ROUNDS_MAX: usize = 25;

fn rounds() -> usize {
    std::env::var("CRM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(ROUNDS, |n| n.clamp(1, ROUNDS_MAX))
}

/// One timed run: wall time, CPU time of the process, and its rate as a percentage of the
/// raw replay measured just before it.
#[derive(Clone, Copy)]
struct Timed {
    wall: Duration,
    cpu: Duration,
    percent: f64,
}

/// The median of `runs` by wall time, the median percentage, and the range of both.
struct Summary {
    median: Timed,
    fastest: Duration,
    slowest: Duration,
    percent_median: f64,
    percent_low: f64,
    percent_high: f64,
}

fn summarize(runs: &[Timed]) -> Summary {
    let mut by_wall = runs.to_vec();
    by_wall.sort_by_key(|t| t.wall);
    let mut percents: Vec<f64> = runs.iter().map(|t| t.percent).collect();
    percents.sort_by(f64::total_cmp);
    Summary {
        median: by_wall[by_wall.len() / 2],
        fastest: by_wall[0].wall,
        slowest: by_wall[by_wall.len() - 1].wall,
        percent_median: percents[percents.len() / 2],
        percent_low: percents[0],
        percent_high: percents[percents.len() - 1],
    }
}

/// A raw replay timed: events read, wall time, CPU time.
async fn timed_raw(store: &SledStore) -> (u64, Duration, Duration) {
    let cpu = cpu_time();
    let (n, wall) = raw_replay(store, false).await;
    (n, wall, cpu_time() - cpu)
}

/// Pages through the whole log with `read_all`; with `decode`, also decodes every payload.
async fn raw_replay(store: &SledStore, decode: bool) -> (u64, Duration) {
    let start = Instant::now();
    let mut next = Position::FIRST;
    let mut n = 0u64;
    loop {
        let page = store.read_all(next, READ_PAGE_MAX).await.unwrap();
        let Some(last) = page.last() else { break };
        n += page.len() as u64;
        next = last.position.next().unwrap();
        if decode {
            for e in &page {
                std::hint::black_box(
                    crm_domain::DomainEvent::from_payload(
                        &e.event_type,
                        e.schema_version,
                        &e.payload,
                    )
                    .unwrap(),
                );
            }
        }
    }
    (n, start.elapsed())
}

fn main() {
    let cfg = config();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("projections-bench");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let kept_log = std::env::var_os("CRM_BENCH_LOG_DIR").map(std::path::PathBuf::from);
    rt.block_on(async {
        let store = SledStore::open(kept_log.clone().unwrap_or_else(|| base.join("log"))).unwrap();
        if store.head().position == Position::ZERO {
            let t = Instant::now();
            let written = load(&store, cfg.events).await;
            eprintln!("loaded {written} events in {:.1} s", t.elapsed().as_secs_f64());
        } else {
            eprintln!("reusing the log in {:?}: {} events", kept_log.as_deref().unwrap_or(&base), store.head().position.0);
        }
        let head = store.head().position;

        // Warm the page cache of the OS the same way for every measurement.
        let _ = raw_replay(&store, false).await;
        let cpu = cpu_time();
        let (n, decoded) = raw_replay(&store, true).await;
        let decoded_cpu = cpu_time() - cpu;

        let model_config = ReadModelConfig {
            table_memory_mib: std::env::var("CRM_BENCH_TABLE_MEMORY_MIB").ok().and_then(|v| v.parse().ok()),
            ..ReadModelConfig::default()
        };
        model_config.apply_table_memory();
        let options = RunnerOptions { snapshot_idle_interval: Duration::from_secs(3_600), ..RunnerOptions::default() };
        // Rounds (`rounds()`) of: a raw replay, the four read models catching up from position 0
        // (snapshots included), a raw replay, the same fold without the snapshots at the head
        // (a bounded run that does not persist; the difference is the cost of serializing and
        // writing the four states). Each catch-up counts against the raw replay just before
        // it: the machine is shared and its speed drifts over a run, and a drift moves both
        // sides of a pair alike. Each catch-up has a directory of its own; the runner of the
        // last full catch-up serves the steady-load measurement below.
        let mut raws: Vec<Timed> = Vec::new();
        let mut full: Vec<Timed> = Vec::new();
        let mut folds: Vec<Timed> = Vec::new();
        let mut runner = None;
        let rounds = rounds();
        let percent = |raw: (u64, Duration, Duration), wall: Duration| {
            100.0 * (head.0 as f64 / wall.as_secs_f64()) / (raw.0 as f64 / raw.1.as_secs_f64())
        };
        for i in 0..rounds {
            let raw = timed_raw(&store).await;
            raws.push(Timed { wall: raw.1, cpu: raw.2, percent: 100.0 });
            let mut r = ProjectionRunner::new(store.clone(), base.join(format!("projections-{i}")), options.clone());
            let models = ReadModels::register(&mut r, &model_config).unwrap();
            let t = Instant::now();
            let cpu = cpu_time();
            r.run_until_head().await.unwrap();
            let wall = t.elapsed();
            full.push(Timed { wall, cpu: cpu_time() - cpu, percent: percent(raw, wall) });
            runner = Some((r, models));

            let raw = timed_raw(&store).await;
            raws.push(Timed { wall: raw.1, cpu: raw.2, percent: 100.0 });
            let mut r = ProjectionRunner::new(store.clone(), base.join(format!("projections-fold-only-{i}")), options.clone());
            ReadModels::register(&mut r, &model_config).unwrap();
            let t = Instant::now();
            let cpu = cpu_time();
            r.run_until(head, false).await.unwrap();
            let wall = t.elapsed();
            folds.push(Timed { wall, cpu: cpu_time() - cpu, percent: percent(raw, wall) });
        }
        let (runner, models) = runner.unwrap();
        let raw = summarize(&raws);
        let raw_rate = n as f64 / raw.median.wall.as_secs_f64();
        eprintln!(
            "raw_read_all           {raw_rate:>12.0} events/s ({n} events, median of {}: {:.2} s; fastest {:.2} s, slowest {:.2} s; cpu {:.2} s)",
            raws.len(),
            raw.median.wall.as_secs_f64(),
            raw.fastest.as_secs_f64(),
            raw.slowest.as_secs_f64(),
            raw.median.cpu.as_secs_f64()
        );
        let rate = n as f64 / decoded.as_secs_f64();
        eprintln!("raw_read_all_decoded   {rate:>12.0} events/s ({:.2} s, {:.1}% of the median raw replay: every payload decoded once, one thread; cpu {:.2} s)", decoded.as_secs_f64(), 100.0 * rate / raw_rate, decoded_cpu.as_secs_f64());
        let catch_up = summarize(&full);
        let fold = summarize(&folds);
        let rate = head.0 as f64 / catch_up.median.wall.as_secs_f64();
        eprintln!(
            "catch_up_all_four      {rate:>12.0} events/s ({:.2} s; {:.1}% of raw replay, the median of {rounds} ratios each against the raw replay before it, {:.1}–{:.1}%; snapshots included: every {} events and at the head; fastest {:.2} s, slowest {:.2} s; cpu {:.2} s)",
            catch_up.median.wall.as_secs_f64(),
            catch_up.percent_median,
            catch_up.percent_low,
            catch_up.percent_high,
            RunnerOptions::default().snapshot_every_events,
            catch_up.fastest.as_secs_f64(),
            catch_up.slowest.as_secs_f64(),
            catch_up.median.cpu.as_secs_f64()
        );
        let rate = head.0 as f64 / fold.median.wall.as_secs_f64();
        eprintln!(
            "catch_up_fold_only     {rate:>12.0} events/s ({:.2} s; {:.1}% of raw replay, {:.1}–{:.1}%; fastest {:.2} s, slowest {:.2} s; cpu {:.2} s; the snapshots at the head took {:.2} s and {:.2} s cpu more)",
            fold.median.wall.as_secs_f64(),
            fold.percent_median,
            fold.percent_low,
            fold.percent_high,
            fold.fastest.as_secs_f64(),
            fold.slowest.as_secs_f64(),
            fold.median.cpu.as_secs_f64(),
            catch_up.median.wall.as_secs_f64() - fold.median.wall.as_secs_f64(),
            catch_up.median.cpu.as_secs_f64().max(fold.median.cpu.as_secs_f64()) - fold.median.cpu.as_secs_f64()
        );
        for s in runner.status().await {
            eprintln!("  {:<16} applied {:>9} ignored {:>9} undecodable {}", s.name, s.progress.applied, s.progress.ignored, s.progress.undecodable);
        }
        for name in runner.names() {
            let path = base.join(format!("projections-{}", rounds - 1)).join(name).join("snapshot.json");
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            eprintln!("  {name:<16} snapshot {:>8.1} MiB", size as f64 / (1 << 20) as f64);
        }

        // Steady append load with the workers live.
        runner.start().unwrap();
        let handles = [("pipeline", models.pipeline.clone().into_waiter()), ("churn", models.churn.clone().into_waiter()), ("lifetime-value", models.lifetime_value.clone().into_waiter()), ("sla", models.sla.clone().into_waiter())];
        let mut txs = Vec::new();
        let mut measures = Vec::new();
        for (name, waiter) in handles {
            let (tx, mut rx) = mpsc::unbounded_channel::<(Position, Instant)>();
            txs.push(tx);
            measures.push((name, tokio::spawn(async move {
                let mut lat = Vec::new();
                while let Some((pos, acked)) = rx.recv().await {
                    waiter(pos).await;
                    lat.push(acked.elapsed());
                }
                lat
            })));
        }
        let txs = Arc::new(txs);
        let total = cfg.load_per_s * cfg.load_time.as_secs();
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / cfg.load_per_s));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut appends = Vec::new();
        let t = Instant::now();
        for k in 0..total {
            tick.tick().await;
            let store = store.clone();
            let txs = Arc::clone(&txs);
            appends.push(tokio::spawn(async move {
                // Offset by the head, so a reused log gets new streams and event ids.
                let i = 10_000_000 + head.0 + k;
                let events = story::story(i).pop().unwrap();
                let stream = StreamId::new(events[0].stream_id()).unwrap();
                let r = store.append(&stream, ExpectedVersion::NoStream, vec![gen::proposed(&events[0], 50_000_000 + head.0 + k)]).await.unwrap();
                let acked = Instant::now();
                for tx in txs.iter() {
                    let _ = tx.send((r.last_position, acked));
                }
            }));
        }
        for a in appends {
            a.await.unwrap();
        }
        let offered = t.elapsed();
        drop(txs);
        eprintln!("append_to_projection   {total} single-event appends in {:.2} s ({:.0}/s)", offered.as_secs_f64(), total as f64 / offered.as_secs_f64());
        for (name, m) in measures {
            let mut lat = m.await.unwrap();
            lat.sort_unstable();
            eprintln!("  {name:<16} p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms", percentile_ms(&lat, 500), percentile_ms(&lat, 990), percentile_ms(&lat, 1000));
        }
        runner.stop().await.unwrap();
    });
    let _ = std::fs::remove_dir_all(&base);
}

type Waiter = Box<dyn Fn(Position) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

trait IntoWaiter {
    fn into_waiter(self) -> Waiter;
}

impl<P: crm_projections::Projection> IntoWaiter for crm_projections::ProjectionHandle<P> {
    fn into_waiter(self) -> Waiter {
        Box::new(move |p| {
            let h = self.clone();
            Box::pin(async move { h.wait_for(p).await })
        })
    }
}
