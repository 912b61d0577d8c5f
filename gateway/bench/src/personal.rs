//! `crm-bench personal`: what sealing personal data costs. Two workloads, each appended to two
//! scratch sled logs in the same run, one opened with the personal-data sealer (data keys
//! wrapped by a master key, one key per subject) and one without, in alternating order over
//! several rounds:
//!
//! - **demo**: the bundled data sets as `crm demo` imports them (62,617 events, 41 of them
//!   with personal data: the Maven agents);
//! - **personal**: `contacts` new contacts, each a subject of its own with name, email and
//!   phone (every event sealed, every subject a new key made durable before its event).
//!
//! Append throughput is events per second of the import; replay throughput is events per
//! second of reading the whole log and showing every event as a reader allowed to see
//! personal data sees it (sealed fields opened) and decoding it as the domain does. The
//! report gives the median of the rounds and the ratios sealed / plain.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use crm_app::keys::MasterKey;
use crm_app::personal::{as_seen, sealer, Visibility};
use crm_domain::DomainEvent;
use crm_eventstore::{AnyStore, EventStore, Position, SledStore};
use crm_import::{OnError, Plan, RunOptions};
use serde::Serialize;

/// Events read per page while replaying.
const REPLAY_PAGE_EVENTS: usize = 1000;

/// Options of `crm-bench personal`.
#[derive(Debug, Clone)]
pub struct PersonalOptions {
    /// Rounds per workload (the median is reported).
    pub rounds: usize,
    /// Contacts of the personal workload.
    pub contacts: usize,
    /// Scratch directory (removed afterwards).
    pub scratch: PathBuf,
    /// The bundled data sets (`gateway/data`), for the demo workload.
    pub bundle: PathBuf,
}

/// One workload's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// Its name.
    pub name: &'static str,
    /// Events appended per round.
    pub events: u64,
    /// Events among them that carry personal data.
    pub personal_events: u64,
    /// Median append throughput without sealing, events/s.
    pub append_plain_per_s: f64,
    /// Median append throughput with sealing, events/s.
    pub append_sealed_per_s: f64,
    /// Median replay throughput without sealing, events/s.
    pub replay_plain_per_s: f64,
    /// Median replay throughput with sealing (fields opened), events/s.
    pub replay_sealed_per_s: f64,
}

impl Workload {
    /// Append throughput sealed / plain.
    #[must_use]
    pub fn append_ratio(&self) -> f64 {
        self.append_sealed_per_s / self.append_plain_per_s
    }

    /// Replay throughput sealed / plain.
    #[must_use]
    pub fn replay_ratio(&self) -> f64 {
        self.replay_sealed_per_s / self.replay_plain_per_s
    }
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct PersonalReport {
    /// Rounds per workload.
    pub rounds: usize,
    /// The workloads.
    pub workloads: Vec<Workload>,
}

impl fmt::Display for PersonalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "personal data sealed vs plain, median of {} rounds, same run, same disk",
            self.rounds
        )?;
        writeln!(
            f,
            "{:<9} {:>7} {:>8} {:>12} {:>12} {:>6} {:>12} {:>12} {:>6}",
            "workload",
            "events",
            "personal",
            "append plain",
            "append seal",
            "ratio",
            "replay plain",
            "replay seal",
            "ratio"
        )?;
        for w in &self.workloads {
            writeln!(
                f,
                "{:<9} {:>7} {:>8} {:>10.0}/s {:>10.0}/s {:>5.2}x {:>10.0}/s {:>10.0}/s {:>5.2}x",
                w.name,
                w.events,
                w.personal_events,
                w.append_plain_per_s,
                w.append_sealed_per_s,
                w.append_ratio(),
                w.replay_plain_per_s,
                w.replay_sealed_per_s,
                w.replay_ratio()
            )?;
        }
        Ok(())
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn per_second(events: u64, started: Instant) -> f64 {
    // Event counts of a benchmark fit an f64 exactly.
    #[allow(clippy::cast_precision_loss)]
    let events = events as f64;
    events / started.elapsed().as_secs_f64().max(1e-9)
}

/// Opens a fresh scratch log in `dir`, sealed or not.
fn open(dir: &Path, sealed: bool) -> anyhow::Result<AnyStore> {
    let store = AnyStore::from(SledStore::open(dir.join("log"))?);
    if !sealed {
        return Ok(store);
    }
    let sealer = sealer(&dir.join("keys"), Some(MasterKey::generate()?), true)?;
    Ok(store.with_sealer(sealer))
}

/// Appends `plans()` to a fresh log in `dir`; events appended, events/s, and the log.
async fn append(
    dir: &Path,
    sealed: bool,
    plans: &dyn Fn() -> anyhow::Result<Vec<Plan>>,
) -> anyhow::Result<(u64, f64, AnyStore)> {
    let store = open(dir, sealed)?;
    let plans = plans()?;
    let started = Instant::now();
    let mut appended = 0u64;
    for plan in plans {
        let options = RunOptions {
            on_error: OnError::Stop,
            progress: false,
            ..RunOptions::default()
        };
        appended += crm_import::run(&store, plan, options).await?.appended;
    }
    Ok((appended, per_second(appended, started), store))
}

/// Reads the whole log, shows every event to a reader of personal data and decodes it;
/// events with personal data, events/s.
async fn replay(store: &AnyStore) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let (mut read, mut personal) = (0u64, 0u64);
    let mut next = Position::FIRST;
    loop {
        let page = store.read_all(next, REPLAY_PAGE_EVENTS).await?;
        let Some(last) = page.last() else { break };
        next = Position(last.position.0 + 1);
        for event in &page {
            let shown = as_seen(store, event, Visibility::Reveal)?;
            let decoded =
                DomainEvent::from_payload(&shown.event_type, shown.schema_version, &shown.payload);
            if decoded.is_ok_and(|d| d.carries_personal_data()) {
                personal += 1;
            }
            read += 1;
        }
    }
    Ok((personal, per_second(read, started)))
}

/// The contacts of the personal workload, as one mapping-free plan per contact batch.
fn contacts_plan(count: usize) -> anyhow::Result<Vec<Plan>> {
    let mut lines = String::new();
    for i in 0..count {
        let event = serde_json::json!({
            "stream_id": format!("contact-bench-{i}"),
            "event_id": uuid::Uuid::from_u128(0xbe9c_0000_0000_0000_0000_0000_0000_0000 + i as u128),
            "event_type": "ContactAdded",
            "schema_version": 1,
            "occurred_at": "2026-01-01T00:00:00Z",
            "causation_id": null,
            "correlation_id": null,
            "actor": "bench",
            "payload": {
                "contact_id": format!("bench-{i}"), "account_id": "acme", "role": "user",
                "personal": {
                    "full_name": format!("Bench Person {i}"),
                    "email": format!("bench.{i}@example.org"),
                    "phone": format!("+1 555 {i:07}"),
                },
                "is_test": false, "occurred_at": "2026-01-01T00:00:00Z",
            },
        });
        lines.push_str(&event.to_string());
        lines.push('\n');
    }
    let file = std::env::temp_dir().join(format!(
        "crm-bench-contacts-{}-{count}.jsonl",
        std::process::id()
    ));
    std::fs::write(&file, lines)?;
    let plan = crm_import::jsonl::plan(&file);
    let _ = std::fs::remove_file(&file);
    Ok(vec![plan?])
}

async fn workload(
    name: &'static str,
    options: &PersonalOptions,
    plans: &dyn Fn() -> anyhow::Result<Vec<Plan>>,
) -> anyhow::Result<Workload> {
    let (mut append_plain, mut append_sealed) = (Vec::new(), Vec::new());
    let (mut replay_plain, mut replay_sealed) = (Vec::new(), Vec::new());
    let (mut events, mut personal_events) = (0, 0);
    for round in 0..options.rounds.max(1) {
        // Alternate which goes first, so neither always meets a warmer cache.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for sealed in order {
            let dir = options.scratch.join(format!(
                "{name}-{round}-{}",
                if sealed { "sealed" } else { "plain" }
            ));
            let (appended, append_rate, store) = append(&dir, sealed, plans).await?;
            let (personal, replay_rate) = replay(&store).await?;
            store.close().await;
            let _ = std::fs::remove_dir_all(&dir);
            events = appended;
            personal_events = personal;
            if sealed {
                append_sealed.push(append_rate);
                replay_sealed.push(replay_rate);
            } else {
                append_plain.push(append_rate);
                replay_plain.push(replay_rate);
            }
        }
    }
    Ok(Workload {
        name,
        events,
        personal_events,
        append_plain_per_s: median(append_plain),
        append_sealed_per_s: median(append_sealed),
        replay_plain_per_s: median(replay_plain),
        replay_sealed_per_s: median(replay_sealed),
    })
}

/// Runs both workloads.
///
/// # Errors
/// A scratch log cannot be written or the bundled data sets cannot be read.
pub async fn personal(options: &PersonalOptions) -> anyhow::Result<PersonalReport> {
    let bundle = options.bundle.clone();
    let demo = move || -> anyhow::Result<Vec<Plan>> {
        Ok(vec![
            crm_import::maven::plan(&bundle.join("maven-crm"))?,
            crm_import::telco::plan(&bundle.join("telco-churn/Telco-Customer-Churn.csv"))?,
            crm_import::helpdesk::plan(&bundle.join("helpdesk/helpdesk.csv"))?,
        ])
    };
    let contacts = options.contacts;
    let result = async {
        Ok::<_, anyhow::Error>(vec![
            workload("demo", options, &demo)
                .await
                .context("demo workload")?,
            workload("personal", options, &move || contacts_plan(contacts))
                .await
                .context("personal workload")?,
        ])
    }
    .await;
    let _ = std::fs::remove_dir_all(&options.scratch);
    Ok(PersonalReport {
        rounds: options.rounds.max(1),
        workloads: result?,
    })
}
