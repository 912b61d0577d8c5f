//! The verbs that read and check the log: `crm events`, `crm verify`, `crm stats`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    verify_with_progress, EventStore, Position, ReadError, RecordedEvent, StreamId, StreamIdError,
    StreamVersion, VerifyReport,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::envelope::EventLine;

/// Most events one `crm events` call prints without `--follow`.
pub const EVENTS_LIMIT_MAX: usize = 100_000;

/// Why a verb failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerbError {
    /// Reading the log failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The stream name is invalid.
    #[error(transparent)]
    Stream(#[from] StreamIdError),
    /// Writing the output failed.
    #[error("could not write the output: {0}")]
    Output(String),
}

fn output(e: impl fmt::Display) -> VerbError {
    VerbError::Output(e.to_string())
}

/// What `crm events` reads.
#[derive(Debug, Clone)]
pub struct EventsQuery {
    /// One stream, or the global log if `None`.
    pub stream: Option<String>,
    /// First global position (or stream version with `stream`).
    pub from: u64,
    /// Most events to print (capped at [`EVENTS_LIMIT_MAX`]); ignored with `follow`.
    pub limit: usize,
    /// Keep following the log live after the history.
    pub follow: bool,
    /// One JSON object per line instead of text.
    pub json: bool,
}

fn print_event(out: &mut impl Write, event: &RecordedEvent, json: bool) -> Result<(), VerbError> {
    if json {
        let line = serde_json::to_string(&EventLine::new(event)).map_err(output)?;
        writeln!(out, "{line}").map_err(output)
    } else {
        writeln!(
            out,
            "{:>9} {}@{} {} v{} occurred {} actor {}",
            event.position,
            event.stream_id,
            event.stream_version,
            event.event_type,
            event.schema_version,
            event.occurred_at.to_rfc3339(),
            event.actor
        )
        .map_err(output)
    }
}

/// Prints events of a stream or of the global log; returns how many were printed. With
/// `follow`, runs until the store closes.
///
/// # Errors
/// [`VerbError`] when reading or writing fails.
pub async fn events<S: EventStore>(
    store: &S,
    query: &EventsQuery,
    out: &mut impl Write,
) -> Result<u64, VerbError> {
    let stream = query.stream.clone().map(StreamId::new).transpose()?;
    let mut printed = 0u64;
    if query.follow {
        let mut subscription = store.subscribe(Position(query.from));
        while let Some(event) = subscription.next().await {
            let event = event?;
            if stream.as_ref().is_none_or(|s| *s == event.stream_id) {
                print_event(out, &event, query.json)?;
                out.flush().map_err(output)?;
                printed += 1;
            }
        }
        return Ok(printed);
    }
    let limit = query.limit.min(EVENTS_LIMIT_MAX);
    let mut next = query.from;
    while usize::try_from(printed).unwrap_or(usize::MAX) < limit {
        let want = (limit - usize::try_from(printed).unwrap_or(limit)).min(READ_PAGE_MAX);
        let page = match &stream {
            Some(s) => store.read_stream(s, StreamVersion(next), want).await?,
            None => store.read_all(Position(next), want).await?,
        };
        let Some(last) = page.last() else { break };
        next = match &stream {
            Some(_) => last.stream_version.0 + 1,
            None => last.position.0 + 1,
        };
        for event in &page {
            print_event(out, event, query.json)?;
            printed += 1;
        }
    }
    Ok(printed)
}

/// Verifies checksums and the hash chain of the whole log, with a progress bar on a terminal.
///
/// # Errors
/// [`ReadError`] when the log cannot be read at all (a bad record is in the report instead).
pub async fn verify<S: EventStore>(store: &S, progress: bool) -> Result<VerifyReport, ReadError> {
    let head = store.head();
    let bar = if progress {
        let bar =
            ProgressBar::with_draw_target(Some(head.position.0), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} verify [{elapsed_precise}] {wide_bar} {pos}/{len} records ({per_sec})",
        ) {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let report =
        verify_with_progress(store, Position::FIRST, None, |p| bar.set_position(p.0)).await;
    bar.finish_and_clear();
    report
}

/// Counts of the log.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Events in the log.
    pub events: u64,
    /// Distinct streams.
    pub streams: u64,
    /// Head position.
    pub head_position: u64,
    /// Head chain hash (hex).
    pub head_hash: String,
    /// Events per stream category (`opportunity`).
    pub by_category: BTreeMap<String, u64>,
    /// Events per event type.
    pub by_type: BTreeMap<String, u64>,
}

/// Reads the whole log and counts events per type and category.
///
/// # Errors
/// [`ReadError`] when a page cannot be read.
pub async fn stats<S: EventStore>(store: &S) -> Result<Stats, ReadError> {
    let head = store.head();
    let mut stats = Stats {
        head_position: head.position.0,
        head_hash: head.hash.to_hex(),
        ..Stats::default()
    };
    let mut streams = std::collections::HashSet::new();
    let mut next = Position::FIRST;
    while next <= head.position {
        let page = store.read_all(next, READ_PAGE_MAX).await?;
        let Some(last) = page.last() else { break };
        next = Position(last.position.0 + 1);
        for event in page.iter().filter(|e| e.position <= head.position) {
            stats.events += 1;
            *stats.by_type.entry(event.event_type.clone()).or_default() += 1;
            *stats
                .by_category
                .entry(event.stream_id.category().to_owned())
                .or_default() += 1;
            if !streams.contains(event.stream_id.as_str()) {
                streams.insert(event.stream_id.as_str().to_owned());
            }
        }
    }
    stats.streams = streams.len() as u64;
    Ok(stats)
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "head position {}  hash {}",
            self.head_position, self.head_hash
        )?;
        writeln!(f, "{} events in {} streams", self.events, self.streams)?;
        writeln!(f, "by category:")?;
        for (category, count) in &self.by_category {
            writeln!(f, "  {category:<28} {count:>9}")?;
        }
        writeln!(f, "by type:")?;
        for (event_type, count) in &self.by_type {
            writeln!(f, "  {event_type:<28} {count:>9}")?;
        }
        Ok(())
    }
}
