//! JetStream backend append throughput against raw JetStream publishes with
//! acks from the same client, in one run on one server.
//!
//! `cargo bench -p crm-eventstore --bench jetstream` starts its own
//! `nats-server` (from `NATS_SERVER_BIN`, else `target/nats-server/bin/`, where
//! the JetStream tests install it) with `sync_interval: always` on a free
//! loopback port and a store under `target/`, and prints one line per
//! scenario. `CRM_BENCH_QUICK=1` makes a short smoke run. Without a server
//! binary it says how to get one and exits.
//!
//! Scenarios (~300-byte events, 16 concurrent writers, each to its own streams):
//! - `raw_publish_w16`: `jetstream.publish(...)` then await the ack, per message;
//! - `store_append_w16_b1`: `JetStreamStore::append` of one event;
//! - `store_append_w16_b10` and `_b100`: appends of 10 and 100 events.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::DateTime;
use crm_bench::stats::quantile_ms;
use crm_eventstore::{
    EventId, EventStore, ExpectedVersion, JetStreamConfig, JetStreamStore, ProposedEvent, StreamId,
    StreamVersion,
};
use uuid::Uuid;

const WRITERS: usize = 16;
const PAYLOAD_BYTES: usize = 300;

fn event(n: u64) -> ProposedEvent {
    ProposedEvent {
        event_id: EventId(Uuid::now_v7()),
        event_type: "CaseOpened".into(),
        schema_version: 1,
        occurred_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        causation_id: None,
        correlation_id: None,
        actor: "bench".into(),
        metadata: Vec::new(),
        payload: format!("{n:0>PAYLOAD_BYTES$}").into_bytes(),
    }
}

struct Outcome {
    name: String,
    events: usize,
    seconds: f64,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
    fn percentile(&mut self, p: f64) -> f64 {
        self.latencies.sort_unstable();
        quantile_ms(&self.latencies, p)
    }
}

fn server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/nats-server/bin/nats-server");
    p.is_file().then_some(p)
}

async fn raw_publish(url: &str, per_writer: usize) -> Outcome {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "RAW".into(),
        subjects: vec!["raw.*".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let js = js.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_writer);
                for i in 0..per_writer {
                    let t = Instant::now();
                    let payload = vec![b'x'; PAYLOAD_BYTES + 100];
                    js.publish(format!("raw.w{w}-{}", i % 60), payload.into())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Outcome {
        name: "raw_publish_w16".into(),
        events: WRITERS * per_writer,
        seconds: start.elapsed().as_secs_f64(),
        latencies,
    }
}

async fn store_appends(url: &str, batch: usize, appends_per_writer: usize) -> Outcome {
    let mut config = JetStreamConfig::new(url);
    config.stream_name = format!("BENCH_B{batch}");
    config.subject_prefix = format!("bench.b{batch}");
    let store = JetStreamStore::open(config).await.unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut versions = vec![0u64; 60];
                let mut lat = Vec::with_capacity(appends_per_writer);
                for i in 0..appends_per_writer {
                    let k = i % versions.len();
                    let s = StreamId::new(format!("case-w{w}-{k}")).unwrap();
                    let events = (0..batch).map(|j| event((i * batch + j) as u64)).collect();
                    let t = Instant::now();
                    store
                        .append(
                            &s,
                            ExpectedVersion::Exact(StreamVersion(versions[k])),
                            events,
                        )
                        .await
                        .unwrap();
                    lat.push(t.elapsed());
                    versions[k] += batch as u64;
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Outcome {
        name: format!("store_append_w16_b{batch}"),
        events: WRITERS * appends_per_writer * batch,
        seconds: start.elapsed().as_secs_f64(),
        latencies,
    }
}

fn main() {
    let Some(bin) = server_binary() else {
        eprintln!("no nats-server: set NATS_SERVER_BIN, or run `cargo test -p crm-tests --test conformance_jetstream` once to install it into target/nats-server/");
        return;
    };
    let quick = std::env::var("CRM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let scale = if quick { 1 } else { 10 };
    let dir =
        tempfile::tempdir_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n",
            dir.path().join("js").display()
        ),
    )
    .unwrap();
    let mut server = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t0 = Instant::now();
        while async_nats::connect(url.as_str()).await.is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "nats-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut outcomes = vec![raw_publish(&url, 50 * scale).await];
        outcomes.push(store_appends(&url, 1, 50 * scale).await);
        outcomes.push(store_appends(&url, 10, 10 * scale).await);
        outcomes.push(store_appends(&url, 100, scale).await);
        let raw = outcomes[0].rate();
        println!(
            "{:<24} {:>8} {:>11} {:>8} {:>8} {:>7}",
            "scenario", "events", "events/s", "p50 ms", "p99 ms", "x raw"
        );
        for o in &mut outcomes {
            let (p50, p99) = (o.percentile(0.5), o.percentile(0.99));
            println!(
                "{:<24} {:>8} {:>11.0} {:>8.2} {:>8.2} {:>7.2}",
                o.name,
                o.events,
                o.rate(),
                p50,
                p99,
                o.rate() / raw
            );
        }
    });
    let _ = server.kill();
    let _ = server.wait();
}
