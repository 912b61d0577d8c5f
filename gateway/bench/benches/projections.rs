//! Projection throughput and latency, against raw replay of the same log, in one run.
//!
//! `cargo bench -p crm-projections` writes 1,000,000 synthetic but valid domain events
//! (customer stories made through the aggregates) into a `SledStore` under
//! `CARGO_TARGET_TMPDIR`, then measures:
//! - `raw_read_all`: paging through the log with `read_all` (events/s; the median of three);
//! - `raw_read_all_decoded`: the same, decoding every payload once (one thread);
//! - `catch_up_all_four`: the four read models catching up from position 0 together, each as
//!   its own worker, until all have folded the head and saved their snapshot (events/s and
//!   ratio to raw replay; the median of three);
//! - `catch_up_fold_only`: the same fold without the snapshots at the head (the median of
//!   three);
//! - `append_to_projection`: under a steady load of single-event appends (2,000/s for 5 s),
//!   the time from each append's acknowledgement until each projection's served state covers
//!   its position (p50/p99 per projection).
//!
//! `CRM_BENCH_QUICK=1` makes a short smoke run. `CRM_BENCH_LOG_DIR=DIR` keeps the log in
//! `DIR` and reuses it on the next run (it is loaded only when empty), so repeated runs, e.g.
//! under a profiler, skip the load. `CRM_BENCH_TABLE_MEMORY_MIB=N` sets the read models'
//! `table_memory_mib` (default 4), to weigh memory against catch-up time.

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

/// Raw replays measured for the baseline (the median counts).
const RAW_REPLAYS: usize = 3;
/// Catch-ups measured of each kind (the median counts).
const CATCH_UPS: usize = 3;

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

        // Warm the page cache of the OS the same way for every measurement; the baseline is
        // the median of three replays (the machine is shared, single runs vary).
        let _ = raw_replay(&store, false).await;
        let mut raws = Vec::new();
        let cpu = cpu_time();
        for _ in 0..RAW_REPLAYS {
            raws.push(raw_replay(&store, false).await);
        }
        let raw_cpu = (cpu_time() - cpu) / u32::try_from(RAW_REPLAYS).unwrap();
        raws.sort_by_key(|(_, d)| *d);
        let (n, raw) = raws[raws.len() / 2];
        let raw_rate = n as f64 / raw.as_secs_f64();
        eprintln!(
            "raw_read_all           {raw_rate:>12.0} events/s ({n} events, median of {RAW_REPLAYS}: {:.2} s; fastest {:.2} s, slowest {:.2} s; cpu {:.2} s each)",
            raw.as_secs_f64(),
            raws[0].1.as_secs_f64(),
            raws[raws.len() - 1].1.as_secs_f64(),
            raw_cpu.as_secs_f64()
        );
        let cpu = cpu_time();
        let (n, decoded) = raw_replay(&store, true).await;
        let rate = n as f64 / decoded.as_secs_f64();
        eprintln!("raw_read_all_decoded   {rate:>12.0} events/s ({:.2} s, {:.1}% of raw replay: every payload decoded once, one thread; cpu {:.2} s)", decoded.as_secs_f64(), 100.0 * rate / raw_rate, (cpu_time() - cpu).as_secs_f64());

        let model_config = ReadModelConfig {
            table_memory_mib: std::env::var("CRM_BENCH_TABLE_MEMORY_MIB").ok().and_then(|v| v.parse().ok()),
            ..ReadModelConfig::default()
        };
        model_config.apply_table_memory();
        let options = RunnerOptions { snapshot_idle_interval: Duration::from_secs(3_600), ..RunnerOptions::default() };
        // Each catch-up is measured CATCH_UPS times from position 0 in a directory of its
        // own; the median counts (the machine is shared, single runs vary). The runner of
        // the last full catch-up serves the steady-load measurement below.
        let mut full = Vec::new();
        let mut runner = None;
        for i in 0..CATCH_UPS {
            let mut r = ProjectionRunner::new(store.clone(), base.join(format!("projections-{i}")), options.clone());
            let models = ReadModels::register(&mut r, &model_config).unwrap();
            let t = Instant::now();
            let cpu = cpu_time();
            r.run_until_head().await.unwrap();
            full.push((t.elapsed(), cpu_time() - cpu));
            runner = Some((r, models));
        }
        let (runner, models) = runner.unwrap();
        let mut folds = Vec::new();
        for i in 0..CATCH_UPS {
            // The same fold without the snapshots at the head (a bounded run that does not
            // persist): the difference is the cost of serializing and writing the four states.
            let mut r = ProjectionRunner::new(store.clone(), base.join(format!("projections-fold-only-{i}")), options.clone());
            ReadModels::register(&mut r, &model_config).unwrap();
            let t = Instant::now();
            let cpu = cpu_time();
            r.run_until(head, false).await.unwrap();
            folds.push((t.elapsed(), cpu_time() - cpu));
        }
        full.sort();
        folds.sort();
        let (catch_up, catch_up_cpu) = full[CATCH_UPS / 2];
        let (fold, fold_cpu) = folds[CATCH_UPS / 2];
        let rate = head.0 as f64 / catch_up.as_secs_f64();
        eprintln!(
            "catch_up_all_four      {rate:>12.0} events/s ({:.2} s, {:.1}% of raw replay, snapshots included: every {} events and at the head; median of {CATCH_UPS}: fastest {:.2} s, slowest {:.2} s; cpu {:.2} s)",
            catch_up.as_secs_f64(),
            100.0 * rate / raw_rate,
            RunnerOptions::default().snapshot_every_events,
            full[0].0.as_secs_f64(),
            full[CATCH_UPS - 1].0.as_secs_f64(),
            catch_up_cpu.as_secs_f64()
        );
        let rate = head.0 as f64 / fold.as_secs_f64();
        eprintln!(
            "catch_up_fold_only     {rate:>12.0} events/s ({:.2} s, {:.1}% of raw replay; median of {CATCH_UPS}: fastest {:.2} s, slowest {:.2} s; cpu {:.2} s; the snapshots at the head took {:.2} s and {:.2} s cpu more)",
            fold.as_secs_f64(),
            100.0 * rate / raw_rate,
            folds[0].0.as_secs_f64(),
            folds[CATCH_UPS - 1].0.as_secs_f64(),
            fold_cpu.as_secs_f64(),
            catch_up.as_secs_f64() - fold.as_secs_f64(),
            catch_up_cpu.as_secs_f64().max(fold_cpu.as_secs_f64()) - fold_cpu.as_secs_f64()
        );
        for s in runner.status().await {
            eprintln!("  {:<16} applied {:>9} ignored {:>9} undecodable {}", s.name, s.progress.applied, s.progress.ignored, s.progress.undecodable);
        }
        for name in runner.names() {
            let path = base.join(format!("projections-{}", CATCH_UPS - 1)).join(name).join("snapshot.json");
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
