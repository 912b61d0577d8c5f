//! Reading and checking the log as a whole: events printed in their text or JSON-lines form
//! (`crm events`, the export `crm import jsonl` reads), anchors (a position and the chain
//! hash its record had), and counts per type and category (`crm stats`).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    record_at, ChainHash, EventStore, Position, ReadError, RecordedEvent, StreamId, StreamIdError,
    StreamVersion,
};
use serde::Serialize;

use crate::envelope::{EventFilter, EventLine};

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
    /// A sealed personal field could not be shown.
    #[error("{0}; the key store (or the log) needs restoring from backup")]
    Reveal(#[from] crate::personal::RevealError),
}

/// How `crm events` shows each event (e.g. [`crate::personal::as_seen`] with the log's key
/// store, or the stored form as it is).
pub type Show<'s> = dyn for<'e> Fn(
        &'e RecordedEvent,
    ) -> Result<std::borrow::Cow<'e, RecordedEvent>, crate::personal::RevealError>
    + 's;

/// Shows events as stored.
///
/// # Errors
/// Never.
pub fn as_stored(
    event: &RecordedEvent,
) -> Result<std::borrow::Cow<'_, RecordedEvent>, crate::personal::RevealError> {
    Ok(std::borrow::Cow::Borrowed(event))
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
    /// Only the events this keeps.
    pub filter: EventFilter,
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
    show: &Show<'_>,
    out: &mut impl Write,
) -> Result<u64, VerbError> {
    let stream = query.stream.clone().map(StreamId::new).transpose()?;
    let mut printed = 0u64;
    if query.follow {
        let mut subscription = store.subscribe(Position(query.from));
        while let Some(event) = subscription.next().await {
            let event = event?;
            if stream.as_ref().is_none_or(|s| *s == event.stream_id) && query.filter.matches(&event)
            {
                print_event(out, &*show(&event)?, query.json)?;
                out.flush().map_err(output)?;
                printed += 1;
            }
        }
        return Ok(printed);
    }
    let limit = query.limit.min(EVENTS_LIMIT_MAX);
    let mut next = query.from;
    // A filtered read scans whole pages until `limit` events matched or the log ends.
    let filtered = !query.filter.is_empty();
    while usize::try_from(printed).unwrap_or(usize::MAX) < limit {
        let want = if filtered {
            READ_PAGE_MAX
        } else {
            (limit - usize::try_from(printed).unwrap_or(limit)).min(READ_PAGE_MAX)
        };
        let page = match &stream {
            Some(s) => store.read_stream(s, StreamVersion(next), want).await?,
            None => store.read_all(Position(next), want).await?,
        };
        let Some(last) = page.last() else { break };
        next = match &stream {
            Some(_) => last.stream_version.0 + 1,
            None => last.position.0 + 1,
        };
        for event in page.iter().filter(|e| query.filter.matches(e)) {
            if usize::try_from(printed).unwrap_or(usize::MAX) >= limit {
                break;
            }
            print_event(out, &*show(event)?, query.json)?;
            printed += 1;
        }
    }
    Ok(printed)
}

/// A log position and the chain hash its record had when the anchor was taken (printed by
/// `crm stats`, `crm verify` and every metric figure: "computed at log position P chain hash
/// H"). Because each chain hash covers its predecessor's, a record with the same hash at the
/// same position proves that positions 1..=P are exactly the records the anchor was taken
/// from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// The position.
    pub position: Position,
    /// The chain hash expected there.
    pub hash: ChainHash,
}

/// Text that is not an anchor `POSITION:HASH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}; write the anchor as POSITION:HASH, e.g. 62617:2c5094…(64 hex digits), as printed by `crm stats` or a metric's \"computed at\" line")]
pub struct AnchorSyntaxError {
    /// What is wrong with the text.
    pub problem: String,
}

impl std::str::FromStr for Anchor {
    type Err = AnchorSyntaxError;

    fn from_str(text: &str) -> Result<Anchor, AnchorSyntaxError> {
        let bad = |problem: String| AnchorSyntaxError { problem };
        let (position, hash) = text
            .split_once(':')
            .ok_or_else(|| bad(format!("{text:?} has no `:`")))?;
        let position: u64 = position
            .trim()
            .parse()
            .map_err(|_| bad(format!("{position:?} is not a log position")))?;
        if position == 0 {
            return Err(bad("position 0 holds no record".to_owned()));
        }
        let hash = ChainHash::from_hex(hash.trim()).map_err(|e| bad(e.to_string()))?;
        Ok(Anchor {
            position: Position(position),
            hash,
        })
    }
}

/// What the log holds at an anchor's position.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AnchorCheck {
    /// The anchor's position.
    pub position: u64,
    /// The hash the anchor expects (hex).
    pub expected_hash: String,
    /// The hash the log's record there has (hex); `None` when the log ends before.
    pub found_hash: Option<String>,
    /// Whether they are equal.
    pub ok: bool,
}

impl fmt::Display for AnchorCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.found_hash, self.ok) {
            (_, true) => write!(
                f,
                "anchor {} ok: the log's records 1..={} are the ones hash {} was taken from",
                self.position, self.position, self.expected_hash
            ),
            (Some(found), false) => write!(
                f,
                "anchor {} FAILED: the log's record there has chain hash {found}, the anchor says {}; the log up to {} is not the one the anchor was taken from (altered, replaced, or restored from another backup)",
                self.position, self.expected_hash, self.position
            ),
            (None, false) => write!(
                f,
                "anchor {} FAILED: the log ends before position {} (truncated, or restored from an older backup)",
                self.position, self.position
            ),
        }
    }
}

/// Checks each anchor against the record the log holds at its position. Combined with a
/// clean `verify` of the chain, a matching anchor proves the whole prefix unchanged.
///
/// # Errors
/// [`ReadError`] when a record cannot be read.
pub async fn check_anchors<S: EventStore>(
    store: &S,
    anchors: &[Anchor],
) -> Result<Vec<AnchorCheck>, ReadError> {
    let mut checks = Vec::with_capacity(anchors.len());
    for anchor in anchors {
        let found = record_at(store, anchor.position).await?.map(|r| r.hash);
        checks.push(AnchorCheck {
            position: anchor.position.0,
            expected_hash: anchor.hash.to_hex(),
            found_hash: found.map(|h| h.to_hex()),
            ok: found == Some(anchor.hash),
        });
    }
    Ok(checks)
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
        if self.head_position > 0 {
            writeln!(
                f,
                "anchor {}:{}  (`crm verify --anchor` with it later proves this log unchanged)",
                self.head_position, self.head_hash
            )?;
        }
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
