//! `crm-bench metric-memory`: the time and peak memory of a metric question, a read-model
//! catch-up and a plain replay over a large log, each measured as a child process.
//!
//! The log is made of the benchmark's customer stories (`projections/tests/common/story.rs`:
//! an account, a subscription, two deals, an order with invoice and payment, a case and two
//! calls, about 22 events over 8 streams, made through the aggregates), each with a lead
//! captured before the account (one in three converted, one in three disqualified), so every
//! measure type of the catalog has facts: about 25 events per customer. It is written once
//! into `DIR/log` (`crm --data-dir DIR` reads it) and reused while it holds events.
//!
//! Each measurement runs one child process and reads its peak resident set size (`VmHWM` of
//! `/proc/PID/status`, polled every few milliseconds until the child exits: the high-water
//! mark only grows, so the last reading is the peak up to a few milliseconds before exit)
//! and its wall time (process start, store open, registry, replay and output included):
//! - `open`: `crm events --limit 1`, what opening the log costs before anything is read;
//! - `replay`: `crm-bench replay-log DIR/log`, paging through the whole log with `read_all`,
//!   once with the store's default page cache and once with the 32 MiB `crm metric` uses;
//! - `metric`: `crm metric ID --json` with the chosen period, for one catalog metric of each
//!   measure type;
//! - `catch-up`: `crm project catch-up` with no snapshot (all four read models from 0).
//!
//! A child whose resident set passes `--rss-cap-mib` is stopped and its row says so.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Duration as Days;
use crm_domain::aggregates::lead::{
    CaptureLead, ConvertLead, DisqualificationReason, DisqualifyLead, Lead, QualifyLead,
};
use crm_domain::values::{AccountId, Channel, ContactId, LeadId, OpportunityId, ProductId};
use crm_domain::{Aggregate, DomainEvent, PersonalData};
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    EventStore, ExpectedVersion, Position, RecordedAt, SledOptions, SledStore, StreamAppend,
    StreamId,
};
use serde::Serialize;

use crate::{gen, story};

/// Events per `append_batch` while writing the log.
const BATCH_EVENTS: usize = 2_000;
/// Batches appended concurrently while writing the log.
const WRITERS: usize = 4;
/// The page cache of the second replay measured: what `crm metric` opens the log with.
const REPLAY_CACHE_MIB: u64 = 32;
/// How often the child's high-water mark is read.
const POLL_INTERVAL: Duration = Duration::from_millis(2);

/// One catalog metric of each measure type, each with facts in the generated log.
pub const DEFAULT_METRICS: &[(&str, &str)] = &[
    ("simple", "sales.win_rate"),
    ("ratio", "marketing.acquisition_cost"),
    ("cumulative", "sales.new_revenue@2"),
    ("derived", "sales.new_revenue_growth"),
    ("conversion", "marketing.lead_conversion_rate"),
    ("duration", "service.time_to_resolution"),
    ("stock", "customer.active_customers"),
    ("stock", "sales.open_opportunities"),
    ("entities", "customer.repeat_purchase_rate"),
];

/// Options of `crm-bench metric-memory`.
#[derive(Debug, Clone)]
pub struct MetricMemoryOptions {
    /// Events the log must hold (generated when it is empty).
    pub events: u64,
    /// Data directory: the log in `DIR/log`, snapshots in `DIR/projections`.
    pub dir: PathBuf,
    /// The `crm` binary to measure.
    pub crm: PathBuf,
    /// Metrics as `TYPE=ID` or `TYPE=ID@VERSION` (default [`DEFAULT_METRICS`]).
    pub metrics: Vec<(String, String)>,
    /// Period of the metric questions (`all`, `month`, ...).
    pub period: String,
    /// Also measure the read models' catch-up from position 0.
    pub catch_up: bool,
    /// Runs of each measurement (the one with the median time is reported).
    pub rounds: usize,
    /// A child whose resident set passes this many MiB is stopped (the measurement fails).
    pub rss_cap_mib: u64,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// `replay`, `catch-up`, or the metric's measure type.
    pub what: String,
    /// Metric id (and version), or empty.
    pub metric: String,
    /// Wall time of the child process, seconds.
    pub seconds: f64,
    /// Peak resident set size of the child, MiB.
    pub peak_rss_mib: f64,
    /// Events the metric's view kept (from its `--json` output), when known.
    pub events_kept: Option<u64>,
    /// Figures returned, or the status when there were none.
    pub outcome: String,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct MetricMemoryReport {
    /// Events in the log.
    pub events: u64,
    /// Seconds it took to write the log (absent when an existing log was reused).
    pub load_seconds: Option<f64>,
    /// Size of the log's directory, MiB.
    pub log_mib: f64,
    /// Period of the metric questions.
    pub period: String,
    pub rows: Vec<Measured>,
}

impl fmt::Display for MetricMemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "log: {} events, {:.0} MiB{}; metric questions by {}",
            self.events,
            self.log_mib,
            self.load_seconds
                .map(|s| format!(", written in {s:.1} s"))
                .unwrap_or_default(),
            self.period
        )?;
        writeln!(
            f,
            "{:<11} {:<34} {:>9} {:>10} {:>11}  outcome",
            "what", "metric", "seconds", "peak MiB", "kept"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<11} {:<34} {:>9.2} {:>10.1} {:>11}  {}",
                r.what,
                r.metric,
                r.seconds,
                r.peak_rss_mib,
                r.events_kept.map(|k| k.to_string()).unwrap_or_default(),
                r.outcome
            )?;
        }
        Ok(())
    }
}

/// A lead for customer `i`, captured 20 days before the account opens: qualified and
/// converted into the customer's account (one in three), disqualified (one in three; every
/// ninth as spam), or qualified and still open.
fn lead_story(i: u64) -> anyhow::Result<Vec<DomainEvent>> {
    let start = i64::try_from(i % 700)?;
    let minutes = i64::try_from(i % 600)?;
    let day = |d: i64| gen::t0() + Days::days(d) + Days::minutes(minutes);
    let id = LeadId::new(format!("lead{i}"))?;
    let region = ["EMEA", "AMER", "APAC"][usize::try_from(i % 3)?];
    let mut lead = Lead::default();
    let mut events = Vec::new();
    let mut run = |cmd: crm_domain::aggregates::LeadCommand| -> anyhow::Result<()> {
        for e in lead.execute(&cmd)? {
            events.push(DomainEvent::from(e));
        }
        Ok(())
    };
    run(CaptureLead {
        lead_id: id.clone(),
        source: gen::l(["web", "event", "referral", "partner"][usize::try_from(i % 4)?]),
        channel: [Channel::Email, Channel::Phone, Channel::Chat][usize::try_from(i % 3)?],
        campaign: None,
        product: Some(ProductId::new(format!("p{}", i % 7))?),
        industry: None,
        region: Some(gen::l(region)),
        referred_by: None,
        personal: PersonalData::default(),
        is_test: false,
        occurred_at: day(start - 20),
    }
    .into())?;
    let qualify = QualifyLead {
        lead_id: id.clone(),
        budget: true,
        authority: i.is_multiple_of(2),
        need: true,
        timeline: false,
        score: None,
        occurred_at: day(start - 10),
    };
    match i % 3 {
        0 => {
            run(qualify.into())?;
            run(ConvertLead {
                lead_id: id,
                account_id: AccountId::new(format!("acc{i}"))?,
                contact_id: ContactId::new(format!("con{i}"))?,
                opportunity_id: Some(OpportunityId::new(format!("opp{i}-0"))?),
                occurred_at: day(start),
            }
            .into())?;
        }
        1 => run(DisqualifyLead {
            lead_id: id,
            reason: if i % 9 == 1 {
                DisqualificationReason::Spam
            } else {
                DisqualificationReason::NoFit
            },
            occurred_at: day(start - 10),
        }
        .into())?,
        _ => run(qualify.into())?,
    }
    Ok(events)
}

/// Writes customers into `store` until it holds at least `target` events; returns the head.
async fn generate(store: &SledStore, target: u64) -> anyhow::Result<u64> {
    let mut serial = 0u64;
    let mut customer = 0u64;
    let mut pending: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = Vec::new();
    let mut last_report = Instant::now();
    while serial < target {
        let mut parts = Vec::new();
        let mut n = 0usize;
        while n < BATCH_EVENTS && serial < target {
            let mut streams = vec![lead_story(customer)?];
            streams.extend(story::story(customer));
            customer += 1;
            for events in streams.into_iter().filter(|e| !e.is_empty()) {
                let stream = StreamId::new(events[0].stream_id())?;
                let proposed = events
                    .iter()
                    .map(|e| {
                        serial += 1;
                        gen::proposed(e, serial)
                    })
                    .collect::<Vec<_>>();
                n += proposed.len();
                parts.push(StreamAppend {
                    stream,
                    expected: ExpectedVersion::NoStream,
                    events: proposed,
                });
            }
        }
        if pending.len() >= WRITERS {
            pending.remove(0).await??;
        }
        let store = store.clone();
        pending.push(tokio::spawn(async move {
            for result in store.append_batch(parts, RecordedAt::Now).await? {
                result?;
            }
            Ok(())
        }));
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("  written {serial} of {target} events");
            last_report = Instant::now();
        }
    }
    for p in pending {
        p.await??;
    }
    Ok(store.head().position.0)
}

/// Pages through the whole log with `read_all`: the plain replay measured as a child.
///
/// # Errors
/// The log cannot be opened or read.
pub async fn replay_log(log: &Path, cache_mib: Option<u64>) -> anyhow::Result<u64> {
    let options = SledOptions {
        cache_bytes: cache_mib.map(|m| m.saturating_mul(1024 * 1024)),
        ..Default::default()
    };
    let store =
        SledStore::open_with(log, options).with_context(|| format!("opening {}", log.display()))?;
    let mut next = Position::FIRST;
    let mut n = 0u64;
    loop {
        let page = store.read_all(next, READ_PAGE_MAX).await?;
        let Some(last) = page.last() else { break };
        n += u64::try_from(page.len())?;
        match last.position.next() {
            Some(p) => next = p,
            None => break,
        }
    }
    store.close().await;
    Ok(n)
}

/// The peak resident set size so far of process `pid`, KiB (`VmHWM`), if it can be read.
fn high_water_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One child process's run.
struct Run {
    elapsed: Duration,
    peak_kib: u64,
    stdout: String,
    /// Why it did not finish well: stopped at the memory cap, or failed.
    failure: Option<String>,
}

/// Runs `cmd` to its end: wall time, peak RSS and standard output. A child whose resident
/// set passes `cap_kib` is stopped (a shared machine is not left to run out of memory).
///
/// # Errors
/// The child cannot be started or waited for.
fn measure(mut cmd: Command, cap_kib: u64) -> anyhow::Result<Run> {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    let mut stdout = child.stdout.take().context("child stdout")?;
    let mut stderr = child.stderr.take().context("child stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).map(|_| s)
    });
    let mut peak_kib = 0u64;
    let mut failure = None;
    let status = loop {
        if let Some(kib) = high_water_kib(pid) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if peak_kib > cap_kib {
            child.kill()?;
            failure = Some(format!(
                "stopped: passed {} MiB of resident memory",
                cap_kib / 1024
            ));
            break child.wait()?;
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    let elapsed = start.elapsed();
    let stdout = out
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))??;
    let stderr = err
        .join()
        .map_err(|_| anyhow::anyhow!("stderr reader panicked"))??;
    if failure.is_none() && !status.success() {
        failure = Some(format!("failed ({status}): {}", stderr.trim()));
    }
    Ok(Run {
        elapsed,
        peak_kib,
        stdout,
        failure,
    })
}

fn mib(kib: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let k = kib as f64;
    k / 1024.0
}

/// Runs `make()` `rounds` times and keeps the run with the median time (a failed run, as
/// soon as there is one).
///
/// # Errors
/// A child cannot be started.
fn median_of(
    rounds: usize,
    cap_kib: u64,
    mut make: impl FnMut() -> Command,
) -> anyhow::Result<Run> {
    let mut runs = Vec::new();
    for _ in 0..rounds.max(1) {
        let run = measure(make(), cap_kib)?;
        if run.failure.is_some() {
            return Ok(run);
        }
        runs.push(run);
    }
    runs.sort_by_key(|r| r.elapsed);
    let mid = runs.len() / 2;
    Ok(runs.swap_remove(mid))
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// What the `--json` output of `crm metric` says: events kept and the figures or status.
fn metric_outcome(json: &str) -> (Option<u64>, String) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return (None, "unreadable output".into());
    };
    let kept = v
        .pointer("/log/events_kept")
        .and_then(serde_json::Value::as_u64);
    let status = v
        .get("status")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("?");
    let figures = v
        .get("figures")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    let first = v
        .pointer("/figures/0/display")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    (kept, format!("{status}, {figures} figures (first {first})"))
}

/// Writes (or reuses) the log and measures replay, metric questions and catch-up.
///
/// # Errors
/// The log cannot be written, or a child process fails.
pub async fn metric_memory(options: &MetricMemoryOptions) -> anyhow::Result<MetricMemoryReport> {
    let log = options.dir.join("log");
    std::fs::create_dir_all(&options.dir)?;
    let store = SledStore::open(&log).with_context(|| format!("opening {}", log.display()))?;
    let mut load_seconds = None;
    let head = store.head().position.0;
    if head > 0 && head < options.events {
        store.close().await;
        bail!(
            "{} holds {head} events, fewer than {}: remove it to write a new log",
            log.display(),
            options.events
        );
    }
    if head == 0 {
        let t = Instant::now();
        eprintln!("writing {} events into {}", options.events, log.display());
        generate(&store, options.events).await?;
        load_seconds = Some(t.elapsed().as_secs_f64());
    }
    let events = store.head().position.0;
    store.close().await;
    let mut report = MetricMemoryReport {
        events,
        load_seconds,
        log_mib: mib(dir_size(&log) / 1024),
        period: options.period.clone(),
        rows: Vec::new(),
    };
    let me = std::env::current_exe()?;
    let cap_kib = options.rss_cap_mib.saturating_mul(1024);
    let run = median_of(options.rounds, cap_kib, || {
        let mut c = Command::new(&options.crm);
        c.arg("--data-dir")
            .arg(&options.dir)
            .args(["events", "--limit", "1"]);
        c
    })?;
    report.rows.push(Measured {
        what: "open".into(),
        metric: "(crm events --limit 1)".into(),
        seconds: run.elapsed.as_secs_f64(),
        peak_rss_mib: mib(run.peak_kib),
        events_kept: None,
        outcome: run
            .failure
            .unwrap_or_else(|| "the log opened, one event read".into()),
    });
    for cache_mib in [None, Some(REPLAY_CACHE_MIB)] {
        let run = median_of(options.rounds, cap_kib, || {
            let mut c = Command::new(&me);
            c.arg("replay-log").arg(&log);
            if let Some(m) = cache_mib {
                c.arg("--cache-mib").arg(m.to_string());
            }
            c
        })?;
        report.rows.push(Measured {
            what: "replay".into(),
            metric: cache_mib.map_or_else(
                || "(store's default page cache)".to_owned(),
                |m| format!("({m} MiB page cache)"),
            ),
            seconds: run.elapsed.as_secs_f64(),
            peak_rss_mib: mib(run.peak_kib),
            events_kept: None,
            outcome: run
                .failure
                .unwrap_or_else(|| format!("{} events read", run.stdout.trim())),
        });
    }
    eprint!("{report}");
    for (kind, metric) in &options.metrics {
        let (id, version) = match metric.split_once('@') {
            Some((id, v)) => (id, Some(v)),
            None => (metric.as_str(), None),
        };
        let run = median_of(options.rounds, cap_kib, || {
            let mut c = Command::new(&options.crm);
            c.arg("--data-dir").arg(&options.dir).arg("metric").arg(id);
            if let Some(v) = version {
                c.arg("--version").arg(v);
            }
            c.arg("--period").arg(&options.period).arg("--json");
            c
        })?;
        let (events_kept, outcome) = match run.failure {
            Some(f) => (None, f),
            None => metric_outcome(&run.stdout),
        };
        report.rows.push(Measured {
            what: kind.clone(),
            metric: metric.clone(),
            seconds: run.elapsed.as_secs_f64(),
            peak_rss_mib: mib(run.peak_kib),
            events_kept,
            outcome,
        });
        if let Some(r) = report.rows.last() {
            eprintln!(
                "  {:<11} {:<34} {:>9.2} s {:>10.1} MiB",
                r.what, r.metric, r.seconds, r.peak_rss_mib
            );
        }
    }
    if options.catch_up {
        let snapshots = options.dir.join("projections");
        let run = median_of(options.rounds, cap_kib, || {
            let _ = std::fs::remove_dir_all(&snapshots);
            let mut c = Command::new(&options.crm);
            c.arg("--data-dir")
                .arg(&options.dir)
                .arg("project")
                .arg("catch-up");
            c
        })?;
        report.rows.push(Measured {
            what: "catch-up".into(),
            metric: "pipeline, churn, lifetime-value, sla".into(),
            seconds: run.elapsed.as_secs_f64(),
            peak_rss_mib: mib(run.peak_kib),
            events_kept: None,
            outcome: run.failure.unwrap_or_else(|| {
                format!("snapshots {:.0} MiB", mib(dir_size(&snapshots) / 1024))
            }),
        });
        let _ = std::fs::remove_dir_all(&snapshots);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lead story is valid (made through the aggregate) and each customer has one.
    #[test]
    fn lead_stories_are_valid() {
        for i in 0..9 {
            let events = lead_story(i).unwrap();
            let expected = if i % 3 == 0 { 3 } else { 2 };
            assert_eq!(
                events.len(),
                expected,
                "captured, then qualified or disqualified"
            );
            assert_eq!(events[0].stream_id(), format!("lead-lead{i}"));
        }
    }

    #[test]
    fn reads_the_high_water_mark_of_this_process() {
        let kib = high_water_kib(std::process::id()).unwrap();
        assert!(kib > 0);
    }

    #[test]
    fn reads_a_metric_outcome() {
        let json = r#"{"log":{"events_kept":12},"status":"ok","figures":[{"display":"50.00%"}]}"#;
        let (kept, outcome) = metric_outcome(json);
        assert_eq!(kept, Some(12));
        assert_eq!(outcome, "ok, 1 figures (first 50.00%)");
    }
}
