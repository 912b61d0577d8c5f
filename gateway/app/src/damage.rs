//! Damage to the log as this program reports it: where it is (a position, a range of
//! positions, or not known) and what the operator does about it (restore the log from a
//! replica or backup, with the operations guide's steps).
//!
//! The store names what it found ([`ReadError::Corrupt`] with its position,
//! [`OpenError::Damaged`] with the store's reason) and leaves the remedy to the program; the
//! CLI and the HTTP API both take theirs from here, so an operator reads one remedy
//! whichever edge met the damage.
//!
//! **Invariant:** damage is never reported with a remedy that invites a retry ("check the
//! disk and retry", a `Retry-After`): a damaged record does not heal by reading it again.

use std::collections::VecDeque;
use std::error::Error;
use std::fmt;

use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{
    Corruption, EventStore, OpenError, Position, ReadError, RecordedEvent, Subscription,
};
use serde::Serialize;

use crate::commands::CommandError;
use crate::erasure::EraseError;
use crate::inspect::VerbError;
use crate::store::StoreOpenError;

/// Where the operations guide describes restoring a damaged log.
pub const OPS_GUIDE_SECTION: &str = "deploy/README.md, section \"Restoring a damaged log\"";

/// What an operator does about a damaged log.
pub const RESTORE_REMEDY: &str = "restore the log from a replica or backup: stop every process that has it open, move the damaged log aside, copy the backup in its place, `crm verify` it, then start again (deploy/README.md, section \"Restoring a damaged log\")";

/// Where in the log the damage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DamageLocation {
    /// The record at this position is damaged.
    At {
        /// Its global position.
        position: u64,
    },
    /// The record at `first` is damaged and the records from it up to `next_readable`
    /// (exclusive; to the end of the log when `None`) cannot be read: the store cannot tell
    /// their frames apart.
    Span {
        /// The damaged record's position.
        first: u64,
        /// The first position readable again, if one is.
        next_readable: Option<u64>,
    },
    /// The damage is somewhere from `first` to `last` (inclusive): records missing, or a
    /// record there could not be read and which one is not known.
    Within {
        /// The first position that may be affected.
        first: u64,
        /// The last position that may be affected.
        last: u64,
    },
    /// The damage is somewhere before this position, which is all the store could tell.
    Before {
        /// The first position known to be past the damage.
        position: u64,
    },
    /// The store did not name positions; the reason says what it found.
    Unknown,
}

impl DamageLocation {
    /// The first position known to be damaged, if one is.
    #[must_use]
    pub fn first_bad_position(self) -> Option<u64> {
        match self {
            DamageLocation::At { position }
            | DamageLocation::Span {
                first: position, ..
            } => Some(position),
            DamageLocation::Within { .. }
            | DamageLocation::Before { .. }
            | DamageLocation::Unknown => None,
        }
    }

    /// The positions a store's message names in one of the forms the stores use: "record at
    /// position N" (the first damaged record), "records A to B" (missing or unreadable),
    /// "before position P"; [`DamageLocation::Unknown`] otherwise. For damage found at
    /// open ([`OpenError::Damaged`]), whose reason is text.
    #[must_use]
    pub fn named_in(reason: &str) -> DamageLocation {
        /// The number right after the first `prefix` in `text`, and the text after it.
        fn number_after<'t>(text: &'t str, prefix: &str) -> Option<(u64, &'t str)> {
            let start = text.find(prefix)? + prefix.len();
            let rest = &text[start..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            Some((rest[..end].parse().ok()?, &rest[end..]))
        }
        if let Some((position, _)) = number_after(reason, "record at position ") {
            return DamageLocation::At { position };
        }
        if let Some((first, rest)) = number_after(reason, "records ") {
            if let Some(last) = rest
                .strip_prefix(" to ")
                .and_then(|r| number_after(r, "").map(|(n, _)| n))
            {
                return DamageLocation::Within { first, last };
            }
        }
        if let Some((position, _)) = number_after(reason, "before position ") {
            return DamageLocation::Before { position };
        }
        DamageLocation::Unknown
    }
}

impl fmt::Display for DamageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DamageLocation::At { position } => write!(f, "at position {position}"),
            DamageLocation::Span {
                first,
                next_readable: Some(next),
            } if next.saturating_sub(*first) > 1 => {
                write!(f, "at positions {first} to {}", next - 1)
            }
            DamageLocation::Span {
                first,
                next_readable: Some(_),
            } => write!(f, "at position {first}"),
            DamageLocation::Span {
                first,
                next_readable: None,
            } => write!(f, "from position {first} to the end of the log"),
            DamageLocation::Within { first, last } if first == last => {
                write!(f, "at position {first}")
            }
            DamageLocation::Within { first, last } => {
                write!(f, "at a position from {first} to {last}")
            }
            DamageLocation::Before { position } => write!(f, "before position {position}"),
            DamageLocation::Unknown => write!(f, "where the store did not say"),
        }
    }
}

/// Damage met while opening or reading the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogDamage {
    /// Where.
    pub location: DamageLocation,
    /// What the store found.
    pub reason: String,
}

impl LogDamage {
    /// The damage `error` reports: [`ReadError::Corrupt`], at its position, and the span of
    /// records it makes unreadable when the store says ([`Corruption::Unreadable`]).
    #[must_use]
    pub fn of_read(error: &ReadError) -> Option<LogDamage> {
        match error {
            ReadError::Corrupt { position, reason } => Some(LogDamage {
                location: match reason {
                    Corruption::Unreadable { next_readable, .. } => DamageLocation::Span {
                        first: position.0,
                        next_readable: next_readable.map(|p| p.0),
                    },
                    _ => DamageLocation::At {
                        position: position.0,
                    },
                },
                reason: reason.to_string(),
            }),
            _ => None,
        }
    }

    /// The damage `error` reports: [`OpenError::Damaged`], whose reason names what the
    /// store found, and the positions when it knows them ([`DamageLocation::named_in`]).
    #[must_use]
    pub fn of_open(error: &OpenError) -> Option<LogDamage> {
        match error {
            OpenError::Damaged { path, reason } => Some(LogDamage {
                location: DamageLocation::named_in(reason),
                reason: format!("the log at {path} is damaged: {reason}"),
            }),
            _ => None,
        }
    }

    /// The damage one error reports, looking through this crate's wrappers that show a
    /// store error as their own (`#[error(transparent)]`, which hides it from
    /// [`Error::source`]).
    #[must_use]
    pub fn of_error(error: &(dyn Error + 'static)) -> Option<LogDamage> {
        if let Some(read) = error.downcast_ref::<ReadError>() {
            return LogDamage::of_read(read);
        }
        if let Some(open) = error.downcast_ref::<OpenError>() {
            return LogDamage::of_open(open);
        }
        match error.downcast_ref::<StoreOpenError>() {
            Some(StoreOpenError::Open(open)) => return LogDamage::of_open(open),
            Some(_) => return None,
            None => {}
        }
        let read = if let Some(VerbError::Read(read)) = error.downcast_ref::<VerbError>() {
            read
        } else if let Some(CommandError::Read(read)) = error.downcast_ref::<CommandError>() {
            read
        } else if let Some(EraseError::Read(read) | EraseError::Command(CommandError::Read(read))) =
            error.downcast_ref::<EraseError>()
        {
            read
        } else {
            return None;
        };
        LogDamage::of_read(read)
    }

    /// The damage `error` or one of its sources reports.
    #[must_use]
    pub fn find(error: &(dyn Error + 'static)) -> Option<LogDamage> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(damage) = LogDamage::of_error(error) {
                return Some(damage);
            }
            next = error.source();
        }
        None
    }

    /// The first position known to be damaged, if one is.
    #[must_use]
    pub fn first_bad_position(&self) -> Option<Position> {
        self.location.first_bad_position().map(Position)
    }

    /// What to do, naming where the damage is: "the log is damaged at position 4: restore
    /// the log from a replica or backup: ...".
    #[must_use]
    pub fn remedy(&self) -> String {
        format!("the log is damaged {}: {RESTORE_REMEDY}", self.location)
    }
}

impl fmt::Display for LogDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the log is damaged {} ({})", self.location, self.reason)
    }
}

/// A catch-up subscription that, when it meets a damaged record, first yields the intact
/// events before it, then the damage ([`ReadError::Corrupt`]).
///
/// The store's [`Subscription`] reads pages: a page holding a damaged record fails whole,
/// so the events before the damage in that page would never reach a follower (a feed from
/// position 1 of a log damaged at 4 would send nothing but the error). The follower decides
/// what to do after an error; the feed and the publisher stop.
pub struct UpToDamage<S: EventStore> {
    subscription: Subscription<S>,
    store: S,
    /// Intact events before the damaged record, still to yield.
    before: VecDeque<RecordedEvent>,
    /// The damage, yielded once `before` is empty.
    damage: Option<ReadError>,
}

impl<S: EventStore> UpToDamage<S> {
    /// Follows `store` from `from`.
    pub fn new(store: &S, from: Position) -> UpToDamage<S> {
        UpToDamage {
            subscription: store.subscribe(from),
            store: store.clone(),
            before: VecDeque::new(),
            damage: None,
        }
    }

    /// The next event, or the read error that stops the subscription (after the intact
    /// events before a damaged record); `None` when the store is closed.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent, ReadError>> {
        if let Some(event) = self.before.pop_front() {
            return Some(Ok(event));
        }
        if let Some(damage) = self.damage.take() {
            return Some(Err(damage));
        }
        let error = match self.subscription.next().await? {
            Ok(event) => return Some(Ok(event)),
            Err(error) => error,
        };
        let ReadError::Corrupt { position, .. } = &error else {
            return Some(Err(error));
        };
        let next = self.subscription.position();
        if *position <= next {
            return Some(Err(error));
        }
        // At most one page of the subscription lies between its position and the damage.
        let count = usize::try_from(position.0 - next.0)
            .unwrap_or(READ_PAGE_MAX)
            .min(READ_PAGE_MAX);
        match self.store.read_all(next, count).await {
            Ok(page) => {
                let damaged_at = *position;
                self.before = page
                    .into_iter()
                    .filter(|e| e.position < damaged_at)
                    .collect();
            }
            // The records before it cannot be read either: the first error is reported.
            Err(_) => return Some(Err(error)),
        }
        match self.before.pop_front() {
            Some(event) => {
                self.damage = Some(error);
                Some(Ok(event))
            }
            None => Some(Err(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corrupt(position: u64) -> ReadError {
        ReadError::Corrupt {
            position: Position(position),
            reason: Corruption::Missing,
        }
    }

    #[test]
    fn a_corrupt_record_is_damage_at_its_position_through_every_wrapper() {
        let direct = LogDamage::of_read(&corrupt(4)).unwrap();
        assert_eq!(direct.location, DamageLocation::At { position: 4 });
        assert_eq!(direct.first_bad_position(), Some(Position(4)));
        let wrapped: Vec<Box<dyn Error + 'static>> = vec![
            Box::new(VerbError::Read(corrupt(4))),
            Box::new(CommandError::Read(corrupt(4))),
            Box::new(EraseError::Read(corrupt(4))),
            Box::new(crate::personal::ReconcileError::Read(corrupt(4))),
        ];
        for error in wrapped {
            assert_eq!(
                LogDamage::find(error.as_ref()),
                Some(direct.clone()),
                "{error}"
            );
        }
        assert_eq!(
            LogDamage::of_read(&ReadError::Storage("io".into())),
            None,
            "an I/O error is not damage"
        );
    }

    #[test]
    fn a_damaged_open_is_damage_at_positions_the_store_names_in_its_reason() {
        let open = OpenError::Damaged {
            path: "/d/log".into(),
            reason: "the record at position 9 (segment 1.seg, byte 1698) is damaged (the segment ends 51 bytes into its frame); records from position 9 on cannot be read".into(),
        };
        let damage = LogDamage::find(&StoreOpenError::Open(open)).unwrap();
        assert_eq!(damage.location, DamageLocation::At { position: 9 });
        assert!(damage.reason.contains("/d/log"), "{damage}");
        for (reason, location) in [
            (
                "the index reaches position 12 but the segments end at position 7: records 8 to 12 are missing",
                DamageLocation::Within { first: 8, last: 12 },
            ),
            (
                "a chunk is unreadable somewhere before position 30",
                DamageLocation::Before { position: 30 },
            ),
            ("a malformed chunk key", DamageLocation::Unknown),
            ("records 3 are odd", DamageLocation::Unknown),
        ] {
            assert_eq!(DamageLocation::named_in(reason), location, "{reason}");
        }
        let locked = StoreOpenError::Open(OpenError::Locked { path: "/d".into() });
        assert_eq!(LogDamage::find(&locked), None);
    }

    #[test]
    fn the_remedy_names_the_position_and_restoring_and_never_a_retry() {
        let remedy = LogDamage::of_read(&corrupt(7)).unwrap().remedy();
        assert!(remedy.contains("at position 7"), "{remedy}");
        assert!(remedy.contains("replica or backup"), "{remedy}");
        assert!(remedy.contains(OPS_GUIDE_SECTION.split(',').next().unwrap()));
        assert!(!remedy.contains("retry"), "{remedy}");
        let within = DamageLocation::Within { first: 4, last: 6 }.to_string();
        assert_eq!(within, "at a position from 4 to 6");
    }

    #[test]
    fn a_record_that_hides_its_neighbours_is_damage_over_their_span() {
        let unreadable = |next: Option<u64>| ReadError::Corrupt {
            position: Position(4),
            reason: Corruption::Unreadable {
                next_readable: next.map(Position),
                cause: Box::new(Corruption::FrameOverrunsSegment),
            },
        };
        let damage = LogDamage::of_read(&unreadable(Some(7))).unwrap();
        assert_eq!(
            damage.location,
            DamageLocation::Span {
                first: 4,
                next_readable: Some(7)
            }
        );
        assert_eq!(damage.first_bad_position(), Some(Position(4)));
        assert!(damage.remedy().contains("at positions 4 to 6"), "{damage}");
        let to_end = LogDamage::of_read(&unreadable(None)).unwrap();
        assert!(
            to_end
                .remedy()
                .contains("from position 4 to the end of the log"),
            "{to_end}"
        );
    }
}
