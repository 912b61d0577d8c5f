//! `crm verify`: checksums and the hash chain of every record, and anchors; exit code 1 on
//! the first bad record, a failed anchor, or a log that cannot be checked.
//!
//! With `--json` the report is printed whatever happens (the log is missing, locked or
//! damaged at open, a read fails half way, the store panics): `status` is `ok`, `damaged` or
//! `error`, with the positions checked, where the damage is, what was found and what to do.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::anyhow;
use clap::Args;
use crm_app::config::{Config, Flags, StoreLocation};
use crm_app::damage::{DamageLocation, LogDamage, OPS_GUIDE_SECTION, RESTORE_REMEDY};
use crm_app::inspect::{self, Anchor, AnchorCheck};
use crm_app::store;
use crm_eventstore::{verify_with_progress, EventStore, Head, Position, ReadError, VerifyReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use super::{exit, Globals};

/// Flags of `crm verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Machine-readable output: one JSON object on stdout, also when the log cannot be
    /// opened or read (`status`: ok, damaged or error).
    #[arg(long)]
    pub json: bool,
    /// Also check that the record at POSITION still has chain hash HASH (as printed by
    /// `crm stats` or beside a metric figure: "computed at log position P chain hash H"):
    /// with a clean chain, a match proves records 1..=POSITION unchanged since. Repeatable.
    #[arg(long = "anchor", value_name = "POSITION:HASH")]
    anchors: Vec<Anchor>,
}

fn progress_bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} verify [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// What the walk over the opened log found.
struct Walk {
    log: String,
    head: Head,
    /// The chain walk, or the read that stopped it.
    report: Result<VerifyReport, ReadError>,
    /// The anchors, when the walk finished.
    anchors: Result<Vec<AnchorCheck>, ReadError>,
}

/// Opens the log, walks its chain and checks the anchors; `checked` follows the walk (the
/// last position found intact), so that a walk that stops half way still tells how far it
/// got.
async fn walk(
    config: Config,
    anchors: Vec<Anchor>,
    checked: Arc<AtomicU64>,
) -> anyhow::Result<Walk> {
    // No key store: verifying reads hashes, never personal fields.
    let store = store::open_to_check(&config).await?;
    let head = store.head();
    let bar = progress_bar(head.position.0);
    let report = verify_with_progress(&store, Position::FIRST, None, |p| {
        checked.store(p.0, Ordering::Relaxed);
        bar.set_position(p.0);
    })
    .await;
    bar.finish_and_clear();
    let anchors = match &report {
        Ok(_) => inspect::check_anchors(&store, &anchors).await,
        Err(_) => Ok(Vec::new()),
    };
    let log = store.describe();
    store.close().await;
    Ok(Walk {
        log,
        head,
        report,
        anchors,
    })
}

/// The outcome of `crm verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    /// Every record is intact and every anchor holds.
    Ok,
    /// A record is damaged or missing, or an anchor does not hold.
    Damaged,
    /// The log could not be checked (missing, locked, unreadable); nothing is known about
    /// the positions not checked.
    Error,
}

/// Everything `crm verify` reports, in text or JSON.
struct Outcome {
    status: Status,
    /// The log checked (`sled:/path`, or the configured location when it did not open).
    log: Option<String>,
    head: Option<Head>,
    /// Records found intact, from position 1.
    checked: u64,
    last_good: Option<Head>,
    damage: Option<LogDamage>,
    /// Why the log could not be checked (status `error`), with its causes.
    error: Option<anyhow::Error>,
    anchors: Vec<AnchorCheck>,
}

impl Outcome {
    fn failed(
        log: Option<String>,
        checked: u64,
        head: Option<Head>,
        error: anyhow::Error,
    ) -> Outcome {
        let damage = error.chain().find_map(LogDamage::of_error);
        Outcome {
            status: if damage.is_some() {
                Status::Damaged
            } else {
                Status::Error
            },
            log,
            head,
            checked,
            last_good: None,
            damage,
            error: Some(error),
            anchors: Vec::new(),
        }
    }

    fn of_walk(walk: Walk, checked: u64) -> Outcome {
        let log = Some(walk.log);
        let head = Some(walk.head);
        let report = match walk.report {
            Ok(report) => report,
            Err(e) => {
                let error = anyhow!(e).context(format!(
                    "verify read the log intact up to position {checked}, then a read failed"
                ));
                return Outcome::failed(log, checked, head, error);
            }
        };
        let anchors = match walk.anchors {
            Ok(anchors) => anchors,
            Err(e) => {
                let error = anyhow!(e).context("checking the anchors");
                let mut outcome = Outcome::failed(log, report.checked, head, error);
                outcome.last_good = Some(report.last_good);
                return outcome;
            }
        };
        let damage = match &report.first_bad {
            Some((position, reason)) => Some(LogDamage {
                location: DamageLocation::At {
                    position: position.0,
                },
                reason: reason.clone(),
            }),
            None => anchors
                .iter()
                .find(|a| !a.ok)
                .map(|a| anchor_damage(a, walk.head)),
        };
        Outcome {
            status: if damage.is_some() {
                Status::Damaged
            } else {
                Status::Ok
            },
            log,
            head,
            checked: report.checked,
            last_good: Some(report.last_good),
            damage,
            error: None,
            anchors,
        }
    }

    /// The positions from the first one not found intact to the head, when some were not.
    fn unchecked(&self) -> Option<(u64, u64)> {
        let head = self.head?.position.0;
        (self.status != Status::Ok && self.checked < head).then_some((self.checked + 1, head))
    }

    fn reason(&self) -> Option<String> {
        match (&self.damage, &self.error) {
            (Some(damage), _) => Some(damage.reason.clone()),
            (None, Some(error)) => Some(format!("{error:#}")),
            (None, None) => None,
        }
    }

    fn remedy(&self) -> Option<String> {
        if let Some(damage) = &self.damage {
            return Some(damage.remedy());
        }
        self.error.as_ref().map(|error| {
            super::remedy(error).unwrap_or_else(|| {
                "fix what the reason names and run `crm verify` again".to_owned()
            })
        })
    }

    fn json(&self) -> serde_json::Value {
        let first_bad = self
            .damage
            .as_ref()
            .and_then(|d| d.location.first_bad_position());
        json!({
            "status": self.status,
            "ok": self.status == Status::Ok,
            "log": self.log,
            "head_position": self.head.map(|h| h.position.0),
            "checked": self.checked,
            "checked_positions": (self.checked > 0).then(|| json!({"first": 1, "last": self.checked})),
            "unchecked_positions": self.unchecked().map(|(first, last)| json!({"first": first, "last": last})),
            "last_good_position": self.last_good.map(|h| h.position.0),
            "last_good_hash": self.last_good.filter(|h| h.position.0 > 0).map(|h| h.hash.to_hex()),
            "first_bad_position": first_bad,
            "first_bad_reason": first_bad.and(self.damage.as_ref().map(|d| d.reason.clone())),
            "damage": self.damage.as_ref().map(|d| d.location),
            "location": self.damage.as_ref().map(|d| d.location.to_string()),
            "reason": self.reason(),
            "remedy": self.remedy(),
            "ops_guide": (self.status == Status::Damaged).then_some(OPS_GUIDE_SECTION),
            "anchors": self.anchors,
        })
    }
}

/// An anchor that does not hold, as damage: a record up to its position is not the one
/// anchored, or the log ends before it.
fn anchor_damage(anchor: &AnchorCheck, head: Head) -> LogDamage {
    let location = match anchor.found_hash {
        Some(_) => DamageLocation::Within {
            first: 1,
            last: anchor.position,
        },
        None => DamageLocation::Within {
            first: head.position.0 + 1,
            last: anchor.position,
        },
    };
    LogDamage {
        location,
        reason: anchor.to_string(),
    }
}

/// Checks the log `globals` name; never fails: what went wrong is in the outcome. The walk
/// runs in a task of its own, so that a panic below (a storage library meeting damaged
/// files) is reported like any other failure.
async fn check(globals: &Globals, args: &VerifyArgs) -> Outcome {
    let config = match globals.config(Flags::default()) {
        Ok(config) => config,
        Err(e) => return Outcome::failed(None, 0, None, e),
    };
    let log = Some(match config.store_location() {
        StoreLocation::Sled(dir) => format!("sled:{}", dir.display()),
        StoreLocation::Nats(urls) => urls,
    });
    let checked = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(walk(config, args.anchors.clone(), Arc::clone(&checked)));
    let walked = task.await;
    let checked = checked.load(Ordering::Relaxed);
    match walked {
        Ok(Ok(walk)) => Outcome::of_walk(walk, checked),
        Ok(Err(e)) => Outcome::failed(log, checked, None, e),
        Err(joined) => {
            let what = if joined.is_panic() {
                let panic = joined.into_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                format!("reading the log panicked ({message}) after {checked} intact records; the log's files are probably damaged: {RESTORE_REMEDY}; and report the panic as a bug")
            } else {
                format!("the verification task was cancelled after {checked} intact records")
            };
            Outcome::failed(log, checked, None, anyhow!(what))
        }
    }
}

/// Whether the command line `args` (program name first) asks for `crm verify --json`, so
/// that one that does not parse still gets its report.
#[must_use]
pub fn asks_for_json_report(args: &[String]) -> bool {
    args.iter().skip(1).any(|a| a == "verify") && args.iter().any(|a| a == "--json")
}

/// Prints the report of a `crm verify --json` that could not run at all (a command line
/// that does not parse, no runtime): status `error` and `reason`.
pub fn print_failure_json(reason: &str) {
    let outcome = Outcome::failed(None, 0, None, anyhow!(reason.to_owned()));
    // Nothing else can be done when stdout is closed: the exit code still says it failed.
    let _ = writeln!(std::io::stdout().lock(), "{}", outcome.json());
}

/// Runs `crm verify`.
///
/// # Errors
/// Without `--json`: no log, or a log that cannot be read at all (a bad record is reported,
/// exit code 1). With `--json` only an unwritable stdout: every other failure is in the
/// report.
pub async fn run(globals: &Globals, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let outcome = check(globals, &args).await;
    let code = exit(outcome.status == Status::Ok);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", outcome.json())?;
        return Ok(code);
    }
    if let Some(error) = outcome.error {
        // Shown by `main` with its remedy, like every verb's error.
        return Err(error);
    }
    let last_good_hash = outcome
        .last_good
        .map_or_else(|| "none".to_owned(), |h| h.hash.to_hex());
    match (&outcome.damage, outcome.last_good) {
        (Some(damage), _) if damage.location.first_bad_position().is_some() => writeln!(
            stdout,
            "verify FAILED {}: {}\n{} records before it are intact (last good hash {last_good_hash}); {}",
            damage.location,
            damage.reason,
            outcome.checked,
            damage.remedy()
        )?,
        (Some(damage), Some(last_good)) => writeln!(
            stdout,
            "verify FAILED: the hash chain is intact ({} records, head position {} hash {}) but an anchor does not hold; {}",
            outcome.checked,
            last_good.position,
            last_good.hash,
            damage.remedy()
        )?,
        (None, Some(last_good)) => writeln!(
            stdout,
            "verify ok: {} records, head position {} hash {}",
            outcome.checked, last_good.position, last_good.hash
        )?,
        (_, None) => {}
    }
    for anchor in &outcome.anchors {
        writeln!(stdout, "{anchor}")?;
    }
    Ok(code)
}
