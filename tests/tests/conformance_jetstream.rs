//! The conformance suite against the JetStream backend: on one server, and on
//! a 3-node cluster with a replicated (R3) stream. One set of servers per
//! test binary; every case gets a stream of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use crm_eventstore::{
    AppendError, AppendResult, EventStore, ExpectedVersion, JetStreamConfig, JetStreamStore,
    Position, StreamVersion,
};
use crm_tests::conformance_tests;
use crm_tests::nats::NatsCluster;
use crm_tests::support::{
    assert_log_invariants, assert_same_event, event, events, no_hang, read_everything,
    read_whole_stream, stream,
};
use tokio::sync::OnceCell;

static SINGLE: OnceCell<NatsCluster> = OnceCell::const_new();
static CLUSTER: OnceCell<NatsCluster> = OnceCell::const_new();
static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

async fn open(servers: &NatsCluster, replicas: usize) -> JetStreamStore {
    let n = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
    let mut config = JetStreamConfig::new(servers.url());
    config.stream_name = format!("CONFORMANCE_{n}");
    config.subject_prefix = format!("conformance.s{n}");
    config.replicas = replicas;
    JetStreamStore::open(config)
        .await
        .expect("open the JetStream store")
}

conformance_tests!(jetstream_single_node, || async {
    let servers = SINGLE.get_or_init(NatsCluster::single).await;
    (open(servers, 1).await, ())
});

conformance_tests!(jetstream_cluster_r3, || async {
    let servers = CLUSTER.get_or_init(NatsCluster::three).await;
    (open(servers, 3).await, ())
});

fn config(servers: &NatsCluster, name: &str) -> JetStreamConfig {
    let n = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
    let mut config = JetStreamConfig::new(servers.url());
    config.stream_name = format!("{}_{n}", name.to_uppercase());
    config.subject_prefix = format!("{name}.s{n}");
    config
}

/// Two stores on one stream (two processes, in effect) append concurrently,
/// multi-event appends included: the sequence fence keeps one hash chain,
/// every append lands whole and contiguous, and both stores end at the same head.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_stream_fence_each_other() {
    let servers = SINGLE.get_or_init(NatsCluster::single).await;
    let config = config(servers, "fence");
    let a = JetStreamStore::open(config.clone()).await.unwrap();
    let b = JetStreamStore::open(config).await.unwrap();
    let shared = stream("shared-1");
    let tasks: Vec<_> = (0..8u128)
        .map(|t| {
            let store = if t % 2 == 0 { a.clone() } else { b.clone() };
            let shared = shared.clone();
            tokio::spawn(async move {
                let own = stream(&format!("fence-{t}"));
                let mut done = Vec::new();
                for i in 0..10u128 {
                    let n = t * 10_000 + i * 10;
                    let batch = events(n..n + 3);
                    let r = store
                        .append(
                            &own,
                            ExpectedVersion::Exact(StreamVersion(u64::try_from(i * 3).unwrap())),
                            batch.clone(),
                        )
                        .await
                        .unwrap();
                    done.push((r, batch));
                    let e = vec![event(n + 5)];
                    loop {
                        let v = store.stream_version(&shared).await.unwrap();
                        match store
                            .append(&shared, ExpectedVersion::Exact(v), e.clone())
                            .await
                        {
                            Ok(r) => {
                                done.push((r, e));
                                break;
                            }
                            Err(AppendError::WrongExpectedVersion { .. }) => {
                                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                            }
                            Err(other) => panic!("shared append failed: {other}"),
                        }
                    }
                }
                done
            })
        })
        .collect();
    let mut done = Vec::new();
    no_hang("appenders on two stores", async {
        for t in tasks {
            done.extend(t.await.unwrap());
        }
    })
    .await;
    let last = done.iter().map(|(r, _)| r.last_position).max().unwrap();
    for store in [&a, &b] {
        let mut watch = store.watch_head();
        no_hang("both stores reach the last append", async {
            while watch.borrow_and_update().position < last {
                watch.changed().await.unwrap();
            }
        })
        .await;
    }
    let log = read_everything(&a).await;
    assert_eq!(log.len(), 8 * 10 * 4);
    assert_eq!(read_everything(&b).await, log);
    assert_log_invariants(&log, a.head());
    assert_eq!(a.head(), b.head());
    for (r, batch) in &done {
        assert!(!r.already_present);
        let first = usize::try_from(r.first_position.0 - 1).unwrap();
        assert_eq!(
            r.last_position.0 - r.first_position.0 + 1,
            batch.len() as u64
        );
        for (rec, e) in log[first..first + batch.len()].iter().zip(batch) {
            assert_same_event(rec, e);
        }
    }
    assert_eq!(read_whole_stream(&b, &shared).await.len(), 80);
    for store in [&a, &b] {
        let report = store.verify(Position::ZERO, None).await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.checked, 320);
    }
}

/// Idempotency is decided on the whole history, across stores and reopens,
/// not only within the server's duplicate window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_holds_across_stores_and_reopens() {
    let servers = SINGLE.get_or_init(NatsCluster::single).await;
    let config = config(servers, "idem");
    let s = stream("case-1");
    let t = stream("case-2");
    let a = JetStreamStore::open(config.clone()).await.unwrap();
    let original = a
        .append(&s, ExpectedVersion::NoStream, events(1..4))
        .await
        .unwrap();
    a.append(&t, ExpectedVersion::NoStream, vec![event(9)])
        .await
        .unwrap();
    let log = read_everything(&a).await;
    drop(a);
    let b = JetStreamStore::open(config).await.unwrap();
    assert_eq!(read_everything(&b).await, log);
    assert_eq!(b.head(), log.last().unwrap().as_head());
    let retry = b
        .append(&s, ExpectedVersion::Exact(StreamVersion(7)), events(1..4))
        .await
        .unwrap();
    assert_eq!(
        retry,
        AppendResult {
            already_present: true,
            ..original
        }
    );
    let mut changed = event(2);
    changed.payload = b"other".to_vec();
    let err = b
        .append(&s, ExpectedVersion::Any, vec![changed])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::IdempotencyConflict { .. }),
        "{err:?}"
    );
    let err = b
        .append(&t, ExpectedVersion::Any, vec![event(1)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::IdempotencyConflict { .. }),
        "{err:?}"
    );
    let next = b
        .append(&s, ExpectedVersion::Exact(StreamVersion(3)), vec![event(4)])
        .await
        .unwrap();
    assert_eq!(next.first_position, Position(5));
    let log = read_everything(&b).await;
    assert_log_invariants(&log, b.head());
    assert!(b.verify(Position::ZERO, None).await.unwrap().is_ok());
}

/// The server feature multi-event appends rest on: an ADR-50 atomic batch
/// whose sequence fence fails stores none of its messages, and the log
/// goes on unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_atomic_batch_stores_nothing() {
    let servers = SINGLE.get_or_init(NatsCluster::single).await;
    let config = config(servers, "atomic");
    let store = JetStreamStore::open(config.clone()).await.unwrap();
    let s = stream("case-1");
    store
        .append(&s, ExpectedVersion::NoStream, events(1..3))
        .await
        .unwrap();
    let client = async_nats::connect(servers.url()).await.unwrap();
    let subject = format!("{}.case-1", config.subject_prefix);
    let last_seq = |client: async_nats::Client| {
        let name = config.stream_name.clone();
        async move {
            let js = async_nats::jetstream::new(client);
            let mut st = js.get_stream(name).await.unwrap();
            st.info().await.unwrap().state.last_sequence
        }
    };
    assert_eq!(last_seq(client.clone()).await, 2);
    for i in 1..=3u64 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Batch-Id", "fenced-batch");
        headers.insert("Nats-Batch-Sequence", i.to_string().as_str());
        if i == 1 {
            headers.insert("Nats-Expected-Last-Sequence", "1"); // stale: the log is at 2
        }
        if i == 3 {
            headers.insert("Nats-Batch-Commit", "1");
        }
        let reply = client
            .request_with_headers(subject.clone(), headers, "junk".into())
            .await
            .unwrap();
        if i == 3 {
            let ack: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
            assert!(
                ack.get("error").is_some(),
                "the fenced batch was stored: {ack}"
            );
        }
    }
    assert_eq!(
        last_seq(client).await,
        2,
        "part of a refused batch was stored"
    );
    let r = store
        .append(&s, ExpectedVersion::Exact(StreamVersion(2)), events(3..6))
        .await
        .unwrap();
    assert_eq!(
        (r.first_position, r.last_position),
        (Position(3), Position(5))
    );
    let log = read_everything(&store).await;
    assert_log_invariants(&log, store.head());
    assert!(store.verify(Position::ZERO, None).await.unwrap().is_ok());
}
