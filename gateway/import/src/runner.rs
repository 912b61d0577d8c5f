//! Appends a [`Plan`] in batches: validate a batch, then append each of its streams
//! concurrently (one task per stream, so the store's group commit takes them in one flush).

use std::collections::HashMap;
use std::time::Instant;

use crm_eventstore::limits::{APPEND_EVENTS_MAX, APPEND_SIZE_MAX_BYTES};
use crm_eventstore::{EventStore, ExpectedVersion, ProposedEvent, StreamId, StreamVersion};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinSet;

use super::{
    Expect, ImportError, ImportSummary, OnError, Plan, Staged, Unit, BAD_ROWS_LISTED_MAX,
    BATCH_UNITS,
};

/// How to run an import.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// What to do with bad rows.
    pub on_error: OnError,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
}

/// One stream's share of a batch.
struct StreamJob {
    stream: StreamId,
    expect: Expect,
    events: Vec<ProposedEvent>,
}

/// Appends `plan` to `store`.
///
/// # Errors
/// [`ImportError::Stopped`] at the first bad row with [`OnError::Stop`] (nothing of its batch
/// appended); [`ImportError::Append`] when the store refuses an append.
pub async fn run<S: EventStore>(
    store: &S,
    plan: Plan,
    options: RunOptions,
) -> Result<ImportSummary, ImportError> {
    let started = Instant::now();
    let mut summary = ImportSummary {
        importer: plan.importer.to_owned(),
        files: plan.files.clone(),
        rows: plan.rows(),
        notes: plan.notes.clone(),
        ..ImportSummary::default()
    };
    let bar = progress_bar(options.progress, summary.rows);
    let mut versions: HashMap<StreamId, u64> = plan
        .initial_versions
        .iter()
        .filter_map(|(stream, v)| Some((StreamId::new(stream.clone()).ok()?, *v)))
        .collect();
    let mut units = plan.units.into_iter().peekable();
    while units.peek().is_some() {
        let batch: Vec<_> = units.by_ref().take(BATCH_UNITS).collect();
        let mut good: Vec<Unit> = Vec::with_capacity(batch.len());
        for unit in batch {
            match unit {
                Ok(unit) => good.push(unit),
                Err(row) if options.on_error == OnError::Stop => {
                    bar.finish_and_clear();
                    return Err(ImportError::Stopped {
                        row,
                        appended: summary.appended,
                        already_present: summary.already_present,
                    });
                }
                Err(row) => {
                    summary.skipped_rows += 1;
                    if summary.bad_rows.len() < BAD_ROWS_LISTED_MAX {
                        summary.bad_rows.push(row.to_string());
                    }
                    bar.inc(1);
                }
            }
        }
        let rows: u64 = good.iter().map(|u| u.rows).sum();
        let jobs = group_by_stream(good, &mut summary);
        append_batch(store, jobs, &mut versions, &mut summary).await?;
        bar.inc(rows);
    }
    bar.finish_and_clear();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn progress_bar(enabled: bool, rows: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    // `stderr()` draws nothing when stderr is not a terminal.
    let bar = ProgressBar::with_draw_target(Some(rows), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Groups a batch's events by stream, keeping each stream's order and first-seen order.
fn group_by_stream(units: Vec<Unit>, summary: &mut ImportSummary) -> Vec<StreamJob> {
    let mut index: HashMap<StreamId, usize> = HashMap::new();
    let mut jobs: Vec<StreamJob> = Vec::new();
    for Staged {
        stream,
        event,
        expect,
    } in units.into_iter().flat_map(|u| u.events)
    {
        *summary
            .events_by_type
            .entry(event.event_type.clone())
            .or_default() += 1;
        let at = event.occurred_at;
        summary.occurred_from = Some(summary.occurred_from.map_or(at, |t| t.min(at)));
        summary.occurred_to = Some(summary.occurred_to.map_or(at, |t| t.max(at)));
        match index.get(&stream) {
            Some(&i) => jobs[i].events.push(event),
            None => {
                index.insert(stream.clone(), jobs.len());
                jobs.push(StreamJob {
                    stream,
                    expect,
                    events: vec![event],
                });
            }
        }
    }
    jobs
}

/// Splits one stream's events into appends within the store's limits.
fn chunks(events: Vec<ProposedEvent>) -> Vec<Vec<ProposedEvent>> {
    let mut out: Vec<Vec<ProposedEvent>> = Vec::new();
    let mut size = 0usize;
    for event in events {
        let event_size = event.size_bytes();
        let fits = out.last().is_some_and(|last| {
            last.len() < APPEND_EVENTS_MAX && size + event_size <= APPEND_SIZE_MAX_BYTES
        });
        if fits {
            size += event_size;
            if let Some(last) = out.last_mut() {
                last.push(event);
            }
        } else {
            size = event_size;
            out.push(vec![event]);
        }
    }
    out
}

async fn append_batch<S: EventStore>(
    store: &S,
    jobs: Vec<StreamJob>,
    versions: &mut HashMap<StreamId, u64>,
    summary: &mut ImportSummary,
) -> Result<(), ImportError> {
    let mut tasks = JoinSet::new();
    for job in jobs {
        let start = match job.expect {
            Expect::Fold => Some(versions.get(&job.stream).copied().unwrap_or(0)),
            Expect::Exact(v) => Some(v),
            Expect::Any => None,
        };
        let store = store.clone();
        tasks.spawn(async move {
            let mut version = start;
            let (mut appended, mut present) = (0u64, 0u64);
            for chunk in chunks(job.events) {
                let count = chunk.len() as u64;
                let expected = version.map_or(ExpectedVersion::Any, |v| {
                    ExpectedVersion::Exact(StreamVersion(v))
                });
                match store.append(&job.stream, expected, chunk).await {
                    Ok(result) => {
                        if result.already_present {
                            present += count;
                        } else {
                            appended += count;
                        }
                        version = Some(result.stream_version.0);
                    }
                    Err(source) => {
                        return Err(ImportError::Append {
                            stream: job.stream.to_string(),
                            source,
                        })
                    }
                }
            }
            Ok((job.stream, version, appended, present))
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok((stream, version, appended, present))) => {
                summary.appended += appended;
                summary.already_present += present;
                if let Some(v) = version {
                    versions.insert(stream, v);
                }
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(ImportError::Task(e.to_string()));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
