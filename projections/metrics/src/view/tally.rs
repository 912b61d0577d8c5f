//! [`Tally`]: what a replay counts of every record it reads (events scanned, visible events
//! per type, events kept and the span of their business time, the last visible record) and
//! which records it keeps. It is the store's selector (`EventStore::read_all_selected`): it
//! runs where the log is read, so a record the view does not keep is never copied out of the
//! log, and only the kept ones travel to the loader, which decodes their payloads.
//!
//! The decisions are those of the requirements: a record is kept when its type is one the
//! metrics read (or a correction type, or the custom-attributes type when they are read),
//! when its stream's category is one `ref(..)` names, or when it opens (version 1) a stream
//! of a category the metrics read events of. Each type's and each category's decisions are
//! worked out once and remembered.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use crm_domain::DomainEvent;
use crm_eventstore::{ChainHash, Position, RecordView, Selector};

use super::{KnownAt, CORRECTION_TYPES};
use crate::compile::Requirements;
use crate::hashing::FnvBuild;

/// The records one set of requirements names, owned (a tally runs on the reader's thread).
#[derive(Debug, Clone)]
struct Names {
    types: BTreeSet<String>,
    creation_categories: BTreeSet<String>,
    ref_categories: BTreeSet<String>,
}

impl Names {
    fn new(req: &Requirements) -> Names {
        let mut types = req.types.clone();
        types.extend(CORRECTION_TYPES.iter().map(|t| (*t).to_owned()));
        if req.attrs {
            types.insert(crm_domain::attributes::ATTRIBUTES_SET.to_owned());
        }
        Names {
            types,
            creation_categories: req
                .types
                .iter()
                .filter_map(|t| DomainEvent::category_of(t))
                .map(str::to_owned)
                .collect(),
            ref_categories: req.ref_categories.clone(),
        }
    }
}

/// One event type's visible events and what the requirements say of it.
#[derive(Debug, Clone, Copy)]
struct TypeEntry {
    count: u64,
    kept: bool,
    counted: bool,
}

/// What the requirements say of a stream category: any of its events, or those that open a
/// stream, are kept (and counted as kept).
#[derive(Debug, Clone, Copy)]
struct CategoryEntry {
    kept_any: bool,
    kept_opening: bool,
    counted_any: bool,
    counted_opening: bool,
}

/// What a replay has counted so far, and its selection.
#[derive(Debug)]
pub(crate) struct Tally {
    kept: Names,
    /// What the whole definitions read (`None`: what is kept).
    counted: Option<Names>,
    head: Position,
    as_of: Option<DateTime<Utc>>,
    known_at: Option<KnownAt>,
    /// A record past the head or past `known_at` was met: nothing after it is visible.
    done: bool,
    types: HashMap<String, TypeEntry, FnvBuild>,
    categories: HashMap<String, CategoryEntry, FnvBuild>,
    /// Visible records read (up to the head and `known_at`), before `as_of`.
    pub(crate) scanned: u64,
    /// Records counted as kept.
    pub(crate) kept_count: u64,
    /// Earliest and latest `occurred_at` of the records counted as kept.
    pub(crate) occurred: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// The last visible record: position, chain hash, `recorded_at`.
    pub(crate) last: Option<(Position, ChainHash, DateTime<Utc>)>,
}

impl Tally {
    /// A tally from nothing: records up to `head`, under `as_of` and `known_at`, kept by
    /// `req` and counted by `counted` (or by `req`).
    pub(crate) fn new(
        req: &Requirements,
        counted: Option<&Requirements>,
        head: Position,
        as_of: Option<DateTime<Utc>>,
        known_at: Option<KnownAt>,
    ) -> Tally {
        Tally {
            kept: Names::new(req),
            counted: counted.map(Names::new),
            head,
            as_of,
            known_at,
            done: false,
            types: HashMap::default(),
            categories: HashMap::default(),
            scanned: 0,
            kept_count: 0,
            occurred: None,
            last: None,
        }
    }

    /// Carries on from earlier counts (a view extended with new records).
    pub(crate) fn resume(
        mut self,
        scanned: u64,
        kept_count: u64,
        occurred: Option<(DateTime<Utc>, DateTime<Utc>)>,
        type_counts: &BTreeMap<String, u64>,
    ) -> Tally {
        self.scanned = scanned;
        self.kept_count = kept_count;
        self.occurred = occurred;
        for (ty, n) in type_counts {
            let e = TypeEntry {
                count: *n,
                ..self.type_entry(ty)
            };
            self.types.insert(ty.clone(), e);
        }
        self
    }

    /// Whether a record past the head or `known_at` was met.
    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// Visible events per type.
    pub(crate) fn type_counts(&self) -> BTreeMap<String, u64> {
        self.types
            .iter()
            .filter(|(_, e)| e.count > 0)
            .map(|(t, e)| (t.clone(), e.count))
            .collect()
    }

    /// What the requirements say of events of type `ty`, none counted yet.
    fn type_entry(&self, ty: &str) -> TypeEntry {
        let kept = self.kept.types.contains(ty);
        TypeEntry {
            count: 0,
            kept,
            counted: self.counted.as_ref().map_or(kept, |c| c.types.contains(ty)),
        }
    }

    /// Counts one visible event of type `ty`; returns whether the type is kept and counted.
    fn count_type(&mut self, ty: &str) -> (bool, bool) {
        match self.types.get_mut(ty) {
            Some(e) => {
                e.count += 1;
                (e.kept, e.counted)
            }
            None => {
                let e = TypeEntry {
                    count: 1,
                    ..self.type_entry(ty)
                };
                self.types.insert(ty.to_owned(), e);
                (e.kept, e.counted)
            }
        }
    }

    fn category_entry(&mut self, category: &str) -> CategoryEntry {
        if let Some(e) = self.categories.get(category) {
            return *e;
        }
        let of = |n: &Names| {
            (
                n.ref_categories.contains(category),
                n.creation_categories.contains(category),
            )
        };
        let (kept_any, kept_opening) = of(&self.kept);
        let (counted_any, counted_opening) =
            self.counted.as_ref().map_or((kept_any, kept_opening), of);
        let e = CategoryEntry {
            kept_any,
            kept_opening,
            counted_any,
            counted_opening,
        };
        self.categories.insert(category.to_owned(), e);
        e
    }
}

impl Selector for Tally {
    fn select(&mut self, record: &RecordView<'_>) -> bool {
        if self.done {
            return false;
        }
        let past_known = match self.known_at {
            Some(KnownAt::Time(t)) => record.recorded_at > t,
            Some(KnownAt::Position(p)) => record.position.0 > p,
            None => false,
        };
        if record.position > self.head || past_known {
            self.done = true;
            return false;
        }
        self.last = Some((record.position, record.hash, record.recorded_at));
        self.scanned += 1;
        if self.as_of.is_some_and(|t| record.occurred_at > t) {
            return false;
        }
        let category = self.category_entry(record.category());
        let opening = record.stream_version.0 == 1;
        let (type_kept, type_counted) = self.count_type(record.event_type);
        let kept = type_kept || category.kept_any || (opening && category.kept_opening);
        let counted = type_counted || category.counted_any || (opening && category.counted_opening);
        if counted {
            self.kept_count += 1;
            let t = record.occurred_at;
            self.occurred = Some(match self.occurred {
                Some((lo, hi)) => (lo.min(t), hi.max(t)),
                None => (t, t),
            });
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::TimeZone;
    use crm_eventstore::{EventId, StreamVersion};
    use uuid::Uuid;

    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, day, 0, 0, 0).unwrap()
    }

    /// Record `position` of `stream` at `version`, of type `ty`, occurred on day `day` and
    /// recorded on day `position`.
    fn record<'a>(
        position: u64,
        stream: &'a str,
        version: u64,
        ty: &'a str,
        day: u32,
    ) -> RecordView<'a> {
        RecordView {
            position: Position(position),
            stream_id: stream,
            stream_version: StreamVersion(version),
            event_id: EventId(Uuid::from_u128(u128::from(position))),
            event_type: ty,
            schema_version: 1,
            occurred_at: at(day),
            recorded_at: at(u32::try_from(position).unwrap()),
            payload: b"{}",
            hash: ChainHash([u8::try_from(position).unwrap(); 32]),
        }
    }

    fn wins() -> Requirements {
        Requirements {
            types: ["OpportunityWon".to_owned()].into(),
            ..Requirements::default()
        }
    }

    /// The log every case reads: an opportunity opened, moved and won, an account opened, a
    /// test flag, and the opportunity won again.
    fn log() -> Vec<RecordView<'static>> {
        vec![
            record(1, "opportunity-1", 1, "OpportunityCreated", 5),
            record(2, "opportunity-1", 2, "OpportunityStageChanged", 3),
            record(3, "opportunity-1", 3, "OpportunityWon", 9),
            record(4, "account-1", 1, "AccountOpened", 1),
            record(5, "case-1", 2, "RecordFlaggedTest", 7),
            record(6, "opportunity-2", 2, "OpportunityWon", 8),
        ]
    }

    fn run(tally: &mut Tally) -> Vec<u64> {
        log()
            .iter()
            .filter(|r| tally.select(r))
            .map(|r| r.position.0)
            .collect()
    }

    #[test]
    fn keeps_the_types_read_the_corrections_and_the_openings_of_their_streams() {
        assert_eq!(
            DomainEvent::category_of("OpportunityWon"),
            Some("opportunity")
        );
        let mut tally = Tally::new(&wins(), None, Position(100), None, None);
        assert_eq!(run(&mut tally), [1, 3, 5, 6]);
        assert_eq!(tally.scanned, 6);
        assert_eq!(tally.kept_count, 4);
        assert_eq!(tally.occurred, Some((at(5), at(9))));
        assert_eq!(tally.last, Some((Position(6), ChainHash([6; 32]), at(6))));
        assert!(!tally.done());
        let counts = tally.type_counts();
        assert_eq!(counts.get("OpportunityWon"), Some(&2));
        assert_eq!(counts.get("AccountOpened"), Some(&1));
        assert_eq!(counts.values().sum::<u64>(), 6);
    }

    #[test]
    fn as_of_hides_later_business_time_from_every_count_but_the_scan() {
        let mut tally = Tally::new(&wins(), None, Position(100), Some(at(7)), None);
        assert_eq!(run(&mut tally), [1, 5]);
        assert_eq!(tally.scanned, 6);
        assert_eq!(tally.kept_count, 2);
        assert_eq!(tally.occurred, Some((at(5), at(7))));
        assert_eq!(tally.type_counts().get("OpportunityWon"), None);
        assert_eq!(tally.last.map(|(p, _, _)| p), Some(Position(6)));
    }

    #[test]
    fn the_head_and_known_at_end_the_replay_at_the_first_record_past_them() {
        for (head, known_at) in [
            (Position(3), None),
            (Position(100), Some(KnownAt::Position(3))),
            (Position(100), Some(KnownAt::Time(at(3)))),
        ] {
            let mut tally = Tally::new(&wins(), None, head, None, known_at);
            assert_eq!(run(&mut tally), [1, 3], "{head:?} {known_at:?}");
            assert!(tally.done());
            assert_eq!(tally.scanned, 3);
            assert_eq!(tally.last.map(|(p, _, _)| p), Some(Position(3)));
            assert_eq!(tally.type_counts().values().sum::<u64>(), 3);
        }
    }

    #[test]
    fn what_is_counted_follows_the_whole_definition_and_what_is_kept_the_question() {
        let whole = Requirements {
            types: ["AccountOpened".to_owned()].into(),
            ..Requirements::default()
        };
        let mut tally = Tally::new(&wins(), Some(&whole), Position(100), None, None);
        assert_eq!(run(&mut tally), [1, 3, 5, 6]);
        // Counted: the account's opening (its type and its stream's first event) and the
        // test flag (a correction type, read by every definition).
        assert_eq!(tally.kept_count, 2);
        assert_eq!(tally.occurred, Some((at(1), at(7))));
    }

    #[test]
    fn a_category_named_by_ref_keeps_all_its_streams_events() {
        let req = Requirements {
            ref_categories: ["opportunity".to_owned()].into(),
            ..Requirements::default()
        };
        let mut tally = Tally::new(&req, None, Position(100), None, None);
        assert_eq!(run(&mut tally), [1, 2, 3, 5, 6]);
    }

    #[test]
    fn a_resumed_tally_adds_to_the_earlier_counts() {
        let earlier: BTreeMap<String, u64> = [("OpportunityWon".to_owned(), 5)].into();
        let mut tally = Tally::new(&wins(), None, Position(100), None, None).resume(
            10,
            7,
            Some((at(2), at(4))),
            &earlier,
        );
        assert_eq!(run(&mut tally), [1, 3, 5, 6]);
        assert_eq!(tally.scanned, 16);
        assert_eq!(tally.kept_count, 11);
        assert_eq!(tally.occurred, Some((at(2), at(9))));
        assert_eq!(tally.type_counts().get("OpportunityWon"), Some(&7));
    }
}
