//! Property tests: random sequences of appends (right and wrong expected
//! versions, retries, conflicting reuse of ids) give the same outcomes and the
//! same log on the sled backend as on the memory model; concurrent batches on
//! sled keep the log's invariants and replay serially into the model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};

use chrono::DateTime;
use crm_eventstore::{
    AppendError, AppendResult, EventId, EventStore, ExpectedVersion, MemoryStore, Position,
    ProposedEvent, SledStore, StreamId, StreamVersion,
};
use crm_tests::support::{
    assert_log_invariants, assert_same_event, event_id, read_everything, stream, Entry,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use uuid::Uuid;

const STREAMS: u8 = 3;

fn stream_of(i: u8) -> StreamId {
    stream(["case-1", "case-2", "opportunité-3"][usize::from(i % STREAMS)])
}

/// Caller-supplied fields of an event, without its id.
#[derive(Clone, Debug)]
struct Content {
    event_type: u8,
    schema_version: u16,
    occurred_secs: i64,
    occurred_nanos: u32,
    causation: Option<u8>,
    correlation: Option<u8>,
    actor: u8,
    metadata: Vec<u8>,
    payload: Vec<u8>,
}

impl Content {
    fn with_id(&self, id: EventId) -> ProposedEvent {
        ProposedEvent {
            event_id: id,
            event_type: ["CaseOpened", "CaseClosed", "NoteAdded"][usize::from(self.event_type % 3)]
                .into(),
            schema_version: self.schema_version,
            occurred_at: DateTime::from_timestamp(
                1_700_000_000 + self.occurred_secs,
                self.occurred_nanos,
            )
            .expect("valid timestamp"),
            causation_id: self.causation.map(|c| Uuid::from_u128(u128::from(c) + 1)),
            correlation_id: self
                .correlation
                .map(|c| Uuid::from_u128(u128::from(c) + 100)),
            actor: ["", "user:1", "importer"][usize::from(self.actor % 3)].into(),
            metadata: self.metadata.clone(),
            payload: self.payload.clone(),
        }
    }
}

fn content() -> impl Strategy<Value = Content> {
    (
        0..3u8,
        0..3u16,
        -5i64..5,
        prop_oneof![Just(0u32), 0..1_000_000_000u32],
        option::of(0..3u8),
        option::of(0..3u8),
        0..3u8,
        vec(any::<u8>(), 0..4),
        vec(any::<u8>(), 0..8),
    )
        .prop_map(
            |(
                event_type,
                schema_version,
                occurred_secs,
                occurred_nanos,
                causation,
                correlation,
                actor,
                metadata,
                payload,
            )| Content {
                event_type,
                schema_version,
                occurred_secs,
                occurred_nanos,
                causation,
                correlation,
                actor,
                metadata,
                payload,
            },
        )
}

/// An expected version, relative to the stream's actual version when the
/// operation runs (serial tests) or absolute (concurrent tests).
#[derive(Clone, Copy, Debug)]
enum Expect {
    Right,
    Ahead(u64),
    Behind,
    Any,
    NoStream,
    Exact(u64),
}

impl Expect {
    fn resolve(self, actual: StreamVersion) -> ExpectedVersion {
        match self {
            Expect::Right => ExpectedVersion::Exact(actual),
            Expect::Ahead(k) => ExpectedVersion::Exact(StreamVersion(actual.0 + k)),
            Expect::Behind if actual.0 > 0 => ExpectedVersion::Exact(StreamVersion(actual.0 - 1)),
            Expect::Behind => ExpectedVersion::Exact(StreamVersion(1)),
            Expect::Any => ExpectedVersion::Any,
            Expect::NoStream => ExpectedVersion::NoStream,
            Expect::Exact(v) => ExpectedVersion::Exact(StreamVersion(v)),
        }
    }
}

fn relative_expect() -> impl Strategy<Value = Expect> + Clone {
    prop_oneof![
        4 => Just(Expect::Right),
        1 => (1..3u64).prop_map(Expect::Ahead),
        1 => Just(Expect::Behind),
        2 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
    ]
}

fn absolute_expect() -> impl Strategy<Value = Expect> + Clone {
    prop_oneof![
        3 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        2 => (0..4u64).prop_map(Expect::Exact),
    ]
}

/// One append request, described relative to earlier requests.
#[derive(Clone, Debug)]
enum Op {
    /// New events.
    Fresh {
        stream: u8,
        expect: Expect,
        batch: Vec<Content>,
    },
    /// Resend an earlier request unchanged.
    Retry { of: usize, expect: Expect },
    /// Resend an earlier request's events to another stream.
    Elsewhere {
        of: usize,
        stream: u8,
        expect: Expect,
    },
    /// Reuse one id of an earlier request with other content.
    Mutate {
        of: usize,
        which: usize,
        content: Content,
        expect: Expect,
    },
    /// One id of an earlier request followed by new events.
    Partial {
        of: usize,
        which: usize,
        fresh: Vec<Content>,
        expect: Expect,
    },
    /// A contiguous part of an earlier request, unchanged.
    Slice {
        of: usize,
        start: usize,
        len: usize,
        expect: Expect,
    },
}

fn op(expect: impl Strategy<Value = Expect> + Clone + 'static) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..STREAMS, expect.clone(), vec(content(), 1..5))
            .prop_map(|(stream, expect, batch)| Op::Fresh { stream, expect, batch }),
        3 => (any::<usize>(), expect.clone()).prop_map(|(of, expect)| Op::Retry { of, expect }),
        1 => (any::<usize>(), 0..STREAMS, expect.clone())
            .prop_map(|(of, stream, expect)| Op::Elsewhere { of, stream, expect }),
        1 => (any::<usize>(), any::<usize>(), content(), expect.clone())
            .prop_map(|(of, which, content, expect)| Op::Mutate { of, which, content, expect }),
        1 => (any::<usize>(), any::<usize>(), vec(content(), 1..3), expect.clone())
            .prop_map(|(of, which, fresh, expect)| Op::Partial { of, which, fresh, expect }),
        1 => (any::<usize>(), any::<usize>(), any::<usize>(), expect)
            .prop_map(|(of, start, len, expect)| Op::Slice { of, start, len, expect }),
    ]
}

/// A concrete append request.
#[derive(Clone, Debug)]
struct Request {
    stream: StreamId,
    expect: Expect,
    events: Vec<ProposedEvent>,
}

/// The element `i` names, counting modulo the slice's length (which is not 0).
fn pick<T>(items: &[T], i: usize) -> &T {
    &items[i % items.len()]
}

/// Turns operations into concrete requests, remembering what was sent.
#[derive(Default)]
struct Planner {
    next_id: u128,
    sent: Vec<Request>,
}

impl Planner {
    fn fresh(&mut self, contents: &[Content]) -> Vec<ProposedEvent> {
        contents
            .iter()
            .map(|c| {
                self.next_id += 1;
                c.with_id(event_id(self.next_id))
            })
            .collect()
    }

    fn plan(&mut self, op: &Op) -> Request {
        let request = match (op, self.sent.is_empty()) {
            (
                Op::Fresh {
                    stream,
                    expect,
                    batch,
                },
                _,
            ) => Request {
                stream: stream_of(*stream),
                expect: *expect,
                events: self.fresh(batch),
            },
            (Op::Retry { of, expect }, false) => Request {
                expect: *expect,
                ..pick(&self.sent, *of).clone()
            },
            (Op::Elsewhere { of, stream, expect }, false) => {
                let earlier = pick(&self.sent, *of);
                let mut other = stream_of(*stream);
                if other == earlier.stream {
                    other = stream_of(*stream + 1);
                }
                Request {
                    stream: other,
                    expect: *expect,
                    events: earlier.events.clone(),
                }
            }
            (
                Op::Mutate {
                    of,
                    which,
                    content,
                    expect,
                },
                false,
            ) => {
                let mut r = pick(&self.sent, *of).clone();
                let i = which % r.events.len();
                r.events[i] = content.with_id(r.events[i].event_id);
                r.expect = *expect;
                r
            }
            (
                Op::Partial {
                    of,
                    which,
                    fresh,
                    expect,
                },
                false,
            ) => {
                let earlier = pick(&self.sent, *of).clone();
                let old = pick(&earlier.events, *which).clone();
                let mut events = vec![old];
                events.extend(self.fresh(fresh));
                Request {
                    stream: earlier.stream,
                    expect: *expect,
                    events,
                }
            }
            (
                Op::Slice {
                    of,
                    start,
                    len,
                    expect,
                },
                false,
            ) => {
                let earlier = pick(&self.sent, *of).clone();
                let n = earlier.events.len();
                let a = start % n;
                let b = a + 1 + len % (n - a);
                Request {
                    stream: earlier.stream,
                    expect: *expect,
                    events: earlier.events[a..b].to_vec(),
                }
            }
            // Nothing sent yet to refer to: send something new.
            (_, true) => Request {
                stream: stream_of(0),
                expect: Expect::Any,
                events: self.fresh(&[Content {
                    event_type: 0,
                    schema_version: 1,
                    occurred_secs: 0,
                    occurred_nanos: 0,
                    causation: None,
                    correlation: None,
                    actor: 0,
                    metadata: Vec::new(),
                    payload: b"first".to_vec(),
                }]),
            },
        };
        self.sent.push(request.clone());
        request
    }
}

/// The parts of an append's outcome every backend must agree on.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Written(AppendResult),
    WrongExpectedVersion {
        stream: StreamId,
        expected: ExpectedVersion,
        actual: StreamVersion,
    },
    IdempotencyConflict(EventId),
    InvalidEvent(usize, EventId),
    Other(String),
}

fn outcome(r: Result<AppendResult, AppendError>) -> Outcome {
    match r {
        Ok(r) => Outcome::Written(r),
        Err(AppendError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        }) => Outcome::WrongExpectedVersion {
            stream,
            expected,
            actual,
        },
        Err(AppendError::IdempotencyConflict { event_id, .. }) => {
            Outcome::IdempotencyConflict(event_id)
        }
        Err(AppendError::InvalidEvent {
            index, event_id, ..
        }) => Outcome::InvalidEvent(index, event_id),
        Err(e) => Outcome::Other(format!("{e:?}")),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `ops` one by one against the model and sled; outcomes and logs must agree.
async fn serial_differential(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    let model = MemoryStore::new();
    let mut planner = Planner::default();
    let mut written_somewhere = 0usize;
    for (i, op) in ops.iter().enumerate() {
        let req = planner.plan(op);
        let actual = model.stream_version(&req.stream).await.unwrap();
        assert_eq!(sled.stream_version(&req.stream).await.unwrap(), actual);
        let expected = req.expect.resolve(actual);
        let want = outcome(
            model
                .append(&req.stream, expected, req.events.clone())
                .await,
        );
        let got = outcome(sled.append(&req.stream, expected, req.events.clone()).await);
        assert_eq!(got, want, "op #{i} {op:?} as {req:?} with {expected:?}");
        assert!(
            !matches!(want, Outcome::Other(_) | Outcome::InvalidEvent(..)),
            "op #{i}: unexpected {want:?}"
        );
        if matches!(
            want,
            Outcome::Written(AppendResult {
                already_present: false,
                ..
            })
        ) {
            written_somewhere += 1;
        }
        assert_eq!(sled.head().position, model.head().position, "op #{i}");
    }
    let sled_log = read_everything(&sled).await;
    let model_log = read_everything(&model).await;
    assert_log_invariants(&sled_log, sled.head());
    assert_log_invariants(&model_log, model.head());
    let sled_entries: Vec<Entry> = sled_log.iter().map(Entry::from).collect();
    let model_entries: Vec<Entry> = model_log.iter().map(Entry::from).collect();
    assert_eq!(sled_entries, model_entries);
    assert!(written_somewhere > 0 || sled_log.is_empty());
    for i in 0..STREAMS {
        let s = stream_of(i);
        assert_eq!(
            sled.stream_version(&s).await.unwrap(),
            model.stream_version(&s).await.unwrap()
        );
    }
    let report = sled.verify(Position::ZERO, None).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, sled_log.len() as u64);
    sled.close().await;
}

/// Runs waves of requests, each wave's requests concurrently, against sled,
/// then checks the log against what each request was told.
async fn concurrent_waves(waves: Vec<Vec<Op>>) {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path()).unwrap();
    let mut planner = Planner::default();
    let mut done: Vec<(Request, Result<AppendResult, AppendError>)> = Vec::new();
    for wave in &waves {
        let requests: Vec<Request> = wave.iter().map(|op| planner.plan(op)).collect();
        let tasks: Vec<_> = requests
            .iter()
            .cloned()
            .map(|req| {
                let sled = sled.clone();
                tokio::spawn(async move {
                    let expected = req.expect.resolve(StreamVersion::NONE);
                    sled.append(&req.stream, expected, req.events).await
                })
            })
            .collect();
        for (req, task) in requests.into_iter().zip(tasks) {
            done.push((req, task.await.unwrap()));
        }
    }

    let log = read_everything(&sled).await;
    assert_log_invariants(&log, sled.head());
    let by_id: HashMap<EventId, usize> = log
        .iter()
        .enumerate()
        .map(|(i, r)| (r.event_id, i))
        .collect();
    let mut fresh_count = 0usize;
    let mut acknowledged: HashSet<EventId> = HashSet::new();
    let mut fresh_appends = Vec::new();
    for (req, result) in &done {
        match result {
            Ok(r) => {
                let n = req.events.len() as u64;
                assert_eq!(
                    r.last_position.0 + 1 - r.first_position.0,
                    n,
                    "{req:?} {r:?}"
                );
                for (k, e) in req.events.iter().enumerate() {
                    let rec = &log[usize::try_from(r.first_position.0 - 1).unwrap() + k];
                    assert_same_event(rec, e);
                    assert_eq!(rec.stream_id, req.stream);
                    acknowledged.insert(e.event_id);
                }
                let last = &log[usize::try_from(r.last_position.0 - 1).unwrap()];
                assert_eq!(last.stream_version, r.stream_version);
                if !r.already_present {
                    fresh_count += req.events.len();
                    let expected = req.expect.resolve(StreamVersion::NONE);
                    let before = StreamVersion(r.stream_version.0 - n);
                    assert!(
                        expected.admits(before),
                        "{req:?} {r:?}: {expected:?} admitted {before}"
                    );
                    fresh_appends.push((req.clone(), r.clone(), before));
                }
            }
            Err(AppendError::WrongExpectedVersion { stream, .. }) => {
                assert_eq!(stream, &req.stream);
            }
            Err(AppendError::IdempotencyConflict { event_id, .. }) => {
                // The conflict names an id of the request (the reused one, or
                // the first new one of a partial resend); some id of the
                // request must be in the log for there to be a conflict.
                assert!(req.events.iter().any(|e| e.event_id == *event_id));
                assert!(
                    req.events.iter().any(|e| by_id.contains_key(&e.event_id)),
                    "conflict on {event_id}, but no event of {req:?} is in the log"
                );
            }
            Err(e) => panic!("{req:?} failed unexpectedly: {e:?}"),
        }
    }
    // Every record belongs to an acknowledged append, and each was written once.
    assert_eq!(fresh_count, log.len());
    let logged: HashSet<EventId> = by_id.keys().copied().collect();
    assert_eq!(logged, acknowledged);

    let report = sled.verify(Position::ZERO, None).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, log.len() as u64);

    // Replaying the written appends serially, in log order, into the model
    // gives the same results and the same log.
    fresh_appends.sort_by_key(|(_, r, _)| r.first_position);
    let model = MemoryStore::new();
    for (req, r, before) in fresh_appends {
        let replayed = model
            .append(&req.stream, ExpectedVersion::Exact(before), req.events)
            .await;
        assert_eq!(replayed.as_ref(), Ok(&r));
    }
    let model_log = read_everything(&model).await;
    let sled_entries: Vec<Entry> = log.iter().map(Entry::from).collect();
    let model_entries: Vec<Entry> = model_log.iter().map(Entry::from).collect();
    assert_eq!(sled_entries, model_entries);
    sled.close().await;
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn sled_agrees_with_the_memory_model(ops in vec(op(relative_expect()), 1..60)) {
        runtime().block_on(serial_differential(ops));
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn concurrent_appends_on_sled_keep_the_log_invariants(
        waves in vec(vec(op(absolute_expect()), 1..32), 1..4)
    ) {
        runtime().block_on(concurrent_waves(waves));
    }
}

/// A fixed sequence with every kind of operation, checked outcome by outcome
/// against hand-computed expectations on both stores (guards the generator:
/// the differential test is only as good as the operations it produces).
#[test]
fn scripted_sequence_has_the_expected_outcomes() {
    let c = |p: u8| Content {
        event_type: 0,
        schema_version: 1,
        occurred_secs: 0,
        occurred_nanos: 0,
        causation: None,
        correlation: None,
        actor: 1,
        metadata: Vec::new(),
        payload: vec![p],
    };
    let ix = |n: usize| n;
    let ops = vec![
        Op::Fresh {
            stream: 0,
            expect: Expect::NoStream,
            batch: vec![c(1), c(2)],
        },
        Op::Fresh {
            stream: 1,
            expect: Expect::Right,
            batch: vec![c(3)],
        },
        Op::Retry {
            of: ix(0),
            expect: Expect::Ahead(2),
        },
        Op::Fresh {
            stream: 0,
            expect: Expect::Behind,
            batch: vec![c(4)],
        },
        Op::Elsewhere {
            of: ix(0),
            stream: 2,
            expect: Expect::Any,
        },
        Op::Mutate {
            of: ix(0),
            which: ix(0),
            content: c(9),
            expect: Expect::Right,
        },
    ];
    let rt = runtime();
    rt.block_on(async {
        let model = MemoryStore::new();
        let mut planner = Planner::default();
        let mut got = Vec::new();
        for op in &ops {
            let req = planner.plan(op);
            let actual = model.stream_version(&req.stream).await.unwrap();
            got.push(outcome(
                model
                    .append(&req.stream, req.expect.resolve(actual), req.events)
                    .await,
            ));
        }
        let wrote = |first, last, v| {
            Outcome::Written(AppendResult {
                first_position: Position(first),
                last_position: Position(last),
                stream_version: StreamVersion(v),
                already_present: false,
            })
        };
        assert_eq!(got[0], wrote(1, 2, 2));
        assert_eq!(got[1], wrote(3, 3, 1));
        assert_eq!(
            got[2],
            Outcome::Written(AppendResult {
                first_position: Position(1),
                last_position: Position(2),
                stream_version: StreamVersion(2),
                already_present: true,
            })
        );
        assert_eq!(
            got[3],
            Outcome::WrongExpectedVersion {
                stream: stream_of(0),
                expected: ExpectedVersion::Exact(StreamVersion(1)),
                actual: StreamVersion(2),
            }
        );
        assert_eq!(got[4], Outcome::IdempotencyConflict(event_id(1)));
        assert!(
            matches!(got[5], Outcome::IdempotencyConflict(_)),
            "{:?}",
            got[5]
        );
    });
    // The same script through the differential runner (sled against the model).
    rt.block_on(serial_differential(ops));
}
