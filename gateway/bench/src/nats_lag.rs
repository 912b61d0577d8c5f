//! `crm-bench nats-lag`: publication lag from commit to a subscriber receiving the event,
//! beside a baseline measured in the same run on the same server.
//!
//! 1. **Baseline:** messages of the same size and headers published straight to a JetStream
//!    stream on a connection of their own at a steady rate, each publish waiting for its
//!    acknowledgement (durable) as an append waits for its fsync; latency = publish call →
//!    an ordered consumer of that stream receives the message.
//! 2. **Publisher:** single-event appends to a scratch log at the same steady rate, a
//!    [`Publisher`] publishing them; latency = the append returned (the event is durable) →
//!    an ordered consumer of the publisher's stream receives it.
//!
//! The two alternate in rounds (`--rounds`), so a change of the machine's load during the
//! run hits both alike.
//!
//! Both use their own streams (`CRM_BENCH_RAW_<id>`, `CRM_BENCH_<id>` on `crm.bench.<id>.>`),
//! deleted at the end, so a server that carries real events is not disturbed. The report gives
//! p50, p95, p99 and max and the ratio of each to the baseline.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::{ConnectOptions, HeaderMap};
use bytes::Bytes;
use chrono::Utc;
use crm_eventstore::{
    ChainHash, EventId, EventStore, ExpectedVersion, Position, ProposedEvent, RecordedEvent,
    StreamId, StreamVersion,
};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crm_publish::message::{self, CRM_POSITION};
use crm_publish::{
    PublishSettings, Publisher, PublisherOptions, CONNECT_TIMEOUT, DUPLICATE_WINDOW,
};

/// Most events per scenario.
pub const EVENTS_MAX: usize = 1_000_000;
/// Highest steady rate, events per second.
pub const RATE_MAX: u32 = 100_000;
/// Streams the appended events are spread over.
const STREAMS: usize = 64;
/// Most alternating rounds.
pub const ROUNDS_MAX: usize = 100;
/// How long the subscriber may take to receive the last event of a scenario.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Flags of `crm-bench nats-lag`.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsLagArgs {
    /// NATS server URL (default: `CRM_NATS_URL` or `[publish] nats_url`). Use a server with
    /// `jetstream { sync_interval: always }`, as in production.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// Events (and baseline messages) per scenario.
    #[arg(long, default_value_t = 2_000)]
    pub events: usize,
    /// Steady rate, events per second.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Alternating rounds of baseline and publisher (the events are split over them).
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LagBenchError {
    /// A flag is out of range or missing.
    #[error("{0}")]
    Usage(String),
    /// NATS, the store or the publisher failed.
    #[error("the benchmark failed: {0}")]
    Failed(String),
}

fn failed(e: impl fmt::Display) -> LagBenchError {
    LagBenchError::Failed(e.to_string())
}

/// One scenario's latencies.
#[derive(Debug, Clone, Serialize)]
pub struct LagScenario {
    /// What was measured.
    pub name: String,
    /// Messages received.
    pub messages: usize,
    /// The rate achieved, per second.
    pub per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest latency, ms.
    pub max_ms: f64,
}

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct LagReport {
    /// Target rate, per second.
    pub rate: u32,
    /// Alternating rounds.
    pub rounds: usize,
    /// Baseline first, then the publisher.
    pub scenarios: Vec<LagScenario>,
    /// Publisher p99 / baseline p99.
    pub p99_ratio: f64,
    /// Events the subscriber received before the append call had returned.
    pub received_before_append_returned: usize,
}

impl fmt::Display for LagReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "steady rate {} events/s, one event per append, {} alternating rounds",
            self.rate, self.rounds
        )?;
        writeln!(
            f,
            "{:<58} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "scenario", "msgs", "per s", "p50 ms", "p95 ms", "p99 ms", "max ms"
        )?;
        for s in &self.scenarios {
            writeln!(
                f,
                "{:<58} {:>7} {:>8.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                s.name, s.messages, s.per_second, s.p50_ms, s.p95_ms, s.p99_ms, s.max_ms
            )?;
        }
        if let [base, ours] = &self.scenarios[..] {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            writeln!(
                f,
                "publisher / baseline: p50 x{:.2}, p95 x{:.2}, p99 x{:.2}",
                ratio(ours.p50_ms, base.p50_ms),
                ratio(ours.p95_ms, base.p95_ms),
                ratio(ours.p99_ms, base.p99_ms)
            )?;
        }
        writeln!(
            f,
            "{} events reached the subscriber before their append call returned (counted as 0 ms)",
            self.received_before_append_returned
        )
    }
}

fn summarize(name: &str, mut lags: Vec<Duration>, elapsed: Duration) -> LagScenario {
    lags.sort_unstable();
    let pick = |q: f64| crate::stats::quantile_ms(&lags, q);
    #[allow(clippy::cast_precision_loss)]
    let per_second = lags.len() as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    LagScenario {
        name: name.to_owned(),
        messages: lags.len(),
        per_second,
        p50_ms: pick(0.50),
        p95_ms: pick(0.95),
        p99_ms: pick(0.99),
        max_ms: pick(1.0),
    }
}

/// Follows `stream` from its start and sends (`crm-position`, arrival instant) per message.
async fn receiver(
    js: &Context,
    stream: &str,
) -> Result<(mpsc::UnboundedReceiver<(u64, Instant)>, JoinHandle<()>), LagBenchError> {
    let consumer = js
        .get_stream(stream)
        .await
        .map_err(failed)?
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(failed)?;
    let mut messages = consumer.messages().await.map_err(failed)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(next) = messages.next().await {
            let Ok(msg) = next else { continue };
            let at = Instant::now();
            if let Some(position) = message::position_of(msg.headers.as_ref()) {
                if tx.send((position, at)).is_err() {
                    return;
                }
            }
        }
    });
    Ok((rx, task))
}

/// Waits until every position of `wanted` arrived; the first arrival of each counts.
async fn arrivals(
    rx: &mut mpsc::UnboundedReceiver<(u64, Instant)>,
    wanted: std::ops::RangeInclusive<u64>,
) -> Result<HashMap<u64, Instant>, LagBenchError> {
    let count = wanted.clone().count();
    let mut seen = HashMap::with_capacity(count);
    let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    while seen.len() < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((position, at))) => {
                if wanted.contains(&position) {
                    seen.entry(position).or_insert(at);
                }
            }
            Ok(None) => return Err(failed("the subscriber stopped")),
            Err(_) => {
                return Err(failed(format!(
                    "the subscriber received {} of {count} messages within {RECEIVE_TIMEOUT:?}",
                    seen.len()
                )))
            }
        }
    }
    Ok(seen)
}

/// Latency of each position from its start instant to its arrival; arrivals before the
/// start count as zero and are counted in `early`.
fn lags(
    started: &HashMap<u64, Instant>,
    arrived: &HashMap<u64, Instant>,
    early: &mut usize,
) -> Vec<Duration> {
    started
        .iter()
        .filter_map(|(position, at)| {
            let arrival = arrived.get(position)?;
            Some(arrival.checked_duration_since(*at).unwrap_or_else(|| {
                *early += 1;
                Duration::ZERO
            }))
        })
        .collect()
}

async fn connect(url: &str) -> Result<async_nats::Client, LagBenchError> {
    ConnectOptions::new()
        .name("crm-bench nats-lag")
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(url)
        .await
        .map_err(|e| failed(format!("cannot connect to NATS at {url}: {e}")))
}

fn bench_event(i: usize) -> ProposedEvent {
    let payload = serde_json::json!({
        "account_id": format!("bench{}", i % STREAMS), "name": "Bench Account",
        "segment": "smb", "region": "emea", "industry": "software", "owner": "agent-1",
        "is_internal": false, "is_test": true, "note": "x".repeat(120), "sequence": i,
    });
    ProposedEvent {
        event_id: EventId(uuid::Uuid::now_v7()),
        event_type: "AccountOpened".into(),
        schema_version: 1,
        occurred_at: Utc::now(),
        causation_id: None,
        correlation_id: None,
        actor: "bench".into(),
        metadata: Vec::new(),
        payload: payload.to_string().into_bytes(),
    }
}

/// A recorded event like the ones the publisher's scenario appends, for the baseline's
/// headers and body.
fn sample_event() -> Result<RecordedEvent, LagBenchError> {
    let proposed = bench_event(0);
    Ok(RecordedEvent {
        position: Position(1),
        stream_id: StreamId::new("account-bench0").map_err(failed)?,
        stream_version: StreamVersion(1),
        event_id: proposed.event_id,
        event_type: proposed.event_type,
        schema_version: proposed.schema_version,
        occurred_at: proposed.occurred_at,
        recorded_at: Utc::now(),
        causation_id: None,
        correlation_id: None,
        actor: proposed.actor,
        metadata: proposed.metadata,
        payload: proposed.payload,
        checksum: 0,
        prev_hash: ChainHash::GENESIS,
        hash: ChainHash::GENESIS,
    })
}

/// Runs both scenarios against the NATS server at `url`, in alternating rounds (so a change
/// of the machine's load hits both alike); the publisher's scenario appends to `store` (a
/// scratch log) and keeps its checkpoint under `scratch`.
///
/// # Errors
/// [`LagBenchError`] for out-of-range flags or any failure of NATS, the store or the
/// publisher.
pub async fn nats_lag<S: EventStore>(
    store: S,
    scratch: &Path,
    url: &str,
    args: &NatsLagArgs,
) -> Result<LagReport, LagBenchError> {
    if args.events == 0 || args.events > EVENTS_MAX {
        return Err(LagBenchError::Usage(format!(
            "--events must be 1..={EVENTS_MAX}"
        )));
    }
    if args.rate == 0 || args.rate > RATE_MAX {
        return Err(LagBenchError::Usage(format!(
            "--rate must be 1..={RATE_MAX}"
        )));
    }
    if args.rounds == 0 || args.rounds > ROUNDS_MAX || args.rounds > args.events {
        return Err(LagBenchError::Usage(format!(
            "--rounds must be 1..={ROUNDS_MAX} and at most --events"
        )));
    }
    let js = jetstream::new(connect(url).await?);
    let id = format!(
        "{}_{}",
        std::process::id(),
        Utc::now().timestamp_subsec_micros()
    );
    let names = BenchStreams {
        raw: format!("CRM_BENCH_RAW_{id}"),
        crm: format!("CRM_BENCH_{id}"),
        prefix: format!("crm.bench.{id}"),
    };
    let result = scenarios(&store, scratch, url, &js, &names, args).await;
    for name in [&names.raw, &names.crm] {
        if let Err(e) = js.delete_stream(name).await {
            tracing::warn!(stream = %name, error = %e, "could not delete a benchmark stream");
        }
    }
    result
}

/// The scratch streams of one run.
struct BenchStreams {
    raw: String,
    crm: String,
    prefix: String,
}

async fn scenarios<S: EventStore>(
    store: &S,
    scratch: &Path,
    url: &str,
    js: &Context,
    names: &BenchStreams,
    args: &NatsLagArgs,
) -> Result<LagReport, LagBenchError> {
    let interval = Duration::from_secs(1) / args.rate;

    // The publisher, on its own connection, and a subscriber of its stream.
    let settings = PublishSettings {
        nats_url: Some(url.to_owned()),
        stream: names.crm.clone(),
        subject_prefix: format!("{}.events", names.prefix),
        ..PublishSettings::default()
    };
    let publisher = Publisher::start(
        store.clone(),
        PublisherOptions::new(&settings, url, scratch),
    )
    .map_err(failed)?;
    let mut state = publisher.state();
    tokio::time::timeout(RECEIVE_TIMEOUT, state.wait_for(|s| s.connected))
        .await
        .map_err(|_| failed("the publisher did not reach JetStream"))?
        .map_err(failed)?;
    let (mut crm_rx, crm_task) = receiver(js, &names.crm).await?;

    // The baseline stream, a subscriber, and a connection of its own to publish on.
    js.create_stream(StreamConfig {
        name: names.raw.clone(),
        subjects: vec![format!("{}.raw.>", names.prefix)],
        storage: StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..StreamConfig::default()
    })
    .await
    .map_err(failed)?;
    let (mut raw_rx, raw_task) = receiver(js, &names.raw).await?;
    let raw = jetstream::new(connect(url).await?);
    let sample = sample_event()?;
    let body = message::body(&sample).map_err(failed)?;

    let mut base_lags = Vec::with_capacity(args.events);
    let mut crm_lags = Vec::with_capacity(args.events);
    let (mut base_time, mut crm_time) = (Duration::ZERO, Duration::ZERO);
    let (mut early, mut early_base) = (0, 0);
    let (mut raw_next, mut appended) = (1u64, 0usize);
    for round in 0..args.rounds {
        let n = args.events / args.rounds + usize::from(round < args.events % args.rounds);
        // Even rounds start with the baseline, odd rounds with the publisher.
        for baseline in [round % 2 == 0, round % 2 == 1] {
            let mut ticks = tokio::time::interval(interval);
            let mut started = HashMap::with_capacity(n);
            let begun = Instant::now();
            if baseline {
                // JetStream publish, then its acknowledgement (the message is durable), as an
                // append waits for its fsync: one write in flight in both scenarios.
                let first = raw_next;
                for _ in 0..n {
                    ticks.tick().await;
                    let position = raw_next;
                    raw_next += 1;
                    let mut headers: HeaderMap = message::headers("crm://bench/log", &sample);
                    headers.insert(CRM_POSITION, position.to_string());
                    headers.insert(message::NATS_MSG_ID, format!("bench-{position}"));
                    headers.insert(
                        message::NATS_EXPECTED_LAST_SEQUENCE,
                        (position - 1).to_string(),
                    );
                    let subject = format!(
                        "{}.raw.account.account-bench{}",
                        names.prefix,
                        position % 64
                    );
                    let at = Instant::now();
                    raw.publish_with_headers(subject, headers, Bytes::clone(&body))
                        .await
                        .map_err(failed)?
                        .await
                        .map_err(failed)?;
                    started.insert(position, at);
                }
                let arrived = arrivals(&mut raw_rx, first..=raw_next - 1).await?;
                base_time += begun.elapsed();
                base_lags.extend(lags(&started, &arrived, &mut early_base));
            } else {
                // Single-event appends; the lag starts when the append returned.
                let first = u64::try_from(appended).map_err(failed)? + 1;
                for _ in 0..n {
                    ticks.tick().await;
                    let stream = StreamId::new(format!("account-bench{}", appended % STREAMS))
                        .map_err(failed)?;
                    let result = store
                        .append(&stream, ExpectedVersion::Any, vec![bench_event(appended)])
                        .await
                        .map_err(failed)?;
                    started.insert(result.first_position.0, Instant::now());
                    appended += 1;
                }
                let last = u64::try_from(appended).map_err(failed)?;
                let arrived = arrivals(&mut crm_rx, first..=last).await?;
                crm_time += begun.elapsed();
                crm_lags.extend(lags(&started, &arrived, &mut early));
            }
        }
    }
    crm_task.abort();
    raw_task.abort();
    publisher.stop().await;
    let base = summarize(
        "baseline: JetStream publish -> subscriber received",
        base_lags,
        base_time,
    );
    let ours = summarize(
        "publisher: append returned -> subscriber received",
        crm_lags,
        crm_time,
    );
    let p99_ratio = if base.p99_ms > 0.0 {
        ours.p99_ms / base.p99_ms
    } else {
        f64::NAN
    };
    Ok(LagReport {
        rate: args.rate,
        rounds: args.rounds,
        scenarios: vec![base, ours],
        p99_ratio,
        received_before_append_returned: early,
    })
}
