//! `crm import helpdesk FILE`: the Helpdesk process-mining log (`CaseID`, `ActivityID`,
//! `CompleteTimestamp`), one row per completed activity, rows of a case contiguous.
//!
//! The log has integer activity ids without names. The mapping chosen here (documented in the
//! README; consistent with the log's facts: every case ends with 6, most start with 1, 3 only
//! ever comes first):
//!
//! | id | read as | events |
//! |---|---|---|
//! | first row | ticket registered | `CaseOpened` at its timestamp (then the row's activity) |
//! | 3 | ticket inserted (always first) | nothing beyond `CaseOpened` |
//! | 1 | taken in charge | `CaseAssigned` (agent `helpdesk-agent`, team `helpdesk`: the log names nobody) |
//! | 9 | waiting | `CaseSlaPaused` (waiting on customer) |
//! | 2, 4, 5, 7 | rare handling steps | `CaseEscalated` one level up |
//! | 8 | resolved | `CaseResolved` (resumes a paused clock first) |
//! | 6 | closed | `CaseClosed`, code `resolved` after a resolution, else `invalid`; on a case already closed `CaseCloseRepeated` |
//!
//! Real-log oddities are absorbed, never rejected, and counted in the summary: a repeated
//! activity that changes nothing (take in charge twice, resolve twice, wait while waiting)
//! records nothing; a wait or a rare step after the resolution records nothing (no clock runs
//! then); a resolution after a close reopens the case first (`CaseReopened`). A close of a case
//! that is already closed is recorded as `CaseCloseRepeated` at its own time: the case stays
//! closed with its first close's code, and the log keeps the source's last close (the one
//! "closed on the day opened" is read at; 210 such rows, 10 of them on a later day than the
//! close they repeat). Timestamps have no zone and are read as UTC.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crm_domain::aggregates::case::{
    AssignCase, Case, CasePriority, CaseStatus, CloseCase, CloseCode, EscalateCase, OpenCase,
    PauseCaseSla, ReopenCase, RepeatCaseClose, ResolveCase, SlaPauseReason, ESCALATION_LEVEL_MAX,
};
use crm_domain::values::{AgentId, CaseId, Channel, Label, TeamId};
use crm_domain::{Aggregate, DomainEvent};

use super::source::{CsvSource, Row};
use super::{execute, stage, ImportError, Plan, Refused, RowError, SourceRow, Unit};

/// Importer name.
pub const NAME: &str = "helpdesk";

/// Agent and team every assignment names (the log has no resource column).
pub const AGENT: &str = "helpdesk-agent";
/// See [`AGENT`].
pub const TEAM: &str = "helpdesk";

struct Columns {
    case: usize,
    activity: usize,
    at: usize,
}

/// Reads `path` and plans the import: one unit per case.
///
/// # Errors
/// [`ImportError`] when the file is unreadable or lacks a column.
pub fn plan(path: &Path) -> Result<Plan, ImportError> {
    let file = CsvSource::read(path, b',')?;
    let c = Columns {
        case: file.column("CaseID")?,
        activity: file.column("ActivityID")?,
        at: file.column("CompleteTimestamp")?,
    };
    let mut plan = Plan {
        importer: NAME,
        files: vec![file.file.clone()],
        ..Plan::default()
    };
    let mut oddities: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let rows: Vec<Row<'_>> = file.rows().collect();
    let mut start = 0;
    while start < rows.len() {
        let key = rows[start].raw(c.case).trim();
        let mut end = start + 1;
        while end < rows.len() && rows[end].raw(c.case).trim() == key {
            end += 1;
        }
        let case_rows = &rows[start..end];
        let mut counts = BTreeMap::new();
        let unit = if seen.insert(key.to_owned()) {
            case(case_rows, &c, &mut counts)
        } else {
            Err(rows[start].error(
                c.case,
                format!("rows of case {key} are not contiguous; sort the file by CaseID, then timestamp"),
            ))
        };
        match unit {
            Ok(unit) => {
                for (k, v) in counts {
                    *oddities.entry(k).or_default() += v;
                }
                plan.units.push(Ok(unit));
            }
            Err(e) => plan.units.push(Err(e)),
        }
        start = end;
    }
    plan.notes.push("activity ids read as: 1 taken in charge, 9 waiting, 2/4/5/7 escalation, 8 resolved, 6 closed, 3 ticket inserted; timestamps read as UTC".into());
    for (what, count) in oddities {
        plan.notes
            .push(format!("real-log oddity absorbed: {what}: {count} rows"));
    }
    Ok(plan)
}

fn case(
    rows: &[Row<'_>],
    c: &Columns,
    oddities: &mut BTreeMap<&'static str, u64>,
) -> Result<Unit, RowError> {
    let mut state = Case::default();
    let mut staged = Vec::new();
    let mut previous = None;
    let mut level = 0u8;
    let agent = AgentId::new(AGENT).map_err(|e| rows[0].row_error(e.to_string()))?;
    let team = TeamId::new(TEAM).map_err(|e| rows[0].row_error(e.to_string()))?;
    for (n, row) in rows.iter().enumerate() {
        row.check_width()?;
        let key = row.req(c.case)?;
        let case_id = CaseId::new(key).map_err(|e| row.error(c.case, e.to_string()))?;
        let at = row.timestamp(c.at)?;
        if previous.is_some_and(|p| at < p) {
            return Err(row.error(
                c.at,
                format!("timestamp {at} is earlier than the case's previous row; sort the rows of case {key} by time"),
            ));
        }
        previous = Some(at);
        let activity: u8 = row
            .req(c.activity)?
            .parse()
            .ok()
            .filter(|a| (1..=9).contains(a))
            .ok_or_else(|| {
                row.error(
                    c.activity,
                    format!(
                        "unknown activity {:?}; the log's activity ids are 1..=9",
                        row.raw(c.activity)
                    ),
                )
            })?;
        let rule = |e: Refused| row.row_error(e.to_string());
        let mut events: Vec<DomainEvent> = Vec::new();
        if n == 0 {
            execute(
                &mut state,
                OpenCase {
                    case_id: case_id.clone(),
                    account_id: None,
                    contact_id: None,
                    case_type: Label::new("helpdesk ticket")
                        .map_err(|e| row.row_error(e.to_string()))?,
                    category: None,
                    priority: CasePriority::Normal,
                    channel: Channel::Web,
                    sla_policy: None,
                    is_complaint: false,
                    is_test: false,
                    occurred_at: at,
                }
                .into(),
                &mut events,
            )
            .map_err(rule)?;
        }
        let status = state.status();
        let mut absorb = |what: &'static str| *oddities.entry(what).or_default() += 1;
        match (activity, status) {
            (3, _) if n == 0 => {}
            (3, _) => absorb("ticket inserted again after the first row"),
            (1, Some(CaseStatus::Closed { .. })) => absorb("taken in charge after the close"),
            (1, _) => {
                let assign = AssignCase {
                    case_id: case_id.clone(),
                    agent: agent.clone(),
                    team: Some(team.clone()),
                    occurred_at: at,
                };
                if state.handle(&assign.clone().into()).is_err() {
                    absorb("taken in charge again (no change)");
                } else {
                    execute(&mut state, assign.into(), &mut events).map_err(rule)?;
                }
            }
            (8, Some(CaseStatus::Resolved { .. })) => absorb("resolved again while resolved"),
            (8, status) => {
                if matches!(status, Some(CaseStatus::Closed { .. })) {
                    absorb("resolved after the close (case reopened)");
                    execute(
                        &mut state,
                        ReopenCase {
                            case_id: case_id.clone(),
                            reason: Label::new("resolved again after the close")
                                .map_err(|e| row.row_error(e.to_string()))?,
                            occurred_at: at,
                        }
                        .into(),
                        &mut events,
                    )
                    .map_err(rule)?;
                }
                execute(
                    &mut state,
                    ResolveCase {
                        case_id: case_id.clone(),
                        agent: Some(agent.clone()),
                        resolution_code: Label::new("resolved")
                            .map_err(|e| row.row_error(e.to_string()))?,
                        first_contact: false,
                        occurred_at: at,
                    }
                    .into(),
                    &mut events,
                )
                .map_err(rule)?;
            }
            (9, Some(CaseStatus::Open)) if state.is_paused() => {
                absorb("waiting while already waiting")
            }
            (9, Some(CaseStatus::Open)) => execute(
                &mut state,
                PauseCaseSla {
                    case_id: case_id.clone(),
                    reason: SlaPauseReason::WaitingOnCustomer,
                    occurred_at: at,
                }
                .into(),
                &mut events,
            )
            .map_err(rule)?,
            (9, _) => absorb("waiting after the resolution (no clock to pause)"),
            (6, Some(CaseStatus::Closed { .. })) => {
                absorb("closed again while closed (recorded as CaseCloseRepeated)");
                execute(
                    &mut state,
                    RepeatCaseClose {
                        case_id: case_id.clone(),
                        occurred_at: at,
                    }
                    .into(),
                    &mut events,
                )
                .map_err(rule)?;
            }
            (6, status) => {
                let close_code = if matches!(status, Some(CaseStatus::Resolved { .. })) {
                    CloseCode::Resolved
                } else {
                    absorb("closed without a resolution (close code invalid)");
                    CloseCode::Invalid
                };
                execute(
                    &mut state,
                    CloseCase {
                        case_id: case_id.clone(),
                        close_code,
                        occurred_at: at,
                    }
                    .into(),
                    &mut events,
                )
                .map_err(rule)?;
            }
            (_, Some(CaseStatus::Open)) if level < ESCALATION_LEVEL_MAX => {
                level += 1;
                execute(
                    &mut state,
                    EscalateCase {
                        case_id: case_id.clone(),
                        level,
                        reason: Label::new(format!("helpdesk activity {activity}"))
                            .map_err(|e| row.row_error(e.to_string()))?,
                        occurred_at: at,
                    }
                    .into(),
                    &mut events,
                )
                .map_err(rule)?;
            }
            (_, Some(CaseStatus::Open)) => absorb("escalation beyond the highest level"),
            (_, _) => absorb("handling step after the resolution or close"),
        }
        let source = SourceRow {
            importer: NAME,
            file: row.file().to_owned(),
            line: row.line,
            key: format!("{key}#{}", n + 1),
            content_sha256: None,
        };
        staged.extend(stage(&source, events, &[]).map_err(|e| row.row_error(e.to_string()))?);
    }
    Ok(Unit {
        rows: rows.len() as u64,
        events: staged,
    })
}
