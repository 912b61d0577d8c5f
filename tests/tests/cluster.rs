//! JetStream cluster failures: a node killed (SIGKILL) during a stream of
//! appends, and a minority left alone (two of three nodes killed). Every
//! acknowledged append must survive exactly once, appends must continue
//! after a leader re-election, `verify` must pass once the nodes return, and
//! a minority must refuse writes rather than diverge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crm_eventstore::{
    AppendError, EventId, EventStore, ExpectedVersion, JetStreamConfig, JetStreamStore, Position,
    RecordedEvent, StreamVersion,
};
use crm_tests::nats::NatsCluster;
use crm_tests::support::{assert_log_invariants, event, no_hang, read_everything, stream};

fn config(servers: &NatsCluster, name: &str) -> JetStreamConfig {
    let mut c = JetStreamConfig::new(servers.url());
    c.stream_name = name.to_uppercase();
    c.subject_prefix = format!("cluster.{name}");
    c.replicas = 3;
    c.request_timeout = Duration::from_secs(2);
    c.append_timeout = Duration::from_secs(60);
    c
}

/// The server name of the stream's leader, as the cluster reports it.
async fn stream_leader(servers: &NatsCluster, stream_name: &str) -> String {
    let client = async_nats::connect(servers.url().split(',').next().unwrap())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream_name).await.unwrap();
    let info = stream.info().await.unwrap();
    info.cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader")
}

/// Every acknowledged event is in `log` exactly once, at its acknowledged
/// position. Returns (lost, duplicated, misplaced).
fn check_acknowledged(
    log: &[RecordedEvent],
    acked: &[(EventId, Position)],
) -> (usize, usize, usize) {
    let mut seen: HashMap<EventId, Vec<Position>> = HashMap::new();
    for rec in log {
        seen.entry(rec.event_id).or_default().push(rec.position);
    }
    let (mut lost, mut duplicated, mut misplaced) = (0, 0, 0);
    for (id, position) in acked {
        match seen.get(id).map(Vec::as_slice) {
            None => lost += 1,
            Some([p]) if p == position => {}
            Some([_]) => misplaced += 1,
            Some(_) => duplicated += 1,
        }
    }
    (lost, duplicated, misplaced)
}

/// Appends `count` single events to stream `kill-<writer>` with exact expected
/// versions, resending an append whose outcome is unknown until it is acknowledged.
async fn writer(
    store: JetStreamStore,
    writer: u128,
    count: u128,
    acked: Arc<Mutex<Vec<(EventId, Position)>>>,
    retries: Arc<AtomicU64>,
) {
    let s = stream(&format!("kill-{writer}"));
    for i in 0..count {
        let e = event(writer * 100_000 + i);
        let expected = ExpectedVersion::Exact(StreamVersion(u64::try_from(i).unwrap()));
        loop {
            match store.append(&s, expected, vec![e.clone()]).await {
                Ok(r) => {
                    assert_eq!(r.stream_version.0, u64::try_from(i).unwrap() + 1);
                    acked.lock().unwrap().push((e.event_id, r.first_position));
                    break;
                }
                Err(AppendError::Unavailable(_)) => {
                    retries.fetch_add(1, Ordering::Relaxed);
                }
                Err(other) => panic!("append {i} of writer {writer} failed: {other}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_of_three_nodes_loses_no_acknowledged_append() {
    const WRITERS: u128 = 4;
    const PER_WRITER: u128 = 100;
    let mut servers = NatsCluster::three().await;
    let config = config(&servers, "kill");
    let store = JetStreamStore::open(config.clone()).await.unwrap();
    let leader = stream_leader(&servers, &config.stream_name).await;
    let victim = servers.index_of(&leader).expect("leader is one of ours");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let retries = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(writer(
                store.clone(),
                w,
                PER_WRITER,
                acked.clone(),
                retries.clone(),
            ))
        })
        .collect();
    no_hang("the first appends", async {
        while acked.lock().unwrap().len() < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    servers.kill(victim);
    let acked_before_kill = acked.lock().unwrap().len();
    no_hang("writers across the kill", async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
    let acked = acked.lock().unwrap().clone();
    let after_kill = acked.len() - acked_before_kill;
    assert!(after_kill > 0, "no append was acknowledged after the kill");
    assert_eq!(acked.len(), usize::try_from(WRITERS * PER_WRITER).unwrap());

    servers.restart(victim).await;
    // Read back through the restarted node alone, with a fresh index.
    let mut through_victim = config.clone();
    through_victim.url = servers.nodes[victim].url();
    let fresh = JetStreamStore::open(through_victim).await.unwrap();
    let log = read_everything(&fresh).await;
    assert_log_invariants(&log, fresh.head());
    let report = fresh.verify(Position::ZERO, None).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, u64::try_from(log.len()).unwrap());
    let (lost, duplicated, misplaced) = check_acknowledged(&log, &acked);
    writeln!(
        std::io::stderr(),
        "cluster node-kill test: killed stream leader {leader}; appended {}, acknowledged {} ({} after the kill), resent {} times, received {}, lost {lost}, duplicated {duplicated}, misplaced {misplaced}, verify ok ({} records)",
        WRITERS * PER_WRITER,
        acked.len(),
        after_kill,
        retries.load(Ordering::Relaxed),
        log.len(),
        report.checked
    )
    .unwrap();
    assert_eq!((lost, duplicated, misplaced), (0, 0, 0));
    assert_eq!(log.len(), acked.len(), "an event was recorded twice");
    // The original store continues the same chain.
    let r = store
        .append(
            &stream("kill-after"),
            ExpectedVersion::NoStream,
            vec![event(9_999_999)],
        )
        .await
        .unwrap();
    assert_eq!(r.first_position.0, u64::try_from(log.len()).unwrap() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_refuses_writes_and_nothing_acknowledged_is_lost() {
    let mut servers = NatsCluster::three().await;
    let mut config = config(&servers, "minority");
    config.append_timeout = Duration::from_secs(4);
    let store = JetStreamStore::open(config.clone()).await.unwrap();
    let s = stream("minority-1");
    let mut acked = Vec::new();
    for i in 0..30u128 {
        let r = store
            .append(&s, ExpectedVersion::Any, vec![event(i)])
            .await
            .unwrap();
        acked.push((event(i).event_id, r.first_position));
    }
    // Leave node 1 alone: it cannot reach a quorum.
    servers.kill(1);
    servers.kill(2);
    let mut refused = Vec::new();
    for i in 100..103u128 {
        match store.append(&s, ExpectedVersion::Any, vec![event(i)]).await {
            Err(AppendError::Unavailable(_)) => refused.push(event(i)),
            other => panic!("the minority took append {i}: {other:?}"),
        }
    }
    servers.restart(1).await;
    servers.restart(2).await;
    let fresh = no_hang(
        "reopen after the partition",
        JetStreamStore::open(config.clone()),
    )
    .await
    .unwrap();
    let log = read_everything(&fresh).await;
    assert_log_invariants(&log, fresh.head());
    let report = fresh.verify(Position::ZERO, None).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    let (lost, duplicated, misplaced) = check_acknowledged(&log, &acked);
    let refused_present = refused
        .iter()
        .filter(|e| log.iter().any(|r| r.event_id == e.event_id))
        .count();
    // Resending the refused appends is safe: each lands exactly once. The
    // healed cluster may still be electing the stream's leader, which the
    // store reports as `Unavailable`: a client retries until it is accepted.
    let mut resent_unavailable = 0u32;
    for e in &refused {
        no_hang("resending a refused append after the heal", async {
            loop {
                match store
                    .append(&s, ExpectedVersion::Any, vec![e.clone()])
                    .await
                {
                    Ok(_) => break,
                    Err(AppendError::Unavailable(_)) => {
                        resent_unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(other) => panic!("resending {} failed: {other}", e.event_id),
                }
            }
        })
        .await;
    }
    // `fresh` is another process's view: its tail brings it to the same head.
    let mut watch = fresh.watch_head();
    no_hang("the other store's tail", async {
        while watch.borrow_and_update().position < store.head().position {
            watch.changed().await.unwrap();
        }
    })
    .await;
    let log_after = read_everything(&fresh).await;
    assert_log_invariants(&log_after, fresh.head());
    writeln!(
        std::io::stderr(),
        "cluster minority test: acknowledged {}, refused by the minority {} ({} of them present after the heal), received {}, lost {lost}, duplicated {duplicated}, misplaced {misplaced}; after resending the refused ({resent_unavailable} retries while the leader was elected): {} records, verify ok",
        acked.len(),
        refused.len(),
        refused_present,
        log.len(),
        log_after.len()
    )
    .unwrap();
    assert_eq!(refused.len(), 3);
    assert_eq!((lost, duplicated, misplaced), (0, 0, 0));
    assert_eq!(log_after.len(), acked.len() + refused.len());
}
